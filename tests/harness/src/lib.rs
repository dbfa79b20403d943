//! The integration-test harness.
//!
//! A [`Cluster`] is a set of real PostgreSQL servers (started from one
//! initdb template, copied per node for speed) in a temporary directory,
//! plus a real `ferry run` process in front of them. Everything is stopped
//! and removed when the cluster is dropped. Comparisons of replicas are made
//! here independently of Ferry's own `verify`.

mod admin;
mod compare;

pub use compare::Differs;
mod ferry_process;
pub mod raw;
mod servers;
pub mod workload;

use ferry_localpg::{free_port, InitOptions, LocalServer, PgBinaries};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

/// User and password clients use to reach Ferry in tests.
pub const USER: &str = "app";
pub const PASSWORD: &str = "secret";
/// The replicated database.
pub const DB: &str = "app";

fn bins() -> &'static PgBinaries {
    static BINS: OnceLock<PgBinaries> = OnceLock::new();
    BINS.get_or_init(|| {
        PgBinaries::find().expect("PostgreSQL server binaries (install postgresql)")
    })
}

/// An initdb'd data directory that nodes are copied from; made once per
/// machine and reused by every test process.
fn template() -> &'static PathBuf {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let base = std::env::temp_dir().join("ferry-testkit");
        let marker_name = format!(
            "template-{}",
            bins().bindir.display().to_string().replace('/', "_")
        );
        let dir = base.join(&marker_name);
        if dir.join("ferry-template-ok").exists() {
            return dir;
        }
        std::fs::create_dir_all(&base).expect("temp dir");
        let staging = base.join(format!("{marker_name}.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&staging);
        let server = LocalServer::new(bins(), &staging, 1);
        server
            .init(&InitOptions {
                password: None,
                fast: true,
            })
            .expect("initdb of the test template");
        std::fs::write(staging.join("ferry-template-ok"), "").expect("marker");
        // Another process may have won the race; either copy is good.
        if std::fs::rename(&staging, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        dir
    })
}

/// How to build a cluster.
pub struct Options {
    pub nodes: usize,
    /// SQL run on every node before Ferry starts (replicas hold the schema).
    pub schema: String,
    /// A password for the servers' `postgres` user (SCRAM on loopback).
    pub server_password: Option<String>,
    /// Extra TOML appended to the generated configuration.
    pub extra_config: String,
    /// Environment for the ferry process (`FERRY_...` overrides).
    pub env: Vec<(String, String)>,
    /// Name the nodes in Ferry's configuration by their Unix-socket
    /// directory (`host=/dir`) instead of 127.0.0.1.
    pub unix_sockets: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            nodes: 3,
            schema: String::new(),
            server_password: None,
            extra_config: String::new(),
            env: Vec::new(),
            unix_sockets: false,
        }
    }
}

/// Real servers and a real Ferry.
pub struct Cluster {
    pub dir: PathBuf,
    pub servers: Vec<LocalServer>,
    pub names: Vec<String>,
    pub proxy_port: u16,
    pub admin_port: u16,
    pub config_path: PathBuf,
    server_password: Option<String>,
    ferry_bin: PathBuf,
    ferry: Option<Child>,
    ferry_starts: usize,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Creates, starts and prepares the servers, and writes the config.
    pub fn new(ferry_bin: &str, opts: Options) -> Cluster {
        let dir = std::env::temp_dir().join(format!(
            "ferry-test-{}-{}",
            std::process::id(),
            free_port().unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).expect("test dir");
        let names: Vec<String> = (0..opts.nodes)
            .map(|i| ((b'a' + i as u8) as char).to_string())
            .collect();
        let mut cluster = Cluster {
            dir: dir.clone(),
            servers: Vec::new(),
            names: names.clone(),
            proxy_port: free_port().expect("port"),
            admin_port: free_port().expect("port"),
            config_path: dir.join("ferry.toml"),
            server_password: opts.server_password.clone(),
            // FERRY_TEST_BIN runs a test against another build (an older
            // one, to see a test fail where a fix is missing).
            ferry_bin: std::env::var_os("FERRY_TEST_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(ferry_bin)),
            ferry: None,
            ferry_starts: 0,
            env: opts.env.clone(),
        };
        // Each server joins the cluster as soon as it runs, so a failing
        // step below still stops it (Drop).
        for name in &names {
            let port = free_port().expect("free port");
            let s = LocalServer::new(bins(), dir.join(name), port);
            match &opts.server_password {
                None => s.init_from(template(), true).expect("copy template"),
                Some(pw) => s
                    .init(&InitOptions {
                        password: Some(pw.clone()),
                        fast: true,
                    })
                    .expect("initdb"),
            }
            s.start().expect("start server");
            cluster.servers.push(s.clone());
            prepare_database(&s, &opts.schema);
        }
        let (proxy_port, admin_port, servers) =
            (cluster.proxy_port, cluster.admin_port, &cluster.servers);
        let mut toml = format!(
            "[proxy]\nlisten = \"127.0.0.1:{proxy_port}\"\n[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n\
             [replication]\ntables = [\"public.*\"]\ntick_ms = 20\nhousekeeping_ms = 200\n\
             [[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\n"
        );
        for (i, (s, name)) in servers.iter().zip(&names).enumerate() {
            let dsn = if opts.unix_sockets {
                format!(
                    "host={} port={} user=postgres dbname={DB}",
                    s.socket_dir(),
                    s.port
                )
            } else {
                s.dsn(DB, opts.server_password.as_deref())
            };
            toml += &format!(
                "[[nodes]]\nname = \"{name}\"\ndsn = \"{dsn}\"\npriority = {}\n",
                i + 1
            );
        }
        // Appended keys land in the last table: extra config starts its own.
        toml += &opts.extra_config;
        std::fs::write(&cluster.config_path, toml).expect("config");
        cluster
    }

    /// Starts one more server, not in Ferry's configuration (for `ferry
    /// add-node`), with the database and `schema` (may be empty); it takes
    /// the next index in `servers`. Returns its DSN.
    pub fn add_spare_server(&mut self, name: &str, schema: &str) -> String {
        let s = LocalServer::new(bins(), self.dir.join(name), free_port().expect("free port"));
        s.init_from(template(), true).expect("copy template");
        s.start().expect("start server");
        self.servers.push(s.clone());
        self.names.push(name.to_string());
        prepare_database(&s, schema);
        s.dsn(DB, self.server_password.as_deref())
    }

    /// A cluster of `nodes` servers holding `schema`, with Ferry started.
    pub fn started(ferry_bin: &str, nodes: usize, schema: &str) -> Cluster {
        let mut c = Cluster::new(
            ferry_bin,
            Options {
                nodes,
                schema: schema.into(),
                ..Default::default()
            },
        );
        c.start_ferry();
        c
    }

    /// The directory of this cluster.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// Creates the clients' role (an ordinary one: a superuser would hide
/// permission bugs and row-level security), the database it owns, and
/// `schema` in it, created as that role so that its objects belong to it
/// as they would had the application made them.
fn prepare_database(s: &LocalServer, schema: &str) {
    s.psql(
        "postgres",
        &format!("CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'"),
    )
    .expect("create role");
    s.psql("postgres", &format!("CREATE DATABASE {DB} OWNER {USER}"))
        .expect("create database");
    if !schema.is_empty() {
        s.psql(DB, &format!("SET ROLE {USER};\n{schema}"))
            .expect("schema");
    }
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_ferry();
        for s in &self.servers {
            // A stopped (SIGSTOP) server must be continued to be stopped.
            let _ = s.signal("CONT");
            let _ = s.stop();
        }
        if std::env::var_os("FERRY_KEEP_TEST_DIRS").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Polls `probe` every 50 ms until it succeeds and returns its value;
/// after `timeout` panics naming `what` and the probe's last answer.
pub async fn eventually<T, D: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<T, D>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not reached after {timeout:?}; last: {last:?}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The node named `name` in a `/status` document (null when absent).
pub fn node<'a>(doc: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    doc["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["name"] == name))
        .unwrap_or(&serde_json::Value::Null)
}

//! The integration-test harness.
//!
//! A [`Cluster`] is a set of real PostgreSQL servers (started from one
//! initdb template, copied per node for speed) in a temporary directory,
//! plus a real `ferry run` process in front of them. Everything is stopped
//! and removed when the cluster is dropped. Comparisons of replicas are made
//! here independently of Ferry's own `verify`.

pub mod raw;
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
            s.psql("postgres", &format!("CREATE DATABASE {DB}"))
                .expect("create database");
            if !opts.schema.is_empty() {
                s.psql(DB, &opts.schema).expect("schema");
            }
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
        s.psql("postgres", &format!("CREATE DATABASE {DB}"))
            .expect("create database");
        if !schema.is_empty() {
            s.psql(DB, schema).expect("schema");
        }
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

    /// Starts `ferry run` and waits until its admin endpoint is healthy.
    pub fn start_ferry(&mut self) {
        self.ferry_starts += 1;
        let log = std::fs::File::create(self.dir.join(format!("ferry-{}.log", self.ferry_starts)))
            .expect("log");
        let child = Command::new(&self.ferry_bin)
            .args(["run", "--config"])
            .arg(&self.config_path)
            .env("FERRY_LOG", "info,ferry=debug")
            // Six missed health checks (3 s) before a failover: tests share
            // two cores with many servers, and only the failover tests mean
            // to fail a master over (a test's own env wins).
            .env("FERRY_HEALTH_FAILURES", "6")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn ferry");
        self.ferry = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .status_json()
                .map(|s| {
                    s.contains("\"role\":\"replica\"")
                        || s.contains("\"role\":\"fenced\"")
                        || self.names.len() == 1
                })
                .unwrap_or(false)
                && std::net::TcpStream::connect(("127.0.0.1", self.proxy_port)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ferry did not come up; log:\n{}", self.ferry_log());
    }

    /// Sets an environment variable for the next `start_ferry` (a later
    /// value of the same key wins).
    pub fn set_ferry_env(&mut self, key: &str, value: &str) {
        self.env.push((key.to_string(), value.to_string()));
    }

    /// The current ferry process's log.
    pub fn ferry_log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("ferry-{}.log", self.ferry_starts)))
            .unwrap_or_default()
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to the ferry process.
    pub fn signal_ferry(&self, sig: &str) {
        if let Some(c) = &self.ferry {
            let _ = Command::new("kill")
                .args([format!("-{sig}"), c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `timeout` for the ferry process to exit by itself;
    /// returns whether it did (with success).
    pub fn wait_ferry_exit(&mut self, timeout: Duration) -> Option<bool> {
        let deadline = Instant::now() + timeout;
        let child = self.ferry.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.ferry = None;
                return Some(status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// kill -9 of the ferry process.
    pub fn kill_ferry(&mut self) {
        if let Some(mut c) = self.ferry.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `ferry <args>` and returns its output.
    pub fn ferry(&self, args: &[&str]) -> Output {
        Command::new(&self.ferry_bin)
            .args(args)
            .output()
            .expect("run ferry")
    }

    /// Runs a `ferry` command against the running instance's admin
    /// endpoint (`--admin` appended).
    pub fn ferry_admin(&self, args: &[&str]) -> Output {
        let admin = format!("http://127.0.0.1:{}", self.admin_port);
        let mut all = args.to_vec();
        all.extend(["--admin", admin.as_str()]);
        self.ferry(&all)
    }

    /// `ferry status --json` from the running instance.
    pub fn status_json(&self) -> Option<String> {
        let out = self.ferry_admin(&["status", "--json"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `/status` as JSON (Null when Ferry does not answer).
    pub fn status_doc(&self) -> serde_json::Value {
        serde_json::from_str(&self.status_json().unwrap_or_default()).unwrap_or_default()
    }

    /// Waits until the `/status` document satisfies `ok`; on timeout,
    /// panics with the last one.
    pub async fn wait_status(
        &self,
        timeout: Duration,
        what: &str,
        ok: impl Fn(&serde_json::Value) -> bool,
    ) {
        eventually(timeout, what, || {
            let doc = self.status_doc();
            if ok(&doc) {
                Ok(())
            } else {
                Err(doc)
            }
        })
        .await
    }

    /// One node's entry in `/status` (Null when absent).
    pub fn node_doc(&self, name: &str) -> serde_json::Value {
        self.status_doc()["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name).cloned())
            .unwrap_or_default()
    }

    /// Waits until `count` replicas are connected and shipping, which is
    /// when the proxy starts sending reads to them (reads go to the master
    /// until then).
    pub async fn wait_replicas_serving(&self, count: usize) {
        eventually(Duration::from_secs(15), "replicas connected", || {
            let doc = self.status_doc();
            let up = doc["nodes"].as_array().map_or(0, |n| {
                n.iter()
                    .filter(|n| n["role"] == "replica" && n["reachable"] == true)
                    .count()
            });
            if up >= count {
                Ok(())
            } else {
                Err(doc)
            }
        })
        .await;
    }

    /// Signals every process of node `i`'s server (the postmaster's
    /// children first: running backends go on serving when only the
    /// postmaster is hit). `KILL` returns once they are all gone: a
    /// statement sent after it finds no backend that still reads it (a
    /// killed process lives on until it is next scheduled, on a busy
    /// machine long enough to take a statement that then never answers).
    pub fn signal_server(&self, i: usize, sig: &str) {
        let mut pids: Vec<i32> = Vec::new();
        if let Some(pid) = self.servers[i].pid() {
            let children = Command::new("pgrep")
                .args(["-P", &pid.to_string()])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            pids.extend(
                children
                    .lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok()),
            );
            pids.push(pid);
            let _ = Command::new("pkill")
                .args([&format!("-{sig}"), "-P", &pid.to_string()])
                .status();
            // The postmaster by the pid read above: once its children die it
            // rewrites postmaster.pid to restart them, and a second read of
            // the file at that moment can find nothing (the server then
            // lived on, its children restarted).
            let _ = Command::new("kill")
                .args([format!("-{sig}"), pid.to_string()])
                .status();
        } else {
            let _ = self.servers[i].signal(sig);
        }
        if sig == "KILL" {
            // Gone, or a zombie (its sockets are closed by then).
            let alive = |pid: &i32| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
                    .is_some_and(|rest| !rest.starts_with('Z'))
            };
            let deadline = Instant::now() + Duration::from_secs(5);
            while pids.iter().any(alive) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Starts node `i`'s server again after a kill -9. Its postmaster.pid
    /// is left behind, naming a process that is gone or a zombie (a
    /// container's init may not reap it), which the new postmaster would
    /// take for a server still running: such a file is removed first.
    pub fn restart_server(&self, i: usize) -> Result<(), ferry_localpg::LocalPgError> {
        let server = &self.servers[i];
        let running = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
                .ok()
                .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim().to_string()))
                .is_some_and(|rest| !rest.starts_with('Z'))
        };
        // postmaster.pid, and the Unix socket's lock file beside it: each
        // names the postmaster on its first line.
        let socket_dir = PathBuf::from(server.socket_dir());
        let locks = std::iter::once(server.datadir.join("postmaster.pid")).chain(
            std::fs::read_dir(&socket_dir)
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(".s.PGSQL.") && n.ends_with(".lock"))
                }),
        );
        for lock in locks {
            let first = std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| t.lines().next().map(str::to_string));
            if first.is_some_and(|pid| !running(&pid)) {
                let _ = std::fs::remove_file(&lock);
            }
        }
        server.start()
    }

    /// Runs `sql` (with one int parameter) through Ferry for every value
    /// of `values`, in a task of its own: writes that go on while the
    /// test does something else. Each must succeed.
    pub fn spawn_writes(
        &self,
        sql: &'static str,
        values: std::ops::Range<i32>,
    ) -> tokio::task::JoinHandle<()> {
        let url = self.proxy_url();
        tokio::spawn(async move {
            let (w, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
            tokio::spawn(conn);
            for i in values {
                w.execute(sql, &[&i])
                    .await
                    .unwrap_or_else(|e| panic!("write {i} meanwhile: {e:?}"));
            }
        })
    }

    /// GET a path of the admin endpoint: (status code, body).
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.admin_call("GET", path, None)
    }

    /// Any request to the admin endpoint, with an optional JSON body:
    /// (status code, body).
    pub fn admin_call(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s =
            std::net::TcpStream::connect(("127.0.0.1", self.admin_port)).expect("admin endpoint");
        let body = json.unwrap_or("");
        let kind = if json.is_some() {
            "Content-Type: application/json\r\n"
        } else {
            ""
        };
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{kind}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .expect("request");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("response");
        let code = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (code, body)
    }

    /// `ferry verify` (exit status and printed table).
    pub fn verify(&self, retry_for: u64) -> (bool, String) {
        let out = self.ferry(&[
            "verify",
            "--config",
            &self.config_path.display().to_string(),
            "--retry-for",
            &retry_for.to_string(),
        ]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// URL for clients of the proxy.
    pub fn proxy_url(&self) -> String {
        format!(
            "postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/{DB}",
            self.proxy_port
        )
    }

    /// URL of a node's server, bypassing Ferry.
    pub fn node_url(&self, i: usize) -> String {
        self.servers[i].dsn(DB, self.server_password.as_deref())
    }

    /// A client through the proxy.
    pub async fn proxy_client(&self) -> Client {
        connect(&self.proxy_url()).await
    }

    /// A client straight to node `i`.
    pub async fn node_client(&self, i: usize) -> Client {
        connect(&self.node_url(i)).await
    }

    /// Waits until every replica holds exactly the master's rows in every
    /// user table, compared here by an ordered text digest (not Ferry's own
    /// checksum). Returns the last difference on timeout.
    pub async fn wait_equal(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut clients = Vec::new();
        for i in 0..self.servers.len() {
            clients.push(self.node_client(i).await);
        }
        loop {
            let diff = diff_nodes(&clients, &self.names).await;
            match diff {
                None => return Ok(()),
                Some(d) if Instant::now() >= deadline => return Err(d),
                Some(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Waits until `sql` on node `i` prints `want` (trimmed); an error
    /// (a table not there yet) counts as not yet. Panics with the last
    /// answer after `timeout`.
    pub async fn wait_psql(&self, i: usize, sql: &str, want: &str, timeout: Duration) {
        eventually(timeout, sql, || match self.servers[i].psql(DB, sql) {
            Ok(got) if got.trim() == want => Ok(()),
            Ok(got) => Err(got),
            Err(e) => Err(e.to_string()),
        })
        .await
    }

    /// Runs SQL on one node with psql.
    pub fn psql(&self, i: usize, sql: &str) -> String {
        self.servers[i].psql(DB, sql).expect("psql")
    }

    /// The directory of this cluster.
    pub fn path(&self) -> &Path {
        &self.dir
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

async fn digest(c: &Client) -> Vec<(String, i64, String)> {
    let tables: Vec<String> = c
        .query(
            "SELECT quote_ident(table_name) FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1",
            &[],
        )
        .await
        .expect("list tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut out = Vec::new();
    for t in tables {
        // A table dropped since it was listed (schema changes replicating
        // while this polls) counts as a difference, not a failure.
        match c
            .query_one(
                // ONLY: an inheritance parent's own rows (its children
                // are compared as tables of their own; a partitioned
                // table's rows are its partitions').
                &format!("SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM ONLY public.{t} x"),
                &[],
            )
            .await
        {
            Ok(row) => out.push((t, row.get(0), row.get(1))),
            Err(e) => out.push((t, -1, e.to_string())),
        }
    }
    out
}

async fn diff_nodes(clients: &[Client], names: &[String]) -> Option<String> {
    let master = digest(&clients[0]).await;
    for (c, name) in clients.iter().zip(names).skip(1) {
        let d = digest(c).await;
        if d != master {
            return Some(format!(
                "{name} differs from {}:\n master {master:?}\n {name} {d:?}",
                names[0]
            ));
        }
    }
    None
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

//! `ferry demo`: a local three-node cluster with Ferry in front, a sample
//! workload through the proxy, the status, and then it keeps running.

use anyhow::{bail, Context};
use ferry::app::App;
use ferry::config::Config;
use ferry_localpg::{InitOptions, LocalServer, PgBinaries};
use ferry_wire::tls::{RustlsConnect, SslMode, TlsSettings};
use std::path::Path;
use std::process::ExitCode;

const NODES: [&str; 3] = ["a", "b", "c"];

/// The sample application schema, created on every node before Ferry first
/// starts, so that the servers agree from the beginning (DDL sent through
/// Ferry afterwards is replicated). The same file initialises the servers of
/// docker-compose.yml.
const SCHEMA: &str = include_str!("../../../docker/schema.sql");
/// The role application sessions run as (no superuser), on every node.
const ROLES: &str = include_str!("../../../docker/roles.sql");

pub async fn run(
    dir: &Path,
    base_port: u16,
    listen: &str,
    admin: &str,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let bins = PgBinaries::find()?;
    let dir = std::path::absolute(dir).context("demo directory")?;
    let servers: Vec<LocalServer> = NODES
        .iter()
        .enumerate()
        .map(|(i, n)| LocalServer::new(&bins, dir.join(n), base_port + i as u16))
        .collect();
    if dir.exists() {
        println!("recreating {}", dir.display());
        for s in &servers {
            let _ = s.stop();
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir)?;
    for (s, name) in servers.iter().zip(NODES) {
        if std::net::TcpListener::bind(("127.0.0.1", s.port)).is_err() {
            bail!(
                "port {} is in use: pass --base-port to choose other ports for the three servers",
                s.port
            );
        }
        println!("node {name}: initdb and start on port {}", s.port);
        s.init(&InitOptions {
            password: None,
            fast: true,
        })?;
        s.start()?;
        s.psql("postgres", "CREATE DATABASE app")?;
        s.psql("app", ROLES)?;
        s.psql("app", SCHEMA)?;
    }
    // TLS from the start: a local CA and a certificate for this machine.
    let certs = ferry::certs::make(&dir.canonicalize()?, &["localhost", "127.0.0.1"])?;
    let mut toml = format!(
        "# written by ferry demo\n[proxy]\nlisten = \"{listen}\"\ntls = \"allow\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n\n[admin]\nlisten = \"{admin}\"\n\n[replication]\nmode = \"async\"\ntables = [\"public.*\"]\n\n[[users]]\nname = \"app\"\npassword = \"secret\"\n",
        certs.cert.display(),
        certs.key.display()
    );
    for (i, (s, name)) in servers.iter().zip(NODES).enumerate() {
        toml += &format!(
            "\n[[nodes]]\nname = \"{name}\"\ndsn = \"{}\"\npriority = {}\n",
            s.dsn("app", None),
            i + 1
        );
    }
    let config_path = dir.join("ferry.toml");
    std::fs::write(&config_path, &toml)?;
    let cfg = Config::parse(&toml, &[])?;
    let result = serve(&cfg, (&config_path, &certs.ca), admin, no_wait).await;
    println!("stopping the demo servers");
    for s in &servers {
        if let Err(e) = s.stop() {
            eprintln!("ferry: {e}");
        }
    }
    result
}

async fn serve(
    cfg: &Config,
    (config_path, ca): (&Path, &Path),
    admin: &str,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    let app = App::start(cfg).await?;
    let url = format!(
        "postgresql://app:secret@{}/app?sslmode=verify-full&sslrootcert={}",
        app.proxy_addr,
        ca.display()
    );
    println!(
        "ferry is running on {}; sample workload through it…",
        app.proxy_addr
    );
    let outcome = async {
        workload(&url, ca).await.context("sample workload")?;
        let verified = super::verify::check(cfg, 10).await?;
        let doc: ferry::status::Status = serde_json::from_str(
            &super::status::get(&format!("http://{admin}"), "/status").await?,
        )?;
        println!("\n{}", super::status::render(&doc));
        println!("connect:  psql \"{url}\"   (TLS, checked against the demo's own CA)");
        println!("status:   ferry status --admin http://{admin}");
        println!("verify:   ferry verify --config {}", config_path.display());
        Ok::<_, anyhow::Error>(verified)
    }
    .await;
    if outcome.is_ok() && !no_wait {
        println!("\nPress Ctrl-C to stop.");
        super::stop_signal().await;
    }
    app.shutdown().await;
    outcome
}

/// Accounts, orders with lines, transfers, a cascade delete and an audit
/// trail: a little of everything the batch path carries.
async fn workload(url: &str, ca: &Path) -> anyhow::Result<()> {
    // Over TLS, verifying Ferry's certificate as `verify-full` does.
    let tls = TlsSettings::new(SslMode::VerifyFull, Some(ca.to_path_buf()))?
        .config()
        .context("a TLS configuration")?;
    let plain = url.split('?').next().unwrap_or(url);
    let mut config: tokio_postgres::Config = plain.parse()?;
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let (mut client, conn) = config.connect(RustlsConnect(tls)).await?;
    tokio::spawn(conn);
    for i in 0..20 {
        client
            .execute(
                "INSERT INTO accounts (owner, balance) VALUES ($1, 1000)",
                &[&format!("owner {i}")],
            )
            .await?;
    }
    for i in 0..100i32 {
        let tx = client.transaction().await?;
        let account = (i % 20 + 1) as i64;
        let order: String = tx
            .query_one(
                "INSERT INTO orders (account_id, note) VALUES ($1, $2) RETURNING id::text",
                &[&account, &format!("order {i}")],
            )
            .await?
            .get(0);
        for line in 1..=3i32 {
            tx.execute(
                "INSERT INTO order_lines (order_id, line, sku, qty, price) VALUES ($1::text::uuid, $2, $3, $4, round((random() * 100)::numeric, 2))",
                &[&order, &line, &format!("sku-{}", (i + line) % 7), &(line * 2)],
            )
            .await?;
        }
        tx.execute(
            "UPDATE accounts SET balance = balance - 10 WHERE id = $1",
            &[&account],
        )
        .await?;
        tx.execute(
            "UPDATE accounts SET balance = balance + 10 WHERE id = $1",
            &[&((account % 20) + 1)],
        )
        .await?;
        tx.execute(
            "INSERT INTO audit_log (what) VALUES ($1)",
            &[&format!("order {order}")],
        )
        .await?;
        tx.commit().await?;
    }
    client
        .batch_execute("DELETE FROM accounts WHERE id = 20")
        .await?;
    Ok(())
}

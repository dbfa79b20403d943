//! Ferry's configuration: a TOML file, then `FERRY_...` environment
//! overrides, then validation that names the offending key.

mod env;
mod size;
mod validate;

use env::apply_env;
use serde::{Deserialize, Serialize};
pub use size::{ByteSize, Threshold};
use std::path::Path;
use thiserror::Error;
use validate::check_choices;

/// A configuration problem, naming the key.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// `proxy.auth`: how clients authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum ClientAuth {
    #[serde(rename = "scram-sha-256")]
    ScramSha256,
    #[serde(rename = "md5")]
    Md5,
}

/// `proxy.tls`: whether clients may (or must) reach Ferry over TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyTlsMode {
    /// SSL requests are answered 'N'.
    #[default]
    Disable,
    /// TLS for clients that ask for it, plaintext for the others.
    Allow,
    /// Clients that do not ask for TLS are refused (28000).
    Require,
}

/// `proxy.reads`: where read-only statements outside transactions go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reads {
    Master,
    Replicas,
    Causal,
}

/// `replication.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Async,
    Sync,
}

/// `replication.sync_fallback`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncFallback {
    Wait,
    Async,
}

/// `[proxy]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address the PostgreSQL-protocol listener binds.
    pub listen: String,
    /// How clients authenticate: `scram-sha-256` or `md5`.
    pub auth: ClientAuth,
    /// Largest client message accepted, in bytes.
    pub max_message_bytes: usize,
    /// Timeout for connecting and authenticating to a server, in ms.
    pub connect_timeout_ms: u64,
    /// Worker threads; 0 = half the cores, at least one. A proxy shares
    /// the machine with servers and clients more often than not.
    pub workers: usize,
    /// Where read-only statements outside transactions go: `master`,
    /// `replicas` (any replica, whatever its lag) or `causal` (a replica
    /// that has the session's last commit).
    pub reads: Reads,
    /// How long a new session waits for a master during a failover before
    /// it gets SQLSTATE 57P03, in ms.
    pub hold_timeout_ms: u64,
    /// On a stop (SIGTERM, Ctrl-C): how long transactions and statements
    /// under way may take to finish before their sessions are ended with
    /// SQLSTATE 57P01, in ms.
    pub shutdown_timeout_ms: u64,
    /// Client sessions open at once; one more gets SQLSTATE 53300 from
    /// Ferry. Each uses a server session on the master (and one on a
    /// replica when reads go there): keep it below the servers'
    /// `max_connections` minus `superuser_reserved_connections`, which
    /// leave room for Ferry's own sessions and a DBA.
    pub max_client_conn: usize,
    /// How long a client may take to start up and authenticate, in ms.
    pub startup_timeout_ms: u64,
    /// `disable`, `allow` or `require` TLS from clients.
    pub tls: ProxyTlsMode,
    /// Users not listed in `[[users]]` are looked up on the master (SCRAM
    /// verifiers only; their logins pass through).
    pub auth_lookup: bool,
    /// The server certificate (chain) clients see, PEM.
    pub tls_cert: Option<String>,
    /// Its private key, PEM.
    pub tls_key: Option<String>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            auth: ClientAuth::ScramSha256,
            max_message_bytes: 256 << 20,
            connect_timeout_ms: 5000,
            workers: 0,
            reads: Reads::Master,
            hold_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
            max_client_conn: 100,
            startup_timeout_ms: 10_000,
            tls: ProxyTlsMode::Disable,
            auth_lookup: false,
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the HTTP admin endpoint.
    pub listen: String,
    /// The bearer token mutating requests must carry. Without one (and
    /// without `token_file`), only callers on loopback may make them, and
    /// `listen` must be a loopback address.
    pub token: Option<String>,
    /// A file holding the token (its first line), instead of `token`.
    pub token_file: Option<String>,
    /// Serve HTTPS, with `proxy.tls_cert` and `proxy.tls_key`.
    pub tls: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9930".into(),
            token: None,
            token_file: None,
            tls: false,
        }
    }
}

impl AdminConfig {
    /// The admin token: `token`, else the first line of `token_file`.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = self.token.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(t.to_string()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let token = text.lines().next().unwrap_or_default().trim().to_string();
        if token.is_empty() {
            return Err(invalid(
                "admin.token_file",
                format!("{path} holds no token"),
            ));
        }
        Ok(Some(token))
    }
}

/// `[health]`: how nodes are checked, and when the master is failed.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// Interval between checks of every node (ms); also each check's limit.
    pub interval_ms: u64,
    /// Consecutive missed checks after which a node is failed (the master:
    /// failover).
    pub failures: u32,
}

impl Default for HealthSection {
    fn default() -> Self {
        Self {
            interval_ms: 500,
            failures: 3,
        }
    }
}

/// `[suspend]`: point-in-time suspensions of replicas.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SuspendSection {
    /// How far in the future a suspension must be scheduled (ms): the
    /// batcher needs the lead to cut exactly at the instant.
    pub min_lead_ms: u64,
    /// A shell command run once a replica is suspended and consistent
    /// (e.g. a `pg_dump` of it), with `FERRY_NODE`, `FERRY_NODE_DSN` and
    /// `FERRY_CONSISTENT_AS_OF` in its environment. Empty: none.
    pub hook: String,
}

impl Default for SuspendSection {
    fn default() -> Self {
        Self {
            min_lead_ms: 1000,
            hook: String::new(),
        }
    }
}

/// `[retention]`: what the master keeps for a replica that stays away.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSection {
    /// Beyond this many bytes of changes kept for an unreachable replica,
    /// the master stops keeping them: the replica is marked
    /// `needs_resync` and comes back only by `ferry resync` (the bound
    /// PostgreSQL's `max_slot_wal_keep_size` sets for a slot). None: no
    /// bound.
    pub max_bytes: Option<ByteSize>,
    /// Likewise once an unreachable replica has been away this many
    /// seconds with changes kept for it. None: no bound.
    pub max_age_s: Option<u64>,
    /// Once what is kept for a replica away or suspended grew by this much
    /// since the previous compaction (a size, `"<n> rows"`), or stopped
    /// growing, its changes are netted per key: it costs the master its
    /// changed keys, not its changes. `"off"`: never.
    pub compact_after: Threshold,
}

/// `[switchover]`: planned switchovers (`ferry switchover`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchoverSection {
    /// How long transactions and statements under way may take to finish
    /// once new statements are held (ms); past it the switchover is
    /// cancelled and nothing changes.
    pub drain_timeout_ms: u64,
    /// How long the chosen replica may take to apply the master's last
    /// batch (ms); past it the switchover is cancelled.
    pub catch_up_timeout_ms: u64,
}

impl Default for SwitchoverSection {
    fn default() -> Self {
        Self {
            drain_timeout_ms: 10_000,
            catch_up_timeout_ms: 10_000,
        }
    }
}

/// `[verify]`: the background check that compares every replicated table
/// on every replica with the master.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerifySection {
    /// About how long a pass over every table takes, in seconds (0: off).
    pub interval_s: u64,
    /// Rows compared per chunk.
    pub chunk_rows: i64,
}

impl Default for VerifySection {
    fn default() -> Self {
        Self {
            interval_s: 300,
            chunk_rows: 5000,
        }
    }
}

/// `[[nodes]]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub name: String,
    /// libpq-style connection string; its user needs superuser rights.
    pub dsn: String,
    /// Lower is preferred as master.
    #[serde(default = "default_priority")]
    pub priority: i32,
}

fn default_priority() -> i32 {
    100
}

/// `[replication]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// `async` (a commit returns when the master has it) or `sync` (when
    /// `sync_replicas` replicas have applied it too).
    pub mode: Mode,
    /// Replicas that must have applied a commit before a client hears of it
    /// in `sync` mode.
    pub sync_replicas: usize,
    /// `wait` (commits wait for the replicas however long it takes) or
    /// `async` (after `sync_timeout_ms`, commits continue without them,
    /// logged and shown, until enough replicas are current again).
    pub sync_fallback: SyncFallback,
    /// How long a commit waits before the `async` fallback applies, in ms.
    pub sync_timeout_ms: u64,
    /// `schema.table` patterns of replicated tables, `*` as wildcard.
    pub tables: Vec<String>,
    /// Patterns excluded from `tables`.
    pub exclude: Vec<String>,
    /// Interval between batch cuts, in ms.
    pub tick_ms: u64,
    /// Interval between outbox clean-ups, in ms.
    pub housekeeping_ms: u64,
    /// A replica that takes longer than this to apply one batch is
    /// disconnected and retried, in ms (a large batch gets a second more
    /// per MB it carries).
    pub apply_timeout_ms: u64,
    /// Where a batch's data goes beyond 16 MB, so that a transaction of
    /// any size costs Ferry bounded memory (files unlinked at once);
    /// default: the system's temporary directory.
    pub spill_dir: Option<std::path::PathBuf>,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Async,
            sync_replicas: 1,
            sync_fallback: SyncFallback::Wait,
            sync_timeout_ms: 5_000,
            tables: vec!["public.*".into()],
            exclude: Vec::new(),
            tick_ms: 50,
            housekeeping_ms: 1000,
            apply_timeout_ms: 30_000,
            spill_dir: None,
        }
    }
}

/// `[[users]]`: who may connect to Ferry, and as which server role their
/// sessions run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plaintext, or a SCRAM verifier (`SCRAM-SHA-256$...`) as PostgreSQL stores it.
    pub password: String,
    /// The server role the sessions log in as; default: `name`.
    #[serde(default)]
    pub server_user: Option<String>,
    /// The server role's password; default: `password` when that is
    /// plaintext. When `password` is a SCRAM verifier and this is unset,
    /// Ferry logs in to the servers with the keys of the client's own SCRAM
    /// proof (pass-through): every node must hold that same verifier.
    #[serde(default)]
    pub server_password: Option<String>,
    /// Lets the sessions run as a superuser (refused at start otherwise: a
    /// superuser bypasses row-level security and can switch capture off).
    #[serde(default)]
    pub allow_superuser: bool,
}

impl UserConfig {
    /// The role this user's sessions log in to the servers as.
    pub fn login(&self) -> ferry_wire::Login {
        let plaintext = Some(self.password.clone()).filter(|p| !p.starts_with("SCRAM-SHA-256$"));
        ferry_wire::Login {
            user: self
                .server_user
                .clone()
                .unwrap_or_else(|| self.name.clone()),
            password: self.server_password.clone().or(plaintext),
            scram_keys: None,
        }
    }

    /// Whether sessions log in with the client's own SCRAM keys.
    pub fn passes_through(&self) -> bool {
        self.password.starts_with("SCRAM-SHA-256$") && self.server_password.is_none()
    }
}

/// The whole file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub replication: ReplicationConfig,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub suspend: SuspendSection,
    #[serde(default)]
    pub health: HealthSection,
    #[serde(default)]
    pub switchover: SwitchoverSection,
    #[serde(default)]
    pub verify: VerifySection,
    #[serde(default)]
    pub retention: RetentionSection,
}

impl ProxyConfig {
    /// The number of worker threads to run.
    pub fn worker_threads(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        (cores / 2).max(1)
    }
}

impl Config {
    /// Reads, overrides from the process environment, and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let env: Vec<(String, String)> = std::env::vars().collect();
        Self::parse(&text, &env)
    }

    /// Parses TOML text with the given environment.
    pub fn parse(text: &str, env: &[(String, String)]) -> Result<Self, ConfigError> {
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        apply_env(&mut doc, env)?;
        check_choices(&doc)?;
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[nodes]]
name = "a"
dsn = "postgresql://postgres@127.0.0.1:5433/app"
priority = 1
[[nodes]]
name = "b"
dsn = "postgresql://postgres@127.0.0.1:5434/app"
priority = 2
[[users]]
name = "app"
password = "secret"
"#;

    #[test]
    fn defaults_fill_in() {
        let c = Config::parse(BASE, &[]).unwrap();
        assert_eq!(c.proxy.listen, "127.0.0.1:6432");
        assert_eq!(c.replication.tables, vec!["public.*"]);
    }

    #[test]
    fn environment_overrides() {
        let env = vec![
            ("FERRY_PROXY_LISTEN".to_string(), "0.0.0.0:7000".to_string()),
            (
                "FERRY_REPLICATION_TABLES".to_string(),
                "app.*, public.t".to_string(),
            ),
            (
                "FERRY_NODE_B_DSN".to_string(),
                "postgresql://postgres@h:1/app".to_string(),
            ),
            ("FERRY_NODE_B_PRIORITY".to_string(), "0".to_string()),
            ("FERRY_USER_APP_PASSWORD".to_string(), "other".to_string()),
        ];
        let c = Config::parse(BASE, &env).unwrap();
        assert_eq!(c.proxy.listen, "0.0.0.0:7000");
        assert_eq!(c.replication.tables, vec!["app.*", "public.t"]);
        assert_eq!(c.nodes[1].dsn, "postgresql://postgres@h:1/app");
        assert_eq!(c.nodes[1].priority, 0);
        assert_eq!(c.users[0].password, "other");
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::parse(&format!("[proxy]\nlisten = \"nowhere\"\n{BASE}"), &[]).unwrap_err();
        assert!(e.to_string().starts_with("proxy.listen:"), "{e}");
        let e = Config::parse(&format!("[proxy]\nlisten_port = 1\n{BASE}"), &[]).unwrap_err();
        assert!(e.to_string().contains("listen_port"), "{e}");
        let e = Config::parse(&BASE.replace("5434/app", "5434/other"), &[]).unwrap_err();
        assert!(e.to_string().starts_with("nodes[1].dsn:"), "{e}");
        let e =
            Config::parse(&format!("{BASE}\n[replication]\nmode = \"semi\"\n"), &[]).unwrap_err();
        assert!(e.to_string().starts_with("replication.mode:"), "{e}");
        let e = Config::parse(
            &format!("{BASE}\n[replication]\nmode = \"sync\"\nsync_replicas = 5\n"),
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("replication.sync_replicas:"),
            "{e}"
        );
        let e = Config::parse(
            &format!("{BASE}\n[replication]\nmode = \"sync\"\nsync_fallback = \"maybe\"\n"),
            &[],
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with("replication.sync_fallback:"),
            "{e}"
        );
        let e = Config::parse(BASE, &[("FERRY_PROXY_READS".into(), "nearest".into())]).unwrap_err();
        assert!(e.to_string().starts_with("proxy.reads:"), "{e}");
        let ok = Config::parse(&format!("{BASE}\n[replication]\nmode = \"sync\"\n"), &[]);
        assert!(ok.is_ok(), "{ok:?}");
        let e = Config::parse(&BASE.replace("name = \"b\"", "name = \"a\""), &[]).unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert!(Config::parse("", &[]).is_err());
    }
}

//! Ferry's configuration: a TOML file, then `FERRY_...` environment
//! overrides, then validation that names the offending key.

use ferry_batcher::pattern::Pattern;
use ferry_wire::Target;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use thiserror::Error;

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

/// `[proxy]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Address the PostgreSQL-protocol listener binds.
    pub listen: String,
    /// How clients authenticate: `scram-sha-256` or `md5`.
    pub auth: String,
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
    pub reads: String,
    /// How long a new session waits for a master during a failover before
    /// it gets SQLSTATE 57P03, in ms.
    pub hold_timeout_ms: u64,
    /// On a stop (SIGTERM, Ctrl-C): how long transactions and statements
    /// under way may take to finish before their sessions are ended with
    /// SQLSTATE 57P01, in ms.
    pub shutdown_timeout_ms: u64,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:6432".into(),
            auth: "scram-sha-256".into(),
            max_message_bytes: 256 << 20,
            connect_timeout_ms: 5000,
            workers: 0,
            reads: "master".into(),
            hold_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
        }
    }
}

/// `[admin]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the HTTP admin endpoint.
    pub listen: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9930".into(),
        }
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
    pub mode: String,
    /// Replicas that must have applied a commit before a client hears of it
    /// in `sync` mode.
    pub sync_replicas: usize,
    /// `wait` (commits wait for the replicas however long it takes) or
    /// `async` (after `sync_timeout_ms`, commits continue without them,
    /// logged and shown, until enough replicas are current again).
    pub sync_fallback: String,
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
    /// disconnected and retried, in ms.
    pub apply_timeout_ms: u64,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            mode: "async".into(),
            sync_replicas: 1,
            sync_fallback: "wait".into(),
            sync_timeout_ms: 5_000,
            tables: vec!["public.*".into()],
            exclude: Vec::new(),
            tick_ms: 50,
            housekeeping_ms: 1000,
            apply_timeout_ms: 30_000,
        }
    }
}

/// `[[users]]`: who may connect to Ferry.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub name: String,
    /// Plaintext, or a SCRAM verifier (`SCRAM-SHA-256$...`) as PostgreSQL stores it.
    pub password: String,
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
}

/// Environment overrides: `FERRY_<SECTION>_<KEY>` for `proxy`, `admin`,
/// `replication`, `suspend`, `health`, `switchover` and `verify` keys (lists comma-separated), `FERRY_NODE_<NAME>_DSN` /
/// `_PRIORITY`, `FERRY_USER_<NAME>_PASSWORD`. Names are upper-cased with
/// `-` as `_`.
fn apply_env(doc: &mut toml::Table, env: &[(String, String)]) -> Result<(), ConfigError> {
    let norm = |s: &str| s.to_ascii_uppercase().replace('-', "_");
    for (k, v) in env {
        let Some(rest) = k.strip_prefix("FERRY_") else {
            continue;
        };
        for section in [
            "proxy",
            "admin",
            "replication",
            "suspend",
            "health",
            "switchover",
            "verify",
        ] {
            let Some(key) = rest.strip_prefix(&format!("{}_", norm(section))) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let table = doc
                .entry(section)
                .or_insert_with(|| toml::Value::Table(Default::default()));
            let Some(table) = table.as_table_mut() else {
                return Err(invalid(section, "must be a table"));
            };
            let value = match key.as_str() {
                "tables" | "exclude" => toml::Value::Array(
                    v.split(',')
                        .map(|s| toml::Value::String(s.trim().to_string()))
                        .collect(),
                ),
                _ => match v.parse::<i64>() {
                    Ok(n) => toml::Value::Integer(n),
                    Err(_) => toml::Value::String(v.clone()),
                },
            };
            table.insert(key, value);
        }
        for (list, field, key_name) in [("nodes", "NODE_", "name"), ("users", "USER_", "name")] {
            let Some(spec) = rest.strip_prefix(field) else {
                continue;
            };
            let Some(items) = doc.get_mut(list).and_then(|v| v.as_array_mut()) else {
                continue;
            };
            for item in items.iter_mut().filter_map(|i| i.as_table_mut()) {
                let name = item
                    .get(key_name)
                    .and_then(|n| n.as_str())
                    .map(norm)
                    .unwrap_or_default();
                let Some(attr) = spec.strip_prefix(&format!("{name}_")) else {
                    continue;
                };
                let attr = attr.to_ascii_lowercase();
                let value = match attr.as_str() {
                    "priority" => toml::Value::Integer(
                        v.parse()
                            .map_err(|_| invalid(k.clone(), "must be an integer"))?,
                    ),
                    _ => toml::Value::String(v.clone()),
                };
                item.insert(attr, value);
            }
        }
    }
    Ok(())
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
        let cfg: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every key that parsing alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.proxy.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "proxy.listen",
                format!("{e}: expected host:port, e.g. 127.0.0.1:6432"),
            )
        })?;
        self.admin.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "admin.listen",
                format!("{e}: expected host:port, e.g. 127.0.0.1:9930"),
            )
        })?;
        if !matches!(self.proxy.auth.as_str(), "scram-sha-256" | "md5") {
            return Err(invalid(
                "proxy.auth",
                "must be \"scram-sha-256\" or \"md5\"",
            ));
        }
        if self.verify.chunk_rows < 1 {
            return Err(invalid("verify.chunk_rows", "must be at least 1"));
        }
        if self.proxy.max_message_bytes < 8192 {
            return Err(invalid("proxy.max_message_bytes", "must be at least 8192"));
        }
        if self.nodes.is_empty() {
            return Err(invalid("nodes", "at least one [[nodes]] entry is required"));
        }
        let mut names = HashSet::new();
        let mut db = None;
        for (i, n) in self.nodes.iter().enumerate() {
            if n.name.is_empty()
                || !n
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(invalid(
                    format!("nodes[{i}].name"),
                    "must be non-empty letters, digits, _ or -",
                ));
            }
            if !names.insert(n.name.as_str()) {
                return Err(invalid(
                    format!("nodes[{i}].name"),
                    format!("duplicate node name {:?}", n.name),
                ));
            }
            let t = Target::from_dsn(&n.dsn)
                .map_err(|e| invalid(format!("nodes[{i}].dsn"), e.to_string()))?;
            if let Some(d) = &db {
                if *d != t.dbname {
                    return Err(invalid(
                        format!("nodes[{i}].dsn"),
                        format!("database {:?} differs from {:?}: every node must name the same database", t.dbname, d),
                    ));
                }
            }
            db = Some(t.dbname);
        }
        match self.replication.mode.as_str() {
            "async" => {}
            "sync" => {
                let replicas = self.nodes.len().saturating_sub(1);
                if self.replication.sync_replicas == 0 || self.replication.sync_replicas > replicas
                {
                    return Err(invalid(
                        "replication.sync_replicas",
                        format!(
                            "must be between 1 and the number of replicas ({replicas}), not {}",
                            self.replication.sync_replicas
                        ),
                    ));
                }
            }
            other => {
                return Err(invalid(
                    "replication.mode",
                    format!("{other:?} is not a mode; use \"async\" or \"sync\""),
                ))
            }
        }
        match self.proxy.reads.as_str() {
            "master" => {}
            "replicas" | "causal" if self.nodes.len() > 1 => {}
            "replicas" | "causal" => {
                return Err(invalid("proxy.reads", "needs at least one replica node"))
            }
            other => {
                return Err(invalid(
                    "proxy.reads",
                    format!(
                        "{other:?} is not a choice; use \"master\", \"replicas\" or \"causal\""
                    ),
                ))
            }
        }
        match self.replication.sync_fallback.as_str() {
            "wait" => {}
            "async" if self.replication.sync_timeout_ms > 0 => {}
            "async" => {
                return Err(invalid(
                    "replication.sync_timeout_ms",
                    "must be positive with sync_fallback = \"async\"",
                ))
            }
            other => {
                return Err(invalid(
                    "replication.sync_fallback",
                    format!("{other:?} is not a fallback; use \"wait\" or \"async\""),
                ))
            }
        }
        if self.replication.tables.is_empty() {
            return Err(invalid(
                "replication.tables",
                "name at least one pattern, e.g. \"public.*\"",
            ));
        }
        for (key, list) in [
            ("replication.tables", &self.replication.tables),
            ("replication.exclude", &self.replication.exclude),
        ] {
            for p in list {
                Pattern::parse(p).map_err(|e| invalid(key, e.to_string()))?;
            }
        }
        if self.replication.tick_ms == 0
            || self.replication.housekeeping_ms == 0
            || self.replication.apply_timeout_ms == 0
        {
            return Err(invalid(
                "replication",
                "tick_ms, housekeeping_ms and apply_timeout_ms must be positive",
            ));
        }
        if self.health.interval_ms == 0 || self.health.failures == 0 {
            return Err(invalid(
                "health",
                "interval_ms and failures must be positive",
            ));
        }
        if self.switchover.drain_timeout_ms == 0 || self.switchover.catch_up_timeout_ms == 0 {
            return Err(invalid(
                "switchover",
                "drain_timeout_ms and catch_up_timeout_ms must be positive",
            ));
        }
        let mut users = HashSet::new();
        for (i, u) in self.users.iter().enumerate() {
            if u.name.is_empty() || !users.insert(u.name.as_str()) {
                return Err(invalid(
                    format!("users[{i}].name"),
                    "must be non-empty and unique",
                ));
            }
            if u.password.starts_with("SCRAM-SHA-256$") {
                ferry_wire::scram::Verifier::parse(&u.password)
                    .map_err(|e| invalid(format!("users[{i}].password"), e.to_string()))?;
                if self.proxy.auth == "md5" {
                    return Err(invalid(
                        format!("users[{i}].password"),
                        "md5 authentication needs the plaintext password, not a SCRAM verifier",
                    ));
                }
            }
        }
        Ok(())
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

//! Checking every key that parsing alone cannot, each error naming its
//! key: words from a short list ([`check_choices`], before the document is
//! typed), addresses, nodes, modes against the nodes there are, patterns,
//! intervals, users.

use super::{invalid, ClientAuth, Config, ConfigError, Mode, ProxyTlsMode, Reads, SyncFallback};
use ferry_batcher::pattern::Pattern;
use ferry_wire::Target;
use std::collections::HashSet;
use std::net::SocketAddr;

/// The keys whose value is one of a few words: section, key, the words,
/// and what to say of another value (`{}` is the value).
const CHOICES: [(&str, &str, &[&str], &str); 5] = [
    (
        "proxy",
        "auth",
        &["scram-sha-256", "md5"],
        "must be \"scram-sha-256\" or \"md5\"",
    ),
    (
        "proxy",
        "tls",
        &["disable", "allow", "require"],
        "{} is not a choice; use \"disable\", \"allow\" or \"require\"",
    ),
    (
        "proxy",
        "reads",
        &["master", "replicas", "causal"],
        "{} is not a choice; use \"master\", \"replicas\" or \"causal\"",
    ),
    (
        "replication",
        "mode",
        &["async", "sync"],
        "{} is not a mode; use \"async\" or \"sync\"",
    ),
    (
        "replication",
        "sync_fallback",
        &["wait", "async"],
        "{} is not a fallback; use \"wait\" or \"async\"",
    ),
];

/// Refuses a word [`CHOICES`] does not allow, naming the key, before the
/// document becomes typed (where it would only be a parse error).
pub(super) fn check_choices(doc: &toml::Table) -> Result<(), ConfigError> {
    for (section, key, words, problem) in CHOICES {
        let value = doc
            .get(section)
            .and_then(|s| s.get(key))
            .and_then(|v| v.as_str());
        if let Some(v) = value.filter(|v| !words.contains(v)) {
            return Err(invalid(
                format!("{section}.{key}"),
                problem.replace("{}", &format!("{v:?}")),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Checks every key that parsing alone cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_listeners()?;
        self.validate_nodes()?;
        self.validate_modes()?;
        self.validate_replication()?;
        self.validate_users()
    }

    fn validate_listeners(&self) -> Result<(), ConfigError> {
        self.proxy.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "proxy.listen",
                format!("{e}: expected host:port, e.g. 127.0.0.1:6432"),
            )
        })?;
        let admin = self.admin.listen.parse::<SocketAddr>().map_err(|e| {
            invalid(
                "admin.listen",
                format!("{e}: expected host:port, e.g. 127.0.0.1:9930"),
            )
        })?;
        if !admin.ip().is_loopback() && self.admin.token()?.is_none() {
            return Err(invalid(
                "admin.listen",
                format!(
                    "{admin} is reachable beyond this machine: set admin.token (or admin.token_file, \
                     or FERRY_ADMIN_TOKEN) so that only operators can switch over, remove or force nodes"
                ),
            ));
        }
        if self.proxy.tls != ProxyTlsMode::Disable
            && (self.proxy.tls_cert.is_none() || self.proxy.tls_key.is_none())
        {
            return Err(invalid(
                "proxy.tls",
                "TLS needs proxy.tls_cert and proxy.tls_key (PEM files)",
            ));
        }
        if self.proxy.auth_lookup && self.proxy.auth == ClientAuth::Md5 {
            return Err(invalid(
                "proxy.auth_lookup",
                "looked-up users log in with SCRAM: set proxy.auth = \"scram-sha-256\"",
            ));
        }
        if self.admin.tls && (self.proxy.tls_cert.is_none() || self.proxy.tls_key.is_none()) {
            return Err(invalid(
                "admin.tls",
                "HTTPS uses proxy.tls_cert and proxy.tls_key: set them",
            ));
        }
        if self.proxy.max_client_conn == 0 || self.proxy.startup_timeout_ms == 0 {
            return Err(invalid(
                "proxy",
                "max_client_conn and startup_timeout_ms must be positive",
            ));
        }
        if self.proxy.max_message_bytes < 8192 {
            return Err(invalid("proxy.max_message_bytes", "must be at least 8192"));
        }
        Ok(())
    }

    fn validate_nodes(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// The modes against the nodes there are.
    fn validate_modes(&self) -> Result<(), ConfigError> {
        let replicas = self.nodes.len().saturating_sub(1);
        let k = self.replication.sync_replicas;
        if self.replication.mode == Mode::Sync && (k == 0 || k > replicas) {
            return Err(invalid(
                "replication.sync_replicas",
                format!("must be between 1 and the number of replicas ({replicas}), not {k}"),
            ));
        }
        if self.proxy.reads != Reads::Master && replicas == 0 {
            return Err(invalid("proxy.reads", "needs at least one replica node"));
        }
        if self.replication.sync_fallback == SyncFallback::Async
            && self.replication.sync_timeout_ms == 0
        {
            return Err(invalid(
                "replication.sync_timeout_ms",
                "must be positive with sync_fallback = \"async\"",
            ));
        }
        Ok(())
    }

    fn validate_replication(&self) -> Result<(), ConfigError> {
        if self.verify.chunk_rows < 1 {
            return Err(invalid("verify.chunk_rows", "must be at least 1"));
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
        if self.retention.max_bytes.is_some_and(|b| b.0 == 0) {
            return Err(invalid("retention.max_bytes", "must be positive"));
        }
        if self.retention.compact_after.is_zero() {
            return Err(invalid(
                "retention.compact_after",
                "must be positive (\"off\" turns compaction off)",
            ));
        }
        if self.retention.max_age_s == Some(0) {
            return Err(invalid("retention.max_age_s", "must be positive"));
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
        Ok(())
    }

    fn validate_users(&self) -> Result<(), ConfigError> {
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
                if self.proxy.auth == ClientAuth::Md5 {
                    return Err(invalid(
                        format!("users[{i}].password"),
                        "md5 authentication needs the plaintext password, not a SCRAM verifier",
                    ));
                }
            }
            if u.server_user.as_deref() == Some("") {
                return Err(invalid(
                    format!("users[{i}].server_user"),
                    "must not be empty",
                ));
            }
        }
        Ok(())
    }
}

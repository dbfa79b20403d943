//! `FERRY_*` environment variables over the configuration file.
//!
//! Hand-written rather than the `config` crate's environment source: a
//! variable addresses a `[[nodes]]` or `[[users]]` entry by its name
//! (`FERRY_NODE_B_DSN`), which a prefix-and-separator mapping into nested
//! tables cannot express, and every error must name the key it is about.

use super::{invalid, ConfigError};

/// Environment overrides: `FERRY_<SECTION>_<KEY>` for `proxy`, `admin`,
/// `replication`, `suspend`, `health`, `switchover`, `verify` and `retention` keys (lists comma-separated), `FERRY_NODE_<NAME>_DSN` /
/// `_PRIORITY`, `FERRY_USER_<NAME>_PASSWORD`. Names are upper-cased with
/// `-` as `_`.
pub(super) fn apply_env(
    doc: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(), ConfigError> {
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
            "retention",
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
                _ => match (v.parse::<i64>(), v.parse::<bool>()) {
                    (Ok(n), _) => toml::Value::Integer(n),
                    (_, Ok(b)) => toml::Value::Boolean(b),
                    _ => toml::Value::String(v.clone()),
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
                    "allow_superuser" => toml::Value::Boolean(
                        v.parse()
                            .map_err(|_| invalid(k.clone(), "must be true or false"))?,
                    ),
                    _ => toml::Value::String(v.clone()),
                };
                item.insert(attr, value);
            }
        }
    }
    Ok(())
}

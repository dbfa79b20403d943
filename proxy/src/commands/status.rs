//! `ferry status`: the admin endpoint's `/status`, as a table.

use anyhow::{bail, Context};
use std::process::ExitCode;

/// GETs a path from the admin endpoint and returns the body.
pub async fn get(base: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = super::admin_http::call(base, hyper::Method::GET, path, None).await?;
    if !(200..300).contains(&status) {
        bail!("{path} answered {status}");
    }
    Ok(body)
}

/// Renders the `/status` document for people.
pub fn render(doc: &serde_json::Value) -> String {
    let mut out = format!(
        "master {}  mode {}  last batch {}  outbox {} rows awaiting clean-up{}  tables {}  clients {}\n\n",
        doc["master"].as_str().unwrap_or("?"),
        doc["mode"].as_str().unwrap_or("?"),
        doc["last_batch"],
        doc["outbox_backlog"],
        doc["outbox_kept_for"]
            .as_str()
            .map(|n| format!(" (kept for {n})"))
            .unwrap_or_default(),
        doc["tables"],
        doc["client_connections"],
    );
    out += &format!(
        "{:<12} {:<8} {:<10} {:>13} {:>11} {:>9} {:>11}  {}\n",
        "node",
        "role",
        "reachable",
        "applied_batch",
        "lag_batches",
        "lag_rows",
        "lag_seconds",
        "last_error"
    );
    for n in doc["nodes"].as_array().into_iter().flatten() {
        out += &format!(
            "{:<12} {:<8} {:<10} {:>13} {:>11} {:>9} {:>11.3}  {}\n",
            n["name"].as_str().unwrap_or("?"),
            n["role"].as_str().unwrap_or("?"),
            n["reachable"].to_string(),
            n["applied_batch"].to_string(),
            n["lag_batches"].to_string(),
            n["lag_rows"].to_string(),
            n["lag_seconds"].as_f64().unwrap_or(0.0),
            n["last_error"].as_str().unwrap_or(""),
        );
    }
    if let Some(sync) = doc["sync"].as_object() {
        out += &format!(
            "\nsync: {} replica(s) required, {} commit(s) waiting{}\n",
            sync.get("replicas_required")
                .unwrap_or(&serde_json::Value::Null),
            sync.get("waiting_commits")
                .unwrap_or(&serde_json::Value::Null),
            if sync.get("degraded").and_then(|d| d.as_bool()) == Some(true) {
                ", DEGRADED: commits continue without the replicas"
            } else {
                ""
            }
        );
    }
    let v = &doc["verify"];
    if v["enabled"] == true {
        out += &format!(
            "\nbackground check: {} pass(es) over every table{}, {} chunk(s) compared{}\n",
            v["passes"],
            v["last_pass_seconds"]
                .as_f64()
                .map(|s| format!(" (last took {s:.0} s)"))
                .unwrap_or_default(),
            v["chunks"],
            v["table"]
                .as_str()
                .map(|t| format!("; now in {t}"))
                .unwrap_or_default(),
        );
    } else if v.is_object() {
        out += "\nbackground check: off (verify.interval_s = 0)\n";
    }
    for n in doc["nodes"].as_array().into_iter().flatten() {
        let s = &n["suspension"];
        if let Some(state) = s["state"].as_str() {
            out += &format!(
                "\n{}: {state} at {}{}; {} changes to {} keys pending{}{}\n",
                n["name"].as_str().unwrap_or("?"),
                s["at"].as_str().unwrap_or("?"),
                s["consistent_as_of"]
                    .as_str()
                    .map(|t| format!(" (consistent as of {t})"))
                    .unwrap_or_default(),
                s["pending_changes"],
                s["pending_keys"],
                match (
                    s["hook"]["running"].as_bool(),
                    s["hook"]["exit_code"].as_i64()
                ) {
                    (Some(true), _) => "; hook running".to_string(),
                    (_, Some(code)) => format!("; hook exited {code}"),
                    _ => String::new(),
                },
                s["error"]
                    .as_str()
                    .map(|e| format!("; {e}"))
                    .unwrap_or_default(),
            );
        }
        for d in n["divergent"].as_array().into_iter().flatten() {
            out += &format!(
                "\n{}: DIFFERS from the master in {} (keys after {} through {}: master {} rows, replica {}); \
                 run `ferry repair {}`\n",
                n["name"].as_str().unwrap_or("?"),
                d["table"].as_str().unwrap_or("?"),
                d["after"].as_str().unwrap_or("(start)"),
                d["through"].as_str().unwrap_or("(end)"),
                d["master_rows"],
                d["replica_rows"],
                n["name"].as_str().unwrap_or("?"),
            );
        }
        if let Some(statement) = n["failed_statement"].as_str() {
            out += &format!(
                "\n{}: batch {} failed to apply (retried); failing statement: {}\n",
                n["name"].as_str().unwrap_or("?"),
                n["failed_batch"],
                statement
            );
        }
    }
    let changes = doc["schema_changes"].as_array().map_or(&[][..], |c| &c[..]);
    if !changes.is_empty() {
        out += "\nschema changes seen on the master:\n";
        for c in changes.iter().rev().take(5) {
            let how = if c["replicated"].as_bool() == Some(true) {
                "replicated"
            } else {
                "NOT replicated"
            };
            out += &format!(
                "  {} {} {} ({how})\n",
                c["at"].as_str().unwrap_or("?"),
                c["tag"].as_str().unwrap_or("?"),
                c["object"].as_str().unwrap_or("?")
            );
        }
    }
    out
}

pub async fn run(admin: &str, json: bool) -> anyhow::Result<ExitCode> {
    let body = get(admin, "/status").await?;
    if json {
        println!("{body}");
    } else {
        let doc: serde_json::Value = serde_json::from_str(&body).context("status is not JSON")?;
        print!("{}", render(&doc));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_sync_failures_and_schema_changes() {
        let doc = serde_json::json!({
            "master": "a", "mode": "sync", "last_batch": 9, "outbox_backlog": 0, "tables": 1,
            "client_connections": 2,
            "sync": {"replicas_required": 1, "degraded": true, "waiting_commits": 0},
            "nodes": [
                {"name": "a", "role": "master", "reachable": true},
                {"name": "b", "role": "replica", "reachable": true, "failed_batch": 7,
                 "failed_statement": "INSERT INTO t", "last_error": "duplicate key",
                 "divergent": [{"table": "public.t", "after": null, "through": "{\"id\": 9}",
                                "master_rows": 9, "replica_rows": 8, "batch": 6}]},
                {"name": "c", "role": "replica", "reachable": true,
                 "suspension": {"state": "suspended", "at": "T", "consistent_as_of": "T",
                                "pending_changes": 5, "pending_keys": 2,
                                "hook": {"running": false, "exit_code": 0, "output_tail": ""}}}
            ],
            "schema_changes": [{"at": "now", "tag": "ALTER TABLE", "object": "public.t", "query": "q", "replicated": true},
                               {"at": "now", "tag": "CREATE TABLE", "object": "x.u", "query": "q", "replicated": false}]
        });
        let text = render(&doc);
        assert!(text.contains("mode sync"), "{text}");
        assert!(text.contains("outbox 0 rows awaiting clean-up"), "{text}");
        assert!(text.contains("DEGRADED"), "{text}");
        assert!(text.contains("b: batch 7 failed to apply"), "{text}");
        assert!(
            text.contains("b: DIFFERS from the master in public.t (keys after (start) through {\"id\": 9}: master 9 rows, replica 8); run `ferry repair b`"),
            "{text}"
        );
        assert!(text.contains("INSERT INTO t"), "{text}");
        assert!(
            text.contains("c: suspended at T (consistent as of T); 5 changes to 2 keys pending; hook exited 0"),
            "{text}"
        );
        assert!(text.contains("ALTER TABLE public.t (replicated)"), "{text}");
        assert!(text.contains("CREATE TABLE x.u (NOT replicated)"), "{text}");
        let quiet = render(&serde_json::json!({"nodes": []}));
        assert!(
            !quiet.contains("sync:") && !quiet.contains("schema changes"),
            "{quiet}"
        );
    }
}

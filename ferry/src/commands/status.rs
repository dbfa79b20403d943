//! `ferry status`: the admin endpoint's `/status`, as a table.

use anyhow::{bail, Context};
use ferry::config::Mode;
use ferry::status::{NodeStatus, Status};
use ferry_batcher::status::{CaptureStatus, CompactionStatus};
use std::process::ExitCode;

/// GETs a path from the admin endpoint and returns the body.
pub async fn get(base: &str, path: &str) -> anyhow::Result<String> {
    let (status, body) = super::admin_http::call(base, hyper::Method::GET, path, None).await?;
    if !(200..300).contains(&status) {
        bail!("{path} answered {status}");
    }
    Ok(body)
}

/// What compaction of the changes kept for replicas away did, once it ran.
fn compaction_notes(c: &CompactionStatus) -> String {
    let mut out = String::new();
    if c.passes > 0 || c.running {
        out += &format!(
            "\ncompaction of what is kept for replicas away: {} pass(es), {} superseded change(s) removed{}\n",
            c.passes,
            c.removed_rows,
            if c.running { "; a pass is running" } else { "" },
        );
    }
    if let Some(e) = &c.last_error {
        out += &format!("compaction FAILED at its latest pass: {e}\n");
    }
    out
}

/// Renders the `/status` document for people.
pub fn render(doc: &Status) -> String {
    let mut out = format!(
        "master {}  mode {}  last batch {}  outbox {} rows awaiting clean-up{}{}  tables {}  clients {}\n\n",
        doc.master,
        match doc.mode {
            Mode::Async => "async",
            Mode::Sync => "sync",
        },
        doc.last_batch,
        doc.outbox_backlog,
        // A count predates the batches cut after it.
        doc.outbox_counted_at_batch
            .filter(|&at| at < doc.last_batch)
            .map(|at| format!(" (counted at batch {at})"))
            .unwrap_or_default(),
        doc.outbox_kept_for
            .as_deref()
            .map(|n| format!(" (kept for {n})"))
            .unwrap_or_default(),
        doc.tables,
        doc.client_connections,
    );
    out += &nodes_table(&doc.nodes);
    if let Some(sync) = &doc.sync {
        out += &format!(
            "\nsync: {} replica(s) required, {} commit(s) waiting{}\n",
            sync.replicas_required,
            sync.waiting_commits,
            if sync.degraded {
                ", DEGRADED: commits continue without the replicas"
            } else {
                ""
            }
        );
    }
    match &doc.verify {
        Some(v) if v.enabled => {
            out += &format!(
                "\nbackground check: {} pass(es) over every table{}, {} chunk(s) compared{}\n",
                v.passes,
                v.last_pass_seconds
                    .map(|s| format!(" (last took {s:.0} s)"))
                    .unwrap_or_default(),
                v.chunks,
                v.table
                    .as_deref()
                    .map(|t| format!("; now in {t}"))
                    .unwrap_or_default(),
            );
        }
        Some(_) => out += "\nbackground check: off (verify.interval_s = 0)\n",
        None => {}
    }
    out += &capture_notes(&doc.capture);
    out += &compaction_notes(&doc.compaction);
    for n in &doc.nodes {
        out += &replica_notes(n);
    }
    if !doc.schema_changes.is_empty() {
        out += "\nschema changes seen on the master:\n";
        for c in doc.schema_changes.iter().rev().take(5) {
            let how = if c.replicated {
                "replicated"
            } else {
                "NOT replicated"
            };
            out += &format!("  {} {} {} ({how})\n", c.at, c.tag, c.object);
        }
    }
    out
}

/// Capture on the master, when it is not whole or was repaired.
fn capture_notes(capture: &CaptureStatus) -> String {
    let mut out = String::new();
    if !capture.problems.is_empty() {
        out += &format!(
            "\ncapture NOT INTACT on the master: {}\n",
            capture.problems.join("; ")
        );
    }
    if let Some(r) = &capture.last_repair {
        out += &format!(
            "\ncapture repaired at {} ({}): rows written while it was off may be missing on the \
             replicas; run `ferry verify`\n",
            r.at,
            r.problems.join("; ")
        );
    }
    out
}

/// One line per node.
fn nodes_table(nodes: &[NodeStatus]) -> String {
    let mut out = format!(
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
    for n in nodes {
        out += &format!(
            "{:<12} {:<8} {:<10} {:>13} {:>11} {:>9} {:>11.3}  {}\n",
            n.name,
            n.role.as_str(),
            n.reachable.to_string(),
            n.applied_batch.to_string(),
            n.lag_batches.to_string(),
            n.lag_rows.to_string(),
            n.lag_seconds,
            n.last_error.as_deref().unwrap_or(""),
        );
    }
    out
}

/// A replica's suspension, differences and failed batch, if any.
fn replica_notes(n: &NodeStatus) -> String {
    let mut out = String::new();
    let detail = n.detail();
    if let Some(s) = &detail.suspension {
        let hook = match &s.hook {
            Some(h) if h.running => "; hook running".to_string(),
            Some(h) => h
                .exit_code
                .map(|code| format!("; hook exited {code}"))
                .unwrap_or_default(),
            None => String::new(),
        };
        out += &format!(
            "\n{}: {} at {}{}; {} changes to {} keys pending{hook}{}\n",
            n.name,
            s.state.as_str(),
            s.at,
            s.consistent_as_of
                .as_deref()
                .map(|t| format!(" (consistent as of {t})"))
                .unwrap_or_default(),
            s.pending_changes,
            s.pending_keys,
            s.error
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default(),
        );
    }
    if detail.needs_resync {
        out += &format!(
            "\n{}: NEEDS RESYNC: it cannot catch up by batches; run `ferry resync {}`\n",
            n.name, n.name
        );
    } else if detail.kept_bytes > 0 && !n.reachable {
        out += &format!(
            "\n{}: the master keeps {} bytes of changes for it ({} rows{}){}{}\n",
            n.name,
            detail.kept_bytes,
            n.lag_rows,
            detail
                .kept_keys
                .map(|k| format!(", {k} keys"))
                .unwrap_or_default(),
            detail
                .released_in_seconds
                .map(|s| format!("; released in about {s:.0} s at this rate"))
                .unwrap_or_default(),
            if detail.kept_near_bound {
                "; PAST 80% of [retention] max_bytes"
            } else {
                ""
            },
        );
    }
    for w in &detail.schema_warnings {
        out += &format!(
            "\n{}: schema change not applied as on the master: {w}\n",
            n.name
        );
    }
    for d in &detail.divergent {
        out += &format!(
            "\n{}: DIFFERS from the master in {} (keys after {} through {}: master {} rows, replica {}); \
             run `ferry repair {}`\n",
            n.name,
            d.table,
            d.after.as_deref().unwrap_or("(start)"),
            d.through.as_deref().unwrap_or("(end)"),
            d.master_rows,
            d.replica_rows,
            n.name,
        );
    }
    if let Some(statement) = &detail.failed_statement {
        out += &format!(
            "\n{}: batch {} failed to apply (retried); failing statement: {}\n",
            n.name,
            detail
                .failed_batch
                .map_or_else(|| "null".to_string(), |b| b.to_string()),
            statement
        );
    }
    out
}

pub async fn run(admin: &str, json: bool) -> anyhow::Result<ExitCode> {
    let body = get(admin, "/status").await?;
    if json {
        println!("{body}");
    } else {
        let doc: Status =
            serde_json::from_str(&body).context("/status is not a status document")?;
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
            "outbox_counted_at_batch": 7,
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
            "compaction": {"running": false, "passes": 3, "removed_rows": 990000},
            "schema_changes": [{"at": "now", "tag": "ALTER TABLE", "object": "public.t", "query": "q", "replicated": true},
                               {"at": "now", "tag": "CREATE TABLE", "object": "x.u", "query": "q", "replicated": false}]
        });
        let doc: Status = serde_json::from_value(doc).unwrap();
        let text = render(&doc);
        assert!(text.contains("mode sync"), "{text}");
        assert!(
            text.contains("outbox 0 rows awaiting clean-up (counted at batch 7)"),
            "{text}"
        );
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
        assert!(
            text.contains("compaction of what is kept for replicas away: 3 pass(es), 990000 superseded change(s) removed"),
            "{text}"
        );
        assert!(text.contains("ALTER TABLE public.t (replicated)"), "{text}");
        assert!(text.contains("CREATE TABLE x.u (NOT replicated)"), "{text}");
        let quiet = render(&serde_json::from_value(serde_json::json!({"nodes": []})).unwrap());
        assert!(
            !quiet.contains("sync:")
                && !quiet.contains("schema changes")
                && !quiet.contains("compaction"),
            "{quiet}"
        );
    }
}

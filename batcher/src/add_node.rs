//! Preparing a new, empty node to join as a replica (`ferry add-node`):
//!
//! 1. **Definitions.** The replicated tables' and sequences' definitions
//!    are copied from the master with `pg_dump --schema-only` (columns,
//!    defaults, keys, constraints, indexes, triggers; Ferry's own capture
//!    triggers are left out: capture is generated on the node next).
//! 2. **Capture.** The `ferry` schema and capture are installed as on any
//!    replica.
//! 3. **Rows.** A consistent copy from one master snapshot, which becomes
//!    the node's ledger position ([`crate::resync::copy_all`]); from there
//!    it catches up from the batch stream like any replica.

use crate::catalog::{replicated_sequences, replicated_table_names, replicated_tables};
use crate::install::{connect, prepare_replica};
use crate::pattern::Pattern;
use crate::resync::{copy_all, Copied, Progress};
use crate::BatchError;
use ferry_sql::quote::ident;
use ferry_sql::{resync, sequences};
use ferry_wire::Target;
use std::collections::BTreeSet;
use std::path::PathBuf;
use tracing::info;

/// What a running addition reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Copying table definitions.
    Definitions,
    /// Copying rows: tables done of total, rows so far.
    Rows(Progress),
}

/// Prepares `node` (which must hold none of the replicated tables) from
/// the master; returns what the row copy did. The node joins the cluster
/// when the caller admits it.
pub async fn prepare_new_node(
    (master_name, master): (&str, &Target),
    (node_name, node): (&str, &Target),
    include: &[Pattern],
    exclude: &[Pattern],
    report: &(dyn Fn(Phase) + Send + Sync),
) -> Result<Copied, BatchError> {
    let m = connect(master_name, master, "ferry add-node").await?;
    let n = connect(node_name, node, "ferry add-node").await?;
    let shapes = replicated_tables(&m, master_name, include, exclude).await?;
    let theirs = replicated_table_names(&n, node_name, include, exclude).await?;
    if !theirs.is_empty() {
        let names: Vec<String> = theirs.iter().map(ToString::to_string).collect();
        return Err(BatchError::NotEmpty {
            node: node_name.to_string(),
            tables: names.join(", "),
        });
    }
    report(Phase::Definitions);
    let mut objects: Vec<String> = shapes
        .iter()
        .map(|s| format!("{}.{}", ident(&s.table.schema), ident(&s.table.name)))
        .collect();
    let mut schemas: BTreeSet<String> = shapes.iter().map(|s| s.table.schema.clone()).collect();
    let seqs = m
        .query(sequences::LIST, &[])
        .await
        .map_err(BatchError::pg(master_name))?;
    let wanted = replicated_sequences(&m, master_name, include, exclude).await?;
    for row in seqs {
        let (regclass, schema, name): (String, String, String) =
            (row.get(0), row.get(1), row.get(2));
        if wanted.contains(&regclass) {
            objects.push(format!("{}.{}", ident(&schema), ident(&name)));
            schemas.insert(schema);
        }
    }
    if !objects.is_empty() {
        let script = dump_definitions(master, &objects, node_name).await?;
        let mut create = String::from("BEGIN;\n");
        for s in &schemas {
            create += &resync::create_schema(s);
            create += ";\n";
        }
        create += &script;
        create += "\nCOMMIT;";
        n.batch_execute(&create)
            .await
            .map_err(|e| BatchError::SchemaCopy {
                node: node_name.to_string(),
                detail: e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_string()),
            })?;
        info!(
            node = node_name,
            objects = objects.len(),
            "table definitions copied from the master"
        );
    }
    prepare_replica(
        (master_name, &m),
        &shapes,
        (node_name, &n),
        include,
        exclude,
    )
    .await?;
    copy_all(
        (master_name, master),
        (node_name, node),
        include,
        exclude,
        &|p| report(Phase::Rows(p)),
    )
    .await
}

/// `pg_dump --schema-only` of the named objects on the master, as a script
/// the node can run: psql meta-commands and Ferry's capture triggers (which
/// name functions the node does not have yet) are left out.
async fn dump_definitions(
    master: &Target,
    objects: &[String],
    node_name: &str,
) -> Result<String, BatchError> {
    let failed = |detail: String| BatchError::SchemaCopy {
        node: node_name.to_string(),
        detail,
    };
    let pg_dump = pg_dump().ok_or_else(|| {
        failed("pg_dump not found (install the PostgreSQL client programs)".into())
    })?;
    let mut cmd = tokio::process::Command::new(&pg_dump);
    cmd.args([
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-publications",
        "--no-subscriptions",
        "--no-comments",
        "-h",
        &master.host,
        "-p",
        &master.port.to_string(),
        "-U",
        &master.user,
        "-d",
        &master.dbname,
    ]);
    for o in objects {
        cmd.arg("-t").arg(o);
    }
    if let Some(pw) = &master.password {
        cmd.env("PGPASSWORD", pw);
    }
    cmd.env("PGCONNECT_TIMEOUT", "10");
    let out = cmd
        .output()
        .await
        .map_err(|e| failed(format!("{}: {e}", pg_dump.display())))?;
    if !out.status.success() {
        return Err(failed(format!(
            "pg_dump: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(runnable(&String::from_utf8_lossy(&out.stdout)))
}

/// The dump without psql meta-commands and Ferry's capture triggers.
fn runnable(dump: &str) -> String {
    dump.lines()
        .filter(|l| !l.starts_with('\\') && !l.starts_with("CREATE TRIGGER ferry_capture_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `pg_dump` on PATH, else the newest under /usr/lib/postgresql.
fn pg_dump() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("pg_dump"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin/pg_dump"))
            .filter(|p| p.is_file())
            .collect();
        found.sort_by_key(|p| {
            p.iter()
                .nth(3)
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        found.pop()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_commands_and_capture_triggers_are_left_out() {
        let dump = "\\restrict abc\nSET x = 1;\nCREATE TABLE public.t (a int);\n\
                    CREATE TRIGGER ferry_capture_ins AFTER INSERT ON public.t FOR EACH STATEMENT EXECUTE FUNCTION ferry.c();\n\
                    CREATE TRIGGER audit AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n\\unrestrict abc";
        assert_eq!(
            runnable(dump),
            "SET x = 1;\nCREATE TABLE public.t (a int);\n\
             CREATE TRIGGER audit AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();"
        );
    }
}

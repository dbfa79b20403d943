//! Preparing a new, empty node to join as a replica (`ferry add-node`):
//!
//! 1. **Definitions.** The master's whole schema (`pg_dump
//!    --schema-only`, Ferry's own schema left out): the replicated tables
//!    with their partitions and inheritance children, and everything they
//!    depend on — types, enums, domains, sequences, functions used in
//!    defaults, checks and triggers, other schemas. Ferry's capture and
//!    event triggers are left out: capture is generated on the node next.
//! 2. **Capture.** The `ferry` schema and capture are installed as on any
//!    replica.
//! 3. **Rows.** A consistent copy from one master snapshot, which becomes
//!    the node's ledger position ([`crate::resync::copy_all`]); from there
//!    it catches up from the batch stream like any replica.

use crate::catalog::{replicated_table_names, replicated_tables};
use crate::install::{connect, prepare_replica};
use crate::pattern::Pattern;
use crate::resync::{copy_all, Copied, Progress};
use crate::BatchError;
use ferry_wire::Target;
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
    let script = dump_definitions(master, node_name).await?;
    let create = format!("BEGIN;\n{script}\nCOMMIT;");
    n.batch_execute(&create)
        .await
        .map_err(|e| BatchError::SchemaCopy {
            node: node_name.to_string(),
            detail: e.as_db_error().map_or_else(
                || e.to_string(),
                |d| format!("{} (the new node's database must be empty)", d.message()),
            ),
        })?;
    info!(
        node = node_name,
        tables = shapes.len(),
        "schema copied from the master"
    );
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

/// `pg_dump --schema-only` of the master's database without Ferry's
/// schema, as a script the node can run: psql meta-commands and Ferry's
/// triggers (which name functions the node does not have yet) are left out.
/// Owners and grants are kept, so that the application's role may do on
/// the node what it may on the master (roles are per server: they must
/// exist on the node first, or the copy stops naming the missing one).
pub(crate) async fn dump_definitions(
    master: &Target,
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
        "--no-publications",
        "--no-subscriptions",
        "--no-comments",
        "--exclude-schema=ferry",
        "--exclude-schema=ferry_guard",
        "-h",
        &master.host,
        "-p",
        &master.port.to_string(),
        "-U",
        &master.user,
        "-d",
        &master.dbname,
    ]);
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

/// The dump without psql meta-commands and Ferry's triggers. A dump is a
/// sequence of objects, each after a header comment naming it (`-- Name:
/// t ferry_capture_ins; Type: TRIGGER; ...`); an object of Ferry's is
/// left out whole (an event trigger's definition spans lines).
fn runnable(dump: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut skipping = false;
    for line in dump.lines() {
        if let Some(header) = line.strip_prefix("-- Name: ") {
            skipping = is_ferrys(header);
        }
        if !skipping && !line.starts_with('\\') {
            out.push(line);
        }
    }
    out.join("\n")
}

/// Whether a dump header (`NAME; Type: TYPE; ...`) names one of Ferry's
/// triggers or event triggers.
fn is_ferrys(header: &str) -> bool {
    let mut fields = header.split("; ");
    let name = fields.next().unwrap_or_default();
    let kind = fields
        .next()
        .and_then(|f| f.strip_prefix("Type: "))
        .unwrap_or_default();
    let object = name.rsplit(' ').next().unwrap_or_default();
    matches!(kind, "TRIGGER" | "EVENT TRIGGER") && object.starts_with("ferry_")
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
    fn meta_commands_and_ferrys_triggers_are_left_out() {
        let dump = "\\restrict abc\nSET x = 1;\n\n--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\n\
                    CREATE TABLE public.t (a int);\n\n--\n\
                    -- Name: t ferry_capture_ins; Type: TRIGGER; Schema: public; Owner: -\n--\n\n\
                    CREATE TRIGGER ferry_capture_ins AFTER INSERT ON public.t FOR EACH STATEMENT EXECUTE FUNCTION ferry.c();\n\n--\n\
                    -- Name: t audit; Type: TRIGGER; Schema: public; Owner: -\n--\n\n\
                    CREATE TRIGGER audit AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();\n\n--\n\
                    -- Name: ferry_ddl; Type: EVENT TRIGGER; Schema: -; Owner: -\n--\n\n\
                    CREATE EVENT TRIGGER ferry_ddl ON ddl_command_end\n   EXECUTE FUNCTION ferry.on_ddl();\n\n--\n\
                    -- Name: audit_ddl; Type: EVENT TRIGGER; Schema: -; Owner: -\n--\n\n\
                    CREATE EVENT TRIGGER audit_ddl ON ddl_command_end\n   EXECUTE FUNCTION public.a();\n\\unrestrict abc";
        let kept = runnable(dump);
        assert!(kept.contains("CREATE TABLE public.t"), "{kept}");
        assert!(kept.contains("CREATE TRIGGER audit"), "{kept}");
        assert!(kept.contains("CREATE EVENT TRIGGER audit_ddl ON ddl_command_end\n   EXECUTE FUNCTION public.a();"), "{kept}");
        assert!(!kept.contains("ferry_capture_ins"), "{kept}");
        assert!(!kept.contains("ferry.on_ddl"), "{kept}");
        assert!(!kept.contains("restrict"), "{kept}");
    }
}

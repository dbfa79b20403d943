//! Planning a batch whose window holds schema changes.
//!
//! The DDL log ([`ferry_sql::ddl`]) gives each change a capture sequence
//! value taken after the command, under its locks: every change to a table
//! the command touched has a lower value if it came before and a higher one
//! if it came after. So the batch applies, in one transaction: the tables
//! no change touched (as usual), then for each change in order the touched
//! tables' changes before it (in the shape they had then), the change's own
//! statement, and finally the touched tables' changes after the last one.
//! Pure: the cutter runs the plan.

use ferry_sql::{ddl, TableName, TableShape};
use std::collections::{BTreeMap, BTreeSet};

/// A table a schema change touched: its shape before (None: not captured
/// before) and after (None: dropped).
pub type TableChange = (Option<TableShape>, Option<TableShape>);

/// One row of `ferry.ddl_log` in a cut's window.
#[derive(Clone, Debug)]
pub struct LogEntry {
    pub seq: i64,
    /// When the change committed on the master, and what it touched (for
    /// reports).
    pub at: String,
    pub object: String,
    pub xid: String,
    pub tag: String,
    pub query: String,
    pub search_path: String,
    /// The client's TimeZone, DateStyle and IntervalStyle (JSON).
    pub settings: String,
    pub replicate: bool,
    /// Each replicated table the command touched.
    pub tables: Vec<TableChange>,
}

impl LogEntry {
    /// Reads the `tables` JSON of a log row.
    pub fn parse_tables(json: &str) -> Result<Vec<TableChange>, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Change {
            pre: Option<TableShape>,
            post: Option<TableShape>,
        }
        let changes: Vec<Change> = serde_json::from_str(json)?;
        Ok(changes.into_iter().map(|c| (c.pre, c.post)).collect())
    }
}

/// A schema change as the replica replays it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdlChange {
    /// Its capture sequence value: names the change in the log.
    pub seq: i64,
    pub at: String,
    pub tag: String,
    pub object: String,
    /// The client's statement text (the whole string it came in).
    pub query: String,
    /// The one statement of `query` to replay; None when it cannot be told
    /// (DDL run inside a function or a DO block): the change is then
    /// reported, not replayed.
    pub statement: Option<String>,
    pub search_path: String,
    /// The client's settings the statement is replayed under (JSON).
    pub settings: String,
}

impl DdlChange {
    /// Whether the replica must commit this change before the batch's rows
    /// can use it, and so replays it in a transaction of its own ahead of
    /// the batch: a value added to an enum cannot be used in the
    /// transaction that added it (`55P04`), and it is harmless to add it
    /// early.
    pub fn commits_first(&self) -> bool {
        let Some(statement) = &self.statement else {
            return false;
        };
        let words: Vec<String> = statement
            .split_whitespace()
            .take(64)
            .map(str::to_ascii_uppercase)
            .collect();
        words.len() > 4
            && words[0] == "ALTER"
            && words[1] == "TYPE"
            && words.windows(2).any(|w| w[0] == "ADD" && w[1] == "VALUE")
    }
}

/// One step of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Planned {
    /// A table untouched by the window's changes: its session batch table.
    Session(usize),
    /// A touched table's changes with `after < _seq < before`, in `shape`.
    Segment {
        shape: TableShape,
        after: i64,
        before: i64,
    },
    Ddl(DdlChange),
}

/// Orders the batch (see the module comment). `session` are the cutter's
/// table shapes, `rows` their rows in the window (a table without any
/// has nothing to place).
///
/// Every change that replays is a barrier for every table, not only for
/// those it touched: rows may need a change that names no replicated
/// table (a partition created for them, a value added to an enum), so
/// each table's changes are cut at every replayed change's sequence value
/// and each piece applies in its place.
pub fn plan(entries: &[LogEntry], session: &[TableShape], rows: &[u64]) -> Vec<Planned> {
    let touched: BTreeSet<&TableName> = entries
        .iter()
        .flat_map(|e| e.tables.iter())
        .flat_map(|(pre, post)| pre.iter().chain(post.iter()).map(|s| &s.table))
        .collect();
    let barriers = entries.iter().any(|e| e.replicate);
    let untouched = session
        .iter()
        .enumerate()
        .filter(|(i, s)| !touched.contains(&s.table) && rows.get(*i).copied().unwrap_or(1) > 0);
    let mut out: Vec<Planned> = Vec::new();
    // Per table (by its current name): where its next segment starts, and
    // its shape since then.
    let mut open: BTreeMap<TableName, (i64, TableShape)> = BTreeMap::new();
    for (i, s) in untouched {
        if barriers {
            open.insert(s.table.clone(), (0, s.clone()));
        } else {
            out.push(Planned::Session(i));
        }
    }
    let statements = statements(entries);
    for (e, statement) in entries.iter().zip(statements) {
        let names: BTreeSet<TableName> = e
            .tables
            .iter()
            .filter_map(|(pre, post)| pre.as_ref().or(post.as_ref()).map(|s| s.table.clone()))
            .collect();
        if e.replicate {
            for (name, (after, shape)) in open.iter_mut() {
                if !names.contains(name) {
                    out.push(Planned::Segment {
                        shape: shape.clone(),
                        after: *after,
                        before: e.seq,
                    });
                    *after = e.seq;
                }
            }
        }
        for (pre, post) in &e.tables {
            let name = pre.as_ref().or(post.as_ref()).map(|s| s.table.clone());
            let after = name
                .as_ref()
                .and_then(|n| open.remove(n))
                .map_or(0, |(at, _)| at);
            if let Some(pre) = pre {
                out.push(Planned::Segment {
                    shape: pre.clone(),
                    after,
                    before: e.seq,
                });
            }
            if let Some(post) = post {
                open.insert(post.table.clone(), (e.seq, post.clone()));
            }
        }
        if e.replicate {
            out.push(Planned::Ddl(DdlChange {
                seq: e.seq,
                at: e.at.clone(),
                tag: e.tag.clone(),
                object: e.object.clone(),
                query: e.query.clone(),
                statement,
                search_path: e.search_path.clone(),
                settings: e.settings.clone(),
            }));
        }
    }
    for (_, (after, shape)) in open {
        out.push(Planned::Segment {
            shape,
            after,
            before: i64::MAX,
        });
    }
    out
}

/// The statement each entry replays: the entries one client string made
/// (same transaction, same text) map in order onto the string's DDL
/// statements, when their numbers agree.
fn statements(entries: &[LogEntry]) -> Vec<Option<String>> {
    let mut groups: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    for (i, e) in entries.iter().enumerate() {
        groups.entry((&e.xid, &e.query)).or_default().push(i);
    }
    let mut out = vec![None; entries.len()];
    for ((_, query), members) in groups {
        if let Some(found) = ddl::replay_statements(query) {
            if found.len() == members.len() {
                for (i, s) in members.into_iter().zip(found) {
                    out[i] = Some(s);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_sql::Column;

    fn shape(name: &str, cols: &[&str]) -> TableShape {
        TableShape {
            table: TableName::new("public", name),
            columns: cols
                .iter()
                .enumerate()
                .map(|(i, c)| Column {
                    attnum: i as i16 + 1,
                    name: c.to_string(),
                    type_sql: "integer".into(),
                    generated: false,
                    identity: false,
                })
                .collect(),
            key: Some(vec!["id".into()]),
            partitioned: false,
        }
    }

    fn entry(seq: i64, query: &str, tables: Vec<TableChange>) -> LogEntry {
        LogEntry {
            seq,
            at: String::new(),
            object: String::new(),
            xid: "7".into(),
            tag: "ALTER TABLE".into(),
            query: query.into(),
            search_path: "public".into(),
            settings: "{}".into(),
            replicate: true,
            tables,
        }
    }

    #[test]
    fn rows_before_and_after_a_change_straddle_it() {
        let old = shape("t", &["id"]);
        let new = shape("t", &["id", "c"]);
        let other = shape("u", &["id"]);
        let q = "INSERT INTO t VALUES (1); ALTER TABLE t ADD c int; UPDATE t SET c = 1";
        let plan = plan(
            &[entry(10, q, vec![(Some(old.clone()), Some(new.clone()))])],
            &[old.clone(), other.clone()],
            &[1, 1],
        );
        // The other table's rows are cut at the change too.
        assert_eq!(
            plan[0],
            Planned::Segment {
                shape: other.clone(),
                after: 0,
                before: 10
            }
        );
        assert_eq!(
            plan[1],
            Planned::Segment {
                shape: old,
                after: 0,
                before: 10
            }
        );
        match &plan[2] {
            Planned::Ddl(d) => assert_eq!(d.statement.as_deref(), Some("ALTER TABLE t ADD c int")),
            p => panic!("{p:?}"),
        }
        assert_eq!(
            plan[3],
            Planned::Segment {
                shape: new,
                after: 10,
                before: i64::MAX
            }
        );
        assert_eq!(
            plan[4],
            Planned::Segment {
                shape: other,
                after: 10,
                before: i64::MAX
            }
        );
    }

    #[test]
    fn renames_creates_and_drops_chain_their_segments() {
        let t = shape("t", &["id"]);
        let u = shape("u", &["id"]);
        let q = "CREATE TABLE t (id int primary key); ALTER TABLE t RENAME TO u; DROP TABLE u";
        let plan = plan(
            &[
                entry(5, q, vec![(None, Some(t.clone()))]),
                entry(8, q, vec![(Some(t.clone()), Some(u.clone()))]),
                entry(9, q, vec![(Some(u.clone()), None)]),
            ],
            &[],
            &[],
        );
        let segments: Vec<(String, i64, i64)> = plan
            .iter()
            .filter_map(|p| match p {
                Planned::Segment {
                    shape,
                    after,
                    before,
                } => Some((shape.table.name.clone(), *after, *before)),
                _ => None,
            })
            .collect();
        assert_eq!(segments, vec![("t".into(), 5, 8), ("u".into(), 8, 9)]);
        let replayed: Vec<&str> = plan
            .iter()
            .filter_map(|p| match p {
                Planned::Ddl(d) => d.statement.as_deref(),
                _ => None,
            })
            .collect();
        assert_eq!(
            replayed,
            vec![
                "CREATE TABLE t (id int primary key)",
                "ALTER TABLE t RENAME TO u",
                "DROP TABLE u"
            ]
        );
    }

    #[test]
    fn a_change_that_names_no_table_still_orders_every_tables_rows() {
        let t = shape("t", &["id"]);
        let quiet = shape("q", &["id"]);
        let q = "ALTER TYPE mood ADD VALUE 'ok'";
        let plan = plan(&[entry(7, q, vec![])], &[t.clone(), quiet], &[3, 0]);
        assert_eq!(plan.len(), 3, "{plan:?}");
        assert_eq!(
            plan[0],
            Planned::Segment {
                shape: t.clone(),
                after: 0,
                before: 7
            }
        );
        assert!(matches!(&plan[1], Planned::Ddl(d) if d.statement.as_deref() == Some(q)));
        assert_eq!(
            plan[2],
            Planned::Segment {
                shape: t,
                after: 7,
                before: i64::MAX
            }
        );
    }

    #[test]
    fn only_enum_values_are_committed_ahead_of_their_batch() {
        let change = |statement: &str| DdlChange {
            seq: 1,
            at: String::new(),
            tag: "ALTER TYPE".into(),
            object: String::new(),
            query: statement.into(),
            statement: Some(statement.into()),
            search_path: String::new(),
            settings: "{}".into(),
        };
        assert!(change("ALTER TYPE mood ADD VALUE 'ok'").commits_first());
        assert!(
            change("alter  type public.mood\n add value if not exists 'x' after 'y'")
                .commits_first()
        );
        assert!(!change("ALTER TYPE mood RENAME VALUE 'a' TO 'b'").commits_first());
        assert!(!change("ALTER TABLE t ADD COLUMN v int").commits_first());
    }

    #[test]
    fn ddl_inside_a_function_is_not_guessed() {
        let plan = plan(&[entry(3, "SELECT migrate()", vec![])], &[], &[]);
        match &plan[0] {
            Planned::Ddl(d) => assert_eq!(d.statement, None),
            p => panic!("{p:?}"),
        }
    }
}

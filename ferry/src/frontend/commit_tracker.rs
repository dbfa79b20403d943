//! Follows a session's transactions through the messages it passes, to tell
//! which of the server's ReadyForQuery messages end a commit that may have
//! written — the ones a synchronous-mode session holds back until `k`
//! replicas have the batch.
//!
//! Every Query, FunctionCall and Sync the client sends produces exactly one
//! ReadyForQuery from the server, so the tracker keeps one entry per
//! expected ReadyForQuery, saying whether the statements of that cycle may
//! write (decided conservatively by [`ferry_sql::classify`]). On the
//! server's side it notes CommandComplete tags and errors, and at each
//! ReadyForQuery decides:
//!
//! - a transaction that may have written and committed waits: an explicit
//!   `COMMIT` (tag `COMMIT`), or an implicit transaction that ended idle
//!   without an error and not with `ROLLBACK`;
//! - a failed statement, a rolled-back transaction and a read never wait.
//!
//! The tracker does no I/O; the session feeds it message bodies.

use ferry_sql::classify::{classify, Kind};
use ferry_wire::codec::read_cstr;
use ferry_wire::tag::backend::{COMMAND_COMPLETE, ERROR_RESPONSE, READY_FOR_QUERY};
use ferry_wire::tag::frontend::{BIND, CLOSE, FUNCTION_CALL, PARSE, QUERY, SYNC, TARGET_STATEMENT};
use ferry_wire::TransactionStatus;
use std::collections::{HashMap, VecDeque};

/// Client messages whose bodies the tracker reads.
pub fn client_wants(tag: u8) -> bool {
    matches!(tag, QUERY | PARSE | BIND | FUNCTION_CALL | SYNC | CLOSE)
}

/// Server messages whose bodies the tracker reads.
pub fn server_wants(tag: u8) -> bool {
    matches!(tag, READY_FOR_QUERY | COMMAND_COMPLETE | ERROR_RESPONSE)
}

/// One session's view of its transactions.
#[derive(Debug, Default)]
pub struct CommitTracker {
    /// Kinds of the session's prepared statements ("" is the unnamed one).
    statements: HashMap<String, Kind>,
    /// Whether the extended-protocol messages since the last Sync may write.
    pending: bool,
    /// One entry per ReadyForQuery the server still owes.
    cycles: VecDeque<bool>,
    /// The open transaction may have written.
    dirty: bool,
    /// Seen in the current cycle's responses.
    committed: bool,
    failed: bool,
    rolled_back: bool,
}

impl CommitTracker {
    /// A simple Query the client sends, already classified.
    pub fn query(&mut self, may_write: bool) {
        self.cycles.push_back(may_write);
    }

    /// A message the client sends, with its body (after the length word).
    pub fn client_message(&mut self, tag: u8, body: &[u8]) {
        match tag {
            QUERY => {
                let writes = read_cstr(body).is_none_or(|(sql, _)| classify(sql).may_write());
                self.query(writes);
            }
            PARSE => {
                if let Some((name, rest)) = read_cstr(body) {
                    let kind = read_cstr(rest).map_or(Kind::Write, |(sql, _)| classify(sql));
                    self.statements.insert(name.to_string(), kind);
                }
            }
            BIND => {
                // A bound statement is about to run: count it now.
                let writes = read_cstr(body)
                    .and_then(|(_portal, rest)| read_cstr(rest))
                    .and_then(|(stmt, _)| self.statements.get(stmt))
                    .is_none_or(|k| k.may_write());
                self.pending |= writes;
            }
            CLOSE => {
                if let Some((&TARGET_STATEMENT, rest)) = body.split_first() {
                    if let Some((name, _)) = read_cstr(rest) {
                        self.statements.remove(name);
                    }
                }
            }
            // A fast-path function call is its own cycle and may do anything.
            FUNCTION_CALL => self.cycles.push_back(true),
            SYNC => {
                self.cycles.push_back(self.pending);
                self.pending = false;
            }
            _ => {}
        }
    }

    /// A message the server sends, with its body. Returns true for a
    /// ReadyForQuery that must wait for the sync replicas.
    pub fn server_message(&mut self, tag: u8, body: &[u8]) -> bool {
        match tag {
            COMMAND_COMPLETE => {
                let done = read_cstr(body).map_or("", |(t, _)| t);
                self.committed |= done == "COMMIT";
                self.rolled_back = done == "ROLLBACK";
                false
            }
            ERROR_RESPONSE => {
                self.failed = true;
                false
            }
            READY_FOR_QUERY => {
                let status = TransactionStatus::of_ready_for_query(body);
                // An unexpected ReadyForQuery (none outstanding) counts as
                // a cycle that may have written.
                let writes = self.cycles.pop_front().unwrap_or(true);
                self.dirty |= writes;
                let idle = status == TransactionStatus::Idle;
                let wait =
                    self.dirty && (self.committed || (idle && !self.failed && !self.rolled_back));
                if idle {
                    self.dirty = false;
                } else if self.committed {
                    // A commit and a new transaction in one Query string.
                    self.dirty = writes;
                }
                self.committed = false;
                self.failed = false;
                self.rolled_back = false;
                wait
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(t: &mut CommitTracker, sql: &str) {
        let mut b = sql.as_bytes().to_vec();
        b.push(0);
        t.client_message(b'Q', &b);
    }

    fn reply(t: &mut CommitTracker, tags: &[&str], error: bool, status: u8) -> bool {
        for tag in tags {
            let mut b = tag.as_bytes().to_vec();
            b.push(0);
            assert!(!t.server_message(b'C', &b));
        }
        if error {
            t.server_message(b'E', b"SERROR\0\0");
        }
        t.server_message(b'Z', &[status])
    }

    fn cstrs(parts: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        for p in parts {
            b.extend_from_slice(p.as_bytes());
            b.push(0);
        }
        b
    }

    #[test]
    fn autocommit_writes_wait_reads_and_failures_do_not() {
        let mut t = CommitTracker::default();
        query(&mut t, "INSERT INTO t VALUES (1)");
        assert!(reply(&mut t, &["INSERT 0 1"], false, b'I'));
        query(&mut t, "SELECT * FROM t");
        assert!(!reply(&mut t, &["SELECT 1"], false, b'I'));
        query(&mut t, "INSERT INTO t VALUES (1)");
        assert!(!reply(&mut t, &[], true, b'I'));
    }

    #[test]
    fn explicit_transactions_wait_at_commit_only() {
        let mut t = CommitTracker::default();
        query(&mut t, "BEGIN");
        assert!(!reply(&mut t, &["BEGIN"], false, b'T'));
        query(&mut t, "UPDATE t SET a = 1");
        assert!(!reply(&mut t, &["UPDATE 1"], false, b'T'));
        query(&mut t, "COMMIT");
        assert!(reply(&mut t, &["COMMIT"], false, b'I'));
        // Rolled back: no wait.
        query(&mut t, "BEGIN");
        reply(&mut t, &["BEGIN"], false, b'T');
        query(&mut t, "UPDATE t SET a = 1");
        reply(&mut t, &["UPDATE 1"], false, b'T');
        query(&mut t, "ROLLBACK");
        assert!(!reply(&mut t, &["ROLLBACK"], false, b'I'));
        // Failed, then COMMIT (which the server turns into ROLLBACK).
        query(&mut t, "BEGIN");
        reply(&mut t, &["BEGIN"], false, b'T');
        query(&mut t, "UPDATE t SET a = 1/0");
        assert!(!reply(&mut t, &[], true, b'E'));
        query(&mut t, "COMMIT");
        assert!(!reply(&mut t, &["ROLLBACK"], false, b'I'));
        // A read-only transaction.
        query(&mut t, "BEGIN");
        reply(&mut t, &["BEGIN"], false, b'T');
        query(&mut t, "SELECT 1");
        reply(&mut t, &["SELECT 1"], false, b'T');
        query(&mut t, "COMMIT");
        assert!(!reply(&mut t, &["COMMIT"], false, b'I'));
    }

    #[test]
    fn one_query_string_with_a_commit_then_an_error_still_waits() {
        let mut t = CommitTracker::default();
        query(
            &mut t,
            "BEGIN; INSERT INTO t VALUES (1); COMMIT; SELECT 1/0",
        );
        assert!(reply(
            &mut t,
            &["BEGIN", "INSERT 0 1", "COMMIT"],
            true,
            b'I'
        ));
    }

    #[test]
    fn extended_protocol_uses_the_prepared_statement_kind() {
        let mut t = CommitTracker::default();
        t.client_message(b'P', &cstrs(&["ins", "INSERT INTO t VALUES ($1)"]));
        t.client_message(b'P', &cstrs(&["sel", "SELECT a FROM t WHERE b = $1"]));
        t.client_message(b'B', &cstrs(&["", "sel"]));
        t.client_message(b'S', &[]);
        t.client_message(b'B', &cstrs(&["", "ins"]));
        t.client_message(b'S', &[]);
        // Pipelined: both cycles were sent before any reply.
        assert!(!reply(&mut t, &["SELECT 1"], false, b'I'));
        assert!(reply(&mut t, &["INSERT 0 1"], false, b'I'));
        // A statement the tracker never saw prepared counts as a write.
        t.client_message(b'B', &cstrs(&["", "unknown"]));
        t.client_message(b'S', &[]);
        assert!(reply(&mut t, &["SELECT 1"], false, b'I'));
        // Closed statements are forgotten.
        let mut close = vec![b'S'];
        close.extend(cstrs(&["sel"]));
        t.client_message(b'C', &close);
        t.client_message(b'B', &cstrs(&["", "sel"]));
        t.client_message(b'S', &[]);
        assert!(reply(&mut t, &["SELECT 1"], false, b'I'));
    }
}

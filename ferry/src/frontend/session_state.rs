//! What Ferry must know of a client session to move it to another server
//! when its master is lost (a failover) or replaced (a switchover):
//!
//! - the session state to recreate there — settings, `PREPARE`d and
//!   protocol-level named statements, listens — kept in the order it was
//!   made, counting only what took effect (a `SET` in a transaction that
//!   rolled back is dropped, see [`ferry_sql::session_effect`]);
//! - state that cannot be recreated (temporary tables, advisory locks,
//!   cursors WITH HOLD), which keeps the session from moving;
//! - where the session stands: in a transaction or not, and which answers
//!   the server still owes (every Query, Sync and FunctionCall is answered
//!   by one ReadyForQuery), so that a loss can be told apart: idle (move
//!   it), a statement in flight (its outcome is unknown), a transaction
//!   open (it is gone).
//!
//! No I/O: the pump feeds it the messages that pass.

use bytes::{BufMut, Bytes, BytesMut};
use ferry_sql::session_effect::{effects, Effect};
use ferry_wire::codec::read_cstr;
use ferry_wire::tag::backend::{COMMAND_COMPLETE, ERROR_RESPONSE, READY_FOR_QUERY};
use ferry_wire::tag::frontend::{
    BIND, CLOSE, DESCRIBE, EXECUTE, FUNCTION_CALL, PARSE, QUERY, SYNC, TARGET_STATEMENT,
};
use ferry_wire::TransactionStatus;
use std::collections::{HashMap, VecDeque};

/// Most statements a session's replayable state may hold; beyond that it
/// does not move (a client that issues ever new `SET`s would otherwise
/// grow it without bound).
const MAX_REPLAY: usize = 1000;

/// One answer cycle the server owes (ends with a ReadyForQuery).
#[derive(Debug, Default)]
struct Cycle {
    /// Session effects of its statements.
    effects: Vec<Effect>,
    /// Named statements it parses: name and the whole Parse message.
    parsed: Vec<(String, Bytes)>,
    /// It ends a transaction with COMMIT (or END).
    commits: bool,
}

/// A session's movable state and position; see the module doc.
#[derive(Debug)]
pub struct SessionState {
    /// Statements that recreate the session's settings, in order.
    replay: Vec<String>,
    /// Effects made in the open transaction: they count if it commits.
    tentative: Vec<Effect>,
    /// Named prepared statements: name and Parse message.
    prepared: Vec<(String, Bytes)>,
    /// First word of each statement parsed at protocol level, by name.
    words: HashMap<String, String>,
    unmovable: Option<&'static str>,
    /// Answer cycles the server owes, oldest first.
    cycles: VecDeque<Cycle>,
    /// Extended-protocol messages sent since the last Sync.
    open: Option<Cycle>,
    /// The server's last transaction status (`I`, `T`, `E`).
    status: TransactionStatus,
    failed: bool,
    rolled_back: bool,
}

impl Default for SessionState {
    fn default() -> Self {
        Self {
            replay: Vec::new(),
            tentative: Vec::new(),
            prepared: Vec::new(),
            words: HashMap::new(),
            unmovable: None,
            cycles: VecDeque::new(),
            open: None,
            status: TransactionStatus::Idle,
            failed: false,
            rolled_back: false,
        }
    }
}

/// Where a session stood when its server was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Loss {
    /// Answer cycles the lost server still owed.
    pub owed: usize,
    /// Extended-protocol messages were sent without their Sync yet.
    pub open_extended: bool,
    /// A transaction was open (or failed and not yet ended).
    pub in_transaction: bool,
    /// Its COMMIT was among the answers owed: the old master may have
    /// committed it (and shipped it before it was lost), or not.
    pub commit_in_flight: bool,
}

impl Loss {
    /// Nothing was in flight and no transaction open: the session moves
    /// without the client noticing.
    pub fn is_clean(&self) -> bool {
        self.owed == 0 && !self.open_extended && !self.in_transaction
    }
}

impl SessionState {
    /// A message the client sends (tag and body after the length word).
    pub fn client_message(&mut self, tag: u8, body: &[u8]) {
        match tag {
            QUERY => {
                let sql = read_cstr(body).map_or("", |(s, _)| s);
                let mut cycle = Cycle {
                    commits: ends_with_commit(leading_word(sql)),
                    ..Cycle::default()
                };
                self.note_effects(&mut cycle, sql);
                self.cycles.push_back(cycle);
            }
            PARSE => {
                let Some((name, rest)) = read_cstr(body) else {
                    return;
                };
                let sql = read_cstr(rest).map_or("", |(s, _)| s);
                let mut cycle = self.open.take().unwrap_or_default();
                self.note_effects(&mut cycle, sql);
                self.words.insert(name.to_string(), first_word(sql));
                if !name.is_empty() {
                    let mut frame = BytesMut::with_capacity(body.len() + 5);
                    frame.put_u8(PARSE);
                    frame.put_i32(body.len() as i32 + 4);
                    frame.put_slice(body);
                    cycle.parsed.push((name.to_string(), frame.freeze()));
                }
                self.open = Some(cycle);
            }
            BIND => {
                let stmt = read_cstr(body)
                    .and_then(|(_portal, rest)| read_cstr(rest))
                    .map_or("", |(s, _)| s);
                let commits = self.words.get(stmt).is_some_and(|w| ends_with_commit(w));
                self.open.get_or_insert_with(Cycle::default).commits |= commits;
            }
            CLOSE => {
                if let Some((&TARGET_STATEMENT, rest)) = body.split_first() {
                    if let Some((name, _)) = read_cstr(rest) {
                        self.prepared.retain(|(n, _)| n != name);
                        self.words.remove(name);
                    }
                }
                self.open.get_or_insert_with(Cycle::default);
            }
            EXECUTE | DESCRIBE => {
                self.open.get_or_insert_with(Cycle::default);
            }
            SYNC => {
                let cycle = self.open.take().unwrap_or_default();
                self.cycles.push_back(cycle);
            }
            FUNCTION_CALL => self.cycles.push_back(Cycle::default()),
            _ => {}
        }
    }

    fn note_effects(&mut self, cycle: &mut Cycle, sql: &str) {
        for e in effects(sql) {
            match e {
                Effect::Unmovable(why) => self.unmovable = Some(why),
                e => cycle.effects.push(e),
            }
        }
    }

    /// A message the server sends (tag and body after the length word).
    pub fn server_message(&mut self, tag: u8, body: &[u8]) {
        match tag {
            ERROR_RESPONSE => self.failed = true,
            COMMAND_COMPLETE => self.rolled_back |= body.starts_with(b"ROLLBACK"),
            READY_FOR_QUERY => {
                self.status = TransactionStatus::of_ready_for_query(body);
                let cycle = self.cycles.pop_front().unwrap_or_default();
                self.answered(cycle);
            }
            _ => {}
        }
    }

    /// A read that was sent to a replica completed there.
    pub fn replica_answered(&mut self) {
        let cycle = self.cycles.pop_front().unwrap_or_default();
        self.answered(cycle);
    }

    fn answered(&mut self, cycle: Cycle) {
        let failed = std::mem::take(&mut self.failed);
        let rolled_back = std::mem::take(&mut self.rolled_back);
        if !failed {
            for (name, frame) in cycle.parsed {
                self.prepared.retain(|(n, _)| *n != name);
                self.prepared.push((name, frame));
            }
            self.tentative.extend(cycle.effects);
        }
        if self.status == TransactionStatus::Idle {
            let made = std::mem::take(&mut self.tentative);
            if !failed && !rolled_back {
                for e in made {
                    match e {
                        Effect::Replay(sql) => self.replay.push(sql),
                        Effect::Clear => {
                            self.replay.clear();
                            self.prepared.clear();
                        }
                        Effect::None | Effect::Unmovable(_) => {}
                    }
                }
            }
        }
        if self.replay.len() + self.prepared.len() > MAX_REPLAY {
            self.unmovable = Some("more session state than Ferry keeps to move a session");
        }
    }

    /// Whether the session is inside a transaction or waits for answers:
    /// a switchover waits for every session to be idle.
    pub fn busy(&self) -> bool {
        self.status != TransactionStatus::Idle || !self.cycles.is_empty() || self.open.is_some()
    }

    /// Whether the session's state can be recreated on another server;
    /// otherwise why not.
    pub fn movable(&self) -> Result<(), &'static str> {
        self.unmovable.map_or(Ok(()), Err)
    }

    /// The statements that recreate the session's settings, in order.
    pub fn replay_statements(&self) -> &[String] {
        &self.replay
    }

    /// The Parse messages of its named prepared statements.
    pub fn prepared_statements(&self) -> impl Iterator<Item = &[u8]> {
        self.prepared.iter().map(|(_, f)| f.as_ref())
    }

    /// The Parse message (whole) of the named prepared statement `name`, as
    /// the server confirmed it.
    pub fn prepared(&self, name: &str) -> Option<&Bytes> {
        self.prepared
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f)
    }

    /// Whether the cycle the server answers next ends a transaction with
    /// COMMIT.
    pub fn next_commits(&self) -> bool {
        self.cycles.front().is_some_and(|c| c.commits)
    }

    /// The server is gone: where the session stood. What was owed is
    /// forgotten (the caller answers it); the state to replay is kept.
    /// A transaction that was open leaves the session in a failed one.
    pub fn lose(&mut self) -> Loss {
        let commit_in_flight =
            self.cycles.iter().any(|c| c.commits) || self.open.as_ref().is_some_and(|c| c.commits);
        let loss = Loss {
            owed: self.cycles.len(),
            open_extended: self.open.is_some(),
            in_transaction: self.status != TransactionStatus::Idle,
            commit_in_flight,
        };
        self.cycles.clear();
        self.open = None;
        self.tentative.clear();
        self.failed = false;
        self.rolled_back = false;
        // A transaction whose COMMIT was under way is over either way.
        self.status = if loss.in_transaction && !commit_in_flight {
            TransactionStatus::Failed
        } else {
            TransactionStatus::Idle
        };
        loss
    }
}

/// The first word of a statement, as written.
fn leading_word(sql: &str) -> &str {
    sql.split(|c: char| !c.is_ascii_alphabetic())
        .find(|w| !w.is_empty())
        .unwrap_or_default()
}

fn first_word(sql: &str) -> String {
    leading_word(sql).to_ascii_lowercase()
}

fn ends_with_commit(word: &str) -> bool {
    word.eq_ignore_ascii_case("commit") || word.eq_ignore_ascii_case("end")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cstr(s: &str) -> Vec<u8> {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        v
    }

    fn query(st: &mut SessionState, sql: &str) {
        st.client_message(b'Q', &cstr(sql));
    }

    fn ready(st: &mut SessionState, status: u8) {
        st.server_message(b'Z', &[status]);
    }

    #[test]
    fn settings_that_took_effect_are_replayed_in_order() {
        let mut st = SessionState::default();
        query(&mut st, "SET search_path = app");
        assert!(st.busy());
        ready(&mut st, b'I');
        assert!(!st.busy());
        // Inside a transaction that rolls back: dropped.
        query(&mut st, "BEGIN");
        ready(&mut st, b'T');
        query(&mut st, "SET work_mem = '8MB'");
        ready(&mut st, b'T');
        query(&mut st, "ROLLBACK");
        st.server_message(b'C', &cstr("ROLLBACK"));
        ready(&mut st, b'I');
        // Inside one that commits: kept.
        query(&mut st, "BEGIN");
        ready(&mut st, b'T');
        query(&mut st, "SET application_name = 'x'");
        ready(&mut st, b'T');
        query(&mut st, "COMMIT");
        st.server_message(b'C', &cstr("COMMIT"));
        ready(&mut st, b'I');
        // A failed one: not kept.
        query(&mut st, "SET nonsense = 1");
        st.server_message(b'E', b"");
        ready(&mut st, b'I');
        assert_eq!(
            st.replay_statements(),
            ["SET search_path = app", "SET application_name = 'x'"]
        );
        query(&mut st, "DISCARD ALL");
        ready(&mut st, b'I');
        assert!(st.replay_statements().is_empty());
    }

    #[test]
    fn named_statements_are_kept_until_closed() {
        let mut st = SessionState::default();
        let mut parse = cstr("s1");
        parse.extend(cstr("SELECT $1::int"));
        parse.extend([0, 0]);
        st.client_message(b'P', &parse);
        assert!(st.busy(), "a Parse without its Sync is in flight");
        st.client_message(b'S', b"");
        ready(&mut st, b'I');
        let frames: Vec<&[u8]> = st.prepared_statements().collect();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0][0], b'P');
        assert_eq!(&frames[0][5..], parse.as_slice());
        let mut close = vec![b'S'];
        close.extend(cstr("s1"));
        st.client_message(b'C', &close);
        st.client_message(b'S', b"");
        ready(&mut st, b'I');
        assert_eq!(st.prepared_statements().count(), 0);
    }

    #[test]
    fn a_loss_tells_idle_in_flight_and_open_transactions_apart() {
        let mut st = SessionState::default();
        assert!(st.lose().is_clean());
        query(&mut st, "UPDATE t SET a = 1");
        let loss = st.lose();
        assert_eq!((loss.owed, loss.in_transaction), (1, false));
        query(&mut st, "BEGIN");
        ready(&mut st, b'T');
        let loss = st.lose();
        assert!(loss.in_transaction && loss.owed == 0 && !loss.is_clean());
        assert!(!loss.commit_in_flight);
        assert!(st.busy(), "the session stays in a failed transaction");
        // Its COMMIT sent, not answered: over, outcome unknown.
        query(&mut st, "COMMIT");
        let loss = st.lose();
        assert!(loss.in_transaction && loss.commit_in_flight);
        assert!(!st.busy());
    }

    #[test]
    fn temporary_tables_keep_a_session_from_moving() {
        let mut st = SessionState::default();
        assert!(st.movable().is_ok());
        query(&mut st, "CREATE TEMP TABLE t (a int)");
        ready(&mut st, b'I');
        assert!(st.movable().is_err());
    }

    #[test]
    fn commits_are_recognised_in_both_protocols() {
        let mut st = SessionState::default();
        query(&mut st, "COMMIT");
        assert!(st.next_commits());
        ready(&mut st, b'I');
        let mut parse = cstr("c");
        parse.extend(cstr("END"));
        parse.extend([0, 0]);
        st.client_message(b'P', &parse);
        st.client_message(b'S', b"");
        ready(&mut st, b'I');
        let mut bind = cstr("");
        bind.extend(cstr("c"));
        st.client_message(b'B', &bind);
        st.client_message(b'S', b"");
        assert!(st.next_commits());
    }
}

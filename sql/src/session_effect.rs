//! What a client statement does to its server session, so that a session
//! Ferry moves to another server (a failover, a planned switchover) can be
//! given the same state again: settings, prepared statements, listens are
//! replayed there in the order they were made; state that cannot be
//! recreated (temporary tables, advisory locks, cursors WITH HOLD) keeps
//! the session from moving.

use crate::classify::{non_code, pins_session, skip_block_comment, Span};
use crate::set_config::{self, Scope};

/// Puts a server session that stands in for one whose transaction was lost
/// with its server in a failed transaction: the client's next statements
/// fail until it ends the transaction, as they would have on the old one.
/// The DO block fails on purpose. No parameters.
pub const STAND_IN_FAILED_TRANSACTION: &str = "BEGIN; DO $ferry$BEGIN RAISE EXCEPTION USING \
     ERRCODE = '40001', MESSAGE = 'ferry: the transaction was lost with its master'; END$ferry$";

/// The effect of one statement on session state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Leaves session state alone (or only for the transaction).
    None,
    /// Session state that running this text again recreates.
    Replay(String),
    /// `DISCARD ALL`: the session is as new.
    Clear,
    /// State that lives only in this server session; why.
    Unmovable(&'static str),
}

/// The effects of a query string, statement by statement, in order.
pub fn effects(sql: &str) -> Vec<Effect> {
    if plainly_none(sql) {
        return Vec::new();
    }
    statements(sql)
        .into_iter()
        .map(effect)
        .filter(|e| *e != Effect::None)
        .collect()
}

/// Whether a query string is `DISCARD ALL` alone: the only form the server
/// runs it in (among other statements, or in a transaction block, it is
/// refused), after which the session holds nothing of its own.
pub fn discards_all(sql: &str) -> bool {
    // Every routed Query passes here: look closer only at a DISCARD.
    let discard = without_leading_comments(sql)
        .get(..7)
        .is_some_and(|w| w.eq_ignore_ascii_case("discard"));
    discard && matches!(statements(sql).as_slice(), [one] if effect(one) == Effect::Clear)
}

/// Whether a query string is one common statement that leaves the session
/// alone, told without allocating (every client statement passes here):
/// it starts with a data or transaction word, holds no second statement
/// and mentions nothing temporary or advisory. False means "look closer".
fn plainly_none(sql: &str) -> bool {
    const COMMON: [&str; 13] = [
        "select", "insert", "update", "delete", "begin", "commit", "end", "rollback", "with",
        "values", "copy", "start", "abort",
    ];
    let text = sql.trim_start();
    let first = text
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default();
    if !COMMON.iter().any(|w| first.eq_ignore_ascii_case(w)) {
        return false;
    }
    let body = text.trim_end().trim_end_matches(';').as_bytes();
    let mentions = |word: &[u8]| {
        body.windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    !body.contains(&b';')
        && !mentions(b"temp")
        && !mentions(b"advisory")
        && !mentions(b"set_config")
}

/// The effect of one statement's text.
fn effect(stmt: &str) -> Effect {
    let stmt = without_leading_comments(stmt);
    let mut words = stmt
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase);
    let first = words.next().unwrap_or_default();
    let second = words.next().unwrap_or_default();
    if pins_session(stmt) {
        return Effect::Unmovable("temporary tables or advisory locks");
    }
    let replay = || Effect::Replay(stmt.trim().to_string());
    match set_config::scope(stmt) {
        Scope::Session(Some(again)) => return Effect::Replay(again),
        Scope::Session(None) => {
            return Effect::Unmovable(
                "set_config() of a session setting from a parameter or expression",
            )
        }
        Scope::None => {}
    }
    match first.as_str() {
        "set" if matches!(second.as_str(), "local" | "transaction" | "constraints") => Effect::None,
        "set" | "reset" | "deallocate" | "listen" | "unlisten" | "load" => replay(),
        "prepare" if second == "transaction" => Effect::None,
        "prepare" => replay(),
        "discard" if second == "all" => Effect::Clear,
        "discard" => replay(),
        "declare" => {
            let lower = stmt.to_ascii_lowercase();
            let held = lower
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w == ["with", "hold"]);
            if held {
                Effect::Unmovable("a cursor WITH HOLD")
            } else {
                Effect::None
            }
        }
        _ => Effect::None,
    }
}

/// The text from its first token on (leading blanks and comments cut).
fn without_leading_comments(mut s: &str) -> &str {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix("--") {
            s = rest.split_once('\n').map_or("", |(_, after)| after);
        } else if s.starts_with("/*") {
            match skip_block_comment(s.as_bytes(), 0) {
                Some(end) => s = &s[end..],
                None => return s,
            }
        } else {
            return s;
        }
    }
}

/// Splits a query string on `;` outside quotes, dollar quotes and
/// comments; empty statements are left out. Text with an unterminated
/// quote or comment is one statement (the server will refuse it).
fn statements(sql: &str) -> Vec<&str> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        i = match non_code(b, i) {
            Span::Skip(end) => end,
            Span::Unterminated => break,
            Span::Code if b[i] == b';' => {
                out.push(&sql[start..i]);
                start = i + 1;
                i + 1
            }
            Span::Code => i + 1,
        };
    }
    if start < sql.len() {
        out.push(&sql[start..]);
    }
    out.retain(|s| !s.trim().is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_all_counts_alone_only() {
        assert!(discards_all("DISCARD ALL"));
        assert!(discards_all(" /* pool */ discard all ;"));
        assert!(!discards_all("DISCARD ALL; SELECT 1"));
        assert!(!discards_all("SET x.y = 1; DISCARD ALL"));
        assert!(!discards_all("DISCARD PLANS"));
        assert!(!discards_all("SELECT 'DISCARD ALL'"));
    }

    #[test]
    fn settings_prepared_statements_and_listens_replay() {
        assert_eq!(
            effects("SET search_path = app, public"),
            vec![Effect::Replay("SET search_path = app, public".into())]
        );
        assert_eq!(
            effects("set application_name = 'a;b'; SELECT 1; LISTEN jobs;"),
            vec![
                Effect::Replay("set application_name = 'a;b'".into()),
                Effect::Replay("LISTEN jobs".into())
            ]
        );
        assert_eq!(
            effects("PREPARE q AS SELECT $1::int"),
            vec![Effect::Replay("PREPARE q AS SELECT $1::int".into())]
        );
        assert_eq!(effects("DISCARD ALL"), vec![Effect::Clear]);
        assert_eq!(
            effects("RESET ALL").first(),
            Some(&Effect::Replay("RESET ALL".into()))
        );
    }

    #[test]
    fn common_statements_are_told_at_a_glance_and_the_rest_looked_at() {
        assert!(plainly_none(
            "UPDATE pgbench_accounts SET abalance = 1 WHERE aid = 2;"
        ));
        assert!(plainly_none("  select 1"));
        assert!(!plainly_none("SELECT 1; SET a = 1"));
        assert!(!plainly_none("SELECT pg_advisory_lock(1)"));
        assert!(!plainly_none("SELECT * INTO TEMP t FROM x"));
        assert!(!plainly_none("SET a = 1"));
        assert!(!plainly_none("/* c */ SELECT 1"));
        assert_eq!(
            effects("SELECT pg_advisory_lock(1)"),
            vec![Effect::Unmovable("temporary tables or advisory locks")]
        );
    }

    #[test]
    fn session_settings_made_by_set_config_replay_or_keep_the_session() {
        assert_eq!(
            effects("SELECT set_config('app.tenant', '42', false)"),
            vec![Effect::Replay(
                "SELECT pg_catalog.set_config('app.tenant', '42', false)".into()
            )]
        );
        assert!(effects("SELECT set_config('app.tenant', '42', true)").is_empty());
        assert!(matches!(
            effects("SELECT set_config('app.tenant', $1, false)").as_slice(),
            [Effect::Unmovable(_)]
        ));
    }

    #[test]
    fn transaction_scoped_statements_leave_the_session_alone() {
        for sql in [
            "SET LOCAL work_mem = '1MB'",
            "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            "SET CONSTRAINTS ALL DEFERRED",
            "PREPARE TRANSACTION 'x'",
            "SELECT 'SET x = 1'",
            "DECLARE c CURSOR FOR SELECT 1",
            "/* SET a = 1; */ SELECT 1",
            "",
        ] {
            assert!(effects(sql).is_empty(), "{sql}");
        }
    }

    #[test]
    fn state_only_one_server_session_has_cannot_move() {
        for sql in [
            "CREATE TEMP TABLE t (a int)",
            "SELECT pg_advisory_lock(1)",
            "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        ] {
            assert!(
                matches!(effects(sql).as_slice(), [Effect::Unmovable(_)]),
                "{sql}"
            );
        }
    }

    #[test]
    fn the_splitter_respects_quotes_dollar_quotes_and_comments() {
        assert_eq!(
            statements("SET a = $x$;$x$; -- ;\nSET b = 1;;"),
            vec!["SET a = $x$;$x$", " -- ;\nSET b = 1"]
        );
        assert_eq!(statements("SET a = 'open"), vec!["SET a = 'open"]);
        assert_eq!(
            effects("-- why\n/* note */ SET b = 1"),
            vec![Effect::Replay("SET b = 1".into())]
        );
    }
}

//! `set_config()` in client statements: the function form of `SET`.
//!
//! `SELECT set_config('app.tenant', '42', false)` changes the session as
//! `SET app.tenant = '42'` does (row-level security policies commonly read
//! such settings), but it is a function call inside an ordinary query, so
//! neither the statement's first word nor the read classifier says so.
//! Ferry must know, for two reasons: a session moved to another server
//! must get the setting again, and a session that has it must not send
//! reads to a replica session that lacks it. With `true` as the third
//! argument the setting lasts only until the transaction ends, which
//! changes neither.

use crate::classify::{non_code, skip_quoted, Span};

/// How long the settings a statement makes with `set_config()` last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// It calls no `set_config()`, or only transaction-local ones.
    None,
    /// It sets session settings. With the text of a statement that sets
    /// them again when every name and value is a string literal; None when
    /// one comes from a parameter or an expression (Ferry cannot replay it).
    Session(Option<String>),
}

/// The scope of the `set_config()` calls in one statement.
pub fn scope(stmt: &str) -> Scope {
    if !mentions_set_config(stmt) {
        return Scope::None;
    }
    let mut replays = Vec::new();
    let mut unknown = false;
    for args in calls(stmt) {
        let Some([name, value, local]) = args.and_then(|a| <[&str; 3]>::try_from(a).ok()) else {
            unknown = true; // a call Ferry could not read: assume the worst
            continue;
        };
        match literal_bool(local) {
            Some(true) => {}
            Some(false) if is_string_literal(name) && is_string_literal(value) => {
                replays.push(format!("pg_catalog.set_config({name}, {value}, false)"));
            }
            _ => unknown = true,
        }
    }
    if unknown {
        Scope::Session(None)
    } else if replays.is_empty() {
        Scope::None
    } else {
        Scope::Session(Some(format!("SELECT {}", replays.join(", "))))
    }
}

/// Whether the text names `set_config` at all (the cheap test every
/// statement passes through).
fn mentions_set_config(sql: &str) -> bool {
    const WORD: &[u8] = b"set_config";
    sql.as_bytes()
        .windows(WORD.len())
        .any(|w| w.eq_ignore_ascii_case(WORD))
}

/// The argument lists of every `set_config(` call, outside quotes and
/// comments; None for a call whose list does not close.
fn calls(sql: &str) -> Vec<Option<Vec<&str>>> {
    let b = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match non_code(b, i) {
            Span::Skip(end) => i = end,
            Span::Unterminated => break,
            Span::Code if b[i].is_ascii_alphabetic() || b[i] == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                if sql[start..i].eq_ignore_ascii_case("set_config") {
                    let mut j = i;
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if b.get(j) == Some(&b'(') {
                        let args = arguments(sql, j + 1);
                        if let Some((_, end)) = &args {
                            i = *end;
                        }
                        out.push(args.map(|(a, _)| a));
                    }
                }
            }
            Span::Code => i += 1,
        }
    }
    out
}

/// The top-level arguments of a call whose list starts at `from` (after
/// the opening parenthesis), trimmed, and where the list ends.
fn arguments(sql: &str, from: usize) -> Option<(Vec<&str>, usize)> {
    let b = sql.as_bytes();
    let mut args = Vec::new();
    let mut depth = 0usize;
    let mut start = from;
    let mut i = from;
    while i < b.len() {
        i = match (non_code(b, i), b[i]) {
            (Span::Skip(end), _) => end,
            (Span::Unterminated, _) => return None,
            (Span::Code, b'(') => {
                depth += 1;
                i + 1
            }
            (Span::Code, b')') if depth == 0 => {
                args.push(sql[start..i].trim());
                return Some((args, i + 1));
            }
            (Span::Code, b')') => {
                depth -= 1;
                i + 1
            }
            (Span::Code, b',') if depth == 0 => {
                args.push(sql[start..i].trim());
                start = i + 1;
                i + 1
            }
            (Span::Code, _) => i + 1,
        };
    }
    None
}

/// A boolean written as a literal (`true`, `'off'`...); None otherwise.
fn literal_bool(arg: &str) -> Option<bool> {
    let lower = arg.to_ascii_lowercase();
    let bare = lower
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(&lower);
    match bare {
        "true" | "t" | "on" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "off" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Whether an argument is exactly one single-quoted string literal.
fn is_string_literal(arg: &str) -> bool {
    let b = arg.as_bytes();
    b.first() == Some(&b'\'') && skip_quoted(b, 0, b'\'') == Some(b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_settings_with_literals_replay_as_set_config_alone() {
        assert_eq!(
            scope("SELECT set_config('app.tenant', '42', false)"),
            Scope::Session(Some(
                "SELECT pg_catalog.set_config('app.tenant', '42', false)".into()
            ))
        );
        // Other expressions of the statement are not replayed.
        assert_eq!(
            scope("select pg_catalog.SET_CONFIG('a.b', 'it''s, (x)', 'off') AS v, nextval('s')"),
            Scope::Session(Some(
                "SELECT pg_catalog.set_config('a.b', 'it''s, (x)', false)".into()
            ))
        );
    }

    #[test]
    fn transaction_local_settings_change_no_session() {
        assert_eq!(scope("SELECT set_config('a.b', $1, true)"), Scope::None);
        assert_eq!(scope("SELECT set_config('a.b', 'x', 'on')"), Scope::None);
        assert_eq!(scope("SELECT 'set_config(1, 2, false)'"), Scope::None);
        assert_eq!(
            scope("SELECT 1 -- set_config('a', 'b', false)"),
            Scope::None
        );
        assert_eq!(scope("SELECT * FROM my_set_config_log"), Scope::None);
    }

    #[test]
    fn values_ferry_cannot_replay_are_said_so() {
        for sql in [
            "SELECT set_config('a.b', $1, false)",
            "SELECT set_config($1, 'x', false)",
            "SELECT set_config('a.b', 'x', $3)",
            "SELECT set_config('a.b', upper('x'), false)",
            "SELECT set_config('a.b', 'x'",
            "SELECT set_config('a.b', 'x', false), set_config('c.d', $1, false)",
        ] {
            assert_eq!(scope(sql), Scope::Session(None), "{sql}");
        }
    }
}

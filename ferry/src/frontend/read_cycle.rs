//! Extended-protocol reads that may go to a replica.
//!
//! Drivers send most statements through the extended protocol (JDBC,
//! psycopg with parameters, libpq's `PQexecParams`): Parse, Bind, Describe,
//! Execute, Sync. A cycle of those moves to a replica only as a whole, and
//! only when it leaves nothing behind on the server that a later message
//! could need elsewhere: it parses the unnamed statement, or runs a named
//! statement the session prepared (the replica connection parses it too,
//! once), and binds and runs the unnamed portal alone (named portals live
//! in the master's session). The cycle is inspected here, without I/O;
//! whether its statement is a read is the classifier's to say.

use ferry_wire::tag::frontend::{
    BIND, CLOSE, DESCRIBE, EXECUTE, PARSE, SYNC, TARGET_PORTAL, TARGET_STATEMENT,
};

/// What the client bytes at a Parse message hold.
#[derive(Debug, PartialEq, Eq)]
pub enum Cycle<'a> {
    /// A whole cycle that could run on a replica: `len` bytes, up to and
    /// including its Sync, of which the first `parse` are the Parse of
    /// `sql` (into the unnamed statement).
    Unnamed {
        len: usize,
        parse: usize,
        sql: &'a str,
    },
    /// The cycle has not all arrived yet (no Flush asks for answers before
    /// its Sync, so the client is not waiting for any).
    Incomplete,
    /// Anything else: the messages go their usual way, to the master.
    Other,
}

/// Bytes of client messages a routable cycle may hold: a larger one (a read
/// with huge parameters) goes to the master rather than be held whole.
pub const CYCLE_LIMIT: usize = 256 * 1024;

/// Why a cycle's messages cannot be read on.
enum Stop {
    /// The message has not all arrived.
    Incomplete,
    /// Its length is bad, or the cycle would pass [`CYCLE_LIMIT`].
    Other,
}

/// The client message at `at` in `buf`: its tag, its body and where the
/// next one starts.
fn message(buf: &[u8], at: usize) -> Result<(u8, &[u8], usize), Stop> {
    if at >= CYCLE_LIMIT {
        return Err(Stop::Other);
    }
    let header = buf.get(at..at + 5).ok_or(Stop::Incomplete)?;
    let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    let len = usize::try_from(len).map_err(|_| Stop::Other)?;
    if len < 4 || at + 1 + len > CYCLE_LIMIT {
        return Err(Stop::Other);
    }
    let body = buf.get(at + 5..at + 1 + len).ok_or(Stop::Incomplete)?;
    Ok((header[0], body, at + 1 + len))
}

/// Inspects the client bytes `buf`, which start with a Parse message.
pub fn at_parse(buf: &[u8]) -> Cycle<'_> {
    let mut at = 0;
    let mut sql = None;
    let mut parse = 0;
    loop {
        let (tag, body, next) = match message(buf, at) {
            Ok(m) => m,
            Err(Stop::Incomplete) => return Cycle::Incomplete,
            Err(Stop::Other) => return Cycle::Other,
        };
        let unnamed = match (tag, at == 0) {
            (PARSE, true) => match cstr(body) {
                Some(("", rest)) => {
                    sql = cstr(rest).map(|(s, _)| s);
                    parse = next;
                    sql.is_some()
                }
                _ => false,
            },
            // Bind: portal, then statement.
            (BIND, false) => {
                matches!(cstr(body), Some(("", rest)) if matches!(cstr(rest), Some(("", _))))
            }
            // Describe: 'S' or 'P', then the name.
            (DESCRIBE, false) => {
                matches!(body.first(), Some(&(TARGET_STATEMENT | TARGET_PORTAL)))
                    && matches!(cstr(&body[1..]), Some(("", _)))
            }
            // Execute: portal, then a row limit.
            (EXECUTE, false) => matches!(cstr(body), Some(("", _))),
            (SYNC, false) => {
                return match sql {
                    Some(sql) => Cycle::Unnamed {
                        len: next,
                        parse,
                        sql,
                    },
                    None => Cycle::Other,
                };
            }
            _ => false,
        };
        if !unnamed {
            return Cycle::Other;
        }
        at = next;
    }
}

/// What the client bytes at a Bind message hold, when the cycle runs a
/// named statement: a whole cycle that could run on a replica — `len`
/// bytes up to and including its Sync, binding `statement` into the
/// unnamed portal (once or more) and running it — or, as for
/// [`at_parse`], not all of it yet, or anything else.
#[derive(Debug, PartialEq, Eq)]
pub enum Bound<'a> {
    Named { len: usize, statement: &'a str },
    Incomplete,
    Other,
}

/// Inspects the client bytes `buf`, which start with a Bind message.
/// The statement's own text is the caller's to look at (it was parsed
/// earlier, on the master).
pub fn at_bind(buf: &[u8]) -> Bound<'_> {
    let mut at = 0;
    let mut statement: Option<&str> = None;
    loop {
        let (tag, body, next) = match message(buf, at) {
            Ok(m) => m,
            Err(Stop::Incomplete) => return Bound::Incomplete,
            Err(Stop::Other) => return Bound::Other,
        };
        let fits = match tag {
            // Bind: the unnamed portal, of the one named statement.
            BIND => match cstr(body) {
                Some(("", rest)) => match (cstr(rest), statement) {
                    (Some((name, _)), None) if !name.is_empty() => {
                        statement = Some(name);
                        true
                    }
                    (Some((name, _)), Some(s)) => name == s,
                    _ => false,
                },
                _ => false,
            },
            DESCRIBE if at > 0 => match (body.first(), cstr(&body[1..])) {
                (Some(&TARGET_PORTAL), Some(("", _))) => true,
                (Some(&TARGET_STATEMENT), Some((name, _))) => Some(name) == statement,
                _ => false,
            },
            EXECUTE if at > 0 => matches!(cstr(body), Some(("", _))),
            SYNC if at > 0 => {
                return match statement {
                    Some(statement) => Bound::Named {
                        len: next,
                        statement,
                    },
                    None => Bound::Other,
                };
            }
            _ => false,
        };
        if !fits {
            return Bound::Other;
        }
        at = next;
    }
}

/// A Close of a prepared statement, whole (run on a replica connection
/// before it parses the statement of that name anew).
pub fn close_statement(name: &str) -> Vec<u8> {
    let mut out = vec![CLOSE];
    let len = 4 + 1 + name.len() + 1;
    out.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
    out.push(TARGET_STATEMENT);
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out
}

/// Whether a client message (other than Parse) uses the unnamed statement:
/// a Bind of it or a Describe of it.
pub fn uses_unnamed_statement(tag: u8, body: &[u8]) -> bool {
    match tag {
        BIND => matches!(cstr(body).and_then(|(_, rest)| cstr(rest)), Some(("", _))),
        DESCRIBE => {
            body.first() == Some(&TARGET_STATEMENT) && matches!(cstr(&body[1..]), Some(("", _)))
        }
        _ => false,
    }
}

/// Whether a Parse message's body parses the unnamed statement.
pub fn parses_unnamed(body: &[u8]) -> bool {
    matches!(cstr(body), Some(("", _)))
}

/// The messages (tag, body) of whole client messages, as [`at_parse`]
/// found them.
pub fn frames(buf: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    let mut at = 0;
    std::iter::from_fn(move || {
        let (tag, body, next) = message(buf, at).ok()?;
        at = next;
        Some((tag, body))
    })
}

/// A NUL-terminated string and what follows it.
fn cstr(buf: &[u8]) -> Option<(&str, &[u8])> {
    let end = buf.iter().position(|&b| b == 0)?;
    let s = std::str::from_utf8(&buf[..end]).ok()?;
    Some((s, &buf[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    fn parse(name: &str, sql: &str) -> Vec<u8> {
        let mut body = format!("{name}\0{sql}\0").into_bytes();
        body.extend_from_slice(&0i16.to_be_bytes());
        msg(b'P', &body)
    }

    fn bind(portal: &str, statement: &str) -> Vec<u8> {
        let mut body = format!("{portal}\0{statement}\0").into_bytes();
        body.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
        msg(b'B', &body)
    }

    fn execute(portal: &str) -> Vec<u8> {
        let mut body = format!("{portal}\0").into_bytes();
        body.extend_from_slice(&0i32.to_be_bytes());
        msg(b'E', &body)
    }

    fn describe(kind: u8, name: &str) -> Vec<u8> {
        let mut body = vec![kind];
        body.extend_from_slice(format!("{name}\0").as_bytes());
        msg(b'D', &body)
    }

    fn sync() -> Vec<u8> {
        msg(b'S', b"")
    }

    fn cycle(parts: &[Vec<u8>]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn an_unnamed_cycle_is_one_unit_up_to_its_sync() {
        let p = parse("", "SELECT $1");
        let buf = cycle(&[
            p.clone(),
            bind("", ""),
            describe(b'P', ""),
            execute(""),
            sync(),
            parse("", "SELECT 2"),
        ]);
        let whole = buf.len() - p.len() + "SELECT $1".len() - "SELECT 2".len();
        assert_eq!(
            at_parse(&buf),
            Cycle::Unnamed {
                len: whole,
                parse: p.len(),
                sql: "SELECT $1"
            }
        );
        // Executed twice with other parameters: still one unit.
        let twice = cycle(&[
            p.clone(),
            bind("", ""),
            execute(""),
            bind("", ""),
            execute(""),
            sync(),
        ]);
        assert!(matches!(at_parse(&twice), Cycle::Unnamed { len, .. } if len == twice.len()));
    }

    #[test]
    fn a_cycle_not_all_here_waits_for_the_rest() {
        let buf = cycle(&[parse("", "SELECT 1"), bind("", ""), execute("")]);
        assert_eq!(at_parse(&buf), Cycle::Incomplete);
        assert_eq!(at_parse(&buf[..buf.len() - 2]), Cycle::Incomplete);
        assert_eq!(at_parse(&buf[..3]), Cycle::Incomplete);
    }

    #[test]
    fn named_statements_portals_and_flushes_stay_on_the_master() {
        let named = cycle(&[parse("s1", "SELECT 1"), bind("", "s1"), execute(""), sync()]);
        assert_eq!(at_parse(&named), Cycle::Other);
        let portal = cycle(&[parse("", "SELECT 1"), bind("c1", ""), execute("c1"), sync()]);
        assert_eq!(at_parse(&portal), Cycle::Other);
        let other = cycle(&[
            parse("", "SELECT 1"),
            bind("", ""),
            execute(""),
            bind("", "s2"),
            sync(),
        ]);
        assert_eq!(at_parse(&other), Cycle::Other);
        // A Flush asks for answers before the Sync: the client may wait.
        let flush = cycle(&[parse("", "SELECT 1"), msg(b'H', b""), bind("", ""), sync()]);
        assert_eq!(at_parse(&flush), Cycle::Other);
        let close = cycle(&[parse("", "SELECT 1"), msg(b'C', b"Ss1\0"), sync()]);
        assert_eq!(at_parse(&close), Cycle::Other);
        let describe_named = cycle(&[parse("", "SELECT 1"), describe(b'S', "s1"), sync()]);
        assert_eq!(at_parse(&describe_named), Cycle::Other);
    }

    #[test]
    fn bad_or_huge_messages_are_left_to_the_usual_checks() {
        let mut bad = parse("", "SELECT 1");
        bad[1..5].copy_from_slice(&2i32.to_be_bytes());
        assert_eq!(at_parse(&bad), Cycle::Other);
        let mut huge = parse("", "SELECT 1");
        huge[1..5].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(at_parse(&huge), Cycle::Other);
        let negative = {
            let mut m = parse("", "SELECT 1");
            m[1..5].copy_from_slice(&(-5i32).to_be_bytes());
            m
        };
        assert_eq!(at_parse(&negative), Cycle::Other);
        let long = "x".repeat(CYCLE_LIMIT);
        assert_eq!(at_parse(&cycle(&[parse("", &long), sync()])), Cycle::Other);
        // A body without its terminators.
        assert_eq!(
            at_parse(&cycle(&[msg(b'P', b"\0SELECT"), sync()])),
            Cycle::Other
        );
    }

    #[test]
    fn a_named_statement_run_in_the_unnamed_portal_is_one_unit() {
        let buf = cycle(&[
            bind("", "s1"),
            describe(b'P', ""),
            execute(""),
            bind("", "s1"),
            execute(""),
            sync(),
            bind("", "s2"),
        ]);
        let first = buf.len() - bind("", "s2").len();
        assert_eq!(
            at_bind(&buf),
            Bound::Named {
                len: first,
                statement: "s1"
            }
        );
        let described = cycle(&[bind("", "s1"), describe(b'S', "s1"), execute(""), sync()]);
        assert!(matches!(at_bind(&described), Bound::Named { .. }));
        assert_eq!(at_bind(&buf[..first - 1]), Bound::Incomplete);
    }

    #[test]
    fn other_named_cycles_stay_on_the_master() {
        for other in [
            cycle(&[bind("", ""), execute(""), sync()]),
            cycle(&[bind("c1", "s1"), execute("c1"), sync()]),
            cycle(&[
                bind("", "s1"),
                execute(""),
                bind("", "s2"),
                execute(""),
                sync(),
            ]),
            cycle(&[bind("", "s1"), describe(b'S', "s2"), sync()]),
            cycle(&[bind("", "s1"), msg(b'H', b""), execute(""), sync()]),
            cycle(&[bind("", "s1"), parse("", "SELECT 1"), sync()]),
        ] {
            assert_eq!(at_bind(&other), Bound::Other, "{other:?}");
        }
        let close = close_statement("s1");
        assert_eq!(close, msg(b'C', b"Ss1\0"));
    }

    #[test]
    fn uses_of_the_unnamed_statement_are_told() {
        let b = bind("", "");
        assert!(uses_unnamed_statement(b'B', &b[5..]));
        let b = bind("", "s1");
        assert!(!uses_unnamed_statement(b'B', &b[5..]));
        let d = describe(b'S', "");
        assert!(uses_unnamed_statement(b'D', &d[5..]));
        let d = describe(b'P', "");
        assert!(!uses_unnamed_statement(b'D', &d[5..]));
        assert!(parses_unnamed(&parse("", "SELECT 1")[5..]));
        assert!(!parses_unnamed(&parse("s", "SELECT 1")[5..]));
    }
}

//! What a client statement may do, decided conservatively.
//!
//! Synchronous commit waits only for transactions that may have changed
//! data, and (later) causal reads send only statements that certainly
//! cannot to a replica. Both need the same answer, and both must err on the
//! side of "may write": a read taken for a write costs a wait or a trip to
//! the master, a write taken for a read would break a promise.
//!
//! Common statements are decided from their first words without a parse
//! (`INSERT`, `UPDATE`, `BEGIN`, `SET`...). Statements that start like a
//! read (`SELECT`, `WITH`, `VALUES`, `TABLE`) are parsed with `sqlparser`:
//! they are reads only without locking clauses, `INTO`, data-modifying
//! `WITH` parts, and calls to functions other than well-known read-only
//! built-ins. Anything that does not parse is a write.

use sqlparser::ast::{Expr, Query, SetExpr, Statement, TableFactor, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use std::ops::ControlFlow;

/// Deepest nesting of parentheses and brackets the classifier parses.
/// The parser backtracks at each nested call, cast or array, so its time
/// grows about threefold per level (measured: `CAST(` nested 8 deep takes
/// 9 ms, 12 deep 0.6 s, 16 deep 52 s; found by the `classify` fuzz
/// target): six levels keep the worst statement near 2 ms (a release
/// build: `CAST(` six deep, 1.7 ms).
/// Anything deeper goes to the master unparsed, which is always correct.
const MAX_PARSE_DEPTH: usize = 6;
/// Most parentheses and brackets the classifier parses (each nest costs
/// its own backtracking, so their number bounds the sum).
const MAX_PARSE_BRACKETS: usize = 64;
/// Most operators (and AND/OR/UNION-like words) the classifier parses: a
/// chain of binary operators makes a tree as deep as it is long.
const MAX_PARSE_OPERATORS: usize = 128;
/// Longest statement text the classifier parses, in bytes.
const MAX_PARSE_LEN: usize = 64 * 1024;

/// The kind of a statement (or of a string of statements, which takes the
/// strongest kind among its parts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Transaction control: `BEGIN`, `COMMIT`, `ROLLBACK`, savepoints.
    Transaction,
    /// Reads data and nothing else; safe on a replica.
    Read,
    /// Changes the session, not data: `SET`, `PREPARE`, `LISTEN`...
    Session,
    /// May change data (or could not be told apart from a statement that
    /// does).
    Write,
}

impl Kind {
    /// Whether a transaction that ran this may have changed data.
    pub fn may_write(self) -> bool {
        self == Kind::Write
    }
}

/// Classifies the text of a Query or Parse message.
pub fn classify(sql: &str) -> Kind {
    let scan = scan(sql);
    if scan.confused {
        return Kind::Write;
    }
    if scan.statements == 0 {
        return Kind::Transaction; // an empty query changes nothing
    }
    if scan.statements == 1 {
        if let Some(kind) = by_first_words(&scan.first, &scan.second) {
            return kind;
        }
        // A SELECT without parentheses calls no function and holds no
        // subquery; without FOR or INTO it neither locks nor creates a
        // table: a read, without the cost of a parse (the common
        // `SELECT ... FROM t WHERE k = ...` of every read-heavy workload).
        if scan.first == "select" && !scan.paren && !scan.for_or_into {
            return Kind::Read;
        }
    }
    // The parser recurses per nesting level: a hostile statement must not
    // be able to exhaust the proxy's stack. Such statements go to the
    // master, which has its own limits.
    if scan.depth > MAX_PARSE_DEPTH
        || scan.brackets > MAX_PARSE_BRACKETS
        || scan.operators > MAX_PARSE_OPERATORS
        || sql.len() > MAX_PARSE_LEN
    {
        return Kind::Write;
    }
    parsed(sql)
}

/// Whether a statement ties the session to the master for good: temporary
/// tables and advisory locks live in one server session, so later reads
/// must see the same one. (`SET`, `PREPARE`, `LISTEN` and the like are
/// [`Kind::Session`] and pin too.)
pub fn pins_session(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    if lower.contains("pg_advisory") {
        return true;
    }
    let words: Vec<&str> = lower
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(2)
        .any(|w| w[0] == "create" && matches!(w[1], "temp" | "temporary" | "local" | "global"))
        || words
            .windows(2)
            .any(|w| w[0] == "into" && matches!(w[1], "temp" | "temporary"))
}

/// Decides from the first two words where that is certain; `None` means
/// "parse it".
fn by_first_words(first: &str, second: &str) -> Option<Kind> {
    let kind = match first {
        "select" | "with" | "values" | "table" => return None,
        "begin" | "start" | "commit" | "end" | "rollback" | "abort" | "savepoint" | "release" => {
            // COMMIT PREPARED and ROLLBACK PREPARED finish a two-phase
            // transaction: treat them as the writes they complete.
            if second == "prepared" {
                Kind::Write
            } else {
                Kind::Transaction
            }
        }
        "show" => Kind::Read,
        "set" | "reset" | "discard" | "listen" | "unlisten" | "deallocate" => Kind::Session,
        // PREPARE name AS ... only stores a plan; PREPARE TRANSACTION ends
        // a transaction that may have written.
        "prepare" if second != "transaction" => Kind::Session,
        _ => Kind::Write,
    };
    Some(kind)
}

/// Parses and inspects statements that look like reads.
fn parsed(sql: &str) -> Kind {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Kind::Write;
    };
    statements
        .iter()
        .map(|s| match s {
            Statement::Query(_) => {
                let mut check = ReadCheck;
                if s.visit(&mut check).is_break() {
                    Kind::Write
                } else {
                    Kind::Read
                }
            }
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => Kind::Transaction,
            Statement::ShowVariable { .. } => Kind::Read,
            Statement::Set(_) => Kind::Session,
            _ => Kind::Write,
        })
        .max()
        .unwrap_or(Kind::Transaction)
}

/// Breaks on the first sign that a query may write or lock.
struct ReadCheck;

impl Visitor for ReadCheck {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() {
            return ControlFlow::Break(());
        }
        writes_in(&query.body)
    }

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        match statement {
            Statement::Query(_) => ControlFlow::Continue(()),
            _ => ControlFlow::Break(()),
        }
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table { args: Some(_), .. }
            | TableFactor::Function { .. }
            | TableFactor::TableFunction { .. } => {
                // Set-returning functions in FROM: only known ones are reads.
                let name = factor.to_string();
                let callee = name.split('(').next().unwrap_or_default();
                if read_only_function(callee) {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            }
            _ => ControlFlow::Continue(()),
        }
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        match expr {
            Expr::Function(f) if !read_only_function(&f.name.to_string()) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        }
    }
}

/// `SELECT ... INTO` and data-modifying parts of a set expression.
fn writes_in(body: &SetExpr) -> ControlFlow<()> {
    match body {
        SetExpr::Select(select) if select.into.is_some() => ControlFlow::Break(()),
        SetExpr::Select(_) | SetExpr::Query(_) | SetExpr::Values(_) | SetExpr::Table(_) => {
            ControlFlow::Continue(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            writes_in(left)?;
            writes_in(right)
        }
        _ => ControlFlow::Break(()),
    }
}

/// Built-in functions that never change data, by unqualified (or
/// `pg_catalog.`-qualified) lower-case name. A user function of the same
/// name in another schema could shadow one of these only through
/// `search_path`, which is why qualified names outside `pg_catalog` are not
/// on the list.
fn read_only_function(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    let name = name.strip_prefix("pg_catalog.").unwrap_or(&name);
    let name = name.trim_matches('"');
    const KNOWN: &[&str] = &[
        "abs",
        "age",
        "array_agg",
        "array_length",
        "array_position",
        "array_to_string",
        "avg",
        "bit_and",
        "bit_or",
        "bool_and",
        "bool_or",
        "btrim",
        "cardinality",
        "cbrt",
        "ceil",
        "ceiling",
        "char_length",
        "character_length",
        "clock_timestamp",
        "coalesce",
        "concat",
        "concat_ws",
        "count",
        "current_database",
        "current_date",
        "current_schema",
        "current_setting",
        "current_time",
        "current_timestamp",
        "current_user",
        "date_part",
        "date_trunc",
        "dense_rank",
        "every",
        "exp",
        "extract",
        "first_value",
        "floor",
        "format",
        "gen_random_uuid",
        "generate_series",
        "greatest",
        "initcap",
        "json_agg",
        "json_build_array",
        "json_build_object",
        "jsonb_agg",
        "jsonb_build_array",
        "jsonb_build_object",
        "jsonb_object_agg",
        "jsonb_array_length",
        "lag",
        "last_value",
        "lead",
        "least",
        "left",
        "length",
        "ln",
        "localtime",
        "localtimestamp",
        "log",
        "lower",
        "lpad",
        "ltrim",
        "make_date",
        "make_interval",
        "make_timestamp",
        "make_timestamptz",
        "max",
        "md5",
        "min",
        "mod",
        "now",
        "nth_value",
        "ntile",
        "nullif",
        "octet_length",
        "percent_rank",
        "pg_backend_pid",
        "pg_is_in_recovery",
        "position",
        "power",
        "random",
        "rank",
        "regexp_match",
        "regexp_matches",
        "regexp_replace",
        "repeat",
        "replace",
        "reverse",
        "right",
        "round",
        "row_number",
        "rpad",
        "rtrim",
        "session_user",
        "sign",
        "split_part",
        "sqrt",
        "statement_timestamp",
        "stddev",
        "string_agg",
        "strpos",
        "substr",
        "substring",
        "sum",
        "timeofday",
        "to_char",
        "to_date",
        "to_json",
        "to_jsonb",
        "to_number",
        "to_timestamp",
        "transaction_timestamp",
        "trim",
        "trunc",
        "unnest",
        "upper",
        "variance",
        "version",
    ];
    KNOWN.contains(&name)
}

/// What a lexical pass over the text found.
#[derive(Debug, Default)]
struct Scan {
    /// Statements with content (empty ones between `;;` do not count).
    statements: usize,
    /// First and second word of the first statement, lower case.
    first: String,
    second: String,
    /// Unterminated quotes or comments: leave it to the server.
    confused: bool,
    /// A `(` outside quotes and comments.
    paren: bool,
    /// Deepest nesting of parentheses and brackets outside quotes and
    /// comments.
    depth: usize,
    /// Parentheses and brackets outside quotes and comments.
    brackets: usize,
    /// Operator characters and AND/OR/UNION/INTERSECT/EXCEPT words.
    operators: usize,
    /// The word FOR or INTO anywhere.
    for_or_into: bool,
}

/// Splits on `;` outside quotes, dollar quotes and comments, and records the
/// first words. Does not allocate beyond the two words.
fn scan(sql: &str) -> Scan {
    let b = sql.as_bytes();
    let mut s = Scan::default();
    let mut i = 0;
    let mut words = 0; // words seen in the current statement
    let mut content = false; // current statement has content
    let mut open = 0usize; // parentheses and brackets open now
    while i < b.len() {
        let c = b[i];
        match c {
            b';' => {
                if content {
                    s.statements += 1;
                }
                content = false;
                words = 0;
                i += 1;
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => match skip_block_comment(b, i) {
                Some(end) => i = end,
                None => {
                    s.confused = true;
                    return s;
                }
            },
            b'\'' | b'"' => {
                content = true;
                words = 2;
                match skip_quoted(b, i, c) {
                    Some(end) => i = end,
                    None => {
                        s.confused = true;
                        return s;
                    }
                }
            }
            b'$' => {
                content = true;
                words = 2;
                match skip_dollar(b, i) {
                    Some(end) => i = end,
                    None => i += 1, // a parameter like $1
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                // E'...' strings take backslash escapes; any quote right
                // after a word is part of a literal prefix (E, U&, B, X).
                if i < b.len() && b[i] == b'\'' {
                    continue;
                }
                let w = &sql[start..i];
                if w.eq_ignore_ascii_case("for") || w.eq_ignore_ascii_case("into") {
                    s.for_or_into = true;
                }
                if ["and", "or", "union", "intersect", "except"]
                    .iter()
                    .any(|op| w.eq_ignore_ascii_case(op))
                {
                    s.operators += 1;
                }
                if s.statements == 0 {
                    let word = w.to_ascii_lowercase();
                    match words {
                        0 => s.first = word,
                        1 => s.second = word,
                        _ => {}
                    }
                }
                words += 1;
                content = true;
            }
            c if c.is_ascii_whitespace() => i += 1,
            _ => {
                if c == b'(' || c == b'[' {
                    s.paren |= c == b'(';
                    s.brackets += 1;
                    open += 1;
                    s.depth = s.depth.max(open);
                } else if c == b')' || c == b']' {
                    open = open.saturating_sub(1);
                } else if b"+-*/%^<>=!|&~#@?".contains(&c) {
                    s.operators += 1;
                }
                content = true;
                words = 2;
                i += 1;
            }
        }
    }
    if content {
        s.statements += 1;
    }
    s
}

/// What a scanner that looks only at code finds at a position.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Span {
    /// Code (a `$` that starts a parameter such as `$1` is code too).
    Code,
    /// A comment or a quoted or dollar-quoted string, ending here.
    Skip(usize),
    /// A comment or string that does not end in the text.
    Unterminated,
}

/// Whether a comment or a quoted or dollar-quoted string starts at `i`,
/// and where it ends (a line comment ends at its newline).
pub(crate) fn non_code(b: &[u8], i: usize) -> Span {
    let ends = |end: Option<usize>| end.map_or(Span::Unterminated, Span::Skip);
    match b.get(i) {
        Some(b'-') if b.get(i + 1) == Some(&b'-') => Span::Skip(
            b[i..]
                .iter()
                .position(|&c| c == b'\n')
                .map_or(b.len(), |p| i + p),
        ),
        Some(b'/') if b.get(i + 1) == Some(&b'*') => ends(skip_block_comment(b, i)),
        Some(&q @ (b'\'' | b'"')) => ends(skip_quoted(b, i, q)),
        Some(b'$') => skip_dollar(b, i).map_or(Span::Code, Span::Skip),
        _ => Span::Code,
    }
}

pub(crate) fn skip_block_comment(b: &[u8], start: usize) -> Option<usize> {
    // PostgreSQL block comments nest.
    let mut depth = 0;
    let mut i = start;
    while i + 1 < b.len() {
        if b[i] == b'/' && b[i + 1] == b'*' {
            depth += 1;
            i += 2;
        } else if b[i] == b'*' && b[i + 1] == b'/' {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return Some(i);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// Skips a '...' or "..." token; a backslash escapes the next byte only in
/// E'' strings, which is handled conservatively by also accepting it here
/// (a backslash never ends a string early, so splitting stays correct or
/// becomes "confused").
pub(crate) fn skip_quoted(b: &[u8], start: usize, q: u8) -> Option<usize> {
    let escapes = q == b'\'' && start > 0 && matches!(b[start - 1], b'e' | b'E');
    let mut i = start + 1;
    while i < b.len() {
        if escapes && b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] == q {
            if b.get(i + 1) == Some(&q) {
                i += 2;
                continue;
            }
            return Some(i + 1);
        }
        i += 1;
    }
    None
}

/// Skips a `$tag$...$tag$` string; `None` when `$` does not open one.
pub(crate) fn skip_dollar(b: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        if i == start + 1 && b[i].is_ascii_digit() {
            return None; // $1: a parameter
        }
        i += 1;
    }
    if b.get(i) != Some(&b'$') {
        return None;
    }
    let tag = &b[start..=i];
    let body = i + 1;
    let rest = &b[body..];
    rest.windows(tag.len())
        .position(|w| w == tag)
        .map(|p| body + p + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes() {
        for sql in [
            "INSERT INTO t VALUES (1)",
            "update t set a = 1",
            "DELETE FROM t",
            "COPY t FROM STDIN",
            "create table x (a int)",
            "TRUNCATE t",
            "SELECT my_func(1)",
            "SELECT nextval('s')",
            "SELECT * FROM t FOR UPDATE",
            "SELECT * INTO newt FROM t",
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            "SELECT * FROM my_srf()",
            "SELECT 1; INSERT INTO t VALUES (1)",
            "BEGIN; INSERT INTO t VALUES (1); COMMIT",
            "COMMIT PREPARED 'x'",
            "PREPARE TRANSACTION 'x'",
            "SELECT 'unterminated",
            "SELEC garbage (",
            "CALL p()",
            "DO $$ BEGIN END $$",
            "SELECT * FROM (SELECT * FROM t FOR SHARE) s",
            "SELECT public.count(a) FROM t",
            "SELECT a FROM t FOR UPDATE",
            "SELECT a INTO b FROM t",
            "SELECT a FROM t WHERE b = f (1)",
        ] {
            assert_eq!(classify(sql), Kind::Write, "{sql}");
        }
    }

    #[test]
    fn reads() {
        for sql in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1;",
            "select count(*), max(a) from t where b = $1",
            "WITH x AS (SELECT 1) SELECT * FROM x",
            "VALUES (1), (2)",
            "SELECT now(), pg_catalog.lower('A')",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT a FROM t UNION SELECT b FROM u",
            "SHOW search_path",
            "SELECT ';' AS semi, $$;$$ AS d -- ; comment\n",
            "/* leading; comment */ SELECT 1",
            "SELECT E'it\\'s; fine'",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 42",
            "select a, b from t where c = 'for (x)' -- into\n",
        ] {
            assert_eq!(classify(sql), Kind::Read, "{sql}");
        }
    }

    #[test]
    fn pinning_statements() {
        assert!(pins_session("CREATE TEMP TABLE x (a int)"));
        assert!(pins_session("create temporary table x as select 1"));
        assert!(pins_session("SELECT pg_advisory_lock(1)"));
        assert!(pins_session("SELECT * INTO TEMP t FROM u"));
        assert!(!pins_session("SELECT * FROM temperatures"));
        assert!(!pins_session("CREATE TABLE temp (a int)"));
    }

    #[test]
    fn transaction_and_session() {
        for sql in [
            "BEGIN",
            "commit",
            "END",
            "ROLLBACK TO SAVEPOINT s",
            "SAVEPOINT s",
            "",
        ] {
            assert_eq!(classify(sql), Kind::Transaction, "{sql}");
        }
        for sql in [
            "SET x = 1",
            "RESET ALL",
            "PREPARE p AS SELECT 1",
            "LISTEN c",
        ] {
            assert_eq!(classify(sql), Kind::Session, "{sql}");
        }
        assert_eq!(classify("BEGIN; SELECT 1; COMMIT"), Kind::Read);
        assert!(!classify("BEGIN; SELECT 1; COMMIT").may_write());
        assert!(classify("UPDATE t SET a = 1").may_write());
    }
}

#[cfg(test)]
mod hostile {
    use super::*;

    #[test]
    fn deep_nesting_is_a_write_not_a_crash() {
        let deep = format!("SELECT {}1{}", "(".repeat(100_000), ")".repeat(100_000));
        assert_eq!(classify(&deep), Kind::Write);
        let deep_sub = format!(
            "SELECT * FROM {}t{}",
            "(SELECT * FROM ".repeat(20_000),
            ") s".repeat(20_000)
        );
        assert_eq!(classify(&deep_sub), Kind::Write);
        // Long operator chains make deep trees without parentheses.
        let chain = format!("SELECT abs(1) FROM t WHERE x = {}1", "1 + ".repeat(15_000));
        assert!(chain.len() < MAX_PARSE_LEN);
        let _ = classify(&chain);
        let unary = format!("SELECT abs({}1)", "-".repeat(60_000));
        let _ = classify(&unary);
        let unions = format!("SELECT abs(1){}", " UNION SELECT 1".repeat(3_000));
        assert_eq!(classify(&unions), Kind::Write);
    }

    /// Statements whose parse backtracks exponentially (found by the
    /// `classify` fuzz target: 159 bytes took 33 s there, 1.4 s in a
    /// release build) go to the master unparsed.
    #[test]
    fn nesting_that_makes_the_parser_backtrack_is_not_parsed() {
        let found = "IF(\u{371}IF(\u{371}1B(IF(\u{371}1B.\u{371}3NF\u{371}3N1B(IF(\u{371}1B(\u{371}1B(IF(\u{371}1B.\u{371}3NF;*";
        assert_eq!(classify(found), Kind::Write);
        for open in ["CAST(", "f(", "ARRAY[", "ROW("] {
            let deep = format!("SELECT abs(1), {}1", open.repeat(MAX_PARSE_DEPTH + 1));
            assert_eq!(classify(&deep), Kind::Write, "{deep}");
        }
        let closed = format!(
            "SELECT {}1{}",
            "abs(".repeat(MAX_PARSE_DEPTH + 1),
            ")".repeat(MAX_PARSE_DEPTH + 1)
        );
        assert_eq!(classify(&closed), Kind::Write);
        let wide = format!("SELECT {}", "f(1), ".repeat(MAX_PARSE_BRACKETS + 1));
        assert_eq!(classify(&wide), Kind::Write);
        // Reads of ordinary depth are still told apart.
        assert_eq!(
            classify(
                "SELECT coalesce(sum(x), 0) FROM t WHERE id IN (SELECT id FROM u WHERE (a = 1))"
            ),
            Kind::Read
        );
    }
}

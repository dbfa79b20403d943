//! Identifier and literal quoting.

/// Quotes an identifier the way `quote_ident` does when quoting is needed,
/// but always: `a"b` becomes `"a""b"`.
pub fn ident(name: &str) -> String {
    let mut s = String::with_capacity(name.len() + 2);
    s.push('"');
    for c in name.chars() {
        if c == '"' {
            s.push('"');
        }
        s.push(c);
    }
    s.push('"');
    s
}

/// A comma-separated list of quoted identifiers, each prefixed with `prefix`
/// (for example `n.`).
pub fn list<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> String {
    names
        .into_iter()
        .map(|n| format!("{prefix}{}", ident(n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Quotes a string literal for statements that take no parameters
/// (`COMMENT`): `it's` becomes `'it''s'` (standard-conforming strings, on
/// since PostgreSQL 9.1; a backslash is an ordinary character).
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal(r"a\b"), r"'a\b'");
    }

    #[test]
    fn quotes_everything() {
        assert_eq!(ident("t"), "\"t\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(list(["a", "b"], "n."), "n.\"a\", n.\"b\"");
    }
}

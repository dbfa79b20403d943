//! Identifier quoting.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_everything() {
        assert_eq!(ident("t"), "\"t\"");
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
        assert_eq!(list(["a", "b"], "n."), "n.\"a\", n.\"b\"");
    }
}

//! Table patterns from `replication.tables`: `schema.table` with `*`.

use crate::BatchError;
use ferry_sql::TableName;

/// One `schema.table` pattern.
#[derive(Clone, Debug)]
pub struct Pattern {
    schema: String,
    table: String,
}

impl Pattern {
    /// Parses `public.*`, `*.orders`, `app.t_*`.
    pub fn parse(text: &str) -> Result<Self, BatchError> {
        let (schema, table) = text
            .split_once('.')
            .filter(|(s, t)| !s.is_empty() && !t.is_empty() && !t.contains('.'))
            .ok_or_else(|| BatchError::Pattern(text.to_string()))?;
        Ok(Self {
            schema: schema.to_string(),
            table: table.to_string(),
        })
    }

    /// The pattern as LIKE patterns for schema and table, for the DDL
    /// event trigger, which decides in the database whether a new table
    /// is replicated.
    pub fn like(&self) -> (String, String) {
        (
            ferry_sql::ddl::like_pattern(&self.schema),
            ferry_sql::ddl::like_pattern(&self.table),
        )
    }

    /// Whether the table matches.
    pub fn matches(&self, t: &TableName) -> bool {
        glob(&self.schema, &t.schema) && glob(&self.table, &t.name)
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Whether a table is replicated: it matches an include and no exclude.
pub fn selected(t: &TableName, include: &[Pattern], exclude: &[Pattern]) -> bool {
    include.iter().any(|p| p.matches(t)) && !exclude.iter().any(|p| p.matches(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let t = TableName::new("public", "orders");
        assert!(Pattern::parse("public.*").unwrap().matches(&t));
        assert!(Pattern::parse("*.ord*").unwrap().matches(&t));
        assert!(!Pattern::parse("app.*").unwrap().matches(&t));
        assert!(Pattern::parse("public").is_err());
        assert!(Pattern::parse(".x").is_err());
        let ex = [Pattern::parse("public.ord*").unwrap()];
        assert!(!selected(&t, &[Pattern::parse("public.*").unwrap()], &ex));
    }
}

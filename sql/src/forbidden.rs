//! Settings a client session may not make through Ferry, because they
//! would switch capture off where nothing shows it:
//! `session_replication_role` (in `replica` mode no trigger fires, capture's
//! included, and no event trigger either) and Ferry's own `ferry.*`
//! markers, which its event triggers read.
//!
//! The check reads the statement's text, string literals included (a
//! setting's name is one in `set_config()`), and looks at the word before
//! each mention: reading a setting (`SHOW`, `current_setting()`) or
//! resetting it to its default is fine; any other mention of
//! `session_replication_role` (`SET`, `SET LOCAL`, `set_config()`, `ALTER
//! ROLE … SET`, an `UPDATE pg_settings`) and any `SET`/`set_config()` of a
//! `ferry.` name is refused. A name built at run time (concatenated in a
//! function) is beyond it: for a role that is no superuser the server
//! refuses `session_replication_role` itself.

/// The setting a client statement would make that Ferry refuses, if any.
pub fn forbidden_setting(sql: &str) -> Option<&'static str> {
    // Every client statement passes here: look closer (and allocate) only
    // at one that names either at all.
    let named = |word: &[u8]| {
        sql.as_bytes()
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word))
    };
    if !named(b"session_replication_role") && !named(b"ferry") {
        return None;
    }
    let text = sql.to_ascii_lowercase().replace('"', "");
    let reads = |before: &str| matches!(word_before(before), "show" | "reset" | "current_setting");
    if text
        .match_indices("session_replication_role")
        .any(|(i, _)| !reads(&text[..i]))
    {
        return Some("session_replication_role");
    }
    let sets = |before: &str| {
        matches!(
            word_before(before),
            "set" | "local" | "session" | "set_config"
        )
    };
    if text.match_indices("ferry.").any(|(i, _)| sets(&text[..i])) {
        return Some("ferry.*");
    }
    None
}

/// The same check for startup parameters: the setting itself, or a `-c`
/// in `options`.
pub fn forbidden_startup(params: &[(String, String)]) -> Option<&'static str> {
    params.iter().find_map(|(k, v)| {
        let k = k.to_ascii_lowercase();
        let v = v.to_ascii_lowercase();
        if k == "session_replication_role"
            || (k == "options" && v.contains("session_replication_role"))
        {
            Some("session_replication_role")
        } else if k.starts_with("ferry.") || (k == "options" && v.contains("ferry.")) {
            Some("ferry.*")
        } else {
            None
        }
    })
}

/// The word that ends right before a mention, skipping blanks, quotes and
/// an opening parenthesis; a qualified name gives its last part
/// (`pg_catalog.set_config` → `set_config`).
fn word_before(before: &str) -> &str {
    let trimmed =
        before.trim_end_matches(|c: char| c.is_whitespace() || matches!(c, '\'' | '(' | '='));
    let start = trimmed
        .char_indices()
        .rev()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(0, |(i, c)| i + c.len_utf8());
    &trimmed[start..]
}

/// What a refused statement becomes: the server answers it with this
/// error, in its place among the session's answers. The text is Ferry's
/// own (`what` is one of the names above), never the client's.
pub fn refusal(what: &str) -> String {
    format!(
        "DO $ferry$BEGIN RAISE EXCEPTION USING ERRCODE = '42501', \
         MESSAGE = 'ferry: client sessions may not set {what}', \
         DETAIL = 'It would switch off the capture that keeps the replicas identical.'; END$ferry$"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_the_replication_role_is_refused_in_every_spelling() {
        for sql in [
            "SET session_replication_role = replica",
            "set local Session_Replication_Role to 'replica'",
            "SET SESSION \"session_replication_role\" = replica",
            "SELECT set_config('session_replication_role', 'replica', false)",
            "select pg_catalog.set_config( 'session_replication_role','replica',true)",
            "ALTER ROLE app SET session_replication_role = replica",
            "UPDATE pg_settings SET setting = 'replica' WHERE name = 'session_replication_role'",
            "BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM t",
        ] {
            assert_eq!(
                forbidden_setting(sql),
                Some("session_replication_role"),
                "{sql}"
            );
        }
    }

    #[test]
    fn reading_or_resetting_the_replication_role_is_fine() {
        for sql in [
            "SHOW session_replication_role",
            "SELECT current_setting('session_replication_role')",
            "RESET session_replication_role",
            "SELECT * FROM t",
        ] {
            assert_eq!(forbidden_setting(sql), None, "{sql}");
        }
    }

    #[test]
    fn ferrys_own_markers_cannot_be_set_but_its_tables_can_be_named() {
        assert_eq!(forbidden_setting("SET ferry.in_ddl = on"), Some("ferry.*"));
        assert_eq!(
            forbidden_setting("select set_config('ferry.in_ddl', 'on', false)"),
            Some("ferry.*")
        );
        assert_eq!(forbidden_setting("SELECT * FROM ferry.ddl_log"), None);
    }

    #[test]
    fn a_mention_after_a_multibyte_character_is_read_without_a_panic() {
        // Found by the `classify` fuzz target: the word before a mention
        // was cut inside a two-byte character.
        let sql = "start\x0c\x0c\x0c\x0c\x0c\u{5ec}ferry.$.ry.$.\0\0\0\0\0\0\0\0-=";
        assert_eq!(forbidden_setting(sql), None);
        assert_eq!(
            forbidden_setting("SET é session_replication_role = replica"),
            Some("session_replication_role")
        );
        assert_eq!(forbidden_setting("SELECT 'é'ferry.x"), None);
    }

    #[test]
    fn startup_options_are_checked_too() {
        let p = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert_eq!(
            forbidden_startup(&p("options", "-c session_replication_role=replica")),
            Some("session_replication_role")
        );
        assert_eq!(
            forbidden_startup(&p("session_replication_role", "replica")),
            Some("session_replication_role")
        );
        assert_eq!(
            forbidden_startup(&p("options", "-c ferry.in_ddl=on")),
            Some("ferry.*")
        );
        assert_eq!(
            forbidden_startup(&p("options", "-c statement_timeout=5s")),
            None
        );
    }
}

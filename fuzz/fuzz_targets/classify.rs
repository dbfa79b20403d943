//! The statement classifiers: every function that reads a client's SQL
//! text (to route it, track its session state, refuse what would switch
//! capture off, or replay schema changes) returns for any text.
#![no_main]

use ferry_sql::classify::{classify, pins_session};
use ferry_sql::ddl::replay_statements;
use ferry_sql::forbidden::forbidden_setting;
use ferry_sql::session_effect::{discards_all, effects};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let _ = classify(sql);
    let _ = pins_session(sql);
    let _ = effects(sql);
    let _ = discards_all(sql);
    let _ = forbidden_setting(sql);
    let _ = replay_statements(sql);
});

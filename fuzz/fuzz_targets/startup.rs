//! The startup decoder: whatever a client sends before it authenticates
//! (length word, protocol code, parameters) is split and parsed without a
//! panic, and a packet said to be whole is parsed from exactly its bytes.
#![no_main]

use ferry_wire::codec::peek_startup;
use ferry_wire::startup::parse_startup;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(len)) = peek_startup(data) {
        assert!(len >= 8 && len <= data.len());
        let _ = parse_startup(&data[4..len]);
    }
    let _ = parse_startup(data);
});

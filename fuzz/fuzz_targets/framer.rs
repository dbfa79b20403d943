//! The message framer: a client's stream, arriving in any split, is walked
//! message by message without a panic; every step accounts for bytes that
//! are there, and whole frames are as long as they say.
#![no_main]

use ferry_wire::codec::{peek_frame, read_cstr};
use ferry_wire::{FrameScanner, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let max = 1 << 16;
    let mut scanner = FrameScanner::default();
    let mut at = 0;
    // The stream arrives in two reads, split where the first byte says.
    let first = (split as usize).min(stream.len());
    let mut seen = first;
    let mut steps = 0;
    while steps < 10_000 {
        steps += 1;
        match scanner.step(&stream[at..seen], max, |tag| tag != b'd') {
            Ok(Step::Pass(n)) => {
                assert!(n > 0 && at + n <= seen);
                at += n;
            }
            Ok(Step::Frame { len, .. }) => {
                assert!(len >= 5 && at + len <= seen);
                let _ = read_cstr(&stream[at + 5..at + len]);
                at += len;
            }
            Ok(Step::More) if seen < stream.len() => seen = stream.len(),
            Ok(Step::More) | Err(_) => break,
        }
    }
    let _ = peek_frame(stream, max);
});

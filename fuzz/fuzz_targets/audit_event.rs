//! Arbitrary bytes as an exported audit event line: the checker must accept only a correctly
//! hashed event and never panic (RELIABILITY.md 5, AUDIT.md).

#![no_main]

use libfuzzer_sys::fuzz_target;
use store::{GENESIS, check_event};

fuzz_target!(|data: &[u8]| {
    let _ = check_event(data, 1, GENESIS);
});

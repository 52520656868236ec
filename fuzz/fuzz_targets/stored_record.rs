//! Arbitrary bytes as a stored record (an intent, an idempotency record, a compact audit
//! event): decoding must refuse damage without panicking or allocating without bound, and a
//! damaged audit event must expand to something the checker refuses.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    store::fuzzing::stored_record(data);
});

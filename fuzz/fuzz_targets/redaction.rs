#![no_main]
//! See `sluicebox::fuzzing::redaction`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluicebox::fuzzing::redaction(data));

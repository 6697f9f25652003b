#![no_main]
//! See `sluicebox::fuzzing::partition`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluicebox::fuzzing::partition(data));

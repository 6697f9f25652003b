#![no_main]
//! See `sluicebox::fuzzing::input`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluicebox::fuzzing::input(data));

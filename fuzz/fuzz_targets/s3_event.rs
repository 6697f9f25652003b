#![no_main]
//! See `sluicebox::fuzzing::s3_event`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluicebox::fuzzing::s3_event(data));

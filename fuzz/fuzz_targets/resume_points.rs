#![no_main]
//! See `sluicebox::fuzzing::resume_points`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluicebox::fuzzing::resume_points(data));

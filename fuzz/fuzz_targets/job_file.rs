#![no_main]
//! See `sluicebox::fuzzing::job_file`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sluicebox::fuzzing::job_file(data));

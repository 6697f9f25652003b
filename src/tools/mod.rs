//! Tools for people, around a job file: [`check`] (a job file checked, a sample run, its
//! `[[tests]]`), [`forecast`] (`sluicebox plan`), [`init`] (a job file from a sample),
//! [`ddl`] (the Athena table over outputs), and behind their features `produce` (a file onto
//! Kinesis) and `bench` (the measurement, not library API).

#[cfg(feature = "bench")]
pub mod bench;
pub mod check;
pub mod ddl;
pub mod forecast;
pub mod init;
#[cfg(feature = "aws")]
pub mod produce;

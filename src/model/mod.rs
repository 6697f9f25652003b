//! The vocabulary everything else speaks: a record and what became of it, the job file as
//! written, declared columns, jq programs, and URLs that keep their secrets.

pub mod column;
pub mod config;
pub mod packed;
pub mod record;
pub mod rejects;
pub mod transform;
pub mod web;

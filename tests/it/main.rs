//! Every integration test, in one binary: each file is a module, so the crate is linked once
//! (23 binaries of about 1 GB each made most of CI's time and once filled its disk).
//! A module's own `#![cfg(feature = …)]` leaves it out of builds without that feature.

mod common;

mod architecture;
mod aws;
mod bad_input;
mod bench;
mod check;
mod compressed;
mod conformance;
mod ddl;
mod decimals;
mod examples;
mod faults;
mod forecast;
mod fuzz_corpus;
mod inbox;
mod init;
mod kill;
mod lambda;
mod lambda_latency;
mod lambda_queue;
mod lambda_redrive;
mod lambda_stream;
mod loader;
mod notify;
mod orders;
mod parquet;
mod pipeline;
mod plan_props;
mod postgres;
mod produce;
mod readme;
mod redrive;
mod redrive_aws;
mod report;
mod shape;
mod stream;
mod stream_aws;
mod stream_sources;
mod stream_tables;
mod thresholds;

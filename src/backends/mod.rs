//! The seams and their backends. Each seam is a small trait with a written `# Contract`, one
//! file per backend, an `open(url, …)` that chooses by scheme, and a conformance suite every
//! backend runs (feature `testing`): buckets ([`bucket`], through `object_store`), the
//! [`ledger`] (job and chunk records, conditional commits), the task [`queue`], [`sink`]s
//! (which alone know the kinds of sink) and references to enrich from ([`lookup`]). Beside
//! them: the cloud configuration ([`cloud`]), request counting ([`calls`]) and prices
//! ([`cost`]), request latencies (forecast, and simulated for tests: [`latency`]), PostgreSQL connections (`postgres`), and on AWS the SDK clients (`aws`) and the resources a job needs (`setup`).

#[cfg(feature = "aws")]
pub mod aws;
pub mod bucket;
pub mod calls;
pub mod cloud;
pub mod cost;
pub mod latency;
pub mod ledger;
pub mod lookup;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod queue;
#[cfg(feature = "aws")]
pub mod setup;
pub mod sink;

//! The batch engine: a job's data and life cycle ([`job`]: plan, enqueue, run, submit, wait),
//! one task worked ([`worker`], reading its chunk's [`pieces`]), the gather that merges and completes a job exactly once
//! ([`gather`]), work loops in this process ([`pool`]), jobs started by bucket events
//! ([`watch`]) or by files landing in a local directory ([`inbox`]), how a job ended told
//! ([`notify`]) and its page ([`report`]).

pub mod gather;
pub mod inbox;
pub mod job;
pub mod notify;
pub mod pieces;
pub mod pool;
pub mod report;
pub mod watch;
pub mod worker;

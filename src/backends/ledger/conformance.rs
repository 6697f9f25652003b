//! The ledger conformance suite: every [`StateStore`] backend runs these cases unchanged.
//!
//! Each case takes a fresh store and panics (with a message) when the contract is broken.

use std::sync::Arc;

use super::{Checkpoint, ChunkRecord, JobRecord, JobStatus, LedgerCommit, StateStore, MAX_CHECKPOINT_BYTES};
use crate::model::record::Counts;

fn chunk(index: u32, worker: &str) -> ChunkRecord {
    ChunkRecord {
        index,
        worker: worker.into(),
        counts: Counts { written: 10 + u64::from(index), rejected: u64::from(index), ..Counts::default() },
        output_bytes: 100,
        rejects_bytes: 0,
        started_ms: 1,
        finished_ms: 2,
        api_calls: Default::default(),
        sink_figures: None,
        // Every job in these cases is created at 1 unless a case says otherwise.
        generation: 1,
        attempt: format!("{worker}-a"),
    }
}

/// Run every case against stores made by `make`.
pub async fn run_all<F>(make: F)
where
    F: Fn() -> Arc<dyn StateStore>,
{
    create_is_conditional(make().as_ref()).await;
    plan_once(make().as_ref()).await;
    commit_once_and_finalize_once(make().as_ref()).await;
    commit_requires_plan(make().as_ref()).await;
    commit_is_fenced_by_generation(make().as_ref()).await;
    status_is_conditional(make().as_ref()).await;
    gather_lease_expires(make().as_ref()).await;
    delete_removes_everything(make().as_ref()).await;
    let store = make();
    concurrent_commits_finalize_exactly_once(&[store.clone(), store.clone(), store.clone(), store]).await;
    checkpoint_first_write_expects_zero(make().as_ref()).await;
    checkpoint_versions_increase_and_stale_writes_change_nothing(make().as_ref()).await;
    checkpoint_delete_then_get_is_none(make().as_ref()).await;
    checkpoints_and_jobs_with_the_same_name_are_independent(make().as_ref()).await;
    checkpoint_state_over_the_limit_is_refused_naming_the_stream(make().as_ref()).await;
    let store = make();
    concurrent_checkpoint_writers_exactly_one_wins(&vec![store; 8]).await;
}

/// `create_job` writes once.
pub async fn create_is_conditional(store: &dyn StateStore) {
    let job = JobRecord::new("job-a", 5);
    assert!(store.create_job(&job).await.unwrap(), "first create must create");
    let other = JobRecord { created_ms: 99, ..job.clone() };
    assert!(!store.create_job(&other).await.unwrap(), "second create must not overwrite");
    assert_eq!(store.get_job("job-a").await.unwrap(), Some(job));
    assert_eq!(store.get_job("job-missing").await.unwrap(), None);
}

/// `set_planned` moves Planning → Running once.
pub async fn plan_once(store: &dyn StateStore) {
    store.create_job(&JobRecord::new("job-p", 1)).await.unwrap();
    assert!(store.set_planned("job-p", 3, 7).await.unwrap());
    assert!(!store.set_planned("job-p", 4, 8).await.unwrap(), "a second plan must be refused");
    let job = store.get_job("job-p").await.unwrap().unwrap();
    assert_eq!((job.status, job.total_chunks, job.planned_ms), (JobStatus::Running, Some(3), Some(7)));
    assert!(!store.set_planned("job-unknown", 1, 1).await.unwrap());
}

/// Repeated commits count once; the last first-commit finalizes.
pub async fn commit_once_and_finalize_once(store: &dyn StateStore) {
    store.create_job(&JobRecord::new("job-c", 1)).await.unwrap();
    store.set_planned("job-c", 2, 1).await.unwrap();
    assert_eq!(
        store.commit_chunk("job-c", &chunk(1, "w1")).await.unwrap(),
        LedgerCommit::First { done: 1, total: 2, finalize: false, records: 12, rejected: 1 }
    );
    assert_eq!(store.commit_chunk("job-c", &chunk(1, "w2")).await.unwrap(), LedgerCommit::Duplicate);
    assert_eq!(store.get_chunk("job-c", 1).await.unwrap().unwrap().worker, "w1", "a duplicate must not overwrite");
    assert_eq!(store.get_chunk("job-c", 0).await.unwrap(), None);
    assert_eq!(
        store.commit_chunk("job-c", &chunk(0, "w2")).await.unwrap(),
        LedgerCommit::First { done: 2, total: 2, finalize: true, records: 22, rejected: 1 },
        "each first commit adds its chunk's counts, a duplicate adds nothing"
    );
    assert_eq!(store.commit_chunk("job-c", &chunk(0, "w3")).await.unwrap(), LedgerCommit::Duplicate);
    let chunks = store.chunks("job-c").await.unwrap();
    assert_eq!(chunks.iter().map(|c| c.index).collect::<Vec<_>>(), vec![0, 1], "chunks must be ordered by index");
    assert_eq!(chunks[1], chunk(1, "w1"), "the chunk record must round-trip");
    let job = store.get_job("job-c").await.unwrap().unwrap();
    assert_eq!((job.done_chunks, job.records_done, job.rejected), (2, 22, 1));
}

/// Commits to unknown or unplanned jobs fail.
pub async fn commit_requires_plan(store: &dyn StateStore) {
    assert!(store.commit_chunk("job-nope", &chunk(0, "w")).await.is_err());
    store.create_job(&JobRecord::new("job-u", 1)).await.unwrap();
    assert!(store.commit_chunk("job-u", &chunk(0, "w")).await.is_err(), "unplanned job must refuse commits");
    store.set_planned("job-u", 2, 3).await.unwrap();
    assert!(store.commit_chunk("job-u", &chunk(2, "w")).await.is_err(), "a chunk outside the plan is refused");
    assert_eq!(store.get_job("job-u").await.unwrap().unwrap().done_chunks, 0, "and not counted");
    assert_eq!(store.chunks("job-u").await.unwrap(), vec![]);
    assert!(matches!(store.commit_chunk("job-u", &chunk(1, "w")).await.unwrap(), LedgerCommit::First { .. }));
}

/// A commit for an earlier run of a job (made anew since) is refused, atomically.
pub async fn commit_is_fenced_by_generation(store: &dyn StateStore) {
    store.create_job(&JobRecord::new("job-g", 5)).await.unwrap();
    store.set_planned("job-g", 2, 6).await.unwrap();
    let stale = ChunkRecord { generation: 4, ..chunk(0, "old") };
    let refused = store.commit_chunk("job-g", &stale).await;
    assert!(matches!(refused, Err(crate::error::Error::Conflict(_))), "another run's commit: {refused:?}");
    assert_eq!(store.get_chunk("job-g", 0).await.unwrap(), None, "a refused commit stores nothing");
    // Made anew: the earlier run's workers cannot commit into the new plan.
    store.delete_job("job-g").await.unwrap();
    store.create_job(&JobRecord::new("job-g", 7)).await.unwrap();
    store.set_planned("job-g", 2, 8).await.unwrap();
    let earlier = ChunkRecord { generation: 5, ..chunk(1, "old") };
    assert!(matches!(store.commit_chunk("job-g", &earlier).await, Err(crate::error::Error::Conflict(_))));
    assert_eq!(store.get_job("job-g").await.unwrap().unwrap().done_chunks, 0, "and nothing is counted");
    let current = ChunkRecord { generation: 7, ..chunk(1, "new") };
    assert!(matches!(store.commit_chunk("job-g", &current).await.unwrap(), LedgerCommit::First { done: 1, .. }));
    assert_eq!(store.get_chunk("job-g", 1).await.unwrap(), Some(current));
}

/// The gather lease is taken once, and taken over only after it ended.
pub async fn gather_lease_expires(store: &dyn StateStore) {
    assert!(!store.take_gather_lease("job-l", 100, 200).await.unwrap(), "no lease on an unknown job");
    store.create_job(&JobRecord::new("job-l", 1)).await.unwrap();
    assert!(!store.take_gather_lease("job-l", 100, 200).await.unwrap(), "no lease before the plan");
    store.set_planned("job-l", 1, 2).await.unwrap();
    assert!(store.take_gather_lease("job-l", 100, 200).await.unwrap(), "a running job's lease is free");
    let job = store.get_job("job-l").await.unwrap().unwrap();
    assert_eq!((job.status, job.lease_until_ms), (JobStatus::Gathering, 200), "the lease and its end are read back");
    assert!(!store.take_gather_lease("job-l", 150, 250).await.unwrap(), "a held lease is not taken");
    assert!(store.take_gather_lease("job-l", 201, 300).await.unwrap(), "an ended lease is taken over");
    assert!(!store.take_gather_lease("job-l", 250, 350).await.unwrap(), "the new lease holds");
    assert!(!store.renew_gather_lease("job-l", 200, 400).await.unwrap(), "a lease taken over is not renewed");
    assert!(store.renew_gather_lease("job-l", 300, 500).await.unwrap(), "its holder renews it");
    assert_eq!(store.get_job("job-l").await.unwrap().unwrap().lease_until_ms, 500);
    assert!(!store.take_gather_lease("job-l", 450, 550).await.unwrap(), "a renewed lease holds past its old end");
    assert!(!store.renew_gather_lease("job-l", 300, 600).await.unwrap(), "a renewal names the current end");
    assert!(store.take_gather_lease("job-l", 501, 700).await.unwrap(), "a lease not renewed ends");
    assert!(store.set_status("job-l", JobStatus::Gathering, JobStatus::Complete).await.unwrap());
    assert!(!store.take_gather_lease("job-l", 10_000, 20_000).await.unwrap(), "a complete job has no lease");
}

/// `set_status` is a compare-and-set.
pub async fn status_is_conditional(store: &dyn StateStore) {
    store.create_job(&JobRecord::new("job-s", 1)).await.unwrap();
    store.set_planned("job-s", 1, 1).await.unwrap();
    assert!(!store.set_status("job-s", JobStatus::Planning, JobStatus::Complete).await.unwrap());
    assert!(store.set_status("job-s", JobStatus::Running, JobStatus::Complete).await.unwrap());
    assert!(!store.set_status("job-s", JobStatus::Running, JobStatus::Complete).await.unwrap());
    assert_eq!(store.get_job("job-s").await.unwrap().unwrap().status, JobStatus::Complete);
}

/// `delete_job` removes job and chunks, and the id can be reused.
pub async fn delete_removes_everything(store: &dyn StateStore) {
    store.create_job(&JobRecord::new("job-d", 1)).await.unwrap();
    store.set_planned("job-d", 1, 1).await.unwrap();
    store.commit_chunk("job-d", &chunk(0, "w")).await.unwrap();
    store.delete_job("job-d").await.unwrap();
    store.delete_job("job-d").await.unwrap();
    assert_eq!(store.get_job("job-d").await.unwrap(), None);
    assert_eq!(store.chunks("job-d").await.unwrap(), vec![]);
    assert!(store.create_job(&JobRecord::new("job-d", 2)).await.unwrap());
}

/// Many tasks commit every chunk several times at once: each chunk counts once and exactly
/// one commit finalizes.
///
/// `committers` are handles on one ledger, one per committing task: the same handle, or
/// separate connections to the same database (as separate processes would have).
pub async fn concurrent_commits_finalize_exactly_once(committers: &[Arc<dyn StateStore>]) {
    const CHUNKS: u32 = 40;
    let store = &committers[0];
    store.create_job(&JobRecord::new("job-x", 1)).await.unwrap();
    store.set_planned("job-x", CHUNKS, 1).await.unwrap();
    let mut tasks = Vec::new();
    for (w, store) in (0u32..).zip(committers.iter().cloned()) {
        tasks.push(tokio::spawn(async move {
            let mut firsts = 0;
            let mut finals = 0;
            for i in 0..CHUNKS {
                let i = (i + w * 7) % CHUNKS;
                if let LedgerCommit::First { finalize, .. } = store.commit_chunk("job-x", &chunk(i, "w")).await.unwrap()
                {
                    firsts += 1;
                    finals += u32::from(finalize);
                }
            }
            (firsts, finals)
        }));
    }
    let (mut firsts, mut finals) = (0, 0);
    for t in tasks {
        let (f, z) = t.await.unwrap();
        firsts += f;
        finals += z;
    }
    assert_eq!(firsts, CHUNKS, "every chunk must be committed exactly once");
    assert_eq!(finals, 1, "exactly one commit must finalize");
    assert_eq!(store.get_job("job-x").await.unwrap().unwrap().done_chunks, CHUNKS);
}

fn checkpoint(version: u64, state: &str) -> Option<Checkpoint> {
    Some(Checkpoint { version, state: state.into() })
}

/// The first write of a stream's state expects version 0 and stores version 1; it is
/// conditional like every other.
pub async fn checkpoint_first_write_expects_zero(store: &dyn StateStore) {
    assert_eq!(store.get_checkpoint("stream-f").await.unwrap(), None);
    assert!(!store.put_checkpoint("stream-f", 3, r#"{"a":1}"#).await.unwrap(), "nothing stored: only 0 is expected");
    assert_eq!(store.get_checkpoint("stream-f").await.unwrap(), None, "a refused write stores nothing");
    let first = r#"{"shards":{"shardId-000":"4959"},"open":["part-ü \"1\""]}"#;
    assert!(store.put_checkpoint("stream-f", 0, first).await.unwrap(), "the first write expects 0");
    assert_eq!(store.get_checkpoint("stream-f").await.unwrap(), checkpoint(1, first), "the state round-trips");
    assert!(!store.put_checkpoint("stream-f", 0, "{}").await.unwrap(), "a second first write is refused");
    assert_eq!(store.get_checkpoint("stream-f").await.unwrap(), checkpoint(1, first), "and changes nothing");
}

/// Every write bumps the version by one; a write expecting another version than the stored
/// one (stale or ahead) is refused and changes nothing.
pub async fn checkpoint_versions_increase_and_stale_writes_change_nothing(store: &dyn StateStore) {
    assert!(store.put_checkpoint("stream-v", 0, r#"{"n":1}"#).await.unwrap());
    assert!(store.put_checkpoint("stream-v", 1, r#"{"n":2}"#).await.unwrap());
    assert!(store.put_checkpoint("stream-v", 2, r#"{"n":3}"#).await.unwrap());
    assert_eq!(store.get_checkpoint("stream-v").await.unwrap(), checkpoint(3, r#"{"n":3}"#));
    for expected in [0, 1, 2, 4, u64::MAX] {
        assert!(
            !store.put_checkpoint("stream-v", expected, r#"{"n":"stale"}"#).await.unwrap(),
            "a write expecting version {expected} of version 3 must be refused"
        );
    }
    assert_eq!(store.get_checkpoint("stream-v").await.unwrap(), checkpoint(3, r#"{"n":3}"#), "refusals change nothing");
    assert!(store.put_checkpoint("stream-v", 3, r#"{"n":4}"#).await.unwrap());
    assert_eq!(store.get_checkpoint("stream-v").await.unwrap(), checkpoint(4, r#"{"n":4}"#));
}

/// A deleted state reads as none, deleting it again is no error, and the next write starts
/// over at version 1.
pub async fn checkpoint_delete_then_get_is_none(store: &dyn StateStore) {
    store.delete_checkpoint("stream-d").await.unwrap();
    assert!(store.put_checkpoint("stream-d", 0, "{}").await.unwrap());
    assert!(store.put_checkpoint("stream-d", 1, "[1]").await.unwrap());
    store.delete_checkpoint("stream-d").await.unwrap();
    assert_eq!(store.get_checkpoint("stream-d").await.unwrap(), None);
    store.delete_checkpoint("stream-d").await.unwrap();
    assert!(!store.put_checkpoint("stream-d", 2, "[2]").await.unwrap(), "a deleted state has no version 2");
    assert!(store.put_checkpoint("stream-d", 0, "[3]").await.unwrap(), "a deleted state starts over");
    assert_eq!(store.get_checkpoint("stream-d").await.unwrap(), checkpoint(1, "[3]"));
}

/// A stream named like a job (or like another stream's prefix) shares nothing with it.
pub async fn checkpoints_and_jobs_with_the_same_name_are_independent(store: &dyn StateStore) {
    store.create_job(&JobRecord::new("job-k", 1)).await.unwrap();
    store.set_planned("job-k", 1, 1).await.unwrap();
    store.commit_chunk("job-k", &chunk(0, "w")).await.unwrap();
    assert_eq!(store.get_checkpoint("job-k").await.unwrap(), None, "a job is not a checkpoint");
    assert!(store.put_checkpoint("job-k", 0, r#"{"k":1}"#).await.unwrap(), "a job's id is free as a stream's name");
    assert!(store.put_checkpoint("job-k2", 0, r#"{"k":2}"#).await.unwrap());
    assert_eq!(store.get_job("job-k").await.unwrap().unwrap().done_chunks, 1, "the job is untouched");
    store.delete_job("job-k").await.unwrap();
    assert_eq!(store.get_checkpoint("job-k").await.unwrap(), checkpoint(1, r#"{"k":1}"#), "delete_job keeps it");
    assert!(store.create_job(&JobRecord::new("job-k", 2)).await.unwrap());
    store.delete_checkpoint("job-k").await.unwrap();
    assert_eq!(store.get_job("job-k").await.unwrap().unwrap().created_ms, 2, "delete_checkpoint keeps the job");
    assert_eq!(store.get_checkpoint("job-k2").await.unwrap(), checkpoint(1, r#"{"k":2}"#), "and other streams");
}

/// A state of exactly the limit is stored; one byte more is refused with an error naming the
/// stream, and changes nothing.
pub async fn checkpoint_state_over_the_limit_is_refused_naming_the_stream(store: &dyn StateStore) {
    let padded = |bytes: usize| format!(r#"{{"pad":"{}"}}"#, "x".repeat(bytes - r#"{"pad":""}"#.len()));
    let largest = padded(MAX_CHECKPOINT_BYTES);
    assert_eq!(largest.len(), 256 * 1024);
    assert!(store.put_checkpoint("stream-big", 0, &largest).await.unwrap(), "256 KiB is within the limit");
    assert_eq!(store.get_checkpoint("stream-big").await.unwrap(), checkpoint(1, &largest));
    let refused = store.put_checkpoint("stream-big", 1, &padded(MAX_CHECKPOINT_BYTES + 1)).await;
    let Err(err @ crate::error::Error::InvalidInput { .. }) = refused else {
        panic!("a state over 256 KiB must be refused as invalid input, not {refused:?}")
    };
    assert!(err.to_string().contains("stream-big"), "the error names the stream: {err}");
    assert!(!err.is_retryable(), "it stays too large however often it is tried: {err}");
    assert_eq!(store.get_checkpoint("stream-big").await.unwrap(), checkpoint(1, &largest), "and nothing changed");
    let refused = store.put_checkpoint("stream-big-new", 0, &padded(MAX_CHECKPOINT_BYTES + 1)).await;
    assert!(matches!(refused, Err(crate::error::Error::InvalidInput { .. })), "a first write too: {refused:?}");
    assert_eq!(store.get_checkpoint("stream-big-new").await.unwrap(), None);
}

/// Writers racing with the same expected version: exactly one wins and its state is stored;
/// then writers that read, change and retry never lose an update.
///
/// `writers` are handles on one ledger, one per writing task: the same handle, or separate
/// connections to the same database (as separate processes would have).
pub async fn concurrent_checkpoint_writers_exactly_one_wins(writers: &[Arc<dyn StateStore>]) {
    const ROUNDS: u32 = 3;
    let store = &writers[0];
    assert!(store.put_checkpoint("stream-x", 0, r#"{"writer":null,"count":0}"#).await.unwrap());
    let race = writers.iter().cloned().enumerate().map(|(w, store)| {
        tokio::spawn(
            async move { store.put_checkpoint("stream-x", 1, &format!(r#"{{"writer":{w},"count":0}}"#)).await },
        )
    });
    let mut winners = Vec::new();
    for (w, task) in race.collect::<Vec<_>>().into_iter().enumerate() {
        if task.await.unwrap().unwrap() {
            winners.push(w);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer expecting version 1 must win, not {winners:?}");
    let stored = store.get_checkpoint("stream-x").await.unwrap();
    assert_eq!(stored, checkpoint(2, &format!(r#"{{"writer":{},"count":0}}"#, winners[0])), "the winner's state");

    // Read, add one, write back expecting what was read; retry on refusal.
    let counters = writers.iter().cloned().map(|store| {
        tokio::spawn(async move {
            for _ in 0..ROUNDS {
                loop {
                    let cp = store.get_checkpoint("stream-x").await.unwrap().expect("the state exists");
                    let doc: serde_json::Value = serde_json::from_str(&cp.state).unwrap();
                    let count = doc["count"].as_u64().unwrap() + 1;
                    let next = serde_json::json!({ "writer": doc["writer"], "count": count }).to_string();
                    if store.put_checkpoint("stream-x", cp.version, &next).await.unwrap() {
                        break;
                    }
                }
            }
        })
    });
    for task in counters.collect::<Vec<_>>() {
        task.await.unwrap();
    }
    let increments = ROUNDS * writers.len() as u32;
    let cp = store.get_checkpoint("stream-x").await.unwrap().unwrap();
    let doc: serde_json::Value = serde_json::from_str(&cp.state).unwrap();
    assert_eq!(doc["count"], u64::from(increments), "no update may be lost: {cp:?}");
    assert_eq!(cp.version, 2 + u64::from(increments), "one version per write");
}

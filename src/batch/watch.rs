//! `sluicebox watch`: start a job for every object that lands under a prefix, from S3 event
//! notifications delivered to a queue.
//!
//! Events are parsed leniently (emulators leave out fields AWS sends; an SNS envelope is
//! opened). Keys arrive URL-encoded (`+` for a space) and are decoded. `s3:TestEvent` and
//! events other than `ObjectCreated:*` are acknowledged and ignored. An object's job id comes
//! from its location, size and version, so a repeated event for one object version finds its
//! job in the ledger and starts nothing, unless that job's submission failed half-way (it was
//! never planned, or not all its tasks were sent), which the repeat then submits again.

use std::sync::Arc;

use serde_json::Value;
use tracing::{info, warn};

use crate::backends::bucket::InputObject;
use crate::backends::ledger::JobStatus;
use crate::backends::queue::Queue;
use crate::batch::job::{self, RunOptions};
use crate::batch::pool::Pool;
use crate::engine::spec::JobSpec;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// One object named by an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    /// The event name, e.g. `ObjectCreated:Put`.
    pub event: String,
    /// The bucket.
    pub bucket: String,
    /// The key, decoded.
    pub key: String,
    /// The version or ETag the event names, if any.
    pub version: Option<String>,
}

/// The object-created events in one notification message (an empty list for a test event or
/// a message that is not an S3 notification).
pub fn parse_events(body: &str) -> Vec<ObjectEvent> {
    let Ok(mut v) = serde_json::from_str::<Value>(body) else { return Vec::new() };
    // Through SNS, the notification is the string in `Message`.
    if let Some(inner) = v.get("Message").and_then(Value::as_str).and_then(|m| serde_json::from_str(m).ok()) {
        v = inner;
    }
    let Some(records) = v.get("Records").and_then(Value::as_array) else { return Vec::new() };
    records
        .iter()
        .filter_map(|r| {
            let event = r.get("eventName")?.as_str()?.to_string();
            let s3 = r.get("s3")?;
            let bucket = s3.get("bucket")?.get("name")?.as_str()?.to_string();
            let object = s3.get("object")?;
            let key = decode_key(object.get("key")?.as_str()?);
            let version = ["versionId", "eTag"]
                .iter()
                .find_map(|f| object.get(*f).and_then(Value::as_str).filter(|s| !s.is_empty()))
                .map(str::to_string);
            Some(ObjectEvent { event, bucket, key, version })
        })
        .collect()
}

/// Decode a key as S3 events carry it (form encoding: `+` is a space, `%XX` a byte).
pub fn decode_key(key: &str) -> String {
    url::form_urlencoded::parse(format!("k={key}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| key.to_string())
}

/// What [`watch_once`] did with one message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A job was planned and enqueued for the object.
    Started {
        /// The object.
        input: String,
        /// Its job.
        job_id: String,
    },
    /// The object's job already exists (a repeated event).
    Repeated {
        /// The object.
        input: String,
        /// Its job.
        job_id: String,
    },
    /// The object is gone or outside the prefix, or the message is not an object event.
    Ignored {
        /// Why.
        reason: String,
    },
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Started { input, job_id } => write!(f, "started job {job_id} for {input}"),
            Outcome::Repeated { input, job_id } => write!(f, "job {job_id} for {input} exists; not started again"),
            Outcome::Ignored { reason } => write!(f, "ignored: {reason}"),
        }
    }
}

/// Take up to ten event messages from `events` (waiting up to `wait`) and start a job for
/// each new object under `prefix` (`s3://BUCKET/PREFIX`). A message is acknowledged once
/// its objects' jobs are submitted; one that fails is given back and retried.
pub async fn watch_once(
    engine: &Engine,
    spec: &JobSpec,
    events: &dyn Queue,
    prefix: &str,
    opts: &RunOptions,
    wait: std::time::Duration,
) -> Result<Vec<Outcome>> {
    let (bucket, key_prefix) = split_prefix(prefix, "PREFIX")?;
    let mut outcomes = Vec::new();
    for d in events.receive(10, wait).await? {
        let found = parse_events(&d.body);
        if found.is_empty() {
            info!(body = %d.body, "ignoring a message that names no created object (e.g. s3:TestEvent)");
            outcomes.push(Outcome::Ignored { reason: "no ObjectCreated event".into() });
        }
        let mut failed = None;
        for ev in found {
            match start(engine, spec, &ev, bucket, key_prefix, opts).await {
                Ok(o) => outcomes.push(o),
                Err(e) => {
                    warn!(key = %ev.key, "cannot start a job: {e}");
                    failed = Some(e);
                }
            }
        }
        match failed {
            None => events.ack(&d.receipt).await?,
            Some(_) => events.release(&d.receipt).await?,
        }
    }
    Ok(outcomes)
}

/// The bucket and key prefix of `s3://BUCKET/PREFIX`; `setting` names it in the error.
pub fn split_prefix<'a>(prefix: &'a str, setting: &str) -> Result<(&'a str, &'a str)> {
    prefix
        .strip_prefix("s3://")
        .map(|r| r.split_once('/').unwrap_or((r, "")))
        .ok_or_else(|| Error::config(setting, format!("{prefix:?} is not an s3://BUCKET/PREFIX URL")))
}

/// Start the job of the object `ev` names, unless it is outside `bucket`/`key_prefix`, not a
/// creation, gone, or its job was submitted already (a repeated event).
pub async fn start(
    engine: &Engine,
    spec: &JobSpec,
    ev: &ObjectEvent,
    bucket: &str,
    key_prefix: &str,
    opts: &RunOptions,
) -> Result<Outcome> {
    let input = format!("s3://{}/{}", ev.bucket, ev.key);
    if !ev.event.starts_with("ObjectCreated") {
        return Ok(Outcome::Ignored { reason: format!("{} of {input}", ev.event) });
    }
    if ev.bucket != bucket || !ev.key.starts_with(key_prefix) || ev.key.ends_with('/') {
        return Ok(Outcome::Ignored { reason: format!("{input} is outside s3://{bucket}/{key_prefix}") });
    }
    if ev.key[key_prefix.len()..].starts_with(job::redrive::REDRIVE_DIR) {
        return Ok(Outcome::Ignored {
            reason: format!("{input} is a redrive request, for the stack's on-object function"),
        });
    }
    // With a ready marker, only the marker starts a job: over the objects of its folder.
    let (input, folder) = match &spec.ready_marker {
        None => (input, None),
        Some(marker) => {
            let (folder, name) = ev.key.rsplit_once('/').map_or(("", ev.key.as_str()), |(f, n)| (f, n));
            if name != marker {
                return Ok(Outcome::Ignored { reason: format!("{input} waits for its folder's {marker}") });
            }
            let folder = match folder {
                "" => String::new(),
                f => format!("{f}/"),
            };
            (format!("s3://{}/{folder}", ev.bucket), Some(folder))
        }
    };
    let store = crate::backends::bucket::input_store(&input, &engine.cloud)?;
    let inputs = match crate::backends::bucket::resolve_inputs(
        store.as_ref(),
        std::slice::from_ref(&input),
        spec.input.format,
        spec.input.compression,
    )
    .await
    {
        Ok(i) => i,
        Err(Error::InvalidInput { .. } | Error::NotFound(_)) => {
            return Ok(Outcome::Ignored { reason: format!("{input} is gone") });
        }
        Err(e) => return Err(e),
    };
    let inputs = match &folder {
        None => inputs,
        Some(folder) => ready_inputs(inputs, &format!("s3://{}/", ev.bucket), folder, key_prefix),
    };
    if inputs.is_empty() {
        return Ok(Outcome::Ignored { reason: format!("{input} holds nothing but its marker") });
    }
    submit_once(engine, spec, inputs, store, input, opts).await
}

/// Submit the job of `spec` over `inputs` (read through `store`; `input` names them in the
/// outcome) unless it exists: an event delivered again starts nothing.
pub async fn submit_once(
    engine: &Engine,
    spec: &JobSpec,
    inputs: Vec<InputObject>,
    store: Arc<dyn object_store::ObjectStore>,
    input: String,
    opts: &RunOptions,
) -> Result<Outcome> {
    let job_id = job::derive_job_id(&inputs, spec);
    // A job still `planning`, or planned with not all its tasks sent, was left by a submission
    // that failed half-way (or is being submitted by another watcher right now): submitting
    // again finishes it (two planners agree on one plan; a task sent twice is worked once). A
    // job whose tasks were all sent exists: the event is a repeat.
    let existing = engine.ledger.get_job(&job_id).await?;
    let submitted = match existing.map(|j| j.status) {
        None | Some(JobStatus::Planning) => false,
        Some(JobStatus::Running) => job::JobObjects::new(engine.bucket.clone(), &job_id).sent().await?.is_some(),
        Some(_) => true,
    };
    if submitted {
        info!(%input, job = %job_id, "repeated event: the job exists");
        return Ok(Outcome::Repeated { input, job_id });
    }
    let mut engine = engine.clone();
    engine.inputs = store;
    let submitted = job::submit(&engine, spec, inputs, opts).await?;
    info!(%input, job = %submitted.job_id, chunks = submitted.chunks, "job started");
    Ok(Outcome::Started { input, job_id: submitted.job_id })
}

/// The objects of a ready folder that are a job's inputs: those under the watched prefix
/// whose name below the folder has no part starting with `_` or `.` (the marker itself,
/// `_temporary/` folders, hidden files).
fn ready_inputs(inputs: Vec<InputObject>, bucket_url: &str, folder: &str, key_prefix: &str) -> Vec<InputObject> {
    inputs
        .into_iter()
        .filter(|i| {
            let key = i.location.strip_prefix(bucket_url).unwrap_or(&i.location);
            let below = key.strip_prefix(folder).unwrap_or(key);
            key.starts_with(key_prefix) && !below.split('/').any(|p| p.starts_with('_') || p.starts_with('.'))
        })
        .collect()
}

/// A job with a ready marker, run or planned over a folder by hand: the folder's inputs
/// without the marker and the other objects whose names start with `_` or `.`, as `watch`
/// takes them (none when the job has no marker).
pub fn without_markers(spec: &JobSpec, inputs: Vec<InputObject>) -> Vec<InputObject> {
    if spec.ready_marker.is_none() {
        return inputs;
    }
    let name = |i: &InputObject| i.location.rsplit('/').next().unwrap_or_default().to_string();
    inputs.into_iter().filter(|i| !name(i).starts_with(['_', '.'])).collect()
}

/// How [`serve`] runs.
#[derive(Debug, Clone)]
pub struct Serve {
    /// `s3://BUCKET/PREFIX`: objects created under it start jobs.
    pub prefix: String,
    /// Workers in this process (0: only start jobs).
    pub workers: usize,
    /// After the first stop signal, how long to finish the tasks in hand.
    pub grace: std::time::Duration,
    /// Stop after this long without an event or a task.
    pub idle_exit: Option<std::time::Duration>,
}

/// Start a job for every object created under `how.prefix`, from the notifications in
/// `events`, until stopped (a signal, or `how.idle_exit`); with workers, work the jobs too.
/// `report` hears what became of each message.
pub async fn serve(
    engine: &Engine,
    spec: &JobSpec,
    events: &dyn Queue,
    how: &Serve,
    opts: &RunOptions,
    report: &mut dyn FnMut(&Outcome),
) -> Result<()> {
    job::run::needs_shared_sink(spec)?;
    let mut pool = Pool::serve(engine, opts, how.workers);
    pool.stop_on_signals(how.grace);
    let mut last_event = std::time::Instant::now();
    while !pool.is_stopping() {
        let wait = std::time::Duration::from_secs(2);
        let stop = pool.jobs().stop_token().clone();
        let got = tokio::select! {
            _ = stop.cancelled() => break,
            got = watch_once(engine, spec, events, &how.prefix, opts, wait) => got,
        };
        match got {
            Ok(outcomes) => {
                if !outcomes.is_empty() {
                    last_event = std::time::Instant::now();
                }
                outcomes.iter().for_each(&mut *report);
            }
            Err(e) => {
                warn!("cannot take events, retrying: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        if how.idle_exit.is_some_and(|i| last_event.elapsed() >= i && pool.jobs().idle_for() >= i) {
            pool.stop();
        }
    }
    pool.join().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_with_a_marker_run_by_hand_leaves_out_the_marker_and_underscored_names() {
        let object = |name: &str| InputObject {
            location: format!("file:///in/day1/{name}"),
            path: format!("in/day1/{name}"),
            size: 1,
            version: "v".into(),
            e_tag: None,
            format: crate::model::config::Format::Json,
            compression: crate::model::config::Compression::None,
        };
        let inputs = || vec![object("a.json"), object("_SUCCESS"), object("b.json"), object("_committed")];
        let names = |spec: &JobSpec| -> Vec<String> {
            without_markers(spec, inputs()).iter().map(|i| i.path.rsplit('/').next().unwrap().to_string()).collect()
        };
        let check = |toml: &str| {
            crate::model::config::JobConfig::from_toml(toml, "j").unwrap().validate(std::path::Path::new(".")).unwrap()
        };
        assert_eq!(names(&check("[input]\nready_marker = \"_SUCCESS\"\n")), ["a.json", "b.json"]);
        assert_eq!(names(&check("")).len(), 4, "without a marker every input is the job's");
    }

    #[test]
    fn events_are_parsed_leniently_and_keys_decoded() {
        let body = r#"{"Records":[{"eventVersion":"2.1","eventName":"ObjectCreated:Put",
            "s3":{"bucket":{"name":"b"},"object":{"key":"in/my+orders%2B1%C3%A9.csv","size":10,"eTag":"abc"}}}]}"#;
        assert_eq!(
            parse_events(body),
            vec![ObjectEvent {
                event: "ObjectCreated:Put".into(),
                bucket: "b".into(),
                key: "in/my orders+1é.csv".into(),
                version: Some("abc".into()),
            }]
        );
        let test_event = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#;
        assert!(parse_events(test_event).is_empty());
        let sns = serde_json::json!({"Type": "Notification", "Message": body}).to_string();
        assert_eq!(parse_events(&sns).len(), 1);
        assert!(parse_events("not json").is_empty());
    }
}

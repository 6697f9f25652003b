//! A redrive started on the stack by an upload: a job file put at
//! `SLUICEBOX_INPUT_PREFIX` + `_redrive/` ([`REDRIVE_DIR`](crate::batch::job::redrive::REDRIVE_DIR)) +
//! `JOB_ID.toml` (an empty one: the job's own
//! definition) makes the on-object function take job `JOB_ID`'s rejected records through it,
//! as `sluicebox redrive JOB_ID --config FILE` does, and hand the redrive's tasks to the task
//! functions like any job's.
//!
//! What anyone may upload is judged as the function's own job file is: a file over
//! [`MAX_JOB_FILE`] bytes, not UTF-8, not a job file, naming an unknown job or one that cannot
//! be redriven, or reaching what the function's settings do not allow, starts nothing and is
//! logged with the reason; the event is not retried.

use super::settings::within_reach;
use super::Function;
use crate::backends::bucket;
use crate::batch::job;
use crate::batch::watch::{self, Outcome};
use crate::error::{Error, Result};
use crate::model::config::{check_job_id, Compression, JobConfig};

/// The largest job file a redrive upload may be.
pub const MAX_JOB_FILE: u64 = 1 << 20;

impl Function {
    /// Start the redrive an upload at `url` asks for (`name`: its name under the input
    /// prefix's [`REDRIVE_DIR`](crate::batch::job::redrive::REDRIVE_DIR)). A request that
    /// cannot be met is an outcome, not an error: only a backend failure is retried.
    pub(super) async fn redrive_upload(&self, url: &str, name: &str) -> Result<Outcome> {
        let refused = |reason: String| {
            tracing::warn!(%url, "redrive request refused: {reason}");
            Ok(Outcome::Ignored { reason: format!("redrive request {url}: {reason}") })
        };
        let job_id = name.strip_suffix(".toml").unwrap_or(name);
        if let Err(e) = check_job_id(job_id, "the uploaded file's name") {
            return refused(e.to_string());
        }
        let store = bucket::input_store(url, &self.engine.cloud)?;
        let key = url.strip_prefix("s3://").and_then(|r| r.split_once('/')).map(|(_, k)| k).unwrap_or_default();
        let Some(meta) = bucket::get_opt_head(store.as_ref(), key).await? else { return refused("it is gone".into()) };
        if meta.size > MAX_JOB_FILE {
            return refused(format!("{} bytes; a job file is at most {MAX_JOB_FILE}", meta.size));
        }
        // Only the bytes the head measured, of the object it saw.
        let bytes = match meta.size {
            0 => bytes::Bytes::new(),
            size => {
                let options = object_store::GetOptions {
                    if_match: meta.e_tag.clone(),
                    range: Some((0..size).into()),
                    ..Default::default()
                };
                match store.get_opts(&meta.location, options).await {
                    Ok(got) => got.bytes().await.map_err(|e| {
                        Error::backend(crate::error::Backend::ObjectStore, format!("cannot read {url}"), e)
                    })?,
                    Err(object_store::Error::NotFound { .. } | object_store::Error::Precondition { .. }) => {
                        return refused("it changed or went while it was read".into())
                    }
                    Err(e) => {
                        return Err(Error::backend(crate::error::Backend::ObjectStore, format!("cannot read {url}"), e))
                    }
                }
            }
        };
        let Ok(text) = String::from_utf8(bytes.to_vec()) else { return refused("not UTF-8 text".into()) };
        let corrected = match text.trim().is_empty() {
            true => None,
            false => match JobConfig::from_toml(&text, url).and_then(|c| {
                within_reach(&c, &self.settings)?;
                c.resolve(&self.settings.scratch)
            }) {
                Ok(definition) => Some(definition),
                Err(e) => return refused(e.to_string()),
            },
        };
        let redriving = match job::redrive::prepare(&self.engine, job_id).await {
            Ok(r) => r,
            Err(e @ (Error::InvalidConfig { .. } | Error::NotFound(_) | Error::InvalidInput { .. })) => {
                return refused(e.to_string())
            }
            Err(e) => return Err(e),
        };
        let definition = corrected.unwrap_or_else(|| redriving.definition.clone());
        let spec = match self
            .overrides()
            .apply(definition)
            .and_then(|d| job::redrive::definition(d, redriving.redrive.clone()).check())
        {
            Ok(spec) => spec,
            Err(e) => return refused(e.to_string()),
        };
        crate::batch::job::run::needs_shared_sink(&spec)?;
        let store = bucket::input_store(&redriving.inputs[0], &self.engine.cloud)?;
        let inputs =
            bucket::resolve_inputs(store.as_ref(), &redriving.inputs, spec.input.format, Compression::None).await?;
        let outcome = watch::submit_once(&self.engine, &spec, inputs, store, url.to_string(), &self.opts).await?;
        tracing::info!(%url, ?outcome, "redrive request handled");
        Ok(outcome)
    }
}

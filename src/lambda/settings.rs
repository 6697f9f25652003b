//! A Lambda function's settings, from its environment (the table in [`super`]), and what a
//! job file it is handed may reach.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::model::config::JobConfig;

/// A function's settings (see the module's table).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where jobs' objects go.
    pub bucket: String,
    /// The task queue.
    pub queue: String,
    /// The ledger.
    pub ledger: String,
    /// The job file in a bucket (on-object).
    pub job: Option<String>,
    /// Objects created under it start jobs (on-object).
    pub input_prefix: Option<String>,
    /// Where inputs may be archived (`[archive] to` must name this prefix).
    pub archive_prefix: Option<String>,
    /// Where a stream's files go (on-stream).
    pub stream_to: Option<String>,
    /// Over the job file's sink.
    pub sink: Option<String>,
    /// Over the job file's `[sink] writers`.
    pub sink_writers: Option<u32>,
    /// The one DynamoDB table a job file's `[enrich] source` may name (`dynamodb://TABLE`),
    /// `none` for no table; unset, any (the deployment's role decides).
    pub enrich_table: Option<String>,
    /// Over the job file's chunk size, MiB.
    pub chunk_mib: Option<u64>,
    /// Told how every job ends.
    pub notify: Vec<crate::model::config::Notify>,
    /// The scratch directory.
    pub scratch: PathBuf,
    /// The most the scratch directory may hold, bytes.
    pub scratch_limit: u64,
    /// Deliveries of a task before its job fails.
    pub max_attempts: u32,
    /// Time a task needs, before one has been timed here; then the longest timed.
    pub task_time: Duration,
    /// Tasks of a batch worked at once.
    pub workers: usize,
    /// The task queue's visibility timeout.
    pub visibility: Duration,
}

impl Settings {
    /// The settings in this process's environment.
    pub fn from_env() -> Result<Settings> {
        Settings::from_vars(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// The settings `var` gives (by variable name); errors name the variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let required = |name: &'static str| {
            var(name).ok_or_else(|| Error::config(name, "is not set; the function's template sets it"))
        };
        let number = |name: &'static str, default: u64| -> Result<u64> {
            match var(name) {
                None => Ok(default),
                Some(v) => v.trim().parse().map_err(|_| Error::config(name, format!("{v:?} is not a whole number"))),
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        Ok(Settings {
            bucket: required("SLUICEBOX_BUCKET")?,
            queue: required("SLUICEBOX_QUEUE")?,
            ledger: required("SLUICEBOX_LEDGER")?,
            job: var("SLUICEBOX_JOB"),
            input_prefix: var("SLUICEBOX_INPUT_PREFIX"),
            archive_prefix: var("SLUICEBOX_ARCHIVE_PREFIX"),
            stream_to: var("SLUICEBOX_STREAM_TO"),
            sink: var("SLUICEBOX_SINK"),
            sink_writers: var("SLUICEBOX_SINK_WRITERS")
                .map(|_| number("SLUICEBOX_SINK_WRITERS", 1))
                .transpose()?
                .map(|n| n.clamp(1, u64::from(u32::MAX)) as u32),
            enrich_table: var("SLUICEBOX_ENRICH_TABLE"),
            chunk_mib: var("SLUICEBOX_CHUNK_MIB")
                .map(|_| number("SLUICEBOX_CHUNK_MIB", 0))
                .transpose()?
                .filter(|&n| n > 0),
            notify: var("SLUICEBOX_NOTIFY")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(|u| crate::model::config::Notify::url(u, var("SLUICEBOX_NOTIFY_FROM"), "SLUICEBOX_NOTIFY"))
                .collect::<Result<_>>()?,
            scratch: var("SLUICEBOX_SCRATCH").map_or_else(|| PathBuf::from("/tmp/sluicebox"), PathBuf::from),
            scratch_limit: number("SLUICEBOX_SCRATCH_LIMIT_MB", 512)? << 20,
            max_attempts: number("SLUICEBOX_MAX_ATTEMPTS", 3)?.clamp(1, 1000) as u32,
            task_time: Duration::from_secs(number("SLUICEBOX_TASK_SECONDS", 0)?),
            workers: number("SLUICEBOX_WORKERS", cores)?.max(1) as usize,
            visibility: Duration::from_secs(number("SLUICEBOX_VISIBILITY_SECS", 5400)?),
        })
    }
}

/// Refuses a job file that would reach past what a function should: a reference on the
/// function's own disk (`/proc/self/environ` holds the role's keys, and the planner would
/// upload it next to the job), a reference table other than `SLUICEBOX_ENRICH_TABLE` (the
/// role reads no other, and the job would fail chunk by chunk on access denied), or an
/// archive outside `SLUICEBOX_ARCHIVE_PREFIX` (or under the input prefix, where each
/// archived object would start a job again).
pub fn within_reach(config: &JobConfig, settings: &Settings) -> Result<()> {
    if let Some(enrich) = &config.enrich {
        let source = enrich.source.as_str();
        if let (Some(table), Some(allowed)) = (source.strip_prefix("dynamodb://"), settings.enrich_table.as_deref()) {
            readable_table(table, allowed)?;
        }
        let remote = ["s3://", "dynamodb://"].iter().any(|scheme| source.starts_with(scheme));
        if !remote {
            let shown = match source.contains("://") {
                true => crate::model::web::redact(source),
                false => format!("{source:?}"),
            };
            return Err(Error::config(
                "enrich.source",
                format!(
                    "{} is not in a bucket or a table: on Lambda a reference is s3://BUCKET/KEY or dynamodb://TABLE, never a file of the function's own",
                    shown
                ),
            ));
        }
    }
    if let Some(archive) = &config.archive {
        let key = archive.to.trim_start_matches('/');
        let Some(allowed) = settings.archive_prefix.as_deref() else {
            return Err(Error::config(
                "archive.to",
                "this deployment sets no SLUICEBOX_ARCHIVE_PREFIX, so inputs cannot be archived: remove [archive]",
            ));
        };
        let prefix = |url: &str| url.strip_prefix("s3://").and_then(|r| r.split_once('/')).map(|(_, p)| p.to_string());
        let allowed_key = prefix(allowed).unwrap_or_default();
        let under = |key: &str, prefix: &str| {
            let (key, prefix) = (key.trim_end_matches('/'), prefix.trim_end_matches('/'));
            !prefix.is_empty() && (key == prefix || key.starts_with(&format!("{prefix}/")))
        };
        if key.contains("..") || !under(key, &allowed_key) {
            return Err(Error::config(
                "archive.to",
                format!("{:?} is not under {allowed}, where this deployment may archive inputs", archive.to),
            ));
        }
        if let Some(input) = settings.input_prefix.as_deref().and_then(prefix).filter(|p| under(key, p)) {
            return Err(Error::config(
                "archive.to",
                format!(
                    "{:?} is under the input prefix {input:?}: every archived input would start a job again",
                    archive.to
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a job file's reference table is the one `SLUICEBOX_ENRICH_TABLE` lets the
/// function read (`allowed`: `dynamodb://TABLE` or `none`); the error says which parameter
/// of the stack to set.
fn readable_table(table: &str, allowed: &str) -> Result<()> {
    let allowed_table = allowed.strip_prefix("dynamodb://").unwrap_or(allowed);
    if table == allowed_table {
        return Ok(());
    }
    let why = match allowed_table {
        "none" => "this deployment may read no DynamoDB table for enrichment (SLUICEBOX_ENRICH_TABLE=none)".to_string(),
        other => format!("this deployment may read only dynamodb://{other} for enrichment (SLUICEBOX_ENRICH_TABLE)"),
    };
    Err(Error::config(
        "enrich.source",
        format!(
            "dynamodb://{table}: {why}; deploy the stack with EnrichTableName={table}, or put the reference in the bucket (s3://BUCKET/KEY)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_environment_and_errors_name_the_variable() {
        let vars = |extra: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                [("SLUICEBOX_BUCKET", "s3://b"), ("SLUICEBOX_QUEUE", "sqs://q"), ("SLUICEBOX_LEDGER", "dynamodb://l")]
                    .iter()
                    .chain(extra)
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let s = Settings::from_vars(vars(&[("SLUICEBOX_SCRATCH_LIMIT_MB", "100")])).unwrap();
        assert_eq!(
            (s.scratch_limit, s.max_attempts, s.scratch.clone()),
            (100 << 20, 3, PathBuf::from("/tmp/sluicebox"))
        );
        let err = Settings::from_vars(vars(&[("SLUICEBOX_TASK_SECONDS", "soon")])).unwrap_err().to_string();
        assert!(err.contains("SLUICEBOX_TASK_SECONDS") && err.contains("soon"), "{err}");
        let err = Settings::from_vars(|_| None).unwrap_err().to_string();
        assert!(err.contains("SLUICEBOX_BUCKET"), "{err}");
    }

    #[test]
    fn every_setting_the_template_gives_is_one_the_function_reads() {
        let template = include_str!("../../deploy/aws/template.yaml");
        let source = include_str!("settings.rs");
        let names: Vec<&str> = template
            .split(|c: char| !(c.is_ascii_uppercase() || c == '_'))
            .filter(|w| w.starts_with("SLUICEBOX_"))
            .collect();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            let read = ["required", "var", "number"].iter().any(|f| source.contains(&format!("{f}(\"{name}\"")));
            assert!(read, "{name} is set by the template but not read");
        }
    }

    #[test]
    fn a_job_file_may_not_reach_the_functions_disk_or_archive_outside_its_prefix() {
        let settings = |archive: Option<&str>| Settings {
            archive_prefix: archive.map(str::to_string),
            input_prefix: Some("s3://b/incoming/".into()),
            ..Settings::from_vars(|n| match n {
                "SLUICEBOX_BUCKET" => Some("s3://b/results".into()),
                "SLUICEBOX_QUEUE" | "SLUICEBOX_LEDGER" => Some("x".into()),
                _ => None,
            })
            .unwrap()
        };
        let check = |toml: &str, archive: Option<&str>| {
            let config = JobConfig::from_toml(toml, "s3://b/config/job.toml").unwrap();
            within_reach(&config, &settings(archive)).map_err(|e| e.to_string())
        };
        let enrich = |source: &str| format!("[enrich]\nsource = {source:?}\nkey = \"id\"\n");
        for local in ["/proc/self/environ", "refs.csv", "file:///etc/passwd", "sqlite:orders"] {
            let err = check(&enrich(local), None).unwrap_err();
            assert!(err.contains("enrich.source") && err.contains("never a file of the function's own"), "{err}");
        }
        check(&enrich("s3://b/refs/r.csv"), None).unwrap();
        check(&enrich("dynamodb://refs"), None).unwrap();

        let archive = |to: &str| format!("[archive]\nto = {to:?}\n");
        let allowed = Some("s3://b/archive/");
        check(&archive("archive/"), allowed).unwrap();
        check(&archive("archive/2026"), allowed).unwrap();
        for (to, within) in [
            ("config/", allowed),
            ("archived/", allowed),
            ("archive/../config", allowed),
            ("", allowed),
            ("archive/", None),
        ] {
            let err = check(&archive(to), within).unwrap_err();
            assert!(err.contains("archive.to"), "{to}: {err}");
        }
        let err = check(&archive("incoming/done"), Some("s3://b/incoming/")).unwrap_err();
        assert!(err.contains("start a job again"), "{err}");
    }

    #[test]
    fn a_job_file_may_enrich_only_from_the_table_the_stack_grants() {
        let settings = |table: Option<&str>| Settings {
            enrich_table: table.map(str::to_string),
            ..Settings::from_vars(|n| match n {
                "SLUICEBOX_BUCKET" | "SLUICEBOX_QUEUE" | "SLUICEBOX_LEDGER" => Some("x".into()),
                _ => None,
            })
            .unwrap()
        };
        let check = |source: &str, table: Option<&str>| {
            let toml = format!("[enrich]\nsource = {source:?}\nkey = \"id\"\n");
            let config = JobConfig::from_toml(&toml, "s3://b/config/job.toml").unwrap();
            within_reach(&config, &settings(table)).map_err(|e| e.to_string())
        };
        check("dynamodb://refs", Some("dynamodb://refs")).unwrap();
        // Unset: the deployment's own role decides (a stack other than the template's).
        check("dynamodb://refs", None).unwrap();
        // A reference in the bucket needs no table granted.
        check("s3://b/refs/r.csv", Some("none")).unwrap();
        let err = check("dynamodb://orders", Some("dynamodb://refs")).unwrap_err();
        assert!(
            err.contains("enrich.source")
                && err.contains("only dynamodb://refs")
                && err.contains("EnrichTableName=orders"),
            "{err}"
        );
        let err = check("dynamodb://refs", Some("none")).unwrap_err();
        assert!(err.contains("no DynamoDB table") && err.contains("EnrichTableName=refs"), "{err}");
    }

    #[test]
    fn the_stacks_topics_and_recipients_are_every_jobs_targets_and_email_needs_the_sender() {
        use crate::model::config::NotifyTarget;
        let vars = |notify: &'static str, from: Option<&'static str>| {
            move |name: &str| match name {
                "SLUICEBOX_BUCKET" | "SLUICEBOX_QUEUE" | "SLUICEBOX_LEDGER" => Some("x".to_string()),
                "SLUICEBOX_NOTIFY" => Some(notify.to_string()),
                "SLUICEBOX_NOTIFY_FROM" => from.map(str::to_string),
                _ => None,
            }
        };
        // As the template joins them: the stack's topic, yours (or ""), an e-mail per recipient (or "").
        let all = "sns://arn:aws:sns:us-east-1:1:stack,sns://arn:aws:sns:us-east-1:1:yours,ses://ops@example.com,ses://fin@example.org";
        let s = Settings::from_vars(vars(all, Some("jobs@example.com"))).unwrap();
        let targets: Vec<_> = s.notify.iter().map(|n| (n.target.clone(), n.from.clone())).collect();
        let from = Some("jobs@example.com".to_string());
        assert_eq!(
            targets,
            [
                (NotifyTarget::Sns("arn:aws:sns:us-east-1:1:stack".into()), from.clone()),
                (NotifyTarget::Sns("arn:aws:sns:us-east-1:1:yours".into()), from.clone()),
                (NotifyTarget::Ses("ops@example.com".into()), from.clone()),
                (NotifyTarget::Ses("fin@example.org".into()), from),
            ]
        );
        assert!(s.notify.iter().all(|n| n.on.len() == crate::model::config::OUTCOMES.len()));
        let s = Settings::from_vars(vars("sns://arn:aws:sns:us-east-1:1:stack,,", None)).unwrap();
        assert_eq!(s.notify.len(), 1);
        let err = Settings::from_vars(vars("ses://ops@example.com", None)).unwrap_err().to_string();
        assert!(err.contains("SLUICEBOX_NOTIFY.from") && err.contains("sender"), "{err}");
    }

    #[test]
    fn the_sink_writers_come_from_the_deployment_and_a_bad_count_names_its_variable() {
        let with = |writers: &'static str| {
            Settings::from_vars(|n| match n {
                "SLUICEBOX_BUCKET" => Some("s3://b/results".into()),
                "SLUICEBOX_QUEUE" | "SLUICEBOX_LEDGER" => Some("x".into()),
                "SLUICEBOX_SINK_WRITERS" => Some(writers.into()),
                _ => None,
            })
        };
        assert_eq!(with("8").unwrap().sink_writers, Some(8));
        assert_eq!(with("0").unwrap().sink_writers, Some(1), "at least one writer");
        assert!(with("many").unwrap_err().to_string().contains("SLUICEBOX_SINK_WRITERS"));
        let config = crate::model::config::JobConfig::from_toml("[sink]\nwriters = 2\n", "job.toml").unwrap();
        let overrides = crate::engine::spec::Overrides { sink_writers: Some(8), ..Default::default() };
        let spec = overrides.apply(config.resolve(std::path::Path::new(".")).unwrap()).unwrap().check().unwrap();
        assert_eq!(spec.sink.writers.get(), 8, "the deployment's count over the job file's");
    }
}

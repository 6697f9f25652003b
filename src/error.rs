//! The one public error type, with the variants callers branch on, and the one place that
//! decides whether an error is worth another attempt ([`Error::is_retryable`]).

use std::fmt;

/// A boxed error from a backend or library, kept as the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with sluicebox's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can stop a sluicebox operation.
///
/// Bad *records* never become an `Error`: they become rejects. An `Error` means the job (or
/// one step of it) could not go on, and its message names the file, key or column at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A thing that must exist does not (an input object, a job, a table).
    #[error("{0} not found")]
    NotFound(String),
    /// A thing that must not exist yet already does.
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// A conditional write lost against a concurrent one, or what was planned no longer
    /// matches what is there (a chunk's records).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A job failed (a chunk could not be done, its input changed or vanished): its
    /// `failed.json`, as a message.
    #[error("{reason}")]
    JobFailed {
        /// The job.
        job_id: String,
        /// Why, naming the chunk, its input and the attempts.
        reason: String,
    },
    /// The job definition or a command-line option is wrong; `key` names the setting.
    #[error("invalid config: {key}: {reason}")]
    InvalidConfig {
        /// The setting at fault, e.g. `enrich.on_missing` or `--workers`.
        key: String,
        /// What is wrong with it and what would be right.
        reason: String,
    },
    /// An input cannot be used as a whole (unreadable, corrupt, a header that lacks a column).
    #[error("{}", InputLocation { location, line: *line, column: column.as_deref(), reason })]
    InvalidInput {
        /// The object or file, e.g. `file:///data/orders.csv`.
        location: String,
        /// 1-based line, when one is known.
        line: Option<u64>,
        /// Column name, when one is known.
        column: Option<String>,
        /// What is wrong.
        reason: String,
    },
    /// A storage, queue, sink or messaging backend failed; `context` says what we were doing.
    /// Another attempt (later, or on another host) may succeed.
    #[error("{backend}: {context}: {source}")]
    Backend {
        /// Which backend.
        backend: Backend,
        /// What was being done, e.g. `failed to read jobs/x/plan.json`.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// A step of sluicebox itself failed (a task panicked, a value could not be encoded):
    /// a bug or a broken host, not worth retrying.
    #[error("{step}: {context}: {source}")]
    Internal {
        /// The step, e.g. `stream` or `plan`.
        step: &'static str,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
}

/// The services and stores sluicebox talks to, named in a [`Error::Backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A bucket through `object_store` (S3, a local directory).
    ObjectStore,
    /// This host's disk: scratch files, spools, fetched references.
    Filesystem,
    /// A SQLite database (ledger, sink, reference).
    Sqlite,
    /// DynamoDB (ledger, sink, reference).
    Dynamodb,
    /// A PostgreSQL server (sink, reference).
    Postgres,
    /// The ledger, whichever store it is in, refused a write it may take later.
    Ledger,
    /// SQS.
    Sqs,
    /// SNS.
    Sns,
    /// SES.
    Ses,
    /// An SMTP server.
    Smtp,
    /// Kinesis.
    Kinesis,
    /// A webhook's server.
    Webhook,
    /// A failure a test's fault layer injected in place of a backend's.
    Injected,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::ObjectStore => "object_store",
            Backend::Filesystem => "fs",
            Backend::Sqlite => "sqlite",
            Backend::Dynamodb => "dynamodb",
            Backend::Postgres => "postgres",
            Backend::Ledger => "ledger",
            Backend::Sqs => "sqs",
            Backend::Sns => "sns",
            Backend::Ses => "ses",
            Backend::Smtp => "smtp",
            Backend::Kinesis => "kinesis",
            Backend::Webhook => "webhook",
            Backend::Injected => "injected",
        })
    }
}

struct InputLocation<'a> {
    location: &'a str,
    line: Option<u64>,
    column: Option<&'a str>,
    reason: &'a str,
}

impl fmt::Display for InputLocation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.location)?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(column) = self.column {
            write!(f, ", column {column:?}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl Error {
    /// An [`Error::InvalidConfig`] for `key`.
    pub fn config(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidConfig { key: key.into(), reason: reason.into() }
    }

    /// An [`Error::InvalidInput`] for a whole input at `location`.
    pub fn input(location: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidInput { location: location.into(), line: None, column: None, reason: reason.into() }
    }

    /// Whether trying again (later, or on another host) may succeed: a backend failure, a
    /// missing object or a setting this host lacks may pass. An input that is wrong as it is
    /// now ([`Error::InvalidInput`]: changed, gone, corrupt), a plan it no longer matches
    /// ([`Error::Conflict`]), a failed job and a failure of sluicebox itself stay as they are.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::NotFound(_) | Error::AlreadyExists(_) | Error::InvalidConfig { .. } | Error::Backend { .. } => true,
            Error::InvalidInput { .. } | Error::Conflict(_) | Error::JobFailed { .. } | Error::Internal { .. } => false,
        }
    }

    /// Whether trying again *with the same settings* may succeed, as at a Lambda function's
    /// boundary, where every attempt runs with the same job file and environment: as
    /// [`Error::is_retryable`], but a bad setting stays bad.
    pub fn is_retryable_with_same_settings(&self) -> bool {
        self.is_retryable() && !matches!(self, Error::InvalidConfig { .. })
    }

    /// This error with `what` (what was being done) before its message, of the same kind: as
    /// retryable as it was.
    pub fn context(self, what: impl fmt::Display) -> Error {
        match self {
            Error::NotFound(s) => Error::NotFound(format!("{s} ({what})")),
            Error::AlreadyExists(s) => Error::AlreadyExists(format!("{s} ({what})")),
            Error::Conflict(s) => Error::Conflict(format!("{what}: {s}")),
            Error::JobFailed { job_id, reason } => Error::JobFailed { job_id, reason: format!("{what}: {reason}") },
            Error::InvalidConfig { key, reason } => Error::InvalidConfig { key, reason: format!("{what}: {reason}") },
            Error::InvalidInput { location, line, column, reason } => {
                Error::InvalidInput { location, line, column, reason: format!("{what}: {reason}") }
            }
            Error::Backend { backend, context, source } => {
                Error::Backend { backend, context: format!("{what}: {context}"), source }
            }
            Error::Internal { step, context, source } => {
                Error::Internal { step, context: format!("{what}: {context}"), source }
            }
        }
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(backend: Backend, context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend { backend, context: context.into(), source: source.into() }
    }

    /// An [`Error::Internal`] of `step` wrapping `source`.
    pub fn internal(step: &'static str, context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Internal { step, context: context.into(), source: source.into() }
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Error::NotFound(path),
            object_store::Error::AlreadyExists { path, .. } => Error::AlreadyExists(path),
            other => Error::backend(Backend::ObjectStore, "bucket request failed", other),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::backend(Backend::Sqlite, "statement failed", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_and_missing_things_are_retried_and_bad_inputs_failed_jobs_and_bugs_are_not() {
        let backend = Error::backend(Backend::Sqs, "send", "throttled");
        assert!(backend.is_retryable() && backend.is_retryable_with_same_settings());
        assert_eq!(backend.to_string(), "sqs: send: throttled");
        let setting = Error::config("SLUICEBOX_JOB", "does not exist");
        assert!(setting.is_retryable() && !setting.is_retryable_with_same_settings());
        for never in [
            Error::input("s3://b/k", "changed"),
            Error::Conflict("held 9 records; the plan found 10".into()),
            Error::JobFailed { job_id: "j".into(), reason: "job j failed: chunk 3".into() },
            Error::internal("worker", "pipeline task panicked", "boom"),
        ] {
            assert!(!never.is_retryable() && !never.is_retryable_with_same_settings(), "{never}");
        }
        assert_eq!(Error::internal("stream", "the writer task", "boom").to_string(), "stream: the writer task: boom");
        let wrapped = Error::backend(Backend::Sqlite, "statement failed", "locked").context("chunk 3");
        assert!(wrapped.is_retryable());
        assert_eq!(wrapped.to_string(), "sqlite: chunk 3: statement failed: locked");
        assert!(!Error::input("x", "changed").context("chunk 3").is_retryable());
    }
}

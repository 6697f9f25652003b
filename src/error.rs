//! The one public error type, with the variants callers branch on.

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
    /// A conditional write lost against a concurrent one.
    #[error("conflict: {0}")]
    Conflict(String),
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
    /// A storage, queue or sink backend failed; `context` says what we were doing.
    #[error("{backend}: {context}: {source}")]
    Backend {
        /// Which backend, e.g. `sqlite` or `object_store`.
        backend: &'static str,
        /// What was being done, e.g. `failed to read jobs/x/plan.json`.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
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

    /// Whether trying again (later, or on another host) may succeed. An input that is wrong
    /// as it is now ([`Error::InvalidInput`]: changed, gone, corrupt) or a plan it no longer
    /// matches ([`Error::Conflict`]) stays wrong; a backend failure, a missing object or a
    /// setting this host lacks may not.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::InvalidInput { .. } | Error::Conflict(_))
    }

    /// An [`Error::Backend`] wrapping `source`.
    pub fn backend(backend: &'static str, context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Backend { backend, context: context.into(), source: source.into() }
    }
}

impl From<object_store::Error> for Error {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { path, .. } => Error::NotFound(path),
            object_store::Error::AlreadyExists { path, .. } => Error::AlreadyExists(path),
            other => Error::backend("object_store", "bucket request failed", other),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::backend("sqlite", "statement failed", e)
    }
}

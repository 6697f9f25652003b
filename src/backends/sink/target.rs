//! The kinds of sink, and everything that depends only on the kind: how a URL or a job file
//! names one, its table, whether every host can write it, whether it is on a cloud, how it is
//! opened and reached. The one place that knows the kinds: [`super::KINDS`] lists them, one
//! line each, and each is a [`SinkKind`] in its backend's file. Adding a sink is that file,
//! its line in the list, and a run of the sink conformance suite.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

use super::{Sink, SinkShape};
use crate::backends::cloud::Cloud;
use crate::error::{Error, Result};

/// A kind of sink.
#[async_trait]
pub trait SinkKind: Send + Sync {
    /// Its name: the scheme of its URL (`NAME://TABLE`) and the job file's `[sink] type`.
    fn name(&self) -> &'static str;
    /// Why `table` (or its absence) will not do, if it will not: a name this kind cannot
    /// take, or none where one is needed.
    fn refuse_table(&self, table: Option<&str>) -> Option<String>;
    /// Whether workers on every host write the same table (not a file on one machine).
    fn shared(&self) -> bool;
    /// The table as a URL on a cloud service (allow lists); `None` for a local one.
    fn remote_url(&self, table: &str) -> Option<String> {
        let _ = table;
        None
    }
    /// Open the table `shape` describes (its name settled), writing as `spec` says.
    fn open(&self, spec: &SinkSpec, shape: &SinkShape, database: &Path, cloud: &Cloud) -> Result<Arc<dyn Sink>>;
    /// A line for `sluicebox check` saying the table can be written, or why not.
    async fn reach(&self, table: Option<&str>, database: &Path, cloud: &Cloud) -> Result<String>;
}

/// Where a job's records go: nowhere (outputs only), or a table of a kind.
#[derive(Clone)]
pub enum SinkTarget {
    /// Outputs only.
    None,
    /// A table.
    Table {
        /// Its kind.
        kind: &'static dyn SinkKind,
        /// Its name, when given (a SQLite table's default is named after the first input).
        table: Option<String>,
    },
}

impl std::fmt::Debug for SinkTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkTarget::None => f.write_str("None"),
            SinkTarget::Table { kind, table } => write!(f, "{}({table:?})", kind.name()),
        }
    }
}

impl PartialEq for SinkTarget {
    fn eq(&self, other: &Self) -> bool {
        (self.kind_name(), self.table()) == (other.kind_name(), other.table())
    }
}

impl Eq for SinkTarget {}

impl SinkTarget {
    /// Parse a sink URL (`none`, `NAME` or `NAME://TABLE`); `key` names the option or setting
    /// it came from, for errors.
    pub fn parse(url: &str, key: &str) -> Result<Self> {
        let (name, table) = match url.split_once("://") {
            Some((name, table)) => (name, Some(table).filter(|t| !t.is_empty())),
            None => (url, None),
        };
        SinkTarget::named(name, table, key, key)
    }

    /// The target a job file's `[sink]` names: `type` with `table`, checked as the kind takes
    /// them.
    pub fn from_config(kind: &str, table: Option<&str>) -> Result<Self> {
        SinkTarget::named(kind, table, "sink.type", "sink.table")
    }

    fn named(name: &str, table: Option<&str>, kind_key: &str, table_key: &str) -> Result<Self> {
        if name == "none" {
            return Ok(SinkTarget::None);
        }
        let kind = super::kind(name)
            .ok_or_else(|| Error::config(kind_key, format!("{name:?} is not a sink ({})", super::kind_names())))?;
        if let Some(why) = kind.refuse_table(table) {
            return Err(Error::config(table_key, why));
        }
        Ok(SinkTarget::Table { kind, table: table.map(str::to_string) })
    }

    /// The kind's name (`none` for no sink).
    pub fn kind_name(&self) -> &'static str {
        match self {
            SinkTarget::None => "none",
            SinkTarget::Table { kind, .. } => kind.name(),
        }
    }

    /// The table, when the target names one.
    pub fn table(&self) -> Option<&str> {
        match self {
            SinkTarget::None => None,
            SinkTarget::Table { table, .. } => table.as_deref(),
        }
    }

    /// Whether records are written to a table at all.
    pub fn writes(&self) -> bool {
        *self != SinkTarget::None
    }

    /// Whether workers on other hosts write the same table.
    pub fn shared(&self) -> bool {
        match self {
            SinkTarget::None => true,
            SinkTarget::Table { kind, .. } => kind.shared(),
        }
    }

    /// The table as a URL on a cloud service, for allow lists; `None` for a local or no sink.
    pub fn remote_url(&self) -> Option<String> {
        match self {
            SinkTarget::None => None,
            SinkTarget::Table { kind, table } => kind.remote_url(table.as_deref()?),
        }
    }
}

/// Whether `s` is safe as an unquoted SQL identifier (a table's name): letters, digits and
/// `_`, not starting with a digit.
pub fn is_sql_ident(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// Where records go.
#[derive(Debug, Clone)]
pub struct SinkSpec {
    /// The sink.
    pub target: SinkTarget,
    /// Records per write.
    pub batch: usize,
    /// Whether writes keep the newest version of an item (see `[sink] ordered`).
    pub ordered: bool,
    /// Processes writing the table at once, sharing a provisioned capacity (`[sink] writers`).
    pub writers: std::num::NonZeroU32,
    /// Where every written record is also published.
    pub publish: Option<crate::model::config::PublishTarget>,
    /// The database of a table in a database server (`[sink] database`, a PostgreSQL URL);
    /// `None`: the target's own, or the environment's.
    pub database: Option<String>,
    /// Requests a writer keeps in flight (`[sink] in_flight`); `None`: the default of the
    /// mode ([`SinkSpec::in_flight`]).
    pub in_flight: Option<std::num::NonZeroUsize>,
}

/// The most requests in flight `[sink] in_flight` takes.
pub const MAX_IN_FLIGHT: usize = 256;
/// Requests in flight of an ordered DynamoDB sink (conditional `PutItem`s) by default: the
/// fewest whose time per chunk is within 1.5× of the CPU-bound floor at 1,769 MB on the
/// measured curve (BENCHMARKS.md, "Lambda time and the sink's concurrency").
pub const DEFAULT_IN_FLIGHT_ORDERED: usize = 64;
/// `BatchWriteItem`s in flight of an unordered DynamoDB sink by default (by the same rule).
pub const DEFAULT_IN_FLIGHT_UNORDERED: usize = 8;

impl SinkSpec {
    /// Requests a writer keeps in flight: `[sink] in_flight`, or the mode's default.
    pub fn in_flight(&self) -> usize {
        match (self.in_flight, self.ordered) {
            (Some(n), _) => n.get(),
            (None, true) => DEFAULT_IN_FLIGHT_ORDERED,
            (None, false) => DEFAULT_IN_FLIGHT_UNORDERED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_job_files_name_the_same_targets() {
        for (url, kind, table) in [
            ("none", "none", None),
            ("sqlite", "sqlite", None),
            ("sqlite://orders", "sqlite", Some("orders")),
            ("dynamodb://orders", "dynamodb", Some("orders")),
        ] {
            let parsed = SinkTarget::parse(url, "--sink").unwrap();
            assert_eq!(parsed, SinkTarget::from_config(kind, table).unwrap(), "{url}");
            assert_eq!((parsed.kind_name(), parsed.table()), (kind, table), "{url}");
        }
        let err = SinkTarget::parse("mysql://x", "--sink").unwrap_err().to_string();
        assert!(err.contains("--sink") && err.contains("sqlite, dynamodb, postgres or none"), "{err}");
        let err = SinkTarget::from_config("mysql", None).unwrap_err().to_string();
        assert!(err.contains("sink.type"), "{err}");
        let err = SinkTarget::from_config("postgres", None).unwrap_err().to_string();
        assert!(err.contains("sink.table"), "a Postgres sink names its table: {err}");
        assert!(SinkTarget::from_config("sqlite", Some("a; drop")).unwrap_err().to_string().contains("sink.table"));
    }

    #[cfg(feature = "aws")]
    #[test]
    fn a_dynamodb_table_must_be_named_and_named_as_dynamodb_names_tables() {
        let err = SinkTarget::from_config("dynamodb", None).unwrap_err().to_string();
        assert!(err.contains("sink.table"), "{err}");
        assert!(SinkTarget::from_config("dynamodb", Some("ab")).is_err());
        assert!(SinkTarget::parse("dynamodb://", "--sink").unwrap_err().to_string().contains("--sink"));
    }

    #[test]
    fn only_a_sqlite_table_is_not_shared_and_only_dynamodb_is_remote() {
        let sqlite = SinkTarget::parse("sqlite", "--sink").unwrap();
        assert!(!sqlite.shared() && sqlite.writes() && SinkTarget::None.shared() && !SinkTarget::None.writes());
        assert_eq!(sqlite.remote_url(), None);
        #[cfg(feature = "aws")]
        {
            let dynamo = SinkTarget::parse("dynamodb://tab", "--sink").unwrap();
            assert!(dynamo.shared() && dynamo.writes());
            assert_eq!(dynamo.remote_url().as_deref(), Some("dynamodb://tab"));
        }
    }
}

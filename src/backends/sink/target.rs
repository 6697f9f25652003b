//! The kinds of sink, and everything that depends only on the kind: how a URL or a job file
//! names one, its table, whether every host can write it, whether it is on AWS. The one place
//! that knows the kinds; [`crate::backends::sink::open`] opens them and [`crate::backends::sink::reach`] checks
//! them.

use crate::error::{Error, Result};
pub use crate::model::config::SinkKind;

/// Where a job's records go, as a URL names it: `none`, `sqlite` (or `sqlite://TABLE`), or
/// `dynamodb://TABLE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// Outputs only.
    None,
    /// A table in the data directory's SQLite database (default name: from the first input).
    Sqlite {
        /// The table, when named.
        table: Option<String>,
    },
    /// A DynamoDB table (feature `aws`).
    Dynamodb {
        /// The table.
        table: String,
    },
}

impl SinkTarget {
    /// Parse a sink URL; `key` names the option or setting it came from, for the error.
    pub fn parse(url: &str, key: &str) -> Result<Self> {
        match url.split_once("://") {
            Some(("dynamodb", table)) if !table.is_empty() => Ok(SinkTarget::Dynamodb { table: table.to_string() }),
            Some(("sqlite", table)) => {
                Ok(SinkTarget::Sqlite { table: Some(table.to_string()).filter(|t| !t.is_empty()) })
            }
            None if url == "sqlite" => Ok(SinkTarget::Sqlite { table: None }),
            None if url == "none" => Ok(SinkTarget::None),
            _ => Err(Error::config(key, format!("{url:?} is not a sink (dynamodb://TABLE, sqlite or none)"))),
        }
    }
}

impl SinkTarget {
    /// The target a job file's `[sink]` names: `kind` with `table` (checked as a name the
    /// kind accepts; a DynamoDB sink must name its table).
    pub fn from_config(kind: SinkKind, table: Option<&str>) -> Result<Self> {
        if let Some(table) = table {
            let dynamo_name = |t: &str| {
                (3..=255).contains(&t.len()) && t.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            };
            if kind == SinkKind::Dynamodb && !dynamo_name(table) {
                return Err(Error::config(
                    "sink.table",
                    format!("{table:?} is not a DynamoDB table name (3 to 255 of letters, digits, _ . -)"),
                ));
            }
            if kind != SinkKind::Dynamodb && !is_sql_ident(table) {
                return Err(Error::config(
                    "sink.table",
                    format!("{table:?} is not a plain table name (letters, digits, _)"),
                ));
            }
        }
        Ok(match kind {
            SinkKind::None => SinkTarget::None,
            SinkKind::Sqlite => SinkTarget::Sqlite { table: table.map(str::to_string) },
            SinkKind::Dynamodb => SinkTarget::Dynamodb {
                table: table
                    .ok_or_else(|| Error::config("sink.table", "a dynamodb sink needs the name of its table"))?
                    .to_string(),
            },
        })
    }

    /// The kind.
    pub fn kind(&self) -> SinkKind {
        match self {
            SinkTarget::None => SinkKind::None,
            SinkTarget::Sqlite { .. } => SinkKind::Sqlite,
            SinkTarget::Dynamodb { .. } => SinkKind::Dynamodb,
        }
    }

    /// The table, when the target names one (a SQLite sink's default is named after the
    /// job's first input).
    pub fn table(&self) -> Option<&str> {
        match self {
            SinkTarget::None => None,
            SinkTarget::Sqlite { table } => table.as_deref(),
            SinkTarget::Dynamodb { table } => Some(table),
        }
    }

    /// Whether records are written to a table at all.
    pub fn writes(&self) -> bool {
        *self != SinkTarget::None
    }

    /// Whether workers on other hosts write the same table: not a SQLite table, which lives
    /// in one machine's data directory.
    pub fn shared(&self) -> bool {
        !matches!(self, SinkTarget::Sqlite { .. })
    }

    /// The table as a URL on a cloud service, for allow lists and for knowing that the cloud
    /// configuration is needed; `None` for an embedded or no sink.
    pub fn remote_url(&self) -> Option<String> {
        match self {
            SinkTarget::Dynamodb { table } => Some(format!("dynamodb://{table}")),
            _ => None,
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
    /// Where every written record is also published.
    pub publish: Option<crate::model::config::PublishTarget>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_job_files_name_the_same_targets() {
        for (url, kind, table) in [
            ("none", SinkKind::None, None),
            ("sqlite", SinkKind::Sqlite, None),
            ("sqlite://orders", SinkKind::Sqlite, Some("orders")),
            ("dynamodb://orders", SinkKind::Dynamodb, Some("orders")),
        ] {
            let parsed = SinkTarget::parse(url, "--sink").unwrap();
            assert_eq!(parsed, SinkTarget::from_config(kind, table).unwrap(), "{url}");
            assert_eq!((parsed.kind(), parsed.table()), (kind, table), "{url}");
        }
        assert!(SinkTarget::parse("postgres://x", "--sink").unwrap_err().to_string().contains("--sink"));
        let err = SinkTarget::from_config(SinkKind::Dynamodb, None).unwrap_err().to_string();
        assert!(err.contains("sink.table"), "{err}");
        assert!(SinkTarget::from_config(SinkKind::Sqlite, Some("a; drop")).is_err());
        assert!(SinkTarget::from_config(SinkKind::Dynamodb, Some("ab")).is_err());
    }

    #[test]
    fn only_a_sqlite_table_is_not_shared_and_only_dynamodb_is_remote() {
        let sqlite = SinkTarget::Sqlite { table: None };
        let dynamo = SinkTarget::Dynamodb { table: "t".into() };
        assert!(!sqlite.shared() && dynamo.shared() && SinkTarget::None.shared());
        assert!(sqlite.writes() && dynamo.writes() && !SinkTarget::None.writes());
        assert_eq!(dynamo.remote_url().as_deref(), Some("dynamodb://t"));
        assert_eq!(sqlite.remote_url(), None);
    }
}

//! PostgreSQL connections (feature `postgres`), shared by the sink and the reference.
//!
//! A database is named by a URL (`postgres://USER@HOST:PORT/DATABASE?sslmode=…`, without a
//! password), or by nothing: then, as `psql` does, by the standard environment variables
//! (`PGHOST`, `PGPORT`, `PGDATABASE`, `PGUSER`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`, `PGSERVICE`,
//! which also fill what a URL leaves out). The password comes from the URL, `PGPASSWORD`, or
//! the password file (`PGPASSFILE`, default `~/.pgpass`); it is never shown: every URL this
//! module prints has it removed. TLS is used when the server offers it (`sslmode=prefer`,
//! the default; `require` insists, `disable` never asks) and the server's certificate is always
//! verified, against the system's roots and the CA in `PGSSLROOTCERT` if set: a server with a
//! certificate nobody vouches for is refused, never trusted blindly.

use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::{Host, SslMode};

use crate::error::{Backend, Error, Result};

/// Connections to one database, made as they are needed (at most [`MAX_CONNECTIONS`]).
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    /// Where it is, for messages: `USER@HOST:PORT/DATABASE`, no password.
    shown: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Database({})", self.shown)
    }
}

/// The most connections a process opens to one database.
pub const MAX_CONNECTIONS: usize = 8;

/// `url` with any password removed, for messages.
pub fn redacted(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (auth, tail) = match rest.find(['/', '?']) {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let auth = match auth.rsplit_once('@') {
                Some((user, host)) => format!("{}@{host}", user.split(':').next().unwrap_or_default()),
                None => auth.to_string(),
            };
            // A password as a query parameter goes too.
            let tail: String = match tail.split_once('?') {
                Some((path, query)) => {
                    let kept: Vec<&str> = query.split('&').filter(|p| !p.starts_with("password=")).collect();
                    if kept.is_empty() {
                        path.to_string()
                    } else {
                        format!("{path}?{}", kept.join("&"))
                    }
                }
                None => tail.to_string(),
            };
            format!("{scheme}://{auth}{tail}")
        }
        None => url.to_string(),
    }
}

/// A sink's or reference's target after `postgres://`, split: the database URL it names,
/// if it names one (`USER@HOST:PORT/DATABASE/TABLE`), and the table (`TABLE`, `SCHEMA.TABLE`).
pub fn split_target(target: &str) -> (Option<String>, String) {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    match path.rsplit_once('/') {
        Some((database, table)) => {
            let url = format!("postgres://{database}{}", query.map(|q| format!("?{q}")).unwrap_or_default());
            (Some(url), table.to_string())
        }
        None => (None, path.to_string()),
    }
}

/// `name` as a quoted SQL identifier.
pub fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table name, `NAME` or `SCHEMA.NAME`, each part quoted: as every statement names it, so
/// that `Orders` is the table `Orders`, not `orders`.
pub fn quoted_table(table: &str) -> String {
    table.split('.').map(quoted).collect::<Vec<_>>().join(".")
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Its name.
    pub name: String,
    /// Its type without modifiers (`numeric`, `character varying`, `bigint`).
    pub base_type: String,
    /// Its type as declared (`numeric(12,2)`, `character varying(10)`).
    pub declared: String,
}

/// Why `url` will not do, if it holds a password: a job's definition travels to workers and
/// into its records, so the password must come from `PGPASSWORD` or a password file.
pub fn refuse_password(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let auth = rest.split(['/', '?']).next().unwrap_or_default();
    let in_auth = auth.rsplit_once('@').is_some_and(|(user, _)| user.contains(':'));
    let in_query = rest.split_once('?').is_some_and(|(_, q)| q.split('&').any(|p| p.starts_with("password=")));
    (in_auth || in_query).then(|| {
        format!(
            "{} holds a password: give it in PGPASSWORD or a password file (PGPASSFILE, ~/.pgpass) instead, \
             so that it never lands in a job's definition, summary or logs",
            redacted(url)
        )
    })
}

impl Database {
    /// The database `url` names (or the environment's, for `None`); `key` names the setting it
    /// came from, for errors. Nothing is connected yet.
    pub fn open(url: Option<&str>, key: &str) -> Result<Database> {
        if let Some(why) = url.and_then(refuse_password) {
            return Err(Error::config(key, why));
        }
        let shown_url = url.map(redacted);
        let bad = |why: String| {
            Error::config(key, format!("{}: {why}", shown_url.as_deref().unwrap_or("the PG* environment")))
        };
        let mut config = pg_client_config::load_config(url).map_err(|e| bad(without_password(&e.to_string())))?;
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
        }
        if !url.is_some_and(|u| u.contains("sslmode=")) {
            match std::env::var("PGSSLMODE").as_deref() {
                Ok("disable") => config.ssl_mode(SslMode::Disable),
                Ok("require" | "verify-ca" | "verify-full") => config.ssl_mode(SslMode::Require),
                Ok("prefer" | "allow") | Err(_) => config.ssl_mode(SslMode::Prefer),
                Ok(other) => return Err(bad(format!("PGSSLMODE={other} is not a sslmode"))),
            };
        }
        if config.get_hosts().is_empty() {
            return Err(bad("names no host: give one in the URL or PGHOST".into()));
        }
        let host = match &config.get_hosts()[0] {
            Host::Tcp(h) => h.clone(),
            Host::Unix(p) => p.display().to_string(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let shown = format!(
            "{}@{host}:{port}/{}",
            config.get_user().unwrap_or_default(),
            config.get_dbname().or(config.get_user()).unwrap_or_default()
        );
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(key)?);
        let manager = Manager::from_config(config, tls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(MAX_CONNECTIONS)
            .build()
            .map_err(|e| Error::internal("postgres", "the connection pool", e))?;
        Ok(Database { pool, shown })
    }

    /// A connection, from the pool or new.
    pub async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            // The whole chain: the pool's error says little, its sources say why.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            if why.contains("certificate") {
                why.push_str(
                    " (a server whose certificate comes from a private CA: name the CA's file in PGSSLROOTCERT)",
                );
            }
            Error::backend(Backend::Postgres, format!("cannot connect to {}", self.shown), without_password(&why))
        })
    }

    /// The columns of `table` (`NAME` or `SCHEMA.NAME`, found as [`quoted_table`] names it), in
    /// order; none when there is no such table.
    pub async fn columns(&self, client: &tokio_postgres::Client, table: &str) -> Result<Vec<Column>> {
        let sql = "SELECT attname::text, format_type(atttypid, NULL), format_type(atttypid, atttypmod) \
                   FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped \
                   ORDER BY attnum";
        let rows = client
            .query(sql, &[&quoted_table(table)])
            .await
            .map_err(|e| self.error(format!("reading the columns of {table}"), e))?;
        Ok(rows.iter().map(|r| Column { name: r.get(0), base_type: r.get(1), declared: r.get(2) }).collect())
    }

    /// Where it is: `USER@HOST:PORT/DATABASE`.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// An error of the server's, in a message that says what was being done.
    pub fn error(&self, what: impl std::fmt::Display, e: tokio_postgres::Error) -> Error {
        let detail = match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        };
        Error::backend(Backend::Postgres, format!("{what} on {}", self.shown), without_password(&detail))
    }
}

/// A message with anything after `password=` removed, however a library phrased it.
fn without_password(message: &str) -> String {
    match message.find("password") {
        Some(i) => format!("{} (password details removed)", &message[..i].trim_end()),
        None => message.to_string(),
    }
}

/// TLS that verifies the server: the system's roots and `PGSSLROOTCERT`'s certificates.
fn tls_config(key: &str) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Ok(path) = std::env::var("PGSSLROOTCERT") {
        let pem = std::fs::read(&path).map_err(|e| Error::config("PGSSLROOTCERT", format!("{path}: {e}")))?;
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| Error::config("PGSSLROOTCERT", format!("{path}: {e}")))?;
            roots.add(cert).map_err(|e| Error::config("PGSSLROOTCERT", format!("{path}: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::config(key, format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_names_a_table_and_perhaps_its_database() {
        assert_eq!(split_target("orders"), (None, "orders".into()));
        assert_eq!(split_target("sales.orders"), (None, "sales.orders".into()));
        assert_eq!(
            split_target("ann@db.internal:5432/warehouse/orders?sslmode=require"),
            (Some("postgres://ann@db.internal:5432/warehouse?sslmode=require".into()), "orders".into())
        );
    }

    #[test]
    fn a_shown_url_never_holds_its_password() {
        assert_eq!(
            redacted("postgres://ann:s3cret@db:5432/w?sslmode=require"),
            "postgres://ann@db:5432/w?sslmode=require"
        );
        assert_eq!(redacted("postgres://db/w?password=s3cret&sslmode=disable"), "postgres://db/w?sslmode=disable");
        assert_eq!(redacted("postgres://db/w?password=s3cret"), "postgres://db/w");
        assert_eq!(redacted("postgres://ann@db"), "postgres://ann@db");
        assert!(!without_password("password authentication failed for user ann: s3cret").contains("s3cret"));
        for url in ["postgres://ann:s3cret@db/w", "postgres://ann@db/w?password=s3cret"] {
            let err = Database::open(Some(url), "sink.database").unwrap_err().to_string();
            assert!(err.contains("sink.database") && err.contains("PGPASSWORD") && !err.contains("s3cret"), "{err}");
        }
        assert!(refuse_password("postgres://ann@db:5432/w?sslmode=require").is_none());
    }
}

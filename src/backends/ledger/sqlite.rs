//! SQLite ledger: the embedded default, in the data directory's database file.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::{check_checkpoint_size, Checkpoint, ChunkRecord, JobRecord, JobStatus, LedgerCommit, StateStore};
use crate::error::{Error, Result};

/// A ledger in three SQLite tables, `sluicebox_jobs`, `sluicebox_chunks` and
/// `sluicebox_checkpoints`.
#[derive(Debug, Clone)]
pub struct SqliteLedger {
    conn: Arc<Mutex<Connection>>,
}

/// Open a connection tuned for many small transactions from several processes.
pub fn connect(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)
        .map_err(|e| Error::backend(crate::error::Backend::Sqlite, format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(std::time::Duration::from_secs(60))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl SqliteLedger {
    /// Open (and create if needed) the ledger tables in the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let conn = connect(path)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS sluicebox_jobs (
                 job_id TEXT PRIMARY KEY,
                 status TEXT NOT NULL,
                 total_chunks INTEGER,
                 done_chunks INTEGER NOT NULL DEFAULT 0,
                 created_ms INTEGER NOT NULL,
                 planned_ms INTEGER
             );
             CREATE TABLE IF NOT EXISTS sluicebox_chunks (
                 job_id TEXT NOT NULL,
                 idx INTEGER NOT NULL,
                 body TEXT NOT NULL,
                 PRIMARY KEY (job_id, idx)
             );
             CREATE TABLE IF NOT EXISTS sluicebox_checkpoints (
                 name TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 state TEXT NOT NULL
             );",
        )?;
        // Ledgers written before the gather lease had an end lack its column.
        let has_lease: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('sluicebox_jobs') WHERE name = 'lease_until_ms'")?
            .exists([])?;
        if !has_lease {
            conn.execute_batch("ALTER TABLE sluicebox_jobs ADD COLUMN lease_until_ms INTEGER NOT NULL DEFAULT 0")?;
        }
        // Ledgers written before commits added their counts lack these.
        let has_counts: bool =
            conn.prepare("SELECT 1 FROM pragma_table_info('sluicebox_jobs') WHERE name = 'records_done'")?.exists([])?;
        if !has_counts {
            conn.execute_batch(
                "ALTER TABLE sluicebox_jobs ADD COLUMN records_done INTEGER NOT NULL DEFAULT 0;
                 ALTER TABLE sluicebox_jobs ADD COLUMN rejected INTEGER NOT NULL DEFAULT 0;",
            )?;
        }
        Ok(SqliteLedger { conn: Arc::new(Mutex::new(conn)) })
    }

    /// Run `f` on the connection on a blocking thread.
    async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "ledger task failed", e))?
    }
}

fn job_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<JobRecord> {
    let status: String = row.get(1)?;
    let status = JobStatus::parse(&status).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            1,
            rusqlite::types::Type::Text,
            format!("unknown job status {status:?}").into(),
        )
    })?;
    Ok(JobRecord {
        job_id: row.get(0)?,
        status,
        total_chunks: row.get(2)?,
        done_chunks: row.get(3)?,
        created_ms: row.get(4)?,
        planned_ms: row.get(5)?,
        lease_until_ms: row.get(6)?,
        records_done: row.get::<_, i64>(7)?.max(0) as u64,
        rejected: row.get::<_, i64>(8)?.max(0) as u64,
    })
}

fn chunk_from_body(body: &str) -> Result<ChunkRecord> {
    serde_json::from_str(body).map_err(|e| Error::backend(crate::error::Backend::Sqlite, "corrupt chunk record", e))
}

#[async_trait]
impl StateStore for SqliteLedger {
    async fn create_job(&self, job: &JobRecord) -> Result<bool> {
        let job = job.clone();
        self.call(move |c| {
            let n = c.execute(
                "INSERT INTO sluicebox_jobs (job_id, status, total_chunks, done_chunks, created_ms, planned_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (job_id) DO NOTHING",
                params![
                    job.job_id,
                    job.status.as_str(),
                    job.total_chunks,
                    job.done_chunks,
                    job.created_ms,
                    job.planned_ms
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let id = job_id.to_string();
        self.call(move |c| {
            Ok(c.query_row(
                "SELECT job_id, status, total_chunks, done_chunks, created_ms, planned_ms, lease_until_ms,
                        records_done, rejected
                 FROM sluicebox_jobs WHERE job_id = ?1",
                [&id],
                job_from_row,
            )
            .optional()?)
        })
        .await
    }

    async fn set_planned(&self, job_id: &str, total_chunks: u32, planned_ms: i64) -> Result<bool> {
        let id = job_id.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sluicebox_jobs SET status = 'running', total_chunks = ?2, planned_ms = ?3
                 WHERE job_id = ?1 AND status = 'planning'",
                params![id, total_chunks, planned_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn commit_chunk(&self, job_id: &str, chunk: &ChunkRecord) -> Result<LedgerCommit> {
        let id = job_id.to_string();
        let (index, generation) = (chunk.index, chunk.generation);
        let (seen, rejected) = (chunk.counts.total() as i64, chunk.counts.rejected as i64);
        let body = serde_json::to_string(chunk)
            .map_err(|e| Error::backend(crate::error::Backend::Sqlite, "encode chunk record", e))?;
        self.call(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let job: Option<(Option<u32>, i64)> = tx
                .query_row("SELECT total_chunks, created_ms FROM sluicebox_jobs WHERE job_id = ?1", [&id], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let total = match job {
                None => return Err(Error::Conflict(format!("job {id} does not exist"))),
                Some((_, created)) if created != generation => {
                    return Err(Error::Conflict(format!("job {id} was made anew since this chunk's run began")))
                }
                Some((None, _)) => return Err(Error::Conflict(format!("job {id} is not planned yet"))),
                Some((Some(t), _)) => t,
            };
            if index >= total {
                return Err(Error::Conflict(format!("chunk {index} is outside job {id}'s plan of {total} chunks")));
            }
            let inserted = tx.execute(
                "INSERT INTO sluicebox_chunks (job_id, idx, body) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![id, index, body],
            )?;
            if inserted == 0 {
                return Ok(LedgerCommit::Duplicate);
            }
            let (done, records, rejected): (u32, i64, i64) = tx.query_row(
                "UPDATE sluicebox_jobs SET done_chunks = done_chunks + 1, records_done = records_done + ?2,
                     rejected = rejected + ?3
                 WHERE job_id = ?1 RETURNING done_chunks, records_done, rejected",
                params![id, seen, rejected],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?;
            tx.commit()?;
            let (records, rejected) = (records.max(0) as u64, rejected.max(0) as u64);
            Ok(LedgerCommit::First { done, total, finalize: done == total, records, rejected })
        })
        .await
    }

    async fn get_chunk(&self, job_id: &str, index: u32) -> Result<Option<ChunkRecord>> {
        let id = job_id.to_string();
        self.call(move |c| {
            let body: Option<String> = c
                .query_row(
                    "SELECT body FROM sluicebox_chunks WHERE job_id = ?1 AND idx = ?2",
                    params![id, index],
                    |r| r.get(0),
                )
                .optional()?;
            body.as_deref().map(chunk_from_body).transpose()
        })
        .await
    }

    async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRecord>> {
        let id = job_id.to_string();
        self.call(move |c| {
            let mut stmt = c.prepare_cached("SELECT body FROM sluicebox_chunks WHERE job_id = ?1 ORDER BY idx")?;
            let bodies = stmt.query_map([&id], |r| r.get::<_, String>(0))?.collect::<rusqlite::Result<Vec<_>>>()?;
            bodies.iter().map(|b| chunk_from_body(b)).collect()
        })
        .await
    }

    async fn take_gather_lease(&self, job_id: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        let id = job_id.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sluicebox_jobs SET status = 'gathering', lease_until_ms = ?3
                 WHERE job_id = ?1 AND (status = 'running' OR (status = 'gathering' AND lease_until_ms < ?2))",
                params![id, now_ms, until_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn renew_gather_lease(&self, job_id: &str, held_ms: i64, until_ms: i64) -> Result<bool> {
        let id = job_id.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sluicebox_jobs SET lease_until_ms = ?3
                 WHERE job_id = ?1 AND status = 'gathering' AND lease_until_ms = ?2",
                params![id, held_ms, until_ms],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn set_status(&self, job_id: &str, from: JobStatus, to: JobStatus) -> Result<bool> {
        let id = job_id.to_string();
        self.call(move |c| {
            let n = c.execute(
                "UPDATE sluicebox_jobs SET status = ?3 WHERE job_id = ?1 AND status = ?2",
                params![id, from.as_str(), to.as_str()],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn delete_job(&self, job_id: &str) -> Result<()> {
        let id = job_id.to_string();
        self.call(move |c| {
            let tx = c.transaction()?;
            tx.execute("DELETE FROM sluicebox_chunks WHERE job_id = ?1", [&id])?;
            tx.execute("DELETE FROM sluicebox_jobs WHERE job_id = ?1", [&id])?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn get_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let name = name.to_string();
        self.call(move |c| {
            let row: Option<(i64, String)> = c
                .query_row("SELECT version, state FROM sluicebox_checkpoints WHERE name = ?1", [&name], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            row.map(|(version, state)| {
                let version = u64::try_from(version).map_err(|e| {
                    Error::backend(
                        crate::error::Backend::Sqlite,
                        format!("stream {name:?} checkpoint has version {version}"),
                        e,
                    )
                })?;
                Ok(Checkpoint { version, state })
            })
            .transpose()
        })
        .await
    }

    async fn put_checkpoint(&self, name: &str, expected: u64, state: &str) -> Result<bool> {
        check_checkpoint_size(name, state)?;
        // No stored version is beyond i64::MAX, so such an expectation cannot hold.
        let Ok(expected) = i64::try_from(expected) else { return Ok(false) };
        let (name, state) = (name.to_string(), state.to_string());
        self.call(move |c| {
            // One statement either way, so the check and the write are atomic across
            // connections (and processes) as well as within this one.
            let n = if expected == 0 {
                c.execute(
                    "INSERT INTO sluicebox_checkpoints (name, version, state) VALUES (?1, 1, ?2)
                     ON CONFLICT (name) DO NOTHING",
                    params![name, state],
                )?
            } else {
                c.execute(
                    "UPDATE sluicebox_checkpoints SET version = version + 1, state = ?3
                     WHERE name = ?1 AND version = ?2",
                    params![name, expected, state],
                )?
            };
            Ok(n == 1)
        })
        .await
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        let name = name.to_string();
        self.call(move |c| {
            c.execute("DELETE FROM sluicebox_checkpoints WHERE name = ?1", [&name])?;
            Ok(())
        })
        .await
    }
}

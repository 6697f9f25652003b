//! DynamoDB ledger (feature `aws`): one table, a job item and one item per committed chunk.
//!
//! Items share the partition key `pk = "job#<id>"`; the sort key is `job` for the job and
//! `chunk#<index, zero-padded>` for chunks. A commit writes one chunk item and adds one to
//! the job's `done` in a single transaction, so the job item is written once per chunk, never
//! per record. Finalizing is a second conditional write (`done = total` and not yet
//! finalized), which exactly one committer wins.
//!
//! Items carry `expires_at` (seconds since the Unix epoch) for the table's time to live: a job
//! item from when it completes or fails ([`RETENTION`] later), a chunk item from its commit
//! (twice that later), so that a job's chunks outlive its job item (a late task of a job whose
//! item is gone is dropped; of a job whose chunks were gone, it would be worked again).
//!
//! A stream consumer's checkpoint is the item `pk = "stream#<name>"`, `sk = "checkpoint"`
//! with `version` and `state`, replaced whole by a `PutItem` conditional on the version. It
//! has no `expires_at`: a consumer's position must outlive any pause in its stream.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, Put, TransactWriteItem, Update, WriteRequest};
use aws_sdk_dynamodb::Client;

use super::{check_checkpoint_size, Checkpoint, ChunkRecord, JobRecord, JobStatus, LedgerCommit, StateStore};
use crate::backends::aws::dynamodb as ddb;
use crate::error::{Error, Result};

/// How long a finished job's items stay in the table (with time to live on `expires_at`).
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);

/// `expires_at` for an item that may go `after` from now.
fn expires(after: std::time::Duration) -> AttributeValue {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    n((now + after).as_secs())
}

/// A ledger in one DynamoDB table with a string partition key `pk` and sort key `sk`.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn pk(job_id: &str) -> AttributeValue {
    s(format!("job#{job_id}"))
}

fn checkpoint_pk(name: &str) -> AttributeValue {
    s(format!("stream#{name}"))
}

const CHECKPOINT_SK: &str = "checkpoint";

fn chunk_sk(index: u32) -> AttributeValue {
    s(format!("chunk#{index:010}"))
}

fn num<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|v| v.parse().ok())
}

impl DynamoLedger {
    /// Use the ledger table `table`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoLedger { client, table: table.into() }
    }

    /// Create the ledger table (on-demand capacity) if it does not exist, and wait until it
    /// is active.
    pub async fn create_table(client: &Client, table: &str) -> Result<()> {
        Self::create_table_with(client, table, ddb::Capacity::OnDemand).await
    }

    /// [`DynamoLedger::create_table`] billed as `capacity` says.
    pub async fn create_table_with(client: &Client, table: &str, capacity: ddb::Capacity) -> Result<()> {
        ddb::create_table_with(client, table, &["pk", "sk"], capacity).await
    }

    async fn get(&self, job_id: &str, sk: AttributeValue) -> Result<Option<Item>> {
        self.get_item(pk(job_id), sk).await
    }

    async fn get_item(&self, pk: AttributeValue, sk: AttributeValue) -> Result<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| ddb::error(format!("GetItem on {}", self.table), e.into_service_error()))?;
        Ok(out.item)
    }

    /// Conditional update of the job item; `false` when the condition does not hold.
    async fn update_job(
        &self,
        job_id: &str,
        update: &str,
        condition: &str,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<bool> {
        let mut req = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(job_id))
            .key("sk", s("job"))
            .update_expression(update)
            .condition_expression(condition);
        for (k, v) in names {
            req = req.expression_attribute_names(*k, *v);
        }
        for (k, v) in values {
            req = req.expression_attribute_values(k, v);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(ddb::error(format!("UpdateItem on {}", self.table), e.into_service_error())),
        }
    }

    async fn chunk_items(&self, job_id: &str) -> Result<Vec<Item>> {
        let mut pages = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :chunk)")
            .expression_attribute_values(":pk", pk(job_id))
            .expression_attribute_values(":chunk", s("chunk#"))
            .consistent_read(true)
            .into_paginator()
            .items()
            .send();
        let mut items = Vec::new();
        while let Some(item) = pages.next().await {
            items.push(item.map_err(|e| ddb::error(format!("Query on {}", self.table), e.into_service_error()))?);
        }
        Ok(items)
    }
}

fn checkpoint_from_item(name: &str, item: &Item) -> Result<Checkpoint> {
    let corrupt = |what: &str| {
        Error::backend(crate::error::Backend::Dynamodb, format!("stream {name:?} checkpoint"), what.to_string())
    };
    let version = num(item, "version").ok_or_else(|| corrupt("no numeric version attribute"))?;
    let state = item.get("state").and_then(|v| v.as_s().ok()).ok_or_else(|| corrupt("no state attribute"))?;
    Ok(Checkpoint { version, state: state.clone() })
}

fn chunk_from_item(item: &Item) -> Result<ChunkRecord> {
    let body = item
        .get("body")
        .and_then(|b| b.as_s().ok())
        .ok_or_else(|| Error::backend(crate::error::Backend::Dynamodb, "corrupt chunk item", "no body attribute"))?;
    serde_json::from_str(body).map_err(|e| Error::backend(crate::error::Backend::Dynamodb, "corrupt chunk item", e))
}

#[async_trait]
impl StateStore for DynamoLedger {
    async fn create_job(&self, job: &JobRecord) -> Result<bool> {
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk(&job.job_id))
            .item("sk", s("job"))
            .item("job_status", s(job.status.as_str()))
            .item("done", n(job.done_chunks))
            .item("created_ms", n(job.created_ms))
            .condition_expression("attribute_not_exists(pk)");
        if let Some(total) = job.total_chunks {
            req = req.item("total", n(total));
        }
        if let Some(p) = job.planned_ms {
            req = req.item("planned_ms", n(p));
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(ddb::error(format!("PutItem on {}", self.table), e.into_service_error())),
        }
    }

    async fn get_job(&self, job_id: &str) -> Result<Option<JobRecord>> {
        let Some(item) = self.get(job_id, s("job")).await? else { return Ok(None) };
        let status = item.get("job_status").and_then(|v| v.as_s().ok()).and_then(|v| JobStatus::parse(v));
        let status = status.ok_or_else(|| {
            Error::backend(crate::error::Backend::Dynamodb, format!("job {job_id}"), "corrupt job status")
        })?;
        Ok(Some(JobRecord {
            job_id: job_id.to_string(),
            status,
            total_chunks: num(&item, "total"),
            done_chunks: num(&item, "done").unwrap_or(0),
            created_ms: num(&item, "created_ms").unwrap_or(0),
            planned_ms: num(&item, "planned_ms"),
            lease_until_ms: num(&item, "lease_until").unwrap_or(0),
            records_done: num(&item, "records_done").unwrap_or(0),
            rejected: num(&item, "rejected_records").unwrap_or(0),
        }))
    }

    async fn set_planned(&self, job_id: &str, total_chunks: u32, planned_ms: i64) -> Result<bool> {
        self.update_job(
            job_id,
            "SET #st = :running, #total = :total, planned_ms = :planned",
            "#st = :planning",
            &[("#st", "job_status"), ("#total", "total")],
            vec![
                (":running", s(JobStatus::Running.as_str())),
                (":planning", s(JobStatus::Planning.as_str())),
                (":total", n(total_chunks)),
                (":planned", n(planned_ms)),
            ],
        )
        .await
    }

    async fn commit_chunk(&self, job_id: &str, chunk: &ChunkRecord) -> Result<LedgerCommit> {
        let body = serde_json::to_string(chunk)
            .map_err(|e| Error::backend(crate::error::Backend::Dynamodb, "encode chunk record", e))?;
        let put = Put::builder()
            .table_name(&self.table)
            .item("pk", pk(job_id))
            .item("sk", chunk_sk(chunk.index))
            .item("body", s(body))
            .item("expires_at", expires(2 * RETENTION))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(|e| ddb::error("chunk put", e))?;
        let count = Update::builder()
            .table_name(&self.table)
            .key("pk", pk(job_id))
            .key("sk", s("job"))
            .update_expression("SET done = done + :one ADD #seen :seen, #rejected :rejected")
            .condition_expression("attribute_exists(#total) AND #total > :index AND created_ms = :generation")
            .expression_attribute_names("#total", "total")
            .expression_attribute_names("#seen", "records_done")
            .expression_attribute_names("#rejected", "rejected_records")
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":seen", n(chunk.counts.total()))
            .expression_attribute_values(":rejected", n(chunk.counts.rejected))
            .expression_attribute_values(":index", n(chunk.index))
            .expression_attribute_values(":generation", n(chunk.generation))
            .build()
            .map_err(|e| ddb::error("job update", e))?;
        let sent = self
            .client
            .transact_write_items()
            .transact_items(TransactWriteItem::builder().put(put).build())
            .transact_items(TransactWriteItem::builder().update(count).build())
            .send()
            .await;
        if let Err(e) = sent {
            let service = e.into_service_error();
            let failed = |i: usize| {
                match &service {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(t) => t
                    .cancellation_reasons()
                    .get(i)
                    .and_then(|r| r.code())
                    .is_some_and(|c| c == "ConditionalCheckFailed"),
                _ => false,
            }
            };
            if failed(1) {
                return Err(Error::Conflict(format!(
                    "job {job_id} does not exist, is not planned yet, has no chunk {} in its plan, or was made \
                     anew since this chunk's run began",
                    chunk.index
                )));
            }
            if failed(0) {
                return Ok(LedgerCommit::Duplicate);
            }
            return Err(ddb::error(format!("TransactWriteItems on {}", self.table), service));
        }
        let job = self.get_job(job_id).await?.ok_or_else(|| Error::NotFound(format!("job {job_id}")))?;
        let total = job.total_chunks.unwrap_or(0);
        let finalize = job.done_chunks == total
            && self
                .update_job(
                    job_id,
                    "SET finalized = :yes",
                    "done = #total AND attribute_not_exists(finalized)",
                    &[("#total", "total")],
                    vec![(":yes", AttributeValue::Bool(true))],
                )
                .await?;
        // Read after this commit: its counts, and those of any commit since, are in.
        Ok(LedgerCommit::First {
            done: job.done_chunks,
            total,
            finalize,
            records: job.records_done,
            rejected: job.rejected,
        })
    }

    async fn get_chunk(&self, job_id: &str, index: u32) -> Result<Option<ChunkRecord>> {
        self.get(job_id, chunk_sk(index)).await?.as_ref().map(chunk_from_item).transpose()
    }

    async fn chunks(&self, job_id: &str) -> Result<Vec<ChunkRecord>> {
        self.chunk_items(job_id).await?.iter().map(chunk_from_item).collect()
    }

    async fn set_status(&self, job_id: &str, from: JobStatus, to: JobStatus) -> Result<bool> {
        let mut values = vec![(":to", s(to.as_str())), (":from", s(from.as_str()))];
        let update = if matches!(to, JobStatus::Complete | JobStatus::Failed) {
            // Finished: the table's time to live removes it after the retention.
            values.push((":expires", expires(RETENTION)));
            "SET #st = :to, expires_at = :expires"
        } else {
            "SET #st = :to REMOVE expires_at"
        };
        self.update_job(job_id, update, "#st = :from", &[("#st", "job_status")], values).await
    }

    async fn take_gather_lease(&self, job_id: &str, now_ms: i64, until_ms: i64) -> Result<bool> {
        self.update_job(
            job_id,
            "SET #st = :gathering, lease_until = :until",
            "#st = :running OR (#st = :gathering AND (attribute_not_exists(lease_until) OR lease_until < :now))",
            &[("#st", "job_status")],
            vec![
                (":gathering", s(JobStatus::Gathering.as_str())),
                (":running", s(JobStatus::Running.as_str())),
                (":until", n(until_ms)),
                (":now", n(now_ms)),
            ],
        )
        .await
    }

    async fn renew_gather_lease(&self, job_id: &str, held_ms: i64, until_ms: i64) -> Result<bool> {
        self.update_job(
            job_id,
            "SET lease_until = :until",
            "#st = :gathering AND lease_until = :held",
            &[("#st", "job_status")],
            vec![(":gathering", s(JobStatus::Gathering.as_str())), (":until", n(until_ms)), (":held", n(held_ms))],
        )
        .await
    }

    fn commit_cost(&self) -> crate::backends::calls::ApiCalls {
        [("dynamodb.TransactWriteItems".to_string(), 1)].into()
    }

    async fn delete_job(&self, job_id: &str) -> Result<()> {
        let mut keys: Vec<AttributeValue> =
            self.chunk_items(job_id).await?.into_iter().filter_map(|mut item| item.remove("sk")).collect();
        keys.push(s("job"));
        // BatchWriteItem takes at most 25 requests; unprocessed ones are sent again.
        for batch in keys.chunks(25) {
            let mut requests: Vec<WriteRequest> = batch
                .iter()
                .map(|sk| {
                    let delete = DeleteRequest::builder().key("pk", pk(job_id)).key("sk", sk.clone()).build();
                    delete.map(|d| WriteRequest::builder().delete_request(d).build())
                })
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| ddb::error("delete request", e))?;
            for attempt in 0..8u32 {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, requests)
                    .send()
                    .await
                    .map_err(|e| ddb::error(format!("BatchWriteItem on {}", self.table), e.into_service_error()))?;
                requests = out.unprocessed_items.and_then(|mut u| u.remove(&self.table)).unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(25 << attempt)).await;
            }
            if !requests.is_empty() {
                return Err(Error::backend(
                    crate::error::Backend::Dynamodb,
                    format!("deleting job {job_id}"),
                    "items kept coming back unprocessed",
                ));
            }
        }
        Ok(())
    }

    async fn get_checkpoint(&self, name: &str) -> Result<Option<Checkpoint>> {
        let item = self.get_item(checkpoint_pk(name), s(CHECKPOINT_SK)).await?;
        item.map(|item| checkpoint_from_item(name, &item)).transpose()
    }

    async fn put_checkpoint(&self, name: &str, expected: u64, state: &str) -> Result<bool> {
        check_checkpoint_size(name, state)?;
        // No stored version is u64::MAX (it would take as many writes), so that expectation fails.
        let Some(next) = expected.checked_add(1) else { return Ok(false) };
        let mut req = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", checkpoint_pk(name))
            .item("sk", s(CHECKPOINT_SK))
            .item("version", n(next))
            .item("state", s(state));
        req = if expected == 0 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("#version = :expected")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":expected", n(expected))
        };
        match req.send().await {
            Ok(_) => Ok(true),
            Err(e) if e.as_service_error().is_some_and(|s| s.is_conditional_check_failed_exception()) => Ok(false),
            Err(e) => Err(ddb::error(
                format!("PutItem of stream {name:?} checkpoint on {}", self.table),
                e.into_service_error(),
            )),
        }
    }

    async fn delete_checkpoint(&self, name: &str) -> Result<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", checkpoint_pk(name))
            .key("sk", s(CHECKPOINT_SK))
            .send()
            .await
            .map_err(|e| {
                ddb::error(
                    format!("DeleteItem of stream {name:?} checkpoint on {}", self.table),
                    e.into_service_error(),
                )
            })?;
        Ok(())
    }
}

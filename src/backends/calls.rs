//! API-call accounting: every request a job makes to a cloud service, counted by service and
//! operation (`"dynamodb.BatchWriteItem"`), so cost per record is visible in `summary.json`.
//!
//! Counts go to the [`Tally`] of the task that makes the request (a tokio task-local set with
//! [`Tally::scope`]): a worker tallies each chunk, a planner its planning, a gather itself.
//! AWS SDK requests are counted by an interceptor on every client (`crate::backends::aws`), one count
//! per HTTP attempt (retries are billed too); bucket requests by [`Counted`], a wrapper around
//! an S3 `ObjectStore`. Requests made outside any scope are not counted anywhere.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions,
    PutOptions, PutPayload, PutResult, UploadPart,
};

/// Requests by `"service.Operation"`.
pub type ApiCalls = BTreeMap<String, u64>;

/// Add `more` into `into`.
pub fn add(into: &mut ApiCalls, more: &ApiCalls) {
    for (k, v) in more {
        *into.entry(k.clone()).or_default() += v;
    }
}

/// Take `less` out of `from` (never below zero); keys left at zero are removed.
pub fn subtract(from: &mut ApiCalls, less: &ApiCalls) {
    for (k, v) in less {
        if let Some(c) = from.get_mut(k) {
            *c = c.saturating_sub(*v);
            if *c == 0 {
                from.remove(k);
            }
        }
    }
}

/// A shared counter of requests.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<Mutex<ApiCalls>>);

tokio::task_local! {
    static CURRENT: Tally;
}

std::thread_local! {
    /// The tally of work on a blocking thread (see [`Tally::on_this_thread`]).
    static THREAD: std::cell::RefCell<Option<Tally>> = const { std::cell::RefCell::new(None) };
}

impl Tally {
    /// Run `f` with this tally collecting the requests it makes.
    pub async fn scope<F: std::future::Future>(&self, f: F) -> F::Output {
        CURRENT.scope(self.clone(), f).await
    }

    /// [`Tally::scope`] for a future that must own its tally (one to spawn).
    pub fn scope_owned<F: std::future::Future>(self, f: F) -> impl std::future::Future<Output = F::Output> {
        CURRENT.scope(self, f)
    }

    /// Run `f` on this (blocking) thread with this tally collecting its requests.
    pub fn on_this_thread<T>(&self, f: impl FnOnce() -> T) -> T {
        let before = THREAD.with(|t| t.replace(Some(self.clone())));
        let out = f();
        THREAD.with(|t| *t.borrow_mut() = before);
        out
    }

    /// The current task's tally, if it has one.
    pub fn current() -> Option<Tally> {
        CURRENT.try_with(Tally::clone).ok()
    }

    /// What was counted so far.
    pub fn snapshot(&self) -> ApiCalls {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// What was counted so far, leaving the tally empty.
    pub fn take(&self) -> ApiCalls {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Add counts made elsewhere.
    pub fn absorb(&self, calls: &ApiCalls) {
        for (k, v) in calls {
            self.add(k, *v);
        }
    }

    fn add(&self, key: &str, n: u64) {
        let mut calls = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match calls.get_mut(key) {
            Some(c) => *c += n,
            None => {
                calls.insert(key.to_string(), n);
            }
        }
    }
}

/// Count one request of `service` (e.g. `dynamodb`) and `operation` (e.g. `PutItem`) to the
/// current task's tally, if it has one.
pub fn count(service: &str, operation: &str) {
    count_n(service, operation, 1);
}

fn count_n(service: &str, operation: &str, n: u64) {
    let key = format!("{}.{operation}", service.to_ascii_lowercase());
    if CURRENT.try_with(|t| t.add(&key, n)).is_err() {
        THREAD.with(|t| {
            if let Some(t) = t.borrow().as_ref() {
                t.add(&key, n);
            }
        });
    }
}

/// An `ObjectStore` that counts the S3 requests made through it (names as in the S3 API).
#[derive(Debug)]
pub struct Counted<T: ObjectStore>(pub T);

impl<T: ObjectStore> fmt::Display for Counted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// S3 lists and bulk deletes handle up to 1,000 keys per request.
const PAGE: u64 = 1000;

#[async_trait]
impl<T: ObjectStore> ObjectStore for Counted<T> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        count("s3", "PutObject");
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        count("s3", "CreateMultipartUpload");
        let inner = self.0.put_multipart_opts(location, opts).await?;
        Ok(Box::new(CountedUpload(inner)))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> object_store::Result<GetResult> {
        count("s3", if options.head { "HeadObject" } else { "GetObject" });
        self.0.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
        count_n("s3", "GetObject", ranges.len() as u64);
        self.0.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let mut n = 0u64;
        let counted = locations
            .inspect(move |_| {
                if n % PAGE == 0 {
                    count("s3", "DeleteObjects");
                }
                n += 1;
            })
            .boxed();
        self.0.delete_stream(counted)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        count("s3", "ListObjectsV2");
        let mut n = 0u64;
        self.0
            .list(prefix)
            .inspect(move |_| {
                n += 1;
                if n % PAGE == 0 {
                    count("s3", "ListObjectsV2");
                }
            })
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        count("s3", "ListObjectsV2");
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> object_store::Result<()> {
        count("s3", "CopyObject");
        self.0.copy_opts(from, to, options).await
    }
}

#[derive(Debug)]
struct CountedUpload(Box<dyn MultipartUpload>);

#[async_trait]
impl MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        // Counted here, in the caller's task: the returned future may be polled in another.
        count("s3", "UploadPart");
        self.0.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        count("s3", "CompleteMultipartUpload");
        self.0.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        count("s3", "AbortMultipartUpload");
        self.0.abort().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn requests_are_counted_in_their_scope_only() {
        let store = Counted(object_store::memory::InMemory::new());
        let tally = Tally::default();
        tally
            .scope(async {
                store.put(&Path::from("a"), Bytes::from_static(b"x").into()).await.unwrap();
                store.get(&Path::from("a")).await.unwrap();
                store.head(&Path::from("a")).await.unwrap();
                let mut up = store.put_multipart(&Path::from("b")).await.unwrap();
                up.put_part(Bytes::from_static(b"y").into()).await.unwrap();
                up.complete().await.unwrap();
            })
            .await;
        store.get(&Path::from("a")).await.unwrap();
        let want: ApiCalls = [
            ("s3.CompleteMultipartUpload", 1),
            ("s3.CreateMultipartUpload", 1),
            ("s3.GetObject", 1),
            ("s3.HeadObject", 1),
            ("s3.PutObject", 1),
            ("s3.UploadPart", 1),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(tally.snapshot(), want);
    }
}

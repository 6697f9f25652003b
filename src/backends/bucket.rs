//! The bucket seam: `object_store` stores picked by URL, input listing, and sync readers
//! over objects for the scanners and workers.

use std::io::Read;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use crate::backends::cloud::Cloud;
use crate::error::{Error, Result};
use crate::model::config::{Compression, Format};

/// Open the bucket named by `url`: a directory path, `file://DIR`, `memory://` or
/// `s3://BUCKET[/PREFIX]` (feature `aws`, with the AWS configuration in `cloud`).
pub fn open(url: &str, cloud: &Cloud) -> Result<Arc<dyn ObjectStore>> {
    match url.split_once("://") {
        Some(("memory", _)) => Ok(Arc::new(InMemory::new())),
        Some(("file", dir)) => local_dir(FsPath::new(dir)),
        #[cfg(feature = "aws")]
        Some(("s3", rest)) => {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            let store = crate::backends::aws::s3_store(cloud.sdk("bucket")?, bucket, cloud.simulated())?;
            let prefix = prefix.trim_matches('/');
            if prefix.is_empty() {
                Ok(Arc::new(store))
            } else {
                Ok(Arc::new(object_store::prefix::PrefixStore::new(store, prefix)))
            }
        }
        #[cfg(not(feature = "aws"))]
        Some(("s3", _)) => {
            let _ = cloud;
            Err(Error::config("bucket", "s3:// needs the `aws` feature, which this build lacks"))
        }
        Some((scheme, _)) => {
            Err(Error::config("bucket", format!("unsupported scheme {scheme}:// (use a path, file:// or memory://)")))
        }
        None => local_dir(FsPath::new(url)),
    }
}

fn local_dir(dir: &FsPath) -> Result<Arc<dyn ObjectStore>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::config("--data-dir", format!("cannot create {}: {e}", dir.display())))?;
    let store = LocalFileSystem::new_with_prefix(dir).map_err(|e| Error::config("--data-dir", e.to_string()))?;
    Ok(Arc::new(store.with_automatic_cleanup(true)))
}

/// One input object of a job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InputObject {
    /// Where it is, as a URL (`file:///abs/path`).
    pub location: String,
    /// Path within its store.
    pub path: String,
    /// Size in bytes as stored.
    pub size: u64,
    /// Version marker: ETag, else modification time.
    pub version: String,
    /// The ETag when the store gives one: reads require it (`If-Match`), so an object changed
    /// after planning fails its chunks instead of feeding them other bytes.
    #[serde(default)]
    pub e_tag: Option<String>,
    /// Record encoding.
    pub format: Format,
    /// Compression.
    pub compression: Compression,
}

/// The store that holds local input files (the whole file system, read-only use).
pub fn local_inputs() -> Arc<dyn ObjectStore> {
    Arc::new(LocalFileSystem::new())
}

/// The store that holds a job's inputs, from the first input: an S3 bucket for
/// `s3://BUCKET/…` (feature `aws`), else the local file system.
pub fn input_store(first_input: &str, cloud: &Cloud) -> Result<Arc<dyn ObjectStore>> {
    match first_input.strip_prefix("s3://") {
        Some(rest) => open(&format!("s3://{}", rest.split('/').next().unwrap_or(rest)), cloud),
        None => Ok(local_inputs()),
    }
}

/// Resolve command-line inputs into objects, sorted within each directory or prefix: local
/// files, directories and `file://` URLs in `store` = [`local_inputs`], or `s3://BUCKET/KEY`
/// objects and `s3://BUCKET/PREFIX/` prefixes in `store` = that bucket (see
/// [`input_store`]). Fails with the name of any input that does not exist.
pub async fn resolve_inputs(
    store: &dyn ObjectStore,
    args: &[String],
    format: Option<Format>,
    compression: Compression,
) -> Result<Vec<InputObject>> {
    // One job's inputs come from one store, the first input's (see [`input_store`]): another
    // bucket's key would be looked up in it (a local path, read from this disk, labelled S3).
    let home = |arg: &str| match arg.strip_prefix("s3://") {
        Some(rest) => format!("s3://{}", rest.split('/').next().unwrap_or(rest)),
        None => "this machine's files".to_string(),
    };
    if let Some(first) = args.first() {
        if let Some(other) = args.iter().find(|a| home(a) != home(first)) {
            return Err(Error::config(
                "INPUT",
                format!(
                    "{other} is in {}, but {first} is in {}: a job's inputs are all in one bucket, or all local files",
                    home(other),
                    home(first)
                ),
            ));
        }
    }
    let mut out = Vec::new();
    for arg in args {
        let (metas, scheme) = match arg.strip_prefix("s3://") {
            Some(rest) => {
                (list_s3(store, arg, rest).await?, format!("s3://{}/", rest.split('/').next().unwrap_or(rest)))
            }
            None => (list_local(store, arg).await?, "file:///".to_string()),
        };
        for m in metas {
            let name = m.location.filename().unwrap_or_default().to_string();
            let compression = match compression {
                Compression::Auto => detect_compression(store, &m.location, &name).await?,
                c => c,
            };
            let format = format.unwrap_or_else(|| format_from_name(&name));
            out.push(InputObject {
                location: format!("{scheme}{}", m.location),
                path: m.location.to_string(),
                size: m.size,
                version: m.e_tag.clone().unwrap_or_else(|| m.last_modified.timestamp_micros().to_string()),
                e_tag: m.e_tag.clone(),
                format,
                compression,
            });
        }
    }
    Ok(out)
}

/// The objects a local argument names: a file, or every non-hidden file under a directory.
async fn list_local(store: &dyn ObjectStore, arg: &str) -> Result<Vec<object_store::ObjectMeta>> {
    let local = PathBuf::from(arg.strip_prefix("file://").unwrap_or(arg));
    let abs = std::path::absolute(&local).map_err(|e| Error::input(arg, e.to_string()))?;
    let meta = std::fs::metadata(&abs)
        .map_err(|e| Error::input(format!("file://{}", abs.display()), format!("cannot read input: {e}")))?;
    let prefix = Path::from_absolute_path(&abs).map_err(|e| Error::input(arg, e.to_string()))?;
    if !meta.is_dir() {
        return Ok(vec![store.head(&prefix).await?]);
    }
    let mut all: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
    // Skip hidden files and folders below the prefix (not above it).
    let depth = prefix.parts().count();
    all.retain(|m| !m.location.parts().skip(depth).any(|p| p.as_ref().starts_with('.')));
    all.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(all)
}

/// The objects an `s3://BUCKET/KEY` argument names: that object, or with a trailing `/` (or
/// no key) every object under the prefix.
async fn list_s3(store: &dyn ObjectStore, arg: &str, rest: &str) -> Result<Vec<object_store::ObjectMeta>> {
    let key = rest.split_once('/').map_or("", |(_, k)| k);
    if key.is_empty() || key.ends_with('/') {
        let prefix = key_path(key.trim_end_matches('/'));
        let mut all: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
        all.sort_by(|a, b| a.location.cmp(&b.location));
        return Ok(all);
    }
    match store.head(&key_path(key)).await {
        Ok(m) => Ok(vec![m]),
        Err(object_store::Error::NotFound { .. }) => Err(Error::input(arg, "cannot read input: no such object")),
        Err(e) => Err(Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {arg}"), e)),
    }
}

/// An object's key as a path, as it is (S3 keys may hold spaces, `+` or any character);
/// `Path::from` would percent-encode some of them into another key.
pub(crate) fn key_path(key: &str) -> Path {
    Path::parse(key).unwrap_or_else(|_| Path::from(key))
}

fn strip_compression_ext(name: &str) -> &str {
    [".gz", ".gzip", ".zst", ".zstd"].iter().find_map(|e| name.strip_suffix(e)).unwrap_or(name)
}

/// The record format a file name suggests: `.jsonl`/`.ndjson` → JSON Lines, `.json` → JSON,
/// anything else → CSV.
pub fn format_from_name(name: &str) -> Format {
    let name = strip_compression_ext(name);
    if name.ends_with(".jsonl") || name.ends_with(".ndjson") {
        Format::Jsonl
    } else if name.ends_with(".json") {
        Format::Json
    } else {
        Format::Csv
    }
}

async fn detect_compression(store: &dyn ObjectStore, path: &Path, name: &str) -> Result<Compression> {
    if let Some(c) = compression_from_name(name) {
        return Ok(c);
    }
    let head = store.head(path).await?;
    if head.size < 4 {
        return Ok(Compression::None);
    }
    let magic = store.get_range(path, 0..4).await?;
    Ok(compression_from_magic(&magic))
}

/// The compression a file name's extension says (`.gz`, `.gzip`, `.zst`, `.zstd`), if any.
pub fn compression_from_name(name: &str) -> Option<Compression> {
    if name.ends_with(".gz") || name.ends_with(".gzip") {
        return Some(Compression::Gzip);
    }
    if name.ends_with(".zst") || name.ends_with(".zstd") {
        return Some(Compression::Zstd);
    }
    None
}

/// The compression an object's first bytes show (the gzip or zstd magic number), else none.
pub fn compression_from_magic(head: &[u8]) -> Compression {
    match head {
        [0x1f, 0x8b, ..] => Compression::Gzip,
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Compression::Zstd,
        _ => Compression::None,
    }
}

/// A blocking reader over a whole object, not yet decompressed: open it in async context,
/// then call [`ObjectReader::decoded`] and read on a blocking thread (`spawn_blocking`).
pub struct ObjectReader {
    inner: Box<dyn Read + Send>,
    compression: Compression,
    location: String,
}

impl ObjectReader {
    /// The decompressed stream. Decoders read headers eagerly, so this blocks.
    pub fn decoded(self) -> Result<Box<dyn Read + Send>> {
        decompress(self.inner, self.compression, &self.location)
    }

    /// The decompressed stream, failing with an error naming the input and `setting` once it
    /// passes `max` bytes. An input that is not compressed is not capped.
    pub fn decoded_at_most(self, max: u64, setting: &'static str) -> Result<Box<dyn Read + Send>> {
        decompress_at_most(self.inner, self.compression, &self.location, max, setting)
    }

    /// [`ObjectReader::decoded_at_most`], noting the stream's resume points in `points` as it
    /// is decoded (gzip: deflate blocks; zstd: frames), at least `min_gap` decompressed bytes
    /// apart.
    pub fn indexed_at_most(
        self,
        max: u64,
        setting: &'static str,
        min_gap: u64,
        points: &crate::input::plan::Points,
    ) -> Result<Box<dyn Read + Send>> {
        use crate::input::resume_points::{GzipIndexer, ZstdIndexer};
        let location = self.location;
        let inner: Box<dyn Read + Send> = match self.compression {
            Compression::Gzip => Box::new(
                GzipIndexer::new(self.inner, points.clone())
                    .map_err(|e| Error::input(&location, format!("cannot start gzip decoding: {e}")))?
                    .with_min_gap(min_gap),
            ),
            Compression::Zstd => Box::new(ZstdIndexer::new(self.inner, points.clone()).with_min_gap(min_gap)),
            Compression::None | Compression::Auto => return Ok(self.inner),
        };
        Ok(Box::new(AtMost { inner, left: max, max, location, setting }))
    }
}

/// `r` decompressed as `c` says, failing with an error naming `location` and `setting` once
/// it passes `max` bytes. A stream that is not compressed is not capped.
pub fn decompress_at_most(
    r: Box<dyn Read + Send>,
    c: Compression,
    location: &str,
    max: u64,
    setting: &'static str,
) -> Result<Box<dyn Read + Send>> {
    let decoded = decompress(r, c, location)?;
    Ok(match c {
        Compression::None | Compression::Auto => decoded,
        _ => Box::new(AtMost { inner: decoded, left: max, max, location: location.to_string(), setting }),
    })
}

/// A reader that fails once more than `max` bytes were read.
struct AtMost {
    inner: Box<dyn Read + Send>,
    left: u64,
    max: u64,
    location: String,
    setting: &'static str,
}

impl Read for AtMost {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self.left.checked_sub(n as u64).ok_or_else(|| {
            std::io::Error::other(format!(
                "{} decompresses to more than {} bytes (a decompression bomb?); if it is genuine, raise {}",
                self.location, self.max, self.setting
            ))
        })?;
        Ok(n)
    }
}

/// Open an object for a streaming read (see [`ObjectReader`]).
pub async fn open_reader(store: Arc<dyn ObjectStore>, input: &InputObject) -> Result<ObjectReader> {
    let path = key_path(&input.path);
    let options = GetOptions { if_match: input.e_tag.clone(), ..GetOptions::default() };
    let got = store.get_opts(&path, options).await.map_err(|e| read_error(e, input, None))?;
    let inner: Box<dyn Read + Send> = match got.payload {
        // A local file is read as a file: its stream would hand it over 8 KiB at a time, each
        // read a task on the blocking pool.
        object_store::GetResultPayload::File(mut file, _) => {
            use std::io::{Seek, SeekFrom};
            let unreadable = |e: std::io::Error| Error::input(&input.location, format!("cannot read: {e}"));
            file.seek(SeekFrom::Start(got.range.start)).map_err(unreadable)?;
            Box::new(std::io::BufReader::with_capacity(256 << 10, file.take(got.range.end - got.range.start)))
        }
        object_store::GetResultPayload::Stream(stream) => {
            let stream = stream.map(|r| r.map_err(std::io::Error::other));
            let reader = tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(stream));
            Box::new(std::io::BufReader::with_capacity(256 << 10, reader))
        }
    };
    Ok(ObjectReader { inner, compression: input.compression, location: input.location.clone() })
}

/// `r` decompressed as `c` says (`Auto` and `None`: as it is); `location` names it in errors.
pub fn decompress(r: Box<dyn Read + Send>, c: Compression, location: &str) -> Result<Box<dyn Read + Send>> {
    Ok(match c {
        Compression::Auto | Compression::None => r,
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(
            zstd::Decoder::new(r).map_err(|e| Error::input(location, format!("cannot start zstd decoding: {e}")))?,
        ),
    })
}

fn read_error(e: object_store::Error, input: &InputObject, range: Option<(u64, u64)>) -> Error {
    let location = &input.location;
    match e {
        object_store::Error::NotFound { .. } => {
            Error::input(location, "the input object is gone (deleted or moved since the job was planned)")
        }
        object_store::Error::Precondition { .. } => Error::input(
            location,
            format!(
                "the input changed since the job was planned (planned version {}); run it as a new job",
                input.version
            ),
        ),
        other => {
            let bytes = range.map(|(s, e)| format!(" bytes {s}-{}", e.saturating_sub(1))).unwrap_or_default();
            Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {location}{bytes}"), other)
        }
    }
}

/// Read bytes `start..end` of the decompressed input. Uncompressed inputs are read with a
/// ranged GET; compressed ones are streamed from the start and decoded up to `end` (they
/// cannot be read by range), keeping only the wanted bytes.
pub async fn read_range(
    store: Arc<dyn ObjectStore>,
    input: &InputObject,
    start: u64,
    end: u64,
) -> Result<bytes::Bytes> {
    if matches!(input.compression, Compression::None | Compression::Auto) {
        let path = key_path(&input.path);
        let options =
            GetOptions { if_match: input.e_tag.clone(), range: Some((start..end).into()), ..GetOptions::default() };
        let read = async { store.get_opts(&path, options).await?.bytes().await };
        return read.await.map_err(|e| read_error(e, input, Some((start, end))));
    }
    let reader = open_reader(store, input).await?;
    let location = input.location.clone();
    tokio::task::spawn_blocking(move || {
        let reader = reader.decoded()?;
        skip_and_read(reader, start, end - start, &location)
    })
    .await
    .map_err(|e| Error::internal("worker", "read task failed", e))?
}

/// Read bytes `start..end` of a compressed input from a resume point: only the compressed
/// bytes from the point to `resume.input_end` are read and decoded (see
/// [`crate::input::resume_points`]), the decoder primed with the point's `window`.
pub async fn read_resumed(
    store: Arc<dyn ObjectStore>,
    input: &InputObject,
    resume: &crate::input::plan::Resume,
    window: bytes::Bytes,
    start: u64,
    end: u64,
) -> Result<bytes::Bytes> {
    use crate::input::resume_points::{resume_gzip, resume_zstd};
    let (from, to) = (resume.point.input_start(), resume.input_end);
    let path = key_path(&input.path);
    let options = GetOptions { if_match: input.e_tag.clone(), range: Some((from..to).into()), ..GetOptions::default() };
    let read = async { store.get_opts(&path, options).await?.bytes().await };
    let compressed = read.await.map_err(|e| read_error(e, input, Some((from, to))))?;
    let (location, compression, point) = (input.location.clone(), input.compression, resume.point.clone());
    tokio::task::spawn_blocking(move || {
        let fail = |e: std::io::Error| Error::input(&location, format!("cannot decompress: {e}"));
        let src = std::io::Cursor::new(compressed);
        let mut reader: Box<dyn Read> = match compression {
            Compression::Zstd => Box::new(resume_zstd(src).map_err(fail)?),
            _ => Box::new(resume_gzip(&point, &window, src).map_err(fail)?),
        };
        let skip = start
            .checked_sub(point.out)
            .ok_or_else(|| Error::input(&location, "a chunk starts before its resume point"))?;
        skip_and_read(&mut reader, skip, end - start, &location)
    })
    .await
    .map_err(|e| Error::internal("worker", "read task failed", e))?
}

/// `len` decompressed bytes of `reader` after its first `skip`.
fn skip_and_read(mut reader: impl Read, skip: u64, len: u64, location: &str) -> Result<bytes::Bytes> {
    let fail = |e: std::io::Error| Error::input(location, format!("cannot decompress: {e}"));
    std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink()).map_err(fail)?;
    let mut buf = Vec::with_capacity(len as usize);
    reader.take(len).read_to_end(&mut buf).map_err(fail)?;
    if buf.len() as u64 != len {
        return Err(Error::input(location, "the input is shorter than when it was planned"));
    }
    Ok(bytes::Bytes::from(buf))
}

/// Write `bytes` to `path` in the bucket (atomic replace).
pub async fn put(store: &dyn ObjectStore, path: &str, bytes: Vec<u8>) -> Result<()> {
    store
        .put(&Path::from(path), bytes.into())
        .await
        .map_err(|e| Error::backend(crate::error::Backend::ObjectStore, format!("failed to write {path}"), e))?;
    Ok(())
}

/// Write `bytes` to `path` only if no object is there; `false` when one already was (another
/// writer won). Stores that cannot write conditionally fail with a message saying so.
pub async fn put_if_absent(store: &dyn ObjectStore, path: &str, bytes: Vec<u8>) -> Result<bool> {
    let opts = object_store::PutOptions { mode: object_store::PutMode::Create, ..Default::default() };
    match store.put_opts(&Path::from(path), bytes.into(), opts).await {
        Ok(_) => Ok(true),
        Err(object_store::Error::AlreadyExists { .. } | object_store::Error::Precondition { .. }) => Ok(false),
        Err(e) => Err(Error::backend(crate::error::Backend::ObjectStore, format!("failed to create {path}"), e)),
    }
}

/// An object's metadata, `None` if it does not exist.
pub async fn get_opt_head(store: &dyn ObjectStore, path: &str) -> Result<Option<object_store::ObjectMeta>> {
    match store.head(&Path::from(path)).await {
        Ok(m) => Ok(Some(m)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {path}"), e)),
    }
}

/// Stream a local file into `key` in the bucket (a multipart upload when it is large).
pub async fn upload_file(store: Arc<dyn ObjectStore>, file: &FsPath, key: &str) -> Result<()> {
    let from = file.display().to_string();
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| Error::backend(crate::error::Backend::ObjectStore, format!("cannot upload {from} to {key}"), e))?;
    upload_from(store, f, &from, key).await
}

/// Parts of an upload streamed from a reader: S3's least but one (5 MiB), two in flight, so
/// that an upload holds about 16 MiB whatever its size. One part or less is a single put.
const UPLOAD_PART_BYTES: usize = 8 << 20;

/// Stream `reader` (`from` names it in errors) into `key` in the bucket: a multipart upload of
/// `UPLOAD_PART_BYTES` (8 MiB) parts when it is larger than one; an upload cut off leaves no object.
pub async fn upload_from(
    store: Arc<dyn ObjectStore>,
    mut reader: impl tokio::io::AsyncRead + Unpin,
    from: &str,
    key: &str,
) -> Result<()> {
    use tokio::io::AsyncWriteExt;
    let io = |e: std::io::Error| {
        Error::backend(crate::error::Backend::ObjectStore, format!("cannot upload {from} to {key}"), e)
    };
    let mut w = object_store::buffered::BufWriter::with_capacity(store, Path::from(key), UPLOAD_PART_BYTES)
        .with_max_concurrency(2);
    if let Err(e) = tokio::io::copy(&mut reader, &mut w).await {
        let _ = w.abort().await;
        return Err(io(e));
    }
    w.shutdown().await.map_err(io)?;
    Ok(())
}

/// Read a whole small object, `None` if it does not exist.
pub async fn get_opt(store: &dyn ObjectStore, path: &str) -> Result<Option<bytes::Bytes>> {
    match store.get(&Path::from(path)).await {
        Ok(r) => {
            Ok(Some(r.bytes().await.map_err(|e| {
                Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {path}"), e)
            })?))
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {path}"), e)),
    }
}

/// An object of any size as a stream of its bytes, read as it is consumed (a `lines()` of it
/// holds one line), `None` if it does not exist.
pub async fn get_stream(
    store: &dyn ObjectStore,
    path: &str,
) -> Result<Option<impl tokio::io::AsyncBufRead + Unpin + Send + use<>>> {
    match store.get(&Path::from(path)).await {
        Ok(r) => Ok(Some(tokio_util::io::StreamReader::new(r.into_stream().map(|r| r.map_err(std::io::Error::other))))),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(Error::backend(crate::error::Backend::ObjectStore, format!("failed to read {path}"), e)),
    }
}

/// Delete every object under `prefix`.
pub async fn delete_prefix(store: &dyn ObjectStore, prefix: &str) -> Result<()> {
    let prefix = Path::from(prefix);
    let paths: Vec<Path> = store.list(Some(&prefix)).map_ok(|m| m.location).try_collect().await?;
    for p in paths {
        match store.delete(&p).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

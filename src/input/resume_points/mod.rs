//! Resume points: where a worker can start decoding a gzip or zstd input mid-stream.
//!
//! # Method
//!
//! A chunk of a compressed input is a range of *decompressed* bytes. Decoding it from the start of
//! the object costs everything before the chunk too, which makes a job quadratic in the number of
//! chunks. Instead the planner, which reads the whole stream once anyway, records *boundaries*:
//! places where decoding can start again.
//!
//! - **gzip** (zlib's `zran` method, as in `indexed_gzip`): [`GzipIndexer`] inflates with
//!   `Z_BLOCK`, which stops at every deflate block boundary and at the end of every member header.
//!   There it notes the compressed *bit* offset (a deflate block can start mid-byte) and the
//!   decompressed offset. A block's back-references reach at most 32 KiB into earlier output, so
//!   [`resume_gzip`] can continue from a boundary with a raw inflater, the leftover bits of the
//!   first byte (`inflatePrime`) and the 32 KiB *window* of output before the boundary
//!   (`inflateSetDictionary`). Each point therefore costs up to 32 KiB of window.
//! - **zstd**: frames are independent, so every frame start is a boundary and needs no window
//!   ([`ZstdIndexer`], [`resume_zstd`]). A single-frame input has only the boundary at 0.
//!
//! # Why chunks are cut just after a boundary
//!
//! The planner cannot move boundaries, but it chooses where chunks start. A worker resumes at the
//! last boundary at or before its chunk's start and throws away the output up to that start. If
//! chunks started anywhere, that waste would average half a deflate block (about 100 KB of
//! output for text) per chunk, which adds up to many extra copies of a large input. So the chunk
//! cutter, once a chunk is due, closes it at the first record end that follows a boundary
//! ([`ResumeLog::last_at_or_before`] tells it where the last one is): each worker then decodes
//! less than one record it does not keep.
//!
//! Boundaries are as far apart as the compressor's blocks. In the tests here, flate2 (zlib-rs) at
//! levels 6 and 9 closes a block every 50–150 KB of text, but at level 1 only every few MB; a
//! stored block of incompressible bytes holds at most 64 KiB.
//!
//! # Memory
//!
//! [`ResumeLog`] keeps 16 bytes for every boundary, but windows only for boundaries after the
//! last cut: a cut hands the chosen window to a caller-supplied writer (a spool file the planner
//! uploads next to the plan) and drops every older one. So memory grows with the chunk size, not
//! with the input.
//!
//! This file holds what both formats share: the points, the [`ResumeLog`] of them, the gap
//! kept between them and the buffered input. `gzip` and `zstd` hold each format's indexer and
//! resumer; `zlib` the C API the gzip side needs (all the unsafe code).

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};

mod gzip;
mod zlib;
mod zstd;

pub use self::gzip::{resume_gzip, GzipIndexer};
pub use self::zstd::{resume_zstd, ZstdIndexer};

/// The most output a deflate back-reference can reach: the window a resumed inflater needs.
pub const WINDOW_SIZE: usize = 32 * 1024;

/// The least decompressed distance between two resume points the planner notes
/// ([`GzipIndexer::with_min_gap`], [`ZstdIndexer::with_min_gap`]; it asks for about a chunk's
/// worth and never less than this). A point costs up to 32 KiB of window and a stop of the
/// inflater, so at a megabyte apart the windows weigh 3% of the output at most, and a stream
/// of empty deflate blocks or empty members (crafted to make points without output) makes no
/// more points than a plain one.
pub const MIN_GAP: u64 = 1 << 20;

/// The most windows a [`ResumeLog`] holds in memory (2 MiB): past it, a new boundary takes the
/// place of the newest one held, so a chunk that never closes (one record of gigabytes) cannot
/// fill memory with windows. Each planner cut releases the windows before it.
pub const MAX_WINDOWS_HELD: usize = 64;

/// How much compressed input the readers here fetch from their source at a time.
const INPUT_BUFFER_SIZE: usize = 256 * 1024;

/// A place where decoding can start again.
///
/// gzip: `in_bit` is the bit offset in the compressed object of a deflate block start, or of the
/// end of a gzip member header. zstd: `in_bit` is 8 × the byte offset of a frame start. In both,
/// `out` is the decompressed offset there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Boundary {
    /// Bit offset in the compressed object (bit 0 is the lowest bit of byte 0).
    pub in_bit: u64,
    /// Offset in the decompressed stream.
    pub out: u64,
}

/// Where the worker of one chunk starts decoding: a [`Boundary`] plus where its window was
/// spooled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ResumePoint {
    /// Bit offset of the boundary in the compressed object; fetch from byte `in_bit / 8`.
    pub in_bit: u64,
    /// Decompressed offset of the boundary; discard `chunk.start - out` bytes after resuming.
    pub out: u64,
    /// Offset of this point's window in the spooled windows (see [`ResumeLog::new`]).
    pub window_at: u64,
    /// Length of the window: up to [`WINDOW_SIZE`], less near a member start, 0 for zstd.
    pub window_len: u32,
}

impl ResumePoint {
    /// The first compressed byte a worker must fetch.
    pub fn input_start(&self) -> u64 {
        self.in_bit / 8
    }
}

/// The boundaries of one compressed input, and the windows of those a chunk may still start at.
///
/// The planner shares it (`Arc<Mutex<_>>`) between the decoding reader ([`GzipIndexer`],
/// [`ZstdIndexer`]), which calls [`boundary`](Self::boundary), and the chunk cutter, which calls
/// [`last_at_or_before`](Self::last_at_or_before) and [`cut`](Self::cut). `W` receives the
/// windows of the points handed out; by default a spool file.
///
/// # Contract
///
/// - Boundaries arrive in stream order: `in_bit` increasing, `out` not decreasing.
/// - Cuts arrive in order (`out` not decreasing), each after the reader has produced at least
///   up to it, so the boundaries at or before it are logged.
/// - [`input_end`](Self::input_end) answers only once the reader has reached the end of the
///   stream.
#[derive(Debug)]
pub struct ResumeLog<W = File> {
    bounds: Vec<Boundary>,
    /// The windows of `bounds[first_pending..]`, one per boundary.
    pending: VecDeque<Box<[u8]>>,
    first_pending: usize,
    /// The point handed out last, with its index in `bounds`: a later cut may resume there too.
    last_point: Option<(usize, ResumePoint)>,
    last_cut: u64,
    windows: W,
    windows_written: u64,
}

impl<W> ResumeLog<W> {
    /// An empty log whose cuts append their windows to `windows`.
    ///
    /// `window_at` in the points counts the bytes this log wrote, so `windows` should start
    /// empty (or the caller adds its starting offset).
    pub fn new(windows: W) -> Self {
        Self {
            bounds: Vec::new(),
            pending: VecDeque::new(),
            first_pending: 0,
            last_point: None,
            last_cut: 0,
            windows,
            windows_written: 0,
        }
    }

    /// Records a boundary and the output before it that resuming there needs (the last
    /// [`WINDOW_SIZE`] bytes are kept if `window` is longer).
    ///
    /// A boundary at the same decompressed offset as the last one replaces it (or is dropped
    /// when the last one was handed out already): nothing lies between them, so either serves,
    /// and empty blocks, members or frames cannot grow the log. Past [`MAX_WINDOWS_HELD`]
    /// windows, the boundary replaces the newest one held.
    pub fn boundary(&mut self, at: Boundary, mut window: Vec<u8>) {
        debug_assert!(
            self.bounds.last().is_none_or(|last| last.in_bit < at.in_bit && last.out <= at.out),
            "boundaries out of order: {:?} after {:?}",
            at,
            self.bounds.last()
        );
        if window.len() > WINDOW_SIZE {
            window.drain(..window.len() - WINDOW_SIZE);
        }
        let same_place = self.bounds.last().is_some_and(|last| last.out == at.out);
        if same_place && self.pending.is_empty() {
            return;
        }
        if same_place || self.pending.len() >= MAX_WINDOWS_HELD {
            self.bounds.pop();
            self.pending.pop_back();
        }
        self.bounds.push(at);
        self.pending.push_back(window.into_boxed_slice());
    }

    /// The decompressed offset of the last boundary at or before `out`, if any.
    ///
    /// The cutter closes a chunk once one lies inside the record that just ended, so that the
    /// next chunk resumes less than one record before its start.
    pub fn last_at_or_before(&self, out: u64) -> Option<u64> {
        self.last_index_at_or_before(out).map(|index| self.bounds[index].out)
    }

    /// The compressed byte offset a worker must read up to so that every byte before
    /// `chunk_end` is produced: that of the first boundary at or after `chunk_end`, rounded up
    /// to a byte, else the end of the object.
    ///
    /// Nothing more is needed: every deflate symbol that produces output before a block
    /// boundary lies wholly before it, and zlib emits what the input it has allows. The property
    /// tests read exactly up to this offset.
    pub fn input_end(&self, chunk_end: u64, object_size: u64) -> u64 {
        let first_after = self.bounds.partition_point(|b| b.out < chunk_end);
        match self.bounds.get(first_after) {
            Some(b) => b.in_bit.div_ceil(8).min(object_size),
            None => object_size,
        }
    }

    /// Every boundary logged so far, in stream order.
    pub fn boundaries(&self) -> &[Boundary] {
        &self.bounds
    }

    /// How many windows the log holds in memory (those of boundaries after the last cut).
    pub fn windows_held(&self) -> usize {
        self.pending.len()
    }

    /// How many window bytes the cuts have written so far: the size of the index to upload.
    pub fn windows_written(&self) -> u64 {
        self.windows_written
    }

    fn last_index_at_or_before(&self, out: u64) -> Option<usize> {
        self.bounds.partition_point(|b| b.out <= out).checked_sub(1)
    }
}

impl<W: Write> ResumeLog<W> {
    /// A chunk starts at decompressed offset `out`: returns the point its worker resumes at (the
    /// last boundary at or before `out`) and writes that point's window, unless the previous
    /// cut already chose the same point. `None` if no boundary is at or before `out` yet.
    ///
    /// Windows of earlier boundaries are dropped: no later cut can resume before this one.
    pub fn cut(&mut self, out: u64) -> io::Result<Option<ResumePoint>> {
        if out < self.last_cut {
            return Err(io::Error::new(
                ErrorKind::InvalidInput,
                format!("a chunk cut at decompressed byte {out} comes before the previous cut at {}", self.last_cut),
            ));
        }
        self.last_cut = out;
        let Some(index) = self.last_index_at_or_before(out) else { return Ok(None) };
        match &self.last_point {
            Some((last, point)) if *last == index => Ok(Some(point.clone())),
            _ => self.hand_out(index).map(Some),
        }
    }

    /// Flushes and returns the window writer.
    pub fn into_windows(mut self) -> io::Result<W> {
        self.windows.flush()?;
        Ok(self.windows)
    }

    fn hand_out(&mut self, index: usize) -> io::Result<ResumePoint> {
        // Cuts only move forward, so `index` is past the last point handed out and its window
        // is still pending.
        let slot = index - self.first_pending;
        let window = &self.pending[slot];
        self.windows.write_all(window)?;
        let point = ResumePoint {
            in_bit: self.bounds[index].in_bit,
            out: self.bounds[index].out,
            window_at: self.windows_written,
            window_len: window.len() as u32,
        };
        self.windows_written += window.len() as u64;
        self.pending.drain(..=slot);
        self.first_pending = index + 1;
        self.last_point = Some((index, point.clone()));
        Ok(point)
    }
}

/// How far apart the boundaries an indexer logs are: at least `min` bytes of output, the
/// first one always.
#[derive(Debug, Default)]
struct Gap {
    min: u64,
    /// The decompressed offset of the last boundary logged; `None` before the first.
    last: Option<u64>,
}

impl Gap {
    /// Whether a boundary at `out` is to be logged; if so, it counts as the last one.
    fn take(&mut self, out: u64) -> bool {
        let due = self.last.is_none_or(|last| out - last >= self.min);
        if due {
            self.last = Some(out);
        }
        due
    }
}

/// Locks a shared log. A poisoned lock means the other side (the cutter) panicked and the plan
/// fails anyway; panicking here too would only hide its message, so the log is used as is.
fn lock<W>(log: &Mutex<ResumeLog<W>>) -> MutexGuard<'_, ResumeLog<W>> {
    log.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A source of compressed bytes with the offset of what has been taken from it.
struct Input<R> {
    src: R,
    buf: Box<[u8]>,
    lo: usize,
    hi: usize,
    /// Offset in the source of `buf[0]`.
    start: u64,
    eof: bool,
}

impl<R: Read> Input<R> {
    fn new(src: R) -> Self {
        Self { src, buf: vec![0; INPUT_BUFFER_SIZE].into_boxed_slice(), lo: 0, hi: 0, start: 0, eof: false }
    }

    /// Reads more from the source if everything read so far was consumed.
    fn fill(&mut self) -> io::Result<()> {
        if self.lo < self.hi || self.eof {
            return Ok(());
        }
        self.start += self.hi as u64;
        (self.lo, self.hi) = (0, 0);
        loop {
            match self.src.read(&mut self.buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.hi = n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            return Ok(());
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.lo..self.hi]
    }

    fn consume(&mut self, n: usize) {
        self.lo += n;
    }

    /// Offset in the source of the next byte not consumed.
    fn offset(&self) -> u64 {
        self.start + self.lo as u64
    }

    fn exhausted(&self) -> bool {
        self.lo == self.hi && self.eof
    }
}

#[cfg(test)]
mod tests {
    //! The inputs, and the planner's and a worker's steps, that the gzip and zstd tests share;
    //! and the tests of the log itself.

    use std::sync::Arc;

    use super::*;

    // ---- inputs ----

    /// Lines like a CSV export, with runs of random bytes in between so that deflate writes
    /// stored blocks as well as compressed ones.
    pub(super) fn sample(rng: &mut fastrand::Rng, len: usize, noise: bool) -> Vec<u8> {
        const CITIES: [&str; 6] = ["Lyon", "Osaka", "Quito", "Perth", "Oslo", "Tulsa"];
        let mut data = Vec::with_capacity(len + 4096);
        while data.len() < len {
            if noise && rng.u8(..) < 24 {
                let start = data.len();
                data.resize(start + rng.usize(1..80_000), 0);
                rng.fill(&mut data[start..]);
            } else {
                for _ in 0..rng.usize(1..600) {
                    let (id, city, amount) =
                        (rng.u32(..1_000_000), CITIES[rng.usize(..CITIES.len())], rng.u32(..99_999));
                    writeln!(data, "{id},{city},{}.{:02},\"note, with a comma\"", amount / 100, amount % 100).unwrap();
                }
            }
        }
        data.truncate(len);
        data
    }

    /// Splits `data` into `parts` pieces at random places; some pieces may be empty.
    pub(super) fn split(rng: &mut fastrand::Rng, data: &[u8], parts: usize) -> Vec<Vec<u8>> {
        let mut ends: Vec<usize> = (1..parts).map(|_| rng.usize(..=data.len())).collect();
        ends.push(data.len());
        ends.sort_unstable();
        let mut start = 0;
        ends.into_iter()
            .map(|end| {
                let piece = data[start..end].to_vec();
                start = end;
                piece
            })
            .collect()
    }

    /// A source that returns a few bytes per read, as a slow network might.
    pub(super) struct Trickle<'a> {
        pub(super) data: &'a [u8],
        pub(super) rng: fastrand::Rng,
        pub(super) most: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.rng.usize(1..=self.most).min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    // ---- indexing and resuming ----

    #[derive(Clone, Copy, Debug, PartialEq)]
    pub(super) enum Format {
        Gzip,
        Zstd,
    }

    /// One chunk as the planner would hand it to a worker.
    #[derive(Debug)]
    pub(super) struct Chunk {
        pub(super) start: u64,
        pub(super) end: u64,
        pub(super) point: ResumePoint,
        pub(super) input_end: u64,
    }

    pub(super) struct Indexed {
        pub(super) plain: Vec<u8>,
        pub(super) bounds: Vec<Boundary>,
        pub(super) chunks: Vec<Chunk>,
        pub(super) windows: Vec<u8>,
        pub(super) most_windows_held: usize,
    }

    /// Indexes `object` as the planner does: reads in pieces of up to `read_size` bytes and cuts a
    /// chunk at each of `cuts` (sorted) once the output has passed it by `ahead` bytes (the
    /// planner's scanner reads through a buffer, so the decoder runs ahead of the cuts).
    pub(super) fn index(
        format: Format,
        object: &[u8],
        min_gap: u64,
        cuts: &[u64],
        read_size: usize,
        ahead: u64,
    ) -> io::Result<Indexed> {
        let log = Arc::new(Mutex::new(ResumeLog::new(Vec::new())));
        let mut reader: Box<dyn Read> = match format {
            Format::Gzip => Box::new(GzipIndexer::new(object, log.clone())?.with_min_gap(min_gap)),
            Format::Zstd => Box::new(ZstdIndexer::new(object, log.clone()).with_min_gap(min_gap)),
        };
        let mut rng = fastrand::Rng::with_seed(read_size as u64);
        let (mut plain, mut buf) = (Vec::new(), vec![0; read_size]);
        let (mut points, mut next_cut, mut most_windows_held) = (Vec::new(), 0, 0);
        loop {
            let want = rng.usize(1..=read_size);
            let n = reader.read(&mut buf[..want])?;
            plain.extend_from_slice(&buf[..n]);
            let mut log = lock(&log);
            most_windows_held = most_windows_held.max(log.windows_held());
            while next_cut < cuts.len() && (cuts[next_cut] + ahead <= plain.len() as u64 || n == 0) {
                let point = log.cut(cuts[next_cut])?.expect("a boundary at or before every cut");
                points.push(point);
                next_cut += 1;
            }
            if n == 0 {
                break;
            }
        }
        drop(reader);
        let log = Arc::try_unwrap(log).expect("the reader is gone").into_inner().unwrap();
        let ends = cuts.iter().skip(1).copied().chain([plain.len() as u64]);
        let chunks = cuts
            .iter()
            .zip(ends)
            .zip(points)
            .map(|((&start, end), point)| Chunk {
                start,
                end,
                point,
                input_end: log.input_end(end, object.len() as u64),
            })
            .collect();
        let bounds = log.boundaries().to_vec();
        Ok(Indexed { plain, bounds, chunks, windows: log.into_windows()?, most_windows_held })
    }

    /// What a worker does: fetch `[point.input_start(), input_end)` and the window, resume,
    /// discard up to the chunk start, read the chunk. Returns the chunk's bytes.
    pub(super) fn read_chunk(
        format: Format,
        object: &[u8],
        windows: &[u8],
        chunk: &Chunk,
        trickle: Option<u64>,
    ) -> Vec<u8> {
        let p = &chunk.point;
        assert!(p.out <= chunk.start, "{chunk:?}");
        let range = &object[p.input_start() as usize..chunk.input_end as usize];
        let window = &windows[p.window_at as usize..(p.window_at + u64::from(p.window_len)) as usize];
        let src: Box<dyn Read> = match trickle {
            Some(seed) => Box::new(Trickle { data: range, rng: fastrand::Rng::with_seed(seed), most: 7 }),
            None => Box::new(range),
        };
        let mut reader: Box<dyn Read> = match format {
            Format::Gzip => Box::new(resume_gzip(p, window, src).unwrap()),
            Format::Zstd => Box::new(resume_zstd(src).unwrap()),
        };
        let skip = chunk.start - p.out;
        assert_eq!(io::copy(&mut (&mut reader).take(skip), &mut io::sink()).unwrap(), skip, "{chunk:?}");
        let mut bytes = Vec::new();
        reader.take(chunk.end - chunk.start).read_to_end(&mut bytes).unwrap();
        bytes
    }

    pub(super) fn assert_chunks_resume(format: Format, object: &[u8], indexed: &Indexed, trickle: bool) {
        for (i, chunk) in indexed.chunks.iter().enumerate() {
            let bytes = read_chunk(format, object, &indexed.windows, chunk, trickle.then_some(i as u64));
            let want = &indexed.plain[chunk.start as usize..chunk.end as usize];
            assert!(bytes == want, "chunk {i} {chunk:?}: got {} bytes, want {}", bytes.len(), want.len());
        }
    }

    /// Chunk starts: 0, random offsets, and some boundaries' offsets (the tightest case for
    /// `input_end`: a chunk then ends exactly at a boundary).
    pub(super) fn choose_cuts(rng: &mut fastrand::Rng, total: u64, bounds: &[Boundary], random: usize) -> Vec<u64> {
        let mut cuts = vec![0];
        if total > 0 {
            cuts.extend((0..random).map(|_| rng.u64(..total)));
        }
        cuts.extend(bounds.iter().filter(|_| rng.u8(..4) == 0).map(|b| b.out));
        cuts.retain(|&c| c < total.max(1));
        cuts.sort_unstable();
        cuts.dedup();
        if total == 0 {
            cuts.clear();
        }
        cuts
    }

    pub(super) fn proptest_cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24)
    }

    // ---- errors ----

    pub(super) fn index_error(format: Format, object: &[u8]) -> io::Error {
        match index(format, object, 0, &[], 64 * 1024, 0) {
            Ok(indexed) => panic!("indexing succeeded with {} bytes", indexed.plain.len()),
            Err(e) => e,
        }
    }

    // ---- the log ----

    #[test]
    fn boundaries_at_one_offset_are_one_and_the_windows_held_are_capped() {
        let mut log = ResumeLog::new(Vec::new());
        for i in 0..1_000 {
            log.boundary(Boundary { in_bit: 10 * i, out: 0 }, Vec::new());
        }
        assert_eq!(log.boundaries(), &[Boundary { in_bit: 9_990, out: 0 }], "the last of them, alone");
        for i in 1..10_000u64 {
            log.boundary(Boundary { in_bit: 100_000 + 100 * i, out: 1_000 * i }, vec![1; WINDOW_SIZE]);
            assert!(log.windows_held() <= MAX_WINDOWS_HELD, "{} windows held", log.windows_held());
        }
        assert!(log.boundaries().len() <= MAX_WINDOWS_HELD);
        assert_eq!(log.last_at_or_before(u64::MAX), Some(9_999_000), "the newest boundary is kept");
        let point = log.cut(9_999_500).unwrap().unwrap();
        assert_eq!((point.out, point.window_len), (9_999_000, WINDOW_SIZE as u32));
        // At the offset of a point handed out already: nothing new.
        log.boundary(Boundary { in_bit: 2_000_000, out: 9_999_000 }, Vec::new());
        assert_eq!(log.boundaries().last(), Some(&Boundary { in_bit: 1_099_900, out: 9_999_000 }));
        assert_eq!(log.windows_held(), 0);
    }

    #[test]
    fn a_cut_reuses_the_previous_window_when_no_boundary_came_between() {
        let mut log = ResumeLog::new(Vec::new());
        assert_eq!(log.cut(0).unwrap(), None);
        log.boundary(Boundary { in_bit: 80, out: 0 }, Vec::new());
        log.boundary(Boundary { in_bit: 1_003, out: 5_000 }, vec![7; 5_000]);
        log.boundary(Boundary { in_bit: 9_001, out: 60_000 }, vec![8; 40_000]);
        assert_eq!(log.last_at_or_before(4_999), Some(0));
        assert_eq!(log.last_at_or_before(5_000), Some(5_000));

        let first = log.cut(6_000).unwrap().unwrap();
        assert_eq!(first, ResumePoint { in_bit: 1_003, out: 5_000, window_at: 0, window_len: 5_000 });
        assert_eq!(log.windows_held(), 1);
        assert_eq!(log.cut(7_000).unwrap(), Some(first));
        let third = log.cut(60_000).unwrap().unwrap();
        assert_eq!((third.window_at, third.window_len), (5_000, WINDOW_SIZE as u32));
        assert_eq!(log.windows_held(), 0);
        assert_eq!(log.cut(59_999).unwrap_err().kind(), ErrorKind::InvalidInput);

        assert_eq!(log.input_end(5_000, 2_000), 126);
        assert_eq!(log.input_end(5_001, 2_000), 1_126);
        assert_eq!(log.input_end(60_001, 2_000), 2_000);
        let windows = log.into_windows().unwrap();
        assert_eq!(windows.len(), 5_000 + WINDOW_SIZE);
        assert!(windows[..5_000].iter().all(|&b| b == 7) && windows[5_000..].iter().all(|&b| b == 8));
    }
}

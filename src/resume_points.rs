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

#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use std::collections::VecDeque;
use std::ffi::{c_int, c_uint, CStr};
use std::fs::File;
use std::io::{self, ErrorKind, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use libz_rs_sys::{z_stream, Z_BLOCK, Z_BUF_ERROR, Z_NO_FLUSH, Z_OK, Z_STREAM_END};
use serde::{Deserialize, Serialize};
use zstd::zstd_safe::{self, DCtx, InBuffer, OutBuffer};

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

/// zlib's `windowBits` for a gzip wrapper (15 + 16): zlib parses the header and checks each
/// member's CRC-32 and length.
const GZIP_WINDOW_BITS: c_int = 31;

/// zlib's `windowBits` for raw deflate with a 32 KiB window: no header, no trailer.
const RAW_WINDOW_BITS: c_int = -15;

/// A gzip member ends with its CRC-32 and its length mod 2^32.
const GZIP_TRAILER_LEN: usize = 8;

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

/// A `Read` adapter that decompresses a gzip stream (every member, CRC and length checked) and
/// logs its [`Boundary`]s with their windows into a shared [`ResumeLog`].
///
/// A boundary is logged at the end of each member header (window empty) and at the end of each
/// deflate block but a member's last one. Errors: a truncated stream gives
/// [`ErrorKind::UnexpectedEof`]; corrupt data, a CRC or length mismatch, or trailing bytes that
/// are not a gzip member give [`ErrorKind::InvalidData`] with zlib's message.
pub struct GzipIndexer<R, W = File> {
    input: Input<R>,
    z: Inflater,
    log: Arc<Mutex<ResumeLog<W>>>,
    recent: RecentOutput,
    out: u64,
    /// Decompressed offset where the current member starts: its window cannot reach before.
    member_out: u64,
    members: u64,
    in_header: bool,
    gap: Gap,
    done: bool,
}

impl<R: Read, W> GzipIndexer<R, W> {
    /// Decompresses `src`, a whole gzip object from its first byte, logging into `log`.
    pub fn new(src: R, log: Arc<Mutex<ResumeLog<W>>>) -> io::Result<Self> {
        Ok(Self {
            input: Input::new(src),
            z: Inflater::new(GZIP_WINDOW_BITS)?,
            log,
            recent: RecentOutput::new(),
            out: 0,
            member_out: 0,
            members: 0,
            in_header: true,
            gap: Gap::default(),
            done: false,
        })
    }

    /// Logs a boundary (a block's or a member's start) only if at least `bytes` of output
    /// passed since the last one logged, to spend less memory and time on windows (the
    /// planner asks for [`MIN_GAP`] or more). The first member's start is always logged.
    pub fn with_min_gap(mut self, bytes: u64) -> Self {
        self.gap.min = bytes;
        self
    }

    fn log_boundary(&mut self, unused_bits: u64) {
        self.in_header = false;
        if !self.gap.take(self.out) {
            return;
        }
        // zlib has taken whole bytes from the input; the last `unused_bits` of them belong to
        // the next block.
        let at = Boundary { in_bit: self.input.offset() * 8 - unused_bits, out: self.out };
        let window_len = (self.out - self.member_out).min(WINDOW_SIZE as u64) as usize;
        let window = self.recent.tail(window_len);
        lock(&self.log).boundary(at, window);
    }

    /// A member ended and zlib checked its trailer: stop at the end of the input, else expect
    /// another member.
    fn end_member(&mut self) -> io::Result<()> {
        self.members += 1;
        self.input.fill()?;
        if self.input.exhausted() {
            self.done = true;
        } else {
            self.z.reset(GZIP_WINDOW_BITS)?;
            self.member_out = self.out;
            self.in_header = true;
        }
        Ok(())
    }

    fn truncated(&self) -> io::Error {
        let at = self.input.offset();
        let message = if at == 0 {
            "gzip stream is empty".to_owned()
        } else if self.in_header && self.members > 0 {
            format!(
                "gzip stream is truncated: it ends at compressed byte {at} inside the header of member {}",
                self.members + 1
            )
        } else {
            format!("gzip stream is truncated: it ends at compressed byte {at} inside member {}", self.members + 1)
        };
        io::Error::new(ErrorKind::UnexpectedEof, message)
    }

    fn corrupt(&self) -> io::Error {
        let at = self.input.offset();
        let reason = self.z.message();
        let message = if self.in_header && self.members > 0 {
            format!("bytes after gzip member {} at compressed byte {at} are not a gzip member: {reason}", self.members)
        } else {
            format!("corrupt gzip stream in member {} near compressed byte {at}: {reason}", self.members + 1)
        };
        io::Error::new(ErrorKind::InvalidData, message)
    }
}

impl<R: Read, W> Read for GzipIndexer<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.done {
            self.input.fill()?;
            let step = self.z.inflate(self.input.pending(), buf, Z_BLOCK);
            self.input.consume(step.read);
            self.recent.push(&buf[..step.written]);
            self.out += step.written as u64;
            match step.code {
                Z_OK | Z_BUF_ERROR | Z_STREAM_END if step.at_block_boundary() => self.log_boundary(step.unused_bits()),
                _ => {}
            }
            match step.code {
                Z_STREAM_END => self.end_member()?,
                Z_OK | Z_BUF_ERROR if step.made_no_progress() && self.input.exhausted() => return Err(self.truncated()),
                Z_OK | Z_BUF_ERROR => {}
                _ => return Err(self.corrupt()),
            }
            if step.written > 0 {
                return Ok(step.written);
            }
        }
        Ok(0)
    }
}

/// Decompresses from a gzip [`ResumePoint`]: `window` is the point's window and `src` yields the
/// compressed object from byte [`point.input_start()`](ResumePoint::input_start) on.
///
/// Decoding continues across member ends (their trailers are skipped: the planner checked every
/// member) into the following members. `src` ending early is a normal end: a worker reads only
/// up to [`ResumeLog::input_end`].
pub fn resume_gzip<R: Read>(point: &ResumePoint, window: &[u8], src: R) -> io::Result<impl Read> {
    let mut z = Inflater::new(RAW_WINDOW_BITS)?;
    let mut input = Input::new(src);
    let shift = (point.in_bit % 8) as u32;
    if shift != 0 {
        // The block starts inside this byte: hand zlib its upper 8 - shift bits.
        input.fill()?;
        let Some(&first) = input.pending().first() else {
            return Err(io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("no compressed data to resume from at bit {}", point.in_bit),
            ));
        };
        z.prime(8 - shift as c_int, c_int::from(first >> shift))?;
        input.consume(1);
    }
    if !window.is_empty() {
        z.set_dictionary(window)?;
    }
    Ok(GzipResume { input, start: point.input_start(), z, raw: true, trailer_left: 0, done: false })
}

/// The reader [`resume_gzip`] returns.
struct GzipResume<R> {
    input: Input<R>,
    /// Offset in the object of the first byte of `input`, for messages.
    start: u64,
    z: Inflater,
    /// Still in the member resumed in, decoded as raw deflate: zlib will not read its trailer.
    raw: bool,
    trailer_left: usize,
    done: bool,
}

impl<R: Read> GzipResume<R> {
    /// Skips what is left of a raw member's trailer, then moves on to the next member.
    fn skip_trailer(&mut self) -> io::Result<()> {
        self.input.fill()?;
        if self.input.exhausted() {
            self.done = true;
            return Ok(());
        }
        let n = self.trailer_left.min(self.input.pending().len());
        self.input.consume(n);
        self.trailer_left -= n;
        if self.trailer_left == 0 {
            self.next_member()?;
        }
        Ok(())
    }

    fn next_member(&mut self) -> io::Result<()> {
        self.input.fill()?;
        if self.input.exhausted() {
            self.done = true;
        } else {
            // Back to a gzip wrapper so zlib parses the header, whatever fields it has.
            self.z.reset(GZIP_WINDOW_BITS)?;
        }
        Ok(())
    }
}

impl<R: Read> Read for GzipResume<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.done {
            if self.trailer_left > 0 {
                self.skip_trailer()?;
                continue;
            }
            self.input.fill()?;
            let step = self.z.inflate(self.input.pending(), buf, Z_NO_FLUSH);
            self.input.consume(step.read);
            match step.code {
                Z_STREAM_END if self.raw => {
                    self.raw = false;
                    self.trailer_left = GZIP_TRAILER_LEN;
                }
                Z_STREAM_END => self.next_member()?,
                Z_OK | Z_BUF_ERROR if step.made_no_progress() && self.input.exhausted() => self.done = true,
                Z_OK | Z_BUF_ERROR => {}
                _ => {
                    return Err(io::Error::new(
                        ErrorKind::InvalidData,
                        format!(
                            "corrupt gzip stream near compressed byte {} (resumed at byte {}): {}",
                            self.start + self.input.offset(),
                            self.start,
                            self.z.message()
                        ),
                    ))
                }
            }
            if step.written > 0 {
                return Ok(step.written);
            }
        }
        Ok(0)
    }
}

/// A `Read` adapter that decompresses a zstd stream (any number of frames, skippable frames
/// included) and logs a [`Boundary`] at every frame start, the first at 0, into a shared
/// [`ResumeLog`]. Frames need no window.
///
/// Errors: a truncated frame gives [`ErrorKind::UnexpectedEof`], corrupt data or trailing bytes
/// that are not a frame give [`ErrorKind::InvalidData`] with zstd's message.
pub struct ZstdIndexer<R, W = File> {
    input: Input<R>,
    dctx: DCtx<'static>,
    log: Arc<Mutex<ResumeLog<W>>>,
    out: u64,
    frames: u64,
    at_frame_start: bool,
    gap: Gap,
    done: bool,
}

impl<R: Read, W> ZstdIndexer<R, W> {
    /// Decompresses `src`, a whole zstd object from its first byte, logging into `log`.
    pub fn new(src: R, log: Arc<Mutex<ResumeLog<W>>>) -> Self {
        Self {
            input: Input::new(src),
            dctx: DCtx::create(),
            log,
            out: 0,
            frames: 0,
            at_frame_start: true,
            gap: Gap::default(),
            done: false,
        }
    }

    /// Logs a frame start only if at least `bytes` of output passed since the last one logged
    /// (the first frame's start is always logged): a resumed worker decodes the frames between.
    pub fn with_min_gap(mut self, bytes: u64) -> Self {
        self.gap.min = bytes;
        self
    }

    fn start_frame(&mut self) {
        if self.gap.take(self.out) {
            let at = Boundary { in_bit: self.input.offset() * 8, out: self.out };
            lock(&self.log).boundary(at, Vec::new());
        }
        self.frames += 1;
        self.at_frame_start = false;
    }

    fn stream_error(&self, code: usize) -> io::Error {
        io::Error::new(
            ErrorKind::InvalidData,
            format!(
                "corrupt zstd stream in frame {} near compressed byte {}: {}",
                self.frames,
                self.input.offset(),
                zstd_safe::get_error_name(code)
            ),
        )
    }
}

impl<R: Read, W> Read for ZstdIndexer<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while !self.done {
            self.input.fill()?;
            if self.at_frame_start {
                if self.input.exhausted() && self.frames == 0 {
                    // As `zstd::Decoder` does: an empty object is not a zstd stream.
                    return Err(io::Error::new(ErrorKind::UnexpectedEof, "zstd stream is empty"));
                }
                if self.input.exhausted() {
                    self.done = true;
                    break;
                }
                self.start_frame();
            }
            let mut input = InBuffer::around(self.input.pending());
            let mut output = OutBuffer::around(&mut *buf);
            let result = self.dctx.decompress_stream(&mut output, &mut input);
            let (read, written) = (input.pos(), output.pos());
            self.input.consume(read);
            self.out += written as u64;
            match result {
                // 0: the frame is decoded and flushed, and the input stops right after it.
                Ok(0) => self.at_frame_start = true,
                Ok(_) if read == 0 && written == 0 && self.input.exhausted() => {
                    return Err(io::Error::new(
                        ErrorKind::UnexpectedEof,
                        format!(
                            "zstd stream is truncated: it ends at compressed byte {} inside frame {}",
                            self.input.offset(),
                            self.frames
                        ),
                    ))
                }
                Ok(_) => {}
                Err(code) => return Err(self.stream_error(code)),
            }
            if written > 0 {
                return Ok(written);
            }
        }
        Ok(0)
    }
}

/// Decompresses from a zstd [`ResumePoint`]: `src` yields the compressed object from the
/// point's frame start on, through any number of whole frames.
pub fn resume_zstd<R: Read>(src: R) -> io::Result<impl Read> {
    zstd::Decoder::new(src)
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

/// The last [`WINDOW_SIZE`] bytes of output, kept as a ring.
struct RecentOutput {
    ring: Box<[u8]>,
    /// Where the next byte goes.
    end: usize,
    filled: usize,
}

impl RecentOutput {
    fn new() -> Self {
        Self { ring: vec![0; WINDOW_SIZE].into_boxed_slice(), end: 0, filled: 0 }
    }

    fn push(&mut self, data: &[u8]) {
        let data = &data[data.len().saturating_sub(WINDOW_SIZE)..];
        let first = data.len().min(WINDOW_SIZE - self.end);
        self.ring[self.end..self.end + first].copy_from_slice(&data[..first]);
        self.ring[..data.len() - first].copy_from_slice(&data[first..]);
        self.end = (self.end + data.len()) % WINDOW_SIZE;
        self.filled = (self.filled + data.len()).min(WINDOW_SIZE);
    }

    /// The last `n` bytes pushed (fewer if fewer were pushed).
    fn tail(&self, n: usize) -> Vec<u8> {
        let n = n.min(self.filled);
        let start = (self.end + WINDOW_SIZE - n) % WINDOW_SIZE;
        let mut tail = Vec::with_capacity(n);
        if start + n <= WINDOW_SIZE {
            tail.extend_from_slice(&self.ring[start..start + n]);
        } else {
            tail.extend_from_slice(&self.ring[start..]);
            tail.extend_from_slice(&self.ring[..self.end]);
        }
        tail
    }
}

/// What one `inflate` call did.
struct Step {
    code: c_int,
    read: usize,
    written: usize,
    data_type: c_int,
}

impl Step {
    /// zlib stopped at the start of a deflate block (bit 7 of `data_type`) that does not follow
    /// the last block (bit 6): after a non-last block, or after a gzip header.
    fn at_block_boundary(&self) -> bool {
        self.data_type & 0xC0 == 0x80
    }

    /// Bits of the bytes taken from the input that zlib has not decoded yet.
    fn unused_bits(&self) -> u64 {
        (self.data_type & 0x3F) as u64
    }

    fn made_no_progress(&self) -> bool {
        self.read == 0 && self.written == 0
    }
}

/// A zlib inflater over zlib-rs, through its C API: the only API with `Z_BLOCK`, `data_type` and
/// `inflatePrime`. All the unsafe code of this module is here.
///
/// Invariant: `0` was initialized by `inflateInit2_` and is ended only in `Drop`; `next_in` and
/// `next_out` are null between calls.
struct Inflater(Box<z_stream>);

// SAFETY: the stream's state is allocated by zlib-rs for this stream alone and is reached only
// through `&mut self`; between calls it holds no pointers to borrowed buffers (`next_in` and
// `next_out` are null) and `msg` points to static strings. zlib keeps no thread-local state, so
// the inflater may move to another thread.
unsafe impl Send for Inflater {}

impl Inflater {
    fn new(window_bits: c_int) -> io::Result<Self> {
        // Boxed because zlib's state points back at the stream: it must not move.
        let mut stream = Box::new(z_stream::default());
        // SAFETY: `stream` is a valid z_stream with zalloc/zfree set by `Default`; the version is
        // zlib-rs's own NUL-terminated string and the size is that of the struct it expects.
        let code = unsafe {
            libz_rs_sys::inflateInit2_(
                &mut *stream,
                window_bits,
                libz_rs_sys::zlibVersion(),
                std::mem::size_of::<z_stream>() as c_int,
            )
        };
        if code != Z_OK {
            return Err(io::Error::other(format!("cannot start a zlib inflater (code {code})")));
        }
        Ok(Self(stream))
    }

    fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: c_int) -> Step {
        let avail_in = input.len().min(c_uint::MAX as usize) as c_uint;
        let avail_out = output.len().min(c_uint::MAX as usize) as c_uint;
        let stream = &mut *self.0;
        stream.next_in = input.as_ptr();
        stream.avail_in = avail_in;
        stream.next_out = output.as_mut_ptr();
        stream.avail_out = avail_out;
        // SAFETY: the stream is initialized (type invariant); next_in/avail_in describe `input`
        // and next_out/avail_out describe `output`, both borrowed for the whole call.
        let code = unsafe { libz_rs_sys::inflate(stream, flush) };
        let step = Step {
            code,
            read: (avail_in - stream.avail_in) as usize,
            written: (avail_out - stream.avail_out) as usize,
            data_type: stream.data_type,
        };
        stream.next_in = std::ptr::null();
        stream.avail_in = 0;
        stream.next_out = std::ptr::null_mut();
        stream.avail_out = 0;
        step
    }

    /// Inserts the low `bits` bits of `value` before the next input byte.
    fn prime(&mut self, bits: c_int, value: c_int) -> io::Result<()> {
        // SAFETY: the stream is initialized (type invariant).
        let code = unsafe { libz_rs_sys::inflatePrime(&mut *self.0, bits, value) };
        self.check(code, "inflatePrime")
    }

    fn set_dictionary(&mut self, dictionary: &[u8]) -> io::Result<()> {
        let len = c_uint::try_from(dictionary.len())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "a deflate window is at most 32 KiB"))?;
        // SAFETY: the stream is initialized (type invariant); the pointer and length describe
        // `dictionary`, which zlib copies into its own window before returning.
        let code = unsafe { libz_rs_sys::inflateSetDictionary(&mut *self.0, dictionary.as_ptr(), len) };
        self.check(code, "inflateSetDictionary")
    }

    fn reset(&mut self, window_bits: c_int) -> io::Result<()> {
        // SAFETY: the stream is initialized (type invariant).
        let code = unsafe { libz_rs_sys::inflateReset2(&mut *self.0, window_bits) };
        self.check(code, "inflateReset2")
    }

    /// zlib's message for the last error.
    fn message(&self) -> String {
        if self.0.msg.is_null() {
            return "unknown zlib error".to_owned();
        }
        // SAFETY: a non-null `msg` points to a NUL-terminated string that zlib-rs keeps alive
        // (it sets only static strings); we copy it out right away.
        unsafe { CStr::from_ptr(self.0.msg) }.to_string_lossy().into_owned()
    }

    fn check(&self, code: c_int, call: &str) -> io::Result<()> {
        match code {
            Z_OK => Ok(()),
            _ => Err(io::Error::other(format!("zlib {call} failed (code {code})"))),
        }
    }
}

impl Drop for Inflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialized and is ended only here; the return code only says
        // whether the state was consistent, which nothing can act on in `drop`.
        unsafe { libz_rs_sys::inflateEnd(&mut *self.0) };
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::read::MultiGzDecoder;
    use flate2::write::{DeflateEncoder, GzEncoder};
    use flate2::{Compression, Crc, GzBuilder};
    use proptest::prelude::*;

    use super::*;

    // ---- inputs ----

    /// Lines like a CSV export, with runs of random bytes in between so that deflate writes
    /// stored blocks as well as compressed ones.
    fn sample(rng: &mut fastrand::Rng, len: usize, noise: bool) -> Vec<u8> {
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
    fn split(rng: &mut fastrand::Rng, data: &[u8], parts: usize) -> Vec<Vec<u8>> {
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

    #[derive(Clone, Copy, Debug)]
    enum Header {
        Plain,
        /// FNAME, FCOMMENT and FEXTRA, written by flate2.
        Named,
        /// Every optional field, FHCRC included, written by hand.
        Full,
    }

    fn gzip_member(piece: &[u8], level: u32, header: Header) -> Vec<u8> {
        match header {
            Header::Plain => {
                let mut e = GzEncoder::new(Vec::new(), Compression::new(level));
                e.write_all(piece).unwrap();
                e.finish().unwrap()
            }
            Header::Named => {
                let mut e = GzBuilder::new()
                    .filename("orders.csv")
                    .comment("an export")
                    .extra(vec![b'S', b'B', 3, 0, 1, 2, 3])
                    .write(Vec::new(), Compression::new(level));
                e.write_all(piece).unwrap();
                e.finish().unwrap()
            }
            Header::Full => {
                const FHCRC: u8 = 2;
                const FEXTRA: u8 = 4;
                const FNAME: u8 = 8;
                const FCOMMENT: u8 = 16;
                let mut member = vec![0x1f, 0x8b, 8, FHCRC | FEXTRA | FNAME | FCOMMENT, 1, 2, 3, 4, 0, 255];
                member.extend_from_slice(&[5, 0, b'x', b'y', 2, 0, 9]);
                member.extend_from_slice(b"orders.csv\0a comment\0");
                let mut header_crc = Crc::new();
                header_crc.update(&member);
                member.extend_from_slice(&(header_crc.sum() as u16).to_le_bytes());
                let mut e = DeflateEncoder::new(member, Compression::new(level));
                e.write_all(piece).unwrap();
                let mut member = e.finish().unwrap();
                let mut crc = Crc::new();
                crc.update(piece);
                member.extend_from_slice(&crc.sum().to_le_bytes());
                member.extend_from_slice(&(piece.len() as u32).to_le_bytes());
                member
            }
        }
    }

    fn gzip(pieces: &[Vec<u8>], level: u32, headers: &[Header]) -> Vec<u8> {
        pieces
            .iter()
            .zip(headers.iter().cycle())
            .flat_map(|(piece, &header)| gzip_member(piece, level, header))
            .collect()
    }

    /// Frames made by compressing each piece on its own, with a skippable frame after the
    /// first. Returns the object and the boundaries a reader must find.
    fn zstd_frames(pieces: &[Vec<u8>], level: i32) -> (Vec<u8>, Vec<Boundary>) {
        let (mut object, mut bounds, mut out) = (Vec::new(), Vec::new(), 0);
        for (i, piece) in pieces.iter().enumerate() {
            bounds.push(Boundary { in_bit: object.len() as u64 * 8, out });
            object.extend_from_slice(&zstd::encode_all(&piece[..], level).unwrap());
            out += piece.len() as u64;
            if i == 0 {
                bounds.push(Boundary { in_bit: object.len() as u64 * 8, out });
                object.extend_from_slice(&0x184D_2A53u32.to_le_bytes());
                object.extend_from_slice(&5u32.to_le_bytes());
                object.extend_from_slice(b"pzstd");
            }
        }
        (object, bounds)
    }

    fn multi_gz_decode(object: &[u8]) -> io::Result<Vec<u8>> {
        let mut plain = Vec::new();
        MultiGzDecoder::new(object).read_to_end(&mut plain)?;
        Ok(plain)
    }

    /// A source that returns a few bytes per read, as a slow network might.
    struct Trickle<'a> {
        data: &'a [u8],
        rng: fastrand::Rng,
        most: usize,
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
    enum Format {
        Gzip,
        Zstd,
    }

    /// One chunk as the planner would hand it to a worker.
    #[derive(Debug)]
    struct Chunk {
        start: u64,
        end: u64,
        point: ResumePoint,
        input_end: u64,
    }

    struct Indexed {
        plain: Vec<u8>,
        bounds: Vec<Boundary>,
        chunks: Vec<Chunk>,
        windows: Vec<u8>,
        most_windows_held: usize,
    }

    /// Indexes `object` as the planner does: reads in pieces of up to `read_size` bytes and cuts a
    /// chunk at each of `cuts` (sorted) once the output has passed it by `ahead` bytes (the
    /// planner's scanner reads through a buffer, so the decoder runs ahead of the cuts).
    fn index(
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
    fn read_chunk(format: Format, object: &[u8], windows: &[u8], chunk: &Chunk, trickle: Option<u64>) -> Vec<u8> {
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

    fn assert_chunks_resume(format: Format, object: &[u8], indexed: &Indexed, trickle: bool) {
        for (i, chunk) in indexed.chunks.iter().enumerate() {
            let bytes = read_chunk(format, object, &indexed.windows, chunk, trickle.then_some(i as u64));
            let want = &indexed.plain[chunk.start as usize..chunk.end as usize];
            assert!(bytes == want, "chunk {i} {chunk:?}: got {} bytes, want {}", bytes.len(), want.len());
        }
    }

    /// Chunk starts: 0, random offsets, and some boundaries' offsets (the tightest case for
    /// `input_end`: a chunk then ends exactly at a boundary).
    fn choose_cuts(rng: &mut fastrand::Rng, total: u64, bounds: &[Boundary], random: usize) -> Vec<u64> {
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

    fn proptest_cases() -> u32 {
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(24)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: proptest_cases(), ..ProptestConfig::default() })]

        #[test]
        fn resuming_gzip_at_every_cut_yields_exactly_the_plain_bytes_of_the_chunk(
            seed in any::<u64>(),
            len in 0usize..2_000_000,
            level in prop_oneof![Just(1u32), Just(6), Just(9)],
            members in 1usize..=4,
            random_cuts in 1usize..12,
            min_gap in prop_oneof![Just(0u64), Just(150_000)],
            ahead in prop_oneof![Just(0u64), Just(256 * 1024)],
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let plain = sample(&mut rng, len, true);
            let pieces = split(&mut rng, &plain, members);
            let headers: Vec<Header> = (0..members).map(|_| [Header::Plain, Header::Named, Header::Full][rng.usize(..3)]).collect();
            let object = gzip(&pieces, level, &headers);
            prop_assert!(multi_gz_decode(&object).unwrap() == plain);

            let first = index(Format::Gzip, &object, min_gap, &[], 64 * 1024, 0).unwrap();
            prop_assert!(first.plain == plain);
            // Every member start, the first included, is a boundary (one per decompressed
            // offset: empty members are one with the next), when no gap is asked for.
            let starts: std::collections::BTreeSet<usize> =
                pieces.iter().scan(0, |at, p| { let start = *at; *at += p.len(); Some(start) }).collect();
            if min_gap == 0 {
                prop_assert!(first.bounds.iter().filter(|b| b.in_bit % 8 == 0).count() >= starts.len());
            }
            prop_assert!(first.bounds.windows(2).all(|w| w[1].out >= w[0].out + min_gap.max(1)));
            let cuts = choose_cuts(&mut rng, plain.len() as u64, &first.bounds, random_cuts);
            let indexed = index(Format::Gzip, &object, min_gap, &cuts, rng.usize(1..300_000), ahead).unwrap();
            prop_assert!(indexed.plain == plain);
            prop_assert_eq!(&indexed.bounds, &first.bounds);
            prop_assert!(indexed.chunks.iter().all(|c| c.point.window_len as usize <= WINDOW_SIZE));
            assert_chunks_resume(Format::Gzip, &object, &indexed, false);
        }

        #[test]
        fn resuming_zstd_at_every_cut_yields_exactly_the_plain_bytes_of_the_chunk(
            seed in any::<u64>(),
            len in 0usize..2_000_000,
            level in prop_oneof![Just(1i32), Just(3), Just(9)],
            frames in 1usize..=6,
            random_cuts in 1usize..12,
            ahead in prop_oneof![Just(0u64), Just(256 * 1024)],
        ) {
            let mut rng = fastrand::Rng::with_seed(seed);
            let plain = sample(&mut rng, len, true);
            let pieces = split(&mut rng, &plain, frames);
            let (object, frame_starts) = zstd_frames(&pieces, level);
            prop_assert!(zstd::decode_all(&object[..]).unwrap() == plain);

            let cuts = choose_cuts(&mut rng, plain.len() as u64, &frame_starts, random_cuts);
            let indexed = index(Format::Zstd, &object, 0, &cuts, rng.usize(1..300_000), ahead).unwrap();
            prop_assert!(indexed.plain == plain);
            // Frames that start at one decompressed offset are one boundary, the last's.
            let mut merged: Vec<Boundary> = Vec::new();
            for b in frame_starts {
                match merged.last_mut() {
                    Some(last) if last.out == b.out => *last = b,
                    _ => merged.push(b),
                }
            }
            prop_assert_eq!(&indexed.bounds, &merged);
            prop_assert!(indexed.chunks.iter().all(|c| c.point.window_len == 0));
            assert_chunks_resume(Format::Zstd, &object, &indexed, false);
        }
    }

    #[test]
    fn chunks_that_start_and_end_at_every_boundary_resume_there_reading_only_up_to_the_next() {
        for level in [6, 9] {
            let mut rng = fastrand::Rng::with_seed(21);
            let plain = sample(&mut rng, 3_000_000, true);
            let object = gzip(&split(&mut rng, &plain, 3), level, &[Header::Plain, Header::Full]);
            let whole = index(Format::Gzip, &object, 0, &[], 64 * 1024, 0).unwrap();
            let mut cuts: Vec<u64> =
                whole.bounds.iter().map(|b| b.out).filter(|&out| out < plain.len() as u64).collect();
            cuts.dedup();
            assert!(cuts.len() > 40, "level {level}: only {} boundaries", cuts.len());
            let indexed = index(Format::Gzip, &object, 0, &cuts, 64 * 1024, 1 << 20).unwrap();
            assert!(indexed.chunks.iter().all(|c| c.point.out == c.start), "a chunk at a boundary resumes there");
            assert!(
                indexed.chunks.iter().filter(|c| c.point.in_bit % 8 != 0).count() > 10,
                "mid-byte points are tested"
            );
            assert_chunks_resume(Format::Gzip, &object, &indexed, false);
        }
    }

    #[test]
    fn a_single_frame_zstd_input_has_only_the_boundary_at_zero_and_every_chunk_resumes_there() {
        let mut rng = fastrand::Rng::with_seed(7);
        let plain = sample(&mut rng, 1_500_000, true);
        let object = zstd::encode_all(&plain[..], 3).unwrap();
        let cuts = [0, 1, 400_000, 1_000_000];
        let indexed = index(Format::Zstd, &object, 0, &cuts, 100_000, 0).unwrap();
        assert!(indexed.plain == plain);
        assert_eq!(indexed.bounds, [Boundary { in_bit: 0, out: 0 }]);
        assert!(indexed.chunks.iter().all(|c| c.point.out == 0 && c.input_end == object.len() as u64));
        assert_chunks_resume(Format::Zstd, &object, &indexed, false);
    }

    #[test]
    fn members_with_every_header_field_and_empty_members_index_and_resume() {
        let mut rng = fastrand::Rng::with_seed(11);
        let plain = sample(&mut rng, 900_000, true);
        let pieces =
            vec![Vec::new(), plain[..300_000].to_vec(), Vec::new(), Vec::new(), plain[300_000..].to_vec(), Vec::new()];
        let object = gzip(&pieces, 6, &[Header::Full, Header::Named, Header::Plain]);
        let cuts = [0, 299_999, 300_000, 300_001, 650_000];
        let indexed = index(Format::Gzip, &object, 0, &cuts, 50_000, 64 * 1024).unwrap();
        assert!(indexed.plain == plain);
        // Six member starts, four of them at decompressed offsets 0 or 300,000: those at one
        // offset are one boundary, the last member's (nothing lies between them).
        let member_starts: Vec<u64> = indexed.bounds.iter().filter(|b| b.in_bit % 8 == 0).map(|b| b.out).collect();
        assert_eq!(member_starts.iter().filter(|&&out| out == 300_000).count(), 1, "{member_starts:?}");
        assert_eq!(member_starts.iter().filter(|&&out| out == 0).count(), 1, "{member_starts:?}");
        // A chunk at a member start resumes there with an empty window, from the last member
        // that starts at that offset.
        let at_member = &indexed.chunks[2].point;
        assert_eq!((at_member.out, at_member.window_len), (300_000, 0));
        let fifth_member_at = gzip(&pieces[..4], 6, &[Header::Full, Header::Named, Header::Plain]).len() as u64;
        assert!(at_member.in_bit > 8 * fifth_member_at, "{} ≤ 8 × {fifth_member_at}", at_member.in_bit);
        assert_chunks_resume(Format::Gzip, &object, &indexed, false);
        assert_chunks_resume(Format::Gzip, &object, &indexed, true);
    }

    #[test]
    fn resuming_from_a_source_that_returns_1_to_7_bytes_per_read_gives_the_same_bytes() {
        let mut rng = fastrand::Rng::with_seed(3);
        let plain = sample(&mut rng, 500_000, true);
        let pieces = split(&mut rng, &plain, 3);
        let cuts: Vec<u64> = (0..plain.len() as u64).step_by(45_000).collect();

        let object = gzip(&pieces, 6, &[Header::Plain, Header::Full]);
        let indexed = index(Format::Gzip, &object, 0, &cuts, 30_000, 0).unwrap();
        assert!(indexed.chunks.iter().any(|c| c.point.in_bit % 8 != 0), "some point starts mid-byte");
        assert_chunks_resume(Format::Gzip, &object, &indexed, true);

        let (object, _) = zstd_frames(&pieces, 3);
        let indexed = index(Format::Zstd, &object, 0, &cuts, 30_000, 0).unwrap();
        assert_chunks_resume(Format::Zstd, &object, &indexed, true);
    }

    #[test]
    fn the_indexer_reads_a_source_that_returns_1_to_7_bytes_per_read() {
        let mut rng = fastrand::Rng::with_seed(5);
        let plain = sample(&mut rng, 200_000, true);
        let object = gzip(&split(&mut rng, &plain, 3), 9, &[Header::Full]);
        let log = Arc::new(Mutex::new(ResumeLog::new(Vec::<u8>::new())));
        let src = Trickle { data: &object, rng: fastrand::Rng::with_seed(1), most: 7 };
        let mut got = Vec::new();
        GzipIndexer::new(src, log.clone()).unwrap().read_to_end(&mut got).unwrap();
        assert!(got == plain);
        let whole = index(Format::Gzip, &object, 0, &[], 64 * 1024, 0).unwrap();
        assert_eq!(lock(&log).boundaries(), &whole.bounds[..]);
    }

    #[test]
    fn indexing_with_a_cut_every_256_kib_holds_windows_for_about_one_chunk_only() {
        const CHUNK: u64 = 256 * 1024;
        const READ: usize = 64 * 1024;
        const AHEAD: u64 = 256 * 1024;
        let mut rng = fastrand::Rng::with_seed(9);
        let plain = sample(&mut rng, 12_000_000, true);
        let object = gzip(&split(&mut rng, &plain, 2), 6, &[Header::Plain]);
        let cuts: Vec<u64> = (0..plain.len() as u64).step_by(CHUNK as usize).collect();
        let indexed = index(Format::Gzip, &object, 0, &cuts, READ, AHEAD).unwrap();
        assert!(indexed.plain == plain);

        // Between two cuts the log holds the windows of boundaries after the first cut, up to
        // where the reader has got: within one chunk, the read-ahead and one read.
        let span = CHUNK + AHEAD + READ as u64;
        let in_span = |c: u64| indexed.bounds.iter().filter(|b| b.out > c && b.out <= c + span).count();
        let bound = cuts.iter().map(|&c| in_span(c)).max().unwrap() + 1;
        assert!(indexed.most_windows_held <= bound, "held {} windows, bound {bound}", indexed.most_windows_held);
        assert!(indexed.bounds.len() > 4 * bound, "{} boundaries: the test must be able to fail", indexed.bounds.len());
        assert!(indexed.windows.len() <= cuts.len() * WINDOW_SIZE);
    }

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

    // ---- errors ----

    fn index_error(format: Format, object: &[u8]) -> io::Error {
        match index(format, object, 0, &[], 64 * 1024, 0) {
            Ok(indexed) => panic!("indexing succeeded with {} bytes", indexed.plain.len()),
            Err(e) => e,
        }
    }

    fn two_members() -> (Vec<u8>, usize) {
        let mut rng = fastrand::Rng::with_seed(13);
        let plain = sample(&mut rng, 300_000, true);
        let first = gzip_member(&plain[..100_000], 6, Header::Full);
        let mut object = first.clone();
        object.extend(gzip_member(&plain[100_000..], 6, Header::Named));
        (object, first.len())
    }

    #[test]
    fn a_truncated_gzip_stream_is_an_unexpected_eof() {
        let (object, first_len) = two_members();
        for len in
            [0, 1, 9, 20, first_len / 2, first_len - 4, first_len - 1, first_len + 3, first_len + 40, object.len() - 1]
        {
            let error = index_error(Format::Gzip, &object[..len]);
            assert_eq!(error.kind(), ErrorKind::UnexpectedEof, "cut at {len}: {error}");
            assert!(error.to_string().contains("gzip stream is"), "{error}");
            assert!(multi_gz_decode(&object[..len]).is_err(), "flate2 agrees that {len} bytes are an error");
        }
    }

    #[test]
    fn a_wrong_crc_or_length_is_invalid_data_with_zlibs_message() {
        let (object, first_len) = two_members();
        for (at, message) in [
            (first_len - 8, "incorrect data check"),
            (first_len - 1, "incorrect length check"),
            (object.len() - 5, "incorrect data check"),
        ] {
            let mut bad = object.clone();
            bad[at] ^= 0x20;
            let error = index_error(Format::Gzip, &bad);
            assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
            assert!(error.to_string().contains(message), "{error}");
        }
    }

    #[test]
    fn corrupt_deflate_data_is_invalid_data() {
        let (object, first_len) = two_members();
        let mut bad = object.clone();
        for b in &mut bad[first_len / 2..first_len / 2 + 64] {
            *b = !*b;
        }
        assert_eq!(index_error(Format::Gzip, &bad).kind(), ErrorKind::InvalidData);
    }

    #[test]
    fn trailing_bytes_that_are_not_a_gzip_member_are_invalid_data() {
        let (object, _) = two_members();
        for garbage in [&b"this is not gzip"[..], &[0; 512][..]] {
            let mut bad = object.clone();
            bad.extend_from_slice(garbage);
            let error = index_error(Format::Gzip, &bad);
            assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
            assert!(error.to_string().contains("are not a gzip member"), "{error}");
        }
    }

    #[test]
    fn a_truncated_or_corrupt_zstd_stream_is_an_error_of_the_right_kind() {
        let mut rng = fastrand::Rng::with_seed(17);
        let plain = sample(&mut rng, 400_000, true);
        let (object, _) = zstd_frames(&split(&mut rng, &plain, 3), 3);
        for len in [0, 3, object.len() / 2, object.len() - 1] {
            let error = index_error(Format::Zstd, &object[..len]);
            assert_eq!(error.kind(), ErrorKind::UnexpectedEof, "cut at {len}: {error}");
        }
        let mut bad = object.clone();
        bad.extend_from_slice(b"this is not zstd");
        assert_eq!(index_error(Format::Zstd, &bad).kind(), ErrorKind::InvalidData);
    }
}

//! gzip: [`GzipIndexer`] notes deflate block boundaries with their windows while it
//! decompresses, and [`resume_gzip`] continues from one of them.

use std::ffi::c_int;
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::sync::{Arc, Mutex};

use libz_rs_sys::{Z_BLOCK, Z_BUF_ERROR, Z_NO_FLUSH, Z_OK, Z_STREAM_END};

use super::zlib::Inflater;
use super::{lock, Boundary, Gap, Input, ResumeLog, ResumePoint, WINDOW_SIZE};

/// zlib's `windowBits` for a gzip wrapper (15 + 16): zlib parses the header and checks each
/// member's CRC-32 and length.
const GZIP_WINDOW_BITS: c_int = 31;

/// zlib's `windowBits` for raw deflate with a 32 KiB window: no header, no trailer.
const RAW_WINDOW_BITS: c_int = -15;

/// A gzip member ends with its CRC-32 and its length mod 2^32.
const GZIP_TRAILER_LEN: usize = 8;

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
    /// planner asks for [`MIN_GAP`](super::MIN_GAP) or more). The first member's start is
    /// always logged.
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

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use flate2::read::MultiGzDecoder;
    use flate2::write::{DeflateEncoder, GzEncoder};
    use flate2::{Compression, Crc, GzBuilder};
    use proptest::prelude::*;

    use super::*;
    use crate::input::resume_points::tests::{
        assert_chunks_resume, choose_cuts, index, index_error, proptest_cases, sample, split, Format, Trickle,
    };

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

    fn multi_gz_decode(object: &[u8]) -> io::Result<Vec<u8>> {
        let mut plain = Vec::new();
        MultiGzDecoder::new(object).read_to_end(&mut plain)?;
        Ok(plain)
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
    fn resuming_gzip_from_a_source_that_returns_1_to_7_bytes_per_read_gives_the_same_bytes() {
        let mut rng = fastrand::Rng::with_seed(3);
        let plain = sample(&mut rng, 500_000, true);
        let pieces = split(&mut rng, &plain, 3);
        let cuts: Vec<u64> = (0..plain.len() as u64).step_by(45_000).collect();

        let object = gzip(&pieces, 6, &[Header::Plain, Header::Full]);
        let indexed = index(Format::Gzip, &object, 0, &cuts, 30_000, 0).unwrap();
        assert!(indexed.chunks.iter().any(|c| c.point.in_bit % 8 != 0), "some point starts mid-byte");
        assert_chunks_resume(Format::Gzip, &object, &indexed, true);
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

    // ---- errors ----

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
}

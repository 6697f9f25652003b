//! zstd: frames are independent, so [`ZstdIndexer`] notes frame starts (no window) while it
//! decompresses, and [`resume_zstd`] is a plain decoder from one of them.

use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::sync::{Arc, Mutex};

use zstd::zstd_safe::{self, DCtx, InBuffer, OutBuffer};

use super::{lock, Boundary, Gap, Input, ResumeLog};

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

/// Decompresses from a zstd [`ResumePoint`](super::ResumePoint): `src` yields the compressed object from the
/// point's frame start on, through any number of whole frames.
pub fn resume_zstd<R: Read>(src: R) -> io::Result<impl Read> {
    zstd::Decoder::new(src)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::input::resume_points::tests::{
        assert_chunks_resume, choose_cuts, index, index_error, proptest_cases, sample, split, Format,
    };

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

    proptest! {
        #![proptest_config(ProptestConfig { cases: proptest_cases(), ..ProptestConfig::default() })]

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
    fn resuming_zstd_from_a_source_that_returns_1_to_7_bytes_per_read_gives_the_same_bytes() {
        let mut rng = fastrand::Rng::with_seed(3);
        let plain = sample(&mut rng, 500_000, true);
        let pieces = split(&mut rng, &plain, 3);
        let cuts: Vec<u64> = (0..plain.len() as u64).step_by(45_000).collect();

        let (object, _) = zstd_frames(&pieces, 3);
        let indexed = index(Format::Zstd, &object, 0, &cuts, 30_000, 0).unwrap();
        assert_chunks_resume(Format::Zstd, &object, &indexed, true);
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

//! zlib's inflater over zlib-rs, through its C API, for the gzip side: all the unsafe code of
//! [`resume_points`](super).

use std::ffi::{c_int, c_uint, CStr};
use std::io::{self, ErrorKind};

use libz_rs_sys::{z_stream, Z_OK};

/// What one `inflate` call did.
pub(super) struct Step {
    pub(super) code: c_int,
    pub(super) read: usize,
    pub(super) written: usize,
    data_type: c_int,
}

impl Step {
    /// zlib stopped at the start of a deflate block (bit 7 of `data_type`) that does not follow
    /// the last block (bit 6): after a non-last block, or after a gzip header.
    pub(super) fn at_block_boundary(&self) -> bool {
        self.data_type & 0xC0 == 0x80
    }

    /// Bits of the bytes taken from the input that zlib has not decoded yet.
    pub(super) fn unused_bits(&self) -> u64 {
        (self.data_type & 0x3F) as u64
    }

    pub(super) fn made_no_progress(&self) -> bool {
        self.read == 0 && self.written == 0
    }
}

/// A zlib inflater over zlib-rs, through its C API: the only API with `Z_BLOCK`, `data_type` and
/// `inflatePrime`. All the unsafe code of this module is here.
///
/// Invariant: `0` was initialized by `inflateInit2_` and is ended only in `Drop`; `next_in` and
/// `next_out` are null between calls.
pub(super) struct Inflater(Box<z_stream>);

// SAFETY: the stream's state is allocated by zlib-rs for this stream alone and is reached only
// through `&mut self`; between calls it holds no pointers to borrowed buffers (`next_in` and
// `next_out` are null) and `msg` points to static strings. zlib keeps no thread-local state, so
// the inflater may move to another thread.
unsafe impl Send for Inflater {}

impl Inflater {
    pub(super) fn new(window_bits: c_int) -> io::Result<Self> {
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

    pub(super) fn inflate(&mut self, input: &[u8], output: &mut [u8], flush: c_int) -> Step {
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
    pub(super) fn prime(&mut self, bits: c_int, value: c_int) -> io::Result<()> {
        // SAFETY: the stream is initialized (type invariant).
        let code = unsafe { libz_rs_sys::inflatePrime(&mut *self.0, bits, value) };
        self.check(code, "inflatePrime")
    }

    pub(super) fn set_dictionary(&mut self, dictionary: &[u8]) -> io::Result<()> {
        let len = c_uint::try_from(dictionary.len())
            .map_err(|_| io::Error::new(ErrorKind::InvalidInput, "a deflate window is at most 32 KiB"))?;
        // SAFETY: the stream is initialized (type invariant); the pointer and length describe
        // `dictionary`, which zlib copies into its own window before returning.
        let code = unsafe { libz_rs_sys::inflateSetDictionary(&mut *self.0, dictionary.as_ptr(), len) };
        self.check(code, "inflateSetDictionary")
    }

    pub(super) fn reset(&mut self, window_bits: c_int) -> io::Result<()> {
        // SAFETY: the stream is initialized (type invariant).
        let code = unsafe { libz_rs_sys::inflateReset2(&mut *self.0, window_bits) };
        self.check(code, "inflateReset2")
    }

    /// zlib's message for the last error.
    pub(super) fn message(&self) -> String {
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

//! Frames and the primitive values inside them.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of body; a body
//! starts with the protocol version and the message kind. Values are written in order,
//! without names: integers big-endian, byte strings and text with a 4-byte length, an
//! option as a 0/1 byte before its value, a list as a count before its items. Decoding
//! is strict: a length past the end of the body, text that is not UTF-8, an unknown
//! tag, or bytes left over after the last value are errors, never guesses.

use std::fmt;
use std::io::{self, Read, Write};

use zeroize::Zeroizing;

/// The protocol version this build speaks: the first byte of every body.
pub const VERSION: u8 = 1;

/// The largest request body a server reads: enough for any request (a password is at
/// most a few hundred bytes), small enough that a flood of clients costs little.
pub const MAX_REQUEST: usize = 16 * 1024;
/// The largest response body a client reads (a long listing; a backup comes in chunks).
pub const MAX_RESPONSE: usize = 16 * 1024 * 1024;

/// Why a frame or a body could not be read.
#[derive(Debug)]
pub enum WireError {
    /// The peer closed the connection before a frame began.
    Closed,
    /// Reading or writing failed, or timed out (`io::ErrorKind::WouldBlock`/`TimedOut`).
    Io(io::Error),
    /// The length prefix asks for more than the limit.
    TooLarge { len: usize, max: usize },
    /// The body is not a well-formed message (what was wrong, never the bytes).
    Malformed(&'static str),
    /// The body is of another protocol version.
    Version(u8),
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::Closed => f.write_str("connection closed"),
            WireError::Io(e) if is_timeout(e) => f.write_str("timed out"),
            WireError::Io(e) => write!(f, "{e}"),
            WireError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes, more than the {max} allowed")
            }
            WireError::Malformed(why) => write!(f, "malformed message: {why}"),
            WireError::Version(v) => write!(
                f,
                "protocol version {v}, but this build speaks version {VERSION}"
            ),
        }
    }
}

impl std::error::Error for WireError {}

/// Whether an I/O error is a read or write timeout (`SO_RCVTIMEO` gives `WouldBlock`).
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Writes one frame: the length, then `body`.
pub fn write_frame(out: &mut impl Write, body: &[u8]) -> Result<(), WireError> {
    let len = u32::try_from(body.len()).map_err(|_| WireError::TooLarge {
        len: body.len(),
        max: u32::MAX as usize,
    })?;
    // One write where it fits, so that a short request is one segment on the socket.
    let mut frame = Zeroizing::new(Vec::with_capacity(4 + body.len()));
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(body);
    out.write_all(&frame).map_err(WireError::Io)?;
    out.flush().map_err(WireError::Io)
}

/// Reads one frame's body, at most `max` bytes. The buffer is wiped when dropped: a
/// request may carry a password.
pub fn read_frame(input: &mut impl Read, max: usize) -> Result<Zeroizing<Vec<u8>>, WireError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(WireError::Closed),
            Ok(0) => return Err(WireError::Malformed("frame cut short")),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(WireError::Io(e)),
        }
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(WireError::TooLarge { len, max });
    }
    let mut body = Zeroizing::new(vec![0u8; len]);
    input.read_exact(&mut body).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Malformed("frame cut short")
        } else {
            WireError::Io(e)
        }
    })?;
    Ok(body)
}

/// Builds a body. Its buffer is wiped when dropped.
#[derive(Default)]
pub struct Encoder {
    buf: Zeroizing<Vec<u8>>,
}

impl Encoder {
    /// A body of message `kind`, at this build's [`VERSION`].
    pub fn new(kind: u8) -> Encoder {
        let mut e = Encoder::default();
        e.buf.extend_from_slice(&[VERSION, kind]);
        e
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A byte string; longer than `u32::MAX` cannot happen within a frame's limits.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
        self
    }

    pub fn str(&mut self, v: &str) -> &mut Self {
        self.bytes(v.as_bytes())
    }

    pub fn opt_str(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(s) => self.u8(1).str(s),
        }
    }

    pub fn opt_i64(&mut self, v: Option<i64>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(n) => self.u8(1).i64(n),
        }
    }

    /// A count before a list's items.
    pub fn len(&mut self, n: usize) -> &mut Self {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX))
    }

    /// The finished body.
    pub fn finish(self) -> Zeroizing<Vec<u8>> {
        self.buf
    }
}

/// Reads a body, value by value.
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    /// Checks the version and returns the message kind and a decoder for the rest.
    pub fn new(body: &'a [u8]) -> Result<(u8, Decoder<'a>), WireError> {
        match body {
            [VERSION, kind, rest @ ..] => Ok((*kind, Decoder { rest })),
            [other, ..] if *other != VERSION => Err(WireError::Version(*other)),
            _ => Err(WireError::Malformed("body shorter than its header")),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if n > self.rest.len() {
            return Err(WireError::Malformed(
                "value runs past the end of the message",
            ));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn bool(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed("a flag that is neither 0 nor 1")),
        }
    }

    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// A byte string, borrowed from the body (copy it into a wiped buffer if secret).
    pub fn bytes(&mut self) -> Result<&'a [u8], WireError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn str(&mut self) -> Result<&'a str, WireError> {
        std::str::from_utf8(self.bytes()?).map_err(|_| WireError::Malformed("text is not UTF-8"))
    }

    pub fn string(&mut self) -> Result<String, WireError> {
        self.str().map(str::to_owned)
    }

    fn present(&mut self) -> Result<bool, WireError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(WireError::Malformed(
                "an option tag that is neither 0 nor 1",
            )),
        }
    }

    pub fn opt_string(&mut self) -> Result<Option<String>, WireError> {
        if self.present()? {
            self.string().map(Some)
        } else {
            Ok(None)
        }
    }

    pub fn opt_i64(&mut self) -> Result<Option<i64>, WireError> {
        if self.present()? {
            self.i64().map(Some)
        } else {
            Ok(None)
        }
    }

    /// A list's count, checked against what is left: each item takes at least
    /// `min_item` bytes, so a huge count in a short message is refused before anything
    /// is allocated for it.
    pub fn len(&mut self, min_item: usize) -> Result<usize, WireError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.rest.len() {
            return Err(WireError::Malformed("a list longer than the message"));
        }
        Ok(n)
    }

    /// The end: nothing may be left over.
    pub fn finish(self) -> Result<(), WireError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(WireError::Malformed("bytes left over after the message"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut e = Encoder::new(7);
        e.u8(1)
            .bool(true)
            .u32(70000)
            .u64(u64::MAX)
            .i64(-5)
            .bytes(b"\xff\x00")
            .str("héllo")
            .opt_str(None)
            .opt_str(Some("x"))
            .opt_i64(Some(9))
            .len(2);
        let body = e.finish();
        let (kind, mut d) = Decoder::new(&body).unwrap();
        assert_eq!(kind, 7);
        assert_eq!(d.u8().unwrap(), 1);
        assert!(d.bool().unwrap());
        assert_eq!(d.u32().unwrap(), 70000);
        assert_eq!(d.u64().unwrap(), u64::MAX);
        assert_eq!(d.i64().unwrap(), -5);
        assert_eq!(d.bytes().unwrap(), b"\xff\x00");
        assert_eq!(d.str().unwrap(), "héllo");
        assert_eq!(d.opt_string().unwrap(), None);
        assert_eq!(d.opt_string().unwrap().as_deref(), Some("x"));
        assert_eq!(d.opt_i64().unwrap(), Some(9));
        assert!(d.len(1).is_err(), "two items cannot fit in nothing");
    }

    #[test]
    fn bad_bodies_are_refused() {
        assert!(matches!(Decoder::new(&[]), Err(WireError::Malformed(_))));
        assert!(matches!(Decoder::new(&[9, 1]), Err(WireError::Version(9))));
        let (_, mut d) = Decoder::new(&[VERSION, 1, 0, 0, 0, 9, b'a']).unwrap();
        assert!(d.bytes().is_err());
        let (_, mut d) = Decoder::new(&[VERSION, 1, 0, 0, 0, 1, 0xff]).unwrap();
        assert!(d.str().is_err());
        let (_, mut d) = Decoder::new(&[VERSION, 1, 2]).unwrap();
        assert!(d.bool().is_err());
        let (_, d) = Decoder::new(&[VERSION, 1, 2]).unwrap();
        assert!(d.finish().is_err());
    }

    #[test]
    fn frames_have_limits() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"abc").unwrap();
        assert_eq!(buf, [0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(&read_frame(&mut &buf[..], 3).unwrap()[..], b"abc");
        assert!(matches!(
            read_frame(&mut &buf[..], 2),
            Err(WireError::TooLarge { len: 3, max: 2 })
        ));
        assert!(matches!(
            read_frame(&mut &[][..], 9),
            Err(WireError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut &buf[..5], 9),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            read_frame(&mut &buf[..2], 9),
            Err(WireError::Malformed(_))
        ));
    }
}

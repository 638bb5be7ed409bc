//! A cursor over a byte slice that reads little-endian values. It never panics: every read
//! past the end returns `WireError::Truncated` and leaves the cursor where it was.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Why a datagram could not be read.
pub enum WireError {
    /// A read wanted `wanted` bytes at offset `at` but only `remaining` were left.
    Truncated {
        /// Offset of the read.
        at: usize,
        /// Bytes it wanted.
        wanted: usize,
        /// Bytes that were left.
        remaining: usize,
    },
    /// A string was not valid UTF-8.
    BadUtf8 {
        /// Offset of the string.
        at: usize,
    },
    /// A datagram declared more recipients than it can hold.
    BadRecipientCount {
        /// The count declared.
        count: usize,
    },
    /// Bytes were left over where a message should have ended.
    TrailingBytes {
        /// Where the message should have ended.
        at: usize,
        /// Bytes left over.
        remaining: usize,
    },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WireError::Truncated {
                at,
                wanted,
                remaining,
            } => write!(
                f,
                "truncated datagram: wanted {wanted} bytes at offset {at}, {remaining} left"
            ),
            WireError::BadUtf8 { at } => write!(f, "string at offset {at} is not UTF-8"),
            WireError::BadRecipientCount { count } => {
                write!(f, "datagram declares {count} recipients but is too short")
            }
            WireError::TrailingBytes { at, remaining } => {
                write!(f, "{remaining} unexpected bytes after offset {at}")
            }
        }
    }
}

impl std::error::Error for WireError {}

#[derive(Debug, Clone)]
/// Reads little-endian values from a datagram; every read is checked, none panics.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

macro_rules! read_le {
    ($($name:ident: $ty:ty),* $(,)?) => {$(
        #[inline]
        /// Reads one value of this type.
        pub fn $name(&mut self) -> Result<$ty, WireError> {
            const N: usize = std::mem::size_of::<$ty>();
            let bytes = self.take(N)?;
            let mut arr = [0u8; N];
            arr.copy_from_slice(bytes);
            Ok(<$ty>::from_le_bytes(arr))
        }
    )*};
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Offset of the next byte to read.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Whether everything has been read.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// Takes `n` raw bytes.
    #[inline]
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let remaining = self.remaining();
        if n > remaining {
            return Err(WireError::Truncated {
                at: self.pos,
                wanted: n,
                remaining,
            });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), WireError> {
        self.take(n).map(|_| ())
    }

    /// Everything not yet read, without consuming it.
    pub fn rest_peek(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Everything not yet read.
    pub fn rest(&mut self) -> &'a [u8] {
        let out = &self.buf[self.pos..];
        self.pos = self.buf.len();
        out
    }

    read_le!(
        u8: u8, u16: u16, u32: u32, u64: u64,
        i8: i8, i16: i16, i32: i32, i64: i64,
        f32: f32, f64: f64,
    );

    /// A blob with a 16-bit length prefix.
    pub fn blob(&mut self) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let len = self.u16()? as usize;
        self.take(len).inspect_err(|_| self.pos = start)
    }

    /// A blob with a 32-bit length prefix.
    pub fn blob32(&mut self) -> Result<&'a [u8], WireError> {
        let start = self.pos;
        let len = self.u32()? as usize;
        self.take(len).inspect_err(|_| self.pos = start)
    }

    /// A string with a 16-bit length prefix, required to be UTF-8.
    pub fn string(&mut self) -> Result<&'a str, WireError> {
        let start = self.pos;
        let bytes = self.blob()?;
        std::str::from_utf8(bytes).map_err(|_| {
            self.pos = start;
            WireError::BadUtf8 { at: start }
        })
    }

    /// Fails if anything is left unread.
    pub fn expect_end(&self) -> Result<(), WireError> {
        match self.remaining() {
            0 => Ok(()),
            remaining => Err(WireError::TrailingBytes {
                at: self.pos,
                remaining,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian() {
        let data = [
            1u8, 0x34, 0x12, 0x78, 0x56, 0x34, 0x12, 3, 0, b'a', b'b', b'c',
        ];
        let mut r = Reader::new(&data);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.u16().unwrap(), 0x1234);
        assert_eq!(r.u32().unwrap(), 0x12345678);
        assert_eq!(r.string().unwrap(), "abc");
        assert!(r.expect_end().is_ok());
        assert_eq!(
            r.u8(),
            Err(WireError::Truncated {
                at: 12,
                wanted: 1,
                remaining: 0
            })
        );
    }

    #[test]
    fn failed_read_does_not_move() {
        let data = [5u8, 0, 1, 2];
        let mut r = Reader::new(&data);
        assert!(r.blob().is_err());
        assert_eq!(r.position(), 0);
        assert_eq!(r.u16().unwrap(), 5);
    }
}

//! Appends datagrams into a caller-owned, reused `Vec<u8>`: the length tag is reserved first
//! and patched by `finish`, so building a datagram never allocates once the buffer is warm.

use crate::channels::CONTROL_CHANNEL as CONTROL_CHANNEL_VALUE;
use crate::{Channel, MsgType, MAX_DATAGRAM_BODY};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Why a datagram could not be finished.
pub enum WriterError {
    /// The datagram body grew past what a 16-bit length tag can describe.
    TooLong {
        /// The length it reached.
        len: usize,
    },
    /// More than 255 recipients.
    TooManyRecipients {
        /// The recipients given.
        count: usize,
    },
}

impl fmt::Display for WriterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WriterError::TooLong { len } => {
                write!(
                    f,
                    "datagram body of {len} bytes exceeds {MAX_DATAGRAM_BODY}"
                )
            }
            WriterError::TooManyRecipients { count } => {
                write!(f, "{count} recipients exceed 255")
            }
        }
    }
}

impl std::error::Error for WriterError {}

/// Builds one datagram at the end of `out`. Dropping a writer without `finish` leaves a
/// datagram with a zero length tag; call `abandon` to remove it instead.
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
    /// Where the message type sits (internal and client datagrams), for `set_msgtype`.
    msgtype_at: Option<usize>,
    error: Option<WriterError>,
}

impl<'a> Writer<'a> {
    /// A bare datagram: length tag only (the caller writes everything after it).
    pub fn begin(out: &'a mut Vec<u8>) -> Self {
        let start = out.len();
        out.extend_from_slice(&[0, 0]);
        Writer {
            out,
            start,
            msgtype_at: None,
            error: None,
        }
    }

    /// An internal datagram: recipients, sender, msgtype.
    pub fn internal(
        out: &'a mut Vec<u8>,
        recipients: &[Channel],
        sender: Channel,
        msgtype: MsgType,
    ) -> Self {
        let mut w = Self::begin(out);
        if recipients.len() > 255 {
            w.error = Some(WriterError::TooManyRecipients {
                count: recipients.len(),
            });
        }
        w.u8(recipients.len() as u8);
        for &r in recipients.iter().take(255) {
            w.u64(r);
        }
        w.u64(sender);
        w.msgtype_at = Some(w.out.len());
        w.u16(msgtype);
        w
    }

    /// An internal datagram to a single recipient.
    pub fn internal1(
        out: &'a mut Vec<u8>,
        recipient: Channel,
        sender: Channel,
        msgtype: MsgType,
    ) -> Self {
        let mut w = Self::begin(out);
        w.u8(1).u64(recipient).u64(sender);
        w.msgtype_at = Some(w.out.len());
        w.u16(msgtype);
        w
    }

    /// A control datagram: recipient `[1]`, no sender.
    pub fn control(out: &'a mut Vec<u8>, msgtype: MsgType) -> Self {
        let mut w = Self::begin(out);
        w.u8(1).u64(CONTROL_CHANNEL_VALUE).u16(msgtype);
        w
    }

    /// A client datagram: msgtype then payload.
    pub fn client(out: &'a mut Vec<u8>, msgtype: MsgType) -> Self {
        let mut w = Self::begin(out);
        w.msgtype_at = Some(w.out.len());
        w.u16(msgtype);
        w
    }

    /// Changes the message type after the payload is (partly) written, e.g. to the `_OTHER`
    /// form once it is known that an OTHER section follows. No-op for bare datagrams.
    pub fn set_msgtype(&mut self, msgtype: MsgType) -> &mut Self {
        if let Some(at) = self.msgtype_at {
            self.out[at..at + 2].copy_from_slice(&msgtype.to_le_bytes());
        }
        self
    }

    /// Bytes written after the length tag so far.
    pub fn body_len(&self) -> usize {
        self.out.len() - self.start - 2
    }

    /// Appends a u8.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.out.push(v);
        self
    }
    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.out.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Appends an i8.
    pub fn i8(&mut self, v: i8) -> &mut Self {
        self.u8(v as u8)
    }
    /// Appends a little-endian i16.
    pub fn i16(&mut self, v: i16) -> &mut Self {
        self.u16(v as u16)
    }
    /// Appends a little-endian i32.
    pub fn i32(&mut self, v: i32) -> &mut Self {
        self.u32(v as u32)
    }
    /// Appends a little-endian i64.
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.u64(v as u64)
    }
    /// Appends a little-endian f32.
    pub fn f32(&mut self, v: f32) -> &mut Self {
        self.u32(v.to_bits())
    }
    /// Appends a little-endian f64.
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.u64(v.to_bits())
    }
    /// Raw bytes, no prefix.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(v);
        self
    }
    /// A blob with a 16-bit length prefix.
    pub fn blob(&mut self, v: &[u8]) -> &mut Self {
        if v.len() > u16::MAX as usize {
            self.error = Some(WriterError::TooLong { len: v.len() });
        }
        self.u16(v.len() as u16)
            .bytes(&v[..v.len().min(u16::MAX as usize)])
    }
    /// A string with a 16-bit length prefix.
    pub fn string(&mut self, v: &str) -> &mut Self {
        self.blob(v.as_bytes())
    }

    /// Patches the length tag; returns the whole datagram's size including the tag. A datagram
    /// that does not fit (a body past 16 bits, a blob past 64 KiB, more than 255 recipients) is
    /// removed and the error returned: use this where a size comes from input (field values,
    /// stored objects, lists), and drop or refuse what does not fit, saying so.
    #[must_use = "an error means the datagram was too big and has been removed"]
    pub fn finish(self) -> Result<usize, WriterError> {
        let body = self.body_len();
        let err = self.error.or(if body > MAX_DATAGRAM_BODY {
            Some(WriterError::TooLong { len: body })
        } else {
            None
        });
        if let Some(e) = err {
            self.out.truncate(self.start);
            return Err(e);
        }
        self.out[self.start..self.start + 2].copy_from_slice(&(body as u16).to_le_bytes());
        Ok(body + 2)
    }

    /// `finish` for a datagram whose size is bounded by construction (fixed-size fields, a few
    /// recipients, strings of our own). A misfit is a bug: it panics in debug builds; in release
    /// builds the datagram is removed, as `finish` does, and 0 returned.
    pub fn finish_bounded(self) -> usize {
        match self.finish() {
            Ok(n) => n,
            Err(e) => {
                if cfg!(debug_assertions) {
                    panic!("a datagram bounded by construction did not fit: {e}");
                }
                0
            }
        }
    }

    /// Removes the partly built datagram.
    pub fn abandon(self) {
        self.out.truncate(self.start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Reader;

    #[test]
    fn internal_layout() {
        let mut buf = Vec::new();
        let mut w = Writer::internal(&mut buf, &[5, 6], 7, 2020);
        w.u32(0xdeadbeef);
        assert_eq!(w.finish().unwrap(), buf.len());
        let mut r = Reader::new(&buf);
        assert_eq!(r.u16().unwrap() as usize, buf.len() - 2);
        assert_eq!(r.u8().unwrap(), 2);
        assert_eq!(r.u64().unwrap(), 5);
        assert_eq!(r.u64().unwrap(), 6);
        assert_eq!(r.u64().unwrap(), 7);
        assert_eq!(r.u16().unwrap(), 2020);
        assert_eq!(r.u32().unwrap(), 0xdeadbeef);
    }

    #[test]
    fn control_has_no_sender() {
        let mut buf = Vec::new();
        let mut w = Writer::control(&mut buf, 9000);
        w.u64(42);
        w.finish().unwrap();
        assert_eq!(buf.len(), 2 + 1 + 8 + 2 + 8);
    }

    #[test]
    fn too_long_is_refused_and_removed() {
        let mut buf = vec![9u8];
        let mut w = Writer::client(&mut buf, 1);
        w.bytes(&vec![0u8; 70_000]);
        assert!(matches!(w.finish(), Err(WriterError::TooLong { .. })));
        assert_eq!(buf, vec![9u8]);
    }
}

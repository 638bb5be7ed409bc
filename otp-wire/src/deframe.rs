//! Splits a byte stream into datagrams. Reads land in one buffer; complete datagrams are handed
//! out as slices of it, never copied. Only the unfinished tail (less than one datagram) is ever
//! moved, and only when the free space behind it runs short, so compaction is linear overall.

use std::fmt;
use std::io::{self, Read};

use crate::LENGTH_TAG_BYTES;

/// Free space a read gets at least.
const MIN_ROOM: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// Why a stream of datagrams cannot be read on.
pub enum FrameError {
    /// A length tag announced a datagram larger than this stream allows.
    Oversized {
        /// The length announced.
        len: usize,
        /// The stream's limit.
        max: usize,
    },
    /// A zero-length datagram, which carries nothing at all.
    Empty,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            FrameError::Oversized { len, max } => {
                write!(f, "datagram of {len} bytes exceeds the limit of {max}")
            }
            FrameError::Empty => write!(f, "zero-length datagram"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Splits a byte stream into datagrams by their 16-bit length tags, within a size limit.
pub struct Deframer {
    /// Allocated on first use, so a connection that never sends costs no buffer.
    buf: Box<[u8]>,
    capacity: usize,
    start: usize,
    end: usize,
    max_datagram: usize,
    /// The last `read_from` returned less than it asked for.
    drained: bool,
}

impl Deframer {
    /// `capacity` bytes of read buffer at first; datagram bodies over `max_datagram` are
    /// refused. The buffer grows (up to one largest datagram plus its tag, and a read's room)
    /// only when a datagram announces more than fits, so small links stay small.
    pub fn new(capacity: usize, max_datagram: usize) -> Self {
        let max_datagram = max_datagram.min(crate::MAX_DATAGRAM_BODY);
        let capacity = capacity.max(MIN_ROOM + LENGTH_TAG_BYTES);
        Deframer {
            buf: Box::default(),
            capacity,
            start: 0,
            end: 0,
            max_datagram,
            drained: false,
        }
    }

    /// Bytes received but not yet handed out.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The largest datagram body this stream accepts.
    pub fn max_datagram(&self) -> usize {
        self.max_datagram
    }

    /// Bytes of buffer held now (0 before the first read and after `release`).
    pub fn allocated(&self) -> usize {
        self.buf.len()
    }

    /// Gives the buffer back when nothing is buffered (an idle link then costs no memory).
    pub fn release(&mut self) {
        if self.start == self.end {
            self.buf = Box::default();
            self.start = 0;
            self.end = 0;
        }
    }

    /// Makes room at the tail, moving only the unfinished remainder (less than one datagram),
    /// and growing the buffer when that datagram is larger than the buffer.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let avail = self.end - self.start;
        // The bytes the unfinished datagram at `start` needs in all (as far as known).
        let needed = if avail >= LENGTH_TAG_BYTES {
            let len = u16::from_le_bytes([self.buf[self.start], self.buf[self.start + 1]]);
            (len as usize).min(self.max_datagram) + LENGTH_TAG_BYTES
        } else {
            LENGTH_TAG_BYTES
        };
        let want = self.capacity.max(needed + MIN_ROOM);
        if self.buf.len() < needed + MIN_ROOM.min(self.capacity) {
            let mut grown = vec![0u8; want].into_boxed_slice();
            grown[..avail].copy_from_slice(&self.buf[self.start..self.end]);
            self.buf = grown;
            self.start = 0;
            self.end = avail;
        } else if self.buf.len() - self.end < MIN_ROOM.max(needed.saturating_sub(avail)) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The free tail to read into (after making room).
    pub fn spare(&mut self) -> &mut [u8] {
        self.make_room();
        &mut self.buf[self.end..]
    }

    /// Records that `n` bytes were written into `spare()`.
    pub fn commit(&mut self, n: usize) {
        assert!(self.end + n <= self.buf.len(), "commit past the buffer");
        self.end += n;
    }

    /// One `read` call into the buffer. Returns what `read` returned (0 = end of stream).
    /// Take every complete datagram out first; a buffer full of them is an error.
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> io::Result<usize> {
        let spare = self.spare();
        if spare.is_empty() {
            return Err(io::Error::other(
                "deframer full: take datagrams out before reading",
            ));
        }
        let asked = spare.len();
        let n = src.read(spare)?;
        self.drained = n < asked;
        self.commit(n);
        Ok(n)
    }

    /// True when the last `read_from` got fewer bytes than it had room for. On a stream socket
    /// that means the kernel's queue was empty at that moment, so an edge-triggered reader may
    /// wait for the next readiness event instead of calling `read` again for `WouldBlock`.
    pub fn drained(&self) -> bool {
        self.drained
    }

    /// Appends bytes (for tests and in-memory links). Returns how many fit.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let spare = self.spare();
        let n = spare.len().min(bytes.len());
        spare[..n].copy_from_slice(&bytes[..n]);
        self.commit(n);
        n
    }

    /// The next complete datagram body (without its length tag), or `None` if more bytes are
    /// needed. After an error the stream cannot be resynchronised: close it.
    pub fn next_datagram(&mut self) -> Option<Result<&[u8], FrameError>> {
        let avail = self.end - self.start;
        if avail < LENGTH_TAG_BYTES {
            return None;
        }
        let len = u16::from_le_bytes([self.buf[self.start], self.buf[self.start + 1]]) as usize;
        if len > self.max_datagram {
            return Some(Err(FrameError::Oversized {
                len,
                max: self.max_datagram,
            }));
        }
        if len == 0 {
            return Some(Err(FrameError::Empty));
        }
        if avail < LENGTH_TAG_BYTES + len {
            return None;
        }
        let body = self.start + LENGTH_TAG_BYTES;
        self.start = body + len;
        Some(Ok(&self.buf[body..body + len]))
    }

    /// The next complete datagram including its length tag (for forwarding unchanged).
    pub fn next_framed(&mut self) -> Option<Result<&[u8], FrameError>> {
        let tag_at = self.start;
        match self.next_datagram()? {
            Ok(body) => {
                let len = body.len();
                Some(Ok(&self.buf[tag_at..tag_at + LENGTH_TAG_BYTES + len]))
            }
            Err(e) => Some(Err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u16).to_le_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn splits_and_waits_for_more() {
        let mut d = Deframer::new(1024, 100);
        let mut stream = frame(b"hello");
        stream.extend(frame(b"world!"));
        d.push(&stream[..4]);
        assert!(d.next_datagram().is_none());
        d.push(&stream[4..]);
        assert_eq!(d.next_datagram().unwrap().unwrap(), b"hello");
        assert_eq!(d.next_framed().unwrap().unwrap(), &frame(b"world!")[..]);
        assert!(d.next_datagram().is_none());
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn oversized_and_empty() {
        let mut d = Deframer::new(64, 10);
        d.push(&frame(&[0u8; 11]));
        assert_eq!(
            d.next_datagram(),
            Some(Err(FrameError::Oversized { len: 11, max: 10 }))
        );
        let mut d = Deframer::new(64, 10);
        d.push(&[0, 0]);
        assert_eq!(d.next_datagram(), Some(Err(FrameError::Empty)));
    }

    #[test]
    fn long_stream_through_small_buffer() {
        let mut d = Deframer::new(0, 300);
        let mut got = 0usize;
        for i in 0..10_000u32 {
            let body = vec![(i % 251) as u8; (i % 300 + 1) as usize];
            let f = frame(&body);
            let mut off = 0;
            while off < f.len() {
                off += d.push(&f[off..]);
                while let Some(r) = d.next_datagram() {
                    let b = r.unwrap();
                    assert!(b.iter().all(|&x| x == b[0]));
                    got += 1;
                }
            }
        }
        assert_eq!(got, 10_000);
    }
}

//! otp-wire: the bytes on the wire. Owns datagram framing (internal MD links and client links),
//! a non-panicking reader, an appending writer, a stream de-framer, and the message-type and
//! well-known channel constants of the Astron protocols.

#![warn(missing_docs)]

pub mod channels;
pub mod deframe;
pub mod internal;
pub mod msgtypes;
pub mod reader;
pub mod toontown2003;
pub mod writer;

pub use deframe::{Deframer, FrameError};
pub use internal::{HeaderError, InternalDatagram, Recipients, RoutableHeader};
pub use reader::{Reader, WireError};
pub use writer::{Writer, WriterError};

/// A 64-bit MessageDirector channel.
pub type Channel = u64;
/// A distributed object id.
pub type Doid = u32;
/// A zone under a parent object.
pub type Zone = u32;
/// A message type.
pub type MsgType = u16;

/// Bytes of the length tag in front of every datagram, on both link kinds.
pub const LENGTH_TAG_BYTES: usize = 2;
/// The largest datagram body a 16-bit length tag can describe.
pub const MAX_DATAGRAM_BODY: usize = u16::MAX as usize;

/// The framed datagrams (length tag included) at the start of `buf`, in order; stops at the
/// first incomplete one. For buffers of datagrams the process built itself.
pub fn frames(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.len() < LENGTH_TAG_BYTES {
            return None;
        }
        let len = u16::from_le_bytes([rest[0], rest[1]]) as usize;
        if rest.len() < LENGTH_TAG_BYTES + len {
            return None;
        }
        let (frame, r) = rest.split_at(LENGTH_TAG_BYTES + len);
        rest = r;
        Some(frame)
    })
}

#[cfg(test)]
mod frames_tests {
    #[test]
    fn frames_splits_and_stops_at_an_incomplete_one() {
        let buf = [1, 0, 7, 2, 0, 8, 9, 3, 0, 1];
        let got: Vec<&[u8]> = super::frames(&buf).collect();
        assert_eq!(got, vec![&[1, 0, 7][..], &[2, 0, 8, 9][..]]);
    }
}

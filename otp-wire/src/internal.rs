//! A zero-copy view of one internal (MD link) datagram body: recipients, sender unless it is
//! a control message, msgtype and payload. Parsing never panics and never allocates.
//! `RoutableHeader` is the one check of whether a body can be routed at all.

use crate::channels::CONTROL_CHANNEL;
use crate::reader::{Reader, WireError};
use crate::{Channel, MsgType};

/// The recipient list, read lazily from the datagram's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Recipients<'a> {
    raw: &'a [u8],
}

impl<'a> Recipients<'a> {
    #[inline]
    /// How many recipients.
    pub fn len(&self) -> usize {
        self.raw.len() / 8
    }
    #[inline]
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    #[inline]
    /// The `i`th recipient, if there is one.
    pub fn get(&self, i: usize) -> Option<Channel> {
        let b = self.raw.get(i * 8..i * 8 + 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    #[inline]
    /// The recipients, in order.
    pub fn iter(&self) -> impl Iterator<Item = Channel> + 'a {
        self.raw
            .as_chunks::<8>()
            .0
            .iter()
            .map(|c| u64::from_le_bytes(*c))
    }
}

/// Why a datagram body cannot be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The recipient count is zero.
    NoRecipients,
    /// The body ends inside its header (recipients, sender or msgtype).
    Truncated,
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HeaderError::NoRecipients => "datagram with zero recipients",
            HeaderError::Truncated => "truncated datagram header",
        })
    }
}

impl std::error::Error for HeaderError {}

/// The header every routed datagram body starts with: a recipient count (at least one), the
/// recipients, the sender and the msgtype. A control message (its one recipient is
/// `CONTROL_CHANNEL`) has no sender: its msgtype follows the recipient. Whoever routes or
/// reads a datagram's header asks this one parser, so every site gives a body the same verdict.
#[derive(Debug, Clone, Copy)]
pub struct RoutableHeader<'a> {
    /// The channels it is addressed to.
    pub recipients: Recipients<'a>,
    /// `None` for a control message.
    pub sender: Option<Channel>,
    /// Its message type.
    pub msgtype: MsgType,
    /// Bytes of the header: the payload starts here.
    pub len: usize,
}

impl<'a> RoutableHeader<'a> {
    /// Reads the header of a datagram body (the bytes after the length tag).
    #[inline]
    pub fn parse(body: &'a [u8]) -> Result<Self, HeaderError> {
        let count = match body.first() {
            None | Some(0) => return Err(HeaderError::NoRecipients),
            Some(&n) => n as usize,
        };
        let end = 1 + 8 * count;
        let Some(raw) = body.get(1..end) else {
            return Err(HeaderError::Truncated);
        };
        let recipients = Recipients { raw };
        let at = |i: usize| body.get(i..i + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        if count == 1 && raw == CONTROL_CHANNEL.to_le_bytes() {
            let msgtype = at(end).ok_or(HeaderError::Truncated)?;
            return Ok(RoutableHeader {
                recipients,
                sender: None,
                msgtype,
                len: end + 2,
            });
        }
        let (Some(sender), Some(msgtype)) = (body.get(end..end + 8), at(end + 8)) else {
            return Err(HeaderError::Truncated);
        };
        Ok(RoutableHeader {
            recipients,
            sender: Some(u64::from_le_bytes(sender.try_into().expect("8 bytes"))),
            msgtype,
            len: end + 10,
        })
    }

    #[inline]
    /// Whether this is a control message (one recipient: the control channel).
    pub fn is_control(&self) -> bool {
        self.sender.is_none()
    }
}

#[derive(Debug, Clone, Copy)]
/// An internal datagram, parsed: recipients, sender (absent on control messages), message
/// type and payload.
pub struct InternalDatagram<'a> {
    /// The channels it is addressed to.
    pub recipients: Recipients<'a>,
    /// `None` for control messages (recipients exactly `[1]`).
    pub sender: Option<Channel>,
    /// Its message type.
    pub msgtype: MsgType,
    /// What follows the message type.
    pub payload: &'a [u8],
}

impl<'a> InternalDatagram<'a> {
    /// Parses a datagram body (the bytes after the length tag).
    pub fn parse(body: &'a [u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let count = r.u8()? as usize;
        let raw = r
            .take(count * 8)
            .map_err(|_| WireError::BadRecipientCount { count })?;
        let recipients = Recipients { raw };
        let is_control = count == 1 && recipients.get(0) == Some(CONTROL_CHANNEL);
        let sender = if is_control { None } else { Some(r.u64()?) };
        let msgtype = r.u16()?;
        Ok(InternalDatagram {
            recipients,
            sender,
            msgtype,
            payload: r.rest(),
        })
    }

    /// Whether this is a control message (one recipient: the control channel).
    pub fn is_control(&self) -> bool {
        self.sender.is_none()
    }

    /// A reader over the payload.
    pub fn payload_reader(&self) -> Reader<'a> {
        Reader::new(self.payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::Writer;

    #[test]
    fn parses_routed_and_control() {
        let mut buf = Vec::new();
        let mut w = Writer::internal(&mut buf, &[100, 200], 55, 2020);
        w.u8(7);
        w.finish().unwrap();
        let d = InternalDatagram::parse(&buf[2..]).unwrap();
        assert_eq!(d.recipients.iter().collect::<Vec<_>>(), vec![100, 200]);
        assert_eq!(d.sender, Some(55));
        assert_eq!(d.msgtype, 2020);
        assert_eq!(d.payload, &[7]);

        buf.clear();
        let mut w = Writer::control(&mut buf, 9000);
        w.u64(100);
        w.finish().unwrap();
        let d = InternalDatagram::parse(&buf[2..]).unwrap();
        assert!(d.is_control());
        assert_eq!(d.msgtype, 9000);
        assert_eq!(d.payload.len(), 8);
    }

    #[test]
    fn routable_header_verdicts() {
        let mut buf = Vec::new();
        let mut w = Writer::internal(&mut buf, &[100, 200], 55, 2020);
        w.u8(7);
        w.finish().unwrap();
        let h = RoutableHeader::parse(&buf[2..]).unwrap();
        assert_eq!(h.recipients.iter().collect::<Vec<_>>(), vec![100, 200]);
        assert_eq!((h.sender, h.msgtype, h.len), (Some(55), 2020, 1 + 16 + 10));
        // Every proper prefix of the header is truncated.
        for n in 1..h.len {
            assert_eq!(
                RoutableHeader::parse(&buf[2..2 + n]).unwrap_err(),
                HeaderError::Truncated,
                "{n} bytes"
            );
        }
        assert_eq!(
            RoutableHeader::parse(&[]).unwrap_err(),
            HeaderError::NoRecipients
        );
        assert_eq!(
            RoutableHeader::parse(&[0, 1, 2, 3]).unwrap_err(),
            HeaderError::NoRecipients
        );

        buf.clear();
        let mut w = Writer::control(&mut buf, 9000);
        w.u64(100);
        w.finish().unwrap();
        let h = RoutableHeader::parse(&buf[2..]).unwrap();
        assert!(h.is_control());
        assert_eq!((h.msgtype, h.len), (9000, 11));
        assert_eq!(
            RoutableHeader::parse(&buf[2..12]).unwrap_err(),
            HeaderError::Truncated
        );
        assert!(RoutableHeader::parse(&buf[2..13]).is_ok());
    }

    #[test]
    fn short_recipients() {
        assert!(matches!(
            InternalDatagram::parse(&[3, 0, 0]),
            Err(WireError::BadRecipientCount { count: 3 })
        ));
        assert!(InternalDatagram::parse(&[]).is_err());
    }
}

//! A zero-copy view of one internal (MD link) datagram body: recipients, sender unless it is
//! a control message, msgtype and payload. Parsing never panics and never allocates.

use crate::channels::CONTROL_CHANNEL;
use crate::reader::{Reader, WireError};
use crate::{Channel, MsgType};

/// The recipient list, read lazily from the datagram's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Recipients<'a> {
    raw: &'a [u8],
}

impl<'a> Recipients<'a> {
    pub fn len(&self) -> usize {
        self.raw.len() / 8
    }
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    pub fn get(&self, i: usize) -> Option<Channel> {
        let b = self.raw.get(i * 8..i * 8 + 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }
    pub fn iter(&self) -> impl Iterator<Item = Channel> + 'a {
        self.raw.chunks_exact(8).map(|c| {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            u64::from_le_bytes(a)
        })
    }
}

#[derive(Debug, Clone, Copy)]
pub struct InternalDatagram<'a> {
    pub recipients: Recipients<'a>,
    /// `None` for control messages (recipients exactly `[1]`).
    pub sender: Option<Channel>,
    pub msgtype: MsgType,
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

    pub fn is_control(&self) -> bool {
        self.sender.is_none()
    }

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
    fn short_recipients() {
        assert!(matches!(
            InternalDatagram::parse(&[3, 0, 0]),
            Err(WireError::BadRecipientCount { count: 3 })
        ));
        assert!(InternalDatagram::parse(&[]).is_err());
    }
}

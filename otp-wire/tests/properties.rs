//! Property tests: writer/reader round trips, parsing truncated datagrams never panics,
//! the de-framer returns the same datagrams whatever the read sizes, and the routable-header
//! check agrees with the full parser.

use otp_wire::{Deframer, HeaderError, InternalDatagram, Reader, RoutableHeader, Writer};
use proptest::prelude::*;

proptest! {
    #[test]
    fn internal_round_trip(recipients in proptest::collection::vec(any::<u64>(), 1..20),
                           sender in any::<u64>(), msgtype in any::<u16>(),
                           a in any::<u32>(), s in ".{0,40}", blob in proptest::collection::vec(any::<u8>(), 0..300)) {
        prop_assume!(!(recipients.len() == 1 && recipients[0] == 1));
        let mut buf = Vec::new();
        let mut w = Writer::internal(&mut buf, &recipients, sender, msgtype);
        w.u32(a).string(&s).blob(&blob).i64(-5).f64(1.5);
        let n = w.finish().unwrap();
        prop_assert_eq!(n, buf.len());
        let d = InternalDatagram::parse(&buf[2..]).unwrap();
        prop_assert_eq!(d.recipients.iter().collect::<Vec<_>>(), recipients);
        prop_assert_eq!(d.sender, Some(sender));
        prop_assert_eq!(d.msgtype, msgtype);
        let mut r = d.payload_reader();
        prop_assert_eq!(r.u32().unwrap(), a);
        prop_assert_eq!(r.string().unwrap(), s.as_str());
        prop_assert_eq!(r.blob().unwrap(), &blob[..]);
        prop_assert_eq!(r.i64().unwrap(), -5);
        prop_assert_eq!(r.f64().unwrap(), 1.5);
        prop_assert!(r.expect_end().is_ok());
    }

    #[test]
    fn truncation_never_panics(recipients in proptest::collection::vec(any::<u64>(), 0..5),
                               payload in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buf = Vec::new();
        let mut w = Writer::internal(&mut buf, &recipients, 7, 9000);
        w.bytes(&payload);
        w.finish().unwrap();
        for cut in 2..buf.len() {
            let body = &buf[2..cut];
            if let Ok(d) = InternalDatagram::parse(body) {
                let mut r = d.payload_reader();
                let _ = r.u64();
                let _ = r.blob();
                let _ = r.string();
                let _ = r.blob32();
            }
            let mut r = Reader::new(body);
            while r.u16().is_ok() {}
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = InternalDatagram::parse(&bytes);
        let mut d = Deframer::new(256, 100);
        let mut off = 0;
        while off < bytes.len() {
            let n = d.push(&bytes[off..]);
            off += n;
            let mut bad = false;
            while let Some(r) = d.next_datagram() {
                if r.is_err() { bad = true; break; }
            }
            if bad || n == 0 { break; }
        }
    }

    #[test]
    fn deframer_chunking_is_invisible(bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..500), 1..40),
                                      chunk in 1usize..700) {
        let mut stream = Vec::new();
        for b in &bodies {
            let mut w = Writer::begin(&mut stream);
            w.bytes(b);
            w.finish().unwrap();
        }
        let mut d = Deframer::new(1024, 600);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut off = 0;
        while off < stream.len() {
            let end = (off + chunk).min(stream.len());
            off += d.push(&stream[off..end]);
            while let Some(r) = d.next_datagram() {
                got.push(r.unwrap().to_vec());
            }
        }
        prop_assert_eq!(got, bodies);
    }

    #[test]
    fn routable_header_agrees_with_the_parser(bytes in proptest::collection::vec(any::<u8>(), 0..60),
                                              count in 0u8..4, control in any::<bool>()) {
        // Steer the first bytes towards plausible headers, control messages included.
        let mut body = bytes;
        if !body.is_empty() {
            body[0] = count;
        }
        if control && body.len() >= 9 {
            body[0] = 1;
            body[1..9].copy_from_slice(&1u64.to_le_bytes());
        }
        let full = InternalDatagram::parse(&body);
        match RoutableHeader::parse(&body) {
            Ok(h) => {
                let d = full.expect("a routable header is a parsable datagram");
                prop_assert!(!h.recipients.is_empty());
                prop_assert_eq!(h.recipients.iter().collect::<Vec<_>>(), d.recipients.iter().collect::<Vec<_>>());
                prop_assert_eq!(h.sender, d.sender);
                prop_assert_eq!(h.msgtype, d.msgtype);
                prop_assert_eq!(h.len + d.payload.len(), body.len());
            }
            Err(HeaderError::NoRecipients) => prop_assert!(body.first().copied().unwrap_or(0) == 0),
            Err(HeaderError::Truncated) => prop_assert!(full.is_err()),
        }
    }
}

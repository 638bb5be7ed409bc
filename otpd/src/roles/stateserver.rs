//! The StateServer role: one instance per core, all subscribed to the control channel and to
//! BCHAN_STATESERVERS; each creates only the objects whose doid its core owns, so an
//! object's state is only ever touched by one thread.

use super::event::{self, Ev};
use super::objects::Objects;
use super::{Output, Placement, Role, Schema};
use otp_wire::channels::BCHAN_STATESERVERS;
use otp_wire::msgtypes::*;
use otp_wire::Doid;
use otp_wire::InternalDatagram;
use std::sync::Arc;
use std::time::Instant;

pub struct StateServer {
    control: u64,
    placement: Placement,
    pub objects: Objects,
}

impl StateServer {
    pub fn new(control: u64, schema: Arc<Schema>, placement: Placement) -> StateServer {
        StateServer {
            control,
            placement,
            objects: Objects::new(schema, "stateserver"),
        }
    }

    /// Doid 0 is invalid, and the control channel cannot be an object too. (Reserved doids
    /// 1-999 are refused in configurations only: astrond creates them, and AIs rely on it.)
    fn creatable(&self, doid: Doid) -> bool {
        doid != 0 && doid as u64 != self.control && doid as u64 != BCHAN_STATESERVERS
    }

    fn handle_control(&mut self, dg: &InternalDatagram<'_>, out: &mut Output) {
        let sender = dg.sender.unwrap_or(0);
        let mut r = dg.payload_reader();
        match dg.msgtype {
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED
            | STATESERVER_CREATE_OBJECT_WITH_REQUIRED_OTHER => {
                let head =
                    (|| Ok::<_, otp_wire::WireError>((r.u32()?, r.u32()?, r.u32()?, r.u16()?)))();
                let Ok((doid, parent, zone, class)) = head else {
                    log::warn!("stateserver: truncated create from {sender}; ignored");
                    return;
                };
                if !self.placement.owns_doid(doid) {
                    return; // another core's object
                }
                if self.objects.contains(doid) {
                    log::warn!(
                        "stateserver: create for existing object {doid} from {sender}; ignored"
                    );
                    return;
                }
                if !self.creatable(doid) {
                    log::warn!(
                        "stateserver: create for doid {doid} from {sender}: invalid, or a channel of the state server itself; ignored"
                    );
                    return;
                }
                let other = dg.msgtype == STATESERVER_CREATE_OBJECT_WITH_REQUIRED_OTHER;
                match self.objects.read_snapshot(class, &mut r, other) {
                    Ok(fields) => {
                        self.objects
                            .create(doid, parent, zone, class, fields, sender, out);
                    }
                    Err(reason) => {
                        out.unsubscribe(doid as u64); // subscribed ahead by the runtime
                        let name = self.objects.schema.class_name(class).to_string();
                        log::warn!(
                            "stateserver: create of {name}({doid}) from {sender} refused: {reason}"
                        );
                        out.events.push(event::encode(
                            "invalid-create",
                            &[
                                ("role", Ev::Str("stateserver")),
                                ("doid", Ev::U64(doid as u64)),
                                ("dclass", Ev::Str(&name)),
                                ("sender", Ev::U64(sender)),
                                ("reason", Ev::Str(&reason)),
                            ],
                        ));
                    }
                }
            }
            STATESERVER_DELETE_AI_OBJECTS => {
                let Ok(ai) = r.u64() else {
                    log::warn!("stateserver: truncated DELETE_AI_OBJECTS from {sender}; ignored");
                    return;
                };
                let doids = self.objects.explicitly_managed_by(ai);
                if !doids.is_empty() {
                    log::info!(
                        "stateserver: deleting {} objects of AI {ai} (core {})",
                        doids.len(),
                        self.placement.core
                    );
                }
                for doid in doids {
                    self.objects.annihilate(doid, sender, true, out);
                }
            }
            other => {
                log::debug!("stateserver: control message type {other} from {sender} ignored");
            }
        }
    }
}

impl Role for StateServer {
    fn name(&self) -> &'static str {
        "stateserver"
    }

    fn hears_itself(&self) -> bool {
        true
    }

    fn metrics(&self, out: &mut Vec<(&'static str, u64)>) {
        out.push(("objects", self.objects.len() as u64));
        out.push(("invalid_updates", self.objects.invalid_updates));
    }

    fn will_subscribe(&self, dg: &InternalDatagram<'_>) -> Option<u64> {
        if !matches!(
            dg.msgtype,
            STATESERVER_CREATE_OBJECT_WITH_REQUIRED | STATESERVER_CREATE_OBJECT_WITH_REQUIRED_OTHER
        ) || !dg
            .recipients
            .iter()
            .any(|c| c == self.control || c == BCHAN_STATESERVERS)
        {
            return None;
        }
        let doid = u32::from_le_bytes(dg.payload.get(..4)?.try_into().ok()?);
        self.creatable(doid).then_some(doid as u64)
    }

    fn start(&mut self, _now: Instant, out: &mut Output) {
        out.subscribe(self.control);
        out.subscribe(BCHAN_STATESERVERS);
    }

    fn handle(
        &mut self,
        _now: Instant,
        _frame: &[u8],
        dg: &InternalDatagram<'_>,
        out: &mut Output,
    ) {
        if dg
            .recipients
            .iter()
            .any(|c| c == self.control || c == BCHAN_STATESERVERS)
        {
            self.handle_control(dg, out);
        }
        self.objects.dispatch(dg, out);
    }
}

#[cfg(test)]
mod tests {
    //! The role driven directly, without sockets or threads: datagrams in, datagrams out.
    use super::*;

    fn schema() -> Arc<Schema> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/dc/objects.dc");
        Arc::new(Schema::new(otp_dc::DcFile::parse_files(&[path]).unwrap()))
    }

    fn feed(
        ss: &mut StateServer,
        recipient: u64,
        sender: u64,
        msgtype: u16,
        payload: &[u8],
    ) -> Output {
        let mut frame = Vec::new();
        let mut w = otp_wire::Writer::internal1(&mut frame, recipient, sender, msgtype);
        w.bytes(payload);
        w.finish().unwrap();
        let dg = InternalDatagram::parse(&frame[2..]).unwrap();
        let mut out = Output::default();
        ss.handle(Instant::now(), &frame, &dg, &mut out);
        out
    }

    fn msgtypes(out: &Output) -> Vec<u16> {
        out.frames()
            .map(|f| InternalDatagram::parse(&f[2..]).unwrap().msgtype)
            .collect()
    }

    #[test]
    fn a_create_on_the_owning_core_makes_an_object_and_other_cores_ignore_it() {
        let schema = schema();
        let small = schema.dc().class_by_name("Small").unwrap().id();
        let doid = 123_456u32;
        let owner = crate::md::home_core(doid as u64, 2);
        let mut create = Vec::new();
        create.extend_from_slice(&doid.to_le_bytes());
        create.extend_from_slice(&9000u32.to_le_bytes());
        create.extend_from_slice(&5u32.to_le_bytes());
        create.extend_from_slice(&small.to_le_bytes());
        create.extend_from_slice(&77u32.to_le_bytes());
        for core in 0..2 {
            let mut ss = StateServer::new(100_100, schema.clone(), Placement { core, cores: 2 });
            let out = feed(
                &mut ss,
                100_100,
                42,
                STATESERVER_CREATE_OBJECT_WITH_REQUIRED,
                &create,
            );
            if core == owner {
                assert_eq!(ss.objects.len(), 1);
                assert_eq!(
                    msgtypes(&out),
                    [
                        STATESERVER_OBJECT_GET_AI,
                        STATESERVER_OBJECT_CHANGING_LOCATION,
                        STATESERVER_OBJECT_ENTER_LOCATION_WITH_REQUIRED,
                        STATESERVER_OBJECT_GET_LOCATION
                    ]
                );
                assert!(out
                    .subscriptions
                    .contains(&crate::roles::Subscription::Add(doid as u64)));
                // An out-of-range update is refused with an EventLogger event.
                let field = schema
                    .dc()
                    .field_by_name(schema.dc().class_by_name("Small").unwrap(), "setValue")
                    .unwrap()
                    .id();
                let mut upd = doid.to_le_bytes().to_vec();
                upd.extend_from_slice(&field.to_le_bytes());
                upd.extend_from_slice(&[1, 2]); // truncated uint32
                let out = feed(&mut ss, doid as u64, 42, STATESERVER_OBJECT_SET_FIELD, &upd);
                assert!(out.datagrams.is_empty());
                assert_eq!(out.events.len(), 1);
            } else {
                assert!(ss.objects.is_empty());
                assert!(out.is_empty());
            }
        }
    }
}

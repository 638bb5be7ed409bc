//! Zones and objects in the 2003 dialect: SET_ZONE (with street visibility), the client's
//! field updates in its own numbering (p2p to other toons; who they come from: `senders`), what
//! is held while a zone is answered.

use super::*;

/// Reads a visibility table: one line per zone, `ZONE: ZONE ZONE ...` (`#` starts a comment).
pub fn load_visibility(path: &std::path::Path) -> Result<FxHashMap<u32, Vec<u32>>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = FxHashMap::default();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = || {
            format!(
                "{}:{}: expected `ZONE: ZONE ZONE ...`",
                path.display(),
                n + 1
            )
        };
        let (zone, rest) = line.split_once(':').ok_or_else(bad)?;
        let zone: u32 = zone.trim().parse().map_err(|_| bad())?;
        let seen = rest
            .split_whitespace()
            .map(|z| z.parse::<u32>().map_err(|_| bad()))
            .collect::<Result<Vec<u32>, String>>()?;
        out.insert(zone, seen);
    }
    Ok(out)
}

/// The interest a SET_ZONE opens.
pub(super) const ZONE_INTEREST: u16 = 1;

/// Client datagrams held while a SET_ZONE is answered.
pub(super) const MAX_HELD: usize = 256;

impl Ctx<'_> {
    pub(super) fn state_resp(&self, zone: u32, out: &mut SessionOut) {
        let mut w = Writer::client(&mut out.to_client, CLIENT_GET_STATE_RESP);
        w.bytes(&[0; 12]).u16(zone as u16);
        let _ = w.finish();
    }

    pub(super) fn set_zone(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let zone = r.u16()? as u32;
        // Later clients append the zones they see; the 2003 client sends none.
        let max = self.ca.toontown.max_visible_zones.max(1);
        let mut zones: smallvec::SmallVec<[u32; 4]> = smallvec::SmallVec::new();
        zones.push(zone);
        // Each zone once (a set: a long list costs its length, not its square).
        let mut seen = rustc_hash::FxHashSet::default();
        seen.insert(zone);
        while r.remaining() >= 2 {
            let z = r.u16()? as u32;
            if zones.len() >= max {
                return Err(refuse(
                    LOST_GENERIC,
                    format!("More than {max} visible zones in one SET_ZONE."),
                ));
            }
            if seen.insert(z) {
                zones.push(z);
            }
        }
        if let Some(vis) = self.ca.visibility.get(&zone) {
            for &z in vis {
                if zones.len() >= max {
                    break;
                }
                if seen.insert(z) {
                    zones.push(z);
                }
            }
        }
        let (avatar, shard) = (self.t.avatar, self.t.shard);
        if avatar == 0 || shard == 0 {
            return Err(refuse(
                LOST_GENERIC,
                "SET_ZONE before an avatar is in a district.",
            ));
        }
        let quiet = self.ca.toontown.quiet_zone;
        if !zones.contains(&quiet) {
            zones.push(quiet);
        }
        let mut w = self.send_to(avatar as u64, STATESERVER_OBJECT_SET_LOCATION, out);
        w.u32(shard).u32(zone);
        let _ = w.finish();
        self.t.zone = zone;
        self.state_resp(zone, out);
        if zone == quiet {
            // The client dropped everything but its managers: so does its view.
            self.narrow_interest_quietly(ZONE_INTEREST, quiet, out);
        }
        self.t.zone_pending = Some(zone);
        let interest = Interest {
            parent: shard,
            zones,
        };
        let Ctx { core, t } = self;
        core.add_interest(now, ZONE_INTEREST, interest, zone, 0, &mut **t, out);
        Ok(())
    }

    pub(super) fn update_field(
        &mut self,
        now: Instant,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let doid = r.u32()?;
        // The client's own number for the field, in the object's class.
        let number = r.u16()?;
        let schema = self.ca.schema.clone();
        let Some(class) = self.lookup_object(doid) else {
            // A p2p field to a toon out of view goes to whoever plays it, but only to a toon
            // the client can know without seeing it: one of its friends (whispers, teleport
            // queries). The client numbers the field as one of the avatar class. Anything else
            // (an AI object it never saw, a stranger's toon) is dropped here.
            let avatar = self.avatar_class_id();
            let friend = self
                .t
                .friends
                .as_ref()
                .is_some_and(|l| l.iter().any(|&(d, _)| d == doid));
            if let Some(field) = self.ca.field_from_client(avatar, number) {
                let flags = schema.flags(avatar, field);
                if flags.p2p && flags.clsend && friend && is_object_channel(doid) {
                    return self.forward(now, avatar, doid, field, true, r, out);
                }
            }
            r.rest();
            return self.refused(now, doid, "an update to an object out of reach", out);
        };
        let Some(field) = self.ca.field_from_client(class, number) else {
            r.rest();
            return self.refused(now, doid, "a field the object's class lacks", out);
        };
        let flags = schema.flags(class, field);
        if !schema.class_has_field(class, field) || !self.may_send(doid, field, flags) {
            // The 2003 client sends such updates in normal play (its shared AI code); the
            // update is dropped, not the client (unless it keeps at it: `max_refused_updates`).
            r.rest();
            return self.refused(now, doid, "a field it may not send", out);
        }
        let p2p = flags.p2p && doid != self.t.avatar;
        self.forward(now, class, doid, field, p2p, r, out)
    }

    /// Checks one field update the client may send (its values, the avatar ids it carries,
    /// the p2p budget of its target) and routes it from the client's sender. `p2p`: the
    /// update goes to another player's object.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        now: Instant,
        class: u16,
        doid: u32,
        field: u16,
        p2p: bool,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let start = r.rest_peek();
        let n = self.check_value(class, field, r)?;
        let value = &start[..n];
        self.check_avatar_ids(class, field, doid, value)?;
        if p2p && !self.p2p_allowed(now, doid) {
            return self.refused(now, doid, "p2p updates to one target over its rate", out);
        }
        // The StateServer sends p2p fields to the object's player (or AI).
        let mut w = self.send_from_client(doid as u64, STATESERVER_OBJECT_SET_FIELD, out);
        w.u32(doid).u16(field).bytes(value);
        if w.finish().is_err() {
            return Err(refuse(LOST_TRUNCATED, "Update too large to route."));
        }
        Ok(())
    }

    /// An update dropped, not obeyed: counted against `limits.max_refused_updates` (past it
    /// the client is ejected, GO_GET_LOST 151); reported (a warning and a
    /// `client-update-dropped` event) at most once per `limits.refused_window_ms`, with the
    /// count of those not reported since.
    fn refused(
        &mut self,
        now: Instant,
        doid: u32,
        what: &str,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        if let Some(suppressed) = self.refused_update(now, LOST_SECURITY, what, doid)? {
            let account = self.t.account.clone().unwrap_or_default();
            use crate::roles::event::Ev;
            out.events.push(crate::roles::event::encode(
                "client-update-dropped",
                &[
                    ("role", Ev::Str("clientagent")),
                    ("sender", Ev::Str(&self.sender_name())),
                    ("account", Ev::Str(&account)),
                    ("doid", Ev::U64(doid as u64)),
                    ("reason", Ev::Str(what)),
                    ("suppressed", Ev::U64(suppressed as u64)),
                ],
            ));
        }
        Ok(())
    }

    /// Validates one value of `field` at the reader and steps over it.
    pub(super) fn check_value(
        &self,
        class: u16,
        field: u16,
        r: &mut Reader<'_>,
    ) -> Result<usize, Refusal> {
        let ascii_only = !self.ca.limits.allow_utf8_strings;
        match self.ca.schema.value_len_with(
            class,
            field,
            r.rest_peek(),
            self.validate_options(ascii_only),
        ) {
            Ok(n) => {
                r.skip(n)?;
                Ok(n)
            }
            Err(v) if v.truncated => Err(refuse(LOST_TRUNCATED, "Update ended early.")),
            Err(v) => Err(refuse(
                LOST_TRUNCATED,
                format!("Update violates the DC file: {}", v.message),
            )),
        }
    }
}

//! Who a 2003 client's field updates say they come from: the sender channel they carry into
//! the cluster (the avatar's puppet channel), the avatar ids written inside them (checked
//! against the avatar in play), and how many p2p updates one client may send to one target.

use super::*;
use crate::config::{AvatarIdField, DEFAULT_AVATAR_ID_FIELDS};
use otp_dc::{DcFile, FieldKind};

/// Distinct p2p targets one session tracks at once (each with its one-second count). A new
/// target while all are in their second is refused: no honest client whispers to this many
/// players in one second.
pub(super) const MAX_P2P_TARGETS: usize = 16;

/// The 2003 client's "logged out by an administrator" (its own text): the code for a client
/// caught naming another avatar as itself, or refusing to stop sending refused updates.
pub const LOST_SECURITY: u16 = 151;

/// Where a field's own-avatar-id argument is: (class, field) in the cluster's numbering →
/// the byte offset of a 32-bit integer in the field's value.
pub type AvatarIdArgs = FxHashMap<(u16, u16), usize>;

/// Resolves `toontown.avatar_id_fields` against the DC files (see `ToontownConfig`): every
/// class that is the named class or inherits from it gets the field. The defaults skip what
/// the DC files lack; a configured entry that does not resolve is an error naming it.
pub fn avatar_id_args(
    dc: &DcFile,
    configured: Option<&[AvatarIdField]>,
) -> Result<AvatarIdArgs, String> {
    let defaults: Vec<AvatarIdField>;
    let (list, strict) = match configured {
        Some(l) => (l, true),
        None => {
            defaults = DEFAULT_AVATAR_ID_FIELDS
                .iter()
                .map(|&(c, f, a)| AvatarIdField {
                    class: c.into(),
                    field: f.into(),
                    arg: a,
                })
                .collect();
            (&defaults[..], false)
        }
    };
    let mut out = AvatarIdArgs::default();
    for e in list {
        let key = format!(
            "toontown.avatar_id_fields ({}.{}, arg {})",
            e.class, e.field, e.arg
        );
        let Some(class) = dc.class_by_name(&e.class) else {
            if strict {
                return Err(format!("{key}: no class '{}' in the DC files", e.class));
            }
            continue;
        };
        let Some(field) = dc.field_by_name(class, &e.field) else {
            if strict {
                return Err(format!("{key}: '{}' has no field '{}'", e.class, e.field));
            }
            continue;
        };
        let offset = match arg_offset(field, e.arg) {
            Ok(o) => o,
            Err(why) if strict => return Err(format!("{key}: {why}")),
            Err(why) => {
                // A DC file whose field has another shape than Toontown's: not checked.
                log::warn!("{key} (a default): {why}; not checked");
                continue;
            }
        };
        let decl = field.decl_index();
        for c in dc.classes() {
            if c.is_struct() || !inherits(dc, c.id(), class.id(), 0) {
                continue;
            }
            if let Some(f) = dc.field_by_name(c, &e.field) {
                if f.decl_index() == decl {
                    out.insert((c.id(), f.id()), offset);
                }
            }
        }
    }
    Ok(out)
}

/// The byte offset of argument `arg` of `field`, a 32-bit integer after fixed-size ones.
fn arg_offset(field: &otp_dc::Field, arg: usize) -> Result<usize, String> {
    let FieldKind::Atomic(params) = field.kind() else {
        return Err("not an atomic field".into());
    };
    if arg >= params.len() {
        return Err(format!("the field has {} arguments", params.len()));
    }
    let mut offset = 0;
    for (i, p) in params.iter().enumerate() {
        if i == arg {
            return match p.is_plain_int32() {
                true => Ok(offset),
                false => Err(format!("argument {i} is not a uint32 (or int32)")),
            };
        }
        match p.fixed_size() {
            Some(n) => offset += n,
            None => {
                return Err(format!(
                    "argument {i}, before it, has no fixed size (put the avatar id first)"
                ))
            }
        }
    }
    Err(format!("the field has {} arguments", params.len()))
}

/// Whether class `c` is `ancestor` or inherits from it.
fn inherits(dc: &DcFile, c: u16, ancestor: u16, depth: usize) -> bool {
    if c == ancestor {
        return true;
    }
    if depth > 64 {
        return false;
    }
    dc.class(c).is_some_and(|k| {
        k.parents()
            .iter()
            .any(|&p| inherits(dc, p, ancestor, depth + 1))
    })
}

/// One p2p target's count in its current second.
#[derive(Debug, Clone, Copy)]
pub(super) struct P2pTarget {
    doid: u32,
    start: Instant,
    count: u32,
}

impl Ctx<'_> {
    /// The sender channel of the client's own words (its field updates): the avatar's puppet
    /// channel while one is in the world (its low 32 bits are the avatar id, as AIs read it:
    /// `getAvatarIdFromSender() = sender & 0xffffffff`), else the session's channel.
    pub(super) fn client_sender(&self) -> u64 {
        match self.t.avatar {
            0 => self.channel(),
            a => puppet_channel(a),
        }
    }

    /// Starts an internal datagram to `to` from the client's own sender (`client_sender`).
    pub(super) fn send_from_client<'a>(
        &self,
        to: u64,
        msgtype: u16,
        out: &'a mut SessionOut,
    ) -> Writer<'a> {
        Writer::internal1(&mut out.datagrams, to, self.client_sender(), msgtype)
    }

    /// Checks the avatar ids a field carries (`value`: its validated bytes) against the avatar
    /// in play: naming another avatar as itself ejects the client (GO_GET_LOST 151).
    pub(super) fn check_avatar_ids(
        &self,
        class: u16,
        field: u16,
        doid: u32,
        value: &[u8],
    ) -> Result<(), Refusal> {
        let Some(&at) = self.ca.avatar_id_args.get(&(class, field)) else {
            return Ok(());
        };
        let Some(b) = value.get(at..at + 4) else {
            return Ok(());
        };
        let named = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if named == self.t.avatar && named != 0 {
            return Ok(());
        }
        let mut e = refuse(
            LOST_SECURITY,
            format!(
                "Impersonation: {} names avatar {named} as its sender; this client plays {}.",
                self.ca.schema.field_name(class, field),
                self.t.avatar
            ),
        )
        .about(doid);
        e.field = Some(field);
        Err(e)
    }

    /// Counts a p2p update to `doid` against `toontown.max_p2p_per_target_per_second`; false
    /// when it is over (the update is then refused).
    pub(super) fn p2p_allowed(&mut self, now: Instant, doid: u32) -> bool {
        let max = self.ca.toontown.max_p2p_per_target_per_second;
        if max == 0 {
            return true;
        }
        let second = Duration::from_secs(1);
        let targets = &mut self.t.p2p_targets;
        if let Some(t) = targets.iter_mut().find(|t| t.doid == doid) {
            if now.duration_since(t.start) >= second {
                t.start = now;
                t.count = 0;
            }
            t.count += 1;
            return t.count <= max;
        }
        // A new target: take the place of one whose second is over, if the table is full.
        let entry = P2pTarget {
            doid,
            start: now,
            count: 1,
        };
        if targets.len() < MAX_P2P_TARGETS {
            targets.push(entry);
            return true;
        }
        match targets
            .iter_mut()
            .find(|t| now.duration_since(t.start) >= second)
        {
            Some(t) => {
                *t = entry;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DC: &str = "keyword p2p;
dclass DistributedObject {};
dclass DistributedAvatar : DistributedObject {
  setWhisperFrom(uint32 fromId, string) p2p clsend;
  friendsNotify(int32 avId, int8 status) p2p clsend;
  teleportResponse(uint8 a, uint16 b, uint32 avId) p2p clsend;
  setChat(string chat, uint32 to) p2p clsend;
};
dclass DistributedToon : DistributedAvatar {};
dclass DistributedSuit : DistributedObject {};
";

    fn entry(class: &str, field: &str, arg: usize) -> AvatarIdField {
        AvatarIdField {
            class: class.into(),
            field: field.into(),
            arg,
        }
    }

    fn field(dc: &DcFile, class: &str, name: &str) -> (u16, u16) {
        let c = dc.class_by_name(class).unwrap();
        (c.id(), dc.field_by_name(c, name).unwrap().id())
    }

    #[test]
    fn fields_resolve_for_the_class_and_its_heirs_with_their_offsets() {
        let dc = DcFile::parse_str("t.dc", DC).unwrap();
        let list = [
            entry("DistributedAvatar", "friendsNotify", 0),
            entry("DistributedAvatar", "teleportResponse", 2),
        ];
        let m = avatar_id_args(&dc, Some(&list)).unwrap();
        assert_eq!(
            m.get(&field(&dc, "DistributedToon", "friendsNotify")),
            Some(&0)
        );
        assert_eq!(
            m.get(&field(&dc, "DistributedAvatar", "teleportResponse")),
            Some(&3)
        );
        assert_eq!(m.len(), 4, "two fields × two classes");
        // The defaults keep what this DC file has in Toontown's shape: DistributedToon's
        // setWhisperFrom and friendsNotify (its teleportResponse starts with a uint8: left).
        let d = avatar_id_args(&dc, None).unwrap();
        assert_eq!(d.len(), 2);
        assert!(d.contains_key(&field(&dc, "DistributedToon", "setWhisperFrom")));
        assert!(d.contains_key(&field(&dc, "DistributedToon", "friendsNotify")));
    }

    #[test]
    fn entries_that_do_not_resolve_are_errors_naming_them() {
        let dc = DcFile::parse_str("t.dc", DC).unwrap();
        for (e, want) in [
            (entry("DistributedToon", "nope", 0), "no field 'nope'"),
            (entry("Nobody", "setWhisperFrom", 0), "no class 'Nobody'"),
            (
                entry("DistributedToon", "setWhisperFrom", 1),
                "not a uint32",
            ),
            (entry("DistributedToon", "setChat", 1), "no fixed size"),
            (
                entry("DistributedToon", "friendsNotify", 2),
                "has 2 arguments",
            ),
        ] {
            let err = avatar_id_args(&dc, Some(std::slice::from_ref(&e))).unwrap_err();
            assert!(err.contains("toontown.avatar_id_fields"), "{err}");
            assert!(err.contains(&e.field), "{err}");
            assert!(err.contains(want), "{err}");
        }
    }
}

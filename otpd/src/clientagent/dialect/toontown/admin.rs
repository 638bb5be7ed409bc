//! What the admin API asks of a 2003 session: who it is (account, toon, district, zone), a
//! system message shown the way the 2003 game showed its own (`setSystemMessage` on the
//! player's own toon: a system whisper), and the GO_GET_LOST codes for a kick and a shutdown.

use super::{Ctx, State};
use crate::clientagent::session::SessionOut;
use otp_wire::toontown2003::CLIENT_OBJECT_UPDATE_FIELD;
use otp_wire::Writer;

/// The toon field the 2003 client shows as a system message (`DistributedAvatar.
/// setSystemMessage(uint32 aboutId, string)`, displayed by `displayWhisper` as WTSystem).
pub(super) const SYSTEM_MESSAGE_FIELD: &str = "setSystemMessage";

/// GO_GET_LOST code for a kick: "You have been logged out by an administrator working on the
/// Toontown servers." (`TCRBootedReasons[151]`).
pub(crate) const LOST_KICKED: u16 = 151;
/// GO_GET_LOST code for a shutdown: "The Toontown district you were playing on has been
/// reset. ... you should be able to connect again" (`TCRBootedReasons[153]`).
pub(crate) const LOST_SHUTDOWN: u16 = 153;

impl State {
    /// (account name, avatar, district, zone) as this session knows them.
    pub(in crate::clientagent) fn who(&self) -> (Option<&str>, u32, u32, u32) {
        (self.account.as_deref(), self.avatar, self.shard, self.zone)
    }
}

impl Ctx<'_> {
    /// Shows `text` to the player as a system message; false when there is no toon in play
    /// (the 2003 client only shows it on its own toon) or the DC file has no such field.
    pub(in crate::clientagent) fn system_message(&self, text: &str, out: &mut SessionOut) -> bool {
        let avatar = self.t.avatar;
        if avatar == 0 {
            return false;
        }
        let dc = self.ca.schema.dc();
        let Some(class) = dc.class_by_name(&self.ca.toontown.avatar_class) else {
            return false;
        };
        let Some(field) = dc.field_by_name(class, SYSTEM_MESSAGE_FIELD) else {
            return false;
        };
        let Some(number) = self.ca.field_to_client(class.id(), field.id()) else {
            return false;
        };
        let mut w = Writer::client(&mut out.to_client, CLIENT_OBJECT_UPDATE_FIELD);
        // aboutId 0: from nobody in particular.
        w.u32(avatar).u16(number).u32(0).string(text);
        w.finish().is_ok()
    }
}

//! The admin API's messages to a session (otpd's own CLIENTAGENT_ADMIN_*, on the all-clients
//! channel or the client's own): describe yourself, leave if you are the one meant, show the
//! player an operator's message. A target names sessions by scope (everyone, a district, an
//! avatar, an account, a client channel); a session not meant does nothing.

use super::core::refuse;
use super::{Session, SessionOut};
use otp_wire::msgtypes::admin_scope::*;
use otp_wire::msgtypes::*;
use otp_wire::{Reader, WireError};

/// Longest system message shown (bytes); longer texts are cut.
pub(super) const MAX_SYSTEM_MESSAGE_BYTES: usize = 1024;

/// Which sessions an admin message is for.
struct Target<'a> {
    scope: u8,
    id: u64,
    account: &'a [u8],
}

impl Session {
    /// CLIENTAGENT_ADMIN_LIST, _EJECT and _MESSAGE.
    pub(super) fn admin(
        &mut self,
        sender: u64,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        if msgtype == CLIENTAGENT_ADMIN_LIST {
            let context = r.u32()?;
            self.describe(sender, context, out);
            return Ok(());
        }
        let target = Target {
            scope: r.u8()?,
            id: r.u64()?,
            account: r.blob()?,
        };
        if !self.is_meant(&target) {
            return Ok(());
        }
        match msgtype {
            CLIENTAGENT_ADMIN_EJECT => {
                let shutdown = r.u8()? == 1;
                let mut reason = String::from_utf8_lossy(r.blob()?).into_owned();
                super::clip_text(&mut reason, super::MAX_REASON_BYTES);
                let code = self.dialect.admin_eject_code(shutdown);
                self.core.eject(refuse(code, reason), false, out);
            }
            _ => {
                let mut text = String::from_utf8_lossy(r.blob()?).into_owned();
                super::clip_text(&mut text, MAX_SYSTEM_MESSAGE_BYTES);
                if !self.dialect.system_message(&mut self.core, &text, out) {
                    log::debug!("{}: no way to show a system message", self.label());
                }
            }
        }
        Ok(())
    }

    /// (account name, avatar, district, zone): the dialect's, or for an Astron session the
    /// account (`#ID`) and avatar its channel names once the cluster has set it (the OTP
    /// convention: account << 32 | avatar).
    fn who(&self) -> (Option<&str>, u32, u32, u32) {
        self.dialect.who().unwrap_or_else(|| {
            let core = &self.core;
            let set = core.channel != core.allocated;
            let avatar = if set { core.channel as u32 } else { 0 };
            (self.dialect.astron_account(), avatar, 0, 0)
        })
    }

    fn is_meant(&self, t: &Target<'_>) -> bool {
        let (account, avatar, district, _) = self.who();
        match t.scope {
            EVERYONE => true,
            DISTRICT => district != 0 && u64::from(district) == t.id,
            AVATAR => avatar != 0 && u64::from(avatar) == t.id,
            ACCOUNT => account.is_some_and(|a| a.as_bytes() == t.account),
            CHANNEL => self.core.channel == t.id || self.core.allocated == t.id,
            _ => false,
        }
    }

    /// CLIENTAGENT_ADMIN_LIST_RESP to `to`.
    fn describe(&self, to: u64, context: u32, out: &mut SessionOut) {
        let core = &self.core;
        let (account, avatar, district, zone) = self.who();
        let dialect = match core.ca.dialect {
            crate::config::Dialect::Toontown2003 => 1,
            _ => 0,
        };
        let since = core.ca.clock.unix_at(core.opened).as_secs();
        let remote = core.remote().to_string();
        let mut w = core.send_to(to, CLIENTAGENT_ADMIN_LIST_RESP, out);
        w.u32(context)
            .u64(core.channel)
            .string(&core.ca.bind)
            .u8(dialect)
            .u16(core.state())
            .string(account.unwrap_or(""))
            .u32(avatar)
            .u32(district)
            .u32(zone)
            .string(&remote)
            .u64(since);
        let _ = w.finish();
    }
}

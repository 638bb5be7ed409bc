//! Districts in the 2003 dialect: the district list and moving the avatar to a district
//! (SET_SHARD); districts come and go through CLIENTAGENT_SHARD_UP/DOWN.

use super::*;

pub use crate::roles::shards::Shards;

impl Ctx<'_> {
    pub(super) fn shard_list(&mut self, out: &mut SessionOut) {
        let shards = self.ca.shards.lock();
        let mut w = Writer::client(&mut out.to_client, CLIENT_GET_SHARD_LIST_RESP);
        w.u16(shards.len().min(u16::MAX as usize) as u16);
        for (id, (name, population)) in shards.iter() {
            w.u32(*id).string(name).u32(*population);
        }
        let _ = w.finish();
    }

    pub(super) fn set_shard(
        &mut self,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), Refusal> {
        let asked = r.u32()?;
        let avatar = self.t.avatar;
        if avatar == 0 {
            return Err(refuse(LOST_GENERIC, "SET_SHARD without an avatar in play."));
        }
        let shard = {
            let shards = self.ca.shards.lock();
            if shards.contains_key(&asked) {
                Some(asked)
            } else {
                shards.keys().next().copied()
            }
        };
        let Some(shard) = shard else {
            return Err(refuse(153, "No district is available."));
        };
        self.close_interest_quietly(ZONE_INTEREST, out);
        let quiet = self.ca.toontown.quiet_zone;
        let mut w = self.send_to(avatar as u64, STATESERVER_OBJECT_SET_LOCATION, out);
        w.u32(shard).u32(quiet);
        let _ = w.finish();
        self.t.shard = shard;
        self.state_resp(0, out);
        Ok(())
    }

    /// A district up or down, from this process's directory: the client's SERVER_UP/DOWN
    /// (once it is logged in).
    pub(super) fn district_news(
        &mut self,
        msgtype: u16,
        r: &mut Reader<'_>,
        out: &mut SessionOut,
    ) -> Result<(), WireError> {
        let id = r.u32()?;
        if self.t.account.is_some() {
            if msgtype == CLIENTAGENT_SHARD_UP {
                let name = String::from_utf8_lossy(r.blob()?).into_owned();
                let mut w = Writer::client(&mut out.to_client, CLIENT_SERVER_UP);
                w.u32(id).string(&name);
                let _ = w.finish();
            } else {
                let mut w = Writer::client(&mut out.to_client, CLIENT_SERVER_DOWN);
                w.u32(id);
                let _ = w.finish();
            }
        }
        r.rest();
        Ok(())
    }
}

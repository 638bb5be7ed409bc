//! The district directory of the Toontown 2003 dialect: AIs announce their districts
//! (CLIENTAGENT_SHARD_UP: u32 district doid, string name, u32 population; CLIENTAGENT_SHARD_DOWN:
//! u32 district doid, best sent as a post-remove) on the configured channel, and every
//! Toontown listener of this process answers CLIENT_GET_SHARD_LIST from the list kept here.

use super::finish_or_drop;
use super::{Output, Role};
use otp_wire::channels::BCHAN_CLIENTS;
use otp_wire::toontown2003::{CLIENTAGENT_SHARD_DOWN, CLIENTAGENT_SHARD_UP};
use otp_wire::InternalDatagram;
use std::time::Instant;

/// The districts announced to this process (CLIENTAGENT_SHARD_UP / _DOWN): id → (name,
/// population), kept here and read by every Toontown listener.
pub type Shards =
    std::sync::Arc<parking_lot::Mutex<std::collections::BTreeMap<u32, (String, u32)>>>;

/// Most districts kept; more announcements are ignored (with a log line).
pub const MAX_SHARDS: usize = 1024;

pub struct ShardDirectory {
    channels: Vec<u64>,
    shards: Shards,
}

impl ShardDirectory {
    pub fn new(channels: Vec<u64>, shards: Shards) -> ShardDirectory {
        ShardDirectory { channels, shards }
    }
}

impl Role for ShardDirectory {
    fn name(&self) -> &'static str {
        "shards"
    }

    fn start(&mut self, _now: Instant, out: &mut Output) {
        for &c in &self.channels {
            out.subscribe(c);
        }
    }

    fn handle(
        &mut self,
        _now: Instant,
        _frame: &[u8],
        dg: &InternalDatagram<'_>,
        out: &mut Output,
    ) {
        let mut r = dg.payload_reader();
        match dg.msgtype {
            CLIENTAGENT_SHARD_UP => {
                let (Ok(id), Ok(name), Ok(population)) = (r.u32(), r.blob(), r.u32()) else {
                    log::warn!(
                        "shards: malformed CLIENTAGENT_SHARD_UP from {:?}",
                        dg.sender
                    );
                    return;
                };
                let mut shards = self.shards.lock();
                if shards.len() >= MAX_SHARDS && !shards.contains_key(&id) {
                    log::warn!("shards: {MAX_SHARDS} districts known; district {id} ignored");
                    return;
                }
                let name = String::from_utf8_lossy(name).into_owned();
                if shards.insert(id, (name.clone(), population)).is_none() {
                    log::info!("shards: district {id} '{name}' is up");
                    // Every client session of this process hears it (CLIENT_SERVER_UP).
                    let mut w = out.datagram(&[BCHAN_CLIENTS], 0, CLIENTAGENT_SHARD_UP);
                    w.u32(id).string(&name).u32(population);
                    finish_or_drop(w, "shards: CLIENTAGENT_SHARD_UP");
                }
            }
            CLIENTAGENT_SHARD_DOWN => {
                if let Ok(id) = r.u32() {
                    if self.shards.lock().remove(&id).is_some() {
                        log::info!("shards: district {id} is down");
                        let mut w = out.datagram(&[BCHAN_CLIENTS], 0, CLIENTAGENT_SHARD_DOWN);
                        w.u32(id);
                        w.finish_bounded();
                    }
                }
            }
            _ => {}
        }
    }

    fn metrics(&self, out: &mut Vec<(&'static str, u64)>) {
        out.push(("districts", self.shards.lock().len() as u64));
    }
}

//! The child MDs linked to this MD (otpd children, named by `md::link_name`): which link is
//! each child's newest, so that the post-removes of a link the child has already replaced are
//! not fired, and the figures `/metrics` and `otpd status` list for each child.

use crate::md::Pid;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// A child link's live figures, written by the core that owns the link (relaxed stores, no
/// lock) and read at each scrape.
#[derive(Debug, Default)]
pub(crate) struct ChildLive {
    /// Unix time of the last bytes read from the child, in milliseconds.
    pub last_heard_ms: AtomicU64,
    /// Single channels and ranges the child subscribed.
    pub subscriptions: AtomicU64,
    /// Post-removes the child registered.
    pub post_removes: AtomicU64,
}

impl ChildLive {
    pub(crate) fn heard_now(&self) {
        self.last_heard_ms.store(unix_ms(), Ordering::Relaxed);
    }
}

/// A child MD as listed by `/metrics` and `otpd status`.
#[derive(Debug, Clone)]
pub struct ChildFigures {
    pub name: String,
    pub address: SocketAddr,
    /// Unix milliseconds when its current link registered.
    pub since_ms: u64,
    pub last_heard_ms: u64,
    pub subscriptions: u64,
    pub post_removes: u64,
    /// Links it registered since this process started (1 = never re-registered).
    pub links: u64,
}

struct Entry {
    pid: Pid,
    address: SocketAddr,
    since_ms: u64,
    links: u64,
    live: Arc<ChildLive>,
}

/// Every child MD that has registered, by (daemon name, incarnation); a child is forgotten
/// when its newest link closes. Bounded by the participants the MD accepts.
#[derive(Default)]
pub struct ChildMds {
    by_child: Mutex<BTreeMap<(String, u64), Entry>>,
}

impl ChildMds {
    /// Records link `pid` as the newest of child (`name`, `incarnation`). Returns its live
    /// figures and the link it replaces, if the child had another one open.
    pub(crate) fn register(
        &self,
        name: &str,
        incarnation: u64,
        address: SocketAddr,
        pid: Pid,
    ) -> (Arc<ChildLive>, Option<Pid>) {
        let live = Arc::new(ChildLive::default());
        live.heard_now();
        let mut map = self.by_child.lock();
        let key = (name.to_string(), incarnation);
        let links = map.get(&key).map_or(0, |e| e.links) + 1;
        let old = map.insert(
            key,
            Entry {
                pid,
                address,
                since_ms: unix_ms(),
                links,
                live: live.clone(),
            },
        );
        (live, old.map(|e| e.pid).filter(|&p| p != pid))
    }

    /// Link `pid` of child (`name`, `incarnation`) has closed. True when it was the child's
    /// newest link (the child is gone: its post-removes fire); false when a newer link of the
    /// same child has registered since (the child re-sent its post-removes on that link: the
    /// old link's must not fire).
    pub(crate) fn link_closed(&self, name: &str, incarnation: u64, pid: Pid) -> bool {
        let mut map = self.by_child.lock();
        let key = (name.to_string(), incarnation);
        match map.get(&key) {
            Some(e) if e.pid != pid => false,
            Some(_) => {
                map.remove(&key);
                true
            }
            None => true,
        }
    }

    /// The child MDs linked now, by name.
    pub fn list(&self) -> Vec<ChildFigures> {
        let map = self.by_child.lock();
        map.iter()
            .map(|((name, _), e)| ChildFigures {
                name: name.clone(),
                address: e.address,
                since_ms: e.since_ms,
                last_heard_ms: e.live.last_heard_ms.load(Ordering::Relaxed),
                subscriptions: e.live.subscriptions.load(Ordering::Relaxed),
                post_removes: e.live.post_removes.load(Ordering::Relaxed),
                links: e.links,
            })
            .collect()
    }
}

/// Now, in Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_link_does_not_fire_and_the_newest_does() {
        let children = ChildMds::default();
        let addr: SocketAddr = "127.0.0.2:7100".parse().unwrap();
        let (old, new) = (Pid::new(0, 0, 5), Pid::new(1, 0, 9));
        assert_eq!(children.register("ca", 7, addr, old).1, None);
        assert_eq!(children.register("ca", 7, addr, new).1, Some(old));
        // Another process of the same name is another child.
        assert_eq!(children.register("ca", 8, addr, Pid::new(0, 1, 5)).1, None);
        assert_eq!(children.list().len(), 2);
        assert!(
            !children.link_closed("ca", 7, old),
            "the stale link must not fire"
        );
        assert_eq!(children.list().iter().filter(|c| c.links == 2).count(), 1);
        assert!(children.link_closed("ca", 7, new), "the newest link fires");
        assert_eq!(children.list().len(), 1);
        // A link closing after its child was forgotten fires (nothing newer replaced it).
        assert!(children.link_closed("ca", 7, old));
    }
}

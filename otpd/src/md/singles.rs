//! One core's shard of single-channel subscriptions: for each channel homed on this core, the
//! participants subscribed to it. Reports when a channel gains its first or loses its last one.

use super::Pid;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

#[derive(Default)]
pub struct SingleShard {
    channels: FxHashMap<u64, SmallVec<[Pid; 2]>>,
}

impl SingleShard {
    /// Returns true when `channel` had no subscriber before.
    pub fn subscribe(&mut self, pid: Pid, channel: u64) -> bool {
        let subs = self.channels.entry(channel).or_default();
        let first = subs.is_empty();
        if !subs.contains(&pid) {
            subs.push(pid);
        }
        first
    }

    /// Returns true when `channel` has no subscriber left (and had `pid`).
    pub fn unsubscribe(&mut self, pid: Pid, channel: u64) -> bool {
        let Some(subs) = self.channels.get_mut(&channel) else {
            return false;
        };
        let Some(i) = subs.iter().position(|&p| p == pid) else {
            return false;
        };
        subs.swap_remove(i);
        if subs.is_empty() {
            self.channels.remove(&channel);
            true
        } else {
            false
        }
    }

    #[inline]
    pub fn lookup(&self, channel: u64) -> &[Pid] {
        self.channels.get(&channel).map(|s| &s[..]).unwrap_or(&[])
    }

    pub fn len(&self) -> usize {
        self.channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.channels.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last() {
        let mut s = SingleShard::default();
        let (a, b) = (Pid::new(0, 0, 1), Pid::new(1, 0, 1));
        assert!(s.subscribe(a, 5));
        assert!(!s.subscribe(b, 5));
        assert!(!s.subscribe(a, 5));
        assert_eq!(s.lookup(5).len(), 2);
        assert!(!s.unsubscribe(a, 5));
        assert!(!s.unsubscribe(a, 5));
        assert!(s.unsubscribe(b, 5));
        assert!(s.lookup(5).is_empty() && s.is_empty());
    }
}

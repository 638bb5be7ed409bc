//! One core's single-channel subscriptions: for each channel, this core's participants that
//! subscribe it, and the other cores that do (the replica their `Present`/`Absent` keep). One
//! hash probe answers both, so routing a datagram costs one probe per recipient channel.

use super::block_hash::BlockMap;
use super::Pid;
use smallvec::SmallVec;

/// Who subscribes one channel: this core's participants, and the other cores (bit = core).
#[derive(Default)]
pub struct Subs {
    pub local: SmallVec<[Pid; 2]>,
    pub remote: u64,
}

#[derive(Default)]
pub struct SingleShard {
    channels: BlockMap<u64, Subs>,
    /// Channels with at least one local subscriber.
    local_channels: usize,
}

impl SingleShard {
    /// Subscribes a participant of this core; returns true when `channel` had no local
    /// subscriber before.
    pub fn subscribe(&mut self, pid: Pid, channel: u64) -> bool {
        let subs = self.channels.entry(channel).or_default();
        let first = subs.local.is_empty();
        if !subs.local.contains(&pid) {
            subs.local.push(pid);
            if first {
                self.local_channels += 1;
            }
        }
        first
    }

    /// Returns true when `channel` has no local subscriber left (and had `pid`).
    pub fn unsubscribe(&mut self, pid: Pid, channel: u64) -> bool {
        let Some(subs) = self.channels.get_mut(&channel) else {
            return false;
        };
        let Some(i) = subs.local.iter().position(|&p| p == pid) else {
            return false;
        };
        subs.local.swap_remove(i);
        if !subs.local.is_empty() {
            return false;
        }
        self.local_channels -= 1;
        if subs.remote == 0 {
            self.channels.remove(&channel);
        }
        true
    }

    /// Another core's participants now subscribe `channel` (`present`), or no longer do.
    pub fn set_remote(&mut self, channel: u64, core: usize, present: bool) {
        debug_assert!(core < 64);
        if present {
            self.channels.entry(channel).or_default().remote |= 1 << core;
        } else if let Some(subs) = self.channels.get_mut(&channel) {
            subs.remote &= !(1 << core);
            if subs.remote == 0 && subs.local.is_empty() {
                self.channels.remove(&channel);
            }
        }
    }

    #[inline]
    pub fn get(&self, channel: u64) -> Option<&Subs> {
        self.channels.get(&channel)
    }

    /// This core's subscribers of `channel`.
    #[inline]
    pub fn lookup(&self, channel: u64) -> &[Pid] {
        self.channels
            .get(&channel)
            .map(|s| &s.local[..])
            .unwrap_or(&[])
    }

    /// The other cores that subscribe `channel` (bit = core).
    #[inline]
    pub fn remote(&self, channel: u64) -> u64 {
        self.channels.get(&channel).map_or(0, |s| s.remote)
    }

    /// Whether any core, this one or another, subscribes `channel`.
    pub fn anywhere(&self, channel: u64) -> bool {
        self.channels.contains_key(&channel)
    }

    /// Channels this core's participants subscribe.
    pub fn len(&self) -> usize {
        self.local_channels
    }

    pub fn is_empty(&self) -> bool {
        self.local_channels == 0
    }

    /// Channels some other core subscribes (for tests).
    pub fn remote_channels(&self) -> usize {
        self.channels.values().filter(|s| s.remote != 0).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_and_last() {
        let mut s = SingleShard::default();
        let (a, b) = (Pid::new(0, 0, 1), Pid::new(0, 0, 2));
        assert!(s.subscribe(a, 5));
        assert!(!s.subscribe(b, 5));
        assert!(!s.subscribe(a, 5));
        assert_eq!(s.lookup(5).len(), 2);
        assert!(!s.unsubscribe(a, 5));
        assert!(!s.unsubscribe(a, 5));
        assert!(s.unsubscribe(b, 5));
        assert!(s.lookup(5).is_empty() && s.is_empty() && !s.anywhere(5));
    }

    #[test]
    fn local_and_remote_share_an_entry_that_goes_with_both() {
        let mut s = SingleShard::default();
        let a = Pid::new(0, 0, 1);
        s.set_remote(7, 3, true);
        assert!(s.subscribe(a, 7));
        assert_eq!((s.remote(7), s.lookup(7), s.len()), (0b1000, &[a][..], 1));
        assert!(s.unsubscribe(a, 7));
        assert!(s.anywhere(7) && s.is_empty(), "core 3 still subscribes");
        s.set_remote(7, 1, true);
        s.set_remote(7, 3, false);
        assert_eq!(s.remote(7), 0b10);
        s.set_remote(7, 1, false);
        assert!(!s.anywhere(7) && s.remote_channels() == 0);
    }
}

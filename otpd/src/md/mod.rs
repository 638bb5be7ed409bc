//! The MessageDirector, free of I/O: participant ids, the single-channel subscriber shard a
//! core owns, the range map with the upstream messages its changes imply, the ordered routing
//! protocol between cores (`router`) that drives them, and what the MD keeps for each
//! participant with the handling of its control messages (`participant`), and the name a child
//! MD gives itself upstream (`link_name`); `block_hash` is the hash of the channel table.

pub mod block_hash;
pub mod link_name;
pub mod participant;
pub mod ranges;
pub mod router;
pub mod singles;

pub use ranges::RangeMap;
pub use singles::SingleShard;

/// A participant: the core that owns its connection, a generation and a slot on that core.
/// A stale id (its slot reused) never matches the new occupant, because the generation differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid(pub u64);

impl Pid {
    pub fn new(core: usize, generation: u32, slot: usize) -> Pid {
        debug_assert!(core < 256 && slot <= u32::MAX as usize);
        Pid(((core as u64) << 56) | (((generation & 0xff_ffff) as u64) << 32) | slot as u64)
    }
    pub fn core(self) -> usize {
        (self.0 >> 56) as usize
    }
    pub fn generation(self) -> u32 {
        ((self.0 >> 32) & 0xff_ffff) as u32
    }
    pub fn slot(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }
}

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}.{}", self.core(), self.slot(), self.generation())
    }
}

/// The core a channel's single-channel subscriber table lives on. An object's parent channel
/// (`1 << 32 | doid`) and database channel (`2 << 32 | doid`) share the doid's home, so the
/// role that owns an object subscribes all three on its own core, at once.
#[inline]
pub fn home_core(channel: u64, cores: usize) -> usize {
    let key = match channel >> 32 {
        1 | 2 => channel & 0xffff_ffff,
        _ => channel,
    };
    // Fibonacci hashing spreads sequential channels (doids, zones) evenly.
    let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((h >> 32) as usize * cores) >> 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_fields() {
        let p = Pid::new(3, 0x12_3456, 77);
        assert_eq!((p.core(), p.generation(), p.slot()), (3, 0x12_3456, 77));
    }

    #[test]
    fn homes_spread_and_stay_in_range() {
        let mut counts = [0usize; 4];
        for c in 0..10_000u64 {
            counts[home_core(c, 4)] += 1;
        }
        assert!(counts.iter().all(|&n| n > 2000), "{counts:?}");
        assert_eq!(home_core(u64::MAX, 1), 0);
        for doid in [1000u64, 4000, 123_456_789] {
            assert_eq!(home_core(doid, 4), home_core((1 << 32) | doid, 4));
            assert_eq!(home_core(doid, 4), home_core((2 << 32) | doid, 4));
        }
    }
}

//! The MessageDirector's routing state, free of I/O: participant ids, the single-channel
//! subscriber shard a core owns, and the range map with the upstream messages its changes imply.

pub mod ranges;
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

/// The core a channel's single-channel subscriber table lives on.
#[inline]
pub fn home_core(channel: u64, cores: usize) -> usize {
    // Fibonacci hashing spreads sequential channels (doids, zones) evenly.
    let h = channel.wrapping_mul(0x9E37_79B9_7F4A_7C15);
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
    }
}

//! The hash of the channel table and of the StateServer's child sets: sixteen consecutive keys
//! (doids and channels are handed out in sequence) go to sixteen consecutive buckets, so a run
//! of inserts into a table far larger than the CPU's caches misses once per block, not per key.
//!
//! A block's place is the splitmix64 finalizer of its number xor a per-process seed (keys that
//! differ only in their high bits, `parent << 32 | zone`, land apart; a client cannot compute
//! collisions offline). The top seven bits, the tag hashbrown compares before a key, come from
//! the whole key, so keys of one block rarely share one. A run of full buckets is at most a
//! block long, so a probe for an absent key in a full block reaches a free bucket in the next
//! group.

use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;

/// Keys per block (buckets in a row).
const BLOCK_BITS: u32 = 4;
const LOW: u64 = (1 << BLOCK_BITS) - 1;
/// hashbrown's tag: the top seven bits.
const TAG: u64 = 0xFE00_0000_0000_0000;

/// `HashMap<K, V>` with the block hash (for `u64`/`u32` keys).
pub type BlockMap<K, V> = std::collections::HashMap<K, V, BlockState>;
/// `HashSet<K>` with the block hash.
pub type BlockSet<K> = std::collections::HashSet<K, BlockState>;

static SEED: OnceLock<u64> = OnceLock::new();

fn process_seed() -> u64 {
    *SEED.get_or_init(|| std::collections::hash_map::RandomState::new().hash_one(0x6f74_7064u64))
}

/// Fixes the seed of every block hash of this process, for runs that must repeat exactly (the
/// one-thread cluster simulation: the order of a zone's children is hash order). True when the
/// seed is `seed`; false when a table was made first, under a random seed.
pub fn fix_seed(seed: u64) -> bool {
    *SEED.get_or_init(|| seed) == seed
}

#[inline]
fn splitmix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The hash of one key under `seed`.
#[inline]
pub fn block_hash(key: u64, seed: u64) -> u64 {
    let place = splitmix((key >> BLOCK_BITS) ^ seed) << BLOCK_BITS;
    let tag = (key ^ seed).wrapping_mul(0xD6E8_FEB8_6659_FD93);
    (tag & TAG) | (place & !TAG & !LOW) | (key & LOW)
}

/// The `BuildHasher`: carries the process's seed.
#[derive(Clone, Copy)]
pub struct BlockState {
    seed: u64,
}

impl Default for BlockState {
    fn default() -> Self {
        BlockState {
            seed: process_seed(),
        }
    }
}

impl BuildHasher for BlockState {
    type Hasher = BlockHasher;
    #[inline]
    fn build_hasher(&self) -> BlockHasher {
        BlockHasher {
            seed: self.seed,
            hash: 0,
        }
    }
}

pub struct BlockHasher {
    seed: u64,
    hash: u64,
}

impl Hasher for BlockHasher {
    /// Other keys (not used by the tables that take this hash) are folded into one word.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            let prior = splitmix(self.hash ^ self.seed);
            self.write_u64(prior ^ u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u64(&mut self, key: u64) {
        self.hash = block_hash(key, self.seed);
    }
    #[inline]
    fn write_u32(&mut self, key: u32) {
        self.write_u64(u64::from(key));
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_lies_in_consecutive_buckets_with_varied_tags() {
        let seed = 0x1234_5678;
        let base = block_hash(4000, seed) & !LOW;
        let mut tags = std::collections::HashSet::new();
        for k in 4000..4016u64 {
            let h = block_hash(k, seed);
            assert_eq!(h & !TAG & !LOW, base & !TAG, "one block, one place");
            assert_eq!(h & LOW, k & LOW);
            tags.insert(h >> 57);
        }
        assert!(
            tags.len() >= 10,
            "tags of one block mostly differ: {}",
            tags.len()
        );
    }

    #[test]
    fn keys_that_differ_in_their_high_bits_land_apart() {
        // Zone channels of many parents, one zone: in a table of 2^20 buckets (2^16 blocks)
        // 4096 random places would be about 3,970 distinct.
        let seed = 99;
        let mut buckets = std::collections::HashSet::new();
        for parent in 0..4096u64 {
            buckets.insert(block_hash(parent << 32 | 2000, seed) & 0xF_FFFF);
        }
        assert!(
            buckets.len() > 3900,
            "{} distinct buckets of 4096",
            buckets.len()
        );
    }

    #[test]
    fn maps_behave_as_maps() {
        let mut m: BlockMap<u64, u32> = BlockMap::default();
        for k in 0..100_000u64 {
            m.insert(k * 3, k as u32);
        }
        for k in 0..100_000u64 {
            assert_eq!(m.get(&(k * 3)), Some(&(k as u32)));
            assert_eq!(m.get(&(k * 3 + 1)), None);
        }
        let mut s: BlockSet<u32> = BlockSet::default();
        assert!(s.insert(7) && !s.insert(7) && s.contains(&7));
    }
}

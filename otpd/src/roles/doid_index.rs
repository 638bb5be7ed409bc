//! A doid → slot map for the object tables: open addressing with linear probing over 8-byte
//! entries, eight to a cache line, so a lookup in a table far larger than the CPU's caches
//! usually costs one memory access (a general hash map reads a control byte and a bucket).

use otp_wire::Doid;

/// The slot value marking an empty entry (tables hold fewer than `u32::MAX` objects).
const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct DoidIndex {
    /// `(doid, slot)`; `slot == EMPTY` marks a free entry. A power of two long, at most 3/4 full.
    entries: Vec<(Doid, u32)>,
    len: usize,
    /// log2 of `entries.len()`.
    bits: u32,
}

impl Default for DoidIndex {
    fn default() -> Self {
        DoidIndex {
            entries: vec![(0, EMPTY); 16],
            len: 0,
            bits: 4,
        }
    }
}

impl DoidIndex {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sixteen consecutive doids (a block) have sixteen consecutive homes, so a run of creates
    /// or lookups of sequential doids reads one or two lines of the index for a whole block.
    /// The block's place is the top bits of the splitmix64 finalizer of its number. Not the
    /// MessageDirector's Fibonacci hash: a core's doids are those whose Fibonacci hash has
    /// certain top bits (`md::home_core`), so with that hash they would all start in one part
    /// of this table.
    #[inline]
    fn home(&self, doid: Doid) -> usize {
        let mut z = u64::from(doid >> 4);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // `bits` is at least 4 (the table starts at 16 entries).
        let block = if self.bits > 4 { (z >> (68 - self.bits)) as usize } else { 0 };
        (block << 4) | (doid & 15) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    /// The entry holding `doid`, or the free entry where it would go.
    #[inline]
    fn find(&self, doid: Doid) -> (usize, bool) {
        let mask = self.mask();
        let mut i = self.home(doid);
        loop {
            let (d, slot) = self.entries[i];
            if slot == EMPTY {
                return (i, false);
            }
            if d == doid {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub fn get(&self, doid: Doid) -> Option<u32> {
        let (i, found) = self.find(doid);
        found.then(|| self.entries[i].1)
    }

    /// Maps `doid` to `slot` (`slot < u32::MAX`), replacing any slot it had.
    pub fn insert(&mut self, doid: Doid, slot: u32) {
        debug_assert!(slot != EMPTY);
        let (i, found) = self.find(doid);
        if found {
            self.entries[i].1 = slot;
            return;
        }
        if (self.len + 1) * 4 > self.entries.len() * 3 {
            self.grow();
            let (i, _) = self.find(doid);
            self.entries[i] = (doid, slot);
        } else {
            self.entries[i] = (doid, slot);
        }
        self.len += 1;
    }

    /// Removes `doid`, returning its slot. The entries after it in its run move back so that
    /// every entry stays reachable from its home without crossing a free one.
    pub fn remove(&mut self, doid: Doid) -> Option<u32> {
        let (mut hole, found) = self.find(doid);
        if !found {
            return None;
        }
        let slot = self.entries[hole].1;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let (d, s) = self.entries[j];
            if s == EMPTY {
                break;
            }
            // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            let home = self.home(d);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.entries[hole] = (d, s);
                hole = j;
            }
        }
        self.entries[hole] = (0, EMPTY);
        self.len -= 1;
        Some(slot)
    }

    fn grow(&mut self) {
        let doubled = vec![(0, EMPTY); self.entries.len() * 2];
        let old = std::mem::replace(&mut self.entries, doubled);
        self.bits += 1;
        for (d, s) in old {
            if s != EMPTY {
                let (i, _) = self.find(d);
                self.entries[i] = (d, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// One core's share of sequential doids (as a StateServer on core 0 of 2 holds them) spreads
    /// over the whole table: lookups stay short.
    #[test]
    fn one_cores_doids_do_not_cluster() {
        let mut idx = DoidIndex::default();
        let mine: Vec<Doid> = (10_000_000..10_400_000u32)
            .filter(|&d| crate::md::home_core(u64::from(d), 2) == 0)
            .collect();
        for (i, &d) in mine.iter().enumerate() {
            idx.insert(d, i as u32);
        }
        let mask = idx.mask();
        let total: usize = mine
            .iter()
            .map(|&d| (idx.find(d).0.wrapping_sub(idx.home(d)) & mask) + 1)
            .sum();
        let mean = total as f64 / mine.len() as f64;
        assert!(mean < 3.0, "mean probe length {mean}");
        assert_eq!(idx.get(mine[12_345]), Some(12_345));
    }

    /// A block of sixteen sequential doids has sixteen consecutive homes, and blocks spread.
    #[test]
    fn a_block_of_doids_has_consecutive_homes() {
        let mut idx = DoidIndex::default();
        for d in 0..100_000u32 {
            idx.insert(d, d);
        }
        let base = idx.home(4_000_000);
        for d in 4_000_000..4_000_016u32 {
            assert_eq!(idx.home(d), base + (d - 4_000_000) as usize);
        }
        let places: std::collections::HashSet<usize> =
            (0..1000u32).map(|b| idx.home(b * 16) >> 4).collect();
        assert!(places.len() > 900, "{} places for 1000 blocks", places.len());
    }

    /// Random inserts, replacements and removes against a HashMap, with doids drawn from a
    /// small range (long runs, many collisions) and from sequential and strided ones.
    #[test]
    fn agrees_with_a_hash_map_through_inserts_and_removes() {
        let mut idx = DoidIndex::default();
        let mut model: HashMap<Doid, u32> = HashMap::new();
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rand = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for step in 0..200_000u32 {
            let r = rand();
            let doid = match r % 3 {
                0 => (r >> 8) as u32 % 3000,
                1 => 1_000_000 + (r >> 8) as u32 % 5000,
                _ => ((r >> 8) as u32 % 4000) * 1024,
            };
            if (r >> 40) % 3 == 0 {
                assert_eq!(idx.remove(doid), model.remove(&doid), "step {step}");
            } else {
                idx.insert(doid, step);
                model.insert(doid, step);
            }
            assert_eq!(idx.len(), model.len());
        }
        for (&d, &s) in &model {
            assert_eq!(idx.get(d), Some(s));
        }
        for d in 0..3000 {
            assert_eq!(idx.get(d), model.get(&d).copied());
        }
        for d in model.keys().copied().collect::<Vec<_>>() {
            assert_eq!(idx.remove(d), model.remove(&d));
        }
        assert!(idx.is_empty() && idx.get(5).is_none());
    }
}

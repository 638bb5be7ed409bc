//! A doid → value map for the object tables (doid → slot) and the ClientAgent's sessions (the
//! objects a client sees): open addressing with linear probing over `(doid, value)` entries,
//! several to a cache line, so a lookup in memory far larger than the CPU's caches usually
//! costs one memory access (a general hash map reads a control byte, then a bucket).

use otp_wire::Doid;

/// The key marking a free entry. The doid with this value is kept beside the table.
const FREE: Doid = u32::MAX;
/// The table grows when it would be fuller than 13/16.
const LOAD_NUM: usize = 13;
const LOAD_DEN: usize = 16;

/// The object tables' index: doid → slot.
pub type DoidIndex = DoidMap<u32>;

#[derive(Debug, Clone)]
pub struct DoidMap<V> {
    /// `(doid, value)`; a free entry has the doid `FREE`. Empty until the first insert, then a
    /// power of two long (at least 16), at most 13/16 full.
    entries: Vec<(Doid, V)>,
    /// Entries used in `entries`.
    len: usize,
    /// log2 of `entries.len()` once allocated.
    bits: u32,
    /// The value of the doid `FREE` itself, which the table cannot hold.
    at_free: Option<V>,
}

impl<V> Default for DoidMap<V> {
    fn default() -> Self {
        DoidMap {
            entries: Vec::new(),
            len: 0,
            bits: 0,
            at_free: None,
        }
    }
}

impl<V: Copy + Default> DoidMap<V> {
    pub fn len(&self) -> usize {
        self.len + usize::from(self.at_free.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The splitmix64 finalizer, then the top bits. Not the MessageDirector's Fibonacci hash:
    /// a core's doids are those whose Fibonacci hash has certain top bits (`md::home_core`),
    /// so with that hash they would all start in one part of this table. (Nor homes that keep
    /// sequential doids together, as the channel table's hash does: with linear probing their
    /// runs merge, and at 3/4 full one core's share of sequential doids probed 13 entries on
    /// average.)
    #[inline]
    fn home(&self, doid: Doid) -> usize {
        let mut z = u64::from(doid);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> (64 - self.bits)) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.entries.len() - 1
    }

    /// The entry holding `doid`, or the free entry where it would go (the table is allocated
    /// and `doid` is not `FREE`).
    #[inline]
    fn find(&self, doid: Doid) -> (usize, bool) {
        let mask = self.mask();
        let mut i = self.home(doid);
        loop {
            let d = self.entries[i].0;
            if d == FREE {
                return (i, false);
            }
            if d == doid {
                return (i, true);
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    pub fn get(&self, doid: Doid) -> Option<V> {
        if doid == FREE {
            return self.at_free;
        }
        if self.entries.is_empty() {
            return None;
        }
        let (i, found) = self.find(doid);
        found.then(|| self.entries[i].1)
    }

    #[inline]
    pub fn contains_key(&self, doid: Doid) -> bool {
        self.get(doid).is_some()
    }

    pub fn get_mut(&mut self, doid: Doid) -> Option<&mut V> {
        if doid == FREE {
            return self.at_free.as_mut();
        }
        if self.entries.is_empty() {
            return None;
        }
        let (i, found) = self.find(doid);
        found.then(|| &mut self.entries[i].1)
    }

    /// Maps `doid` to `value`; returns the value it had.
    pub fn insert(&mut self, doid: Doid, value: V) -> Option<V> {
        if doid == FREE {
            return self.at_free.replace(value);
        }
        if self.entries.is_empty() {
            self.entries = vec![(FREE, V::default()); 16];
            self.bits = 4;
        }
        let (mut i, found) = self.find(doid);
        if found {
            return Some(std::mem::replace(&mut self.entries[i].1, value));
        }
        if (self.len + 1) * LOAD_DEN > self.entries.len() * LOAD_NUM {
            self.grow();
            i = self.find(doid).0;
        }
        self.entries[i] = (doid, value);
        self.len += 1;
        None
    }

    /// Removes `doid`, returning its value. The entries after it in its run move back so that
    /// every entry stays reachable from its home without crossing a free one.
    pub fn remove(&mut self, doid: Doid) -> Option<V> {
        if doid == FREE {
            return self.at_free.take();
        }
        if self.entries.is_empty() {
            return None;
        }
        let (mut hole, found) = self.find(doid);
        if !found {
            return None;
        }
        let value = self.entries[hole].1;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let (d, v) = self.entries[j];
            if d == FREE {
                break;
            }
            // The entry at j may fill the hole unless its home lies cyclically in (hole, j].
            let home = self.home(d);
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.entries[hole] = (d, v);
                hole = j;
            }
        }
        self.entries[hole] = (FREE, V::default());
        self.len -= 1;
        Some(value)
    }

    /// Every `(doid, value)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (Doid, V)> + '_ {
        self.entries
            .iter()
            .filter(|e| e.0 != FREE)
            .copied()
            .chain(self.at_free.map(|v| (FREE, v)))
    }

    fn grow(&mut self) {
        let doubled = vec![(FREE, V::default()); self.entries.len() * 2];
        let old = std::mem::replace(&mut self.entries, doubled);
        self.bits += 1;
        for (d, v) in old {
            if d != FREE {
                let (i, _) = self.find(d);
                self.entries[i] = (d, v);
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
                0 if r % 7 == 0 => [0, u32::MAX, u32::MAX - 1][(r >> 8) as usize % 3],
                0 => (r >> 8) as u32 % 3000,
                1 => 1_000_000 + (r >> 8) as u32 % 5000,
                _ => ((r >> 8) as u32 % 4000) * 1024,
            };
            if (r >> 40) % 3 == 0 {
                assert_eq!(idx.remove(doid), model.remove(&doid), "step {step}");
            } else {
                assert_eq!(
                    idx.insert(doid, step),
                    model.insert(doid, step),
                    "step {step}"
                );
            }
            assert_eq!(idx.len(), model.len());
        }
        for (&d, &s) in &model {
            assert_eq!(idx.get(d), Some(s));
        }
        let mut listed: Vec<(Doid, u32)> = idx.iter().collect();
        let mut expected: Vec<(Doid, u32)> = model.iter().map(|(&d, &s)| (d, s)).collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected);
        for d in 0..3000 {
            assert_eq!(idx.get(d), model.get(&d).copied());
        }
        for d in model.keys().copied().collect::<Vec<_>>() {
            assert_eq!(idx.remove(d), model.remove(&d));
        }
        assert!(idx.is_empty() && idx.get(5).is_none());
    }
}

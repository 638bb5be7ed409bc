//! The range map: disjoint channel segments, each with the participants whose range subscriptions
//! cover it. Set semantics per participant, as Astron's. Removing a range reports the runs that
//! lost their last subscriber, which is what a downstream MD asks its upstream to drop.
//!
//! A segment that becomes empty is kept (merged with empty neighbours): Astron's map does the
//! same, and the runs it reports upstream span such empty segments inside the removed range.

use super::Pid;
use smallvec::SmallVec;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
struct Segment {
    hi: u64,
    members: SmallVec<[Pid; 2]>,
}

#[derive(Debug, Default, Clone)]
pub struct RangeMap {
    segs: BTreeMap<u64, Segment>,
    /// Segments with at least one member; lets lookups skip the map when nothing is subscribed.
    live: usize,
}

impl RangeMap {
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Makes `x` the first channel of a segment if a segment spans it.
    fn split_at(&mut self, x: u64) {
        let Some((&lo, seg)) = self.segs.range(..x).next_back() else {
            return;
        };
        if seg.hi < x {
            return;
        }
        let upper = Segment {
            hi: seg.hi,
            members: seg.members.clone(),
        };
        if !upper.members.is_empty() {
            self.live += 1;
        }
        self.segs.get_mut(&lo).expect("segment just seen").hi = x - 1;
        self.segs.insert(x, upper);
    }

    fn split_around(&mut self, lo: u64, hi: u64) {
        self.split_at(lo);
        if hi < u64::MAX {
            self.split_at(hi + 1);
        }
    }

    /// Adds `pid` to every channel in `lo..=hi`. Returns true if some part of it had no
    /// subscriber before (so an upstream MD must be asked for it).
    pub fn add(&mut self, pid: Pid, lo: u64, hi: u64) -> bool {
        assert!(lo <= hi, "range bounds out of order");
        self.split_around(lo, hi);
        let mut newly = false;
        let mut gaps: Vec<(u64, u64)> = Vec::new();
        let mut cursor = Some(lo);
        for (&s_lo, seg) in self.segs.range_mut(lo..=hi) {
            let c = cursor.expect("cursor within range");
            if s_lo > c {
                gaps.push((c, s_lo - 1));
            }
            if seg.members.is_empty() {
                newly = true;
                self.live += 1;
            }
            if !seg.members.contains(&pid) {
                seg.members.push(pid);
            }
            cursor = seg.hi.checked_add(1);
        }
        if let Some(c) = cursor {
            if c <= hi {
                gaps.push((c, hi));
            }
        }
        for (g_lo, g_hi) in gaps {
            newly = true;
            self.live += 1;
            self.segs.insert(
                g_lo,
                Segment {
                    hi: g_hi,
                    members: SmallVec::from_slice(&[pid]),
                },
            );
        }
        newly
    }

    /// Removes `pid` from every channel in `lo..=hi`; returns the runs inside `lo..=hi` that have
    /// no subscriber left and of which some part lost its last one now.
    pub fn remove(&mut self, pid: Pid, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        assert!(lo <= hi, "range bounds out of order");
        self.split_around(lo, hi);
        let mut runs = Vec::new();
        let mut run: Option<(u64, u64, bool)> = None;
        for (&s_lo, seg) in self.segs.range_mut(lo..=hi) {
            let before = seg.members.len();
            seg.members.retain(|p| *p != pid);
            let now_empty = seg.members.is_empty();
            let newly_dead = before > 0 && now_empty;
            if newly_dead {
                self.live -= 1;
            }
            if now_empty {
                match &mut run {
                    Some((_, end, newly)) if end.checked_add(1) == Some(s_lo) => {
                        *end = seg.hi;
                        *newly |= newly_dead;
                    }
                    _ => {
                        if let Some((a, b, true)) = run.take() {
                            runs.push((a, b));
                        }
                        run = Some((s_lo, seg.hi, newly_dead));
                    }
                }
            } else if let Some((a, b, true)) = run.take() {
                runs.push((a, b));
            } else {
                run = None;
            }
        }
        if let Some((a, b, true)) = run {
            runs.push((a, b));
        }
        self.merge_empty(lo, hi);
        runs
    }

    /// Joins adjacent empty segments around `lo..=hi` so the map does not grow without bound.
    fn merge_empty(&mut self, lo: u64, hi: u64) {
        let start = self
            .segs
            .range(..lo)
            .next_back()
            .map(|(&k, _)| k)
            .unwrap_or(lo);
        let keys: Vec<u64> = self
            .segs
            .range(start..=hi.saturating_add(1))
            .map(|(&k, _)| k)
            .collect();
        let mut prev: Option<u64> = None;
        for k in keys {
            let (k_hi, empty) = {
                let s = &self.segs[&k];
                (s.hi, s.members.is_empty())
            };
            match prev {
                Some(p)
                    if empty
                        && self.segs[&p].members.is_empty()
                        && self.segs[&p].hi.checked_add(1) == Some(k) =>
                {
                    self.segs.remove(&k);
                    self.segs.get_mut(&p).expect("previous segment").hi = k_hi;
                }
                _ => prev = Some(k),
            }
        }
    }

    /// The participants whose ranges cover `channel`.
    #[inline]
    pub fn lookup(&self, channel: u64) -> &[Pid] {
        if self.live == 0 {
            return &[];
        }
        match self.segs.range(..=channel).next_back() {
            Some((_, seg)) if channel <= seg.hi => &seg.members,
            _ => &[],
        }
    }

    /// The maximal runs covered by `pid`'s ranges, ascending.
    pub fn coverage_of(&self, pid: Pid) -> Vec<(u64, u64)> {
        self.runs_where(|seg| seg.members.contains(&pid))
    }

    /// The maximal runs with at least one subscriber, ascending (replayed to a new upstream).
    pub fn covered_runs(&self) -> Vec<(u64, u64)> {
        self.runs_where(|seg| !seg.members.is_empty())
    }

    fn runs_where(&self, pred: impl Fn(&Segment) -> bool) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for (&lo, seg) in &self.segs {
            if !pred(seg) {
                continue;
            }
            match out.last_mut() {
                Some((_, end)) if end.checked_add(1) == Some(lo) => *end = seg.hi,
                _ => out.push((lo, seg.hi)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: usize) -> Pid {
        Pid::new(0, 0, n)
    }

    fn receives(m: &RangeMap, who: Pid, c: u64) -> bool {
        m.lookup(c).contains(&who)
    }

    /// The sequence of Astron's test_messagedirector.py range test, with the upstream messages
    /// it expects.
    #[test]
    fn astron_range_sequence() {
        let (c1, c2) = (p(1), p(2));
        let mut m = RangeMap::default();
        assert!(m.add(c1, 1000, 1999));
        assert!(receives(&m, c1, 1000) && receives(&m, c1, 1999) && !receives(&m, c1, 2000));
        assert_eq!(m.remove(c1, 1300, 1700), vec![(1300, 1700)]);
        assert!(!receives(&m, c1, 1500) && receives(&m, c1, 1299) && receives(&m, c1, 1701));
        assert!(m.add(c1, 1900, 2100));
        assert_eq!(m.remove(c1, 1000, 1999), vec![(1000, 1999)]);
        assert!(!receives(&m, c1, 1950) && receives(&m, c1, 2000));
        assert_eq!(m.coverage_of(c1), vec![(2000, 2100)]);
        assert_eq!(m.remove(c1, 2000, 2100), vec![(2000, 2100)]);

        assert!(m.add(c1, 3000, 5000));
        assert_eq!(m.remove(c1, 2950, 3043), vec![(3000, 3043)]);
        assert_eq!(m.remove(c1, 4763, 6000), vec![(4763, 5000)]);
        assert_eq!(m.remove(c1, 3951, 4049), vec![(3951, 4049)]);
        assert_eq!(m.remove(c1, 4030, 4070), vec![(4030, 4070)]);
        assert_eq!(m.remove(c1, 3891, 4040), vec![(3891, 4040)]);
        assert_eq!(m.remove(c1, 3700, 4200), vec![(3700, 4200)]);
        assert!(receives(&m, c1, 3699) && !receives(&m, c1, 3700) && receives(&m, c1, 4201));

        assert!(m.add(c2, 3500, 4500));
        assert_eq!(m.remove(c1, 3650, 3800), vec![]);
        assert_eq!(m.remove(c1, 3475, 3525), vec![(3475, 3499)]);
        assert_eq!(m.remove(c2, 3620, 4300), vec![(3650, 4200)]);
        // Disconnect of c2: each of its own runs removed in turn.
        let mut dead = Vec::new();
        for (lo, hi) in m.coverage_of(c2) {
            dead.extend(m.remove(c2, lo, hi));
        }
        assert_eq!(dead, vec![(3500, 3525)]);

        assert!(m.add(c2, 1000, 5000));
        assert_eq!(
            m.remove(c2, 1000, 5000),
            vec![(1000, 3043), (3475, 3525), (3650, 4200), (4763, 5000)]
        );
        assert_eq!(
            m.covered_runs(),
            vec![(3044, 3474), (3526, 3649), (4201, 4762)]
        );
    }

    #[test]
    fn whole_space_and_overlap() {
        let mut m = RangeMap::default();
        assert!(m.add(p(1), 0, u64::MAX));
        assert!(!m.add(p(2), 10, 20));
        assert!(receives(&m, p(1), u64::MAX) && receives(&m, p(2), 15));
        assert_eq!(m.remove(p(1), 0, u64::MAX), vec![(0, 9), (21, u64::MAX)]);
        assert_eq!(m.remove(p(2), 0, u64::MAX), vec![(0, u64::MAX)]);
        assert!(m.is_empty());
    }
}

//! Password-login throttling of one listener: failed attempts counted per client address
//! (IPv6 by /64) and per account name, a block with an exponentially growing length once a
//! key reaches its limit, and a bounded memory of keys (the oldest forgotten first). An
//! account's block does not apply to the few addresses that last logged in to it, so that
//! knowing a name is not enough to lock its owner out. Sans-IO: every call is handed `now`.

use crate::config::PasswordLimits;
use rustc_hash::FxHashMap;
use std::collections::VecDeque;
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// What ended an attempt `LoginLimiter::begin` let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The password was right: the account's failures are forgiven, and the address is one
    /// its block does not apply to.
    Success,
    /// A wrong password, or no such account: a strike against the address and the account.
    Failure,
    /// The attempt was never decided (the hashing queue was full, the client left): nothing
    /// is counted.
    Undecided,
}

/// Why `begin` refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Throttled {
    Address,
    Account,
}

#[derive(Debug, Clone)]
struct Entry {
    /// Failures since `window_start`, attempts still being checked included (each is
    /// counted when it starts, so a burst of simultaneous attempts cannot pass the limit,
    /// and given back if it ends well or undecided; one the client abandons stays counted).
    failures: u32,
    window_start: Instant,
    blocked_until: Option<Instant>,
    /// Blocks in a row: the next one lasts `backoff × 2^blocks`.
    blocks: u32,
    last_failure: Instant,
    /// For an account: the addresses (by `address_key`) that logged in to it last, the most
    /// recent first, at most `known_addresses_per_account`. Its block does not apply to them.
    known: Vec<IpAddr>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            failures: 0,
            window_start: now,
            blocked_until: None,
            blocks: 0,
            last_failure: now,
            known: Vec::new(),
        }
    }

    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }
}

/// Keys with their entries, at most `cap`; a new key past it takes the place of the oldest
/// one that is neither blocked nor remembers addresses (or, if the first few all do, the
/// oldest).
struct Table<K> {
    map: FxHashMap<K, Entry>,
    order: VecDeque<K>,
    cap: usize,
}

/// Entries looked at for one eviction before the oldest goes whatever its state.
const EVICTION_SCAN: usize = 8;

impl<K: Hash + Eq + Clone> Table<K> {
    fn new(cap: usize) -> Table<K> {
        Table {
            map: FxHashMap::default(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    fn get_or_insert(&mut self, key: &K, now: Instant) -> &mut Entry {
        if !self.map.contains_key(key) {
            if self.map.len() >= self.cap {
                self.evict(now);
            }
            self.map.insert(key.clone(), Entry::new(now));
            self.order.push_back(key.clone());
        }
        self.map.get_mut(key).expect("inserted above")
    }

    fn evict(&mut self, now: Instant) {
        for _ in 0..EVICTION_SCAN.min(self.order.len()) {
            let Some(k) = self.order.pop_front() else {
                return;
            };
            let keep = self
                .map
                .get(&k)
                .is_some_and(|e| e.blocked(now) || !e.known.is_empty());
            if !keep {
                self.map.remove(&k);
                return;
            }
            self.order.push_back(k);
        }
        if let Some(k) = self.order.pop_front() {
            self.map.remove(&k);
        }
    }
}

/// The address an attempt is counted against: IPv4 as is, IPv6 by its /64 (one subscriber's
/// prefix), an IPv4-mapped IPv6 address as its IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// The throttle one listener's sessions share.
pub struct LoginLimiter {
    cfg: PasswordLimits,
    addresses: Table<IpAddr>,
    accounts: Table<String>,
}

impl LoginLimiter {
    pub fn new(cfg: PasswordLimits) -> LoginLimiter {
        LoginLimiter {
            addresses: Table::new(cfg.max_tracked),
            accounts: Table::new(cfg.max_tracked),
            cfg,
        }
    }

    /// Keys remembered (addresses, accounts).
    pub fn tracked(&self) -> (usize, usize) {
        (self.addresses.map.len(), self.accounts.map.len())
    }

    /// May a password be checked for `account` from `ip` now? If so the attempt counts as a
    /// failure of both until `end` says otherwise. An account's block does not stop an
    /// address that logged in to it lately (its attempts still count, and the address's own
    /// limit still holds).
    pub fn begin(&mut self, ip: IpAddr, account: &str, now: Instant) -> Result<(), Throttled> {
        let ip = address_key(ip);
        let window = Duration::from_millis(self.cfg.failure_window_ms);
        let (max_addr, max_acct) = (
            self.cfg.max_failures_per_address,
            self.cfg.max_failures_per_account,
        );
        let over = |e: &mut Entry, max: u32| {
            if e.blocked(now) {
                return true;
            }
            if now.saturating_duration_since(e.window_start) >= window {
                e.failures = 0;
                e.window_start = now;
            }
            e.failures >= max
        };
        if max_addr != 0 && over(self.addresses.get_or_insert(&ip, now), max_addr) {
            return Err(Throttled::Address);
        }
        if max_acct != 0 {
            let key = account.to_string();
            let e = self.accounts.get_or_insert(&key, now);
            if over(e, max_acct) && !e.known.contains(&ip) {
                return Err(Throttled::Account);
            }
            e.failures += 1;
        }
        if max_addr != 0 {
            self.addresses.get_or_insert(&ip, now).failures += 1;
        }
        Ok(())
    }

    /// Ends an attempt `begin` let through.
    pub fn end(&mut self, ip: IpAddr, account: &str, outcome: Outcome, now: Instant) {
        let ip = address_key(ip);
        let cfg = self.cfg;
        if cfg.max_failures_per_address != 0 {
            if let Some(e) = self.addresses.map.get_mut(&ip) {
                finish(e, outcome, false, cfg.max_failures_per_address, &cfg, now);
            }
        }
        if cfg.max_failures_per_account != 0 {
            if let Some(e) = self.accounts.map.get_mut(account) {
                finish(e, outcome, true, cfg.max_failures_per_account, &cfg, now);
                if outcome == Outcome::Success && cfg.known_addresses_per_account != 0 {
                    e.known.retain(|a| *a != ip);
                    e.known.insert(0, ip);
                    e.known.truncate(cfg.known_addresses_per_account);
                }
            }
        }
    }
}

fn finish(
    e: &mut Entry,
    outcome: Outcome,
    forgive: bool,
    max: u32,
    cfg: &PasswordLimits,
    now: Instant,
) {
    match outcome {
        Outcome::Undecided => e.failures = e.failures.saturating_sub(1),
        Outcome::Success if forgive => {
            e.failures = 0;
            e.blocks = 0;
        }
        Outcome::Success => e.failures = e.failures.saturating_sub(1),
        Outcome::Failure => {
            // Blocks in a row are forgotten after a quiet spell as long as the longest block.
            let quiet = Duration::from_millis(cfg.max_backoff_ms.max(cfg.failure_window_ms));
            if now.saturating_duration_since(e.last_failure) >= quiet {
                e.blocks = 0;
            }
            e.last_failure = now;
            if e.failures >= max && !e.blocked(now) {
                let ms = cfg
                    .backoff_ms
                    .saturating_mul(1u64 << e.blocks.min(30))
                    .min(cfg.max_backoff_ms.max(cfg.backoff_ms));
                e.blocked_until = Some(now + Duration::from_millis(ms));
                e.blocks = e.blocks.saturating_add(1);
                e.failures = 0;
                e.window_start = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PasswordLimits {
        PasswordLimits {
            max_failures_per_address: 6,
            max_failures_per_account: 3,
            failure_window_ms: 60_000,
            backoff_ms: 1_000,
            max_backoff_ms: 5_000,
            max_tracked: 4,
            known_addresses_per_account: 2,
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));

    #[test]
    fn an_account_is_blocked_after_its_failures_for_a_growing_time() {
        let mut l = LoginLimiter::new(cfg());
        let t0 = Instant::now();
        for _ in 0..3 {
            l.begin(A, "victim", t0).unwrap();
            l.end(A, "victim", Outcome::Failure, t0);
        }
        assert_eq!(l.begin(A, "victim", t0), Err(Throttled::Account));
        let b = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(
            l.begin(b, "victim", t0),
            Err(Throttled::Account),
            "any address"
        );
        let t1 = t0 + Duration::from_millis(1_001);
        for _ in 0..3 {
            l.begin(b, "victim", t1).unwrap();
            l.end(b, "victim", Outcome::Failure, t1);
        }
        // The second block lasts twice as long; the third would be capped at 5 s.
        assert!(l
            .begin(b, "victim", t1 + Duration::from_millis(1_500))
            .is_err());
        let t2 = t1 + Duration::from_millis(2_001);
        l.begin(b, "victim", t2).unwrap();
        l.end(b, "victim", Outcome::Success, t2);
        for _ in 0..2 {
            l.begin(b, "victim", t2).unwrap();
            l.end(b, "victim", Outcome::Failure, t2);
        }
        l.begin(b, "victim", t2).unwrap();
    }

    #[test]
    fn simultaneous_attempts_count_and_undecided_ones_do_not() {
        let mut l = LoginLimiter::new(cfg());
        let t = Instant::now();
        for i in 0..6 {
            l.begin(A, &format!("n{i}"), t).unwrap();
        }
        assert_eq!(l.begin(A, "n9", t), Err(Throttled::Address));
        for i in 0..6 {
            l.end(A, &format!("n{i}"), Outcome::Undecided, t);
        }
        for i in 0..5 {
            l.begin(A, &format!("n{i}"), t).unwrap();
            l.end(A, &format!("n{i}"), Outcome::Failure, t);
        }
        l.begin(A, "x", t).unwrap();
        l.end(A, "x", Outcome::Failure, t);
        assert_eq!(l.begin(A, "y", t), Err(Throttled::Address));
        // IPv6 addresses count by /64.
        let v6a: IpAddr = "2001:db8::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8::2".parse().unwrap();
        assert_eq!(address_key(v6a), address_key(v6b));
    }

    #[test]
    fn memory_is_bounded_and_blocked_keys_are_kept_longest() {
        let mut l = LoginLimiter::new(cfg());
        let t = Instant::now();
        for _ in 0..3 {
            l.begin(A, "victim", t).unwrap();
            l.end(A, "victim", Outcome::Failure, t);
        }
        for i in 0..100u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 0, i));
            let _ = l.begin(ip, &format!("name{i}"), t);
            l.end(ip, &format!("name{i}"), Outcome::Failure, t);
        }
        let (a, b) = l.tracked();
        assert!(a <= 4 && b <= 4, "{a} {b}");
        assert_eq!(l.begin(A, "victim", t), Err(Throttled::Account));
    }

    #[test]
    fn an_address_that_logged_in_before_is_not_locked_out_by_others_failures() {
        let mut l = LoginLimiter::new(cfg());
        let t = Instant::now();
        let home = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 7));
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 8));
        l.begin(home, "victim", t).unwrap();
        l.end(home, "victim", Outcome::Success, t);
        // Guessers from elsewhere block the account...
        for i in 0..3u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i));
            l.begin(ip, "victim", t).unwrap();
            l.end(ip, "victim", Outcome::Failure, t);
        }
        assert_eq!(l.begin(A, "victim", t), Err(Throttled::Account));
        // ...but not for the address that logged in before (an IPv6 owner: by its /64).
        l.begin(home, "victim", t).unwrap();
        l.end(home, "victim", Outcome::Success, t);
        assert_eq!(l.begin(other, "victim", t), Err(Throttled::Account));
        // A few addresses are remembered, the most recent ones.
        let (b, c) = (
            IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)),
            IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 10)),
        );
        let t2 = t + Duration::from_millis(1_001);
        for ip in [b, c] {
            l.begin(ip, "victim", t2).unwrap();
            l.end(ip, "victim", Outcome::Success, t2);
        }
        for i in 0..3u8 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, i));
            l.begin(ip, "victim", t2).unwrap();
            l.end(ip, "victim", Outcome::Failure, t2);
        }
        assert_eq!(l.begin(home, "victim", t2), Err(Throttled::Account));
        l.begin(c, "victim", t2).unwrap();
        l.end(c, "victim", Outcome::Undecided, t2);
        // The per-address limit still holds for a known address.
        for i in 0..6 {
            let name = format!("n{i}");
            l.begin(b, &name, t2).unwrap();
            l.end(b, &name, Outcome::Failure, t2);
        }
        assert_eq!(l.begin(b, "victim", t2), Err(Throttled::Address));
        // Off: nobody is let past an account's block.
        let mut off = LoginLimiter::new(PasswordLimits {
            known_addresses_per_account: 0,
            ..cfg()
        });
        off.begin(home, "victim", t).unwrap();
        off.end(home, "victim", Outcome::Success, t);
        for _ in 0..3 {
            off.begin(A, "victim", t).unwrap();
            off.end(A, "victim", Outcome::Failure, t);
        }
        assert_eq!(off.begin(home, "victim", t), Err(Throttled::Account));
    }
}

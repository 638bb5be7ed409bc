//! Write pacing under load: how busy a core has been lately, and from that how far apart it
//! writes to any one client. With spare time, a turn's output is written at the turn's end;
//! once the core has none, each client is written at most once per `spacing`, so each write
//! carries more datagrams and the turns (and every hop through them) stay short.

use std::time::{Duration, Instant};

/// How often the spacing is re-evaluated.
const PERIOD: Duration = Duration::from_millis(20);
/// Busy at least this share of a period: the spacing grows by a tenth (steps of a quarter
/// swung between 12 and 60 ms at 5,000 benchmark clients, and the tail with them).
const BUSY: f64 = 0.95;
/// Busy less than this share: it shrinks.
const SPARE: f64 = 0.70;
/// The first step up, and the floor below which the spacing is dropped.
const MIN_SPACING: Duration = Duration::from_micros(500);
/// The spacing never grows past this, whatever a ClientAgent allows.
pub(crate) const MAX_SPACING: Duration =
    Duration::from_millis(crate::config::BUSY_FLUSH_DELAY_MAX_MS);

#[derive(Debug)]
pub(crate) struct Pacing {
    since: Instant,
    blocked: Duration,
    spacing: Duration,
}

impl Pacing {
    pub(crate) fn new(now: Instant) -> Pacing {
        Pacing {
            since: now,
            blocked: Duration::ZERO,
            spacing: Duration::ZERO,
        }
    }

    /// The core waited in poll from `from` to `to` with nothing to do.
    pub(crate) fn blocked(&mut self, from: Instant, to: Instant) {
        self.blocked += to.saturating_duration_since(from);
    }

    /// Once per period: more spacing when the core was busy all along, less when it idled.
    pub(crate) fn update(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed < PERIOD {
            return;
        }
        let busy = 1.0 - (self.blocked.as_secs_f64() / elapsed.as_secs_f64()).min(1.0);
        if busy >= BUSY {
            self.spacing = (self.spacing * 11 / 10).max(MIN_SPACING).min(MAX_SPACING);
        } else if busy < SPARE {
            self.spacing = self.spacing * 9 / 10;
            if self.spacing < MIN_SPACING {
                self.spacing = Duration::ZERO;
            }
        }
        self.since = now;
        self.blocked = Duration::ZERO;
    }

    /// How far apart writes to one client are to be, now (zero: at each turn's end).
    pub(crate) fn spacing(&self) -> Duration {
        self.spacing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `periods` periods in which the core idles `idle` of each.
    fn run(p: &mut Pacing, t: &mut Instant, periods: usize, idle: Duration) {
        for _ in 0..periods {
            p.blocked(*t, *t + idle);
            *t += PERIOD;
            p.update(*t);
        }
    }

    #[test]
    fn an_idle_core_writes_at_each_turns_end() {
        let mut t = Instant::now();
        let mut p = Pacing::new(t);
        run(&mut p, &mut t, 100, PERIOD / 2);
        assert_eq!(p.spacing(), Duration::ZERO);
    }

    #[test]
    fn a_busy_core_spaces_writes_up_to_the_bound_and_back_when_load_falls() {
        let mut t = Instant::now();
        let mut p = Pacing::new(t);
        run(&mut p, &mut t, 1, Duration::ZERO);
        assert_eq!(p.spacing(), MIN_SPACING);
        run(&mut p, &mut t, 200, Duration::ZERO);
        assert_eq!(p.spacing(), MAX_SPACING);
        // Between the thresholds it holds.
        run(&mut p, &mut t, 10, PERIOD / 10);
        assert_eq!(p.spacing(), MAX_SPACING);
        run(&mut p, &mut t, 100, PERIOD / 2);
        assert_eq!(p.spacing(), Duration::ZERO);
    }

    #[test]
    fn a_short_period_is_not_judged() {
        let t = Instant::now();
        let mut p = Pacing::new(t);
        p.update(t + PERIOD / 2);
        assert_eq!(p.spacing(), Duration::ZERO);
        p.update(t + PERIOD);
        assert_eq!(p.spacing(), MIN_SPACING);
    }
}

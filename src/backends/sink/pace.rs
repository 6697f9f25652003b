//! How fast a sink writes: adaptive pacing of write units ([`Pace`]: additive increase,
//! multiplicative decrease), started at a provisioned table's capacity when it has one.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Adaptive pacing of writes, counted in write units (an item of up to 1 KB is one unit).
///
/// On a table with no known capacity (on-demand) the pace is unlimited until the table first
/// throttles; then the rate starts at 70% of what was being accepted, and drops to 70% again
/// on a throttle, at most once per [`Pace::COOLDOWN`] (one overload shows as many throttled
/// requests at once). A throttle is a request refused whole or one with more than half its
/// items returned unprocessed; a few unprocessed items are only sent again. Every request that
/// wrote at least half its items raises the rate by 2% (at least 5 units/s), until it is lifted
/// at [`Pace::CEILING`] units/s.
///
/// On a provisioned table ([`Pace::provisioned`]) the rate starts at this writer's share of
/// the table's write capacity and is never raised above it: the capacity is known, so it is
/// not discovered by being throttled, and throttling retries stay few. A throttle still
/// lowers the rate (another writer may be using the table).
#[derive(Debug)]
pub struct Pace {
    state: Mutex<PaceState>,
}

#[derive(Debug)]
struct PaceState {
    /// Units per second; `None` while unlimited.
    rate: Option<f64>,
    /// The highest rate, for a table of known capacity.
    cap: Option<f64>,
    /// The lowest rate.
    floor: f64,
    /// When the next request may go.
    next: Instant,
    /// Units accepted since `window_start`, to estimate the accepted rate.
    window_units: u64,
    window_start: Instant,
    last_rate: f64,
    /// When the rate was last lowered.
    lowered: Option<Instant>,
    /// How many times the rate was lowered.
    times_lowered: u64,
}

impl Default for Pace {
    fn default() -> Self {
        Pace::with_floor(Pace::FLOOR)
    }
}

impl Pace {
    /// The lowest rate, units/s.
    pub const FLOOR: f64 = 25.0;
    /// The rate is lowered at most once in this time.
    pub const COOLDOWN: Duration = Duration::from_secs(1);
    /// Above this rate, units/s, the limit is lifted (on a table of unknown capacity).
    pub const CEILING: f64 = 100_000.0;

    /// A pace that never goes below `floor` units/s (the default is [`Pace::FLOOR`]).
    pub fn with_floor(floor: f64) -> Self {
        let now = Instant::now();
        Pace {
            state: Mutex::new(PaceState {
                rate: None,
                cap: None,
                floor: floor.max(1.0),
                next: now,
                window_units: 0,
                window_start: now,
                last_rate: 0.0,
                lowered: None,
                times_lowered: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PaceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The table's write capacity is known: `share` units/s of it are this writer's. The rate
    /// starts there and is never raised above it; throttling (another writer on the table) may
    /// lower it to a quarter of it (below the usual floor, for a small table).
    pub fn provisioned(&self, share: f64) {
        let share = share.max(1.0);
        let mut s = self.lock();
        s.floor = s.floor.min(share / 4.0).max(1.0);
        s.rate = Some(share);
        s.cap = Some(share);
        s.next = Instant::now();
    }

    /// The current limit in units/s (`None`: unlimited).
    pub fn rate(&self) -> Option<f64> {
        self.lock().rate
    }

    /// How many times throttling lowered the rate so far (it may have climbed back since).
    pub fn times_lowered(&self) -> u64 {
        self.lock().times_lowered
    }

    /// Wait until `units` may be sent.
    pub async fn acquire(&self, units: usize) {
        let wait = {
            let mut s = self.lock();
            let Some(rate) = s.rate else { return };
            let now = Instant::now();
            let slot = s.next.max(now);
            s.next = slot + Duration::from_secs_f64(units as f64 / rate);
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// A request of `units` was fully accepted.
    pub fn accepted(&self, units: usize) {
        let mut s = self.lock();
        let now = Instant::now();
        s.window_units += units as u64;
        let span = now.duration_since(s.window_start).as_secs_f64();
        if span >= 1.0 {
            s.last_rate = s.window_units as f64 / span;
            s.window_units = 0;
            s.window_start = now;
        }
        if let Some(rate) = s.rate {
            let raised = rate + (rate * 0.02).max(5.0);
            s.rate = match s.cap {
                Some(cap) => Some(raised.min(cap)),
                None => (raised < Self::CEILING).then_some(raised),
            };
        }
    }

    /// The table throttled (a whole request or some of its items).
    pub fn throttled(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        if s.lowered.is_some_and(|t| now.duration_since(t) < Self::COOLDOWN) {
            return;
        }
        s.lowered = Some(now);
        s.times_lowered += 1;
        let span = now.duration_since(s.window_start).as_secs_f64().max(0.001);
        let seen = if span >= 0.2 { s.window_units as f64 / span } else { s.last_rate };
        let base = s.rate.unwrap_or(if seen > 0.0 { seen } else { 1000.0 });
        s.rate = Some((base * 0.7).max(s.floor));
    }
}

/// The write units of an item of `bytes` as DynamoDB bills a standard write: one per KB
/// started, at least one.
pub fn write_units(bytes: usize) -> usize {
    bytes.div_ceil(1024).max(1)
}

/// One writer's share of a table's write capacity, units/s: the provisioned `capacity`
/// divided among the `writers` (processes) that write the table at once.
pub fn share(capacity: u64, writers: u32) -> f64 {
    capacity as f64 / f64::from(writers.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pace_slows_on_throttling_and_recovers_when_accepted() {
        let pace = Pace::default();
        assert_eq!(pace.rate(), None, "unlimited until throttled");
        pace.accepted(25);
        pace.throttled();
        let first = pace.rate().unwrap();
        pace.throttled();
        assert_eq!(pace.rate(), Some(first), "one overload lowers the rate once");
        tokio::time::sleep(Pace::COOLDOWN).await;
        pace.throttled();
        let second = pace.rate().unwrap();
        assert!(second < first, "{second} < {first}");
        for _ in 0..10 {
            pace.accepted(25);
        }
        assert!(pace.rate().unwrap() > second, "accepted requests raise the rate again");
        for _ in 0..10_000 {
            pace.accepted(25);
        }
        assert_eq!(pace.rate(), None, "a rate far above what the table needs is lifted");
        for _ in 0..64 {
            pace.lock().lowered = None;
            pace.throttled();
        }
        assert_eq!(pace.rate(), Some(Pace::FLOOR), "the rate never falls below the floor");
    }

    #[test]
    fn a_provisioned_pace_starts_at_its_share_and_never_rises_above_it() {
        let pace = Pace::default();
        pace.provisioned(share(100, 4));
        assert_eq!(pace.rate(), Some(25.0), "100 units shared by 4 writers");
        for _ in 0..1000 {
            pace.accepted(25);
        }
        assert_eq!(pace.rate(), Some(25.0), "never above the share, never lifted");
        pace.throttled();
        assert_eq!(pace.rate(), Some(17.5), "another writer's load still lowers it");
        let small = Pace::default();
        small.provisioned(share(5, 1));
        for _ in 0..8 {
            small.lock().lowered = None;
            small.throttled();
        }
        assert_eq!(small.rate(), Some(1.25), "the floor comes down to a quarter of a small table's capacity");
        assert_eq!((write_units(0), write_units(1024), write_units(1025), write_units(3000)), (1, 1, 2, 3));
    }
}

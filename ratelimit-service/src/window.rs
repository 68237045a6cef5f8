//! Window arithmetic: pure functions of counters, limits and an explicit `now` (Unix ms).
//!
//! Windows are aligned to the Unix epoch, as in the reference service, so every process that
//! shares a store agrees on them. A sliding window weighs the previous window's hits by the part
//! of it that still overlaps the last `len` milliseconds (no 2x burst at window edges); a fixed
//! window counts only the current one.

use std::time::Duration;

use crate::store::Counts;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sliding,
    Fixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    pub len_ms: u64,
    pub algorithm: Algorithm,
}

impl Window {
    pub fn new(len_ms: u64, algorithm: Algorithm) -> Self {
        Self {
            len_ms: len_ms.max(1),
            algorithm,
        }
    }

    /// Index of the window that holds `now_ms`.
    pub fn index(&self, now_ms: u64) -> u64 {
        now_ms / self.len_ms
    }

    /// Milliseconds since the current window started.
    pub fn elapsed(&self, now_ms: u64) -> u64 {
        now_ms % self.len_ms
    }

    /// Milliseconds until the current window ends.
    pub fn until_end(&self, now_ms: u64) -> u64 {
        self.len_ms - self.elapsed(now_ms)
    }

    /// How long a counter of the window `index` must be kept, from `now_ms`: a sliding window
    /// still reads it as "previous" during the next window.
    pub fn ttl_ms(&self, now_ms: u64) -> u64 {
        match self.algorithm {
            Algorithm::Fixed => self.until_end(now_ms),
            Algorithm::Sliding => self.until_end(now_ms) + self.len_ms,
        }
    }

    /// Hits counted against the limit at `now_ms`. The Redis script computes the same
    /// expression in the same order of IEEE double operations, so both stores agree exactly.
    pub fn estimate(&self, c: Counts, now_ms: u64) -> u64 {
        match self.algorithm {
            Algorithm::Fixed => c.curr,
            Algorithm::Sliding => c.curr.saturating_add(self.prev_weight(c.prev, now_ms)),
        }
    }

    fn prev_weight(&self, prev: u64, now_ms: u64) -> u64 {
        let left = self.len_ms - self.elapsed(now_ms);
        ((prev as f64) * (left as f64) / (self.len_ms as f64)).floor() as u64
    }

    /// Time until the counter is back to zero with no further hits (OpenAI's "reset").
    pub fn until_full(&self, after: Counts, now_ms: u64) -> Duration {
        let ms = match self.algorithm {
            Algorithm::Fixed => self.until_end(now_ms),
            Algorithm::Sliding if after.curr > 0 => self.until_end(now_ms) + self.len_ms,
            Algorithm::Sliding if after.prev > 0 => self.until_end(now_ms),
            Algorithm::Sliding => 0,
        };
        Duration::from_millis(ms)
    }

    /// Earliest wait after which `hits` more would fit under `limit` with no further hits, or
    /// `None` when they never can (`hits > limit`).
    pub fn until_fits(&self, c: Counts, hits: u64, limit: u64, now_ms: u64) -> Option<Duration> {
        if hits > limit {
            return None;
        }
        if self.estimate(c, now_ms).saturating_add(hits) <= limit {
            return Some(Duration::ZERO);
        }
        let until_end = self.until_end(now_ms);
        let wait = match self.algorithm {
            Algorithm::Fixed => until_end,
            Algorithm::Sliding => {
                let elapsed = self.elapsed(now_ms);
                let in_this = self
                    .time_prev_decays(c.prev, limit.saturating_sub(c.curr), hits)
                    .filter(|t| c.curr + hits <= limit && *t < self.len_ms)
                    .map(|t| t.saturating_sub(elapsed));
                in_this.unwrap_or_else(|| {
                    // Next window: this window's hits become "previous" and decay.
                    let t = self.time_prev_decays(c.curr, limit, hits).unwrap_or(0);
                    until_end + t
                })
            }
        };
        Some(Duration::from_millis(wait))
    }

    /// Offset into a window at which `floor(prev * (len - t) / len) + hits <= room` first
    /// holds, searched exactly on whole milliseconds (the estimate only falls as `t` grows).
    fn time_prev_decays(&self, prev: u64, room: u64, hits: u64) -> Option<u64> {
        if hits > room {
            return None;
        }
        let fits = |t: u64| {
            let left = self.len_ms - t;
            (((prev as f64) * (left as f64) / (self.len_ms as f64)).floor() as u64) + hits <= room
        };
        let (mut lo, mut hi) = (0, self.len_ms);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { hi = mid } else { lo = mid + 1 }
        }
        Some(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: u64 = 60_000;
    const T0: u64 = 1_700_000_040_000; // a whole minute

    fn sliding() -> Window {
        Window::new(MIN, Algorithm::Sliding)
    }

    fn counts(prev: u64, curr: u64) -> Counts {
        Counts { prev, curr }
    }

    #[test]
    fn windows_are_epoch_aligned() {
        let w = sliding();
        assert_eq!(w.elapsed(T0), 0);
        assert_eq!(w.index(T0 + MIN - 1), w.index(T0));
        assert_eq!(w.index(T0 + MIN), w.index(T0) + 1);
        assert_eq!(w.until_end(T0 + 15_000), 45_000);
    }

    #[test]
    fn sliding_weighs_previous_window_by_overlap() {
        let w = sliding();
        assert_eq!(w.estimate(counts(100, 10), T0), 110);
        assert_eq!(w.estimate(counts(100, 10), T0 + 15_000), 85);
        assert_eq!(w.estimate(counts(100, 10), T0 + 30_000), 60);
        assert_eq!(w.estimate(counts(100, 10), T0 + MIN - 1), 10);
        // floor(7 * 59_999 / 60_000) = 6
        assert_eq!(w.estimate(counts(7, 0), T0 + 1), 6);
    }

    #[test]
    fn fixed_ignores_previous_window() {
        let w = Window::new(MIN, Algorithm::Fixed);
        assert_eq!(w.estimate(counts(100, 10), T0), 10);
        assert_eq!(w.ttl_ms(T0 + 15_000), 45_000);
        assert_eq!(sliding().ttl_ms(T0 + 15_000), 105_000);
    }

    #[test]
    fn fixed_fits_at_window_end() {
        let w = Window::new(MIN, Algorithm::Fixed);
        let c = counts(0, 10);
        assert_eq!(
            w.until_fits(c, 1, 10, T0 + 20_000),
            Some(Duration::from_millis(40_000))
        );
        assert_eq!(w.until_fits(c, 1, 11, T0 + 20_000), Some(Duration::ZERO));
        assert_eq!(w.until_fits(c, 11, 10, T0), None);
    }

    #[test]
    fn sliding_fits_when_previous_decays_enough() {
        let w = sliding();
        // limit 100, prev 100, curr 50 at 0s: need floor(100*(60-t)/60) + 50 + 1 <= 100
        // -> 100*(60000-t)/60000 < 50 -> t > 30000 -> t = 30000 gives floor(50)=50, 101 > 100
        let c = counts(100, 50);
        let wait = w.until_fits(c, 1, 100, T0).unwrap_or_default();
        let t = T0 + wait.as_millis() as u64;
        assert!(w.estimate(c, t) < 100, "fits after the wait");
        assert!(
            w.estimate(c, t - 1) + 1 > 100,
            "and not a millisecond earlier"
        );
        assert_eq!(wait, Duration::from_millis(30_001));
    }

    #[test]
    fn sliding_full_current_window_waits_into_next() {
        let w = sliding();
        // curr alone is at the limit: only the next window can help.
        let c = counts(0, 100);
        let wait = w.until_fits(c, 10, 100, T0 + 45_000).unwrap_or_default();
        let t = T0 + 45_000 + wait.as_millis() as u64;
        let next = counts(100, 0);
        assert!(w.estimate(next, t) + 10 <= 100);
        assert!(w.estimate(next, t - 1) + 10 > 100);
        // floor(100 * (60_000 - t) / 60_000) <= 90 first holds at t = 5_401.
        assert_eq!(wait, Duration::from_millis(15_000 + 5_401));
    }

    #[test]
    fn until_full_counts_the_window_still_to_roll() {
        let w = sliding();
        assert_eq!(
            w.until_full(counts(5, 1), T0 + 10_000),
            Duration::from_millis(110_000)
        );
        assert_eq!(
            w.until_full(counts(5, 0), T0 + 10_000),
            Duration::from_millis(50_000)
        );
        assert_eq!(w.until_full(counts(0, 0), T0 + 10_000), Duration::ZERO);
    }
}

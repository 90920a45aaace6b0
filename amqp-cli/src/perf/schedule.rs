//! `--variable-rate` and `--variable-size`: a value that follows a sequence of steps over the
//! run's time, starting over when the sequence ends; and the pacing of publishes at a rate
//! that may change.

use std::time::Duration;

use tokio::time::Instant;

use super::args::Step;
use crate::duration::MAX_SECONDS;

/// A value over time: one constant, or steps that repeat.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Schedule {
    steps: Vec<Step>,
    cycle: Duration,
}

impl Schedule {
    /// `steps`, or `constant` throughout when there are none.
    pub(super) fn new(steps: &[Step], constant: f64) -> Self {
        if steps.is_empty() {
            return Self {
                steps: vec![Step {
                    value: constant,
                    lasts: Duration::MAX,
                }],
                cycle: Duration::MAX,
            };
        }
        let cycle = steps
            .iter()
            .fold(Duration::ZERO, |sum, s| sum.saturating_add(s.lasts));
        Self {
            steps: steps.to_vec(),
            cycle,
        }
    }

    /// The value `elapsed` into the run.
    pub(super) fn at(&self, elapsed: Duration) -> f64 {
        let mut into = Duration::from_nanos(
            u64::try_from(elapsed.as_nanos() % self.cycle.as_nanos().max(1)).unwrap_or(0),
        );
        for step in &self.steps {
            if into < step.lasts {
                return step.value;
            }
            into -= step.lasts;
        }
        self.steps.last().map_or(0.0, |s| s.value)
    }
}

/// When each publish is due at a rate that may change between publishes.
#[derive(Debug)]
pub(super) struct Pacer {
    started: Instant,
    next: Instant,
}

/// How far a slow producer may fall behind its rate before the debt is forgiven (else it
/// would publish a burst to catch up).
const MAX_BEHIND: Duration = Duration::from_secs(1);

impl Pacer {
    /// A pacer whose first publish is due at `started`.
    pub(super) fn new(started: Instant) -> Self {
        Self {
            started,
            next: started,
        }
    }

    /// When the next publish is due under `rates` (0: at once), moving on by one publish.
    /// A new rate applies from the publish after the one already waiting; no gap is longer
    /// than [`MAX_SECONDS`] (a rate so low is a typo, and any clock fits a year).
    pub(super) fn next_due(&mut self, rates: &Schedule, now: Instant) -> Instant {
        let rate = rates.at(now.saturating_duration_since(self.started));
        if rate <= 0.0 {
            self.next = now;
            return now;
        }
        if now.saturating_duration_since(self.next) > MAX_BEHIND {
            self.next = now;
        }
        let due = self.next;
        let gap = Duration::from_secs_f64((1.0 / rate).min(MAX_SECONDS));
        self.next = due + gap;
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(value: f64, secs: u64) -> Step {
        Step {
            value,
            lasts: Duration::from_secs(secs),
        }
    }

    #[test]
    fn steps_follow_each_other_and_start_over() {
        let s = Schedule::new(&[step(100.0, 2), step(5.0, 1)], 0.0);
        let at = |ms: u64| s.at(Duration::from_millis(ms));
        assert_eq!(
            (at(0), at(1999), at(2000), at(2999)),
            (100.0, 100.0, 5.0, 5.0)
        );
        assert_eq!((at(3000), at(5500)), (100.0, 5.0));
        let constant = Schedule::new(&[], 42.0);
        assert_eq!(constant.at(Duration::from_secs(1_000_000)), 42.0);
    }

    #[test]
    fn a_pacer_spaces_publishes_by_the_current_rate() {
        let start = Instant::now();
        let mut pacer = Pacer::new(start);
        let rates = Schedule::new(&[step(10.0, 1), step(0.0, 1)], 0.0);
        let due: Vec<Duration> = (0..3)
            .map(|_| pacer.next_due(&rates, start) - start)
            .collect();
        assert_eq!(due, [0, 100, 200].map(Duration::from_millis));
        // In the unlimited step every publish is due at once.
        let later = start + Duration::from_millis(1500);
        assert_eq!(pacer.next_due(&rates, later), later);
        // A rate too slow for any clock waits a year at most, and never overflows.
        let mut pacer = Pacer::new(start);
        let crawl = Schedule::new(&[], 1e-300);
        assert_eq!(pacer.next_due(&crawl, start), start);
        let year = Duration::from_secs_f64(MAX_SECONDS);
        assert_eq!(pacer.next_due(&crawl, start), start + year);
    }
}

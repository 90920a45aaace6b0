//! Heartbeat timing: when to send one, and when the peer counts as dead.
//!
//! With an agreed interval of H seconds: send a heartbeat when nothing was
//! written for H/2, as RabbitMQ's own sender does; declare the peer dead when nothing at all
//! was read for 2H. Any frame counts as activity in either direction. H = 0 turns both off.

use std::time::Duration;

/// The timers of one connection.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    /// The agreed interval in seconds; 0 before tune and when off.
    interval: u16,
    last_sent: Duration,
    last_received: Duration,
}

impl Heartbeat {
    pub(crate) fn new(now: Duration) -> Self {
        Self {
            interval: 0,
            last_sent: now,
            last_received: now,
        }
    }

    /// Starts the timers with the agreed interval (after `tune-ok`).
    pub(crate) fn start(&mut self, interval: u16, now: Duration) {
        self.interval = interval;
        self.last_sent = now;
        self.last_received = now;
    }

    /// The agreed interval in seconds.
    pub(crate) fn interval(&self) -> u16 {
        self.interval
    }

    pub(crate) fn sent(&mut self, now: Duration) {
        self.last_sent = now;
    }

    pub(crate) fn received(&mut self, now: Duration) {
        self.last_received = now;
    }

    fn half(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval) * 500)
    }

    fn dead_after(&self) -> Duration {
        Duration::from_secs(u64::from(self.interval) * 2)
    }

    /// When a heartbeat is due to be sent, if heartbeats are on.
    pub(crate) fn send_at(&self) -> Option<Duration> {
        (self.interval != 0).then(|| self.last_sent.saturating_add(self.half()))
    }

    /// When the peer counts as dead if nothing arrives, if heartbeats are on.
    pub(crate) fn dead_at(&self) -> Option<Duration> {
        (self.interval != 0).then(|| self.last_received.saturating_add(self.dead_after()))
    }

    /// The earlier of the two instants.
    pub(crate) fn next_timeout(&self) -> Option<Duration> {
        match (self.send_at(), self.dead_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_after_half_dead_after_two_intervals() {
        let t0 = Duration::from_secs(1_000);
        let mut h = Heartbeat::new(t0);
        assert_eq!(h.next_timeout(), None);
        h.start(10, t0);
        assert_eq!(h.send_at(), Some(t0 + Duration::from_secs(5)));
        assert_eq!(h.dead_at(), Some(t0 + Duration::from_secs(20)));
        h.sent(t0 + Duration::from_secs(5));
        h.received(t0 + Duration::from_secs(7));
        assert_eq!(h.next_timeout(), Some(t0 + Duration::from_secs(10)));
        assert_eq!(h.dead_at(), Some(t0 + Duration::from_secs(27)));
    }
}

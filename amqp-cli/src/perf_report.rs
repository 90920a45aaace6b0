//! `amqp perf`'s counters, latency histograms, live progress line and final report.

use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded, in microseconds (an hour); larger ones are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds with 3 significant digits.
fn histogram() -> Histogram<u64> {
    // Constant bounds that `new_with_bounds` accepts (low ≥ 1, high ≥ 2 × low, at most 5
    // significant figures): it cannot fail.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid constant histogram bounds")
}

/// A histogram for the whole run and one for the current progress interval.
#[derive(Debug)]
pub struct Latency {
    total: Histogram<u64>,
    interval: Histogram<u64>,
}

impl Default for Latency {
    fn default() -> Self {
        Self {
            total: histogram(),
            interval: histogram(),
        }
    }
}

impl Latency {
    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.total.saturating_record(us);
        self.interval.saturating_record(us);
    }
}

/// Counters shared by every producer and consumer task.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages handed to the connection.
    pub published: AtomicU64,
    /// Publishes the broker acked.
    pub confirmed: AtomicU64,
    /// Publishes the broker nacked.
    pub nacked: AtomicU64,
    /// Publishes the broker returned (unroutable).
    pub returned: AtomicU64,
    /// Messages consumed.
    pub consumed: AtomicU64,
    /// Body octets handed to the connection.
    pub published_bytes: AtomicU64,
    /// Publish to consume, from the timestamp in each body.
    pub end_to_end: Mutex<Latency>,
    /// Publish to confirm.
    pub confirm: Mutex<Latency>,
}

impl Stats {
    /// Records an end-to-end latency.
    pub fn record_end_to_end(&self, latency: Duration) {
        if let Ok(mut l) = self.end_to_end.lock() {
            l.record(latency);
        }
    }

    /// Records a confirm latency.
    pub fn record_confirm(&self, latency: Duration) {
        if let Ok(mut l) = self.confirm.lock() {
            l.record(latency);
        }
    }

    fn counts(&self) -> [u64; 3] {
        [
            self.published.load(Ordering::Relaxed),
            self.confirmed.load(Ordering::Relaxed),
            self.consumed.load(Ordering::Relaxed),
        ]
    }
}

/// Builds the once-a-second figures from the counters' growth.
#[derive(Debug, Default)]
pub struct Progress {
    last: [u64; 3],
}

/// One second's figures: rates over the interval, and its publish-to-consume latency.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Sample {
    /// Seconds since the start.
    pub time_s: f64,
    /// Published per second.
    pub published_per_s: f64,
    /// Confirmed per second.
    pub confirmed_per_s: f64,
    /// Consumed per second.
    pub consumed_per_s: f64,
    /// Median latency in the interval, µs.
    pub latency_p50_us: Option<u64>,
    /// 99th percentile latency in the interval, µs.
    pub latency_p99_us: Option<u64>,
}

impl Progress {
    /// The line for the interval that just ended (`elapsed` since the start, `interval`
    /// since the last line); resets the interval histogram.
    pub fn line(&mut self, stats: &Stats, elapsed: Duration, interval: Duration) -> String {
        self.sample(stats, elapsed, interval).text()
    }

    /// The figures of the interval that just ended; resets the interval histograms.
    pub fn sample(&mut self, stats: &Stats, elapsed: Duration, interval: Duration) -> Sample {
        let now = stats.counts();
        let secs = interval.as_secs_f64().max(1e-3);
        let last = self.last;
        let rate = |i: usize| ((now[i].saturating_sub(last[i])) as f64 / secs).round();
        let mut latency = (None, None);
        if let Ok(mut l) = stats.end_to_end.lock() {
            if !l.interval.is_empty() {
                latency = (
                    Some(l.interval.value_at_quantile(0.5)),
                    Some(l.interval.value_at_quantile(0.99)),
                );
            }
            l.interval.reset();
        }
        if let Ok(mut l) = stats.confirm.lock() {
            l.interval.reset();
        }
        self.last = now;
        Sample {
            time_s: (elapsed.as_secs_f64() * 10.0).round() / 10.0,
            published_per_s: rate(0),
            confirmed_per_s: rate(1),
            consumed_per_s: rate(2),
            latency_p50_us: latency.0,
            latency_p99_us: latency.1,
        }
    }
}

impl Sample {
    /// The CSV header line that names [`Sample::csv`]'s columns.
    pub const CSV_HEADER: &'static str =
        "time_s,published_per_s,confirmed_per_s,consumed_per_s,latency_p50_us,latency_p99_us";

    /// The line for people.
    pub fn text(&self) -> String {
        let mut line = format!(
            "{:>5.1} s  sent {:>8.0} msg/s  confirmed {:>8.0} msg/s  received {:>8.0} msg/s",
            self.time_s, self.published_per_s, self.confirmed_per_s, self.consumed_per_s,
        );
        if let (Some(p50), Some(p99)) = (self.latency_p50_us, self.latency_p99_us) {
            let _ = write!(line, "  latency p50 {p50} p99 {p99} µs");
        }
        line
    }

    /// One CSV row (an empty field for a latency the interval has none of).
    pub fn csv(&self) -> String {
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        format!(
            "{:.1},{},{},{},{},{}",
            self.time_s,
            self.published_per_s,
            self.confirmed_per_s,
            self.consumed_per_s,
            opt(self.latency_p50_us),
            opt(self.latency_p99_us)
        )
    }

    /// One JSON object.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 75th percentile.
    pub p75: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

impl Percentiles {
    /// The percentiles of the whole run, `None` without samples.
    pub fn of(latency: &Mutex<Latency>) -> Option<Self> {
        let l = latency.lock().ok()?;
        let h = &l.total;
        if h.is_empty() {
            return None;
        }
        Some(Self {
            count: h.len(),
            min: h.min(),
            mean: (h.mean() * 10.0).round() / 10.0,
            p50: h.value_at_quantile(0.50),
            p75: h.value_at_quantile(0.75),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        })
    }

    fn text(&self) -> String {
        format!(
            "min {}  p50 {}  p75 {}  p95 {}  p99 {}  p99.9 {}  max {}  (µs, {} samples)",
            self.min, self.p50, self.p75, self.p95, self.p99, self.p999, self.max, self.count
        )
    }
}

/// What the run was set up as.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    /// `host:port` of the broker.
    pub broker: String,
    /// The broker's `version` server property.
    pub server_version: Option<String>,
    /// The queue.
    pub queue: String,
    /// Its type.
    pub queue_type: &'static str,
    /// True when perf declared it for this run (and deleted it after).
    pub fresh_queue: bool,
    /// Producer connections.
    pub producers: u16,
    /// Consumer connections.
    pub consumers: u16,
    /// Body size in octets.
    pub message_size: usize,
    /// Unconfirmed publishes per producer; 0: no confirms.
    pub confirm_window: usize,
    /// basic.qos prefetch per consumer.
    pub prefetch: u16,
    /// Acknowledge every N deliveries with multiple; 0 with autoack.
    pub multi_ack: u32,
    /// Publishes per second per producer; `None`: as fast as it goes.
    pub rate_limit: Option<f64>,
    /// Persistent messages.
    pub persistent: bool,
}

impl Setup {
    /// Two lines: the broker and queue, then the load's shape.
    fn text(&self) -> String {
        let s = self;
        let plural = |n: u16, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let version = s.server_version.as_deref().unwrap_or("?");
        let mut out = format!(
            "amqp perf against RabbitMQ {version} at {}, queue {:?} ({}{})\n",
            s.broker,
            s.queue,
            s.queue_type,
            if s.fresh_queue {
                ", declared for this run and deleted"
            } else {
                ""
            },
        );
        let confirms = match s.confirm_window {
            0 => "no confirms".to_owned(),
            n => format!("confirm window {n}"),
        };
        let acks = match s.multi_ack {
            0 => "autoack".to_owned(),
            1 => "ack each".to_owned(),
            n => format!("ack every {n}"),
        };
        let rate = s
            .rate_limit
            .map_or_else(String::new, |r| format!(", {r} msg/s per producer"));
        let _ = writeln!(
            out,
            "  {}, {}, {} B messages{}, {confirms}, prefetch {}, {acks}{rate}",
            plural(s.producers, "producer"),
            plural(s.consumers, "consumer"),
            s.message_size,
            if s.persistent { " (persistent)" } else { "" },
            s.prefetch,
        );
        out
    }
}

/// The final report.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The run's setup.
    #[serde(flatten)]
    pub setup: Setup,
    /// Seconds from the first publish to the stop.
    pub duration_s: f64,
    /// Messages published.
    pub published: u64,
    /// Publishes acked.
    pub confirmed: u64,
    /// Publishes nacked.
    pub nacked: u64,
    /// Publishes returned.
    pub returned: u64,
    /// Messages consumed.
    pub consumed: u64,
    /// Published per second.
    pub publish_rate: f64,
    /// Confirmed per second.
    pub confirm_rate: f64,
    /// Consumed per second.
    pub consume_rate: f64,
    /// Published octets per second.
    pub publish_bytes_per_s: f64,
    /// Publish to consume.
    pub latency_us: Option<Percentiles>,
    /// Publish to confirm.
    pub confirm_latency_us: Option<Percentiles>,
}

impl Report {
    /// The report of a run that lasted `elapsed`.
    pub fn new(setup: Setup, stats: &Stats, elapsed: Duration) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let per_s = |n: u64| (n as f64 / secs).round();
        let published = load(&stats.published);
        Self {
            duration_s: (secs * 1000.0).round() / 1000.0,
            published,
            confirmed: load(&stats.confirmed),
            nacked: load(&stats.nacked),
            returned: load(&stats.returned),
            consumed: load(&stats.consumed),
            publish_rate: per_s(published),
            confirm_rate: per_s(load(&stats.confirmed)),
            consume_rate: per_s(load(&stats.consumed)),
            publish_bytes_per_s: per_s(load(&stats.published_bytes)),
            latency_us: Percentiles::of(&stats.end_to_end),
            confirm_latency_us: Percentiles::of(&stats.confirm),
            setup,
        }
    }

    /// The report for people.
    pub fn text(&self) -> String {
        let mut out = self.setup.text();
        let s = &self.setup;
        let _ = writeln!(out, "  ran {:.1} s", self.duration_s);
        let mib = self.publish_bytes_per_s / (1024.0 * 1024.0);
        let _ = writeln!(
            out,
            "  published  {:>10} msg  {:>9.0} msg/s  {mib:.1} MiB/s",
            self.published, self.publish_rate
        );
        if s.confirm_window > 0 {
            let _ = writeln!(
                out,
                "  confirmed  {:>10} msg  {:>9.0} msg/s  (nacked {}, returned {})",
                self.confirmed, self.confirm_rate, self.nacked, self.returned
            );
        }
        let _ = writeln!(
            out,
            "  consumed   {:>10} msg  {:>9.0} msg/s",
            self.consumed, self.consume_rate
        );
        if let Some(p) = &self.latency_us {
            let _ = writeln!(out, "  latency, publish to consume: {}", p.text());
        }
        if let Some(p) = &self.confirm_latency_us {
            let _ = writeln!(out, "  latency, publish to confirm: {}", p.text());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            broker: "127.0.0.1:5672".into(),
            server_version: Some("4.1.0".into()),
            queue: "q".into(),
            queue_type: "classic",
            fresh_queue: true,
            producers: 1,
            consumers: 2,
            message_size: 1024,
            confirm_window: 128,
            prefetch: 500,
            multi_ack: 1,
            rate_limit: None,
            persistent: false,
        }
    }

    #[test]
    fn the_report_has_rates_and_percentiles() {
        let stats = Stats::default();
        stats.published.store(2000, Ordering::Relaxed);
        stats.confirmed.store(2000, Ordering::Relaxed);
        stats.consumed.store(1000, Ordering::Relaxed);
        for us in 1..=1000 {
            stats.record_end_to_end(Duration::from_micros(us));
        }
        let report = Report::new(setup(), &stats, Duration::from_secs(2));
        assert_eq!(report.publish_rate, 1000.0);
        assert_eq!(report.consume_rate, 500.0);
        let p = report.latency_us.as_ref().unwrap();
        assert_eq!((p.count, p.min, p.max), (1000, 1, 1000));
        assert!((495..=505).contains(&p.p50), "{p:?}");
        assert!(report.confirm_latency_us.is_none());
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["latency_us"]["p99.9"], p.p999);
        assert_eq!(json["queue"], "q");
        let text = report.text();
        assert!(
            text.contains("1 producer, 2 consumers, 1024 B messages"),
            "{text}"
        );
        assert!(text.contains("p50 "), "{text}");
    }

    #[test]
    fn progress_shows_the_interval_rates() {
        let stats = Stats::default();
        let mut progress = Progress::default();
        stats.published.store(500, Ordering::Relaxed);
        let line = progress.line(&stats, Duration::from_secs(1), Duration::from_millis(500));
        assert!(line.contains("sent     1000 msg/s"), "{line}");
        stats.record_end_to_end(Duration::from_micros(40));
        let sample = progress.sample(&stats, Duration::from_secs(2), Duration::from_secs(1));
        assert!(
            sample.text().contains("sent        0 msg/s"),
            "{}",
            sample.text()
        );
        assert_eq!(sample.csv(), "2.0,0,0,0,40,40");
        assert_eq!(
            Sample::CSV_HEADER.split(',').count(),
            sample.csv().split(',').count()
        );
        let json: serde_json::Value = serde_json::from_str(&sample.json()).unwrap();
        assert_eq!(json["latency_p99_us"], 40);
        let quiet = progress.sample(&stats, Duration::from_secs(3), Duration::from_secs(1));
        assert_eq!(quiet.csv(), "3.0,0,0,0,,");
    }
}

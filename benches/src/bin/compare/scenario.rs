//! The clients, the scenarios and what one worker run is asked to do and reports back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An AMQP client under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Client {
    /// `amqp-client`, this workspace's.
    Ours,
    /// lapin 4 on tokio.
    Lapin,
    /// amqprs 2.
    Amqprs,
}

impl Client {
    pub(crate) const ALL: [Self; 3] = [Self::Ours, Self::Lapin, Self::Amqprs];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ours => "amqp-client",
            Self::Lapin => "lapin",
            Self::Amqprs => "amqprs",
        }
    }
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Client {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ours" | "amqp-client" => Ok(Self::Ours),
            "lapin" => Ok(Self::Lapin),
            "amqprs" => Ok(Self::Amqprs),
            _ => Err(format!("unknown client {s:?} (ours, lapin, amqprs)")),
        }
    }
}

/// What a worker does. The default counts are for `--messages 200000`; other values scale
/// every count in proportion.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) enum Scenario {
    /// 200,000 x 16 B, no confirms, until the queue holds them all.
    Publish,
    /// 200,000 x 16 B with confirms, at most 1,000 unconfirmed.
    Confirm,
    /// 50,000 x 4 KiB with confirms, at most 1,000 unconfirmed.
    Confirm4k,
    /// 500 x 1 MiB with confirms.
    Confirm1m,
    /// Consume 200,000 pre-filled x 16 B, prefetch 1,000, one ack per message.
    Consume,
    /// The same, acking every 100th message with `multiple`.
    ConsumeMulti,
    /// 5,000 sequential request/reply round trips (latency).
    Rpc,
    /// 5,000 requests, 64 in flight (throughput).
    Rpc64,
    /// Consume from the blast peer: 500,000 x 16 B, prefetch 1,000, one ack per message.
    BlastConsume,
    /// Publish to the blast peer: 500,000 x 16 B with confirms, at most 1,000 unconfirmed.
    BlastPublish,
}

impl Scenario {
    pub(crate) const ALL: [Self; 10] = [
        Self::Publish,
        Self::Confirm,
        Self::Confirm4k,
        Self::Confirm1m,
        Self::Consume,
        Self::ConsumeMulti,
        Self::Rpc,
        Self::Rpc64,
        Self::BlastConsume,
        Self::BlastPublish,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Confirm => "confirm",
            Self::Confirm4k => "confirm-4k",
            Self::Confirm1m => "confirm-1m",
            Self::Consume => "consume",
            Self::ConsumeMulti => "consume-multi",
            Self::Rpc => "rpc",
            Self::Rpc64 => "rpc-64",
            Self::BlastConsume => "blast-consume",
            Self::BlastPublish => "blast-publish",
        }
    }

    /// A line for the report.
    pub(crate) fn describe(self, messages: u64) -> String {
        let n = group_digits(self.count_for(messages));
        match self {
            Self::Publish => format!("publish {} x 16 B, no confirms", n),
            Self::Confirm => format!("publish {} x 16 B, confirms, window 1,000", n),
            Self::Confirm4k => format!("publish {} x 4 KiB, confirms, window 1,000", n),
            Self::Confirm1m => format!("publish {} x 1 MiB, confirms, window 1,000", n),
            Self::Consume => format!("consume {} x 16 B, prefetch 1,000, ack each", n),
            Self::ConsumeMulti => {
                format!(
                    "consume {} x 16 B, prefetch 1,000, ack every 100 (multiple)",
                    n
                )
            }
            Self::Rpc => format!("RPC, {} sequential round trips", n),
            Self::Rpc64 => format!("RPC, {} requests, 64 in flight", n),
            Self::BlastConsume => {
                format!("blast peer: consume {} x 16 B, prefetch 1,000, ack each", n)
            }
            Self::BlastPublish => {
                format!("blast peer: publish {} x 16 B, confirms, window 1,000", n)
            }
        }
    }

    /// Messages (or round trips) for a run of `messages` (the 16 B count, 200,000 by default).
    pub(crate) fn count_for(self, messages: u64) -> u64 {
        let scaled = |base: u64| (base * messages / 200_000).max(1);
        match self {
            Self::Publish | Self::Confirm | Self::Consume | Self::ConsumeMulti => messages.max(1),
            Self::Confirm4k => scaled(50_000),
            Self::Confirm1m => scaled(500),
            Self::Rpc | Self::Rpc64 => scaled(5_000),
            Self::BlastConsume | Self::BlastPublish => scaled(500_000),
        }
    }

    /// The body size.
    pub(crate) fn body_size(self) -> usize {
        match self {
            Self::Confirm4k => 4096,
            Self::Confirm1m => 1 << 20,
            _ => 16,
        }
    }

    /// True for the scenarios played against the blast peer instead of RabbitMQ.
    pub(crate) fn is_blast(self) -> bool {
        matches!(self, Self::BlastConsume | Self::BlastPublish)
    }

    /// True when the queue must hold the messages before the worker starts.
    pub(crate) fn prefilled(self) -> bool {
        matches!(self, Self::Consume | Self::ConsumeMulti)
    }

    /// True when the worker uses a queue the harness declared (RPC declares its own).
    pub(crate) fn needs_queue(self) -> bool {
        !matches!(self, Self::Rpc | Self::Rpc64) && !self.is_blast()
    }

    /// True when the scenario's throughput is bounded by per-message round trips (acks,
    /// confirms, RPC), where the issue asks for 1.3x the best peer.
    pub(crate) fn round_trip_bound(self) -> bool {
        !matches!(self, Self::Publish)
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.name()).collect();
                format!("unknown scenario {s:?} ({})", names.join(", "))
            })
    }
}

/// What one worker process is asked to do.
#[derive(Clone, Debug)]
pub(crate) struct Job {
    pub(crate) client: Client,
    pub(crate) scenario: Scenario,
    pub(crate) url: String,
    /// The queue to publish to or consume from (empty for RPC and the blast peer).
    pub(crate) queue: String,
    /// Messages, or round trips for RPC.
    pub(crate) count: u64,
    pub(crate) body_size: usize,
    /// The beam.smp process, whose CPU time the worker samples around its timed phase.
    pub(crate) beam_pid: Option<u32>,
}

/// Unconfirmed publishes allowed in the confirm scenarios.
pub(crate) const CONFIRM_WINDOW: usize = 1000;
/// The consumers' prefetch count.
pub(crate) const PREFETCH: u16 = 1000;
/// Messages acknowledged together in `consume-multi`.
pub(crate) const ACK_EVERY: u64 = 100;
/// Requests in flight in `rpc-64`.
pub(crate) const RPC_IN_FLIGHT: usize = 64;

/// What a worker reports for its timed phase (one JSON line on stdout).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Outcome {
    /// Messages published, consumed, or round trips made.
    pub(crate) messages: u64,
    /// Wall-clock seconds of the timed phase.
    pub(crate) seconds: f64,
    /// The worker process's CPU time (user + system, every thread) in the timed phase, µs.
    pub(crate) cpu_us: f64,
    /// The broker's CPU time (beam.smp user + system) in the timed phase, µs.
    pub(crate) broker_cpu_us: Option<f64>,
    /// Round-trip latency percentiles, µs (RPC).
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
}

/// `1234567` as `1,234,567`.
pub(crate) fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

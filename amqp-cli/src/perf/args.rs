//! `amqp perf`'s flags: PerfTest's short flags and, as aliases with the same meaning, its long
//! ones (`--time`, `--qos`, `--multi-ack-every`, `--pmessages`, `--flag persistent`, ...).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::declare::QueueType;
use crate::duration::{parse_positive_seconds, parse_seconds};
use crate::headers::{self, Header};

/// `amqp perf`
#[derive(Args, Clone, Debug, PartialEq)]
pub struct PerfArgs {
    /// Producers, each on its own connection
    #[arg(short = 'x', long, default_value_t = 1, value_name = "N")]
    pub producers: u16,
    /// Consumers, each on its own connection
    #[arg(short = 'y', long, default_value_t = 1, value_name = "N")]
    pub consumers: u16,
    /// Channels per producer connection, each publishing --rate and --pmessages
    #[arg(short = 'X', long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub producer_channel_count: u16,
    /// Channels per consumer connection, each a consumer of its own
    #[arg(short = 'Y', long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..))]
    pub consumer_channel_count: u16,
    /// Message body size in octets (at least 8: the body carries its publish time)
    #[arg(short = 's', long, default_value_t = 1024, value_name = "OCTETS",
          value_parser = clap::value_parser!(u32).range(8..))]
    pub size: u32,
    /// Publisher confirms: at most N unconfirmed per producer channel; 0 for no confirms
    #[arg(short = 'c', long = "confirm", default_value_t = 128, value_name = "N")]
    pub confirm: usize,
    /// Unacknowledged deliveries per consumer channel (basic.qos)
    #[arg(
        short = 'q',
        long,
        visible_alias = "qos",
        default_value_t = 500,
        value_name = "N"
    )]
    pub prefetch: u16,
    /// Acknowledge every N deliveries at once (basic.ack multiple)
    #[arg(short = 'A', long, visible_alias = "multi-ack-every", default_value_t = 1,
          value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub multi_ack: u32,
    /// Consume without acknowledgements
    #[arg(short = 'a', long)]
    pub autoack: bool,
    /// Publishes per second per producer channel; 0 for as fast as the broker takes them
    #[arg(short = 'r', long, default_value_t = 0.0, value_name = "MSG/S",
          value_parser = parse_rate, allow_negative_numbers = true)]
    pub rate: f64,
    /// A publish rate for a number of seconds, e.g. 100:60; repeat for a sequence, which
    /// starts over when it ends (replaces --rate)
    #[arg(long, value_name = "RATE:SECONDS", value_parser = parse_rate_step)]
    pub variable_rate: Vec<Step>,
    /// A body size for a number of seconds, e.g. 1000:30; repeat for a sequence, which
    /// starts over when it ends (replaces --size)
    #[arg(long, value_name = "OCTETS:SECONDS", value_parser = parse_size_step)]
    pub variable_size: Vec<Step>,
    /// Seconds to run (10 unless --pmessages is given)
    #[arg(short = 'z', long, visible_alias = "time", value_name = "SECONDS",
          value_parser = parse_positive_seconds, allow_negative_numbers = true)]
    pub duration: Option<Duration>,
    /// Messages per producer channel; the run ends when they are all consumed
    #[arg(short = 'C', long, visible_alias = "pmessages", value_name = "N")]
    pub count: Option<u64>,
    /// Use this queue (as it is, or declared durable if missing; kept after the run) instead
    /// of a fresh one
    #[arg(
        short = 'u',
        long,
        value_name = "QUEUE",
        conflicts_with = "queue_pattern"
    )]
    pub queue: Option<String>,
    /// Several fresh queues named by a pattern whose %d is each number from
    /// --queue-pattern-from to --queue-pattern-to; producers and consumers are spread over
    /// them in turn
    #[arg(long, value_name = "PATTERN", requires = "queue_pattern_to")]
    pub queue_pattern: Option<String>,
    /// The first number of --queue-pattern
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub queue_pattern_from: u32,
    /// The last number of --queue-pattern
    #[arg(long, value_name = "N", requires = "queue_pattern")]
    pub queue_pattern_to: Option<u32>,
    /// The queue's type (x-queue-type); a fresh queue is classic unless given
    #[arg(long, value_enum, value_name = "TYPE")]
    pub queue_type: Option<QueueType>,
    /// A queue argument such as x-max-length:int=100000, typed as `publish --header` is
    #[arg(long = "queue-arg", value_name = "KEY[:TYPE]=VALUE",
          value_parser = headers::parse_header)]
    pub queue_args: Vec<Header>,
    /// Publish to this existing exchange (each queue is bound to it with the routing key)
    #[arg(short = 'e', long, value_name = "EXCHANGE")]
    pub exchange: Option<String>,
    /// Routing key (default: each queue's name)
    #[arg(short = 'k', long, value_name = "KEY")]
    pub routing_key: Option<String>,
    /// Persistent messages (delivery mode 2)
    #[arg(long)]
    pub persistent: bool,
    /// PerfTest's message flags: persistent, mandatory; repeat or separate with commas
    #[arg(
        short = 'f',
        long = "flag",
        value_enum,
        value_name = "FLAG",
        value_delimiter = ','
    )]
    pub flags: Vec<Flag>,
    /// Bodies from these files, taken in turn (repeat, or separate with commas); the publish
    /// time goes in a header instead of the body
    #[arg(short = 'B', long = "body", value_name = "FILE", value_delimiter = ',',
          conflicts_with_all = ["json_body", "variable_size"])]
    pub body_files: Vec<PathBuf>,
    /// The content type of --body messages
    #[arg(short = 'T', long, value_name = "MIME", requires = "body_files")]
    pub body_content_type: Option<String>,
    /// JSON bodies of --size octets (content type application/json); the publish time goes
    /// in a header
    #[arg(long)]
    pub json_body: bool,
    /// The once-a-second progress lines on standard error: text, csv or json (one object per
    /// line)
    #[arg(long, value_enum, default_value_t = ProgressFormat::Text, value_name = "FORMAT")]
    pub progress: ProgressFormat,
    /// Also write the once-a-second figures to FILE as CSV
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Print the final report as JSON on standard output
    #[arg(long)]
    pub json: bool,
    /// No progress line
    #[arg(long)]
    pub quiet: bool,
}

/// A PerfTest message flag (`-f`).
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flag {
    /// Delivery mode 2
    Persistent,
    /// Returned when no queue takes it (counted as returned)
    Mandatory,
}

/// How the progress lines are written.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressFormat {
    /// One line for people
    Text,
    /// Comma-separated values, after a header line
    Csv,
    /// One JSON object per line
    Json,
}

/// One step of `--variable-rate` or `--variable-size`: a value held for a time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Messages per second, or octets.
    pub value: f64,
    /// How long.
    pub lasts: Duration,
}

impl PerfArgs {
    /// Persistent messages: `--persistent` or `--flag persistent`.
    pub fn persistent(&self) -> bool {
        self.persistent || self.flags.contains(&Flag::Persistent)
    }

    /// Mandatory publishes: `--flag mandatory`.
    pub fn mandatory(&self) -> bool {
        self.flags.contains(&Flag::Mandatory)
    }

    /// The publish time travels in a header: the body is the user's file or JSON.
    pub fn stamp_in_header(&self) -> bool {
        self.json_body || !self.body_files.is_empty()
    }
}

/// A publish rate: 0 (no limit) or a positive, finite number of messages per second.
fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!(
            "{text:?} is not a rate: expected 0 (no limit) or a positive number of messages per second"
        )),
    }
}

/// `RATE:SECONDS`
fn parse_rate_step(text: &str) -> Result<Step, String> {
    let (value, seconds) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected RATE:SECONDS, such as 100:60"))?;
    step(parse_rate(value)?, seconds)
}

/// `OCTETS:SECONDS`, at least 8 octets.
fn parse_size_step(text: &str) -> Result<Step, String> {
    let bad =
        || format!("{text:?}: expected OCTETS:SECONDS with at least 8 octets, such as 1000:30");
    let (value, seconds) = text.split_once(':').ok_or_else(bad)?;
    match value.trim().parse::<u32>() {
        Ok(size) if size >= 8 => step(f64::from(size), seconds),
        _ => Err(bad()),
    }
}

fn step(value: f64, seconds: &str) -> Result<Step, String> {
    let lasts = parse_seconds(seconds).map_err(|e| e.to_string())?;
    if lasts.is_zero() {
        return Err(format!("{seconds:?}: a step lasts more than 0 seconds"));
    }
    Ok(Step { value, lasts })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        perf: PerfArgs,
    }

    fn parse(args: &str) -> PerfArgs {
        let argv = std::iter::once("perf").chain(args.split_whitespace());
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{args}: {e}"))
            .perf
    }

    #[test]
    fn perftest_long_flags_mean_what_the_short_ones_do() {
        let long = parse(
            "--producers 2 --consumers 3 --size 100 --confirm 10 --qos 50 --multi-ack-every 5 \
             --rate 1000 --time 7 --pmessages 300 --queue q --exchange ex --routing-key k \
             --flag persistent --producer-channel-count 2 --consumer-channel-count 4",
        );
        let short = parse(
            "-x 2 -y 3 -s 100 -c 10 -q 50 -A 5 -r 1000 -z 7 -C 300 -u q -e ex -k k -f persistent \
             -X 2 -Y 4",
        );
        let ours = parse(
            "--producers 2 --consumers 3 --size 100 --confirm 10 --prefetch 50 --multi-ack 5 \
             --rate 1000 --duration 7 --count 300 --queue q --exchange ex --routing-key k \
             --flag persistent -X 2 -Y 4",
        );
        assert_eq!(long, short);
        assert_eq!(long, ours);
        assert!(long.persistent());
        assert_eq!(long.duration, Some(Duration::from_secs(7)));
    }

    #[test]
    fn steps_and_lists_parse() {
        let args = parse(
            "--variable-rate 100:60 --variable-rate 0:1.5 --variable-size 1000:30 -f persistent,mandatory",
        );
        assert_eq!(
            args.variable_rate,
            [
                Step {
                    value: 100.0,
                    lasts: Duration::from_secs(60)
                },
                Step {
                    value: 0.0,
                    lasts: Duration::from_millis(1500)
                },
            ]
        );
        assert_eq!(args.variable_size[0].value, 1000.0);
        assert!(args.persistent() && args.mandatory());
        let args = parse("--body a.bin,b.bin -B c.bin");
        assert_eq!(args.body_files.len(), 3);
        assert!(args.stamp_in_header());
        for bad in [
            "--variable-rate 100",
            "--variable-rate -1:5",
            "--variable-rate 5:0",
            "--variable-size 4:10",
            "--variable-rate 5:inf",
        ] {
            let argv = std::iter::once("perf").chain(bad.split_whitespace());
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
    }
}

//! `amqp consume` and `amqp get`: print messages from a queue.

use std::io::Write;
use std::time::Duration;

use amqp_client::{BasicProperties, ConsumeOptions, Delivery};
use clap::Args;
use futures_util::StreamExt;
use tokio::time::Instant;

use crate::broker::Session;
use crate::duration::parse_seconds;
use crate::error::{CliError, Result};
use crate::json::{self, Envelope};

/// How a message is printed.
#[derive(Args, Clone, Copy, Debug, Default)]
#[command(next_help_heading = "Output")]
pub struct OutputArgs {
    /// One JSON object per message and line: body (UTF-8 or base64), every property, every
    /// header with its AMQP type, exchange, routing key, redelivered flag
    #[arg(long, conflicts_with = "verbose")]
    pub json: bool,
    /// A line with the exchange, routing key and properties before each body
    #[arg(short, long)]
    pub verbose: bool,
}

impl OutputArgs {
    /// Writes one message to `out`: its JSON line, or its body (after a description line with
    /// `--verbose`) and a line end.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn print(
        &self,
        out: &mut impl Write,
        envelope: &Envelope<'_>,
        properties: &BasicProperties,
        body: &[u8],
    ) -> std::io::Result<()> {
        if self.json {
            let line = json::message_json(envelope, properties, body);
            writeln!(out, "{line}")?;
        } else {
            if self.verbose {
                let line = json::envelope_text(envelope, properties, body.len());
                writeln!(out, "{line}")?;
            }
            out.write_all(body)?;
            writeln!(out)?;
        }
        out.flush()
    }
}

/// `amqp consume`
#[derive(Args, Clone, Debug)]
pub struct ConsumeArgs {
    /// Queue to consume from
    #[arg(short, long, value_name = "QUEUE")]
    pub queue: String,
    /// Stop after N messages (default: run until interrupted)
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// Let the broker consider messages settled when sent (no acks, no redelivery; with
    /// --count, what the broker sent ahead of the last message is lost)
    #[arg(long)]
    pub no_ack: bool,
    /// Unacknowledged messages the broker may send ahead (basic.qos; 0: no limit)
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub prefetch: u16,
    /// Stop after this many seconds; with --count, getting fewer messages is an error
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds,
          allow_negative_numbers = true)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    #[allow(missing_docs)] // clap's flatten: the fields carry the docs
    pub output: OutputArgs,
}

/// Runs `amqp consume`: prints each delivery, then acknowledges it.
///
/// # Errors
/// Connection and broker errors (a missing queue names the queue and 404), and
/// [`CliError::TooFew`] when `--count` was not reached within `--timeout`.
pub async fn consume(url: &str, args: ConsumeArgs) -> Result<()> {
    let session = Session::open(url).await?;
    let result = consume_on(&session, &args).await;
    session.close().await;
    result
}

async fn consume_on(session: &Session, args: &ConsumeArgs) -> Result<()> {
    let channel = session.channel().await?;
    let queue = &args.queue;
    // No more in flight than --count wants: the rest would come back marked redelivered.
    let prefetch = match (args.count, args.prefetch) {
        (Some(n), 0) => u16::try_from(n).unwrap_or(u16::MAX),
        (Some(n), p) => u16::try_from(n).unwrap_or(u16::MAX).min(p),
        (None, p) => p,
    };
    channel
        .qos(prefetch, false)
        .await
        .map_err(session.failed("basic.qos"))?;
    let options = ConsumeOptions {
        no_ack: args.no_ack,
        ..Default::default()
    };
    let mut consumer = channel
        .consume(queue, options)
        .await
        .map_err(session.failed(format!("consume from queue {queue:?}")))?;
    let deadline = args.timeout.map(|after| Instant::now() + after);
    let mut got = 0u64;
    let mut stdout = std::io::stdout().lock();
    while args.count.is_none_or(|n| got < n) {
        let next = async {
            tokio::select! {
                d = consumer.next() => Some(d),
                _ = tokio::signal::ctrl_c() => None,
                () = sleep_until(deadline) => None,
            }
        };
        let Some(Some(delivery)) = next.await else {
            break;
        };
        let delivery = delivery.map_err(session.failed(format!("consume from queue {queue:?}")))?;
        args.output.print(
            &mut stdout,
            &Envelope::of(&delivery),
            &delivery.properties,
            &delivery.body,
        )?;
        if !args.no_ack {
            delivery
                .ack()
                .await
                .map_err(session.failed(format!("ack a message from queue {queue:?}")))?;
        }
        got += 1;
    }
    // Cancelling first hands what the consumer holds back to the queue.
    let _ = consumer.cancel().await;
    match (args.count, deadline) {
        (Some(want), Some(_)) if got < want => Err(CliError::TooFew {
            queue: queue.clone(),
            got,
            want,
            after: args.timeout.unwrap_or_default(),
        }),
        _ => Ok(()),
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `amqp get`
#[derive(Args, Clone, Debug)]
pub struct GetArgs {
    /// Queue to take messages from
    #[arg(short, long, value_name = "QUEUE")]
    pub queue: String,
    /// Take up to N messages
    #[arg(short = 'n', long, default_value_t = 1, value_name = "N")]
    pub count: u64,
    /// Put the messages back (reject with requeue; they come back marked redelivered)
    #[arg(long)]
    pub requeue: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // clap's flatten: the fields carry the docs
    pub output: OutputArgs,
}

/// Runs `amqp get`: `basic.get` up to `--count` times, printing each message; says so on
/// standard error when the queue is empty.
///
/// # Errors
/// Connection and broker errors (a missing queue names the queue and 404).
pub async fn get(url: &str, args: GetArgs) -> Result<()> {
    let session = Session::open(url).await?;
    let result = get_on(&session, &args).await;
    session.close().await;
    result
}

async fn get_on(session: &Session, args: &GetArgs) -> Result<()> {
    let channel = session.channel().await?;
    let queue = &args.queue;
    let mut stdout = std::io::stdout().lock();
    let mut got = 0;
    let mut held: Vec<Delivery> = Vec::new();
    while got < args.count {
        let message = channel
            .get(queue, false)
            .await
            .map_err(session.failed(format!("get from queue {queue:?}")))?;
        let Some(message) = message else {
            break;
        };
        let delivery = message.delivery;
        let envelope = Envelope {
            message_count: Some(message.message_count),
            ..Envelope::of(&delivery)
        };
        args.output
            .print(&mut stdout, &envelope, &delivery.properties, &delivery.body)?;
        got += 1;
        if args.requeue {
            // Requeued at the end, or the next get would take the same message again.
            held.push(delivery);
        } else {
            delivery
                .ack()
                .await
                .map_err(session.failed(format!("ack a message from queue {queue:?}")))?;
        }
    }
    for delivery in held {
        delivery
            .reject(true)
            .await
            .map_err(session.failed(format!("requeue a message to queue {queue:?}")))?;
    }
    if got == 0 {
        eprintln!("amqp: queue {queue:?} is empty");
    }
    Ok(())
}

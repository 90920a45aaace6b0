//! `amqp consume` and `amqp get`: print messages from a queue, or from an exchange through a
//! queue bound to it, or hand each to a command.

mod exec;
mod get;
pub mod offset;
mod source;

use std::io::Write;
use std::time::Duration;

use amqp_client::{BasicProperties, ConsumeOptions, Delivery, FieldValue};
use clap::Args;
use futures_util::StreamExt;
use tokio::time::Instant;

pub use exec::EXIT_REQUEUE;
use exec::{Exec, Verdict};
pub use get::{GetArgs, get};
use source::{Source, Spec};

use crate::broker::Session;
use crate::duration::parse_seconds;
use crate::error::{CliError, Result};
use crate::headers::{self, Header};
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
    /// Queue to consume from. With --exchange: a durable queue of that name, bound to the
    /// exchange and shared by every consumer that names it (they take turns at its messages)
    #[arg(
        short,
        long,
        value_name = "QUEUE",
        required_unless_present = "exchange"
    )]
    pub queue: Option<String>,
    /// Consume what is published to this exchange, through a queue bound to it: a
    /// server-named exclusive one unless --queue names a shared one. What the command
    /// created is removed on exit
    #[arg(short, long, value_name = "EXCHANGE")]
    pub exchange: Option<String>,
    /// Binding key for --exchange; repeat for more (default: the empty key, which fanout
    /// exchanges ignore)
    #[arg(
        short = 'k',
        long = "routing-key",
        value_name = "KEY",
        requires = "exchange"
    )]
    pub routing_keys: Vec<String>,
    /// Keep the --queue declared for --exchange on exit (by default the last consumer to
    /// leave deletes it when it is empty)
    #[arg(long, requires = "queue", requires = "exchange")]
    pub keep_queue: bool,
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
    /// A consumer argument such as x-priority:int=10, typed as publish --header; repeat for
    /// more
    #[arg(long = "arg", value_name = "KEY[:TYPE]=VALUE", value_parser = headers::parse_header)]
    pub arguments: Vec<Header>,
    /// Where a stream consumer starts (x-stream-offset): first, last, next, an offset N,
    /// @POSIX_SECONDS, YYYY-MM-DDTHH:MM:SSZ, or an age such as 7D, 12h, 30m
    #[arg(long, value_name = "WHERE", value_parser = offset::parse)]
    pub offset: Option<FieldValue>,
    /// Run CMD with `sh -c` for each message instead of printing it: the body on its
    /// standard input, the properties in AMQP_* variables (AMQP_ROUTING_KEY,
    /// AMQP_CONTENT_TYPE, AMQP_HEADERS as JSON, ...). Exit status 0 acks the message, 75
    /// (or death by a signal) requeues it, any other rejects it
    #[arg(long, value_name = "CMD", conflicts_with_all = ["json", "verbose", "no_ack"])]
    pub exec: Option<String>,
    /// Seconds a --exec command may run; past that it is killed and its message requeued
    #[arg(long, value_name = "SECONDS", default_value = "300", value_parser = parse_seconds,
          allow_negative_numbers = true, requires = "exec")]
    pub exec_timeout: Duration,
    /// Acknowledge nothing: hold every message printed and put them all back on exit (nack
    /// with requeue), leaving the queue as it was. At most --prefetch are held
    #[arg(long, conflicts_with_all = ["no_ack", "exec"])]
    pub requeue_on_exit: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // clap's flatten: the fields carry the docs
    pub output: OutputArgs,
}

impl ConsumeArgs {
    /// The prefetch to ask for: no more in flight than --count wants (the rest would come
    /// back marked redelivered).
    fn prefetch(&self) -> u16 {
        match (self.count, self.prefetch) {
            (Some(n), 0) => u16::try_from(n).unwrap_or(u16::MAX),
            (Some(n), p) => u16::try_from(n).unwrap_or(u16::MAX).min(p),
            (None, p) => p,
        }
    }

    /// `basic.consume`'s options: --no-ack, --arg and --offset.
    fn options(&self) -> ConsumeOptions {
        let mut arguments = headers::table(&self.arguments).unwrap_or_default();
        if let Some(offset) = &self.offset {
            arguments.insert(offset::STREAM_OFFSET, offset.clone());
        }
        ConsumeOptions {
            no_ack: self.no_ack,
            arguments,
            ..Default::default()
        }
    }

    fn source(&self) -> Spec<'_> {
        Spec {
            queue: self.queue.as_deref(),
            exchange: self.exchange.as_deref(),
            routing_keys: &self.routing_keys,
            keep_queue: self.keep_queue,
        }
    }
}

/// Runs `amqp consume`: prints each delivery (or runs --exec for it), then settles it.
///
/// # Errors
/// Connection and broker errors (a missing queue names the queue and 404), and
/// [`CliError::TooFew`] when `--count` was not reached within `--timeout`.
pub async fn consume(url: &str, args: ConsumeArgs) -> Result<()> {
    let session = Session::open(url).await?;
    let result = match Source::prepare(&session, args.source()).await {
        Ok(source) => {
            let consumed = consume_from(&session, &source.queue, &args).await;
            source.finish(&session).await;
            consumed
        }
        Err(e) => Err(e),
    };
    session.close().await;
    result
}

async fn consume_from(session: &Session, queue: &str, args: &ConsumeArgs) -> Result<()> {
    let channel = session.channel().await?;
    channel
        .qos(args.prefetch(), false)
        .await
        .map_err(session.failed("basic.qos"))?;
    let mut consumer = channel
        .consume(queue, args.options())
        .await
        .map_err(session.failed(format!("consume from queue {queue:?}")))?;
    let mut reader = Reader {
        session,
        queue,
        args,
        exec: args.exec.clone().map(|command| Exec {
            command,
            timeout: args.exec_timeout,
        }),
        held: Vec::new(),
        got: 0,
    };
    let deadline = args.timeout.map(|after| Instant::now() + after);
    let read = reader.read(&mut consumer, deadline).await;
    // Cancelling first hands what the consumer holds back to the queue.
    let _ = consumer.cancel().await;
    let requeued = reader.requeue_held().await;
    read?;
    requeued?;
    match (args.count, args.timeout) {
        (Some(want), Some(after)) if reader.got < want => Err(CliError::TooFew {
            queue: queue.to_owned(),
            got: reader.got,
            want,
            after,
        }),
        _ => Ok(()),
    }
}

/// The state of one consume.
struct Reader<'a> {
    session: &'a Session,
    queue: &'a str,
    args: &'a ConsumeArgs,
    exec: Option<Exec>,
    /// --requeue-on-exit: what was printed and is put back at the end.
    held: Vec<Delivery>,
    got: u64,
}

impl Reader<'_> {
    /// Takes deliveries until --count, the deadline, Ctrl-C, or the consumer's end (cancelled
    /// by the broker, or the connection closed).
    async fn read(
        &mut self,
        consumer: &mut amqp_client::Consumer,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let interrupted = tokio::signal::ctrl_c();
        tokio::pin!(interrupted);
        let mut stdout = std::io::stdout().lock();
        while self.args.count.is_none_or(|n| self.got < n) {
            let next = tokio::select! {
                d = consumer.next() => d,
                _ = &mut interrupted => return Ok(()),
                () = sleep_until(deadline) => return Ok(()),
            };
            let Some(delivery) = next else {
                return Ok(());
            };
            let delivery = delivery.map_err(self.failed("consume from"))?;
            let verdict = match &self.exec {
                Some(exec) => tokio::select! {
                    v = exec.run(&delivery) => v?,
                    // The command is killed (dropped) and its message goes back.
                    _ = &mut interrupted => {
                        self.settle(delivery, Verdict::Requeue).await?;
                        return Ok(());
                    }
                },
                None => {
                    let envelope = Envelope::of(&delivery);
                    let props = &delivery.properties;
                    self.args
                        .output
                        .print(&mut stdout, &envelope, props, &delivery.body)?;
                    Verdict::Ack
                }
            };
            self.got += 1;
            self.settle(delivery, verdict).await?;
            if self.holding_all() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// True when --requeue-on-exit holds as many messages as the broker will send unacked.
    fn holding_all(&self) -> bool {
        let limit = usize::from(self.args.prefetch());
        let full = self.args.requeue_on_exit && limit > 0 && self.held.len() >= limit;
        if full && self.args.count.is_none_or(|n| self.got < n) {
            eprintln!(
                "amqp: holding {limit} unacknowledged messages (--prefetch); putting them back"
            );
        }
        full
    }

    /// Acks, requeues or rejects `delivery` (or holds it for --requeue-on-exit).
    async fn settle(&mut self, delivery: Delivery, verdict: Verdict) -> Result<()> {
        if self.args.no_ack {
            return Ok(());
        }
        if self.args.requeue_on_exit {
            self.held.push(delivery);
            return Ok(());
        }
        let settled = match verdict {
            Verdict::Ack => delivery.ack().await,
            Verdict::Requeue => delivery.nack(true).await,
            Verdict::Reject => delivery.reject(false).await,
        };
        settled.map_err(self.failed("settle a message from"))
    }

    /// Puts back every held message, in the order they came.
    async fn requeue_held(&mut self) -> Result<()> {
        for delivery in self.held.drain(..) {
            delivery.nack(true).await.map_err(
                self.session
                    .failed(format!("requeue a message to queue {:?}", self.queue)),
            )?;
        }
        Ok(())
    }

    fn failed(&self, action: &str) -> impl FnOnce(amqp_client::Error) -> CliError {
        self.session
            .failed(format!("{action} queue {:?}", self.queue))
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

//! `amqp publish`: one message from `--body` or `--file`, or one per line of standard input.

use std::collections::VecDeque;
use std::path::PathBuf;

use amqp_client::{
    BasicProperties, Channel, Confirm, Confirmation, PublishOptions, Returned, ShortStr,
};
use bytes::Bytes;
use clap::Args;
use futures_util::{FutureExt as _, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::broker::{self, Session};
use crate::error::{CliError, Result, explain, meaning};
use crate::headers::{self, Header};

/// Confirms awaited at once while publishing lines from standard input with `--confirm`.
const CONFIRM_PIPELINE: usize = 1000;

/// The basic properties, one flag each, shared by `publish` and `rpc`.
#[derive(Args, Clone, Debug, Default)]
#[command(next_help_heading = "Message properties")]
pub struct PropertyArgs {
    /// MIME type of the body, such as application/json
    #[arg(long, value_name = "MIME")]
    pub content_type: Option<String>,
    /// Encoding of the body, such as gzip
    #[arg(long, value_name = "ENCODING")]
    pub content_encoding: Option<String>,
    /// Correlation id, to match a reply to its request
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Queue a reply should go to
    #[arg(long, value_name = "QUEUE")]
    pub reply_to: Option<String>,
    /// Per-message TTL in milliseconds
    #[arg(long, value_name = "MS")]
    pub expiration: Option<u64>,
    /// Application message id
    #[arg(long, value_name = "ID")]
    pub message_id: Option<String>,
    /// Timestamp in POSIX seconds, or `now`
    #[arg(long, value_name = "SECONDS", value_parser = parse_timestamp)]
    pub timestamp: Option<u64>,
    /// Message type name
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
    /// User id; RabbitMQ checks it equals the connection's user
    #[arg(long, value_name = "USER")]
    pub user_id: Option<String>,
    /// Application id
    #[arg(long, value_name = "APP")]
    pub app_id: Option<String>,
    /// Cluster id (reserved by AMQP 0-9-1; RabbitMQ passes it through)
    #[arg(long, value_name = "ID")]
    pub cluster_id: Option<String>,
    /// Priority, 0 to 255 (a priority queue uses 0 to its x-max-priority)
    #[arg(long, value_name = "N")]
    pub priority: Option<u8>,
    /// Delivery mode 2: kept on disk by durable queues
    #[arg(long)]
    pub persistent: bool,
    /// A header, `key=value` or typed as `key:type=value`; repeat for more. Types: string,
    /// bool, i8, u8, i16, u16, i32 (int), u32, i64 (long), f32, f64, decimal, bytes (base64,
    /// or hex:0a0b), timestamp (seconds or now), void (`key:void`), table and array (JSON)
    #[arg(long = "header", short = 'H', value_name = "KEY[:TYPE]=VALUE", value_parser = parse_header)]
    pub headers: Vec<Header>,
}

fn parse_header(s: &str) -> std::result::Result<Header, headers::HeaderError> {
    headers::parse_header(s)
}

fn parse_timestamp(s: &str) -> std::result::Result<u64, String> {
    headers::parse_timestamp(s).map_err(|_| "expected POSIX seconds or `now`".to_owned())
}

/// A short-string property from a flag, refusing more than 255 octets.
fn short(flag: &'static str, value: Option<&String>) -> Result<Option<ShortStr>> {
    value
        .map(|v| ShortStr::try_from(v.as_str()))
        .transpose()
        .map_err(|e| CliError::TooLong { flag, len: e.0 })
}

impl PropertyArgs {
    /// The properties the flags ask for.
    ///
    /// # Errors
    /// [`CliError::Usage`] for a text property longer than 255 octets.
    pub fn properties(&self) -> Result<BasicProperties> {
        Ok(BasicProperties {
            content_type: short("content-type", self.content_type.as_ref())?,
            content_encoding: short("content-encoding", self.content_encoding.as_ref())?,
            headers: headers::table(&self.headers),
            delivery_mode: self.persistent.then_some(BasicProperties::PERSISTENT),
            priority: self.priority,
            correlation_id: short("correlation-id", self.correlation_id.as_ref())?,
            reply_to: short("reply-to", self.reply_to.as_ref())?,
            expiration: short(
                "expiration",
                self.expiration.map(|e| e.to_string()).as_ref(),
            )?,
            message_id: short("message-id", self.message_id.as_ref())?,
            timestamp: self.timestamp,
            kind: short("type", self.kind.as_ref())?,
            user_id: short("user-id", self.user_id.as_ref())?,
            app_id: short("app-id", self.app_id.as_ref())?,
            cluster_id: short("cluster-id", self.cluster_id.as_ref())?,
        })
    }
}

/// `amqp publish`
#[derive(Args, Clone, Debug)]
pub struct PublishArgs {
    /// Exchange to publish to; the default exchange ("") routes to the queue named by the
    /// routing key
    #[arg(short, long, default_value = "", value_name = "EXCHANGE")]
    pub exchange: String,
    /// Routing key
    #[arg(short = 'k', long, default_value = "", value_name = "KEY")]
    pub routing_key: String,
    /// The body of one message
    #[arg(short, long, value_name = "TEXT", conflicts_with = "file")]
    pub body: Option<String>,
    /// Publish the contents of FILE as one message
    #[arg(short, long, value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Ask the broker to return the message when no queue takes it, and fail if it does
    #[arg(long)]
    pub mandatory: bool,
    /// Wait for publisher confirms; fail unless every message was confirmed
    #[arg(long)]
    pub confirm: bool,
    #[command(flatten)]
    #[allow(missing_docs)] // clap's flatten: the fields carry the docs
    pub properties: PropertyArgs,
}

/// What became of the publishes.
#[derive(Debug, Default)]
struct Tally {
    total: u64,
    failed: u64,
    first_failure: Option<String>,
}

impl Tally {
    fn fail(&mut self, detail: String) {
        self.failed += 1;
        self.first_failure.get_or_insert(detail);
    }

    fn settle(&mut self, outcome: amqp_client::Result<Confirmation>) {
        match outcome {
            Ok(Confirmation::Ack | Confirmation::NotRequested) => {}
            Ok(Confirmation::Nack) => self.fail("the broker nacked a message".into()),
            Ok(Confirmation::Returned(r)) => self.fail(returned_text(&r)),
            Ok(_) => self.fail("unknown confirmation".into()),
            Err(e) => self.fail(explain(&e)),
        }
    }
}

/// "returned by exchange "x" for routing key "k": 312 NO_ROUTE (...)"
fn returned_text(r: &Returned) -> String {
    format!(
        "returned for exchange {:?} and routing key {:?}: {} ({})",
        r.exchange.to_string(),
        r.routing_key.to_string(),
        r.reply_code,
        meaning(r.reply_code)
    )
}

/// Runs `amqp publish`.
///
/// # Errors
/// Connection and broker errors; [`CliError::NotConfirmed`] when `--confirm` or
/// `--mandatory` saw a message nacked or returned.
pub async fn run(url: &str, args: PublishArgs) -> Result<()> {
    let properties = args.properties.properties()?;
    let single = match (&args.body, &args.file) {
        (Some(body), _) => Some(Bytes::from(body.clone())),
        (None, Some(path)) => Some(Bytes::from(std::fs::read(path).map_err(|source| {
            CliError::Read {
                path: path.clone(),
                source,
            }
        })?)),
        (None, None) => None,
    };
    let mut config = broker::config(url)?;
    // Without confirms nothing tells what a lost connection had not written: fail then,
    // rather than reconnect and report success.
    config.recovery.enabled = args.confirm;
    let session = Session::open_with(config).await?;
    let tally = publish_all(&session, &args, properties, single).await;
    let host = session.host.clone();
    let closed = session.close_checked("publish").await;
    let tally = tally?;
    closed?;
    match tally.first_failure {
        None => Ok(()),
        Some(detail) => Err(CliError::NotConfirmed {
            failed: tally.failed,
            total: tally.total,
            host,
            detail,
        }),
    }
}

async fn publish_all(
    session: &Session,
    args: &PublishArgs,
    properties: BasicProperties,
    single: Option<Bytes>,
) -> Result<Tally> {
    let channel = session.channel().await?;
    session.require_exchange(&channel, &args.exchange).await?;
    if args.confirm {
        channel
            .confirm_select()
            .await
            .map_err(session.failed("confirm.select"))?;
    }
    let mut returns = if args.mandatory && !args.confirm {
        let listen = channel.returns(1024).await;
        Some(listen.map_err(session.failed("listen for returns"))?)
    } else {
        None
    };
    let publisher = Publisher {
        session,
        channel: &channel,
        args,
        properties,
    };
    let mut tally = match single {
        Some(body) => publisher.one(body).await?,
        None => publisher.lines().await?,
    };
    if let Some(returns) = returns.as_mut() {
        // Any synchronous round trip will do: the broker sends a publish's basic.return
        // before it answers a later method of the channel. (Not channel.close: after sending
        // it, the spec has us discard everything but close-ok, returns included.)
        channel
            .qos(0, false)
            .await
            .map_err(session.failed("basic.qos"))?;
        while let Some(Some(r)) = returns.next().now_or_never() {
            tally.fail(returned_text(&r));
        }
    }
    Ok(tally)
}

struct Publisher<'a> {
    session: &'a Session,
    channel: &'a Channel,
    args: &'a PublishArgs,
    properties: BasicProperties,
}

impl Publisher<'_> {
    async fn publish(&self, body: Bytes) -> Result<Confirm> {
        let options = PublishOptions {
            mandatory: self.args.mandatory,
        };
        let target = format!(
            "publish to exchange {:?} with routing key {:?}",
            self.args.exchange, self.args.routing_key
        );
        self.channel
            .publish(
                &self.args.exchange,
                &self.args.routing_key,
                options,
                self.properties.clone(),
                body,
            )
            .await
            .map_err(self.session.failed(target))
    }

    async fn one(&self, body: Bytes) -> Result<Tally> {
        let confirm = self.publish(body).await?;
        let mut tally = Tally {
            total: 1,
            ..Tally::default()
        };
        if self.args.confirm {
            tally.settle(confirm.await);
        }
        Ok(tally)
    }

    /// One message per line of standard input (without its line end), confirms pipelined.
    async fn lines(&self) -> Result<Tally> {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut pending = VecDeque::new();
        let mut tally = Tally::default();
        while let Some(line) = lines.next_line().await.map_err(|source| CliError::Read {
            path: "standard input".into(),
            source,
        })? {
            let confirm = self.publish(Bytes::from(line)).await?;
            tally.total += 1;
            if self.args.confirm {
                pending.push_back(confirm);
                if pending.len() >= CONFIRM_PIPELINE {
                    if let Some(oldest) = pending.pop_front() {
                        tally.settle(oldest.await);
                    }
                }
            }
        }
        for confirm in pending {
            tally.settle(confirm.await);
        }
        Ok(tally)
    }
}

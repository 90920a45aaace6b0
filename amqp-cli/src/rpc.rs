//! `amqp rpc`: send a request and print the reply, through RabbitMQ's direct reply-to.
//!
//! The wire sequence, on one channel:
//!
//! ```text
//! basic.consume queue=amq.rabbitmq.reply-to no-ack   (must come before the publish)
//! confirm.select
//! basic.publish mandatory reply-to=amq.rabbitmq.reply-to correlation-id=ID
//!    ← basic.return 312 when no queue is bound for the routing key
//!    ← basic.ack
//!    ← basic.deliver (the reply, matched by correlation-id)
//! ```

use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use amqp_client::{
    BasicProperties, Confirm, Confirmation, ConsumeOptions, Consumer, Delivery, PublishOptions,
    ShortStr,
};
use clap::Args;
use futures_util::StreamExt;

use crate::broker::Session;
use crate::consume::OutputArgs;
use crate::duration::parse_seconds;
use crate::error::{CliError, Result, explain, meaning};
use crate::json::Envelope;
use crate::publish::PropertyArgs;

/// RabbitMQ's pseudo-queue for direct reply-to.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// `amqp rpc`
#[derive(Args, Clone, Debug)]
pub struct RpcArgs {
    /// Exchange to send the request to
    #[arg(short, long, default_value = "", value_name = "EXCHANGE")]
    pub exchange: String,
    /// Routing key of the request (with the default exchange: the server's queue)
    #[arg(short = 'k', long, value_name = "KEY")]
    pub routing_key: String,
    /// The request body
    #[arg(short, long, value_name = "TEXT")]
    pub body: String,
    /// Seconds to wait for the reply
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = parse_seconds,
          allow_negative_numbers = true)]
    pub timeout: Duration,
    #[command(flatten)]
    #[allow(missing_docs)] // clap's flatten: the fields carry the docs
    pub output: OutputArgs,
    #[command(flatten)]
    #[allow(missing_docs)] // clap's flatten: the fields carry the docs
    pub properties: PropertyArgs,
}

/// A correlation id unique enough for one process's requests.
fn correlation_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("amqp-rpc-{}-{nanos:x}", std::process::id())
}

/// Runs `amqp rpc`.
///
/// # Errors
/// Connection and broker errors; [`CliError::NotConfirmed`] when no queue takes the request;
/// [`CliError::NoReply`] when no reply comes within `--timeout`.
pub async fn run(url: &str, args: RpcArgs) -> Result<()> {
    if args.properties.reply_to.is_some() {
        return Err(CliError::Usage(
            "rpc sets reply-to itself (direct reply-to); drop --reply-to",
        ));
    }
    let id = args
        .properties
        .correlation_id
        .clone()
        .unwrap_or_else(correlation_id);
    let mut properties = args.properties.properties()?;
    properties.reply_to = Some(ShortStr::from_static(DIRECT_REPLY_TO));
    let id = ShortStr::try_from(id).map_err(|e| CliError::TooLong {
        flag: "correlation-id",
        len: e.0,
    })?;
    properties.correlation_id = Some(id.clone());
    let session = Session::open(url).await?;
    let result = call(&session, &args, properties, id).await;
    session.close().await;
    result
}

/// Subscribes to direct reply-to, publishes the request, waits for its reply and prints it.
async fn call(
    session: &Session,
    args: &RpcArgs,
    properties: BasicProperties,
    id: ShortStr,
) -> Result<()> {
    let request = format!(
        "exchange {:?} routing key {:?}",
        args.exchange, args.routing_key
    );
    let channel = session.channel().await?;
    let options = ConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut replies = channel
        .consume(DIRECT_REPLY_TO, options)
        .await
        .map_err(session.failed("consume from amq.rabbitmq.reply-to"))?;
    channel
        .confirm_select()
        .await
        .map_err(session.failed("confirm.select"))?;
    let publish = channel
        .publish(
            &args.exchange,
            &args.routing_key,
            PublishOptions { mandatory: true },
            properties,
            args.body.clone(),
        )
        .await
        .map_err(session.failed(format!("publish to {request}")))?;
    // --timeout bounds the whole call: the broker's confirm of the request, then the reply.
    let after = args.timeout;
    let started = tokio::time::Instant::now();
    match tokio::time::timeout(after, request_taken(session, publish, &request)).await {
        Ok(taken) => taken?,
        Err(_) => return Err(CliError::NoReply { request, after }),
    }
    let left = after.saturating_sub(started.elapsed());
    let reply = match tokio::time::timeout(left, reply_to(session, &mut replies, &id)).await {
        Ok(Ok(Some(reply))) => reply,
        Ok(Err(e)) => return Err(e),
        Ok(Ok(None)) | Err(_) => return Err(CliError::NoReply { request, after }),
    };
    let mut stdout = std::io::stdout().lock();
    args.output.print(
        &mut stdout,
        &Envelope::of(&reply),
        &reply.properties,
        &reply.body,
    )?;
    stdout.flush()?;
    Ok(())
}

/// Waits for the request's confirm: an error unless the broker acked it (a return means no
/// queue is bound for the routing key).
async fn request_taken(session: &Session, publish: Confirm, request: &str) -> Result<()> {
    let not_taken = |detail: String| CliError::NotConfirmed {
        failed: 1,
        total: 1,
        host: session.host.clone(),
        detail,
    };
    match publish.await {
        Ok(Confirmation::Ack | Confirmation::NotRequested) => Ok(()),
        Ok(Confirmation::Returned(r)) => {
            let code = r.reply_code;
            Err(not_taken(format!(
                "request to {request} returned: {code} ({})",
                meaning(code)
            )))
        }
        Ok(_) => Err(not_taken("the broker nacked the request".into())),
        Err(e) => Err(not_taken(explain(&e))),
    }
}

/// The first reply carrying correlation id `id`; `None` if the consumer ends first.
async fn reply_to(
    session: &Session,
    replies: &mut Consumer,
    id: &ShortStr,
) -> Result<Option<Delivery>> {
    while let Some(reply) = replies.next().await {
        let reply = reply.map_err(session.failed("wait for the reply"))?;
        // A late reply to an earlier request of the same channel is not ours.
        if reply.properties.correlation_id.as_ref() == Some(id) {
            return Ok(Some(reply));
        }
    }
    Ok(None)
}

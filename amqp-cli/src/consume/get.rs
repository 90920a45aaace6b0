//! `amqp get`: take messages from a queue one at a time (`basic.get`).

use amqp_client::Delivery;
use clap::Args;

use super::OutputArgs;
use crate::broker::Session;
use crate::error::Result;
use crate::json::Envelope;

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

//! The scenarios through amqprs 2, driven as its README shows: `basic_publish(..).await` only
//! queues the frames for amqprs's writer task, so a plain loop of awaited publishes is already
//! pipelined (the API takes the body as an owned `Vec<u8>`, so each publish copies it).
//! Publisher confirms arrive through a registered `ChannelCallback::publish_ack`, which here
//! records the highest tag acked; the publisher waits while 1,000 are unconfirmed.
//! Consumers are `basic_consume_rx` channels, acked with `basic_ack`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use amqprs::callbacks::{ChannelCallback, DefaultChannelCallback, DefaultConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, QueueDeclareArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use async_trait::async_trait;
use tokio::sync::watch;

use crate::BoxError;
use crate::measure::{Meter, latency_histogram, record, with_percentiles};
use crate::scenario::{ACK_EVERY, CONFIRM_WINDOW, Job, Outcome, PREFETCH, RPC_IN_FLIGHT, Scenario};

pub(crate) async fn run(job: &Job, meter: &mut Meter) -> Result<Outcome, BoxError> {
    let conn = Connection::open(&open_arguments(&job.url)?).await?;
    conn.register_callback(DefaultConnectionCallback).await?;
    let channel = conn.open_channel(None).await?;
    let body = vec![b'x'; job.body_size];
    let outcome = match job.scenario {
        Scenario::Publish => {
            channel.register_callback(DefaultChannelCallback).await?;
            publish(job, &channel, &body, meter).await?
        }
        Scenario::Confirm | Scenario::Confirm4k | Scenario::Confirm1m | Scenario::BlastPublish => {
            confirm(job, &channel, &body, meter).await?
        }
        Scenario::Consume | Scenario::ConsumeMulti | Scenario::BlastConsume => {
            channel.register_callback(DefaultChannelCallback).await?;
            consume(job, &channel, meter).await?
        }
        Scenario::Rpc | Scenario::Rpc64 => {
            channel.register_callback(DefaultChannelCallback).await?;
            let server = conn.open_channel(None).await?;
            server.register_callback(DefaultChannelCallback).await?;
            rpc(job, &channel, &server, &body, meter).await?
        }
    };
    // Outside the timed phase: a failed goodbye does not void the figures.
    if let Err(e) = conn.close().await {
        eprintln!("warning: closing the connection: {e}");
    }
    Ok(outcome)
}

/// `amqp://user:pass@host:port/vhost` as amqprs's arguments (amqprs parses URIs only with
/// its `urispec` feature).
fn open_arguments(url: &str) -> Result<OpenConnectionArguments, BoxError> {
    let rest = url.strip_prefix("amqp://").ok_or("only amqp:// URLs")?;
    let (credentials, rest) = rest.split_once('@').unwrap_or(("guest:guest", rest));
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    let (authority, vhost) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse()?),
        None => (authority, 5672),
    };
    let vhost = match vhost {
        "" | "%2f" | "%2F" => "/".to_owned(),
        v => v.replace("%2f", "/").replace("%2F", "/"),
    };
    Ok(OpenConnectionArguments::new(host, port, user, password)
        .virtual_host(&vhost)
        .finish())
}

fn routing_key(job: &Job) -> &str {
    if job.queue.is_empty() {
        "blast"
    } else {
        &job.queue
    }
}

async fn publish(
    job: &Job,
    channel: &Channel,
    body: &[u8],
    meter: &mut Meter,
) -> Result<Outcome, BoxError> {
    let args = BasicPublishArguments::new("", routing_key(job));
    meter.start();
    for _ in 0..job.count {
        channel
            .basic_publish(BasicProperties::default(), body.to_vec(), args.clone())
            .await?;
    }
    let passive = QueueDeclareArguments::new(&job.queue)
        .passive(true)
        .finish();
    loop {
        let depth = channel
            .queue_declare(passive.clone())
            .await?
            .map_or(0, |(_, count, _)| count);
        if u64::from(depth) >= job.count {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(meter.stop(job.count))
}

/// Records the highest delivery tag the broker acked (RabbitMQ acks one queue's publishes in
/// order, so every tag up to it is confirmed).
struct Confirms {
    acked: watch::Sender<u64>,
}

#[async_trait]
impl ChannelCallback for Confirms {
    async fn close(&mut self, _: &Channel, _: CloseChannel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        Ok(())
    }
    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let tag = ack.delivery_tag();
        self.acked.send_if_modified(|acked| {
            let advanced = tag > *acked;
            *acked = (*acked).max(tag);
            advanced
        });
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        eprintln!("amqprs: publish nacked: {}", nack.delivery_tag());
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

async fn confirm(
    job: &Job,
    channel: &Channel,
    body: &[u8],
    meter: &mut Meter,
) -> Result<Outcome, BoxError> {
    let (acked, mut confirmed) = watch::channel(0u64);
    channel.register_callback(Confirms { acked }).await?;
    channel
        .confirm_select(ConfirmSelectArguments::default())
        .await?;
    let args = BasicPublishArguments::new("", routing_key(job));
    let window = CONFIRM_WINDOW as u64;
    meter.start();
    for published in 0..job.count {
        if published - *confirmed.borrow() >= window {
            confirmed
                .wait_for(|acked| published - *acked < window)
                .await?;
        }
        channel
            .basic_publish(BasicProperties::default(), body.to_vec(), args.clone())
            .await?;
    }
    confirmed.wait_for(|acked| *acked >= job.count).await?;
    Ok(meter.stop(job.count))
}

async fn consume(job: &Job, channel: &Channel, meter: &mut Meter) -> Result<Outcome, BoxError> {
    channel
        .basic_qos(BasicQosArguments::new(0, PREFETCH, false))
        .await?;
    let multiple = job.scenario == Scenario::ConsumeMulti;
    meter.start();
    let (_tag, mut deliveries) = channel
        .basic_consume_rx(BasicConsumeArguments::new(routing_key(job), "bench"))
        .await?;
    let mut received = 0;
    while received < job.count {
        let Some(message) = deliveries.recv().await else {
            return Err("the consumer ended early".into());
        };
        let tag = message
            .deliver
            .ok_or("a message without its deliver")?
            .delivery_tag();
        received += 1;
        if !multiple {
            channel
                .basic_ack(BasicAckArguments::new(tag, false))
                .await?;
        } else if received % ACK_EVERY == 0 || received == job.count {
            channel.basic_ack(BasicAckArguments::new(tag, true)).await?;
        }
    }
    Ok(meter.stop(received))
}

async fn rpc(
    job: &Job,
    client: &Channel,
    server: &Channel,
    body: &[u8],
    meter: &mut Meter,
) -> Result<Outcome, BoxError> {
    let (requests, _, _) = server
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await?
        .ok_or("no declare-ok")?;
    let (replies, _, _) = client
        .queue_declare(QueueDeclareArguments::exclusive_server_named())
        .await?
        .ok_or("no declare-ok")?;
    let mut consume = BasicConsumeArguments::new(&requests, "server");
    consume.no_ack = true;
    let (_, mut incoming) = server.basic_consume_rx(consume).await?;
    let responder = server.clone();
    let serve = tokio::spawn(async move {
        while let Some(request) = incoming.recv().await {
            let Some(props) = request.basic_properties else {
                continue;
            };
            let Some(reply_to) = props.reply_to() else {
                continue;
            };
            let mut properties = BasicProperties::default();
            if let Some(id) = props.correlation_id() {
                properties.with_correlation_id(id);
            }
            let args = BasicPublishArguments::new("", reply_to);
            let content = request.content.unwrap_or_default();
            if responder
                .basic_publish(properties, content, args)
                .await
                .is_err()
            {
                break;
            }
        }
    });
    let mut consume = BasicConsumeArguments::new(&replies, "client");
    consume.no_ack = true;
    let (_, mut answers) = client.basic_consume_rx(consume).await?;
    let in_flight = if job.scenario == Scenario::Rpc64 {
        RPC_IN_FLIGHT
    } else {
        1
    };
    let args = BasicPublishArguments::new("", &requests);
    let mut histogram = latency_histogram();
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    meter.start();
    let (mut sent, mut answered) = (0u64, 0u64);
    while answered < job.count {
        while sent < job.count && sent_at.len() < in_flight {
            sent_at.push_back(Instant::now());
            let properties = BasicProperties::default()
                .with_reply_to(&replies)
                .with_correlation_id(&sent.to_string())
                .finish();
            client
                .basic_publish(properties, body.to_vec(), args.clone())
                .await?;
            sent += 1;
        }
        if answers.recv().await.is_none() {
            return Err("the reply consumer ended early".into());
        }
        answered += 1;
        if let Some(at) = sent_at.pop_front() {
            record(&mut histogram, at.elapsed());
        }
    }
    let outcome = with_percentiles(meter.stop(answered), &histogram);
    serve.abort();
    Ok(outcome)
}

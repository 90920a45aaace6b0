//! The scenarios through lapin 4 (tokio runtime), driven as its examples and docs show:
//! `basic_publish(..).await` resolves once the frames are handed to lapin's I/O loop and
//! returns a `PublisherConfirm` to await for the broker's answer. To pipeline, up to 1,000
//! publish futures are kept in flight in a `FuturesUnordered` (each one publish, then its
//! confirm in confirm mode), so no message waits for the previous one. Consumers are
//! `Stream`s of deliveries acked with `delivery.ack(..)` (`multiple` for `consume-multi`).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::BoxError;
use crate::measure::{Meter, latency_histogram, record, with_percentiles};
use crate::scenario::{ACK_EVERY, CONFIRM_WINDOW, Job, Outcome, PREFETCH, RPC_IN_FLIGHT, Scenario};

pub(crate) async fn run(job: &Job, meter: &mut Meter) -> Result<Outcome, BoxError> {
    let conn = Connection::connect(&job.url, ConnectionProperties::default()).await?;
    let channel = conn.create_channel().await?;
    let body = vec![b'x'; job.body_size];
    let outcome = match job.scenario {
        Scenario::Publish => publish(job, &channel, &body, false, meter).await?,
        Scenario::Confirm | Scenario::Confirm4k | Scenario::Confirm1m | Scenario::BlastPublish => {
            publish(job, &channel, &body, true, meter).await?
        }
        Scenario::Consume | Scenario::ConsumeMulti | Scenario::BlastConsume => {
            consume(job, &channel, meter).await?
        }
        Scenario::Rpc | Scenario::Rpc64 => {
            let server = conn.create_channel().await?;
            rpc(job, &channel, &server, &body, meter).await?
        }
    };
    // Outside the timed phase: a failed goodbye does not void the figures.
    if let Err(e) = conn.close(200, "bye".into()).await {
        eprintln!("warning: closing the connection: {e}");
    }
    Ok(outcome)
}

fn routing_key(job: &Job) -> ShortString {
    if job.queue.is_empty() {
        "blast".into()
    } else {
        job.queue.as_str().into()
    }
}

async fn publish(
    job: &Job,
    channel: &Channel,
    body: &[u8],
    confirms: bool,
    meter: &mut Meter,
) -> Result<Outcome, BoxError> {
    if confirms {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
    }
    let routing_key = routing_key(job);
    let one = |routing_key: ShortString| async move {
        let confirm = channel
            .basic_publish(
                "".into(),
                routing_key,
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await?;
        if confirms {
            let confirmation = confirm.await?;
            if !confirmation.is_ack() {
                return Err(BoxError::from("publish not acked"));
            }
        }
        Ok::<(), BoxError>(())
    };
    meter.start();
    let mut in_flight = FuturesUnordered::new();
    for _ in 0..job.count {
        in_flight.push(one(routing_key.clone()));
        if in_flight.len() >= CONFIRM_WINDOW {
            in_flight.next().await.transpose()?;
        }
    }
    while let Some(done) = in_flight.next().await {
        done?;
    }
    if !confirms {
        wait_for_depth(channel, &job.queue, job.count).await?;
    }
    Ok(meter.stop(job.count))
}

/// Polls the queue's depth (a passive declare) until it holds `count` messages.
async fn wait_for_depth(channel: &Channel, queue: &str, count: u64) -> Result<(), BoxError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    while u64::from(
        channel
            .queue_declare(queue.into(), passive, FieldTable::default())
            .await?
            .message_count(),
    ) < count
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn consume(job: &Job, channel: &Channel, meter: &mut Meter) -> Result<Outcome, BoxError> {
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let multiple = job.scenario == Scenario::ConsumeMulti;
    meter.start();
    let mut consumer = channel
        .basic_consume(
            routing_key(job),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut received = 0;
    while received < job.count {
        let Some(delivery) = consumer.next().await else {
            return Err("the consumer ended early".into());
        };
        let delivery = delivery?;
        received += 1;
        if !multiple {
            delivery.ack(BasicAckOptions::default()).await?;
        } else if received % ACK_EVERY == 0 || received == job.count {
            delivery.ack(BasicAckOptions { multiple: true }).await?;
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
    let exclusive = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    let requests = server
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await?
        .name()
        .clone();
    let replies = client
        .queue_declare("".into(), exclusive, FieldTable::default())
        .await?
        .name()
        .clone();
    let no_ack = BasicConsumeOptions {
        no_ack: true,
        ..Default::default()
    };
    let mut incoming = server
        .basic_consume(requests.clone(), "".into(), no_ack, FieldTable::default())
        .await?;
    let responder = server.clone();
    let serve = tokio::spawn(async move {
        while let Some(Ok(request)) = incoming.next().await {
            let Some(reply_to) = request.properties.reply_to().clone() else {
                continue;
            };
            let mut properties = BasicProperties::default();
            if let Some(id) = request.properties.correlation_id().clone() {
                properties = properties.with_correlation_id(id);
            }
            let sent = responder
                .basic_publish(
                    "".into(),
                    reply_to,
                    BasicPublishOptions::default(),
                    &request.data,
                    properties,
                )
                .await;
            if sent.is_err() {
                break;
            }
        }
    });
    let mut answers = client
        .basic_consume(replies.clone(), "".into(), no_ack, FieldTable::default())
        .await?;
    let in_flight = if job.scenario == Scenario::Rpc64 {
        RPC_IN_FLIGHT
    } else {
        1
    };
    let mut histogram = latency_histogram();
    let mut sent_at: VecDeque<Instant> = VecDeque::new();
    meter.start();
    let (mut sent, mut answered) = (0u64, 0u64);
    while answered < job.count {
        while sent < job.count && sent_at.len() < in_flight {
            sent_at.push_back(Instant::now());
            let properties = BasicProperties::default()
                .with_reply_to(replies.clone())
                .with_correlation_id(sent.to_string().into());
            // Dropping the `PublisherConfirm`: outside confirm mode there is nothing to wait for.
            drop(
                client
                    .basic_publish(
                        "".into(),
                        requests.clone(),
                        BasicPublishOptions::default(),
                        body,
                        properties,
                    )
                    .await?,
            );
            sent += 1;
        }
        let Some(answer) = answers.next().await else {
            return Err("the reply consumer ended early".into());
        };
        answer?;
        answered += 1;
        if let Some(at) = sent_at.pop_front() {
            record(&mut histogram, at.elapsed());
        }
    }
    let outcome = with_percentiles(meter.stop(answered), &histogram);
    serve.abort();
    Ok(outcome)
}

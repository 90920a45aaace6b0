//! Failover on a local 3-node RabbitMQ cluster (`scripts/cluster`; never the shared node on
//! 5672): nodes are SIGKILLed and restarted, one at a time, under load.
//!
//! - A quorum queue: 50,000 confirmed publishes while the queue's leader, the consumer's node
//!   and the producer's node are killed in turn; every confirmed message is consumed.
//! - A stream: a consumer tracks the `x-stream-offset` of each delivery and, after its node is
//!   killed, resumes from the offset after the last one it processed: no gap.
//!
//! Both tests share one cluster (`up` takes about 17 s) and take turns. They fail loudly when
//! RabbitMQ is not installed (`scripts/ensure-rabbitmq` installs it).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionConfig, ConnectionEvent,
    ConsumeOptions, Consumer, Delivery, FieldValue, PublishOptions, QueueDeclareOptions,
    QueueDeleteOptions, Recovery,
};
use amqp_tests::at_least_once::{self, Progress, Spec};
use amqp_tests::cluster::{Cluster, node_of_port};
use amqp_tests::unique;
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// A client of the whole cluster: every node, in the order given, reconnecting quickly.
fn config(cluster: &Cluster, name: &str, order: &[usize]) -> ConnectionConfig {
    ConnectionConfig {
        endpoints: cluster.endpoints(order),
        connection_name: Some(name.to_owned()),
        recovery: Recovery {
            max_backoff: Duration::from_millis(500),
            ..Recovery::default()
        },
        ..ConnectionConfig::default()
    }
}

/// Kills node `n`, gives the clients a moment to fail over, and starts it again.
async fn kill_and_restart(cluster: &Cluster, n: usize, why: &str) {
    let t = Instant::now();
    cluster.kill(n).await;
    println!("killed c{n} ({why}) at +{:.1?}", t.elapsed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.start(n).await;
    println!("c{n} back after {:.1?}", t.elapsed());
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Target {
    Leader,
    ConsumerNode,
    ProducerNode,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queue_loses_no_confirmed_message_across_three_node_kills() {
    amqp_tests::init_logging();
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("cluster task");
    let _turn = Cluster::serial().await;
    let started = Instant::now();
    let queue = unique("cluster-quorum");
    let producer_name = unique("quorum-producer");
    let consumer_name = unique("quorum-consumer");
    let spec = Spec {
        messages: 50_000,
        producers: 2,
        consumers: 2,
        prefetch: 500,
        body_size: 16,
        persistent: true,
        queue: queue.clone(),
        queue_arguments: [("x-queue-type", FieldValue::from("quorum"))]
            .into_iter()
            .collect(),
        producer: config(&cluster, &producer_name, &[2, 3, 1]),
        consumer: config(&cluster, &consumer_name, &[1, 2, 3]),
        drain_timeout: Duration::from_secs(120),
        // About 50 s of publishing: room for three kills and restarts (7.5 s each on an idle
        // machine, up to 16 s seen on a busy one).
        rate: Some(1_000),
    };
    let kills = Arc::new(Mutex::new(Vec::new()));
    let faults = {
        let (cluster, kills) = (cluster.clone(), kills.clone());
        move |p: Arc<Progress>| async move {
            let plan = [
                (0.12, Target::Leader),
                (0.40, Target::ConsumerNode),
                (0.68, Target::ProducerNode),
            ];
            for (at, target) in plan {
                while (p.confirmed() as f64) < at * p.messages() as f64 {
                    if p.publishing_done() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // A connection in the middle of a recovery is not listed: ask again.
                let mut node = None;
                for _ in 0..50 {
                    node = match target {
                        Target::Leader => cluster.leader_of(&queue).await,
                        Target::ConsumerNode => cluster.node_of_connection(&consumer_name).await,
                        Target::ProducerNode => cluster.node_of_connection(&producer_name).await,
                    };
                    if node.is_some() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let n = node.unwrap_or_else(|| panic!("no node found for {target:?}"));
                println!(
                    "{:.1?}: {} confirmed, {} processed; killing the {target:?}",
                    p.elapsed(),
                    p.confirmed(),
                    p.processed()
                );
                kill_and_restart(&cluster, n, &format!("{target:?}")).await;
                kills.lock().unwrap().push((target, n));
            }
        }
    };
    let report = at_least_once::run(spec, faults).await;
    let kills = kills.lock().unwrap().clone();
    println!(
        "quorum queue, kills {kills:?}: confirmed={} consumed={} duplicated={} lost={} \
         longest_pause={:.3}s",
        report.confirmed,
        report.confirmed - report.lost,
        report.duplicated,
        report.lost,
        report.longest_pause.as_secs_f64()
    );
    println!("quorum queue: {report} (test {:.1?})", started.elapsed());
    assert_eq!(
        kills.len(),
        3,
        "three kills before publishing ended: {kills:?}"
    );
    assert!(kills.iter().any(|k| k.0 == Target::Leader), "{kills:?}");
    assert!(
        kills.iter().any(|k| k.0 == Target::ConsumerNode),
        "{kills:?}"
    );
    assert_eq!(report.confirmed, report.messages, "{report}");
    assert_eq!(report.lost, 0, "confirmed messages were lost: {report}");
    assert_eq!(report.corrupt, 0, "{report}");
    assert_eq!(report.failures, 0, "{report}");
}

/// What the stream consumer saw.
#[derive(Debug, Default)]
struct StreamLog {
    /// The last offset processed.
    last: Option<i64>,
    /// Offsets processed (each once, in order).
    processed: u64,
    /// Deliveries of an offset already processed (skipped).
    duplicates: u64,
    /// Offsets skipped over: must be 0.
    gaps: u64,
    /// Deliveries without an `x-stream-offset` header or with a damaged body: must be 0.
    corrupt: u64,
    /// Message numbers seen (a number republished after an unknown outcome appears at more
    /// than one offset).
    seen: Vec<bool>,
    distinct: u64,
    /// Recoveries of the consumer's connection (the client resumes the consumer itself).
    recoveries: u64,
    /// Re-consumes by the test, when the consumer ended, with the offset they started from.
    resumes: Vec<i64>,
}

impl StreamLog {
    fn handle(&mut self, d: &Delivery, body_size: usize) {
        let offset = d
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-stream-offset"))
            .and_then(|v| match v {
                FieldValue::I64(o) => Some(*o),
                FieldValue::I32(o) => Some(i64::from(*o)),
                FieldValue::U32(o) => Some(i64::from(*o)),
                _ => None,
            });
        let Some(offset) = offset else {
            self.corrupt += 1;
            return;
        };
        let expected = self.last.map_or(0, |l| l + 1);
        if offset < expected {
            self.duplicates += 1;
            return;
        }
        self.gaps += (offset - expected) as u64;
        self.last = Some(offset);
        self.processed += 1;
        match at_least_once::parse(&d.body, body_size).filter(|&s| s < self.seen.len() as u64) {
            Some(seq) if !self.seen[seq as usize] => {
                self.seen[seq as usize] = true;
                self.distinct += 1;
            }
            Some(_) => {}
            None => self.corrupt += 1,
        }
    }
}

/// A channel with a prefetch and a stream consumer from `offset` (`None`: the first).
///
/// The broker refuses a stream consumer (406 "does not have a replica on the local node")
/// while the stream's member on the connection's node is not running: just after the
/// stream was declared on another node, or while members restart after a kill. So this
/// tries again for up to 60 s, and panics after that.
async fn consume_stream(
    conn: &Connection,
    stream: &str,
    prefetch: u16,
    offset: Option<i64>,
) -> (Channel, Consumer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match try_consume_stream(conn, stream, prefetch, offset).await {
            Ok(consuming) => return consuming,
            Err(e) if Instant::now() < deadline => {
                println!("consuming the stream from {offset:?} failed: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("cannot consume the stream from {offset:?}: {e}"),
        }
    }
}

/// One attempt of [`consume_stream`].
async fn try_consume_stream(
    conn: &Connection,
    stream: &str,
    prefetch: u16,
    offset: Option<i64>,
) -> amqp_client::Result<(Channel, Consumer)> {
    let ch = conn.open_channel().await?;
    ch.qos(prefetch, false).await?;
    let start = offset.map_or(FieldValue::from("first"), FieldValue::from);
    let consumer = ch
        .consume(
            stream,
            ConsumeOptions {
                arguments: [("x-stream-offset", start)].into_iter().collect(),
                ..Default::default()
            },
        )
        .await?;
    Ok((ch, consumer))
}

/// Publishes `0..messages` with confirms until every number is acked; returns the longest
/// time between two confirms and the number of publishes that were repeated.
async fn publish_stream(
    ch: Channel,
    stream: String,
    messages: u64,
    rate: u32,
    body_size: usize,
) -> (Duration, u64) {
    let confirmed: Arc<Vec<AtomicBool>> =
        Arc::new((0..messages).map(|_| AtomicBool::new(false)).collect());
    let remaining = Arc::new(AtomicU64::new(messages));
    let (retry_tx, mut retry) = mpsc::unbounded_channel::<u64>();
    let (confirms_tx, mut confirms) = mpsc::unbounded_channel::<(u64, amqp_client::Confirm)>();
    let collector = {
        let (retry_tx, remaining) = (retry_tx.clone(), remaining.clone());
        tokio::spawn(async move {
            let (mut last, mut longest, mut repeated) = (None::<Instant>, Duration::ZERO, 0);
            while let Some((seq, confirm)) = confirms.recv().await {
                let outcome = tokio::time::timeout(Duration::from_secs(90), confirm)
                    .await
                    .unwrap_or_else(|_| panic!("the confirm of {seq} did not resolve in 90 s"));
                if let Ok(Confirmation::Ack) = outcome {
                    if !confirmed[seq as usize].swap(true, Ordering::SeqCst) {
                        remaining.fetch_sub(1, Ordering::SeqCst);
                        let now = Instant::now();
                        if let Some(last) = last {
                            longest = longest.max(now - last);
                        }
                        last = Some(now);
                    }
                } else {
                    repeated += 1;
                    let _ = retry_tx.send(seq);
                }
            }
            (longest, repeated)
        })
    };
    let pace = Duration::from_secs_f64(1.0 / f64::from(rate));
    let mut due = tokio::time::Instant::now();
    let mut next = 0;
    let properties = BasicProperties {
        delivery_mode: Some(2),
        ..Default::default()
    };
    while remaining.load(Ordering::SeqCst) > 0 {
        let seq = if let Ok(seq) = retry.try_recv() {
            seq
        } else if next < messages {
            next += 1;
            next - 1
        } else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        due += pace;
        tokio::time::sleep_until(due).await;
        let body = at_least_once::body(seq, body_size);
        match ch
            .publish(
                "",
                &stream,
                PublishOptions::default(),
                properties.clone(),
                body,
            )
            .await
        {
            Ok(confirm) => confirms_tx.send((seq, confirm)).expect("collector"),
            Err(e) => {
                if let Some(reason) = ch.close_reason() {
                    panic!("stream producer channel ended: {reason} (publish: {e})");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                retry_tx.send(seq).expect("retry queue");
            }
        }
    }
    drop(confirms_tx);
    collector.await.expect("collector task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_consumer_resumes_after_its_last_offset_across_node_kills() {
    const MESSAGES: u64 = 20_000;
    const BODY: usize = 16;
    const PREFETCH: u16 = 200;
    amqp_tests::init_logging();
    let cluster = tokio::task::spawn_blocking(Cluster::shared)
        .await
        .expect("cluster task");
    let _turn = Cluster::serial().await;
    let started = Instant::now();
    let stream = unique("cluster-stream");
    let consumer_conn =
        Connection::connect_with(config(&cluster, &unique("stream-consumer"), &[1, 2, 3]))
            .await
            .expect("consumer connection");
    let producer_conn =
        Connection::connect_with(config(&cluster, &unique("stream-producer"), &[3, 2, 1]))
            .await
            .expect("producer connection");
    let setup = producer_conn.open_channel().await.expect("channel");
    setup
        .queue_declare(
            &stream,
            QueueDeclareOptions {
                durable: true,
                arguments: [("x-queue-type", FieldValue::from("stream"))]
                    .into_iter()
                    .collect(),
                ..Default::default()
            },
        )
        .await
        .expect("declare the stream");

    let log = Arc::new(Mutex::new(StreamLog {
        seen: vec![false; MESSAGES as usize],
        ..Default::default()
    }));
    let consumer_node = Arc::new(AtomicUsize::new(0));
    let faults_done = Arc::new(AtomicBool::new(false));

    // The consumer: process in offset order. After a recovery the client re-registers it
    // from the offset after the last delivery it handed over (not from "first" again). If
    // that fails (the broker closes the channel, e.g. 406 "does not have a replica on the
    // local node" while the stream's members restart), the consumer ends: close its channel
    // and consume again from the offset after the last one processed.
    let consumer_task = {
        let (log, consumer_node, faults_done) =
            (log.clone(), consumer_node.clone(), faults_done.clone());
        let conn = consumer_conn.clone();
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut events = conn.events();
            // A stream just declared on another node may not have its replica here yet.
            let (mut ch, mut consumer) = consume_stream(&conn, &stream, PREFETCH, None).await;
            consumer_node.store(
                node_of_port(conn.endpoint().port).unwrap_or(0),
                Ordering::SeqCst,
            );
            loop {
                {
                    let log = log.lock().unwrap();
                    if log.distinct == MESSAGES && faults_done.load(Ordering::SeqCst) {
                        return;
                    }
                }
                let resume = tokio::select! {
                    d = consumer.next() => match d {
                        Some(Ok(d)) => {
                            log.lock().unwrap().handle(&d, BODY);
                            // A stale ack (after a reconnection) needs no retry: a stream
                            // keeps its messages, the prefetch is the only thing acks free.
                            let _ = d.ack().await;
                            false
                        }
                        Some(Err(e)) => {
                            println!("stream consumer: {e}; consuming again");
                            true
                        }
                        None => {
                            println!("stream consumer ended; consuming again");
                            true
                        }
                    },
                    event = events.recv() => match event {
                        // The client re-registered the consumer after the last offset
                        // it delivered: nothing to do but note where it is now.
                        Ok(ConnectionEvent::Recovered { endpoint }) => {
                            consumer_node.store(
                                node_of_port(endpoint.port).unwrap_or(0),
                                Ordering::SeqCst,
                            );
                            log.lock().unwrap().recoveries += 1;
                            false
                        }
                        Ok(ConnectionEvent::Failed { error }) => {
                            panic!("consumer connection failed: {error}")
                        }
                        _ => false,
                    },
                    () = tokio::time::sleep(Duration::from_millis(100)) => false,
                };
                if !resume {
                    continue;
                }
                let _ = tokio::time::timeout(Duration::from_secs(5), ch.close()).await;
                let from = log.lock().unwrap().last.map(|l| l + 1);
                (ch, consumer) = consume_stream(&conn, &stream, PREFETCH, from).await;
                println!("stream consumer resumed from offset {from:?}");
                log.lock().unwrap().resumes.push(from.unwrap_or(0));
            }
        })
    };

    let producer_ch = producer_conn.open_channel().await.expect("channel");
    producer_ch.confirm_select().await.expect("confirm.select");
    let producer = tokio::spawn(publish_stream(
        producer_ch,
        stream.clone(),
        MESSAGES,
        // 50 s of publishing, so that both kills (and the restart between) happen while
        // the consumer is still reading.
        400,
        BODY,
    ));

    // Kill the consumer's node twice, mid-stream (the first is back before the second).
    let mut killed = Vec::new();
    for at in [0.2, 0.6] {
        let want = (at * MESSAGES as f64) as u64;
        let wait_since = Instant::now();
        while log.lock().unwrap().distinct < want {
            assert!(
                wait_since.elapsed() < Duration::from_secs(120),
                "the stream consumer is stuck: {:?}",
                log.lock().unwrap().last
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let n = consumer_node.load(Ordering::SeqCst);
        assert!(n != 0, "the consumer's node is unknown");
        println!(
            "{:.1?}: stream consumer at offset {:?}; killing its node",
            started.elapsed(),
            log.lock().unwrap().last
        );
        kill_and_restart(&cluster, n, "the stream consumer's node").await;
        killed.push(n);
    }
    faults_done.store(true, Ordering::SeqCst);

    let (longest_pause, repeated) = tokio::time::timeout(Duration::from_secs(180), producer)
        .await
        .expect("every publish to the stream confirmed within 3 minutes")
        .expect("producer task");
    tokio::time::timeout(Duration::from_secs(120), consumer_task)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the stream consumer did not see every message: {} of {MESSAGES}",
                log.lock().unwrap().distinct
            )
        })
        .expect("consumer task");

    let cleanup = producer_conn.open_channel().await.expect("channel");
    let _ = cleanup
        .queue_delete(&stream, QueueDeleteOptions::default())
        .await;
    for conn in [consumer_conn, producer_conn] {
        let _ = tokio::time::timeout(Duration::from_secs(10), conn.close()).await;
    }

    let log = log.lock().unwrap();
    println!(
        "stream, killed {killed:?}: confirmed={MESSAGES} consumed={} offsets_processed={} \
         last_offset={:?} duplicated={} gaps={} corrupt={} republished={repeated} \
         recoveries={} test_resumes={:?} longest_pause={:.3}s (test {:.1?})",
        log.distinct,
        log.processed,
        log.last,
        log.duplicates,
        log.gaps,
        log.corrupt,
        log.recoveries,
        log.resumes,
        longest_pause.as_secs_f64(),
        started.elapsed()
    );
    assert_eq!(log.gaps, 0, "offsets were skipped");
    assert_eq!(log.corrupt, 0);
    assert_eq!(log.distinct, MESSAGES, "every confirmed message consumed");
    assert!(
        log.duplicates < 1_000,
        "resumed by offset, not from the start: {} duplicates",
        log.duplicates
    );
    assert!(
        log.recoveries >= 2,
        "the consumer's connection recovered after each kill: {}",
        log.recoveries
    );
}

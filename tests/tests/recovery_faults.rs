//! Automatic recovery under faults, proven rather than claimed: a fault-injection proxy cuts
//! and stalls connections at random bytes, the broker closes them, a dead endpoint precedes a
//! live one; at-least-once streams must lose no confirmed message.
//!
//! Every queue is durable and deleted at the end, or exclusive; nothing needs global QoS, so
//! the tests also hold on RabbitMQ 4.x. The shared broker is never stopped: the test that
//! restarts a broker is `recovery_private_node.rs`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, Confirmation, Connection, ConnectionConfig, ConnectionError, ConnectionEvent,
    Endpoint, Error, PublishOptions, Recovery,
};
use amqp_tests::at_least_once::{self, Progress, Spec};
use amqp_tests::proxy::{Direction, Proxy};
use amqp_tests::rabbitmqctl::close_connections_named;
use amqp_tests::{config, exclusive, message_count, publish_confirmed, unique};
use tokio::sync::broadcast;

/// `config()` through `proxy`, named for `rabbitmqctl` and the logs.
fn via(proxy: &Proxy, name: &str) -> ConnectionConfig {
    ConnectionConfig {
        endpoints: vec![proxy.endpoint()],
        connection_name: Some(name.to_owned()),
        ..config()
    }
}

async fn next_event(
    events: &mut broadcast::Receiver<ConnectionEvent>,
    within: Duration,
) -> ConnectionEvent {
    tokio::time::timeout(within, events.recv())
        .await
        .unwrap_or_else(|_| panic!("no connection event within {within:?}"))
        .expect("events open")
}

/// Waits for the first event `want` accepts, failing on `Failed`.
async fn wait_for_event(
    events: &mut broadcast::Receiver<ConnectionEvent>,
    within: Duration,
    mut want: impl FnMut(&ConnectionEvent) -> bool,
) -> ConnectionEvent {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = next_event(events, left).await;
        if want(&event) {
            return event;
        }
        if let ConnectionEvent::Failed { error } = &event {
            panic!("recovery failed: {error}");
        }
    }
}

fn stream_spec(messages: u64, producer: ConnectionConfig, consumer: ConnectionConfig) -> Spec {
    Spec {
        messages,
        producers: 2,
        consumers: 2,
        prefetch: 500,
        body_size: 16,
        persistent: false,
        queue: unique("at-least-once"),
        queue_arguments: Default::default(),
        producer,
        consumer,
        drain_timeout: Duration::from_secs(60),
        rate: None,
    }
}

fn check(report: &at_least_once::Report) {
    assert_eq!(report.confirmed, report.messages, "{report}");
    assert_eq!(report.lost, 0, "confirmed messages were lost: {report}");
    assert_eq!(report.corrupt, 0, "{report}");
    assert_eq!(report.failures, 0, "{report}");
}

/// Cuts `proxy` at a random point: now, or after a random number of octets either way.
fn random_cut(proxy: &Proxy) -> &'static str {
    match fastrand::u8(0..3) {
        0 => {
            proxy.cut();
            "now"
        }
        1 => {
            proxy.cut_after(Direction::Upstream, fastrand::u64(0..16 * 1024));
            "upstream"
        }
        _ => {
            proxy.cut_after(Direction::Downstream, fastrand::u64(0..16 * 1024));
            "downstream"
        }
    }
}

/// What [`cut_stream`] did.
struct Cuts {
    report: at_least_once::Report,
    /// Cuts of the producer's connection (half of them the consumer's too).
    events: usize,
    /// Cuts of a fresh producer connection within its first octets.
    early: usize,
}

/// An at-least-once stream of `messages` through two proxies (producer, consumer) that cut
/// about `target` times at random progress points and random octets.
async fn cut_stream(messages: u64, target: u64, republish: bool) -> Cuts {
    amqp_tests::init_logging();
    let producer_proxy = Arc::new(Proxy::to_broker().await);
    let consumer_proxy = Arc::new(Proxy::to_broker().await);
    let mut producer = via(&producer_proxy, &unique("cuts-producer"));
    producer.recovery.republish = republish;
    let mut spec = stream_spec(
        messages,
        producer,
        via(&consumer_proxy, &unique("cuts-consumer")),
    );
    // Paced, so that the run lasts long enough for 20+ cuts however fast the client is
    // (100,000 publishes took under 5 s unpaced).
    spec.rate = Some(12_000);
    let cut_events = Arc::new(AtomicUsize::new(0));
    let early_cuts = Arc::new(AtomicUsize::new(0));
    let faults = {
        let (pp, cp) = (producer_proxy.clone(), consumer_proxy.clone());
        let (cut_events, early_cuts) = (cut_events.clone(), early_cuts.clone());
        move |p: Arc<Progress>| async move {
            // The gaps adapt to the progress the cuts themselves leave.
            let gap = |done: u64| {
                let left = p.messages().saturating_sub(p.confirmed());
                let events_left = target.saturating_sub(done).max(1);
                // Capped, so a fast client still meets a cut at least every 1/150 of the run.
                let cap = (p.messages() / 150).max(1);
                (left / (events_left + 1)).clamp(1, cap) * fastrand::u64(50..150) / 100
            };
            let mut next = gap(0);
            loop {
                // The next cut comes after `next` confirms or 100 ms, whichever is first, so
                // a fast client still meets a cut every few hundred milliseconds at most.
                let since = Instant::now();
                while p.confirmed() < next
                    && !p.publishing_done()
                    && since.elapsed() < Duration::from_millis(100)
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                if p.publishing_done() {
                    return;
                }
                let (cuts, accepted) = (pp.cuts(), pp.accepted());
                // The producer's downstream carries only small confirms: a cut after up to
                // 16 KiB of it could wait past the end of the stream, so cut its upstream.
                let applied = if fastrand::bool() {
                    pp.cut()
                } else {
                    pp.cut_after(Direction::Upstream, fastrand::u64(0..16 * 1024))
                };
                if applied == 0 {
                    // The producer is between connections: waiting for a cut that cannot
                    // happen would end the faults; try again once it has one.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                if fastrand::bool() {
                    random_cut(&cp);
                }
                // A cut after some octets happens when they have passed.
                forced_cut(&pp, cuts, &p).await;
                cut_events.fetch_add(1, Ordering::SeqCst);
                // Sometimes the next connection too.
                if fastrand::u8(0..4) == 0 {
                    cut_next_connection_early(&pp, accepted, Direction::Upstream, &p).await;
                    early_cuts.fetch_add(1, Ordering::SeqCst);
                }
                next = p.confirmed() + gap(cut_events.load(Ordering::SeqCst) as u64);
            }
        }
    };
    let report = at_least_once::run(spec, faults).await;
    let cuts = Cuts {
        report,
        events: cut_events.load(Ordering::SeqCst),
        early: early_cuts.load(Ordering::SeqCst),
    };
    println!(
        "proxy cuts{}: {} cut_events={} early_cuts={} connections_cut={}",
        if republish { " (republish)" } else { "" },
        cuts.report,
        cuts.events,
        cuts.early,
        producer_proxy.cuts() + consumer_proxy.cuts(),
    );
    cuts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_random_proxy_cuts() {
    let cuts = cut_stream(100_000, 36, false).await;
    let report = &cuts.report;
    check(report);
    assert!(cuts.events >= 20, "{} cuts: {report}", cuts.events);
    assert!(report.recoveries >= 20, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_republish_random_proxy_cuts_leave_no_outcome_unknown() {
    let cuts = cut_stream(40_000, 16, true).await;
    let report = &cuts.report;
    check(report);
    // What this test proves is the republish (no OutcomeUnknown); the 100,000-message test
    // above carries the 20-cut requirement. Here the cuts only have to have happened.
    assert!(cuts.events >= 2, "{} cuts: {report}", cuts.events);
    assert_eq!(report.outcome_unknown, 0, "republished instead: {report}");
}

/// Waits until `proxy` has cut a connection since it had cut `before`, cutting whatever it
/// forwards after 50 ms. With nothing left to cut (the connection ended otherwise), it stops
/// waiting: cutting the next connection at once, and each after it, would keep the client
/// from ever recovering, which no client survives.
async fn forced_cut(proxy: &Proxy, before: usize, progress: &Progress) {
    let since = Instant::now();
    while proxy.cuts() == before && !progress.publishing_done() {
        if since.elapsed() > Duration::from_millis(50) && proxy.cut() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Waits for the connection that follows the `accepted`-th, then cuts it within its first
/// 2 KiB in `direction`: in its handshake, or while its channels and consumers are being
/// restored.
async fn cut_next_connection_early(
    proxy: &Proxy,
    accepted: usize,
    direction: Direction,
    progress: &Progress,
) {
    while proxy.accepted() == accepted && !progress.publishing_done() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let before = proxy.cuts();
    proxy.cut_after(direction, fastrand::u64(0..2048));
    forced_cut(proxy, before, progress).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_a_storm_of_cuts_in_handshakes_and_replays() {
    amqp_tests::init_logging();
    let pp = Arc::new(Proxy::to_broker().await);
    let cp = Arc::new(Proxy::to_broker().await);
    let spec = stream_spec(
        100_000,
        via(&pp, &unique("storm-producer")),
        via(&cp, &unique("storm-consumer")),
    );
    let faults = {
        let (pp, cp) = (pp.clone(), cp.clone());
        move |p: Arc<Progress>| async move {
            // Unpaced, a cut every 50 ms or so, and every other one followed by a cut of
            // the next connection within its first octets either way: in its handshake, or
            // while its channels, confirm mode and consumers are being restored.
            loop {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(0..100))).await;
                if p.publishing_done() {
                    return;
                }
                let (cuts, accepted) = (pp.cuts(), pp.accepted());
                random_cut(&pp);
                if fastrand::bool() {
                    random_cut(&cp);
                }
                forced_cut(&pp, cuts, &p).await;
                if fastrand::bool() {
                    let direction = if fastrand::bool() {
                        Direction::Upstream
                    } else {
                        Direction::Downstream
                    };
                    cut_next_connection_early(&pp, accepted, direction, &p).await;
                }
            }
        }
    };
    let report = at_least_once::run(spec, faults).await;
    // Connections of the producer actually reset, handshakes and replays included.
    let cut = pp.cuts();
    println!("cut storm: {report} producer_connections_cut={cut}");
    check(&report);
    assert!(cut >= 20, "{cut} cuts: {report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_connections_closed_by_the_broker() {
    amqp_tests::init_logging();
    let producer_name = unique("closed-producer");
    let consumer_name = unique("closed-consumer");
    let named = |name: &str| ConnectionConfig {
        connection_name: Some(name.to_owned()),
        ..config()
    };
    let mut spec = stream_spec(20_000, named(&producer_name), named(&consumer_name));
    // Long enough for a few closes: each rabbitmqctl call takes about a second.
    spec.rate = Some(2_000);
    let closes = Arc::new(AtomicUsize::new(0));
    let faults = {
        let closes = closes.clone();
        move |p: Arc<Progress>| async move {
            for (i, at) in [0.15, 0.35, 0.55, 0.75].into_iter().enumerate() {
                while p.confirmed() < (p.messages() as f64 * at) as u64 {
                    if p.publishing_done() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let names: Vec<String> = match i % 3 {
                    0 => vec![producer_name.clone()],
                    1 => vec![consumer_name.clone()],
                    _ => vec![producer_name.clone(), consumer_name.clone()],
                };
                let closed = tokio::task::spawn_blocking(move || {
                    names
                        .iter()
                        .map(|n| close_connections_named(n, "recovery fault test"))
                        .sum::<usize>()
                })
                .await
                .expect("rabbitmqctl task");
                closes.fetch_add(closed, Ordering::SeqCst);
            }
        }
    };
    let report = at_least_once::run(spec, faults).await;
    println!(
        "broker closes: {report} closed={}",
        closes.load(Ordering::SeqCst)
    );
    check(&report);
    assert!(closes.load(Ordering::SeqCst) >= 4, "{report}");
    assert!(report.recoveries >= 4, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_connection_is_detected_by_heartbeats_and_recovered() {
    amqp_tests::init_logging();
    let proxy = Proxy::to_broker().await;
    let config = ConnectionConfig {
        heartbeat: Some(1),
        ..via(&proxy, &unique("stall"))
    };
    let conn = Connection::connect_with(config).await.unwrap();
    assert_eq!(conn.tune().heartbeat, 1);
    let mut events = conn.events();
    let ch = conn.open_channel().await.unwrap();
    let nowhere = unique("no-such-queue");

    for stall_new_connections in [false, true] {
        // Stop the bytes, then publish without confirms so the socket's buffers fill and the
        // client's writes block too, as on a network that black-holes packets.
        if stall_new_connections {
            proxy.stall();
        } else {
            proxy.stall_current();
        }
        let stalled_at = Instant::now();
        let publisher = {
            let (ch, nowhere) = (ch.clone(), nowhere.clone());
            tokio::spawn(async move {
                for _ in 0..1000 {
                    let body = vec![0u8; 32 * 1024];
                    let _ = ch
                        .publish(
                            "",
                            &nowhere,
                            PublishOptions::default(),
                            BasicProperties::default(),
                            body,
                        )
                        .await;
                }
            })
        };
        let event = wait_for_event(&mut events, Duration::from_secs(10), |e| {
            matches!(e, ConnectionEvent::Disconnected { .. })
        })
        .await;
        let detected = stalled_at.elapsed();
        let ConnectionEvent::Disconnected { error } = event else {
            unreachable!()
        };
        assert!(
            matches!(
                error,
                Error::Connection(ConnectionError::MissedHeartbeats(1))
            ),
            "{error}"
        );
        // Two intervals of silence, plus timer slack.
        assert!(
            detected <= Duration::from_millis(3500),
            "detected after {detected:?}"
        );
        if stall_new_connections {
            proxy.resume();
        }
        // stall_current: the old socket stays stalled and open; a new one flows.
        let recovered_at = Instant::now();
        wait_for_event(&mut events, Duration::from_secs(10), |e| {
            matches!(e, ConnectionEvent::Recovered { .. })
        })
        .await;
        println!(
            "stall (new connections stalled too: {stall_new_connections}): detected after \
             {detected:?}, recovered {:?} later",
            recovered_at.elapsed()
        );
        assert!(recovered_at.elapsed() <= Duration::from_secs(3));
        tokio::time::timeout(Duration::from_secs(30), publisher)
            .await
            .expect("the publisher goes on after the recovery")
            .unwrap();
    }
    // The same channel works.
    ch.confirm_select().await.unwrap();
    let q = ch
        .queue_declare(&unique("after-stall"), exclusive())
        .await
        .unwrap();
    assert_eq!(
        publish_confirmed(
            &ch,
            "",
            q.name.to_str().unwrap(),
            BasicProperties::default(),
            "x"
        )
        .await,
        Confirmation::Ack
    );
    conn.close().await.unwrap();
}

/// An address on loopback where nothing listens.
fn dead_endpoint() -> Endpoint {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    Endpoint::new("127.0.0.1", port)
}

#[tokio::test]
async fn fails_over_from_a_dead_endpoint_to_a_live_one() {
    amqp_tests::init_logging();
    let dead = dead_endpoint();
    // Only the dead one: the first connect fails with its error.
    let alone = ConnectionConfig {
        endpoints: vec![dead.clone()],
        ..config()
    };
    let err = Connection::connect_with(alone).await.unwrap_err();
    assert!(err.is_io(), "{err}");

    let proxy = Proxy::to_broker().await;
    let live = proxy.endpoint();
    let both = ConnectionConfig::builder()
        .uri(&amqp_tests::amqp_url())
        .unwrap()
        .endpoints([dead.clone(), live.clone()])
        .connection_name(unique("failover"))
        .build();
    let conn = Connection::connect_with(both).await.unwrap();
    assert_eq!(conn.endpoint(), live);
    let mut events = conn.events();
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let q = ch
        .queue_declare(&unique("failover"), exclusive())
        .await
        .unwrap();
    let queue = q.name.to_str().unwrap().to_owned();

    let mut dead_tried = 0;
    for round in 0..4 {
        proxy.cut();
        let event = wait_for_event(&mut events, Duration::from_secs(10), |e| match e {
            ConnectionEvent::Reconnecting { endpoint, .. } if *endpoint == dead => {
                dead_tried += 1;
                false
            }
            e => matches!(e, ConnectionEvent::Recovered { .. }),
        })
        .await;
        let ConnectionEvent::Recovered { endpoint } = event else {
            unreachable!()
        };
        assert_eq!(endpoint, live, "round {round}");
        assert_eq!(conn.endpoint(), live);
        assert_eq!(
            publish_confirmed(&ch, "", &queue, BasicProperties::default(), "x").await,
            Confirmation::Ack
        );
    }
    println!("failover: the dead endpoint was tried {dead_tried} times in 4 recoveries");
    conn.close().await.unwrap();
}

#[tokio::test]
async fn with_recovery_off_a_loss_ends_the_connection() {
    amqp_tests::init_logging();
    let proxy = Proxy::to_broker().await;
    let config = ConnectionConfig {
        recovery: Recovery {
            enabled: false,
            ..Recovery::default()
        },
        ..via(&proxy, &unique("no-recovery"))
    };
    let conn = Connection::connect_with(config).await.unwrap();
    let mut events = conn.events();
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let q = ch
        .queue_declare(&unique("no-recovery"), exclusive())
        .await
        .unwrap();
    proxy.stall();
    let mut confirms = Vec::new();
    for _ in 0..10 {
        let confirm = ch
            .publish(
                "",
                q.name.to_str().unwrap(),
                PublishOptions::default(),
                BasicProperties::default(),
                "x",
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    proxy.cut();
    proxy.resume();
    let first = next_event(&mut events, Duration::from_secs(10)).await;
    assert!(
        matches!(first, ConnectionEvent::Disconnected { .. }),
        "{first:?}"
    );
    let second = next_event(&mut events, Duration::from_secs(10)).await;
    let ConnectionEvent::Failed { error } = second else {
        panic!("expected Failed, got {second:?}")
    };
    assert!(error.is_connection_lost(), "{error}");
    for confirm in confirms {
        assert!(matches!(confirm.await, Err(Error::OutcomeUnknown)));
    }
    assert!(conn.is_closed());
    assert!(conn.close_reason().is_some_and(|e| e.is_connection_lost()));
    assert!(
        conn.close().await.is_err(),
        "the connection ended with an error"
    );
    assert!(
        ch.queue_declare(&unique("late"), exclusive())
            .await
            .is_err()
    );
    assert!(conn.open_channel().await.is_err());
    // Nothing reconnected.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(proxy.accepted(), 1);
}

/// Publishes 200 messages while the proxy holds every byte, cuts the connection, and returns
/// the 200 outcomes and how many messages the (re-declared, exclusive) queue then holds.
async fn in_flight_outcomes(republish: bool) -> (Vec<amqp_client::Result<Confirmation>>, u32) {
    let proxy = Proxy::to_broker().await;
    let config = ConnectionConfig {
        recovery: Recovery {
            republish,
            ..Recovery::default()
        },
        ..via(&proxy, &unique("republish"))
    };
    let conn = Connection::connect_with(config).await.unwrap();
    let mut events = conn.events();
    let ch = conn.open_channel().await.unwrap();
    ch.confirm_select().await.unwrap();
    let queue = unique("republish");
    ch.queue_declare(&queue, exclusive()).await.unwrap();
    proxy.stall();
    let mut confirms = Vec::new();
    for i in 0..200u32 {
        let confirm = ch
            .publish(
                "",
                &queue,
                PublishOptions::default(),
                BasicProperties::default(),
                i.to_be_bytes().to_vec(),
            )
            .await
            .unwrap();
        confirms.push(confirm);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    proxy.cut();
    proxy.resume();
    let mut outcomes = Vec::new();
    for confirm in confirms {
        outcomes.push(
            tokio::time::timeout(Duration::from_secs(20), confirm)
                .await
                .expect("an outcome"),
        );
    }
    wait_for_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, ConnectionEvent::Recovered { .. })
    })
    .await;
    let count = message_count(&ch, &queue).await;
    conn.close().await.unwrap();
    (outcomes, count)
}

#[tokio::test]
async fn republish_turns_in_flight_publishes_into_confirms() {
    amqp_tests::init_logging();
    let (outcomes, count) = in_flight_outcomes(false).await;
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Err(Error::OutcomeUnknown))),
        "without republish every in-flight publish is unknown: {:?}",
        outcomes
            .iter()
            .find(|o| !matches!(o, Err(Error::OutcomeUnknown)))
    );
    assert_eq!(count, 0, "nothing reached the broker");

    let (outcomes, count) = in_flight_outcomes(true).await;
    assert!(
        outcomes.iter().all(|o| matches!(o, Ok(Confirmation::Ack))),
        "with republish every in-flight publish is confirmed after the recovery: {:?}",
        outcomes
            .iter()
            .find(|o| !matches!(o, Ok(Confirmation::Ack)))
    );
    assert_eq!(count, 200, "each was published again, once");
}

/// A connection through a proxy that has just started refusing: it is lost and keeps
/// failing to reconnect (round 2 or later).
async fn connection_that_cannot_reconnect(
    proxy: &Proxy,
) -> (Connection, broadcast::Receiver<ConnectionEvent>) {
    let conn = Connection::connect_with(via(proxy, &unique("down")))
        .await
        .unwrap();
    let mut events = conn.events();
    proxy.refuse(true);
    proxy.cut();
    wait_for_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, ConnectionEvent::Reconnecting { round: 2.., .. })
    })
    .await;
    (conn, events)
}

#[tokio::test]
async fn closing_while_reconnecting_stops_the_recovery() {
    amqp_tests::init_logging();
    let proxy = Proxy::to_broker().await;
    let (conn, events) = connection_that_cannot_reconnect(&proxy).await;
    // Before the fix: a 30 s wait (operation_timeout) for a driver that only takes commands
    // once reconnected, then Err(Timeout), and the recovery went on.
    let start = Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn.close())
        .await
        .expect("close does not wait for a reconnection")
        .expect("closing a connection that is down is a clean close");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(conn.is_closed());
    let refused = tokio::time::timeout(Duration::from_secs(2), conn.open_channel()).await;
    assert!(matches!(refused, Ok(Err(_))), "{refused:?}");
    // The driver ended: once the last handle is gone the events stream closes (a driver still
    // recovering would keep it open), and nothing more connects.
    drop(conn);
    let last_events = assert_driver_ended(events, &proxy, "after close").await;
    if let Some(ConnectionEvent::Failed { error }) = last_events
        .iter()
        .find(|e| matches!(e, ConnectionEvent::Failed { .. }))
    {
        panic!("an app close is no failure: {error}")
    }
}

/// Waits for `events` to close, as it does once the driver has ended and every handle is
/// gone, and checks that nothing connects through `proxy` in the next 500 ms. Returns the
/// events seen meanwhile.
async fn assert_driver_ended(
    mut events: broadcast::Receiver<ConnectionEvent>,
    proxy: &Proxy,
    when: &str,
) -> Vec<ConnectionEvent> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), events.recv()).await {
            Ok(Err(broadcast::error::RecvError::Closed)) => break,
            Ok(Ok(event)) => seen.push(event),
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => {}
            Err(_) => panic!("the driver still runs {when}"),
        }
    }
    let accepted = proxy.accepted();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(proxy.accepted(), accepted, "a connection {when}");
    seen
}

#[tokio::test]
async fn dropping_every_handle_while_reconnecting_stops_the_recovery() {
    amqp_tests::init_logging();
    let proxy = Proxy::to_broker().await;
    let (conn, events) = connection_that_cannot_reconnect(&proxy).await;
    drop(conn);
    // Before the fix the driver went on reconnecting forever, with nobody left to use it.
    assert_driver_ended(events, &proxy, "after every handle was dropped").await;
}

#[tokio::test]
async fn recovery_gives_up_after_max_rounds() {
    amqp_tests::init_logging();
    let proxy = Proxy::to_broker().await;
    let config = ConnectionConfig {
        recovery: Recovery {
            max_rounds: Some(3),
            initial_backoff: Duration::from_millis(20),
            ..Recovery::default()
        },
        ..via(&proxy, &unique("max-rounds"))
    };
    let conn = Connection::connect_with(config).await.unwrap();
    let mut events = conn.events();
    proxy.refuse(true);
    proxy.cut();
    let mut rounds = Vec::new();
    let error = loop {
        match next_event(&mut events, Duration::from_secs(10)).await {
            ConnectionEvent::Reconnecting { round, .. } => rounds.push(round),
            ConnectionEvent::Failed { error } => break error,
            ConnectionEvent::Recovered { .. } => panic!("recovered through a refusing proxy"),
            _ => {}
        }
    };
    assert_eq!(rounds, [0, 1, 2], "three rounds of one endpoint each");
    assert!(error.is_connection_lost(), "{error}");
    assert!(conn.is_closed());
    assert_eq!(proxy.accepted(), 1 + 3);
}

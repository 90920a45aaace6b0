//! The `amqp` binary against a broker that breaks the rules (a scripted broker on loopback):
//! it fails within seconds, non-zero, saying why; it never hangs and never reports success
//! for data the broker did not take.

use std::time::{Duration, Instant};

use amqp_tests::hostile::{HostileBroker, Peer, RABBITMQ_TUNE};
use amqp_wire::methods::{ChannelOpenOk, ConnectionTune};

use crate::support::{Out, amqp_with};

/// Runs the binary off the runtime's threads (it blocks), timing it.
async fn run(
    args: &'static [&'static str],
    input: Option<Vec<u8>>,
    url: String,
) -> (Out, Duration) {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let out = amqp_with(args, input.as_deref(), &url);
        (out, started.elapsed())
    })
    .await
    .expect("the binary ran")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_from_a_broker_that_answers_garbage_fails_within_two_seconds() {
    let broker = HostileBroker::start(RABBITMQ_TUNE, |mut peer: Peer| async move {
        if peer.serve_until("basic.get").await.is_some() {
            // A frame of an unknown type; then the socket stays open, nothing answered.
            let _ = peer.send_raw(&[9, 0, 1, 0, 0, 0, 1, b'x', 0xce]).await;
            peer.watch_client_leave(Duration::from_secs(20)).await;
        }
    })
    .await;
    let (out, took) = run(&["get", "-q", "jobs"], None, broker.url()).await;
    let out = out.fails(1);
    assert!(
        took < Duration::from_secs(2),
        "exited after {took:?}: {out:#?}"
    );
    assert!(out.stderr.contains("501"), "says why: {out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_into_a_broker_that_stops_reading_fails() {
    let tune = ConnectionTune {
        heartbeat: 1,
        ..RABBITMQ_TUNE
    };
    let broker = HostileBroker::start(tune, |mut peer: Peer| async move {
        if let Some((channel, _)) = peer.serve_until("channel.open").await {
            let _ = peer.send_method(channel.0, ChannelOpenOk).await;
            peer.stop_reading(Duration::from_millis(300), Duration::from_secs(60))
                .await;
        }
    })
    .await;
    // 80 MB of lines: far more than the socket's buffers and the client's output bound.
    let line = [b'x'; 1023]
        .iter()
        .chain(b"\n")
        .copied()
        .collect::<Vec<u8>>();
    let input = line.repeat(80 * 1024);
    let (out, took) = run(&["publish", "-k", "jobs"], Some(input), broker.url()).await;
    let out = out.fails(1);
    assert!(
        took < Duration::from_secs(20),
        "exited after {took:?}: {out:#?}"
    );
    assert!(out.stderr.contains("read nothing"), "says why: {out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rpc_to_a_broker_that_never_confirms_ends_at_its_timeout() {
    let broker = HostileBroker::start(RABBITMQ_TUNE, |mut peer: Peer| async move {
        // Answers the set-up, reads the request, and never confirms it.
        peer.serve_until("never").await;
    })
    .await;
    let (out, took) = run(
        &["rpc", "-k", "calc", "--body", "2+2", "--timeout", "2"],
        None,
        broker.url(),
    )
    .await;
    out.fails(1);
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "exited after {took:?}"
    );
}

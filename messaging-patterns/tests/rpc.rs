//! RPC against the real broker: many calls in flight, both reply modes, timeouts, unroutable
//! requests, remote errors, envelopes, and a server shutdown that still answers.

mod common;

use std::time::{Duration, Instant};

use common::{connect, prefix, within};
use messaging_patterns::codec::{Json, Raw};
use messaging_patterns::rpc::{
    Envelope, ReplyQueue, RpcClient, RpcClientOptions, RpcError, RpcServer, RpcServerOptions,
};

type Pair = Json<(i64, i64)>;

async fn adder(conn: &amqp_client::Connection, p: &str, concurrency: usize) -> RpcServer {
    let options = RpcServerOptions {
        prefix: p.to_owned(),
        concurrency,
        ..Default::default()
    };
    RpcServer::serve(
        conn,
        "add",
        Pair::new(),
        Json::<i64>::new(),
        options,
        |request| async move {
            let (a, b) = request.payload;
            if a < 0 {
                return Err(format!("negative input {a}"));
            }
            if a == 666 {
                panic!("the number of the beast");
            }
            tokio::time::sleep(Duration::from_millis(u64::try_from(b).unwrap_or(0) % 1000)).await;
            Ok(a + b)
        },
    )
    .await
    .unwrap()
}

async fn client(
    conn: &amqp_client::Connection,
    p: &str,
    reply_queue: ReplyQueue,
    timeout_ms: u64,
) -> RpcClient<Pair, Json<i64>> {
    let options = RpcClientOptions {
        prefix: p.to_owned(),
        reply_queue,
        timeout: Duration::from_millis(timeout_ms),
    };
    RpcClient::new(conn, Pair::new(), Json::new(), options)
        .await
        .unwrap()
}

async fn delete_queue(conn: &amqp_client::Connection, queue: &str) {
    let channel = conn.open_channel().await.unwrap();
    channel
        .queue_delete(queue, Default::default())
        .await
        .unwrap();
    channel.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_in_flight_on_one_channel_both_reply_modes() {
    let conn = connect().await;
    let p = prefix("rpc-ok");
    let server = adder(&conn, &p, 16).await;
    for mode in [ReplyQueue::DirectReplyTo, ReplyQueue::Exclusive] {
        let client = client(&conn, &p, mode, 10_000).await;
        let calls = (0..50i64).map(|n| {
            let client = client.clone();
            async move { client.call("add", &(n, 50)).await }
        });
        let started = Instant::now();
        let results = within(20, "50 calls", futures_util::future::join_all(calls)).await;
        for (n, result) in results.into_iter().enumerate() {
            assert_eq!(result.unwrap(), i64::try_from(n).unwrap() + 50);
        }
        // 50 calls of 50 ms each (2.5 s one by one), 16 at a time on the server.
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(client.in_flight(), 0);
        client.close().await.unwrap();
    }
    server.shutdown().await.unwrap();
    delete_queue(&conn, &format!("{p}add")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_times_out_cleans_up_and_the_client_goes_on() {
    let conn = connect().await;
    let p = prefix("rpc-timeout");
    let server = adder(&conn, &p, 2).await;
    let client = client(&conn, &p, ReplyQueue::DirectReplyTo, 5_000).await;
    let slow = client
        .call_with(
            "",
            &format!("{p}add"),
            &(1, 900),
            Duration::from_millis(200),
        )
        .await;
    assert!(
        matches!(slow, Err(RpcError::Timeout(t)) if t == Duration::from_millis(200)),
        "{slow:?}"
    );
    assert_eq!(client.in_flight(), 0, "the timed-out call was forgotten");
    // The late reply arrives, is dropped, and does not disturb the next call.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(client.call("add", &(2, 3)).await.unwrap(), 5);
    client.close().await.unwrap();
    server.shutdown().await.unwrap();
    delete_queue(&conn, &format!("{p}add")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_request_is_a_clear_error() {
    let conn = connect().await;
    let p = prefix("rpc-unroutable");
    let client = client(&conn, &p, ReplyQueue::DirectReplyTo, 5_000).await;
    let started = Instant::now();
    let result = client.call("nobody-serves-this", &(1, 2)).await;
    match result {
        Err(RpcError::Unroutable {
            exchange,
            routing_key,
        }) => {
            assert_eq!(exchange, "");
            assert_eq!(routing_key, format!("{p}nobody-serves-this"));
        }
        other => panic!("expected Unroutable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2), "not a timeout");
    assert_eq!(client.in_flight(), 0);
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_panics_and_unreadable_requests_come_back_as_remote_errors() {
    let conn = connect().await;
    let p = prefix("rpc-remote");
    let server = adder(&conn, &p, 1).await;
    let client = client(&conn, &p, ReplyQueue::DirectReplyTo, 5_000).await;
    let err = client.call("add", &(-1, 0)).await.unwrap_err();
    assert_eq!(err.to_string(), "the server failed: negative input -1");
    let err = client.call("add", &(666, 0)).await.unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote(m) if m == "handler panicked: the number of the beast"),
        "{err:?}"
    );
    // The server survives both, and a request it cannot read.
    let raw = RpcClient::new(
        &conn,
        Raw,
        Raw,
        RpcClientOptions {
            prefix: p.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let err = raw
        .call("add", &bytes::Bytes::from_static(b"not json"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote(m) if m.starts_with("unreadable request: content type")),
        "{err:?}"
    );
    assert_eq!(client.call("add", &(1, 1)).await.unwrap(), 2);
    server.shutdown().await.unwrap();
    delete_queue(&conn, &format!("{p}add")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_carry_success_and_failure() {
    let conn = connect().await;
    let p = prefix("rpc-envelope");
    let options = RpcServerOptions {
        prefix: p.clone(),
        ..Default::default()
    };
    let server = RpcServer::serve(
        &conn,
        "stock",
        Json::<String>::new(),
        Json::<Envelope<u32>>::new(),
        options,
        |request| async move {
            let result = match request.payload.as_str() {
                "apple" => Ok(12),
                other => Err(format!("no such item {other}")),
            };
            Ok::<_, String>(Envelope::from_result(result))
        },
    )
    .await
    .unwrap();
    let client = RpcClient::new(
        &conn,
        Json::<String>::new(),
        Json::<Envelope<u32>>::new(),
        RpcClientOptions {
            prefix: p.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let ok = client.call("stock", &"apple".to_owned()).await.unwrap();
    assert_eq!(ok.into_result().unwrap(), Some(12));
    let failed = client.call("stock", &"pear".to_owned()).await.unwrap();
    assert_eq!(
        failed.into_result().unwrap_err().to_string(),
        "the server failed: no such item pear"
    );
    server.shutdown().await.unwrap();
    delete_queue(&conn, &format!("{p}stock")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutting_down_still_answers_the_call_it_is_running() {
    let conn = connect().await;
    let p = prefix("rpc-shutdown");
    let server = adder(&conn, &p, 1).await;
    let client = client(&conn, &p, ReplyQueue::DirectReplyTo, 5_000).await;
    let call = tokio::spawn({
        let client = client.clone();
        async move { client.call("add", &(1, 400)).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    within(5, "the shutdown", server.shutdown()).await.unwrap();
    assert_eq!(call.await.unwrap().unwrap(), 401);
    assert_eq!(
        common::depth(&conn, &format!("{p}add")).await,
        0,
        "the request was acked"
    );
    delete_queue(&conn, &format!("{p}add")).await;
}

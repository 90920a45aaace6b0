//! The RPC contract: every reply is `{"success": bool, "data": {...}, "message": str|null}`,
//! with `data` never null, whether the handler succeeded, failed, panicked, timed out, or
//! the request could not be read; from an `RpcServer` and from a dispatcher consumer.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use amqp_client::{BasicProperties, Channel, PublishOptions, QueueDeclareOptions, ShortStr};
use common::dispatch::{confirming, declared, delete, start, stop};
use common::{connect, prefix, within};
use messaging_patterns::codec::Json;
use messaging_patterns::dispatcher::Registry;
use messaging_patterns::rpc::{Envelope, RpcServer, RpcServerOptions};
use serde_json::{Value, json};

/// Sends requests (body, content type) with `reply_to` and correlation ids 0, 1, ...
async fn requests(channel: &Channel, queue: &str, reply_to: &str, bodies: &[(&str, &str)]) {
    for (n, (body, content_type)) in bodies.iter().enumerate() {
        let props = BasicProperties {
            reply_to: Some(ShortStr::try_from(reply_to).unwrap()),
            correlation_id: Some(ShortStr::try_from(n.to_string().as_str()).unwrap()),
            content_type: Some(ShortStr::try_from(*content_type).unwrap()),
            ..Default::default()
        };
        let confirm = channel
            .publish(
                "",
                queue,
                PublishOptions::default(),
                props,
                body.to_string(),
            )
            .await
            .unwrap();
        confirm.await.unwrap();
    }
}

/// The replies by correlation id, each checked to have the envelope's shape.
async fn replies(channel: &Channel, queue: &str, count: usize) -> HashMap<String, Value> {
    let mut got = HashMap::new();
    within(20, "every reply", async {
        while got.len() < count {
            let Some(reply) = channel.get(queue, true).await.unwrap() else {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            let props = &reply.delivery.properties;
            let id = props.correlation_id.as_ref().unwrap().to_string();
            let body: Value = serde_json::from_slice(&reply.delivery.body).unwrap_or_else(|e| {
                panic!("reply {id} is not JSON ({e}): {:?}", reply.delivery.body)
            });
            let object = body.as_object().unwrap();
            let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
            keys.sort_unstable();
            assert_eq!(keys, ["data", "message", "success"], "{body}");
            assert!(body["success"].is_boolean(), "{body}");
            assert!(body["data"].is_object(), "data is never null: {body}");
            assert!(
                body["message"].is_string() || body["message"].is_null(),
                "{body}"
            );
            got.insert(id, body);
        }
    })
    .await;
    got
}

async fn reply_queue(channel: &Channel, name: &str) {
    let options = QueueDeclareOptions {
        exclusive: true,
        ..Default::default()
    };
    channel.queue_declare(name, options).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_server_answers_every_outcome_with_the_envelope() {
    let conn = connect().await;
    let p = prefix("rpc-contract");
    let options = RpcServerOptions {
        prefix: p.clone(),
        concurrency: 4,
        envelope_errors: true,
        handler_timeout: Some(Duration::from_millis(300)),
        ..Default::default()
    };
    let server = RpcServer::serve(
        &conn,
        "svc",
        Json::<u32>::new(),
        Json::<Envelope<Value>>::new(),
        options,
        |request| async move {
            match request.payload {
                0 => Ok(Envelope::ok(json!({"n": 0}))),
                1 => Err("refused".to_owned()),
                2 => panic!("handler bug"),
                _ => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    Ok(Envelope::ok(json!({})))
                }
            }
        },
    )
    .await
    .unwrap();
    let channel = confirming(&conn).await;
    let replies_to = format!("{p}replies");
    reply_queue(&channel, &replies_to).await;
    let json = "application/json";
    let bodies = [
        ("0", json),
        ("1", json),
        ("2", json),
        ("3", json),
        ("{not json", json),
    ];
    requests(&channel, server.queue(), &replies_to, &bodies).await;
    let got = replies(&channel, &replies_to, bodies.len()).await;
    assert_eq!(
        got["0"],
        json!({"success": true, "data": {"n": 0}, "message": null})
    );
    assert_eq!(
        got["1"],
        json!({"success": false, "data": {}, "message": "refused"})
    );
    assert_eq!(got["2"]["message"], "handler panicked: handler bug");
    assert!(
        got["3"]["message"]
            .as_str()
            .unwrap()
            .starts_with("handler timed out after")
    );
    assert!(
        got["4"]["message"]
            .as_str()
            .unwrap()
            .starts_with("unreadable request")
    );
    assert!((1..=4).all(|n| got[&n.to_string()]["success"] == false));
    let queue = server.queue().to_owned();
    server.shutdown().await.unwrap();
    delete(&conn, &[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_rpc_consumer_answers_failures_and_timeouts_with_the_envelope() {
    let conn = connect().await;
    let p = prefix("dispatch-rpc");
    let queue = format!("{p}q");
    let replies_to = format!("{p}replies");
    let script = "read line; case \"$line\" in fail) exit 3;; slow) sleep 5;; plain) echo plain; exit;; esac; \
                  printf '{\"success\":true,\"data\":{\"echo\":\"%s\"},\"message\":null}' \"$line\"";
    let yaml = format!(
        "queues:\n  - name: {queue}\n\
         consumers:\n  - command: [sh, -c, {script:?}]\n    queue: {queue}\n    rpc: true\n\
         \x20   on_failure: dead_letter\n    command_timeout_ms: 300\n    restart_pause_ms: 0\n\
         \x20   reply_queues: [{replies_to}]\n"
    );
    let run = start(&yaml, Registry::new());
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    reply_queue(&channel, &replies_to).await;
    let bodies = [
        ("hi\n", "text/plain"),
        ("fail\n", "text/plain"),
        ("slow\n", "text/plain"),
        ("plain\n", "text/plain"),
    ];
    requests(&channel, &queue, &replies_to, &bodies).await;
    let got = replies(&channel, &replies_to, bodies.len()).await;
    assert_eq!(
        got["0"],
        json!({"success": true, "data": {"echo": "hi"}, "message": null})
    );
    assert_eq!(got["1"]["success"], false);
    assert!(
        got["1"]["message"]
            .as_str()
            .unwrap()
            .contains("exit status: 3"),
        "{}",
        got["1"]
    );
    assert!(
        got["2"]["message"]
            .as_str()
            .unwrap()
            .contains("ran longer than"),
        "{}",
        got["2"]
    );
    let plain = got["3"]["message"].as_str().unwrap();
    assert!(plain.contains("not the JSON envelope"), "{plain}");
    stop(run).await;
    delete(&conn, &[&queue], &[]).await;
}

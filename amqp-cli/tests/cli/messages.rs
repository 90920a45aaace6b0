//! publish, get, consume and rpc against the broker.

use std::time::Duration;

use amqp_client::{BasicProperties, Connection, PublishOptions, QueueDeclareOptions};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::support::{TempQueue, amqp, amqp_stdin, amqp_url, require_broker, unique, url_user};

#[test]
fn publish_then_get_with_properties() {
    let q = TempQueue::new("get");
    // RabbitMQ refuses a user-id that is not the connection's user.
    let user = url_user();
    let out = amqp(&[
        "publish",
        "-k",
        &q.0,
        "--body",
        "hello",
        "--confirm",
        "--content-type",
        "text/plain",
        "--content-encoding",
        "identity",
        "--correlation-id",
        "c-1",
        "--reply-to",
        "replies",
        "--expiration",
        "60000",
        "--message-id",
        "m-1",
        "--timestamp",
        "1700000000",
        "--type",
        "greeting",
        "--user-id",
        &user,
        "--app-id",
        "amqp-cli-test",
        "--cluster-id",
        "cl",
        "--priority",
        "3",
        "--persistent",
    ])
    .ok();
    assert_eq!(out.stdout, "");
    let got = amqp(&["get", "-q", &q.0, "--json"]).ok().json_lines();
    assert_eq!(got.len(), 1);
    let m = &got[0];
    assert_eq!(
        (&m["body"], &m["body_encoding"]),
        (&json!("hello"), &json!("utf8"))
    );
    assert_eq!(
        (&m["exchange"], &m["routing_key"]),
        (&json!(""), &json!(q.0))
    );
    assert_eq!(
        (&m["redelivered"], &m["message_count"]),
        (&json!(false), &json!(0))
    );
    let want = json!({
        "content_type": "text/plain", "content_encoding": "identity", "delivery_mode": 2,
        "priority": 3, "correlation_id": "c-1", "reply_to": "replies", "expiration": "60000",
        "message_id": "m-1", "timestamp": 1_700_000_000, "type": "greeting", "user_id": user,
        "app_id": "amqp-cli-test", "cluster_id": "cl",
    });
    assert_eq!(m["properties"], want);
    assert_eq!(m["headers"], json!({}));

    let empty = amqp(&["get", "-q", &q.0]).ok();
    assert_eq!(empty.stdout, "");
    assert!(empty.stderr.contains("is empty"), "{empty:?}");
}

#[test]
fn stdin_lines_and_files_are_messages() {
    let q = TempQueue::new("lines");
    amqp_stdin(&["publish", "-k", &q.0, "--confirm"], b"one\ntwo\nthree\n").ok();
    let file = std::env::temp_dir().join(format!("{}.bin", unique("body")));
    std::fs::write(&file, [0u8, 159, 146, 150]).unwrap();
    amqp(&["publish", "-k", &q.0, "--file", file.to_str().unwrap()]).ok();
    let _ = std::fs::remove_file(&file);

    let out = amqp(&["consume", "-q", &q.0, "--count", "3", "--timeout", "10"]).ok();
    assert_eq!(out.lines(), ["one", "two", "three"]);
    let binary = amqp(&[
        "consume",
        "-q",
        &q.0,
        "-n",
        "1",
        "--json",
        "--timeout",
        "10",
    ])
    .ok();
    let m = &binary.json_lines()[0];
    assert_eq!(
        (&m["body"], &m["body_encoding"]),
        (&json!("AJ+Slg=="), &json!("base64"))
    );

    let too_few = amqp(&["consume", "-q", &q.0, "-n", "1", "--timeout", "0.5"]).fails(1);
    assert!(
        too_few
            .stderr
            .contains(&format!("got 0 of 1 messages from queue \"{}\"", q.0))
    );
}

/// Every field-table type: as `--header` takes it, and the type and value `consume --json`
/// prints for it.
fn header_cases() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("s=plain", "string", json!("plain")),
        ("bool:bool=true", "bool", json!(true)),
        ("i8:i8=-8", "i8", json!(-8)),
        ("u8:u8=200", "u8", json!(200)),
        ("i16:i16=-1600", "i16", json!(-1600)),
        ("u16:u16=60000", "u16", json!(60000)),
        ("i32:int=-320000", "i32", json!(-320_000)),
        ("u32:u32=4000000000", "u32", json!(4_000_000_000u64)),
        ("i64:long=-6400000000", "i64", json!(-6_400_000_000i64)),
        ("f32:f32=1.5", "f32", json!(1.5)),
        ("f64:f64=-2.25", "f64", json!(-2.25)),
        ("dec:decimal=123.45", "decimal", json!("123.45")),
        ("bin:bytes=hex:00ff10", "bytes", json!("AP8Q")),
        ("ts:timestamp=1700000000", "timestamp", json!(1_700_000_000)),
        ("nothing:void", "void", Value::Null),
        (
            r#"tab:table={"n":{"type":"u8","value":7},"s":"x"}"#,
            "table",
            json!({"n": {"type": "u8", "value": 7}, "s": {"type": "string", "value": "x"}}),
        ),
        (
            r#"arr:array=[1,"two",{"type":"bool","value":false}]"#,
            "array",
            json!([
                {"type": "i64", "value": 1},
                {"type": "string", "value": "two"},
                {"type": "bool", "value": false}
            ]),
        ),
    ]
}

#[test]
fn every_header_type_comes_back_typed_in_consume_json() {
    let q = TempQueue::new("headers");
    let cases = header_cases();
    let mut args = vec![
        "publish",
        "-k",
        q.0.as_str(),
        "--body",
        "typed",
        "--confirm",
    ];
    for (spec, _, _) in &cases {
        args.extend(["--header", spec]);
    }
    amqp(&args).ok();
    let out = amqp(&[
        "consume",
        "-q",
        &q.0,
        "--count",
        "1",
        "--json",
        "--timeout",
        "10",
    ])
    .ok();
    let m = &out.json_lines()[0];
    let headers = m["headers"].as_object().expect("headers object");
    assert_eq!(headers.len(), cases.len(), "{headers:?}");
    for (spec, ty, value) in cases {
        let key = spec.split([':', '=']).next().unwrap();
        let got = &headers[key];
        assert_eq!(got["type"], ty, "{spec}: {got}");
        assert_eq!(got["value"], value, "{spec}: {got}");
    }
    assert_eq!(headers["bin"]["encoding"], "base64");
}

/// A responder on its own connection: upper-cases each request into its reply-to queue.
fn spawn_responder(queue: String) -> std::sync::mpsc::Receiver<()> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let conn = Connection::connect(&amqp_url()).await.unwrap();
            let channel = conn.open_channel().await.unwrap();
            let options = QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            };
            channel.queue_declare(&queue, options).await.unwrap();
            let mut requests = channel.consume(&queue, Default::default()).await.unwrap();
            ready_tx.send(()).unwrap();
            let serve = async {
                while let Some(Ok(request)) = requests.next().await {
                    let reply_to = request.properties.reply_to.clone().unwrap().to_string();
                    let props = BasicProperties {
                        correlation_id: request.properties.correlation_id.clone(),
                        ..Default::default()
                    };
                    let body = String::from_utf8_lossy(&request.body).to_uppercase();
                    let options = PublishOptions::default();
                    let _ = channel.publish("", &reply_to, options, props, body).await;
                    request.ack().await.unwrap();
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(20), serve).await;
        });
    });
    ready_rx
}

#[test]
fn rpc_prints_the_reply() {
    require_broker();
    let queue = unique("rpc");
    let ready = spawn_responder(queue.clone());
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("responder up");
    let out = amqp(&[
        "rpc",
        "-k",
        &queue,
        "--body",
        "hello rpc",
        "--timeout",
        "10",
    ])
    .ok();
    assert_eq!(out.stdout, "HELLO RPC\n");
    let json = amqp(&[
        "rpc",
        "-k",
        &queue,
        "--body",
        "j",
        "--json",
        "--correlation-id",
        "my-id",
    ])
    .ok()
    .json_lines();
    assert_eq!(json[0]["body"], "J");
    assert_eq!(json[0]["properties"]["correlation_id"], "my-id");

    let silent = TempQueue::new("rpc-silent");
    let out = amqp(&["rpc", "-k", &silent.0, "--body", "x", "--timeout", "0.5"]).fails(1);
    assert!(
        out.stderr.contains("no reply to exchange \"\" routing key"),
        "{out:?}"
    );
    let nobody = unique("rpc-nobody");
    let out = amqp(&["rpc", "-k", &nobody, "--body", "x"]).fails(1);
    assert!(out.stderr.contains("312 NO_ROUTE"), "{out:?}");
}

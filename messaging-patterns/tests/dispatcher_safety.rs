//! The dispatcher's failure modes against the real broker: poison messages, a message that
//! cannot be handed over, a publish to a missing exchange, a consumer the broker cancels,
//! the handlers' environment and replies, concurrency as configured, and the probes.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use amqp_client::{BasicProperties, FieldTable, FieldValue, PublishOptions, ShortStr};
use bytes::Bytes;
use common::dispatch::{confirming, declared, delete, get_within, publish, sigterm, start, stop};
use common::{connect, depth, prefix, url, within};
use messaging_patterns::dispatcher::{Handler, HandlerError, Message, MessageHandle, Registry};

/// Fails on "bad", publishes to a missing exchange on "publish-missing", records the rest.
#[derive(Clone, Default)]
struct Picky {
    bad_attempts: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<String>>>,
    running: Arc<AtomicU32>,
    peak: Arc<AtomicU32>,
    delay: Duration,
}

impl Handler for Picky {
    async fn consume(
        &mut self,
        message: Message,
        handle: &MessageHandle,
    ) -> Result<(), HandlerError> {
        let body = String::from_utf8_lossy(&message.body).into_owned();
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        match body.as_str() {
            "bad" => {
                self.bad_attempts.fetch_add(1, Ordering::SeqCst);
                return Err(HandlerError("always fails".into()));
            }
            "publish-missing" => {
                let props = BasicProperties::default();
                handle
                    .publish("no-such-exchange-anywhere", "k", false, props, Bytes::new())
                    .await?;
            }
            _ => {}
        }
        self.seen.lock().unwrap().push(body);
        Ok(())
    }
}

fn registry(handler: &Picky) -> Registry {
    let handler = handler.clone();
    let mut registry = Registry::new();
    registry.register("picky", move || handler.clone());
    registry
}

async fn seen(handler: &Picky, body: &str) {
    within(20, body, async {
        while !handler.seen.lock().unwrap().iter().any(|b| b == body) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn last_error(delivery: &amqp_client::Delivery) -> String {
    let headers = delivery.properties.headers.as_ref();
    headers
        .and_then(|h| h.get("x-last-error"))
        .and_then(FieldValue::as_str)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_is_dead_lettered_after_max_redeliveries_and_the_next_one_runs() {
    let conn = connect().await;
    let p = prefix("poison");
    let queue = format!("{p}q");
    let yaml = format!(
        "queues:\n  - name: {queue}\n\
         consumers:\n  - {{ handler: picky, queue: {queue}, max_redeliveries: 2, restart_pause_ms: 20 }}\n"
    );
    let handler = Picky::default();
    let run = start(&yaml, registry(&handler));
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    publish(&channel, "", &queue, FieldTable::new(), "bad".into()).await;
    publish(&channel, "", &queue, FieldTable::new(), "good".into()).await;
    seen(&handler, "good").await;
    let dead = get_within(&conn, &format!("{queue}.dead"), 20).await;
    assert_eq!(&dead.body[..], b"bad");
    assert_eq!(last_error(&dead), "always fails");
    assert_eq!(
        handler.bad_attempts.load(Ordering::SeqCst),
        3,
        "the first run and two redeliveries"
    );
    stop(run).await;
    assert_eq!(depth(&conn, &queue).await, 0);
    delete(&conn, &[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_goes_through_a_delay_queue_and_dead_letter_at_once() {
    let conn = connect().await;
    let p = prefix("retry");
    let (retry, dead) = (format!("{p}retry"), format!("{p}dead"));
    let yaml = format!(
        "queues:\n  - name: {retry}\n  - name: {dead}\n\
         consumers:\n\
         \x20 - {{ handler: picky, queue: {retry}, on_failure: retry, retry_delays_ms: [200], max_redeliveries: 1, restart_pause_ms: 0 }}\n\
         \x20 - {{ handler: picky, queue: {dead}, on_failure: dead_letter, restart_pause_ms: 0 }}\n"
    );
    let handler = Picky::default();
    let run = start(&yaml, registry(&handler));
    declared(&conn, &dead).await;
    let channel = confirming(&conn).await;
    publish(&channel, "", &retry, FieldTable::new(), "bad".into()).await;
    let retried = get_within(&conn, &format!("{retry}.dead"), 20).await;
    assert_eq!(
        handler.bad_attempts.load(Ordering::SeqCst),
        2,
        "run, delayed, run again"
    );
    assert_eq!(&retried.body[..], b"bad");
    publish(&channel, "", &dead, FieldTable::new(), "bad".into()).await;
    get_within(&conn, &format!("{dead}.dead"), 20).await;
    assert_eq!(
        handler.bad_attempts.load(Ordering::SeqCst),
        3,
        "dead-lettered at the first failure"
    );
    stop(run).await;
    let delay = format!("{retry}.delay.200");
    delete(&conn, &[&retry, &dead, &delay], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_cannot_be_handed_over_goes_to_the_dead_letter_queue_with_the_reason() {
    let conn = connect().await;
    let p = prefix("nul");
    let queue = format!("{p}q");
    let out = std::env::temp_dir().join(format!("{p}out"));
    let script = format!("cat >> '{}'; echo >> '{}'", out.display(), out.display());
    let yaml = format!(
        "queues:\n  - name: {queue}\n\
         consumers:\n  - command: [sh, -c, {script:?}]\n    queue: {queue}\n    restart_pause_ms: 20\n"
    );
    let run = start(&yaml, Registry::new());
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    let mut headers = FieldTable::new();
    headers.insert("tenant", "a\0b");
    publish(&channel, "", &queue, headers, "nul".into()).await;
    publish(&channel, "", &queue, FieldTable::new(), "fine".into()).await;
    let dead = get_within(&conn, &format!("{queue}.dead"), 20).await;
    assert_eq!(&dead.body[..], b"nul");
    let reason = last_error(&dead);
    assert!(
        reason.contains("cannot be handed to the handler") && reason.contains("AMQP_HEADER_TENANT"),
        "{reason}"
    );
    within(20, "the next message handled", async {
        while !std::fs::read_to_string(&out)
            .unwrap_or_default()
            .contains("fine")
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    stop(run).await;
    std::fs::remove_file(&out).unwrap();
    delete(&conn, &[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_to_a_missing_exchange_fails_that_message_only() {
    let conn = connect().await;
    let p = prefix("missing");
    let queue = format!("{p}q");
    let yaml = format!(
        "queues:\n  - name: {queue}\n\
         consumers:\n  - {{ handler: picky, queue: {queue}, on_failure: dead_letter, restart_pause_ms: 20 }}\n"
    );
    let handler = Picky::default();
    let (stop_tx, task) = start(&yaml, registry(&handler));
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    for body in ["before", "publish-missing", "after"] {
        publish(&channel, "", &queue, FieldTable::new(), body.into()).await;
    }
    seen(&handler, "after").await;
    let dead = get_within(&conn, &format!("{queue}.dead"), 20).await;
    assert_eq!(&dead.body[..], b"publish-missing");
    assert!(last_error(&dead).contains("404"), "{}", last_error(&dead));
    assert!(!task.is_finished(), "the dispatcher kept running");
    publish(&channel, "", &queue, FieldTable::new(), "later".into()).await;
    seen(&handler, "later").await;
    stop((stop_tx, task)).await;
    delete(&conn, &[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_the_broker_cancels_consumes_again_or_stops_the_dispatcher() {
    let conn = connect().await;
    let p = prefix("cancel");
    let queue = format!("{p}q");
    let yaml = |on_cancel: &str| {
        format!(
            "queues:\n  - name: {queue}\n\
             consumers:\n  - {{ handler: picky, queue: {queue}, on_cancel: {on_cancel} }}\n"
        )
    };
    let handler = Picky::default();
    let (stop_tx, task) = start(&yaml("resubscribe"), registry(&handler));
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    publish(&channel, "", &queue, FieldTable::new(), "first".into()).await;
    seen(&handler, "first").await;
    channel
        .queue_delete(&queue, Default::default())
        .await
        .unwrap();
    channel
        .queue_declare(
            &queue,
            amqp_client::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    publish(&channel, "", &queue, FieldTable::new(), "second".into()).await;
    seen(&handler, "second").await;
    assert!(!task.is_finished());
    stop((stop_tx, task)).await;

    let (_stop, task) = start(&yaml("exit"), registry(&handler));
    declared(&conn, &queue).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    channel
        .queue_delete(&queue, Default::default())
        .await
        .unwrap();
    let ended = within(10, "the dispatcher to stop", task).await.unwrap();
    assert!(
        ended.unwrap_err().to_string().contains("cancel"),
        "on_cancel: exit"
    );
    delete(&conn, &[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_works_with_the_default_prefetch() {
    let conn = connect().await;
    let p = prefix("prefetch");
    let queue = format!("{p}q");
    let yaml = format!(
        "queues:\n  - name: {queue}\n\
         consumers:\n  - {{ handler: picky, queue: {queue}, consumer_count: 3 }}\n"
    );
    let handler = Picky {
        delay: Duration::from_millis(400),
        ..Default::default()
    };
    let run = start(&yaml, registry(&handler));
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    for n in 0..3 {
        publish(&channel, "", &queue, FieldTable::new(), n.to_string()).await;
    }
    seen(&handler, "0").await;
    seen(&handler, "1").await;
    seen(&handler, "2").await;
    assert_eq!(
        handler.peak.load(Ordering::SeqCst),
        3,
        "three jobs at once, not one after another"
    );
    stop(run).await;
    delete(&conn, &[&queue], &[]).await;
}

/// Runs the binary with a secret in its environment and a command that dumps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_get_a_clean_environment_and_answer_reply_queues_only() {
    let conn = connect().await;
    let p = prefix("env");
    let (queue, victim) = (format!("{p}q"), format!("{p}victim"));
    let dir = std::env::temp_dir().join(format!("{p}dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let dump = dir.join("env");
    let file = dir.join("d.yml");
    std::fs::write(
        &file,
        format!(
            "env: {{ FROM_CONFIG: yes }}\nqueues:\n  - name: {queue}\n  - name: {victim}\n\
             consumers:\n  - command: [sh, -c, \"env > '{}'; echo output\"]\n    queue: {queue}\n",
            dump.display()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_amqp-dispatcher"))
        .args(["--config", file.to_str().unwrap()])
        .env("AMQP_URL", url())
        .env("SECRET_TOKEN", "hunter2")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    declared(&conn, &victim).await;
    let channel = confirming(&conn).await;
    let props = BasicProperties {
        reply_to: Some(ShortStr::try_from(victim.as_str()).unwrap()),
        ..Default::default()
    };
    let confirm = channel
        .publish("", &queue, PublishOptions::default(), props, "x")
        .await
        .unwrap();
    confirm.await.unwrap();
    within(20, "the command to run", async {
        while depth(&conn, &queue).await != 0 || !dump.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let env = std::fs::read_to_string(&dump).unwrap();
    assert!(
        !env.contains("AMQP_URL") && !env.contains("hunter2"),
        "{env}"
    );
    assert!(
        env.contains("FROM_CONFIG=yes") && env.contains("PATH="),
        "{env}"
    );
    assert_eq!(
        depth(&conn, &victim).await,
        0,
        "reply_to may not aim output at any queue"
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    delete(&conn, &[&queue, &victim], &[]).await;
}

async fn http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

async fn probe_until(port: u16, path: &str, status: &str) {
    within(20, status, async {
        while !http_get(port, path)
            .await
            .is_some_and(|r| r.starts_with(status))
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_consumers_and_logs_can_be_json() {
    let conn = connect().await;
    let p = prefix("probes");
    let queue = format!("{p}q");
    let dir = std::env::temp_dir().join(format!("{p}dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("d.yml");
    std::fs::write(
        &file,
        format!("queues:\n  - name: {queue}\nconsumers:\n  - {{ handler: log, queue: {queue} }}\n"),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_amqp-dispatcher"))
        .args([
            "--config",
            file.to_str().unwrap(),
            "--http",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("AMQP_URL", url())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    probe_until(port, "/readyz", "HTTP/1.1 200").await;
    probe_until(port, "/livez", "HTTP/1.1 200").await;
    let channel = confirming(&conn).await;
    channel
        .queue_delete(&queue, Default::default())
        .await
        .unwrap();
    probe_until(port, "/readyz", "HTTP/1.1 503").await;
    let options = amqp_client::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(&queue, options).await.unwrap();
    probe_until(port, "/readyz", "HTTP/1.1 200").await;
    sigterm(&child);
    let out = within(20, "the dispatcher to exit", child.wait_with_output())
        .await
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let first = stderr.lines().next().unwrap_or_default();
    let line: serde_json::Value =
        serde_json::from_str(first).unwrap_or_else(|e| panic!("{e}: {first}"));
    assert!(
        line["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("from AMQP_URL"),
        "{first}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    delete(&conn, &[&queue], &[]).await;
}

/// Hands every message back unsettled (`basic.nack` requeue), as a handler that crashes
/// mid-message would leave it.
#[derive(Clone, Default)]
struct GiveBack(Arc<AtomicU32>);

impl Handler for GiveBack {
    async fn consume(&mut self, _: Message, handle: &MessageHandle) -> Result<(), HandlerError> {
        self.0.fetch_add(1, Ordering::SeqCst);
        handle.nack(true).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_quorum_queue_the_brokers_delivery_count_stops_a_message_that_keeps_coming_back() {
    let conn = connect().await;
    let p = prefix("quorum");
    let queue = format!("{p}q");
    let yaml = format!(
        "queues:\n  - name: {queue}\n    arguments: {{ x-queue-type: quorum }}\n\
         consumers:\n  - {{ handler: give-back, queue: {queue}, max_redeliveries: 2 }}\n"
    );
    let handler = GiveBack::default();
    let runs = handler.0.clone();
    let mut registry = Registry::new();
    registry.register("give-back", move || handler.clone());
    let run = start(&yaml, registry);
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    publish(&channel, "", &queue, FieldTable::new(), "again".into()).await;
    let dead = get_within(&conn, &format!("{queue}.dead"), 20).await;
    assert!(
        last_error(&dead).contains("more than max_redeliveries (2)"),
        "{}",
        last_error(&dead)
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "delivery counts 0, 1 and 2 ran; 3 did not"
    );
    stop(run).await;
    delete(&conn, &[&queue], &[]).await;
}

//! The dispatcher against the real broker: declaring from YAML, instances replaced after a
//! failure or panic, exclusivity keys under concurrency, graceful shutdown with 1,000
//! messages in flight, external commands (with replies), and the binary itself.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amqp_client::{BasicProperties, FieldTable, PublishOptions};
use bytes::Bytes;
use common::dispatch::{confirming, declared, delete, publish, sigterm, start, stop};
use common::{connect, depth, prefix, url, within};
use messaging_patterns::codec::Raw;
use messaging_patterns::dispatcher::{Handler, HandlerError, Message, MessageHandle, Registry};
use messaging_patterns::rpc::{RpcClient, RpcClientOptions};

/// Records every body it handles.
#[derive(Clone, Default)]
struct Collect {
    started: Arc<AtomicU32>,
    seen: Arc<Mutex<Vec<String>>>,
    delay: Duration,
}

impl Handler for Collect {
    async fn consume(&mut self, message: Message, _: &MessageHandle) -> Result<(), HandlerError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        let body = String::from_utf8_lossy(&message.body).into_owned();
        self.seen.lock().unwrap().push(body);
        Ok(())
    }
}

async fn wait_for_count(seen: &Mutex<Vec<String>>, n: usize) {
    within(20, "messages to be handled", async {
        while seen.lock().unwrap().len() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declares_from_yaml_and_consumes_with_several_instances() {
    let conn = connect().await;
    let p = prefix("dispatch");
    let yaml = format!(
        "exchanges:\n  - {{ name: {p}ex, type: topic }}\n\
         queues:\n  - name: {p}q\n    arguments: {{ x-max-length: 1000 }}\n    bindings:\n      - {{ exchange: {p}ex, routing_key: 'order.#' }}\n\
         consumers:\n  - {{ handler: collect, queue: {p}q, consumer_count: 3, prefetch_count: 10 }}\n"
    );
    let collect = Collect {
        delay: Duration::from_millis(5),
        ..Default::default()
    };
    let seen = collect.seen.clone();
    let mut registry = Registry::new();
    registry.register("collect", move || collect.clone());
    let run = start(&yaml, registry);
    declared(&conn, &format!("{p}q")).await;
    let channel = confirming(&conn).await;
    for n in 0..30 {
        publish(
            &channel,
            &format!("{p}ex"),
            "order.created",
            FieldTable::new(),
            n.to_string(),
        )
        .await;
    }
    publish(
        &channel,
        &format!("{p}ex"),
        "invoice.created",
        FieldTable::new(),
        "not bound".into(),
    )
    .await;
    wait_for_count(&seen, 30).await;
    stop(run).await;
    let mut got: Vec<u32> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    assert_eq!(depth(&conn, &format!("{p}q")).await, 0);
    delete(&conn, &[&format!("{p}q")], &[&format!("{p}ex")]).await;
}

/// Fails (by panic or error) on the first "boom" and "fail" it sees, process-wide.
#[derive(Clone)]
struct Fragile {
    created: Arc<Mutex<Vec<Instant>>>,
    shut_down: Arc<AtomicU32>,
    blown: Arc<AtomicBool>,
    failed: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(String, bool)>>>,
}

impl Handler for Fragile {
    async fn consume(&mut self, message: Message, _: &MessageHandle) -> Result<(), HandlerError> {
        let body = String::from_utf8_lossy(&message.body).into_owned();
        if body == "boom" && !self.blown.swap(true, Ordering::SeqCst) {
            panic!("boom");
        }
        if body == "fail" && !self.failed.swap(true, Ordering::SeqCst) {
            return Err(HandlerError("failed".into()));
        }
        // A failed message comes back as a copy that counts its failures.
        let retried = message
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-retry-count"))
            .and_then(amqp_client::FieldValue::as_i64)
            == Some(1);
        self.seen.lock().unwrap().push((body, retried));
        Ok(())
    }

    async fn shutdown(&mut self) {
        self.shut_down.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_panicked_instance_is_replaced_after_its_pause_and_its_message_kept() {
    let conn = connect().await;
    let p = prefix("replace");
    let yaml = format!(
        "queues:\n  - name: {p}q\n\
         consumers:\n  - {{ handler: fragile, queue: {p}q, consumer_count: 2, restart_pause_ms: 300 }}\n"
    );
    let fragile = Fragile {
        created: Arc::default(),
        shut_down: Arc::default(),
        blown: Arc::default(),
        failed: Arc::default(),
        seen: Arc::default(),
    };
    let probe = fragile.clone();
    let mut registry = Registry::new();
    registry.register("fragile", move || {
        fragile.created.lock().unwrap().push(Instant::now());
        fragile.clone()
    });
    let run = start(&yaml, registry);
    declared(&conn, &format!("{p}q")).await;
    let channel = confirming(&conn).await;
    let failed_at = Instant::now();
    for body in ["boom", "fail", "a", "b"] {
        publish(
            &channel,
            "",
            &format!("{p}q"),
            FieldTable::new(),
            body.into(),
        )
        .await;
    }
    within(
        10,
        "every message handled and both instances replaced",
        async {
            while probe.seen.lock().unwrap().len() < 4 || probe.created.lock().unwrap().len() < 4 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        },
    )
    .await;
    let seen = probe.seen.lock().unwrap().clone();
    assert!(seen.contains(&("boom".into(), true)), "{seen:?}");
    assert!(seen.contains(&("fail".into(), true)), "{seen:?}");
    let created = probe.created.lock().unwrap().clone();
    assert_eq!(created.len(), 4, "two instances, each replaced once");
    for replacement in &created[2..] {
        assert!(
            *replacement - failed_at >= Duration::from_millis(300),
            "replaced after the pause"
        );
    }
    assert_eq!(
        probe.shut_down.load(Ordering::SeqCst),
        2,
        "the failed instances were shut down"
    );
    stop(run).await;
    assert_eq!(
        probe.shut_down.load(Ordering::SeqCst),
        4,
        "and the others on shutdown"
    );
    delete(&conn, &[&format!("{p}q")], &[]).await;
}

/// Checks that no two messages with the same key run at once, and records per-key order.
#[derive(Clone, Default)]
struct Exclusive {
    active: Arc<Mutex<HashMap<String, u32>>>,
    running: Arc<AtomicU32>,
    peak: Arc<AtomicU32>,
    violated: Arc<AtomicBool>,
    order: Arc<Mutex<HashMap<String, Vec<u32>>>>,
}

impl Handler for Exclusive {
    async fn consume(&mut self, message: Message, _: &MessageHandle) -> Result<(), HandlerError> {
        let body = String::from_utf8_lossy(&message.body).into_owned();
        let (key, n) = body.split_once(':').unwrap();
        let (key, n) = (key.to_owned(), n.parse::<u32>().unwrap());
        {
            let mut active = self.active.lock().unwrap();
            let count = active.entry(key.clone()).or_default();
            if *count > 0 {
                self.violated.store(true, Ordering::SeqCst);
            }
            *count += 1;
        }
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(15)).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        *self.active.lock().unwrap().get_mut(&key).unwrap() -= 1;
        self.order.lock().unwrap().entry(key).or_default().push(n);
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_with_the_same_exclusivity_key_never_run_at_once() {
    let conn = connect().await;
    let p = prefix("exclusive");
    let yaml = format!(
        "queues:\n  - name: {p}q\n\
         consumers:\n  - handler: exclusive\n    queue: {p}q\n    consumer_count: 8\n    prefetch_count: 60\n    exclusivity_key: {{ header: customer }}\n"
    );
    let handler = Exclusive::default();
    let probe = handler.clone();
    let mut registry = Registry::new();
    registry.register("exclusive", move || handler.clone());
    let run = start(&yaml, registry);
    declared(&conn, &format!("{p}q")).await;
    let channel = confirming(&conn).await;
    for n in 0..20 {
        for customer in ["ann", "bob", "cy"] {
            let mut headers = FieldTable::new();
            headers.insert("customer", customer);
            publish(
                &channel,
                "",
                &format!("{p}q"),
                headers,
                format!("{customer}:{n}"),
            )
            .await;
        }
    }
    within(20, "60 messages", async {
        while probe
            .order
            .lock()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum::<usize>()
            < 60
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop(run).await;
    assert!(
        !probe.violated.load(Ordering::SeqCst),
        "two messages of one key ran at once"
    );
    let peak = probe.peak.load(Ordering::SeqCst);
    assert!(
        (2..=3).contains(&peak),
        "different keys ran concurrently (peak {peak})"
    );
    for (key, order) in probe.order.lock().unwrap().iter() {
        assert_eq!(
            *order,
            (0..20).collect::<Vec<_>>(),
            "{key} in arrival order"
        );
    }
    delete(&conn, &[&format!("{p}q")], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_with_a_thousand_messages_in_flight_loses_none() {
    let conn = connect().await;
    let p = prefix("drain");
    let queue = format!("{p}q");
    let yaml = format!(
        "shutdown_timeout_ms: 5000\nqueues:\n  - name: {queue}\n\
         consumers:\n  - {{ handler: collect, queue: {queue}, consumer_count: 10, prefetch_count: 1000 }}\n"
    );
    let collect = Collect {
        delay: Duration::from_millis(10),
        ..Default::default()
    };
    let (seen, started) = (collect.seen.clone(), collect.started.clone());
    let mut registry = Registry::new();
    registry.register("collect", move || collect.clone());
    let run = start(&yaml, registry);
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    let mut confirms = Vec::new();
    for n in 0..1000 {
        let body = n.to_string();
        let publish = channel.publish(
            "",
            &queue,
            PublishOptions::default(),
            BasicProperties::default(),
            body,
        );
        confirms.push(publish.await.unwrap());
    }
    for confirm in confirms {
        confirm.await.unwrap();
    }
    wait_for_count(&seen, 100).await;
    stop(run).await;
    let handled: HashSet<String> = seen.lock().unwrap().iter().cloned().collect();
    assert_eq!(
        handled.len(),
        seen.lock().unwrap().len(),
        "nothing handled twice"
    );
    assert!(
        handled.len() < 1000,
        "stopped with messages in flight ({})",
        handled.len()
    );
    assert_eq!(
        started.load(Ordering::SeqCst) as usize,
        handled.len(),
        "every started handler finished"
    );
    let mut left = HashSet::new();
    within(10, "the rest back in the queue", async {
        while handled.len() + left.len() < 1000 {
            match channel.get(&queue, true).await.unwrap() {
                Some(got) => {
                    left.insert(String::from_utf8_lossy(&got.delivery.body).into_owned());
                }
                None => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    })
    .await;
    assert!(
        handled.is_disjoint(&left),
        "a handled message was also requeued"
    );
    assert_eq!(handled.len() + left.len(), 1000);
    delete(&conn, &[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_startup_command_runs_before_consuming_and_a_failing_one_stops_the_dispatcher() {
    let conn = connect().await;
    let p = prefix("startup");
    let marker = std::env::temp_dir().join(format!("{p}started"));
    let yaml = |command: String| {
        format!(
            "startup_command: [sh, -c, {command:?}]\nqueues:\n  - name: {p}q\nconsumers:\n  - {{ handler: collect, queue: {p}q }}\n"
        )
    };
    let registry = || {
        let mut registry = Registry::new();
        registry.register("collect", Collect::default);
        registry
    };
    let (_stop, task) = start(&yaml("exit 7".into()), registry());
    let failed = within(10, "the failed start", task)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(failed.to_string(), "startup command: sh: exit status: 7");

    let run = start(&yaml(format!("touch '{}'", marker.display())), registry());
    declared(&conn, &format!("{p}q")).await;
    stop(run).await;
    assert!(marker.exists(), "the startup command ran");
    std::fs::remove_file(&marker).unwrap();
    delete(&conn, &[&format!("{p}q")], &[]).await;
}

/// Hangs on "hang", handles anything else at once.
#[derive(Clone, Default)]
struct Hang;

impl Handler for Hang {
    async fn consume(&mut self, message: Message, _: &MessageHandle) -> Result<(), HandlerError> {
        if &message.body[..] == b"hang" {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_past_the_shutdown_deadline_is_cut_off_and_its_message_requeued() {
    let conn = connect().await;
    let p = prefix("deadline");
    let queue = format!("{p}q");
    let yaml = format!(
        "shutdown_timeout_ms: 300
queues:
  - name: {queue}
consumers:
  - {{ handler: hang, queue: {queue} }}
"
    );
    let mut registry = Registry::new();
    registry.register("hang", || Hang);
    let run = start(&yaml, registry);
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    publish(&channel, "", &queue, FieldTable::new(), "hang".into()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopping = Instant::now();
    stop(run).await;
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_secs(5),
        "{took:?}"
    );
    within(10, "the message back in the queue", async {
        while depth(&conn, &queue).await != 1 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    delete(&conn, &[&queue], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_commands_reply_with_stdout_and_a_failure_is_retried() {
    let conn = connect().await;
    let p = prefix("command");
    let marker = std::env::temp_dir().join(format!("{p}marker"));
    let script = format!(
        "if [ -e '{m}' ]; then tr a-z A-Z; printf ' %s %s' \"$AMQP_ROUTING_KEY\" \"$AMQP_HEADER_TENANT\"; \
         else touch '{m}'; exit 3; fi",
        m = marker.display()
    );
    let yaml = format!(
        "queues:\n  - name: {p}upper\n\
         consumers:\n  - command: [sh, -c, {script:?}]\n    queue: {p}upper\n    restart_pause_ms: 100\n"
    );
    let run = start(&yaml, Registry::new());
    declared(&conn, &format!("{p}upper")).await;
    let options = RpcClientOptions {
        prefix: p.clone(),
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let client = RpcClient::new(&conn, Raw, Raw, options).await.unwrap();
    let started = Instant::now();
    let reply = client
        .call("upper", &Bytes::from_static(b"hello"))
        .await
        .unwrap();
    assert_eq!(reply, Bytes::from(format!("HELLO {p}upper ")));
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "the first run failed and was retried"
    );
    assert!(marker.exists());
    std::fs::remove_file(&marker).unwrap();
    client.close().await.unwrap();
    stop(run).await;
    delete(&conn, &[&format!("{p}upper")], &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_validates_and_stops_gracefully_on_sigterm() {
    let p = prefix("binary");
    let dir = std::env::temp_dir().join(format!("{p}dir"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yml");
    std::fs::write(
        &bad,
        "consumers:\n  - handler: log\n    queue: q\n    consumer_count: none\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amqp-dispatcher"))
        .args(["--config", bad.to_str().unwrap(), "--validate"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("consumers[0].consumer_count") && stderr.contains("line 4"),
        "{stderr}"
    );

    let queue = format!("{p}q");
    let log = dir.join("handled");
    let good = dir.join("good.yml");
    let command = format!("cat >> '{}'; echo >> '{}'", log.display(), log.display());
    std::fs::write(
        &good,
        format!(
            "queues:\n  - name: {queue}\nconsumers:\n  - command: [sh, -c, {command:?}]\n    queue: {queue}\n    consumer_count: 4\n    prefetch_count: 100\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_amqp-dispatcher"))
        .args(["--config", good.to_str().unwrap(), "--validate"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_amqp-dispatcher"))
        .args(["--config", good.to_str().unwrap()])
        // Two URLs: the first refuses connections, so connecting takes the second.
        .env(
            "AMQP_URL",
            format!("amqp://guest:guest@127.0.0.1:1/%2f,{}", url()),
        )
        .env("AMQP_HEARTBEAT", "10")
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let conn = connect().await;
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    for n in 0..200 {
        publish(&channel, "", &queue, FieldTable::new(), n.to_string()).await;
    }
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    within(20, "some messages handled", async {
        while lines() < 20 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    sigterm(&child);
    let status = within(20, "the dispatcher to exit", child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
    let handled = lines();
    within(10, "the rest back in the queue", async {
        while handled + depth(&conn, &queue).await as usize != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    delete(&conn, &[&queue], &[]).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

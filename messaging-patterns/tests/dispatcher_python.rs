//! The original amqp-dispatcher's README configuration, verbatim, with Python consumer
//! classes written to its interface, run by the `amqp-dispatcher` binary against RabbitMQ.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use amqp_client::{
    BasicProperties, Channel, Connection, ExchangeKind, FieldValue, PublishOptions,
    QueueDeclareOptions,
};
use common::dispatch::{confirming, declared, delete, get_within, sigterm, start, stop};
use common::{connect, depth, url, within};
use messaging_patterns::dispatcher::Registry;

/// The 0.11 README's startup, queue and worker examples, joined as one file, untouched.
const README: &str = include_str!("fixtures/original-readme.yml");

const STARTUP: &str = r#"
import os

def startup():
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "startup.log"), "a") as log:
        log.write("startup %d\n" % os.getpid())
"#;

/// Written to the original interface: consume(amqp, msg) / shutdown(exception).
const CONSUMER: &str = r#"
import itertools
import os
import time

HERE = os.path.dirname(os.path.abspath(__file__))
LOG = os.path.join(HERE, "..", "NAME.log")
COUNTER = itertools.count()


def log(line):
    with open(LOG, "a") as f:
        f.write(line + "\n")


class Consumer(object):
    def __init__(self):
        self.instance = next(COUNTER)

    def consume(self, amqp, msg):
        body = msg.body.decode()
        print("printing must not break the protocol", body)
        if body == "boom" and not os.path.exists(LOG + ".blown"):
            open(LOG + ".blown", "w").close()
            raise ValueError("boom on first sight")
        if body.startswith("pub:"):
            amqp.publish("notify", "transaction.created", {"x-from": "worker"}, body[4:])
        if body.startswith("slow"):
            time.sleep(0.05)
        tag = msg.delivery_info["delivery_tag"]
        log("consume %d %d %s %s" % (os.getpid(), self.instance, body, tag > 0))
        amqp.ack()

    def shutdown(self, exception=None):
        log("shutdown %d %d %r" % (os.getpid(), self.instance, exception))
"#;

/// Lays out the Python package tree the README's names point at.
fn python_tree(dir: &Path) {
    for (file, text) in [
        ("amqpdispatcher/__init__.py", ""),
        ("amqpdispatcher/example_startup.py", STARTUP),
        ("workers/__init__.py", ""),
        ("workers/module.py", &CONSUMER.replace("NAME", "module")),
        ("workers/module_2.py", &CONSUMER.replace("NAME", "module_2")),
    ] {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What the README takes as given: the exchange, the passive queue, the consumed queues.
async fn broker_setup(conn: &Connection) -> Channel {
    let channel = conn.open_channel().await.unwrap();
    channel
        .exchange_declare("notify", ExchangeKind::Topic, Default::default())
        .await
        .unwrap();
    for queue in [
        "notify_mat_job",
        "notify_apsalar_job",
        "test_queue",
        "test_queue_2",
    ] {
        let options = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel.queue_declare(queue, options).await.unwrap();
        channel.queue_purge(queue).await.unwrap();
    }
    channel.confirm_select().await.unwrap();
    channel
}

async fn cleanup(channel: &Channel) {
    for queue in [
        "notify_mat_job",
        "notify_apsalar_job",
        "test_queue",
        "test_queue_2",
        "test_queue.dead",
        "test_queue_2.dead",
    ] {
        channel
            .queue_delete(queue, Default::default())
            .await
            .unwrap();
    }
    channel.exchange_delete("notify", false).await.unwrap();
}

async fn send(channel: &Channel, queue: &str, body: &str) {
    let confirm = channel
        .publish(
            "",
            queue,
            PublishOptions::default(),
            BasicProperties::default(),
            body.to_owned(),
        )
        .await
        .unwrap();
    confirm.await.unwrap();
}

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    within(30, what, async {
        while !check() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

fn dispatcher(dir: &Path, args: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_amqp-dispatcher"));
    command
        .current_dir(dir)
        .args(args)
        .env_remove("AMQP_URL")
        .env("RABBITMQ_URL", url())
        .env("PYTHONPATH", dir)
        .env("RUST_LOG", "info");
    command
}

fn consumed(log: &[String]) -> Vec<Vec<String>> {
    log.iter()
        .filter(|l| l.starts_with("consume "))
        .map(|l| l.split(' ').map(str::to_owned).collect())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_readme_config_runs_python_consumers_and_stops_on_sigterm() {
    let dir: PathBuf = std::env::temp_dir().join(format!("readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    python_tree(&dir);
    std::fs::write(dir.join("amqp-dispatcher-config.yml"), README).unwrap();
    let conn = connect().await;
    let channel = broker_setup(&conn).await;

    let validate = dispatcher(
        &dir,
        &["--validate", "--config", "amqp-dispatcher-config.yml"],
    )
    .output()
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&validate.stdout);
    assert!(
        validate.status.success(),
        "{said} {}",
        String::from_utf8_lossy(&validate.stderr)
    );
    assert!(said.contains("ok (2 consumers)"), "{said}");
    let broken = README.replace("workers.module_2:Consumer", "workers.missing:Consumer");
    std::fs::write(dir.join("broken.yml"), broken).unwrap();
    let refused = dispatcher(&dir, &["--validate", "--config", "broken.yml"])
        .output()
        .await
        .unwrap();
    let why = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{why}");
    assert!(
        why.contains("[workers.missing:Consumer]")
            && why.contains("No module named 'workers.missing'"),
        "{why}"
    );

    let mut child = dispatcher(&dir, &["--config", "amqp-dispatcher-config.yml"])
        .spawn()
        .unwrap();
    for body in ["a", "pub:hello", "boom", "b"] {
        send(&channel, "test_queue", body).await;
    }
    let module_log = dir.join("module.log");
    wait_until("four messages on test_queue", || {
        consumed(&lines(&module_log)).len() >= 4
    })
    .await;
    let log = lines(&module_log);
    let first = consumed(&log);
    let bodies: HashSet<&str> = first.iter().map(|l| l[3].as_str()).collect();
    assert_eq!(
        bodies,
        HashSet::from(["a", "hello", "boom", "b"].map(|b| if b == "hello" {
            "pub:hello"
        } else {
            b
        }))
    );
    let pids: HashSet<&str> = first.iter().map(|l| l[1].as_str()).collect();
    assert_eq!(
        pids.len(),
        1,
        "one long-lived worker for consumer_count 1: {log:?}"
    );
    assert!(
        first.iter().all(|l| l[4] == "True"),
        "delivery_info has the tag"
    );
    assert!(
        log.iter()
            .any(|l| l.starts_with("shutdown ") && l.contains("ValueError('boom on first sight')")),
        "shutdown(exception) after the failure: {log:?}"
    );
    let boom = first.iter().find(|l| l[3] == "boom").unwrap();
    assert_ne!(
        boom[2], "0",
        "a new instance handled the message again: {log:?}"
    );

    let published = within(10, "the proxied publish", async {
        loop {
            if let Some(got) = channel.get("notify_apsalar_job", true).await.unwrap() {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert_eq!(&published.delivery.body[..], b"hello");
    let header = published
        .delivery
        .properties
        .headers
        .as_ref()
        .and_then(|h| h.get("x-from"));
    assert_eq!(header.and_then(FieldValue::as_str), Some("worker"));

    for n in 0..40 {
        send(&channel, "test_queue_2", &format!("slow{n}")).await;
    }
    let module_2_log = dir.join("module_2.log");
    wait_until("some slow messages", || {
        consumed(&lines(&module_2_log)).len() >= 5
    })
    .await;
    sigterm(&child);
    let status = within(30, "the dispatcher to exit", child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status}");

    let log_2 = lines(&module_2_log);
    let handled: Vec<String> = consumed(&log_2).iter().map(|l| l[3].clone()).collect();
    let unique: HashSet<&String> = handled.iter().collect();
    assert_eq!(unique.len(), handled.len(), "nothing handled twice");
    let workers: HashSet<String> = consumed(&log_2).iter().map(|l| l[1].clone()).collect();
    assert_eq!(workers.len(), 2, "two workers for consumer_count 2");
    let clean = log_2
        .iter()
        .filter(|l| l.starts_with("shutdown") && l.ends_with("None"))
        .count();
    assert_eq!(clean, 2, "each instance shut down with None: {log_2:?}");
    let left = depth(&conn, "test_queue_2").await as usize;
    assert_eq!(handled.len() + left, 40, "nothing lost on SIGTERM");
    let started = lines(&dir.join("startup.log"));
    assert_eq!(
        started.len(),
        3,
        "the startup handler ran first in each worker: {started:?}"
    );

    cleanup(&channel).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

const FLAKY: &str = r#"
import os
import time

LOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flaky.log")


class Consumer:
    def consume(self, amqp, msg):
        body = msg.body.decode()
        if body == "hang":
            time.sleep(30)
        if body == "die":
            os._exit(3)
        if body == "pub-missing":
            amqp.publish("no-such-exchange-for-flaky", "k", {}, b"x")
        with open(LOG, "a") as log:
            log.write("%s %d\n" % (body, os.getpid()))

    def shutdown(self, exception=None):
        pass
"#;

/// A worker that hangs past the timeout is killed, one that dies is replaced, and a publish
/// the broker refuses raises in the class without costing the worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_dead_and_refused_workers_fail_their_message_only() {
    let conn = connect().await;
    let p = common::prefix("flaky");
    let queue = format!("{p}q");
    let dir = std::env::temp_dir().join(format!("{p}dir"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("flaky.py"), FLAKY).unwrap();
    let yaml = format!(
        "env: {{ PYTHONPATH: '{}' }}\nqueues:\n  - name: {queue}\n\
         consumers:\n  - consumer: flaky:Consumer\n    queue: {queue}\n    max_redeliveries: 0\n\
         \x20   restart_pause_ms: 0\n    command_timeout_ms: 2000\n",
        dir.display()
    );
    let run = start(&yaml, Registry::new());
    declared(&conn, &queue).await;
    let channel = confirming(&conn).await;
    for body in ["a", "hang", "b", "die", "c", "pub-missing", "d"] {
        send(&channel, &queue, body).await;
    }
    let mut reasons = HashMap::new();
    for _ in 0..3 {
        let dead = get_within(&conn, &format!("{queue}.dead"), 30).await;
        let reason = dead
            .properties
            .headers
            .as_ref()
            .and_then(|h| h.get("x-last-error"));
        let reason = reason
            .and_then(FieldValue::as_str)
            .unwrap_or_default()
            .to_owned();
        reasons.insert(String::from_utf8_lossy(&dead.body).into_owned(), reason);
    }
    let mut dead: Vec<&str> = reasons.keys().map(String::as_str).collect();
    dead.sort_unstable();
    assert_eq!(dead, ["die", "hang", "pub-missing"], "{reasons:?}");
    assert!(
        reasons["hang"].contains("ran longer than 2s"),
        "{reasons:?}"
    );
    assert!(reasons["die"].contains("worker exited"), "{reasons:?}");
    assert!(
        reasons["pub-missing"].contains("PublishError") && reasons["pub-missing"].contains("404"),
        "{reasons:?}"
    );
    let log = dir.join("flaky.log");
    wait_until("a, b, c and d handled", || lines(&log).len() == 4).await;
    let pids: HashMap<String, String> = lines(&log)
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(b, p)| (b.to_owned(), p.to_owned())))
        .collect();
    assert_ne!(pids["a"], pids["b"], "the hung worker was replaced");
    assert_ne!(pids["b"], pids["c"], "the dead worker was replaced");
    assert_eq!(
        pids["c"], pids["d"],
        "a refused publish does not cost the worker"
    );
    stop(run).await;
    delete(&conn, &[&queue], &[]).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

//! consume --exchange / --queue / --routing-key: lib.mq's walkthrough, and what is left
//! behind.

use std::collections::BTreeSet;

use crate::support::{Background, Temp, amqp, amqp_stdin, require_broker, unique};

/// A transient exchange of `kind` for one test.
fn temp_exchange(kind: &str) -> Temp {
    Temp::declare("exchange", "cth", &["--type", kind, "--transient"])
}

fn bodies(stdout: &str) -> BTreeSet<String> {
    stdout.lines().map(str::to_owned).collect()
}

fn gone(queue: &str) {
    let out = amqp(&["declare", "queue", queue, "--passive"]).fails(1);
    assert!(
        out.stderr.contains("404"),
        "{queue} should be gone: {out:?}"
    );
}

#[test]
fn lib_mq_walkthrough_one_id_shares_another_gets_all() {
    // lib.mq: `--consumer --exchange CTH --id queue1` twice, `--id queue2` once, then
    // `--producer --exchange CTH`.
    let cth = temp_exchange("fanout");
    let (queue1, queue2) = (unique("queue1"), unique("queue2"));
    let consumer = |id: &str, count: &str| {
        let mut c = Background::start(&[
            "consume",
            "--exchange",
            &cth.name,
            "--queue",
            id,
            "--count",
            count,
            "--timeout",
            "20",
        ]);
        c.wait_for_stderr("consuming from queue");
        c
    };
    let first = consumer(&queue1, "5");
    let second = consumer(&queue1, "5");
    let third = consumer(&queue2, "10");
    let sent: BTreeSet<String> = (0..10).map(|i| format!("message {i}")).collect();
    let lines: String = sent.iter().map(|m| format!("{m}\n")).collect();
    amqp_stdin(
        &["publish", "--exchange", &cth.name, "--confirm"],
        lines.as_bytes(),
    )
    .ok();

    let (first, second, third) = (
        first.finish().ok(),
        second.finish().ok(),
        third.finish().ok(),
    );
    let (a, b) = (bodies(&first.stdout), bodies(&second.stdout));
    // The two consumers of queue1 split the messages: 5 each, none twice, all of them.
    assert_eq!((a.len(), b.len()), (5, 5), "{first:?} {second:?}");
    assert!(a.is_disjoint(&b), "{a:?} {b:?}");
    assert_eq!(a.union(&b).cloned().collect::<BTreeSet<_>>(), sent);
    // queue2 got every message.
    assert_eq!(bodies(&third.stdout), sent);
    // The last consumer of each queue deleted it.
    gone(&queue1);
    gone(&queue2);
}

#[test]
fn a_server_named_queue_takes_only_its_routing_keys_and_goes_on_exit() {
    let logs = temp_exchange("topic");
    let mut consumer = Background::start(&[
        "consume",
        "-e",
        &logs.name,
        "-k",
        "error.*",
        "-k",
        "*.disk",
        "--count",
        "2",
        "--timeout",
        "20",
    ]);
    let line = consumer.wait_for_stderr("consuming from queue");
    let queue = line.split('"').nth(1).expect("the queue's name").to_owned();
    assert!(queue.starts_with("amq.gen-"), "{line}");
    for key in ["info.net", "error.net", "info.disk"] {
        amqp(&["publish", "-e", &logs.name, "-k", key, "--body", key]).ok();
    }
    let out = consumer.finish().ok();
    assert_eq!(out.lines(), ["error.net", "info.disk"]);
    gone(&queue);
}

#[test]
fn a_missing_exchange_is_named_and_nothing_is_left_behind() {
    require_broker();
    let missing = unique("no-such-exchange");
    let out = amqp(&["publish", "--exchange", &missing, "--body", "x"]).fails(1);
    assert!(
        out.stderr.contains(&format!("exchange {missing:?}")) && out.stderr.contains("404"),
        "{out:?}"
    );
    let queue = unique("orphan");
    let out = amqp(&["consume", "--exchange", &missing, "--queue", &queue]).fails(1);
    assert!(
        out.stderr.contains(&format!("exchange {missing:?}")),
        "{out:?}"
    );
    gone(&queue);
}

#[test]
fn keep_queue_leaves_a_shared_queue_and_its_binding() {
    let cth = temp_exchange("fanout");
    let queue = unique("kept");
    let mut c = Background::start(&[
        "consume",
        "-e",
        &cth.name,
        "-q",
        &queue,
        "--keep-queue",
        "--count",
        "1",
        "--timeout",
        "20",
    ]);
    c.wait_for_stderr("consuming from queue");
    amqp(&["publish", "-e", &cth.name, "--body", "one"]).ok();
    assert_eq!(c.finish().ok().lines(), ["one"]);
    // Still bound: a message published now waits in it.
    amqp(&["publish", "-e", &cth.name, "--body", "two", "--confirm"]).ok();
    let out = amqp(&["get", "-q", &queue]).ok();
    assert_eq!(out.lines(), ["two"]);
    amqp(&["delete", "queue", &queue]).ok();
}

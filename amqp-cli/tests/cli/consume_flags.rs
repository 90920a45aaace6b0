//! consume --arg, --offset, --exec, --requeue-on-exit against RabbitMQ.

use crate::support::{Background, Temp, TempQueue, amqp, amqp_stdin, require_broker, unique};

/// Publishes each line as a message to `queue`, confirmed.
fn fill(queue: &str, lines: &[&str]) {
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    amqp_stdin(&["publish", "-k", queue, "--confirm"], input.as_bytes()).ok();
}

fn ready(queue: &str) -> String {
    amqp(&["declare", "queue", queue, "--passive"]).ok().stdout
}

#[test]
fn consumer_arguments_reach_the_broker() {
    let q = TempQueue::new("priority");
    // The consumer with x-priority 10 gets every message while it has room for them.
    let low = Background::start(&["consume", "-q", &q.0, "--timeout", "20"]);
    let high = Background::start(&[
        "consume",
        "-q",
        &q.0,
        "--arg",
        "x-priority:int=10",
        "--count",
        "5",
        "--timeout",
        "20",
    ]);
    // Both subscribed: two consumers on the queue.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready(&q.0).contains("2 consumers") {
        assert!(std::time::Instant::now() < deadline, "{}", ready(&q.0));
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    fill(&q.0, &["1", "2", "3", "4", "5"]);
    assert_eq!(high.finish().ok().lines(), ["1", "2", "3", "4", "5"]);
    low.interrupt();
    assert_eq!(low.finish().ok().stdout, "");
    // A mistyped argument is the broker's 406, naming the queue.
    let out = amqp(&[
        "consume",
        "-q",
        &q.0,
        "--arg",
        "x-priority=high",
        "--count",
        "1",
    ])
    .fails(1);
    assert!(out.stderr.contains("406"), "{out:?}");
}

#[test]
fn a_stream_is_read_from_the_offset_asked_for() {
    let s = Temp::declare("queue", "stream", &["--type", "stream"]);
    fill(&s.name, &["m0", "m1", "m2", "m3", "m4"]);
    let read = |offset: &str, count: &str| {
        let args = [
            "consume",
            "-q",
            &s.name,
            "--offset",
            offset,
            "-n",
            count,
            "--timeout",
            "20",
        ];
        amqp(&args).ok().stdout
    };
    assert_eq!(read("first", "5"), "m0\nm1\nm2\nm3\nm4\n");
    assert_eq!(read("3", "2"), "m3\nm4\n");
    assert_eq!(read("@0", "5"), "m0\nm1\nm2\nm3\nm4\n");
    assert_eq!(read("1970-01-01T00:00:00Z", "1"), "m0\n");
    // An age: everything published within the hour.
    assert_eq!(read("1h", "5"), "m0\nm1\nm2\nm3\nm4\n");
    // `last`: the last chunk, which holds the last message.
    let out = amqp(&[
        "consume",
        "-q",
        &s.name,
        "--offset",
        "last",
        "--timeout",
        "1",
    ])
    .ok();
    assert!(out.stdout.ends_with("m4\n"), "{out:?}");
    // `next`: only what is published from now on.
    let out = amqp(&[
        "consume",
        "-q",
        &s.name,
        "--offset",
        "next",
        "--timeout",
        "1",
    ])
    .ok();
    assert_eq!(out.stdout, "");
    // An offset RabbitMQ would not take is a usage error, before connecting.
    let out = amqp(&["consume", "-q", &s.name, "--offset", "yesterday"]);
    assert_eq!(out.code, Some(2), "{out:?}");
}

#[test]
fn exec_runs_a_command_per_message_and_its_status_settles_it() {
    require_broker();
    let dead = TempQueue::new("dead");
    let q = unique("exec");
    amqp(&[
        "declare",
        "queue",
        &q,
        "--arg",
        "x-expires:int=120000",
        "--arg",
        "x-dead-letter-exchange=",
        "--arg",
        &format!("x-dead-letter-routing-key={}", dead.0),
    ])
    .ok();
    for body in ["ok", "retry", "bad"] {
        amqp(&[
            "publish",
            "-k",
            &q,
            "--body",
            body,
            "--content-type",
            "text/plain",
            "--header",
            "n:int=7",
            "--confirm",
        ])
        .ok();
    }
    let script = r#"body=$(cat)
echo "$body $AMQP_ROUTING_KEY $AMQP_CONTENT_TYPE $AMQP_REDELIVERED $AMQP_HEADERS"
case $body in
  ok) exit 0;;
  retry) [ "$AMQP_REDELIVERED" = true ] && exit 0 || exit 75;;
  *) exit 3;;
esac"#;
    let out = amqp(&[
        "consume",
        "-q",
        &q,
        "--exec",
        script,
        "-n",
        "4",
        "--timeout",
        "20",
    ])
    .ok();
    let mut lines = out.lines();
    lines.sort_unstable();
    let headers = r#"{"n":{"type":"i32","value":7}}"#;
    assert_eq!(
        lines,
        [
            format!("bad {q} text/plain false {headers}"),
            format!("ok {q} text/plain false {headers}"),
            format!("retry {q} text/plain false {headers}"),
            format!("retry {q} text/plain true {headers}"),
        ],
        "{out:?}"
    );
    assert!(
        out.stderr.contains("exit status: 75") && out.stderr.contains("requeued"),
        "{out:?}"
    );
    assert!(
        out.stderr.contains("exit status: 3") && out.stderr.contains("rejected"),
        "{out:?}"
    );
    // Acked and requeued-then-acked are gone; the rejected one was dead-lettered.
    assert!(ready(&q).contains(": 0 messages"), "{}", ready(&q));
    assert_eq!(amqp(&["get", "-q", &dead.0]).ok().stdout, "bad\n");
    amqp(&["delete", "queue", &q]).ok();
}

#[test]
fn an_interrupted_exec_puts_its_message_back() {
    let q = TempQueue::new("exec-int");
    fill(&q.0, &["slow"]);
    let mut c = Background::start(&[
        "consume",
        "-q",
        &q.0,
        "--exec",
        "echo started >&2; exec sleep 60",
    ]);
    c.wait_for_stderr("started");
    c.interrupt();
    c.finish().ok();
    assert!(ready(&q.0).contains(": 1 messages"), "{}", ready(&q.0));
}

#[test]
fn requeue_on_exit_leaves_the_queue_as_it_was() {
    let q = TempQueue::new("peek");
    fill(&q.0, &["a", "b", "c"]);
    let out = amqp(&[
        "consume",
        "-q",
        &q.0,
        "--requeue-on-exit",
        "-n",
        "3",
        "--timeout",
        "20",
    ])
    .ok();
    assert_eq!(out.lines(), ["a", "b", "c"]);
    assert!(ready(&q.0).contains(": 3 messages"), "{}", ready(&q.0));
    // No more than --prefetch are held; then it stops and puts them back.
    let out = amqp(&[
        "consume",
        "-q",
        &q.0,
        "--requeue-on-exit",
        "--prefetch",
        "2",
        "--timeout",
        "20",
    ])
    .ok();
    assert_eq!(out.lines(), ["a", "b"]);
    assert!(out.stderr.contains("holding 2"), "{out:?}");
    assert!(ready(&q.0).contains(": 3 messages"), "{}", ready(&q.0));
    // Without the flag they are taken.
    amqp(&["consume", "-q", &q.0, "-n", "3", "--timeout", "20"]).ok();
    assert!(ready(&q.0).contains(": 0 messages"), "{}", ready(&q.0));
}

#[test]
fn a_command_past_exec_timeout_is_killed_and_its_message_requeued() {
    let q = TempQueue::new("exec-timeout");
    fill(&q.0, &["stuck"]);
    let args = [
        "consume",
        "-q",
        &q.0,
        "--exec",
        "exec sleep 20",
        "--exec-timeout",
        "0.5",
        "-n",
        "1",
    ];
    let out = amqp(&args).ok();
    assert!(out.stderr.contains("ran longer than 500ms"), "{out:?}");
    assert!(out.stderr.contains("requeued"), "{out:?}");
    assert!(ready(&q.0).contains(": 1 messages"), "{}", ready(&q.0));
}

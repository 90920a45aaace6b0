//! declare, delete, purge, and the errors people see.

use crate::support::{TempQueue, amqp, amqp_with, require_broker, unique};

#[test]
fn declare_bind_purge_unbind_delete() {
    require_broker();
    let exchange = unique("ex");
    let queue = unique("q");
    let out = amqp(&[
        "declare",
        "exchange",
        &exchange,
        "--type",
        "topic",
        "--transient",
    ])
    .ok();
    assert_eq!(
        out.stdout,
        format!("exchange {exchange:?}: topic, transient\n")
    );
    let out = amqp(&[
        "declare",
        "queue",
        &queue,
        "--type",
        "classic",
        "--arg",
        "x-max-length:int=10",
        "--arg",
        "x-expires:int=120000",
    ])
    .ok();
    assert_eq!(
        out.stdout,
        format!("queue {queue:?}: 0 messages, 0 consumers\n")
    );
    amqp(&[
        "declare", "binding", "-s", &exchange, "-d", &queue, "-k", "orders.*",
    ])
    .ok();

    let publish = [
        "publish",
        "-e",
        &exchange,
        "-k",
        "orders.new",
        "--body",
        "x",
        "--mandatory",
    ];
    amqp(&publish).ok();
    amqp(&[&publish[..], &["--confirm"]].concat()).ok();
    let out = amqp(&["declare", "queue", &queue, "--passive"]).ok();
    assert!(out.stdout.contains(": 2 messages"), "{out:?}");
    let out = amqp(&["purge", "-q", &queue]).ok();
    assert_eq!(
        out.stdout,
        format!("purged 2 messages from queue {queue:?}\n")
    );

    amqp(&[
        "delete", "binding", "-s", &exchange, "-d", &queue, "-k", "orders.*",
    ])
    .ok();
    let out = amqp(&[&publish[..], &["--confirm"]].concat()).fails(1);
    assert!(out.stderr.contains("312 NO_ROUTE"), "{out:?}");
    let out = amqp(&publish).fails(1);
    assert!(out.stderr.contains("312 NO_ROUTE"), "{out:?}");

    // A redeclare with other arguments: 406, and what that means.
    let out = amqp(&["declare", "queue", &queue, "--arg", "x-max-length:int=11"]).fails(1);
    assert!(out.stderr.contains("406 PRECONDITION_FAILED"), "{out:?}");
    assert!(
        out.stderr.contains(&format!("declare queue {queue:?}")),
        "{out:?}"
    );

    let out = amqp(&["delete", "queue", &queue]).ok();
    assert_eq!(
        out.stdout,
        format!("deleted queue {queue:?} with 0 messages\n")
    );
    amqp(&["delete", "exchange", &exchange]).ok();
    let out = amqp(&["declare", "queue", &queue, "--passive"]).fails(1);
    assert!(out.stderr.contains("404 NOT_FOUND"), "{out:?}");
}

#[test]
fn a_missing_queue_is_one_line_naming_it_and_404() {
    require_broker();
    let queue = unique("missing");
    for command in [
        &["consume", "-q", queue.as_str()][..],
        &["get", "-q", queue.as_str()],
        &["purge", "-q", queue.as_str()],
    ] {
        let out = amqp(command).fails(1);
        assert!(out.stderr.contains(&format!("queue {queue:?}")), "{out:?}");
        assert!(out.stderr.contains("404 NOT_FOUND"), "{out:?}");
        assert!(out.stderr.contains("does not exist"), "{out:?}");
    }
}

#[test]
fn an_unreachable_host_is_one_line_naming_it() {
    // Port 1 on loopback: nothing listens there, so the connection is refused at once.
    let url = "amqp://guest:guest@127.0.0.1:1/%2f";
    let out = amqp_with(&["get", "-q", "x"], None, url).fails(1);
    assert!(
        out.stderr
            .starts_with("amqp: error: cannot connect to 127.0.0.1:1: connection refused"),
        "{out:?}"
    );
    let out = amqp_with(&["get", "-q", "x"], None, "http://127.0.0.1/").fails(1);
    assert!(out.stderr.contains("invalid broker URL"), "{out:?}");
}

#[test]
fn usage_errors_exit_2() {
    let q = TempQueue::new("usage");
    let out = amqp(&[
        "publish",
        "-k",
        &q.0,
        "--body",
        "x",
        "--header",
        "n:int=many",
    ]);
    assert_eq!(out.code, Some(2), "{out:?}");
    assert!(
        out.stderr.contains("\"many\" is not a valid i32"),
        "{out:?}"
    );
    let out = amqp(&["publish", "--body", "x", "--file", "f"]);
    assert_eq!(out.code, Some(2), "{out:?}");
}

#[test]
fn absurd_durations_are_usage_errors_not_panics() {
    // Refused while parsing, before any connection: no broker is needed.
    let cases: &[&[&str]] = &[
        &["consume", "-q", "x", "--timeout", "inf"],
        &["consume", "-q", "x", "--timeout", "1e19"],
        &["consume", "-q", "x", "--timeout", "NaN"],
        &["consume", "-q", "x", "--timeout", "-1"],
        &[
            "consume",
            "-q",
            "x",
            "--exec",
            "true",
            "--exec-timeout",
            "-1",
        ],
        &[
            "consume",
            "-q",
            "x",
            "--exec",
            "true",
            "--exec-timeout",
            "inf",
        ],
        &["perf", "--variable-rate", "100:1e19"],
        &["rpc", "-k", "x", "--body", "x", "--timeout", "inf"],
        &["rpc", "-k", "x", "--body", "x", "--timeout", "1e19"],
        &["perf", "--duration", "-1"],
        &["perf", "--duration", "0"],
        &["perf", "--duration", "inf"],
        &["perf", "-z", "1e19"],
        &["perf", "--rate", "-5"],
        &["perf", "--rate", "inf"],
    ];
    for args in cases {
        let out = amqp_with(args, None, "amqp://guest:guest@127.0.0.1:1/%2f");
        assert_eq!(out.code, Some(2), "{args:?}: {out:?}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:?}");
        assert!(out.stderr.contains("invalid value"), "{args:?}: {out:?}");
        assert!(
            out.stderr.contains(": expected"),
            "says what is accepted: {args:?}: {out:?}"
        );
    }
    let out = amqp_with(
        &["consume", "-q", "x", "--timeout", "1e19"],
        None,
        "amqp://guest:guest@127.0.0.1:1/%2f",
    );
    assert!(
        out.stderr.contains("expected seconds from 0 to 31536000"),
        "{out:?}"
    );
}

#[test]
fn help_and_completions() {
    let help = amqp(&["--help"]).ok();
    for word in [
        "publish", "consume", "rpc", "declare", "decode", "perf", "AMQP_URL",
    ] {
        assert!(help.stdout.contains(word), "{word}: {}", help.stdout);
    }
    let bash = amqp(&["completions", "bash"]).ok();
    assert!(bash.stdout.contains("_amqp()"), "{}", &bash.stdout[..200]);
}

#[test]
fn man_pages_say_what_help_says() {
    let dir = std::env::temp_dir().join(unique("man"));
    let out = amqp(&["man", dir.to_str().unwrap()]).ok();
    let written: Vec<&str> = out.stdout.lines().collect();
    for page in [
        "amqp.1",
        "amqp-consume.1",
        "amqp-perf.1",
        "amqp-declare-queue.1",
    ] {
        let path = dir.join(page);
        assert!(written.contains(&path.to_str().unwrap()), "{page}: {out:?}");
        let roff = std::fs::read_to_string(&path).unwrap();
        assert!(
            roff.starts_with(".ie \\n(.g .ds Aq") || roff.contains(".TH"),
            "{page}"
        );
    }
    // The same definitions: each consume flag in --help has its entry in the page.
    let help = amqp(&["consume", "--help"]).ok().stdout;
    let page = std::fs::read_to_string(dir.join("amqp-consume.1")).unwrap();
    for flag in [
        "exchange",
        "routing-key",
        "offset",
        "exec",
        "requeue-on-exit",
        "arg",
    ] {
        assert!(help.contains(&format!("--{flag}")), "{flag}");
        let roff = format!("--{flag}").replace('-', "\\-");
        assert!(page.contains(&roff), "{flag} in the page");
    }
    assert!(page.contains("EX_TEMPFAIL") && help.contains("EX_TEMPFAIL"));
    let perf = std::fs::read_to_string(dir.join("amqp-perf.1")).unwrap();
    assert!(
        perf.contains("\\-\\-pmessages") && perf.contains("\\-\\-multi\\-ack\\-every"),
        "{perf}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

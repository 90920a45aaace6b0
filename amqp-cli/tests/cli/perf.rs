//! perf: short runs with a JSON report; PerfTest's flags beside ours.

use crate::support::{TempQueue, amqp, require_broker, unique};

#[test]
fn a_two_second_run_reports_rates_and_percentiles() {
    require_broker();
    let out = amqp(&["perf", "--duration", "2", "--json", "--size", "256"]).ok();
    let report: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).expect("one JSON report");
    assert!(
        (1.9..3.0).contains(&report["duration_s"].as_f64().unwrap()),
        "{report}"
    );
    for key in ["published", "confirmed", "consumed"] {
        assert!(report[key].as_u64().unwrap() > 0, "{key}: {report}");
    }
    for key in ["publish_rate", "confirm_rate", "consume_rate"] {
        assert!(report[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    assert_eq!(report["nacked"], 0);
    let latency = &report["latency_us"];
    for p in ["min", "p50", "p75", "p95", "p99", "p99.9", "max"] {
        assert!(latency[p].as_u64().is_some(), "{p}: {report}");
    }
    assert!(latency["p50"].as_u64() <= latency["p99"].as_u64());
    assert!(report["confirm_latency_us"]["p99"].as_u64().is_some());
    assert_eq!(report["fresh_queue"], true);
    // The progress line went to standard error, once a second.
    assert!(out.stderr.contains("msg/s"), "{out:?}");
    // The fresh queue is gone.
    let queue = report["queue"].as_str().unwrap();
    let gone = amqp(&["declare", "queue", queue, "--passive"]).fails(1);
    assert!(gone.stderr.contains("404 NOT_FOUND"), "{gone:?}");
}

fn report(args: &[&str]) -> serde_json::Value {
    let args = [&["perf", "--json", "--quiet"][..], args].concat();
    let out = amqp(&args).ok();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

#[test]
fn perftest_long_flags_give_the_same_run_as_the_short_ones() {
    require_broker();
    let long = report(&[
        "--producers",
        "2",
        "--consumers",
        "2",
        "--pmessages",
        "300",
        "--qos",
        "50",
        "--multi-ack-every",
        "5",
        "--flag",
        "persistent",
        "--size",
        "100",
        "--confirm",
        "20",
    ]);
    let short = report(&[
        "-x",
        "2",
        "-y",
        "2",
        "-C",
        "300",
        "-q",
        "50",
        "-A",
        "5",
        "--persistent",
        "-s",
        "100",
        "-c",
        "20",
    ]);
    for key in [
        "producers",
        "consumers",
        "message_size",
        "confirm_window",
        "prefetch",
        "multi_ack",
        "persistent",
        "rate_limit",
        "queue_type",
        "fresh_queue",
        "published",
        "confirmed",
        "consumed",
        "nacked",
        "returned",
    ] {
        assert_eq!(long[key], short[key], "{key}: {long} vs {short}");
    }
    assert_eq!(
        (long["published"].as_u64(), long["consumed"].as_u64()),
        (Some(600), Some(600))
    );
    assert_eq!(long["persistent"], true);
    assert_eq!(long["multi_ack"], 5);
}

#[test]
fn channel_counts_multiply_the_publishers_and_consumers() {
    require_broker();
    let r = report(&[
        "-x",
        "1",
        "-X",
        "3",
        "-y",
        "1",
        "--consumer-channel-count",
        "2",
        "-C",
        "100",
    ]);
    assert_eq!(
        (r["published"].as_u64(), r["consumed"].as_u64()),
        (Some(300), Some(300)),
        "{r}"
    );
    assert_eq!(r["confirmed"], 300);
}

#[test]
fn a_queue_pattern_spreads_the_load_over_fresh_queues() {
    require_broker();
    let pattern = format!("{}-%d", unique("perf"));
    let r = report(&[
        "--queue-pattern",
        &pattern,
        "--queue-pattern-from",
        "1",
        "--queue-pattern-to",
        "3",
        "-x",
        "3",
        "-y",
        "3",
        "-C",
        "50",
    ]);
    assert_eq!(
        (r["published"].as_u64(), r["consumed"].as_u64()),
        (Some(150), Some(150)),
        "{r}"
    );
    assert!(r["queue"].as_str().unwrap().contains("(3 queues)"), "{r}");
    for n in 1..=3 {
        let queue = pattern.replace("%d", &n.to_string());
        let gone = amqp(&["declare", "queue", &queue, "--passive"]).fails(1);
        assert!(gone.stderr.contains("404"), "{gone:?}");
    }
    let out = amqp(&[
        "perf",
        "--queue-pattern",
        "nonumber",
        "--queue-pattern-to",
        "2",
    ])
    .fails(1);
    assert!(out.stderr.contains("%d"), "{out:?}");
}

#[test]
fn bodies_from_files_json_and_variable_sizes() {
    let q = TempQueue::new("perf-bodies");
    let file = std::env::temp_dir().join(unique("body"));
    std::fs::write(&file, b"{\"order\": 1}").unwrap();
    let producer_only = ["-y", "0", "-u", &q.0, "-C", "2"];
    report(
        &[
            &producer_only[..],
            &["--body", file.to_str().unwrap(), "-T", "application/json"],
        ]
        .concat(),
    );
    report(&[&producer_only[..], &["--json-body", "-s", "300"]].concat());
    report(&[&producer_only[..], &["--variable-size", "100:60"]].concat());
    let got = amqp(&["get", "-q", &q.0, "-n", "6", "--json"])
        .ok()
        .json_lines();
    assert_eq!(got.len(), 6);
    for m in &got[..2] {
        assert_eq!(m["body"], "{\"order\": 1}");
        assert_eq!(m["properties"]["content_type"], "application/json");
        assert_eq!(m["headers"][amqp_cli::perf::STAMP_HEADER]["type"], "i64");
    }
    for m in &got[2..4] {
        assert_eq!(m["body_size"], 300);
        let body: serde_json::Value = serde_json::from_str(m["body"].as_str().unwrap()).unwrap();
        assert!(body["sent_ns"].is_u64(), "{body}");
        assert_eq!(m["properties"]["content_type"], "application/json");
    }
    for m in &got[4..] {
        assert_eq!(m["body_size"], 100);
    }
    // With consumers, the stamp in the header still gives latencies.
    let r = report(&["--json-body", "-C", "20"]);
    assert_eq!(r["latency_us"]["count"], 20, "{r}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn a_variable_rate_bounds_the_publishes() {
    require_broker();
    // 10 msg/s for 1.5 s: the pacer never runs ahead, so at most 1 + 15 publishes.
    let r = report(&[
        "--variable-rate",
        "10:60",
        "--variable-rate",
        "1000:1",
        "-z",
        "1.5",
    ]);
    let published = r["published"].as_u64().unwrap();
    assert!((1..=16).contains(&published), "{r}");
    assert_eq!(r["rate_limit"], 10.0);
}

#[test]
fn figures_every_second_as_csv_and_json_lines() {
    require_broker();
    let file = std::env::temp_dir().join(unique("perf.csv"));
    let out = amqp(&[
        "perf",
        "-z",
        "2.2",
        "--progress",
        "json",
        "-o",
        file.to_str().unwrap(),
    ])
    .ok();
    let lines: Vec<serde_json::Value> = out
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines.len(), 2, "{out:?}");
    assert!(
        lines[0]["published_per_s"].as_f64().unwrap() > 0.0,
        "{out:?}"
    );
    let csv = std::fs::read_to_string(&file).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], amqp_cli::perf_report::Sample::CSV_HEADER);
    assert_eq!(rows.len(), 3, "{csv}");
    assert!(
        rows[1].starts_with("1.0,") || rows[1].starts_with("1.1,"),
        "{csv}"
    );
    // The end report is the same text as ever.
    assert!(out.stdout.contains("  published  "), "{out:?}");
    let _ = std::fs::remove_file(file);
}

#[test]
fn flag_mandatory_counts_what_no_queue_takes() {
    require_broker();
    // The default exchange and a queue that does not exist: every publish comes back.
    let nowhere = unique("nowhere");
    let r = report(&["-y", "0", "-k", &nowhere, "--flag", "mandatory", "-C", "5"]);
    assert_eq!(
        (r["published"].as_u64(), r["returned"].as_u64()),
        (Some(5), Some(5)),
        "{r}"
    );
    let r = report(&["-y", "0", "-k", &nowhere, "-C", "5"]);
    assert_eq!(r["returned"], 0, "without the flag they are dropped: {r}");
}

#[test]
fn csv_figures_on_standard_error() {
    require_broker();
    let out = amqp(&["perf", "-z", "1.2", "--progress", "csv"]).ok();
    let lines: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        lines[0],
        amqp_cli::perf_report::Sample::CSV_HEADER,
        "{out:?}"
    );
    assert_eq!(lines.len(), 2, "{out:?}");
    assert_eq!(lines[1].split(',').count(), 6, "{out:?}");
}

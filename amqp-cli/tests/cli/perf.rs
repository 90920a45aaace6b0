//! perf: a short run with a JSON report.

use crate::support::{amqp, require_broker};

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

//! `--codec-report`: the codec part of BENCHMARKS.md, from the criterion results of
//! `benches/peers.rs` (medians, per message) and the counts of `benches/alloc.rs`.
//!
//! Run `cargo bench -p amqp-benches --bench peers` and `--bench alloc` first, with the same
//! `CARGO_TARGET_DIR`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::BoxError;
use crate::harness::workspace_root;
use crate::report::{load_average, machine, replace_section, today};

/// Messages per criterion iteration (`amqp_benches::MESSAGES`).
const MESSAGES: f64 = amqp_benches::MESSAGES as f64;

fn target_dir() -> PathBuf {
    std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
}

/// The median time of one criterion benchmark, ns per iteration.
fn median_ns(criterion: &Path, group: &str, function: &str, input: &str) -> Option<f64> {
    let path = criterion
        .join(group)
        .join(function)
        .join(input)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["median"]["point_estimate"].as_f64()
}

/// Allocations per message from alloc.json, by case and codec.
fn allocations(rows: &[serde_json::Value], case: &str, codec: &str) -> Option<f64> {
    rows.iter()
        .find(|r| r["case"] == case && r["codec"] == codec)
        .and_then(|r| r["allocations_per_message"].as_f64())
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |v| format!("{v:.digits$}"))
}

pub(crate) fn run() -> Result<(), BoxError> {
    let criterion = target_dir().join("criterion");
    let alloc_text = std::fs::read_to_string(target_dir().join("amqp-benches/alloc.json"))
        .unwrap_or_else(|_| "[]".to_owned());
    let alloc: Vec<serde_json::Value> = serde_json::from_str(&alloc_text)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} on {}; load average at report time {}. Criterion medians; \
         ns per message (10,000 per iteration).\n",
        today(),
        machine(),
        load_average()
    );
    md.push_str(
        "| deliveries (decode) | ours ns/msg | amq-protocol ns/msg | floor ns/msg | \
         amq-protocol / ours | ours / floor | ours allocs/msg (codec / engine) | \
         amq-protocol allocs/msg |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for size in ["16B", "4KiB", "128KiB"] {
        for rich in [false, true] {
            let id = if rich {
                format!("{size}+headers")
            } else {
                size.to_owned()
            };
            let per = |f: &str| {
                median_ns(&criterion, "peers_deliver_decode", f, &id).map(|ns| ns / MESSAGES)
            };
            let (ours, amq, floor) = (per("ours"), per("amq-protocol"), per("floor"));
            let case = format!("deliver {id}");
            let _ = writeln!(
                md,
                "| {id} | {} | {} | {} | {} | {} | {} / {} | {} |",
                cell(ours, 0),
                cell(amq, 0),
                cell(floor, 1),
                cell(amq.zip(ours).map(|(a, o)| a / o), 1),
                cell(ours.zip(floor).map(|(o, f)| o / f), 1),
                cell(allocations(&alloc, &case, "ours"), 2),
                cell(allocations(&alloc, &case, "ours-engine"), 2),
                cell(allocations(&alloc, &case, "amq-protocol"), 2),
            );
        }
    }
    md.push_str(
        "\n| publishes (encode) | ours ns/msg | amq-protocol ns/msg | amq-protocol / ours | \
         ours allocs/msg | amq-protocol allocs/msg |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for size in ["16B", "4KiB", "128KiB"] {
        let per = |f: &str| {
            median_ns(&criterion, "peers_publish_encode", f, size).map(|ns| ns / MESSAGES)
        };
        let (ours, amq) = (per("ours"), per("amq-protocol"));
        let case = format!("publish {size}");
        let _ = writeln!(
            md,
            "| {size} | {} | {} | {} | {} | {} |",
            cell(ours, 0),
            cell(amq, 0),
            cell(amq.zip(ours).map(|(a, o)| a / o), 1),
            cell(allocations(&alloc, &case, "ours"), 2),
            cell(allocations(&alloc, &case, "amq-protocol"), 2),
        );
    }
    md.push_str(
        "\n| 20-entry field table | ours ns | amq-protocol ns | amq-protocol / ours | \
         ours allocs | amq-protocol allocs |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for op in ["encode", "decode"] {
        let ours = median_ns(&criterion, "peers_field_table", "ours", op);
        let amq = median_ns(&criterion, "peers_field_table", "amq-protocol", op);
        let case = format!("table20 {op}");
        let _ = writeln!(
            md,
            "| {op} | {} | {} | {} | {} | {} |",
            cell(ours, 0),
            cell(amq, 0),
            cell(amq.zip(ours).map(|(a, o)| a / o), 1),
            cell(allocations(&alloc, &case, "ours"), 2),
            cell(allocations(&alloc, &case, "amq-protocol"), 2),
        );
    }
    let path = workspace_root().join("BENCHMARKS.md");
    replace_section(&path, "codec", &md)?;
    println!("{md}");
    eprintln!("wrote the codec part of {}", path.display());
    Ok(())
}

//! Medians over rounds, ratios to the best peer, the Markdown table and the JSON report.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::BoxError;
use crate::scenario::{Client, Outcome, Scenario, group_digits};

/// One worker run as the harness saw it.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Run {
    pub(crate) scenario: Scenario,
    pub(crate) client: Client,
    pub(crate) round: usize,
    pub(crate) outcome: Outcome,
    /// The whole child process's CPU time (start-up and connecting included), µs.
    pub(crate) process_cpu_us: f64,
    /// The blast peer's CPU time during the run, µs.
    pub(crate) peer_cpu_us: Option<f64>,
}

/// What the report says about the run as a whole.
pub(crate) struct Context {
    pub(crate) broker_version: String,
    pub(crate) rounds: usize,
    pub(crate) messages: u64,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) minutes: f64,
    pub(crate) full: bool,
}

/// One client's figures in one scenario, over its rounds.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Figures {
    pub(crate) scenario: Scenario,
    pub(crate) client: Client,
    pub(crate) rounds: usize,
    pub(crate) rate_min: f64,
    pub(crate) rate_median: f64,
    pub(crate) rate_max: f64,
    /// Client CPU per message (timed phase), µs, median over rounds.
    pub(crate) cpu_us_per_msg: f64,
    /// Broker (or blast peer) CPU per message, µs, median over rounds.
    pub(crate) server_cpu_us_per_msg: Option<f64>,
    pub(crate) p50_us: Option<f64>,
    pub(crate) p99_us: Option<f64>,
    /// Throughput over the best peer's (the best other client).
    pub(crate) rate_vs_best_peer: Option<f64>,
    /// CPU per message over the best peer's (the lowest of the other clients).
    pub(crate) cpu_vs_best_peer: Option<f64>,
    /// p50 over the best peer's (the lowest of the other clients).
    pub(crate) p50_vs_best_peer: Option<f64>,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Figures per scenario and client, in the order given.
pub(crate) fn summarise(runs: &[Run], scenarios: &[Scenario], clients: &[Client]) -> Vec<Figures> {
    let mut all = Vec::new();
    for &scenario in scenarios {
        let mut rows: Vec<Figures> = clients
            .iter()
            .filter_map(|&client| figures(runs, scenario, client))
            .collect();
        let peers = rows.clone();
        for row in &mut rows {
            let others: Vec<&Figures> = peers.iter().filter(|p| p.client != row.client).collect();
            let best = |f: fn(&Figures) -> Option<f64>, highest: bool| {
                others
                    .iter()
                    .filter_map(|p| f(p))
                    .reduce(|a, b| if (a > b) == highest { a } else { b })
            };
            row.rate_vs_best_peer =
                best(|p| Some(p.rate_median), true).map(|b| row.rate_median / b);
            row.cpu_vs_best_peer =
                best(|p| Some(p.cpu_us_per_msg), false).map(|b| row.cpu_us_per_msg / b);
            row.p50_vs_best_peer = row
                .p50_us
                .and_then(|ours| best(|p| p.p50_us, false).map(|b| ours / b));
        }
        all.extend(rows);
    }
    all
}

fn figures(runs: &[Run], scenario: Scenario, client: Client) -> Option<Figures> {
    let mine: Vec<&Run> = runs
        .iter()
        .filter(|r| r.scenario == scenario && r.client == client)
        .collect();
    if mine.is_empty() {
        return None;
    }
    let rates: Vec<f64> = mine
        .iter()
        .map(|r| r.outcome.messages as f64 / r.outcome.seconds)
        .collect();
    let per_msg = |f: fn(&Run) -> Option<f64>| {
        median(
            mine.iter()
                .filter_map(|r| f(r).map(|v| v / r.outcome.messages as f64))
                .collect(),
        )
    };
    Some(Figures {
        scenario,
        client,
        rounds: mine.len(),
        rate_min: rates.iter().copied().fold(f64::INFINITY, f64::min),
        rate_median: median(rates.clone()).unwrap_or(0.0),
        rate_max: rates.iter().copied().fold(0.0, f64::max),
        cpu_us_per_msg: per_msg(|r| Some(r.outcome.cpu_us)).unwrap_or(0.0),
        server_cpu_us_per_msg: per_msg(|r| r.peer_cpu_us.or(r.outcome.broker_cpu_us)),
        p50_us: median(mine.iter().filter_map(|r| r.outcome.p50_us).collect()),
        p99_us: median(mine.iter().filter_map(|r| r.outcome.p99_us).collect()),
        rate_vs_best_peer: None,
        cpu_vs_best_peer: None,
        p50_vs_best_peer: None,
    })
}

fn ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}x"))
}

fn rate(r: f64) -> String {
    group_digits(r.round() as u64)
}

/// The end-to-end section of BENCHMARKS.md.
pub(crate) fn markdown(context: &Context, figures: &[Figures], scenarios: &[Scenario]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Measured {} on {}; RabbitMQ {}; {} round(s), clients alternating, {:.1} min in all; \
         load average before {}, after {}.{}\n",
        today(),
        machine(),
        context.broker_version,
        context.rounds,
        context.minutes,
        context.load_before,
        context.load_after,
        if context.full {
            String::new()
        } else {
            format!(
                " A partial run (--messages {}).",
                group_digits(context.messages)
            )
        }
    );
    md.push_str(
        "| scenario | client | msgs/s min / **median** / max | client CPU µs/msg | \
         server CPU µs/msg | msgs/s vs best peer | CPU vs best peer | RPC p50 / p99 µs |\n",
    );
    md.push_str("|---|---|---|---:|---:|---:|---:|---:|\n");
    for &scenario in scenarios {
        let rows: Vec<&Figures> = figures.iter().filter(|f| f.scenario == scenario).collect();
        for (i, f) in rows.iter().enumerate() {
            let name = if i == 0 {
                scenario.describe(context.messages)
            } else {
                String::new()
            };
            let client = if f.client == Client::Ours {
                format!("**{}**", f.client.name())
            } else {
                f.client.name().to_owned()
            };
            let latency = match (f.p50_us, f.p99_us) {
                (Some(p50), Some(p99)) => format!("{p50:.0} / {p99:.0}"),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                md,
                "| {name} | {client} | {} / **{}** / {} | {:.2} | {} | {} | {} | {latency} |",
                rate(f.rate_min),
                rate(f.rate_median),
                rate(f.rate_max),
                f.cpu_us_per_msg,
                f.server_cpu_us_per_msg
                    .map_or_else(|| "–".to_owned(), |c| format!("{c:.2}")),
                ratio(f.rate_vs_best_peer),
                ratio(f.cpu_vs_best_peer),
            );
        }
    }
    md.push_str(
        "\n\"Server CPU\" is beam.smp's user + system time over the timed phase (10 ms ticks) \
         for RabbitMQ, and the blast peer's own CPU time for the blast scenarios. \"vs best \
         peer\" compares a client with the best of the other two (highest msgs/s, lowest CPU).\n",
    );
    md.push_str(&targets(figures));
    md
}

/// Where our client stands against each target of the issue.
fn targets(figures: &[Figures]) -> String {
    let mut md =
        String::from("\n| scenario | target | amqp-client | met |\n|---|---|---:|:---:|\n");
    let mark = |ok: bool| if ok { "yes" } else { "**no**" };
    for f in figures.iter().filter(|f| f.client == Client::Ours) {
        let name = f.scenario.name();
        if let Some(cpu) = f.cpu_vs_best_peer {
            let _ = writeln!(
                md,
                "| {name} | client CPU/msg ≤ 0.5x best peer | {cpu:.2}x | {} |",
                mark(cpu <= 0.5)
            );
        }
        if let Some(r) = f.rate_vs_best_peer {
            let (goal, label) = if f.scenario.is_blast() {
                (2.0, "msgs/s ≥ 2x best peer (ceiling)")
            } else if f.scenario.round_trip_bound() {
                (1.3, "msgs/s ≥ 1.3x best peer")
            } else {
                (1.0, "msgs/s ≥ best peer")
            };
            let _ = writeln!(md, "| {name} | {label} | {r:.2}x | {} |", mark(r >= goal));
        }
        if let Some(p) = f.p50_vs_best_peer.filter(|_| f.scenario == Scenario::Rpc) {
            let _ = writeln!(
                md,
                "| {name} | p50 ≤ 0.8x best peer | {p:.2}x | {} |",
                mark(p <= 0.8)
            );
        }
    }
    md
}

/// The JSON report: context, every run, and the figures.
pub(crate) fn json(context: &Context, runs: &[Run], figures: &[Figures]) -> serde_json::Value {
    serde_json::json!({
        "date": today(),
        "machine": machine(),
        "broker_version": context.broker_version,
        "rounds": context.rounds,
        "messages": context.messages,
        "load_before": context.load_before,
        "load_after": context.load_after,
        "minutes": context.minutes,
        "full_run": context.full,
        "figures": figures,
        "runs": runs,
    })
}

/// `/proc/loadavg`'s three averages.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "n/a".to_owned())
}

/// The CPU model, core count and memory.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{model}, {cores} cores, {memory_gib:.0} GiB")
}

/// Today's date (UTC), `YYYY-MM-DD`.
pub(crate) fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Howard Hinnant's days-to-civil.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Replaces the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` in `path` (creating
/// the file, or appending the markers, when absent).
pub(crate) fn replace_section(path: &Path, name: &str, body: &str) -> Result<(), BoxError> {
    let begin = format!("<!-- {name}:begin -->");
    let end = format!("<!-- {name}:end -->");
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let section = format!("{begin}\n{}\n{end}", body.trim_end());
    let updated = match (text.find(&begin), text.find(&end)) {
        (Some(b), Some(e)) if e > b => {
            format!("{}{section}{}", &text[..b], &text[e + end.len()..])
        }
        _ => format!("{}\n{section}\n", text.trim_end()),
    };
    std::fs::write(path, updated)?;
    Ok(())
}

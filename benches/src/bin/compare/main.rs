//! `compare`: our client side by side with lapin and amqprs, end to end against RabbitMQ and
//! against the blast peer (`amqp-wire` playing an infinitely fast broker on loopback).
//!
//! ```text
//! cargo run --release -p amqp-benches --bin compare -- [--rounds 3] [--messages 200000]
//!     [--scenarios publish,confirm,...] [--clients ours,lapin,amqprs] [--json]
//!     [--write | --no-write] [--url amqp://...]
//! cargo run --release -p amqp-benches --bin compare -- --codec-report
//! ```
//!
//! Each client runs each scenario in a child process of its own (this binary re-executed
//! with `--worker CLIENT SCENARIO ...`), so the CPU time it reports is that client's alone;
//! clients alternate within each round, on a fresh queue each time (durable, deleted after).
//! The worker samples its own CPU time (`getrusage`) and the broker's (`/proc/PID/stat` of
//! beam.smp) at the start and the end of its timed phase, and prints one JSON line.
//!
//! A full run (the defaults) rewrites the end-to-end part of `BENCHMARKS.md`; a partial run
//! only prints its table, unless given `--write`. `--codec-report` rewrites the codec part
//! from the criterion results of `benches/peers.rs` and the counts of `benches/alloc.rs`.

mod amqprs_peer;
mod blast;
mod codec_report;
mod harness;
mod lapin_peer;
mod measure;
mod ours;
mod report;
mod scenario;

use std::process::ExitCode;

use scenario::{Client, Job, Scenario};

/// Errors of the harness and its workers: reported and the process exits non-zero.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = if args.first().map(String::as_str) == Some("--worker") {
        worker(&args[1..])
    } else if args.iter().any(|a| a == "--codec-report") {
        codec_report::run()
    } else {
        harness::Options::parse(&args).and_then(harness::run)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--worker CLIENT SCENARIO --url U --queue Q --count N --size S [--beam-pid P]`: runs one
/// scenario with one client and prints its [`scenario::Outcome`] as one JSON line.
fn worker(args: &[String]) -> Result<(), BoxError> {
    let [client, scenario, rest @ ..] = args else {
        return Err("--worker CLIENT SCENARIO ...".into());
    };
    let client: Client = client.parse()?;
    let scenario: Scenario = scenario.parse()?;
    let mut job = Job {
        client,
        scenario,
        url: String::new(),
        queue: String::new(),
        count: scenario.count_for(200_000),
        body_size: scenario.body_size(),
        beam_pid: None,
    };
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--url" => job.url.clone_from(value),
            "--queue" => job.queue.clone_from(value),
            "--count" => job.count = value.parse()?,
            "--size" => job.body_size = value.parse()?,
            "--beam-pid" => job.beam_pid = Some(value.parse()?),
            _ => return Err(format!("unknown worker flag {flag}").into()),
        }
    }
    // Every client gets the same runtime: tokio's multi-threaded one, a worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut meter = measure::Meter::new(job.beam_pid);
    let outcome = runtime.block_on(async {
        let run = async {
            match job.client {
                Client::Ours => ours::run(&job, &mut meter).await,
                Client::Lapin => lapin_peer::run(&job, &mut meter).await,
                Client::Amqprs => amqprs_peer::run(&job, &mut meter).await,
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(300), run)
            .await
            .map_err(|_| BoxError::from("the worker timed out after 300 s"))?
    })?;
    println!("{}", serde_json::to_string(&outcome)?);
    // The clients' background tasks and threads need not wind down.
    runtime.shutdown_background();
    Ok(())
}

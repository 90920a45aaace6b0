//! The harness: prepares queues, runs each client's worker in a child process, alternating
//! clients within each round, and collects what they report.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use amqp_client::{
    BasicProperties, Confirm, Connection, PublishOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use bytes::Bytes;

use crate::BoxError;
use crate::measure::{beam_pid, children_cpu, process_cpu};
use crate::report::{self, Run};
use crate::scenario::{Client, Outcome, Scenario};

/// The command line of a harness run.
#[derive(Clone, Debug)]
pub(crate) struct Options {
    pub(crate) url: String,
    pub(crate) rounds: usize,
    pub(crate) messages: u64,
    pub(crate) scenarios: Vec<Scenario>,
    pub(crate) clients: Vec<Client>,
    /// Print the JSON report on stdout.
    pub(crate) json: bool,
    /// Rewrite BENCHMARKS.md: `Some(true)` forced, `Some(false)` never, `None` for a full run.
    pub(crate) write: Option<bool>,
}

const DEFAULT_ROUNDS: usize = 3;
const DEFAULT_MESSAGES: u64 = 200_000;

impl Options {
    pub(crate) fn parse(args: &[String]) -> Result<Self, BoxError> {
        let mut options = Self {
            url: std::env::var("AMQP_URL")
                .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned()),
            rounds: DEFAULT_ROUNDS,
            messages: DEFAULT_MESSAGES,
            scenarios: Scenario::ALL.to_vec(),
            clients: Client::ALL.to_vec(),
            json: false,
            write: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--url" => options.url.clone_from(value()?),
                "--rounds" => options.rounds = value()?.parse::<usize>()?.max(1),
                "--messages" => options.messages = value()?.parse::<u64>()?.max(1),
                "--scenarios" => {
                    options.scenarios = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?;
                }
                "--clients" => {
                    options.clients = value()?
                        .split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()?;
                }
                "--json" => options.json = true,
                "--write" => options.write = Some(true),
                "--no-write" => options.write = Some(false),
                "--help" | "-h" => {
                    println!("{}", HELP.trim());
                    std::process::exit(0);
                }
                _ => return Err(format!("unknown flag {flag} (see --help)").into()),
            }
        }
        Ok(options)
    }

    /// True for the defaults: every scenario and client, full counts and rounds.
    pub(crate) fn is_full(&self) -> bool {
        self.rounds >= DEFAULT_ROUNDS
            && self.messages == DEFAULT_MESSAGES
            && self.scenarios.len() == Scenario::ALL.len()
            && self.clients.len() == Client::ALL.len()
    }
}

const HELP: &str = "
compare: amqp-client side by side with lapin and amqprs.

  --url URL            the broker (default $AMQP_URL or amqp://guest:guest@127.0.0.1:5672/%2f)
  --rounds N           rounds of every scenario, clients alternating (default 3)
  --messages N         16 B messages per publish/consume run (default 200000); the other
                       scenarios' counts scale with it (4 KiB: 50000, 1 MiB: 500, RPC: 5000,
                       blast peer: 500000 at the default)
  --scenarios A,B      publish, confirm, confirm-4k, confirm-1m, consume, consume-multi, rpc,
                       rpc-64, blast-consume, blast-publish (default: all)
  --clients A,B        ours, lapin, amqprs (default: all)
  --json               print the JSON report on stdout
  --write / --no-write rewrite BENCHMARKS.md (default: only after a full run)
  --codec-report       rewrite BENCHMARKS.md's codec part from the criterion results
";

/// The workspace root (where BENCHMARKS.md lives).
pub(crate) fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

pub(crate) fn run(options: Options) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let needs_broker = options.scenarios.iter().any(|s| !s.is_blast());
    let admin = if needs_broker {
        Some(runtime.block_on(Connection::connect(&options.url))?)
    } else {
        None
    };
    let broker_version = admin
        .as_ref()
        .and_then(|c| {
            c.server_properties()
                .get("version")
                .and_then(|v| v.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| "n/a".to_owned());
    let beam = beam_pid();
    let blast_url = if options.scenarios.iter().any(|s| s.is_blast()) {
        let addr = crate::blast::start()?;
        Some(format!("amqp://guest:guest@{addr}/%2f"))
    } else {
        None
    };
    let load_before = report::load_average();
    let started = Instant::now();
    let mut runs = Vec::new();
    for &scenario in &options.scenarios {
        let count = scenario.count_for(options.messages);
        eprintln!("== {}", scenario.describe(options.messages));
        for round in 0..options.rounds {
            // Alternate: each round starts with the next client.
            let mut clients = options.clients.clone();
            let turn = round % clients.len().max(1);
            clients.rotate_left(turn);
            for client in clients {
                let setup = Setup {
                    scenario,
                    client,
                    round,
                    count,
                };
                let run = if scenario.is_blast() {
                    let url = blast_url.as_deref().ok_or("no blast peer")?;
                    // The blast peer delivers as many messages as the queue's name says.
                    one_run(&setup, url, &format!("blast-{count}"), None)?
                } else {
                    let admin = admin.as_ref().ok_or("no broker connection")?;
                    runtime.block_on(broker_run(&setup, &options.url, admin, beam))?
                };
                eprintln!(
                    "   round {} {:<12} {:>10.0} msg/s  {:>7.2} µs CPU/msg{}",
                    round + 1,
                    client.name(),
                    run.outcome.messages as f64 / run.outcome.seconds,
                    run.outcome.cpu_us / run.outcome.messages as f64,
                    run.outcome
                        .p50_us
                        .map(|p| format!("  p50 {p:.0} µs"))
                        .unwrap_or_default()
                );
                runs.push(run);
            }
        }
    }
    if let Some(admin) = admin {
        let _ = runtime.block_on(admin.close());
    }
    let context = report::Context {
        broker_version,
        rounds: options.rounds,
        messages: options.messages,
        load_before,
        load_after: report::load_average(),
        minutes: started.elapsed().as_secs_f64() / 60.0,
        full: options.is_full(),
    };
    let summary = report::summarise(&runs, &options.scenarios, &options.clients);
    let markdown = report::markdown(&context, &summary, &options.scenarios);
    println!("{markdown}");
    let json = report::json(&context, &runs, &summary);
    let json_text = serde_json::to_string_pretty(&json)?;
    if options.json {
        println!("{json_text}");
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target"))
        .join("amqp-benches");
    std::fs::create_dir_all(&target)?;
    std::fs::write(target.join("compare.json"), &json_text)?;
    if options.write.unwrap_or(options.is_full()) {
        let path = workspace_root().join("BENCHMARKS.md");
        report::replace_section(&path, "compare", &markdown)?;
        std::fs::write(workspace_root().join("BENCHMARKS.json"), &json_text)?;
        eprintln!("wrote {} and BENCHMARKS.json", path.display());
    }
    Ok(())
}

/// One run's coordinates.
struct Setup {
    scenario: Scenario,
    client: Client,
    round: usize,
    count: u64,
}

/// A run against RabbitMQ: a fresh durable queue (pre-filled for the consume scenarios),
/// the worker, then the queue deleted.
async fn broker_run(
    setup: &Setup,
    url: &str,
    admin: &Connection,
    beam: Option<u32>,
) -> Result<Run, BoxError> {
    let channel = admin.open_channel().await?;
    let queue = if setup.scenario.needs_queue() {
        let name = format!(
            "amqp-benches-{}-{}-{}-{}",
            setup.scenario,
            setup.client.name(),
            setup.round,
            std::process::id()
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel.queue_declare(&name, durable).await?;
        if setup.scenario.prefilled() {
            fill(&channel, &name, setup.count, setup.scenario.body_size()).await?;
        }
        name
    } else {
        String::new()
    };
    // Let the broker settle (a deleted queue's messages, a fill's writes) before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let run = tokio::task::block_in_place(|| one_run(setup, url, &queue, beam));
    if !queue.is_empty() {
        channel
            .queue_delete(&queue, QueueDeleteOptions::default())
            .await?;
    }
    channel.close().await?;
    run
}

/// Publishes `count` messages of `size` octets to `queue` and waits for every confirm.
async fn fill(
    channel: &amqp_client::Channel,
    queue: &str,
    count: u64,
    size: usize,
) -> Result<(), BoxError> {
    channel.confirm_select().await?;
    let body = Bytes::from(vec![b'x'; size]);
    let mut pending: std::collections::VecDeque<Confirm> = Default::default();
    for _ in 0..count {
        pending.push_back(
            channel
                .publish(
                    "",
                    queue,
                    PublishOptions::default(),
                    BasicProperties::default(),
                    body.clone(),
                )
                .await?,
        );
        if pending.len() > 1000 {
            if let Some(c) = pending.pop_front() {
                c.await?;
            }
        }
    }
    for c in pending {
        c.await?;
    }
    Ok(())
}

/// Runs one worker process and reads its outcome; also measures, from this side, the
/// child's whole CPU time and this process's (the blast peer's) during the run.
fn one_run(setup: &Setup, url: &str, queue: &str, beam: Option<u32>) -> Result<Run, BoxError> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("--worker")
        .arg(setup.client.name())
        .arg(setup.scenario.name())
        .args(["--url", url, "--queue", queue])
        .args(["--count", &setup.count.to_string()])
        .args(["--size", &setup.scenario.body_size().to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(pid) = beam.filter(|_| !setup.scenario.is_blast()) {
        command.args(["--beam-pid", &pid.to_string()]);
    }
    let children_before = children_cpu();
    let own_before = process_cpu();
    let output = command.output()?;
    let own_cpu = process_cpu().saturating_sub(own_before);
    let child_cpu = children_cpu().saturating_sub(children_before);
    if !output.status.success() {
        return Err(format!(
            "{} {} round {} failed ({})",
            setup.client.name(),
            setup.scenario,
            setup.round + 1,
            output.status
        )
        .into());
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .ok_or("the worker printed no outcome")?;
    let outcome: Outcome = serde_json::from_str(line)?;
    Ok(Run {
        scenario: setup.scenario,
        client: setup.client,
        round: setup.round,
        outcome,
        process_cpu_us: child_cpu.as_secs_f64() * 1e6,
        peer_cpu_us: setup
            .scenario
            .is_blast()
            .then_some(own_cpu.as_secs_f64() * 1e6),
    })
}

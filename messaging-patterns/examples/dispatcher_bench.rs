//! Messages per second through one dispatcher consumer: a Python class in a long-lived
//! worker (`consumer: module:Class`) against the same Python function run as a process per
//! message (`command:`), measured in the same run against the broker at `AMQP_URL`.
//!
//! ```text
//! cargo run --release -p messaging-patterns --example dispatcher_bench [-- WORKER_N COMMAND_N]
//! ```
//!
//! Each message is hashed (SHA-256) and a line appended to a file, in both modes; the
//! queue is filled first, and the time runs from the dispatcher's start until the last
//! line is written. Only the ratio means anything across machines.

use std::path::Path;
use std::time::{Duration, Instant};

use amqp_client::{BasicProperties, Connection, ConnectionConfig, PublishOptions};
use messaging_patterns::dispatcher::{Config, Dispatcher, Registry};

const WORK: &str = r#"
import hashlib

def work(body, out):
    digest = hashlib.sha256(body).hexdigest()
    with open(out, "a") as f:
        f.write(digest + "\n")
"#;

const CLASS: &str = r#"
import os
from bench_work import work

class Consumer:
    def consume(self, amqp, msg):
        work(msg.body, os.environ["BENCH_OUT"])
        amqp.ack()

    def shutdown(self, exception=None):
        pass
"#;

const COMMAND: &str = r#"
import os, sys
from bench_work import work
work(sys.stdin.buffer.read(), os.environ["BENCH_OUT"])
"#;

type Error = Box<dyn std::error::Error>;

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

/// Fills `queue` with `n` messages, runs a dispatcher with `handler` until `n` lines are
/// written, and returns the rate.
async fn measure(
    conn: &Connection,
    url: &str,
    dir: &Path,
    (mode, handler): (&str, &str),
    n: usize,
) -> Result<f64, Error> {
    let queue = format!("dispatcher-bench.{}.{mode}", std::process::id());
    let out = dir.join(format!("{mode}.out"));
    let channel = conn.open_channel().await?;
    channel.queue_declare(&queue, Default::default()).await?;
    channel.queue_purge(&queue).await?;
    channel.confirm_select().await?;
    for i in 0..n {
        let body = format!("message {i}").repeat(20);
        let confirm = channel
            .publish(
                "",
                &queue,
                PublishOptions::default(),
                BasicProperties::default(),
                body,
            )
            .await?;
        confirm.await?;
    }
    let yaml = format!(
        "env: {{ BENCH_OUT: '{}', PYTHONPATH: '{}' }}\nconsumers:\n  - {handler}\n    queue: {queue}\n",
        out.display(),
        dir.display()
    );
    let config = Config::parse(&yaml, [])?;
    let dispatcher = Dispatcher::new(config, Registry::new(), ConnectionConfig::from_uri(url)?)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let run = tokio::spawn(dispatcher.run(async {
        let _ = stopped.await;
    }));
    let deadline = started + Duration::from_secs(600);
    while lines(&out) < n {
        if Instant::now() > deadline || run.is_finished() {
            return Err(format!("{handler}: only {} of {n} handled", lines(&out)).into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    let _ = stop.send(());
    run.await??;
    channel.queue_delete(&queue, Default::default()).await?;
    channel
        .queue_delete(&format!("{queue}.dead"), Default::default())
        .await?;
    channel.close().await?;
    let rate = n as f64 / elapsed.as_secs_f64();
    println!(
        "{handler:<60} {n:>6} messages in {:>7.2} s: {rate:>8.1} msg/s",
        elapsed.as_secs_f64()
    );
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let worker_n = args.next().transpose()?.unwrap_or(2000);
    let command_n = args.next().transpose()?.unwrap_or(200);
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let conn = Connection::connect(&url).await?;
    let dir = std::env::temp_dir().join(format!("dispatcher-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("bench_work.py"), WORK)?;
    std::fs::write(dir.join("bench_consumer.py"), CLASS)?;
    std::fs::write(dir.join("bench_command.py"), COMMAND)?;
    let worker = measure(
        &conn,
        &url,
        &dir,
        ("worker", "consumer: bench_consumer:Consumer"),
        worker_n,
    )
    .await?;
    let command = format!(
        "command: [python3, {}]",
        dir.join("bench_command.py").display()
    );
    let per_message = measure(&conn, &url, &dir, ("command", &command), command_n).await?;
    println!(
        "long-lived worker / process per message: {:.1}x",
        worker / per_message
    );
    std::fs::remove_dir_all(&dir)?;
    conn.close().await?;
    Ok(())
}

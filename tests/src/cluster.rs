//! A local 3-node RabbitMQ cluster for failover tests, run by `scripts/cluster`.
//!
//! Nodes `c1@localhost`..`c3@localhost` serve AMQP on 127.0.0.1:5681-5683 (distribution
//! 25681-25683, a private epmd on 4391), with their own cookie, config and data below
//! `CLUSTER_DIR` (here `$TMPDIR/amqp-rs-test-cluster`). The shared node on 5672 is never
//! touched. See `/work/shared/amqp/local-cluster.md` for the recipe and its traps.
//!
//! [`Cluster`] runs `scripts/cluster down` when dropped, also when the test panics (set
//! `AMQP_TESTS_KEEP_CLUSTER=1` to keep the directory and its logs). [`Cluster::shared`] hands
//! the same cluster to every test of a test binary that asks while it is up, because `up`
//! takes about 17 s; [`Cluster::serial`] keeps those tests from killing nodes under each
//! other.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use amqp_client::Endpoint;

/// Nodes in the cluster.
pub const NODES: usize = 3;
/// The AMQP port of node 1; node `n` listens on `BASE_PORT + n - 1`.
pub const BASE_PORT: u16 = 5681;
const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/// A running cluster; `scripts/cluster down` on drop.
#[derive(Debug)]
pub struct Cluster {
    script: Script,
}

/// How to call the script; cheap to clone into blocking tasks.
#[derive(Clone, Debug)]
struct Script {
    path: PathBuf,
    dir: PathBuf,
}

impl Script {
    /// Runs `scripts/cluster ARGS`; returns success and stdout + stderr.
    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(&self.path)
            .args(args)
            .env("CLUSTER_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.path.display()));
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn must(&self, args: &[&str]) -> String {
        let (ok, out) = self.run(args);
        assert!(ok, "scripts/cluster {} failed:\n{out}", args.join(" "));
        out
    }
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    /// Starts the cluster (after cleaning up what a crashed earlier run left). Blocking.
    ///
    /// # Panics
    /// Loudly when RabbitMQ is not installed, or when the cluster does not come up (the
    /// script's output says why).
    pub fn up() -> Self {
        assert!(
            Path::new(SERVER).exists(),
            "RabbitMQ is not installed ({SERVER} is missing), so the cluster tests cannot run. \
             Install it with `scripts/ensure-rabbitmq` (Debian package, as root)"
        );
        let script = Script {
            path: Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cluster"),
            dir: std::env::temp_dir().join("amqp-rs-test-cluster"),
        };
        // A run that was killed never ran its guard: its nodes would hold the ports.
        script.must(&["down"]);
        let started = Instant::now();
        let out = script.must(&["up"]);
        eprintln!("cluster up in {:.1?}:\n{out}", started.elapsed());
        Self { script }
    }

    /// The cluster of this test binary: started by the first caller, shared with every
    /// caller while one of them still holds it, stopped when the last one drops it. Call it
    /// before waiting on [`Cluster::serial`], so that tests waiting their turn keep it up.
    /// Blocking.
    pub fn shared() -> Arc<Self> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cluster) = shared.upgrade() {
            return cluster;
        }
        let cluster = Arc::new(Self::up());
        *shared = Arc::downgrade(&cluster);
        cluster
    }

    /// A lock that lets one test at a time kill and start nodes.
    pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
        SERIAL.lock().await
    }

    /// `amqp://guest:guest@127.0.0.1:568N/%2f` for N = 1..=3.
    pub fn urls(&self) -> Vec<String> {
        (1..=NODES)
            .map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f", port(n)))
            .collect()
    }

    /// The nodes' endpoints, in the order of `nodes` (1-based).
    pub fn endpoints(&self, nodes: &[usize]) -> Vec<Endpoint> {
        nodes
            .iter()
            .map(|&n| Endpoint::new("127.0.0.1", port(n)))
            .collect()
    }

    /// SIGKILLs node `n` (1-based) and waits until its ports refuse connections.
    ///
    /// # Panics
    /// When the node is not running.
    pub async fn kill(&self, n: usize) {
        let script = self.script.clone();
        tokio::task::spawn_blocking(move || script.must(&["kill", &n.to_string()]))
            .await
            .expect("kill task");
    }

    /// Starts node `n` again and waits until the cluster lists it as running.
    ///
    /// # Panics
    /// When it is running already or does not come back.
    pub async fn start(&self, n: usize) {
        let script = self.script.clone();
        tokio::task::spawn_blocking(move || script.must(&["start", &n.to_string()]))
            .await
            .expect("start task");
    }

    /// `rabbitmqctl -n cN@localhost ARGS -s` on the first node that answers, as lines of
    /// tab-separated fields (colour codes removed).
    pub async fn ctl(&self, args: &[&str]) -> Vec<Vec<String>> {
        let script = self.script.clone();
        let args: Vec<String> = args.iter().map(|&a| a.to_owned()).collect();
        tokio::task::spawn_blocking(move || {
            let mut last = String::new();
            for n in 1..=NODES {
                let mut full = vec!["ctl".to_owned(), n.to_string()];
                full.extend(args.iter().cloned());
                full.push("-s".to_owned());
                let full: Vec<&str> = full.iter().map(String::as_str).collect();
                let (ok, out) = script.run(&full);
                if ok {
                    return strip_ansi(&out)
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .map(|l| l.split('\t').map(|f| f.trim().to_owned()).collect())
                        .collect();
                }
                last = out;
            }
            panic!("rabbitmqctl {args:?} failed on every node; last:\n{last}")
        })
        .await
        .expect("ctl task")
    }

    /// The node (1-based) that leads quorum or stream queue `queue`, if it has one now.
    pub async fn leader_of(&self, queue: &str) -> Option<usize> {
        self.ctl(&["list_queues", "name", "leader"])
            .await
            .into_iter()
            .find(|row| row.first().map(String::as_str) == Some(queue))
            .and_then(|row| node_of_name(row.get(1)?))
    }

    /// The node (1-based) the client connection named `name` (its `connection_name`) is
    /// connected to, if the cluster knows it.
    pub async fn node_of_connection(&self, name: &str) -> Option<usize> {
        self.ctl(&["list_connections", "client_properties", "port"])
            .await
            .into_iter()
            .find(|row| row.iter().any(|field| field.contains(name)))
            .and_then(|row| node_of_port(row.last()?.parse().ok()?))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let keep = std::env::var_os("AMQP_TESTS_KEEP_CLUSTER").is_some();
        let mut cmd = Command::new(&self.script.path);
        cmd.arg("down").env("CLUSTER_DIR", &self.script.dir);
        if keep {
            cmd.env("KEEP_DIR", "1");
        }
        match cmd.stdin(Stdio::null()).status() {
            Ok(s) if s.success() => {}
            other => eprintln!("scripts/cluster down failed: {other:?}"),
        }
        if keep {
            eprintln!("kept {}", self.script.dir.display());
        }
    }
}

/// The AMQP port of node `n` (1-based).
pub fn port(n: usize) -> u16 {
    assert!((1..=NODES).contains(&n), "no node {n}");
    BASE_PORT + (n - 1) as u16
}

/// The node (1-based) of an AMQP port of the cluster.
pub fn node_of_port(port: u16) -> Option<usize> {
    let n = usize::from(port.checked_sub(BASE_PORT)?) + 1;
    (n <= NODES).then_some(n)
}

/// `cN@localhost` (with or without quotes) as N.
fn node_of_name(name: &str) -> Option<usize> {
    let name = name.trim_matches(|c| c == '"' || c == '\'');
    let n: usize = name
        .strip_prefix('c')?
        .strip_suffix("@localhost")?
        .parse()
        .ok()?;
    (1..=NODES).contains(&n).then_some(n)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ports_and_colours() {
        assert_eq!(node_of_name("c2@localhost"), Some(2));
        assert_eq!(node_of_name("'c3@localhost'"), Some(3));
        assert_eq!(node_of_name("rabbit@vm"), None);
        assert_eq!(node_of_port(5683), Some(3));
        assert_eq!(node_of_port(5672), None);
        assert_eq!(node_of_port(5684), None);
        assert_eq!(
            strip_ansi("\u{1b}[1mq\u{1b}[0m\tc1@localhost"),
            "q\tc1@localhost"
        );
    }
}

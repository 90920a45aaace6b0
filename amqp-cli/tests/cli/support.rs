//! Running the built `amqp` binary against the broker at `AMQP_URL`, with a timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long one run of the binary may take before the test fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// The broker the tests use: `AMQP_URL`, or RabbitMQ's default on loopback.
pub(crate) fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// `host:port` of [`amqp_url`]'s first endpoint.
pub(crate) fn broker_addr() -> String {
    let url = amqp_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let first = host_port.split(',').next().unwrap_or(host_port);
    if first.contains(':') {
        first.to_owned()
    } else {
        format!("{first}:5672")
    }
}

/// The user name of [`amqp_url`] (`guest` when it names none).
pub(crate) fn url_user() -> String {
    let url = amqp_url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.split(':').next().unwrap_or("guest").to_owned(),
        None => "guest".to_owned(),
    }
}

/// Fails loudly, saying how to start one, when no broker answers.
pub(crate) fn require_broker() {
    let addr = broker_addr();
    if let Err(e) = TcpStream::connect(&addr) {
        panic!(
            "no RabbitMQ answers at {addr} ({e}). Start one with `scripts/ensure-rabbitmq`, \
             `docker compose up -d`, or point AMQP_URL at a broker"
        );
    }
}

/// A name no other test or run uses.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "amqp-cli-test.{prefix}.{}.{nanos}.{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a run of the binary left.
#[derive(Debug)]
pub(crate) struct Out {
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Out {
    /// Panics with both outputs unless the exit status is 0.
    #[track_caller]
    pub(crate) fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "expected success: {self:#?}");
        self
    }

    /// Panics unless the exit status is `code`, and the error is one line.
    #[track_caller]
    pub(crate) fn fails(self, code: i32) -> Self {
        assert_eq!(self.code, Some(code), "expected exit {code}: {self:#?}");
        if code == 1 {
            assert_eq!(self.stderr.lines().count(), 1, "one line: {self:#?}");
            assert!(self.stderr.starts_with("amqp: error: "), "{self:#?}");
            assert!(!self.stderr.contains("panicked"), "{self:#?}");
        }
        self
    }

    pub(crate) fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// Each stdout line as JSON.
    pub(crate) fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Runs `amqp ARGS` with `AMQP_URL` set.
pub(crate) fn amqp(args: &[&str]) -> Out {
    amqp_with(args, None, &amqp_url())
}

/// Runs `amqp ARGS` with `input` on standard input.
pub(crate) fn amqp_stdin(args: &[&str], input: &[u8]) -> Out {
    amqp_with(args, Some(input), &amqp_url())
}

/// Runs `amqp ARGS` against `url`, killing it after [`RUN_TIMEOUT`].
pub(crate) fn amqp_with(args: &[&str], input: Option<&[u8]>, url: &str) -> Out {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amqp"))
        .args(args)
        .env("AMQP_URL", url)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the amqp binary");
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // From a thread of its own: a binary that stops reading (or exits early) must not
        // hold the test past its timeout.
        let input = input.to_vec();
        std::thread::spawn(move || stdin.write_all(&input));
    }
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).expect("read stdout");
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).expect("read stderr");
        s
    });
    let status = wait_for_exit(&mut child, args);
    Out {
        code: status.code(),
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Waits for `child` to exit, killing it and failing the test after [`RUN_TIMEOUT`].
fn wait_for_exit(
    child: &mut std::process::Child,
    args: &[impl std::fmt::Debug],
) -> std::process::ExitStatus {
    let deadline = Instant::now() + RUN_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("amqp {args:?} ran longer than {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A durable queue for one test (RabbitMQ 4 refuses transient non-exclusive ones), with
/// `x-expires` so a crashed run leaves nothing behind for long; deleted on drop.
pub(crate) struct TempQueue(pub(crate) String);

impl TempQueue {
    pub(crate) fn new(prefix: &str) -> Self {
        require_broker();
        let name = unique(prefix);
        amqp(&["declare", "queue", &name, "--arg", "x-expires:int=120000"]).ok();
        Self(name)
    }
}

impl Drop for TempQueue {
    fn drop(&mut self) {
        let _ = amqp(&["delete", "queue", &self.0]);
    }
}

/// A queue or exchange that one test declared (`amqp declare KIND NAME ARGS`), deleted on
/// drop.
pub(crate) struct Temp {
    kind: &'static str,
    pub(crate) name: String,
}

impl Temp {
    pub(crate) fn declare(kind: &'static str, prefix: &str, args: &[&str]) -> Self {
        require_broker();
        let name = unique(prefix);
        amqp(&[&["declare", kind, &name][..], args].concat()).ok();
        Self { kind, name }
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = amqp(&["delete", self.kind, &self.name]);
    }
}

/// The binary running in the background, its standard error read line by line as it comes.
pub(crate) struct Background {
    child: std::process::Child,
    stderr: std::sync::mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
    stdout: Option<std::thread::JoinHandle<String>>,
    args: Vec<String>,
}

impl Background {
    /// Starts `amqp ARGS` with `AMQP_URL` set.
    pub(crate) fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_amqp"))
            .args(args)
            .env("AMQP_URL", amqp_url())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the amqp binary");
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).expect("read stdout");
            s
        });
        let err = std::io::BufReader::new(child.stderr.take().unwrap());
        let (tx, stderr) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(err).map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stderr,
            stderr_seen: Vec::new(),
            stdout: Some(stdout),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Waits (at most [`RUN_TIMEOUT`]) for a line of standard error containing `text`.
    #[track_caller]
    pub(crate) fn wait_for_stderr(&mut self, text: &str) -> String {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    self.stderr_seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "amqp {:?}: no {text:?} on stderr ({e}); saw {:?}",
                    self.args, self.stderr_seen
                ),
            }
        }
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub(crate) fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits (at most [`RUN_TIMEOUT`]) for the run to end, and returns what it left.
    pub(crate) fn finish(mut self) -> Out {
        let status = wait_for_exit(&mut self.child, &self.args);
        let mut stderr = std::mem::take(&mut self.stderr_seen);
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(5)) {
            stderr.push(line);
        }
        Out {
            code: status.code(),
            stdout: self
                .stdout
                .take()
                .map(|h| h.join().unwrap())
                .unwrap_or_default(),
            stderr: stderr.join("\n"),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! A private RabbitMQ node for tests that stop or restart a broker: its own node name, AMQP
//! and distribution ports, Erlang cookie, config, plugins file and data directory under a
//! temporary directory. The shared node on 5672 is never touched.
//!
//! It follows `/work/shared/amqp/local-cluster.md`: the scripts in `/usr/lib/rabbitmq/bin`
//! (not the `/usr/sbin` wrappers, which `su` to rabbitmq and pick up the system cookie),
//! started under `env -i` so nothing from `/etc/rabbitmq` or the caller's environment leaks
//! in, in a session of its own (`setsid`). It registers with the system's epmd (4369), as
//! the shared node does; only its own name is added there.
//!
//! ```text
//!  DIR/home/.erlang.cookie  own cookie (0400); HOME of the node and of rabbitmqctl
//!  DIR/rabbitmq.conf        listeners.tcp.default = 127.0.0.1:PORT
//!  DIR/enabled_plugins      [].
//!  DIR/data                 RABBITMQ_MNESIA_BASE (kept across restarts)
//!  DIR/log                  node log, stdout.log
//!  DIR/node.pid             written by the node; `rabbitmqctl wait` and `stop` use it
//! ```
//!
//! [`PrivateNode`] stops the node and removes the directory when dropped, also when the test
//! panics (set `AMQP_TESTS_KEEP_NODE=1` to keep the directory for its logs).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/lib/rabbitmq/bin";
/// AMQP ports tried for private nodes; the distribution port is 20000 above.
const PORTS: std::ops::RangeInclusive<u16> = 5690..=5699;
/// rabbitmqctl's own distribution listener: away from the system CLI (35672-35682) and the
/// cluster fixture (35690-35699).
const CTL_PORTS: (u16, u16) = (35710, 35729);
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The node's fixed facts and its launcher process; shared with blocking tasks.
#[derive(Debug)]
pub struct NodeControl {
    /// `name@localhost`.
    pub node: String,
    /// The AMQP port on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    dir: PathBuf,
    launcher: Mutex<Option<Child>>,
}

/// A running private node, stopped and removed on drop.
#[derive(Debug)]
pub struct PrivateNode {
    control: Arc<NodeControl>,
}

impl PrivateNode {
    /// Prepares a directory and starts a node; returns once it accepts AMQP connections.
    ///
    /// # Panics
    /// When RabbitMQ is not installed, no port in 5690-5699 is free, or the node does not
    /// boot within two minutes (its log is printed).
    pub fn start() -> Self {
        assert!(
            Path::new(BIN).join("rabbitmq-server").exists(),
            "RabbitMQ is not installed ({BIN}/rabbitmq-server); scripts/ensure-rabbitmq installs it"
        );
        let port = PORTS
            .clone()
            .find(|&p| port_free(p) && port_free(p + 20000))
            .expect("a free port pair in 5690-5699 / 25690-25699");
        let tag = crate::unique("node")
            .replace("amqp-rs-test.", "")
            .replace('.', "-");
        let dir = std::env::temp_dir().join(format!("amqp-rs-{tag}"));
        let control = Arc::new(NodeControl {
            node: format!("amqp-rs-{tag}@localhost"),
            port,
            dist_port: port + 20000,
            dir,
            launcher: Mutex::new(None),
        });
        control.prepare().expect("prepare the node's directory");
        // From here on, the guard cleans up whatever happens.
        let node = Self { control };
        node.control.boot();
        node
    }

    /// The handle blocking tasks use ([`NodeControl::restart`] in `spawn_blocking`).
    pub fn control(&self) -> Arc<NodeControl> {
        self.control.clone()
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        self.control.url()
    }

    /// Stops the node and starts it again on the same data, without blocking the runtime.
    ///
    /// # Panics
    /// As [`NodeControl::restart`].
    pub async fn restart(&self) {
        let control = self.control();
        tokio::task::spawn_blocking(move || control.restart())
            .await
            .expect("restart task");
    }
}

impl Drop for PrivateNode {
    fn drop(&mut self) {
        self.control.stop();
        if std::env::var_os("AMQP_TESTS_KEEP_NODE").is_some() {
            eprintln!("kept {}", self.control.dir.display());
        } else if self.control.dir.join(".amqp-rs-private-node").exists() {
            let _ = std::fs::remove_dir_all(&self.control.dir);
        }
    }
}

impl NodeControl {
    /// `amqp://guest:guest@127.0.0.1:PORT/%2f`.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    fn prepare(&self) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let d = &self.dir;
        for sub in ["home", "data", "log"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        std::fs::write(d.join(".amqp-rs-private-node"), b"")?;
        std::fs::write(d.join("rabbitmq-env.conf"), b"")?;
        std::fs::write(d.join("enabled_plugins"), b"[].\n")?;
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\nloopback_users.guest = true\n\
                 log.console = false\nlog.file.level = info\n",
                self.port
            ),
        )?;
        let cookie_path = d.join("home/.erlang.cookie");
        let cookie: String = (0..32)
            .map(|_| char::from(b'A' + fastrand::u8(0..26)))
            .collect();
        std::fs::write(&cookie_path, cookie)?;
        std::fs::set_permissions(&cookie_path, std::fs::Permissions::from_mode(0o400))
    }

    /// What every program (node and CLI) gets, under `env -i`.
    fn common_env(&self) -> Vec<(String, String)> {
        let d = self.dir.display();
        [
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin".to_owned()),
            ("LANG", "C.UTF-8".to_owned()),
            ("LC_ALL", "C.UTF-8".to_owned()),
            ("HOME", format!("{d}/home")),
            ("ERL_EPMD_PORT", "4369".to_owned()),
            ("RABBITMQ_CONF_ENV_FILE", format!("{d}/rabbitmq-env.conf")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    fn node_env(&self) -> Vec<(String, String)> {
        let d = self.dir.display();
        let mut env = self.common_env();
        env.extend(
            [
                ("RABBITMQ_NODENAME", self.node.clone()),
                ("RABBITMQ_USE_LONGNAME", "false".to_owned()),
                ("RABBITMQ_CONFIG_FILE", format!("{d}/rabbitmq.conf")),
                ("RABBITMQ_CONFIG_FILES", format!("{d}/conf.d")),
                (
                    "RABBITMQ_ADVANCED_CONFIG_FILE",
                    format!("{d}/advanced.config"),
                ),
                (
                    "RABBITMQ_ENABLED_PLUGINS_FILE",
                    format!("{d}/enabled_plugins"),
                ),
                ("RABBITMQ_MNESIA_BASE", format!("{d}/data")),
                ("RABBITMQ_LOG_BASE", format!("{d}/log")),
                ("RABBITMQ_PID_FILE", format!("{d}/node.pid")),
                ("RABBITMQ_MOTD_FILE", format!("{d}/motd")),
                ("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1".to_owned()),
                ("RABBITMQ_NODE_PORT", self.port.to_string()),
                ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
                (
                    "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                    "-kernel inet_dist_use_interface {127,0,0,1}".to_owned(),
                ),
                ("ERL_CRASH_DUMP", format!("{d}/log/erl_crash.dump")),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env
    }

    /// `rabbitmqctl -n NODE args...`, bounded by `limit`; returns success and the output.
    pub fn ctl(&self, args: &[&str], limit: Duration) -> (bool, String) {
        let mut cmd = Command::new("timeout");
        cmd.arg(limit.as_secs().max(1).to_string())
            .arg("env")
            .arg("-i");
        for (k, v) in self.common_env() {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg("RABBITMQ_CTL_ERL_ARGS=-kernel inet_dist_use_interface {127,0,0,1}")
            .arg(format!("RABBITMQ_CTL_DIST_PORT_MIN={}", CTL_PORTS.0))
            .arg(format!("RABBITMQ_CTL_DIST_PORT_MAX={}", CTL_PORTS.1))
            .arg(format!("{BIN}/rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .stdin(Stdio::null());
        match cmd.output() {
            Ok(out) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Err(e) => (false, format!("rabbitmqctl: {e}")),
        }
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.join("node.pid")
    }

    /// Launches the node and waits until it serves AMQP.
    ///
    /// # Panics
    /// When it does not boot within two minutes (the log is printed).
    pub fn boot(&self) {
        let started = Instant::now();
        // A stale pid file would make `rabbitmqctl wait` wait for a dead process.
        let _ = std::fs::remove_file(self.pid_file());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log/stdout.log"))
            .expect("stdout.log");
        let mut cmd = Command::new("setsid");
        cmd.arg("env").arg("-i");
        for (k, v) in self.node_env() {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(format!("{BIN}/rabbitmq-server"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let child = cmd.spawn().expect("launch rabbitmq-server");
        *self.launcher.lock().unwrap() = Some(child);

        // First the pid file (the launcher must not die before), then the app.
        while !self.pid_file().exists() {
            if let Some(status) = self.launcher_exited() {
                self.fail(&format!("rabbitmq-server exited early with {status}"));
            }
            if started.elapsed() > BOOT_TIMEOUT {
                self.fail("no pid file");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let pid_file = self.pid_file().display().to_string();
        let (ok, out) = self.ctl(&["wait", "--timeout", "110", &pid_file], BOOT_TIMEOUT);
        if !ok {
            self.fail(&format!("rabbitmqctl wait failed: {out}"));
        }
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > BOOT_TIMEOUT {
                self.fail("the AMQP port does not accept connections");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn launcher_exited(&self) -> Option<std::process::ExitStatus> {
        let mut launcher = self.launcher.lock().unwrap();
        let status = launcher.as_mut()?.try_wait().ok()??;
        *launcher = None;
        Some(status)
    }

    fn fail(&self, what: &str) -> ! {
        let log = std::fs::read_to_string(self.dir.join("log/stdout.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "private node {}: {what}\n--- stdout.log (tail) ---\n{}",
            self.node,
            tail.join("\n")
        );
    }

    /// The beam's pid from the pid file, if that process is this node's.
    fn our_beam(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        let home = format!("HOME={}/home", self.dir.display());
        environ
            .split(|&b| b == 0)
            .any(|var| var == home.as_bytes())
            .then_some(pid)
    }

    /// Stops the node (gracefully, with SIGKILL as the fallback) and waits until its port
    /// refuses connections. Does nothing when it is not running.
    pub fn stop(&self) {
        let running = self.our_beam().is_some() || self.launcher.lock().unwrap().is_some();
        if !running {
            return;
        }
        let pid_file = self.pid_file().display().to_string();
        let (ok, out) = self.ctl(&["stop", &pid_file], Duration::from_secs(60));
        if !ok {
            eprintln!("rabbitmqctl stop failed ({out}); killing the node");
        }
        let deadline = Instant::now() + Duration::from_secs(if ok { 30 } else { 1 });
        while self.our_beam().is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(pid) = self.our_beam() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        if let Some(mut launcher) = self.launcher.lock().unwrap().take() {
            let deadline = Instant::now() + Duration::from_secs(30);
            while launcher.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if launcher.try_wait().ok().flatten().is_none() {
                let _ = launcher.kill();
                let _ = launcher.wait();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while (TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            || TcpStream::connect(("127.0.0.1", self.dist_port)).is_ok())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::fs::remove_file(self.pid_file());
    }

    /// Stops the node and boots it again on the same data (durable queues and persistent
    /// messages survive). Blocking.
    ///
    /// # Panics
    /// When it does not come back within two minutes.
    pub fn restart(&self) {
        self.stop();
        self.boot();
    }
}

/// True when nothing listens on 127.0.0.1:`port` and it can be bound.
fn port_free(port: u16) -> bool {
    TcpStream::connect(("127.0.0.1", port)).is_err()
        && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

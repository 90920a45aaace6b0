//! The `amqp-dispatcher` command line, for the binary and for binaries that register their
//! own Rust handlers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use tracing_subscriber::EnvFilter;

use super::config::{Config, HandlerSpec, connection_from_env};
use super::{Dispatcher, DispatcherError, Registry, check_python, serve_http, shutdown_signal};

const ENVIRONMENT: &str = "\
Environment:
  AMQP_URL            broker URL(s), comma-separated, tried in random order
  RABBITMQ_URL        the same, as the original amqp-dispatcher reads it (AMQP_URL wins)
  AMQP_HEARTBEAT      heartbeat in seconds (wins over RABBITMQ_HEARTBEAT)
  RABBITMQ_HEARTBEAT  overrides the URL's heartbeat, as in the original
  AMQP_DISPATCHER_CONFIG  the file, when --config is not given
  AMQP_DISPATCHER_LOG_FORMAT  text or json, when --log-format is not given
  RUST_LOG            log filter (default info)
Handler processes see only PATH, HOME, LANG, PYTHONPATH and the file's env: entries.

Exit codes: 0 after a graceful stop (SIGTERM, SIGINT) or a valid file, 1 when the
dispatcher failed, 2 for a bad command line or configuration.";

/// Runs consumers described by a YAML file: handlers registered from Rust, external
/// commands, or Python classes of the original amqp-dispatcher's interface.
#[derive(Debug, Parser)]
#[command(name = "amqp-dispatcher", version, after_help = ENVIRONMENT)]
struct Cli {
    /// The YAML file (ours, or the original amqp-dispatcher's).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "config.yml",
        env = "AMQP_DISPATCHER_CONFIG"
    )]
    config: PathBuf,
    /// Check the file, the commands and the Python classes, then exit.
    #[arg(long)]
    validate: bool,
    /// Serve /livez and /readyz on this address (such as 0.0.0.0:8080).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Log as text or as one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "AMQP_DISPATCHER_LOG_FORMAT")]
    log_format: LogFormat,
    /// The original daemon's client choice (haigha, pika); accepted and ignored.
    #[arg(long, hide = true)]
    connection: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How the command line ended: its exit code, and the text to show the person, for
/// standard output (`Ok`) or standard error (`Err`). The binary prints it; the library
/// itself never prints.
#[derive(Debug)]
pub struct Ended {
    /// The process's exit code.
    pub code: ExitCode,
    /// The text to print, if any.
    pub message: Option<Result<String, String>>,
}

impl Ended {
    fn error(code: u8, message: String) -> Self {
        Self {
            code: ExitCode::from(code),
            message: Some(Err(message)),
        }
    }

    fn ok(message: Option<String>) -> Self {
        Self {
            code: ExitCode::SUCCESS,
            message: message.map(Ok),
        }
    }
}

/// The `amqp-dispatcher` command line with the handlers of `registry` (see `--help`); sets
/// up logging on standard error. Print [`Ended::message`] and exit with [`Ended::code`].
pub async fn main_with(registry: Registry) -> Ended {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let text = e.render().to_string();
            return match e.use_stderr() {
                true => Ended::error(2, text.trim_end().to_owned()),
                false => Ended::ok(Some(text.trim_end().to_owned())),
            };
        }
    };
    init_logging(cli.log_format);
    let path = cli.config.display().to_string();
    let config = match Config::load(&cli.config, registry.names()) {
        Ok(config) => config,
        Err(e) => return Ended::error(2, format!("{path}: {e}")),
    };
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    if cli.validate {
        return validate(&path, &config).await;
    }
    if let Some(client) = &cli.connection {
        tracing::info!(
            client,
            "--connection is the original daemon's client choice; ignored"
        );
    }
    match run(config, registry, cli.http).await {
        Ok(()) => Ended::ok(None),
        Err(e) => Ended::error(1, format!("amqp-dispatcher: {e}")),
    }
}

async fn validate(path: &str, config: &Config) -> Ended {
    if let Err(e) = check_commands(config) {
        return Ended::error(2, format!("{path}: {e}"));
    }
    if let Err(e) = check_python(config).await {
        return Ended::error(2, format!("{path}: {e}"));
    }
    let mut text = format!("{path}: ok ({} consumers)", config.consumers.len());
    for warning in config.warnings() {
        text.push_str(&format!("\nwarning: {warning}"));
    }
    Ended::ok(Some(text))
}

async fn run(
    config: Config,
    registry: Registry,
    http: Option<SocketAddr>,
) -> Result<(), DispatcherError> {
    let env = connection_from_env()?;
    tracing::info!("connecting to {}", env.describe());
    let dispatcher = Dispatcher::new(config, registry, env.config)?;
    let probes = match http {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| DispatcherError::Startup(format!("--http {addr}: {e}")))?;
            tracing::info!(%addr, "serving /livez and /readyz");
            Some(tokio::spawn(serve_http(listener, dispatcher.health())))
        }
        None => None,
    };
    let result = dispatcher.run(shutdown_signal()).await;
    if let Some(probes) = probes {
        probes.abort();
    }
    result
}

fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A binary that set up its own subscriber keeps it.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Checks that every external command's program exists (a path, or a name on `PATH`).
fn check_commands(config: &Config) -> Result<(), String> {
    for (i, consumer) in config.consumers.iter().enumerate() {
        let HandlerSpec::Command(command) = &consumer.handler else {
            continue;
        };
        let program = command.first().map(String::as_str).unwrap_or_default();
        let found = if program.contains('/') {
            std::path::Path::new(program).is_file()
        } else {
            std::env::var_os("PATH").is_some_and(|paths| {
                std::env::split_paths(&paths).any(|dir| dir.join(program).is_file())
            })
        };
        if !found {
            return Err(format!(
                "consumers[{i}].command: program {program:?} not found"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line() {
        let cli = Cli::try_parse_from(["d", "--config", "a.yml"]).unwrap();
        assert_eq!((cli.config, cli.validate), ("a.yml".into(), false));
        let cli =
            Cli::try_parse_from(["d", "--validate", "--config=b.yml", "--http", "127.0.0.1:0"])
                .unwrap();
        assert!(cli.validate && cli.http.is_some());
        let original = Cli::try_parse_from(["d", "--connection", "pika"]).unwrap();
        assert_eq!(
            original.config,
            PathBuf::from("config.yml"),
            "the original's default"
        );
        assert!(Cli::try_parse_from(["d", "--config"]).is_err());
        assert!(Cli::try_parse_from(["d", "-x"]).is_err());
        let help = Cli::try_parse_from(["d", "--help"]).unwrap_err();
        assert!(!help.use_stderr() && help.to_string().contains("RABBITMQ_URL"));
    }
}

//! The `amqp` binary: parses the command line, runs the subcommand, prints its error as one
//! line and exits non-zero on failure.

use std::process::ExitCode;

use amqp_cli::consume::{ConsumeArgs, GetArgs};
use amqp_cli::declare::{DeclareCommand, DeleteCommand, PurgeArgs};
use amqp_cli::decode::DecodeArgs;
use amqp_cli::error::say;
use amqp_cli::perf::PerfArgs;
use amqp_cli::publish::PublishArgs;
use amqp_cli::rpc::RpcArgs;
use amqp_cli::{CliError, broker, consume, declare, decode, man, perf, publish, rpc};
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::Shell;

/// Talk to RabbitMQ from the shell: publish, consume, call, declare, decode captures,
/// measure throughput.
#[derive(Parser, Debug)]
#[command(
    name = "amqp",
    version,
    propagate_version = true,
    after_help = "Exit status: 0 on success, 1 when the broker, the network or the input \
                  fails (one line on standard error says why), 2 for a usage error.\n\n\
                  Examples:\n  \
                  amqp declare queue jobs\n  \
                  amqp publish -k jobs --body hello --header attempt:int=1 --confirm\n  \
                  amqp consume -q jobs --count 1 --json\n  \
                  amqp perf                      # a 10-second load on a fresh queue"
)]
struct Cli {
    /// The broker URL.
    #[arg(
        long,
        help = "Broker URL: amqp[s]://user:pass@host:port/vhost[?heartbeat=30&...]",
        global = true,
        env = "AMQP_URL",
        default_value = broker::DEFAULT_URL,
        hide_env_values = true,
        value_name = "URL",
        help_heading = "Connection"
    )]
    url: String,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Publish a message from --body or --file, or one per line of standard input
    Publish(PublishArgs),
    /// Print messages from a queue, or from an exchange, as they are delivered; or run a
    /// command for each
    #[command(
        after_help = "--exec CMD: the body is on CMD's standard input; AMQP_EXCHANGE, \
                      AMQP_ROUTING_KEY, AMQP_REDELIVERED, AMQP_DELIVERY_TAG, AMQP_BODY_SIZE, \
                      AMQP_HEADERS (JSON) and one AMQP_<PROPERTY> per property the message has \
                      (AMQP_CONTENT_TYPE, AMQP_CORRELATION_ID, ...) are in its environment. \
                      Exit status 0 acknowledges the message, 75 (EX_TEMPFAIL) requeues it, \
                      any other rejects it (dead-lettered when the queue says so); a command \
                      killed by a signal, past --exec-timeout, or running at Ctrl-C has its \
                      message requeued.\n\n\
                      Examples:\n  \
                      amqp consume -q jobs --count 1 --json\n  \
                      amqp consume --exchange CTH --queue queue1     # shared: turns\n  \
                      amqp consume -e logs -k 'error.*' --exec 'mail -s alert ops'\n  \
                      amqp consume -q events --offset first --arg x-priority:int=5"
    )]
    Consume(ConsumeArgs),
    /// Take messages from a queue one at a time (basic.get)
    Get(GetArgs),
    /// Send a request and print the reply (direct reply-to)
    Rpc(RpcArgs),
    /// Declare an exchange, a queue or a binding
    #[command(subcommand)]
    Declare(DeclareCommand),
    /// Delete an exchange, a queue or a binding
    #[command(subcommand)]
    Delete(DeleteCommand),
    /// Remove every ready message from a queue
    Purge(PurgeArgs),
    /// Print a captured AMQP byte stream one frame per line
    #[command(
        after_help = "The input is one direction of a connection as captured from the \
                      socket (the client's side starts with the protocol header). A malformed \
                      frame is reported on standard error with its byte offset, and decoding \
                      goes on at the next plausible frame; the exit status is then 1."
    )]
    Decode(DecodeArgs),
    /// Measure publish and consume rates and latencies (like RabbitMQ's PerfTest)
    #[command(
        after_help = "With no flags: 10 seconds, one producer and one consumer, 1 KiB \
                      bodies, confirm window 128, on a fresh classic queue that is deleted \
                      afterwards. A progress line goes to standard error every second; the \
                      report gives publish, confirm and consume rates and latency percentiles \
                      in microseconds, publish to consume (from a timestamp in each body) and \
                      publish to confirm, from HDR histograms.\n\n\
                      PerfTest's flags mean the same here: -x -y -X -Y -s -c -q/--qos \
                      -A/--multi-ack-every -a -r -z/--time -C/--pmessages -u -e -k \
                      -f/--flag persistent -B/--body -T --json-body --variable-rate \
                      --variable-size --queue-pattern[-from|-to] -o/--output-file.\n\n\
                      Example: amqp perf -x 2 -y 2 --time 30 --variable-rate 1000:10 \
                      --variable-rate 5000:10 --progress csv"
    )]
    Perf(PerfArgs),
    /// Print a shell completion script: amqp completions bash > /etc/bash_completion.d/amqp
    Completions {
        /// The shell
        shell: Shell,
    },
    /// Write the man pages (amqp.1, amqp-consume.1, ...) into DIR: sudo amqp man
    /// /usr/local/share/man/man1
    Man {
        /// The directory to write them to (created if missing)
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // `amqp consume | head`: the reader is gone, which is not an error.
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("amqp: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let url = cli.url;
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(CliError::Output)
    };
    match cli.command {
        Command::Decode(args) => decode::run(&args),
        Command::Completions { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "amqp", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { dir } => {
            for page in man::write_pages(Cli::command(), &dir)? {
                say(page.display())?;
            }
            Ok(())
        }
        Command::Publish(args) => runtime()?.block_on(publish::run(&url, args)),
        Command::Consume(args) => runtime()?.block_on(consume::consume(&url, args)),
        Command::Get(args) => runtime()?.block_on(consume::get(&url, args)),
        Command::Rpc(args) => runtime()?.block_on(rpc::run(&url, args)),
        Command::Declare(c) => runtime()?.block_on(declare::declare(&url, c)),
        Command::Delete(c) => runtime()?.block_on(declare::delete(&url, c)),
        Command::Purge(args) => runtime()?.block_on(declare::purge(&url, args)),
        Command::Perf(args) => runtime()?.block_on(perf::run(&url, args)),
    }
}

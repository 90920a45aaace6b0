//! `amqp perf`'s once-a-second figures while it runs: a line on standard error (text, CSV or
//! JSON, `--progress`) and CSV rows in `--output-file`; and the checks that end the run.

use std::fs::File;
use std::io::{BufWriter, IsTerminal as _, Write as _};
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::Run;
use super::args::ProgressFormat;
use crate::consume::sleep_until;
use crate::error::{CliError, Result};
use crate::perf_report::{Progress, Sample};

/// With `--pmessages`, how long consumers may go without a message once the producers are
/// done before the run stops anyway.
const DRAIN_IDLE: Duration = Duration::from_secs(5);
/// The run's length when neither `--duration` nor `--pmessages` is given.
const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// How often the end conditions are checked.
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// How often the figures are printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Where the figures go.
struct Sinks {
    format: Option<ProgressFormat>,
    tty: bool,
    file: Option<BufWriter<File>>,
    header_written: bool,
}

impl Sinks {
    fn open(run: &Run) -> Result<Self> {
        let file = match &run.args.output_file {
            Some(path) => Some(BufWriter::new(File::create(path).map_err(|source| {
                CliError::Write {
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        let format = (!run.args.quiet).then_some(run.args.progress);
        Ok(Self {
            tty: format == Some(ProgressFormat::Text) && std::io::stderr().is_terminal(),
            format,
            file,
            header_written: false,
        })
    }

    fn write(&mut self, sample: &Sample) -> Result<()> {
        let first = !std::mem::replace(&mut self.header_written, true);
        match self.format {
            Some(ProgressFormat::Text) if self.tty => eprint!("\r{}\x1b[K", sample.text()),
            Some(ProgressFormat::Text) => eprintln!("{}", sample.text()),
            Some(ProgressFormat::Csv) if first => {
                eprintln!("{}\n{}", Sample::CSV_HEADER, sample.csv())
            }
            Some(ProgressFormat::Csv) => eprintln!("{}", sample.csv()),
            Some(ProgressFormat::Json) => eprintln!("{}", sample.json()),
            None => {}
        }
        if let Some(file) = &mut self.file {
            if first {
                writeln!(file, "{}", Sample::CSV_HEADER)?;
            }
            writeln!(file, "{}", sample.csv())?;
            file.flush()?;
        }
        Ok(())
    }

    fn end(&self) {
        if self.tty {
            eprintln!();
        }
    }
}

/// Writes the figures every second until the duration is over, every message is consumed,
/// the user interrupts, or a producer fails.
pub(super) async fn watch(
    run: &Run,
    started: Instant,
    producers: &mut JoinSet<Result<()>>,
) -> Result<()> {
    let args = &run.args;
    let deadline = match (args.duration, args.count) {
        (Some(d), _) => Some(started + d),
        (None, Some(_)) => None,
        (None, None) => Some(started + DEFAULT_DURATION),
    };
    let mut sinks = Sinks::open(run)?;
    let mut progress = Progress::default();
    let (mut last_print, mut next_print) = (started, started + PROGRESS_EVERY);
    let mut idle = (0, started);
    let mut producers_done = args.producers == 0;
    let mut check = tokio::time::interval(CHECK_EVERY);
    loop {
        tokio::select! {
            _ = check.tick() => {}
            () = sleep_until(deadline) => break,
            _ = tokio::signal::ctrl_c() => break,
            Some(done) = producers.join_next(), if !producers_done => {
                if let Ok(Err(e)) = done {
                    return Err(e);
                }
                producers_done = producers.is_empty();
            }
        }
        let now = Instant::now();
        if now >= next_print {
            sinks.write(&progress.sample(&run.stats, now - started, now - last_print))?;
            last_print = now;
            next_print += PROGRESS_EVERY;
        }
        if producers_done && count_done(run, &mut idle, now) {
            break;
        }
    }
    sinks.end();
    Ok(())
}

/// With `--pmessages`, once the producers are done: true when every message was consumed,
/// or the consumers have gone quiet for [`DRAIN_IDLE`] (messages lost or taken by others).
/// `idle` holds the consumed count and when it last changed.
fn count_done(run: &Run, idle: &mut (u64, Instant), now: Instant) -> bool {
    let Some(per_channel) = run.args.count else {
        return false;
    };
    if run.args.consumers == 0 {
        return true;
    }
    let channels = u64::from(run.args.producers) * u64::from(run.args.producer_channel_count);
    let consumed = run.stats.consumed.load(Ordering::Relaxed);
    if consumed >= per_channel.saturating_mul(channels) {
        return true;
    }
    if consumed != idle.0 {
        *idle = (consumed, now);
    }
    now - idle.1 >= DRAIN_IDLE
}

//! CPU time of this process and of the broker, wall time, and latency histograms.

// `getrusage` is a libc call, unsafe by definition; it only fills the struct it is given.
#![allow(unsafe_code)]

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::scenario::Outcome;

/// CPU time (user + system) of every thread of this process so far.
pub(crate) fn process_cpu() -> Duration {
    rusage(libc::RUSAGE_SELF)
}

/// CPU time of every child process waited for so far.
pub(crate) fn children_cpu() -> Duration {
    rusage(libc::RUSAGE_CHILDREN)
}

fn rusage(who: libc::c_int) -> Duration {
    // SAFETY: `getrusage` writes a whole `rusage` into the zeroed struct it is handed and
    // reads nothing else; `who` is one of the two values it defines.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(who, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time (utime + stime) of process `pid` from `/proc/PID/stat`, at the kernel's
/// 100 Hz tick (10 ms resolution).
pub(crate) fn proc_cpu(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split(' ');
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// The RabbitMQ node's Erlang VM, if one runs on this machine.
pub(crate) fn beam_pid() -> Option<u32> {
    let mut found = None;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.contains("beam.smp") && cmdline.contains("rabbit") {
            found = Some(pid);
            break;
        }
    }
    found
}

/// Samples wall time, this process's CPU and the broker's CPU at the start and the end of a
/// worker's timed phase.
pub(crate) struct Meter {
    beam_pid: Option<u32>,
    start: Option<(Instant, Duration, Option<Duration>)>,
}

impl Meter {
    pub(crate) fn new(beam_pid: Option<u32>) -> Self {
        Self {
            beam_pid,
            start: None,
        }
    }

    /// Starts the timed phase.
    pub(crate) fn start(&mut self) {
        let broker = self.beam_pid.and_then(proc_cpu);
        self.start = Some((Instant::now(), process_cpu(), broker));
    }

    /// Ends the timed phase: the outcome for `messages`.
    pub(crate) fn stop(&self, messages: u64) -> Outcome {
        let (wall, cpu, broker) = self.start.unwrap_or((Instant::now(), process_cpu(), None));
        let seconds = wall.elapsed().as_secs_f64();
        let cpu_us = (process_cpu().saturating_sub(cpu)).as_secs_f64() * 1e6;
        let broker_cpu_us = match (broker, self.beam_pid.and_then(proc_cpu)) {
            (Some(before), Some(after)) => Some(after.saturating_sub(before).as_secs_f64() * 1e6),
            _ => None,
        };
        Outcome {
            messages,
            seconds,
            cpu_us,
            broker_cpu_us,
            p50_us: None,
            p99_us: None,
        }
    }
}

/// A latency histogram in microseconds, 1 µs to 60 s, 3 significant digits.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency.
pub(crate) fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let us = (latency.as_micros() as u64).clamp(1, 60_000_000);
    let _ = histogram.record(us);
}

/// Adds the median and the 99th percentile of `histogram` to `outcome`.
pub(crate) fn with_percentiles(mut outcome: Outcome, histogram: &Histogram<u64>) -> Outcome {
    if !histogram.is_empty() {
        outcome.p50_us = Some(histogram.value_at_quantile(0.5) as f64);
        outcome.p99_us = Some(histogram.value_at_quantile(0.99) as f64);
    }
    outcome
}

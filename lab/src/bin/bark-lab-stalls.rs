//! bark-lab-stalls: record the spans in which this machine ran nothing,
//! not even a SCHED_FIFO thread at priority 99 (see [`bark_lab::stalls`]).
//! It sleeps 1 ms at a time for `--seconds` and writes every wake-up later
//! than `--min-ms` as `start_ns,len_ns` (CLOCK_MONOTONIC ns). Without the
//! right to real-time scheduling it says so and records at normal
//! priority (then its figures include ordinary scheduling delay).

use anyhow::{Context, Result};
use clap::Parser;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(about = "Record the machine's own stalls (CLOCK_MONOTONIC spans)")]
struct Args {
    /// How long to watch, s (bounded: at most 3600).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Record wake-ups later than this, ms.
    #[arg(long, default_value_t = 8.0)]
    min_ms: f64,
    /// Write the stalls here.
    #[arg(long)]
    out: PathBuf,
}

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn main() -> Result<()> {
    let a = Args::parse();
    let param = libc::sched_param { sched_priority: 99 };
    // SAFETY: plain syscall on this thread with a valid parameter block.
    let rt = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0;
    if !rt {
        eprintln!(
            "bark-lab-stalls: no SCHED_FIFO ({}); recording at normal priority",
            std::io::Error::last_os_error()
        );
    }
    let min_ns = (a.min_ms * 1e6) as u64;
    let end = mono_ns() + a.seconds * 1_000_000_000;
    let mut stalls = Vec::new();
    loop {
        let before = mono_ns();
        if before >= end {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
        let due = before + 1_000_000;
        let late = mono_ns().saturating_sub(due);
        if late > min_ns {
            stalls.push((due, late));
        }
    }
    let mut f = std::fs::File::create(&a.out).with_context(|| format!("{}", a.out.display()))?;
    writeln!(
        f,
        "# bark-lab-stalls: min {} ms, SCHED_FIFO {}",
        a.min_ms,
        if rt { 99 } else { 0 }
    )?;
    writeln!(f, "start_ns,len_ns")?;
    for (s, l) in &stalls {
        writeln!(f, "{s},{l}")?;
    }
    let longest = stalls.iter().map(|s| s.1).max().unwrap_or(0);
    println!(
        "stalls: {} (longest {:.1} ms) in {} s",
        stalls.len(),
        longest as f64 / 1e6,
        a.seconds
    );
    Ok(())
}

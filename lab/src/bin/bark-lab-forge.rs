//! bark-lab-forge: forged Commands against one node's command socket, for
//! the lab's keyed control case (docs/SECURITY.md, "Commands"). At
//! `--pps` for `--seconds`, round-robin:
//!
//! - `open`: a well-formed Command for the node (mute on, volume 150 %,
//!   switched off), unsealed, as any host could send in open mode;
//! - `wrong-key`: the same sealed with a random key;
//! - `garbage`: random bytes, 1..600 long;
//! - `short`: a Command cut short, unsealed.
//!
//! It counts what comes back (a keyed node must answer none of it) and
//! prints the counts as JSON. Lab only: it refuses a destination outside
//! 10.99.0.0/24.

use anyhow::{bail, Context, Result};
use bark_core::auth::Key;
use bark_core::command::{Controller, Settings, SET_ENABLED, SET_MUTE, SET_VOLUME};
use clap::Parser;
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Send forged Bark Commands to a node in a lab LAN")]
struct Args {
    /// The node's command socket (IPv4:port, in 10.99.0.0/24).
    #[arg(long)]
    to: SocketAddrV4,
    /// The node's id (16 hex digits, from `bark ls --json`).
    #[arg(long)]
    target: String,
    /// Local address to send from.
    #[arg(long)]
    local: Ipv4Addr,
    /// Seconds of forged traffic.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Datagrams per second.
    #[arg(long, default_value_t = 200.0)]
    pps: f64,
    /// PRNG seed.
    #[arg(long, default_value_t = 11)]
    seed: u64,
}

const KINDS: [&str; 4] = ["open", "wrong-key", "garbage", "short"];

fn main() -> Result<()> {
    let a = Args::parse();
    let ip = a.to.ip().octets();
    if !(ip[0] == 10 && ip[1] == 99 && ip[2] == 0) {
        bail!("lab only: --to must be in 10.99.0.0/24");
    }
    if !(a.seconds > 0.0 && a.seconds <= 60.0 && a.pps > 0.0 && a.pps <= 10_000.0) {
        bail!("--seconds within 0..60, --pps within 0..10000");
    }
    let target = u64::from_str_radix(&a.target, 16).context("--target: 16 hex digits")?;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(a.seed);
    let sock = UdpSocket::bind((a.local, 0)).context("binding the send socket")?;
    sock.set_nonblocking(true)?;
    let mut open =
        Controller::new(rng.random::<u64>() | 1, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let other = Key::from_bytes(rng.random());
    let mut wrong = Controller::new(rng.random::<u64>() | 1, Some(&other))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let hostile = Settings {
        volume: 1.5,
        mute: true,
        enabled: false,
        ..Settings::default()
    };
    let mask = SET_VOLUME | SET_MUTE | SET_ENABLED;
    let mut counts = [0u64; KINDS.len()];
    let mut answers = 0u64;
    let mut send_errors = 0u64;
    let mut out = [0u8; 1024];
    let mut rx = [0u8; 2048];
    let period = Duration::from_secs_f64(1.0 / a.pps);
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(a.seconds);
    let mut next = start;
    let mut k = 0usize;
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    };
    while Instant::now() < end {
        while sock.recv_from(&mut rx).is_ok() {
            answers += 1;
        }
        let kind = k % KINDS.len();
        k += 1;
        let len = match kind {
            0 => open
                .command(target, mask, &hostile, wall(), &mut out)
                .map(|x| x.0),
            1 => wrong
                .command(target, mask, &hostile, wall(), &mut out)
                .map(|x| x.0),
            2 => {
                let n = rng.random_range(1..600usize);
                rng.fill(&mut out[..n]);
                Some(n)
            }
            _ => open
                .command(target, mask, &hostile, wall(), &mut out)
                .map(|(n, _)| rng.random_range(16..n)),
        };
        if let Some(n) = len {
            match sock.send_to(&out[..n], a.to) {
                Ok(_) => counts[kind] += 1,
                Err(_) => send_errors += 1,
            }
        }
        next += period;
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
    }
    // Late answers.
    std::thread::sleep(Duration::from_millis(300));
    while sock.recv_from(&mut rx).is_ok() {
        answers += 1;
    }
    let mut j = serde_json::Map::new();
    for (name, n) in KINDS.iter().zip(counts) {
        j.insert((*name).to_string(), n.into());
    }
    j.insert("answers".into(), answers.into());
    j.insert("send_errors".into(), send_errors.into());
    println!("{}", serde_json::Value::Object(j));
    Ok(())
}

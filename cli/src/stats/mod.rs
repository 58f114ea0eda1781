//! `bark stats`: joins the group, keeps the latest status packet of every
//! node (a listener thread), and shows them: a live full-screen table, a
//! plain table (`--once`), JSON snapshots (`--json`) or Prometheus metrics
//! (`--metrics-listen`).

pub mod metrics;
pub mod model;
pub mod table;
pub mod tui;

use crate::cli::StatsArgs;
use crate::clock::monotonic_ns;
use crate::net;
use anyhow::{bail, Context, Result};
use bark_core::protocol::{self, Packet};
use model::{NodeTable, Snapshot};
use std::io::{IsTerminal, Write};
use std::net::SocketAddrV4;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Listens on the group in a thread and keeps the node table.
pub struct Collector {
    table: Arc<Mutex<NodeTable>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    group: String,
    quiet_ns: u64,
    drop_ns: u64,
}

impl Collector {
    /// Joins `group` (on `ifname`) and starts listening.
    ///
    /// # Errors
    /// Socket set-up failures.
    pub fn start(
        group: SocketAddrV4,
        ifname: Option<&str>,
        quiet_ns: u64,
        drop_ns: u64,
        mut auth: crate::keyed::Auth,
    ) -> Result<Self> {
        let mut sock = net::group_socket(group, ifname)?;
        // No endpoint here (stats only listens): a plain opener, whose
        // drops are warned about as the endpoints' are.
        let mut opener = auth.opener();
        let table = Arc::new(Mutex::new(NodeTable::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (t, s) = (Arc::clone(&table), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("bark-stats-rx".into())
            .spawn(move || {
                while !s.load(Ordering::Relaxed) {
                    net::wait_readable(&[&sock], 100_000_000);
                    // Bounded drain: the stop flag is looked at regularly
                    // even under a flood.
                    let d = sock.drain(1024, |data, from, at| {
                        let mut tab = t.lock().unwrap_or_else(|p| p.into_inner());
                        let n = match opener.open(data, at.real_ns) {
                            Ok(n) => n,
                            Err(_) => {
                                auth.warn(opener.counters());
                                tab.auth_dropped += 1;
                                return;
                            }
                        };
                        match protocol::parse(&data[..n]) {
                            Ok(Packet::Status(st)) => tab.update(at.mono_ns, &st, from),
                            Ok(_) => {}
                            Err(_) => tab.malformed += 1,
                        }
                    });
                    if let Some(e) = d.error {
                        log::warn!("receiving on the group: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .context("starting the listener thread")?;
        Ok(Collector {
            table,
            stop,
            thread: Some(thread),
            group: group.to_string(),
            quiet_ns,
            drop_ns,
        })
    }

    /// A collector that hears nothing (tests of its users).
    #[cfg(test)]
    pub fn idle() -> Self {
        Collector {
            table: Arc::new(Mutex::new(NodeTable::default())),
            stop: Arc::new(AtomicBool::new(true)),
            thread: None,
            group: String::new(),
            quiet_ns: 3_000_000_000,
            drop_ns: 30_000_000_000,
        }
    }

    /// The current snapshot; nodes silent for the drop time are forgotten.
    pub fn snapshot(&self) -> Snapshot {
        let now = monotonic_ns();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.expire(now, self.drop_ns);
        t.snapshot(now, self.quiet_ns, &self.group)
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn sleep_checking(stop: &AtomicBool, d: Duration) {
    let end = std::time::Instant::now() + d;
    while !crate::util::stopping(stop) {
        let left = end.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            break;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Runs `bark stats`.
///
/// # Errors
/// Socket, terminal or HTTP set-up failures; a live view without a terminal.
pub fn run(a: &StatsArgs) -> Result<()> {
    let stop = crate::util::shutdown_flag()?;
    let live = !a.once && !a.json;
    let tty = std::io::stdout().is_terminal();
    if live && !tty && a.metrics_listen.is_none() {
        bail!("stdout is not a terminal: use --once, --json or --metrics-listen ADDR");
    }
    if a.drop_sec <= a.quiet_sec {
        bail!(
            "--drop-sec ({}) must be longer than --quiet-sec ({})",
            a.drop_sec,
            a.quiet_sec
        );
    }
    let group = SocketAddrV4::new(a.net.source_ip, a.net.port);
    if !group.ip().is_multicast() {
        log::warn!(
            "{group} is not a multicast group: only status packets sent to this address will be seen"
        );
    }
    let c = Arc::new(Collector::start(
        group,
        a.net.local_ifname.as_deref(),
        (a.quiet_sec * 1e9) as u64,
        (a.drop_sec * 1e9) as u64,
        crate::keyed::Auth::new(a.key.key_file.as_deref(), false)?,
    )?);

    let metrics = match a.metrics_listen {
        Some(addr) => {
            let server = tiny_http::Server::http(addr)
                .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
            let bound = server
                .server_addr()
                .to_ip()
                .map_or_else(|| addr.to_string(), |a| a.to_string());
            // Tests and scripts read the port from here when asking for :0.
            eprintln!("bark stats: serving metrics on http://{bound}/metrics");
            let (c2, s2) = (Arc::clone(&c), Arc::clone(&stop));
            let th = std::thread::Builder::new()
                .name("bark-metrics".into())
                .spawn(move || metrics::serve(&server, &s2, &|| c2.snapshot()))
                .context("starting the metrics thread")?;
            Some(th)
        }
        None => None,
    };
    let interval = Duration::from_millis(a.interval_msec);

    let result = if a.once {
        sleep_checking(&stop, Duration::from_secs_f64(a.wait_sec));
        let s = c.snapshot();
        if a.json {
            println!("{}", serde_json::to_string(&s)?);
        } else {
            print!("{}", table::render_plain(&s));
        }
        if s.nodes.is_empty() {
            eprintln!(
                "bark stats: no Bark node heard on {group} in {} s (is anything streaming? try `bark doctor`)",
                a.wait_sec
            );
        }
        Ok(())
    } else if a.json {
        let mut out = std::io::stdout().lock();
        let mut n = 0u64;
        loop {
            sleep_checking(&stop, interval);
            if crate::util::stopping(&stop) {
                break Ok(());
            }
            let line = serde_json::to_string(&c.snapshot())?;
            if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                // The reader went away (a closed pipe): stop quietly.
                break Ok(());
            }
            n += 1;
            if a.count > 0 && n >= a.count {
                break Ok(());
            }
        }
    } else if tty {
        let info = tui::ViewInfo {
            interval,
            quiet_s: a.quiet_sec,
            drop_s: a.drop_sec,
            count: a.count,
        };
        tui::run(&|| c.snapshot(), &info, &stop)
    } else {
        // Metrics only.
        let mut n = 0u64;
        while !crate::util::stopping(&stop) {
            sleep_checking(&stop, interval);
            n += 1;
            if a.count > 0 && n >= a.count {
                break;
            }
        }
        Ok(())
    };
    stop.store(true, Ordering::Relaxed);
    if let Some(th) = metrics {
        let _ = th.join();
    }
    result
}

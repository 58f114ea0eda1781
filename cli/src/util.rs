//! Small shared helpers: shutdown on signals, CPU time, traffic counts.
//! (This node's ids and host name are bark-io's: [`bark_io::node`].)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag set by SIGINT or SIGTERM, so that loops end cleanly (files
/// finalized, summaries written) instead of dying mid-write.
///
/// # Errors
/// If the signal handlers cannot be installed.
pub fn shutdown_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag))?;
    }
    Ok(flag)
}

/// Whether `flag` is set.
pub fn stopping(flag: &AtomicBool) -> bool {
    flag.load(Ordering::Relaxed)
}

/// CPU time this process has used (user + system), seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: rusage is plain integers, for which all-zero is valid.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct we own; RUSAGE_SELF is valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Traffic counters of one kind of datagram.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Traffic {
    /// Datagrams.
    pub packets: u64,
    /// UDP payload bytes.
    pub bytes: u64,
    /// Bytes on the wire: payload plus IPv4 (20) and UDP (8) headers.
    pub ip_bytes: u64,
}

impl Traffic {
    /// Counts one datagram of `len` payload bytes.
    pub fn add(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
        self.ip_bytes += (len + bark_core::protocol::IP_UDP_OVERHEAD) as u64;
    }
}

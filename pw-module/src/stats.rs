//! Counters the data thread bumps (relaxed atomics, no locks) and the
//! main-loop reporter that turns their changes into rate-limited log lines.

use crate::{log_debug, log_info, log_warn};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Counters shared between the data thread and the main loop.
#[derive(Default)]
pub struct Counters {
    /// Set once a callback panicked; the module then idles until unloaded.
    pub panicked: AtomicBool,
    /// `process` calls that had a buffer.
    pub cycles: AtomicU64,
    /// Datagrams sent.
    pub sent: AtomicU64,
    /// Datagrams that could not be sent (full socket buffer, no route...).
    pub send_errors: AtomicU64,
    /// errno of the last send error.
    pub last_send_errno: AtomicI64,
    /// Datagrams received.
    pub received: AtomicU64,
    /// Audio datagrams received (receiver).
    pub audio_received: AtomicU64,
    /// Datagrams dropped as malformed (or truncated).
    pub malformed: AtomicU64,
    /// Receive errors other than "nothing queued".
    pub recv_errors: AtomicU64,
    /// Receiver: playing a stream (clock synced, audio flowing).
    pub playing: AtomicBool,
    /// Receiver: packets lost, from the core's counters.
    pub lost: AtomicU64,
    /// Receiver: packets too late to play.
    pub late: AtomicU64,
    /// Receiver: output underruns.
    pub underruns: AtomicU64,
    /// Receiver: buffered audio, µs.
    pub buffer_us: AtomicI64,
    /// Receiver: playback error against the sender, ns.
    pub sync_error_ns: AtomicI64,
    /// Receiver: the least audio buffered beyond what had been played, at
    /// any output buffer of the last status period, µs (−1: none played).
    /// Below one output quantum, a later packet would have been too late.
    pub buffer_min_us: AtomicI64,
    /// Receiver with `bark.resampler = pipewire`: the correction applied
    /// through PipeWire's resampler, parts per billion.
    pub rate_match_ppb: AtomicI64,
}

impl Counters {
    /// Adds one to `c` (data thread).
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }
}

/// The last values the reporter logged about, to log changes only.
#[derive(Default)]
pub struct Reporter {
    cycles: u64,
    sent: u64,
    send_errors: u64,
    received: u64,
    audio_received: u64,
    malformed: u64,
    recv_errors: u64,
    lost: u64,
    underruns: u64,
    active: bool,
    rx_active: bool,
    playing: bool,
    ticks: u64,
}

fn delta(now: u64, last: &mut u64) -> u64 {
    let d = now.wrapping_sub(*last);
    *last = now;
    d
}

impl Reporter {
    /// Called about once a second on the main loop: logs what changed.
    /// `who` names the node in messages.
    pub fn tick(&mut self, who: &str, c: &Counters) {
        self.ticks += 1;
        let cycles = delta(c.cycles.load(Relaxed), &mut self.cycles);
        let sent = delta(c.sent.load(Relaxed), &mut self.sent);
        let received = delta(c.received.load(Relaxed), &mut self.received);
        let audio_received = delta(c.audio_received.load(Relaxed), &mut self.audio_received);
        let send_errors = delta(c.send_errors.load(Relaxed), &mut self.send_errors);
        let malformed = delta(c.malformed.load(Relaxed), &mut self.malformed);
        let recv_errors = delta(c.recv_errors.load(Relaxed), &mut self.recv_errors);
        let lost = delta(c.lost.load(Relaxed), &mut self.lost);
        let underruns = delta(c.underruns.load(Relaxed), &mut self.underruns);

        let active = cycles > 0;
        if active != self.active {
            self.active = active;
            log_info!(
                "{who}: audio {}",
                if active { "processing" } else { "idle" }
            );
        }
        let rx_active = audio_received > 0;
        if rx_active != self.rx_active {
            self.rx_active = rx_active;
            log_info!(
                "{who}: network audio {}",
                if rx_active { "arriving" } else { "stopped" }
            );
        }
        let playing = c.playing.load(Relaxed);
        if playing != self.playing {
            self.playing = playing;
            if playing {
                log_info!(
                    "{who}: playing in sync (sync error {} ns)",
                    c.sync_error_ns.load(Relaxed)
                );
            } else {
                log_info!("{who}: stopped playing");
            }
        }
        if send_errors > 0 {
            let e = std::io::Error::from_raw_os_error(c.last_send_errno.load(Relaxed) as i32);
            log_warn!("{who}: {send_errors} datagrams could not be sent in the last second ({e})");
        }
        if malformed > 0 {
            log_warn!("{who}: dropped {malformed} malformed datagrams in the last second");
        }
        if recv_errors > 0 {
            log_warn!("{who}: {recv_errors} receive errors in the last second");
        }
        if lost > 0 || underruns > 0 {
            log_info!("{who}: {lost} packets lost, {underruns} underruns in the last second");
        }
        if playing && active {
            log_debug!(
                "{who}: last second: buffer min {} us, sync error {} ns, rate match {} ppb",
                c.buffer_min_us.load(Relaxed),
                c.sync_error_ns.load(Relaxed),
                c.rate_match_ppb.load(Relaxed)
            );
        }
        if self.ticks.is_multiple_of(10) && (active || rx_active) {
            log_debug!(
                "{who}: {sent} sent, {received} received in the last second; buffer {} us, sync error {} ns, late total {}",
                c.buffer_us.load(Relaxed),
                c.sync_error_ns.load(Relaxed),
                c.late.load(Relaxed)
            );
        }
    }
}

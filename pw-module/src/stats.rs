//! Counters the data thread bumps (relaxed atomics, no locks) and the
//! main-loop reporter that turns their changes into rate-limited log lines.

use crate::{log_debug, log_info, log_warn};
use bark_core::auth::{AuthCounters, AuthError, Opener};
use bark_core::latency::{LateNote, LatencyWatch};
use bark_io::dropwarn::{DropWarnings, Throttle};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

/// Time a reporter tick stands for, ns: [`Reporter::tick`] runs about once
/// a second, and the warning throttles count in ticks.
const TICK_NS: u64 = 1_000_000_000;

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
    /// Receiver: packets that arrived in time because they were resent.
    /// Sender: packets resent.
    pub repaired: AtomicU64,
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
    /// Open datagrams dropped because this node has a key.
    pub auth_unauthenticated: AtomicU64,
    /// Sealed datagrams dropped because this node has no key.
    pub auth_no_key: AtomicU64,
    /// Datagrams whose tag did not verify (other key, corrupted, forged).
    pub auth_bad_tag: AtomicU64,
    /// Authentic datagrams dropped as replays.
    pub auth_replayed: AtomicU64,
    /// Authentic datagrams dropped for a wall-clock stamp too far off.
    pub auth_stale: AtomicU64,
    /// Stamp minus our wall clock of the last stale datagram, ns.
    pub auth_skew_ns: AtomicI64,
    /// Time requests dropped because too many came in one turn (sender).
    pub flood_dropped: AtomicU64,
    /// Sender: the session latency, ns. Receiver: the session latency it
    /// follows, ns.
    pub latency_ns: AtomicI64,
    /// Sender: the largest need a receiver reported, ns (0: none).
    /// Receiver: its own need, ns.
    pub need_ns: AtomicI64,
    /// Sender: node id of the receiver with the largest need.
    pub need_node: AtomicU64,
    /// Sender: the sink is idle (no buffers; only idle syncs go out).
    pub idle: AtomicBool,
    /// Sender: unicast subscribers (`bark.sender` receivers) now.
    pub subscribers: AtomicU64,
    /// Receiver: its output's downstream latency, ns.
    pub downstream_ns: AtomicI64,
    /// Receiver: the latency it plays at, ns (above the session's when its
    /// output needs more: see `late`).
    pub play_latency_ns: AtomicI64,
    /// Receiver: it plays later than the session latency (out of sync).
    pub playing_late: AtomicBool,
    /// Receiver: the output quantum it wants the graph to run, frames (0:
    /// the user chose it); the main loop asks for it (`node.latency`).
    pub wanted_quantum: AtomicU64,
}

impl Counters {
    /// Adds one to `c` (data thread).
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    /// Counts the outcome of a send (data thread): failures are counted
    /// with their errno, never logged.
    pub fn count_send(&self, r: std::io::Result<()>) {
        match r {
            Ok(()) => Self::bump(&self.sent),
            Err(e) => {
                Self::bump(&self.send_errors);
                self.last_send_errno
                    .store(e.raw_os_error().unwrap_or(0) as i64, Relaxed);
            }
        }
    }

    /// Counts what a socket drain saw (data thread): every datagram read,
    /// the cut ones as malformed, a receive error.
    pub fn count_drain(&self, d: &bark_io::net::Drained) {
        self.received
            .fetch_add((d.handled + d.truncated) as u64, Relaxed);
        self.malformed.fetch_add(d.truncated as u64, Relaxed);
        if d.error.is_some() {
            Self::bump(&self.recv_errors);
        }
    }

    /// Counts a datagram the endpoint dropped (data thread); `o` holds the
    /// authentication layer's counters.
    pub fn count_drop(&self, e: bark_core::endpoint::Dropped, o: &bark_core::auth::AuthCounters) {
        use bark_core::endpoint::Dropped;
        match e {
            Dropped::Auth(e) => self.count_auth_error(e, o),
            Dropped::Malformed(_) => Self::bump(&self.malformed),
            Dropped::Flood => Self::bump(&self.flood_dropped),
        }
    }

    /// Counts a datagram `o` refused with `e` (data thread).
    pub fn count_auth(&self, e: AuthError, o: &Opener) {
        self.count_auth_error(e, o.counters())
    }

    /// The authentication layer's drops counted so far (main loop), for
    /// the warnings. Its malformed datagrams are counted with the others
    /// in `malformed` and reported with them, so they are 0 here.
    pub fn auth_counters(&self) -> AuthCounters {
        AuthCounters {
            unauthenticated: self.auth_unauthenticated.load(Relaxed),
            no_key: self.auth_no_key.load(Relaxed),
            malformed: 0,
            bad_tag: self.auth_bad_tag.load(Relaxed),
            replayed: self.auth_replayed.load(Relaxed),
            stale: self.auth_stale.load(Relaxed),
            last_stale_skew_ns: self.auth_skew_ns.load(Relaxed),
        }
    }

    fn count_auth_error(&self, e: AuthError, o: &AuthCounters) {
        match e {
            AuthError::Unauthenticated => Self::bump(&self.auth_unauthenticated),
            AuthError::NoKey => Self::bump(&self.auth_no_key),
            AuthError::Malformed(_) => Self::bump(&self.malformed),
            AuthError::BadTag => Self::bump(&self.auth_bad_tag),
            AuthError::Replay => Self::bump(&self.auth_replayed),
            AuthError::Stale => {
                Self::bump(&self.auth_stale);
                self.auth_skew_ns.store(o.last_stale_skew_ns, Relaxed);
            }
        }
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
    repaired: u64,
    underruns: u64,
    active: bool,
    rx_active: bool,
    playing: bool,
    ticks: u64,
    auth: DropWarnings,
    /// Receiver: the latency it last played at, ns, and whether it was
    /// late.
    latency_ns: i64,
    playing_late: bool,
    /// Sender: changes of the session latency.
    watch: LatencyWatch,
    flood: Throttle,
    subscribers: u64,
}

/// Stores `now` in `last`; whether it changed.
fn flipped(last: &mut bool, now: bool) -> bool {
    std::mem::replace(last, now) != now
}

/// What a counter gained since the last call. A counter may be taken back
/// (the receiver withdraws the underrun that a pause began with, when the
/// next packet shows it was one): that counts as none, not as 2^64 − 1.
fn delta(now: u64, last: &mut u64) -> u64 {
    let d = now.saturating_sub(*last);
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
        let repaired = delta(c.repaired.load(Relaxed), &mut self.repaired);

        let active = cycles > 0;
        if flipped(&mut self.active, active) {
            log_info!(
                "{who}: audio {}",
                if active { "processing" } else { "idle" }
            );
        }
        let rx_active = audio_received > 0;
        if flipped(&mut self.rx_active, rx_active) {
            let state = if rx_active { "arriving" } else { "stopped" };
            log_info!("{who}: network audio {state}");
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
        self.latency(who, c);
        let subscribers = c.subscribers.load(Relaxed);
        if subscribers != std::mem::replace(&mut self.subscribers, subscribers) {
            log_info!("{who}: {subscribers} unicast subscribers (bark.sender receivers)");
        }
        let now_ns = self.ticks.saturating_mul(TICK_NS);
        if let Some(n) = self.flood.due(now_ns, c.flood_dropped.load(Relaxed)) {
            log_warn!("{who}: dropped {n} time requests: more than {} arrived between two wake-ups (a flood?)", bark_core::endpoint::MAX_PENDING_REPLIES);
        }
        if send_errors > 0 {
            let e = std::io::Error::from_raw_os_error(c.last_send_errno.load(Relaxed) as i32);
            log_warn!("{who}: {send_errors} datagrams could not be sent in the last second ({e})");
        }
        if malformed > 0 {
            log_warn!("{who}: dropped {malformed} malformed datagrams in the last second");
        }
        for m in self.auth.due(&c.auth_counters(), now_ns, "bark.key-file") {
            log_warn!("{who}: {m}");
        }
        if recv_errors > 0 {
            log_warn!("{who}: {recv_errors} receive errors in the last second");
        }
        if lost > 0 || underruns > 0 {
            log_info!("{who}: {lost} packets lost, {repaired} repaired, {underruns} underruns in the last second");
        } else if repaired > 0 {
            // Repair at work is routine on a lossy link: not worth an info
            // line a second.
            log_debug!("{who}: {repaired} packets repaired (resent) in the last second");
        }
        // −1: the receiver started playing after the last status period.
        let buffer_min = c.buffer_min_us.load(Relaxed);
        if playing && active && buffer_min >= 0 {
            log_debug!(
                "{who}: last second: buffer min {buffer_min} us, sync error {} ns, rate match {} ppb",
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

    /// Logs changes of the session latency (sender) and of a receiver's
    /// play latency, with the reason.
    fn latency(&mut self, who: &str, c: &Counters) {
        let late = c.playing_late.load(Relaxed);
        let play = c.play_latency_ns.load(Relaxed);
        if play > 0 {
            // A receiver.
            if late != self.playing_late || (late && play != self.latency_ns) {
                let note = LateNote::new(
                    late,
                    play as u64,
                    c.latency_ns.load(Relaxed) as u64,
                    c.need_ns.load(Relaxed) as u64,
                    c.downstream_ns.load(Relaxed) as u64,
                );
                if late {
                    log_warn!("{who}: {note}");
                } else {
                    log_info!("{who}: {note}");
                }
            }
            self.playing_late = late;
            self.latency_ns = play;
            return;
        }
        let need = c.need_ns.load(Relaxed) as u64;
        let node = c.need_node.load(Relaxed);
        let largest = (need > 0).then_some((need, node));
        if let Some(change) = self
            .watch
            .observe(c.latency_ns.load(Relaxed) as u64, largest)
        {
            log_info!("{who}: {change}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_taken_back_gains_nothing() {
        let mut last = 0;
        assert_eq!(delta(3, &mut last), 3);
        // The pause's underrun withdrawn: 3 → 2.
        assert_eq!(delta(2, &mut last), 0);
        assert_eq!(delta(4, &mut last), 2);
    }

    #[test]
    fn auth_drops_reach_the_warnings_by_reason() {
        let c = Counters::default();
        let skew = AuthCounters {
            last_stale_skew_ns: -7_000_000_000,
            ..Default::default()
        };
        for e in [
            AuthError::NoKey,
            AuthError::NoKey,
            AuthError::Unauthenticated,
            AuthError::BadTag,
            AuthError::Replay,
            AuthError::Stale,
            AuthError::Malformed("x"),
        ] {
            c.count_auth_error(e, &skew);
        }
        let a = c.auth_counters();
        assert_eq!(
            a,
            AuthCounters {
                unauthenticated: 1,
                no_key: 2,
                malformed: 0,
                bad_tag: 1,
                replayed: 1,
                stale: 1,
                last_stale_skew_ns: -7_000_000_000,
            }
        );
        assert_eq!(c.malformed.load(Relaxed), 1, "with the other malformed");
    }
}

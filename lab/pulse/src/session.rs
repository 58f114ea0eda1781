//! One PulseAudio connection with one stream on it, and the timing reports
//! the tool asks that stream for: what `record`, `play` and `rate-probe`
//! share.

use anyhow::{anyhow, bail, Context, Result};
use bark_pulse::clock::{monotonic_ns, ClockPair};
use bark_pulse::pa::{Conn, Loop};
use bark_pulse::timing::Info;
use libpulse_binding as pulse;
use pulse::context::State as CtxState;
use pulse::def::BufferAttr;
use pulse::sample::{Format, Spec};
use pulse::stream::{FlagSet, State as StreamState, Stream};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Timing requests, ns apart.
const REPORT_PERIOD_NS: u64 = 10_000_000;
/// Longest wait for the server to accept the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the stream's callbacks noted since the main loop last looked.
#[derive(Default)]
struct Notes {
    state: Cell<bool>,
    timing: Cell<bool>,
}

/// A connected context and one (not yet connected) F32 stream on it.
/// Fields drop in order: the stream before its context, both before the
/// loop they run on.
pub struct Session {
    /// The stream; the caller connects it for playback or recording.
    pub s: Stream,
    conn: Conn,
    notes: Rc<Notes>,
    /// The stream's sample spec (F32, native endian).
    pub spec: Spec,
    /// The main loop.
    pub lp: Loop,
    in_flight: bool,
    next_report: u64,
}

impl Session {
    /// Connect to the default server (at most [`CONNECT_TIMEOUT`]) and
    /// create stream `name` for F32 at `rate` Hz, `channels` channels.
    ///
    /// Errors: no server, a refused or timed-out connection, a stream the
    /// server will not create.
    pub fn open(name: &str, rate: u32, channels: u8) -> Result<Session> {
        let mut lp = Loop::new(5_000)?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let mut conn = Conn::connect(&lp, "bark-lab-pulse", "lab", None)?;
        while conn.state() != CtxState::Ready {
            if conn.is_dead() {
                bail!("cannot connect to PulseAudio: {}", conn.error());
            }
            if Instant::now() > deadline {
                bail!("timed out connecting to PulseAudio");
            }
            lp.iterate()?;
        }
        let spec = Spec {
            format: Format::FLOAT32NE,
            rate,
            channels,
        };
        let mut s = Stream::new(&mut conn.ctx, name, &spec, None)
            .ok_or_else(|| anyhow!("cannot create a stream: {}", conn.error()))?;
        let notes = Rc::new(Notes::default());
        let (n, g) = (notes.clone(), lp.guard.clone());
        s.set_state_callback(Some(Box::new(move || {
            g.run("state", || n.state.set(true));
        })));
        Ok(Session {
            s,
            conn,
            notes,
            spec,
            lp,
            in_flight: false,
            next_report: 0,
        })
    }

    /// Bytes of `us` µs of audio in the stream's format.
    pub fn bytes(&self, us: u64) -> u32 {
        self.spec.usec_to_bytes(pulse::time::MicroSeconds(us)) as u32
    }

    /// One turn of the main loop, then every check a turn makes: fails on
    /// a panicked callback, a signal, `hard_end` passed, the server lost,
    /// or the stream failed (`what`: "record", "playback", for the
    /// message). Returns whether the stream is ready.
    pub fn turn(&mut self, what: &str, hard_end: Option<Instant>) -> Result<bool> {
        self.lp.iterate()?;
        if self.lp.guard.tripped() {
            bail!("a callback panicked");
        }
        if self.lp.quit_signal().is_some() {
            bail!("interrupted");
        }
        if hard_end.is_some_and(|e| Instant::now() > e) {
            bail!("{what} stream overran its time limit");
        }
        if self.conn.is_dead() {
            bail!("lost PulseAudio: {}", self.conn.error());
        }
        match self.s.get_state() {
            StreamState::Ready => Ok(true),
            StreamState::Failed | StreamState::Terminated => bail!("{what} stream failed"),
            _ => Ok(false),
        }
    }

    /// The timing report that arrived since the last call, if any, with
    /// the clocks read right after it (to put its stamp on
    /// CLOCK_MONOTONIC); then asks for the next one, every
    /// [`REPORT_PERIOD_NS`], one at a time.
    pub fn report(&mut self) -> Option<(Info, ClockPair)> {
        let got = if self.notes.timing.take() {
            self.in_flight = false;
            self.s
                .get_timing_info()
                .map(|ti| (Info::from_pa(ti), ClockPair::now()))
        } else {
            None
        };
        let now = monotonic_ns();
        if !self.in_flight && now >= self.next_report {
            self.next_report = now + REPORT_PERIOD_NS;
            let (n, g) = (self.notes.clone(), self.lp.guard.clone());
            let _ = self.s.update_timing_info(Some(Box::new(move |_| {
                g.run("timing", || n.timing.set(true));
            })));
            self.in_flight = true;
        }
        got
    }

    /// Connect the stream for playback into `device` (default: the default
    /// sink) with a target buffer of `buffer_us` µs, no prebuffering, and
    /// `flags` besides `ADJUST_LATENCY | DONT_MOVE`.
    ///
    /// Errors: the server refuses the stream.
    pub fn connect_playback(
        &mut self,
        device: Option<&str>,
        buffer_us: u64,
        flags: FlagSet,
    ) -> Result<()> {
        let attr = BufferAttr {
            maxlength: u32::MAX,
            tlength: self.bytes(buffer_us),
            prebuf: 0,
            minreq: u32::MAX,
            fragsize: u32::MAX,
        };
        self.s
            .connect_playback(
                device,
                Some(&attr),
                FlagSet::ADJUST_LATENCY | FlagSet::DONT_MOVE | flags,
                None,
                None,
            )
            .context("connecting the playback stream")
    }

    /// Disconnect the stream (the context goes when the session drops).
    pub fn close(&mut self) {
        self.s.set_state_callback(None);
        let _ = self.s.disconnect();
    }
}

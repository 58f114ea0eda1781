//! One connection to the server, as both roles live it: the context, the
//! set-up steps around the role's own, the one stream (record or playback)
//! with the notes its callbacks raise, and that stream's play-out estimate
//! fed by paced timing requests.
//!
//! A [`Session`] lasts as long as its connection; the network side lives
//! across connections (see [`crate::driver`], which makes and drops them).
//! The role (sink or source) puts its own set-up steps and per-connection
//! state in the type parameters and reads the notes after each loop turn
//! (see [`crate::pa`] for that design).

use crate::clock::ClockPair;
use crate::frameclock::FrameClock;
use crate::pa::{self, Conn, Loop, Slot};
use crate::timing::{CycleQuantum, Info};
use anyhow::{anyhow, Result};
use libpulse_binding as pulse;
use pulse::channelmap::Map;
use pulse::context::introspect::ServerInfo;
use pulse::context::State as CtxState;
use pulse::proplist::Proplist;
use pulse::sample::{Format, Spec};
use pulse::stream::{State as StreamState, Stream};
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Timing requests while streaming, ns apart (± 30 %, see [`jittered`]).
pub const TIMING_PERIOD_NS: u64 = 10_000_000;
/// Wait before setting a stream up again after it failed or ended.
const STREAM_RETRY: Duration = Duration::from_millis(500);

/// Where a connection is in its set-up.
pub enum Step<P> {
    /// Waiting for the context to be ready.
    Connecting,
    /// The role's own set-up (looking a sink up, loading one, choosing one).
    Setup(P),
    /// The stream is being set up or running.
    Streaming,
    /// Set up again ([`crate::driver::Role::begin`]) after this instant.
    Retry(Instant),
}

/// What [`Session::advance`] leaves to the role this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// Nothing to do.
    Wait,
    /// Just connected: start the role's set-up.
    Connected,
    /// A retry is due: start the role's set-up again.
    Begin,
    /// The role's set-up is under way: advance its step.
    Setup,
    /// The stream became ready.
    Ready,
    /// The stream failed or ended: say why, then [`Session::retry_stream`].
    Stopped,
}

/// Flags the stream's callbacks raise, read after the loop turn. Each
/// stream gets fresh notes, so a late callback of a dropped one marks
/// nothing.
#[derive(Default)]
pub struct StreamNotes {
    /// The stream's state changed.
    pub state_changed: Cell<bool>,
    /// A timing request was answered: the estimate generation it was made
    /// for (`u64::MAX` when it failed).
    pub timing: Cell<Option<u64>>,
    /// The device was suspended or resumed.
    pub suspended: Cell<bool>,
    /// The stream was moved to another device.
    pub moved: Cell<bool>,
    /// A record stream overflowed (the client read too late).
    pub overflow: Cell<bool>,
    /// A playback stream underflowed (the client wrote too late).
    pub underflow: Cell<bool>,
}

impl StreamNotes {
    /// Fresh notes, with `s`'s callbacks raising them under `lp`'s guard.
    fn attach(s: &mut Stream, lp: &Loop) -> Rc<StreamNotes> {
        let notes = Rc::new(StreamNotes::default());
        let note = |what: &'static str, flag: fn(&StreamNotes) -> &Cell<bool>| {
            let (n, g) = (notes.clone(), lp.guard.clone());
            Some(Box::new(move || {
                g.run(what, || flag(&n).set(true));
            }) as Box<dyn FnMut()>)
        };
        s.set_state_callback(note("stream state", |n| &n.state_changed));
        s.set_suspended_callback(note("suspended", |n| &n.suspended));
        s.set_moved_callback(note("moved", |n| &n.moved));
        s.set_overflow_callback(note("overflow", |n| &n.overflow));
        s.set_underflow_callback(note("underflow", |n| &n.underflow));
        notes
    }

    /// Clears the callbacks [`StreamNotes::attach`] set.
    fn detach(s: &mut Stream) {
        s.set_state_callback(None);
        s.set_suspended_callback(None);
        s.set_moved_callback(None);
        s.set_overflow_callback(None);
        s.set_underflow_callback(None);
    }
}

/// On pipewire-pulse, which of the last second's 100 ms bucket minima of
/// the timing reports is the envelope ([`FrameClock::set_envelope_rank`]):
/// the third lowest, so that up to 200 ms of replies made early by its
/// lagging main thread (a cycle's delay paired with a later cycle's stream
/// index) leave the estimate alone.
pub const PIPEWIRE_RANK: usize = 3;

/// The stream's play-out estimate and what feeds it. A field of its own so
/// that it can be restarted while the stream is borrowed.
pub struct Estimate {
    /// When frame *n* of the stream is heard.
    pub fc: FrameClock,
    /// The server is pipewire-pulse: its reports come from the last graph
    /// cycle and scatter by up to a quantum ([`CycleQuantum`]).
    pub pipewire: bool,
    /// pipewire-pulse's graph quantum, learnt from the reports.
    quantum: CycleQuantum,
    /// Generation of the estimate: reports requested for an older one are
    /// ignored.
    gen: u64,
    in_flight: bool,
    /// When the next timing request is due, CLOCK_MONOTONIC ns.
    next_request_ns: u64,
    /// State of the timing requests' jitter.
    rng: u64,
}

impl Estimate {
    fn new(rate: u32) -> Self {
        Estimate {
            fc: FrameClock::new(rate),
            pipewire: false,
            quantum: CycleQuantum::default(),
            gen: 0,
            in_flight: false,
            next_request_ns: 0,
            rng: bark_io::node::random_nonzero_u64(),
        }
    }

    /// Voids the estimate (a new play-out clock, or a wrong estimate):
    /// reports already requested are ignored.
    pub fn restart(&mut self) {
        self.fc.reset();
        self.gen += 1;
    }

    /// For a new stream: a new estimate, no quantum known, no request in
    /// flight.
    fn renew(&mut self) {
        self.quantum.reset();
        self.restart();
        self.in_flight = false;
    }

    /// On pipewire-pulse: learns the graph quantum from a report's stream
    /// index (`read_index` or `write_index`, bytes, of frames of
    /// `frame_bytes`), and raises the step threshold to 1.5 quanta since
    /// the reports scatter by up to one; the envelope becomes the
    /// [`PIPEWIRE_RANK`]-th lowest bucket, and reports more than half a
    /// quantum below it are left out unless a run of them says the
    /// timeline moved. The quantum, ns, once known.
    pub fn observe_quantum(&mut self, index: Option<i64>, frame_bytes: usize) -> Option<f64> {
        if let Some(i) = index {
            self.quantum.observe(i, frame_bytes);
        }
        let q_ns = self.quantum.frames()? as f64 * self.fc.period_ns();
        self.fc.set_step_ns(1.5 * q_ns);
        self.fc.set_envelope_rank(PIPEWIRE_RANK, 0.5 * q_ns);
        Some(q_ns)
    }
}

/// One connection: see the module docs. `P` is the role's set-up step,
/// `R` its per-connection state.
pub struct Session<P, R> {
    /// The context; the role issues its introspection calls on it.
    pub conn: Conn,
    /// Where the set-up is; the role's steps move it on.
    pub step: Step<P>,
    /// The record or playback stream, once [`Session::start_stream`] has
    /// connected it; `None` again after [`Session::drop_stream`].
    pub stream: Option<Stream>,
    /// What the stream's callbacks noted since the last turn.
    pub notes: Rc<StreamNotes>,
    /// float32, native endian, at the role's configured rate and channels.
    pub spec: Spec,
    /// When the stream's frames are heard, and the timing requests.
    pub est: Estimate,
    /// The role's own state of this connection.
    pub role: R,
}

impl<P, R> Session<P, R> {
    /// A new connection's session, streaming float32 at `rate` Hz with
    /// `channels` channels once set up.
    pub fn new(conn: Conn, rate: u32, channels: u8, role: R) -> Self {
        Session {
            conn,
            step: Step::Connecting,
            stream: None,
            notes: Rc::new(StreamNotes::default()),
            spec: Spec {
                format: Format::FLOAT32NE,
                rate,
                channels,
            },
            est: Estimate::new(rate),
            role,
        }
    }

    /// Bytes per frame of the stream.
    pub fn frame_bytes(&self) -> usize {
        self.spec.frame_size()
    }

    /// Advances the steps both roles share and says what is left to the
    /// role (see [`Turn`]).
    pub fn advance(&mut self) -> Turn {
        match &self.step {
            Step::Connecting if self.conn.state() == CtxState::Ready => Turn::Connected,
            Step::Setup(_) => Turn::Setup,
            Step::Streaming if self.notes.state_changed.replace(false) => {
                match self.stream.as_ref().map(|s| s.get_state()) {
                    Some(StreamState::Ready) => Turn::Ready,
                    Some(StreamState::Failed) | Some(StreamState::Terminated) => Turn::Stopped,
                    _ => Turn::Wait,
                }
            }
            Step::Retry(at) if Instant::now() >= *at => Turn::Begin,
            _ => Turn::Wait,
        }
    }

    /// Asks the server for its info: `pick`'s part of it, and whether the
    /// server is pipewire-pulse.
    pub fn server_info(
        &self,
        lp: &Loop,
        pick: impl Fn(&ServerInfo) -> String + 'static,
    ) -> Slot<(String, bool)> {
        let slot = pa::slot();
        let (v, g) = (slot.clone(), lp.guard.clone());
        self.conn.ctx.introspect().get_server_info(move |i| {
            g.run("server info", || {
                let pipewire = i
                    .server_name
                    .as_deref()
                    .is_some_and(|n| n.contains("PipeWire"));
                *v.borrow_mut() = Some((pick(i), pipewire));
            });
        });
        slot
    }

    /// Creates the stream (`kind`: "record" or "playback", for errors),
    /// named `name`, with the properties `props`; `connect` connects it.
    /// On success it is the session's stream, with a new estimate.
    ///
    /// # Errors
    /// libpulse refused to create the stream, or `connect`'s error.
    pub fn start_stream(
        &mut self,
        lp: &Loop,
        kind: &str,
        name: &str,
        props: &[(&str, &str)],
        connect: impl FnOnce(&mut Stream, &Spec) -> Result<()>,
    ) -> Result<()> {
        let mut pl = Proplist::new().ok_or_else(|| anyhow!("cannot create a property list"))?;
        for (k, v) in props {
            let _ = pl.set_str(k, v);
        }
        let map = channel_map(self.spec.channels);
        let mut s =
            Stream::new_with_proplist(&mut self.conn.ctx, name, &self.spec, map.as_ref(), &mut pl)
                .ok_or_else(|| anyhow!("cannot create the {kind} stream: {}", self.conn.error()))?;
        let notes = StreamNotes::attach(&mut s, lp);
        connect(&mut s, &self.spec)?;
        self.stream = Some(s);
        self.notes = notes;
        self.est.renew();
        self.step = Step::Streaming;
        Ok(())
    }

    /// Disconnects and forgets the stream, if any.
    pub fn drop_stream(&mut self) {
        if let Some(mut s) = self.stream.take() {
            StreamNotes::detach(&mut s);
            let _ = s.disconnect();
        }
    }

    /// After [`Turn::Stopped`]: drops the stream and sets up again soon.
    pub fn retry_stream(&mut self) {
        self.drop_stream();
        self.step = Step::Retry(Instant::now() + STREAM_RETRY);
    }

    /// Whether the stream exists and is ready (to move audio).
    pub fn stream_ready(&self) -> bool {
        self.stream
            .as_ref()
            .is_some_and(|s| s.get_state() == StreamState::Ready)
    }

    /// The timing report that arrived for the current estimate, if any,
    /// with a clock pair read right after it; then, `now` (CLOCK_MONOTONIC
    /// ns), a new request if none is in flight and one is due.
    pub fn poll_timing(&mut self, now: u64, lp: &Loop) -> Option<(Info, ClockPair)> {
        let s = self.stream.as_mut()?;
        let mut report = None;
        let est = &mut self.est;
        if let Some(gen) = self.notes.timing.take() {
            est.in_flight = false;
            if gen == est.gen {
                report = s
                    .get_timing_info()
                    .map(|ti| (Info::from_pa(ti), ClockPair::now()));
            }
        }
        if !est.in_flight && now >= est.next_request_ns {
            est.next_request_ns = now + jittered(TIMING_PERIOD_NS, &mut est.rng);
            let n = self.notes.clone();
            let gen = est.gen;
            let g = lp.guard.clone();
            let _ = s.update_timing_info(Some(Box::new(move |ok| {
                g.run("timing", || {
                    n.timing.set(Some(if ok { gen } else { u64::MAX }))
                });
            })));
            est.in_flight = true;
        }
        report
    }
}

/// `period_ns` ± 30 %, from a small xorshift state: timing requests at a
/// fixed pace beat against a server that updates per graph cycle
/// (pipewire-pulse), so that for seconds every report would land at the
/// same phase of the cycle; jitter spreads them over it.
pub fn jittered(period_ns: u64, state: &mut u64) -> u64 {
    let mut x = (*state).max(1);
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    let spread = period_ns * 6 / 10;
    period_ns - period_ns * 3 / 10 + x % spread.max(1)
}

/// A stream's channel map: PipeWire's default layout for its channel
/// count, the order Bark's packets carry ([`bark_core::channels`]), so
/// that PulseAudio maps each channel to its position on the sink
/// (PulseAudio's own default order differs from three channels on).
/// `None` for counts without a default.
pub fn channel_map(channels: u8) -> Option<Map> {
    use bark_core::channels::{Layout, Position as P};
    use pulse::channelmap::Position as Pa;
    let layout = Layout::default_for(channels)?;
    let mut m = Map::default();
    m.set_len(channels);
    for (slot, p) in m.get_mut().iter_mut().zip(layout.positions()) {
        *slot = match p {
            _ if channels == 1 => Pa::Mono,
            P::FL => Pa::FrontLeft,
            P::FR => Pa::FrontRight,
            P::FC => Pa::FrontCenter,
            P::LFE => Pa::Lfe,
            P::RL => Pa::RearLeft,
            P::RR => Pa::RearRight,
            P::FLC => Pa::FrontLeftOfCenter,
            P::FRC => Pa::FrontRightOfCenter,
            P::RC => Pa::RearCenter,
            P::SL => Pa::SideLeft,
            P::SR => Pa::SideRight,
            P::TC => Pa::TopCenter,
            P::TFL => Pa::TopFrontLeft,
            P::TFC => Pa::TopFrontCenter,
            P::TFR => Pa::TopFrontRight,
            P::TRL => Pa::TopRearLeft,
        };
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_30_percent() {
        let mut s = 12345;
        let v: Vec<u64> = (0..1000).map(|_| jittered(10_000_000, &mut s)).collect();
        assert!(v.iter().all(|&x| (7_000_000..13_000_000).contains(&x)));
        let mean = v.iter().sum::<u64>() as f64 / v.len() as f64;
        assert!((mean - 10e6).abs() < 0.3e6, "{mean}");
    }
}

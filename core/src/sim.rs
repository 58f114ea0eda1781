//! Deterministic simulation: one sender and several receivers, each with its
//! own system clock (offset, rate error) and audio device clock (rate
//! error), behind a network with delay, jitter, loss, bursts, reordering and
//! duplication, stalls and outages ([`crate::netmodel`]), all driven through
//! the real endpoints ([`SenderEndpoint`], [`ReceiverEndpoint`]; open, no
//! key), as an adapter drives them.
//!
//! The network: what the sender's endpoint sends to [`Dest::Group`] goes
//! to every receiver on the network, each copy through that receiver's
//! own downstream path; what it sends to [`Dest::To`] goes to the receiver
//! with that address, through the same path. What a receiver sends to its
//! sender goes up its own upstream path. Each path keeps its own state and
//! random stream, so losses are independent per receiver.
//!
//! Ground truth is simulated true time. The sender plays a quadrature tone
//! (sine left, cosine right, [`TONE_HZ`]) whose phase encodes the frame
//! index, so the frame a receiver is playing can be read back from its
//! output alone, to a few nanoseconds, without trusting the receiver's own
//! bookkeeping. For every output frame the simulator computes
//!
//! ```text
//! error = (true time it is heard) − (true time its frame entered the sender
//!          + target latency + receiver delay)
//! ```
//!
//! and summarises convergence, error percentiles, inter-receiver skew and
//! underruns. Same seed, same result: nothing reads a real clock.
//!
//! A receiver's output takes one of the adapters' paths ([`OutputPath`]):
//! a PipeWire graph that says when each buffer is heard (the default), the
//! same graph with PipeWire's resampler steered by a
//! [`RateMatchLoop`] (`bark.resampler = pipewire`), or bark-pulse's
//! PulseAudio stream, written ahead and timed by a [`FrameClock`] from
//! late timing reports.

use crate::endpoint::{Dest, ReceiverEndpoint, SenderEndpoint, TRANSMIT_BUF};
use crate::frameclock::FrameClock;
use crate::netmodel::{seed_for, Path as NetPath, PathStats, Rng, DUPLICATE_LAG_NS};
use crate::protocol::{self, StatusCounters};
use crate::ratematch::{pipewire_0365_input_rate, pipewire_rate, RateMatchLoop};
use crate::receiver::ReceiverConfig;
use crate::sender::SenderConfig;
use crate::AudioFormat;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::net::SocketAddr;

/// Frequency of the measurement tone, Hz. Low, so the resampler passes it
/// unchanged and one period (1 s) spans any plausible error.
pub const TONE_HZ: f64 = 1.0;
/// The measurement tone of an Opus stream, Hz. Opus's encoder removes DC
/// with a 3 Hz high-pass (libopus `dc_reject`), which leaves a 1 Hz tone
/// at a third of its amplitude and 0.2 s late; at 1 kHz its phase comes
/// through the codec within 1.3 µs (p99, 160 kbit/s). One period (1 ms)
/// spans errors of ±0.5 ms unambiguously: ten times the sync bound the
/// tests assert.
pub const OPUS_TONE_HZ: f64 = 1000.0;
/// An output frame counts as converged-audible when its amplitude exceeds
/// this (faded, concealed frames are excluded from timing statistics).
const AUDIBLE: f64 = 0.9;
/// Convergence: the first 100 ms window of output, after which audio is due,
/// whose frames all lie within this error.
const CONVERGED_NS: f64 = 50_000.0;
const WINDOW_NS: f64 = 100e6;

pub use crate::netmodel::NetModel;

/// How a simulated receiver's output is driven: which adapter it models.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OutputPath {
    /// The PipeWire module with `bark.resampler = core` (the default): the
    /// device asks for one buffer of `quantum` frames per cycle, the graph
    /// says when it is heard (±2 µs), the core's interpolator corrects
    /// drift.
    #[default]
    Core,
    /// The PipeWire module with `bark.resampler = pipewire`: the core
    /// renders at the nominal ratio against a [`RateMatchLoop`]'s virtual
    /// clock, exactly as pw-module's `fill_rate_matched` does, and the
    /// device's adapter resampler consumes the loop's ratio of input frames
    /// per output frame, modelled on PipeWire 0.3.65: the input rate
    /// truncated to whole Hz ([`pipewire_0365_input_rate`]), a copy that
    /// drops the fractional phase when it lands on the nominal rate, a
    /// [`RM_DELAY_FRAMES`] look-ahead (silence at the start, the native
    /// resampler's reset history), and a play time (`pw_time`) that counts
    /// that delay but not the fractional phase. The adapter asks for each
    /// cycle's input with the ratio of the cycle before.
    RateMatch,
    /// bark-pulse's receiver: a PulseAudio playback stream kept
    /// [`PULSE_BUFFER_NS`] ahead (stream queue plus the sink's lead), written
    /// on the client's 5 ms tick (2 ms before it plays) for the play time a
    /// [`FrameClock`] estimates from timing reports requested every
    /// 10 ms ± 30 %. A report is late by the server's snapshot-to-reply lag
    /// ([`PULSE_LAG_NS`], sometimes [`PULSE_SLOW_LAG_NS`]), its sink latency
    /// is whole µs; the sink takes `quantum` frames per cycle, and a frame
    /// not written by then is lost in its slot (`prebuf = 0`).
    Pulse,
}

/// The adapter resampler's delay in [`OutputPath::RateMatch`], input
/// frames: half of the 0.3.65 native resampler's filter at ratio ≈ 1. It
/// is reported (`pw_time.buffered`), so it only moves where the core reads.
pub const RM_DELAY_FRAMES: u64 = 32;
/// Host noise on each Wi-Fi link of the `wifi` scenario, ns
/// ([`NetModel::fuzz_ns`]): the lab's, so that the simulator's skew is
/// the lab's. Skew p99, mean of seeds 1–6, three receivers: 39 µs
/// without host noise, 73 µs with 30 µs (the lab, two receivers: 44–75
/// µs), 89 µs with 80 µs.
pub const WIFI_HOST_FUZZ_NS: f64 = 30_000.0;
/// [`OutputPath::Pulse`]: audio the client keeps ahead of the device, ns
/// (bark-pulse's default `--buffer-msec` 20: with `ADJUST_LATENCY` the
/// server splits it between the stream's queue and the sink).
pub const PULSE_BUFFER_NS: f64 = 20e6;
/// [`OutputPath::Pulse`]: a timing reply's usual lag behind the server's
/// snapshot, ns: uniform in `[.0, .1]` (tens of µs, see
/// [`crate::frameclock`]).
pub const PULSE_LAG_NS: (f64, f64) = (10_000.0, 60_000.0);
/// [`OutputPath::Pulse`]: the share of replies from a loaded server and
/// their lag, ns, uniform in `[.1, .2]`.
pub const PULSE_SLOW_LAG_NS: (f64, f64, f64) = (0.02, 300_000.0, 3_000_000.0);

/// One simulated receiver.
#[derive(Clone, Debug)]
pub struct RxSpec {
    /// System clock offset from true time, ns.
    pub clock_offset_ns: f64,
    /// System clock rate error, ppm.
    pub clock_ppm: f64,
    /// Audio device clock rate error against true time, ppm.
    pub device_ppm: f64,
    /// Output buffer size, frames.
    pub quantum: usize,
    /// When the receiver starts, s of simulated time.
    pub join_s: f64,
    /// Per-receiver delay (`bark.delay.msec`), ns.
    pub delay_ns: i64,
    /// Downstream latency of the receiver's output (a DSP, a Bluetooth
    /// speaker), reported to the receiver as PipeWire would, ns, from the
    /// given simulated time on, s: `(from_s, ns)`, in time order (empty:
    /// none). The device asks for each buffer that much earlier.
    pub downstream: Vec<(f64, f64)>,
    /// The adapter path its output takes.
    pub output: OutputPath,
    /// Its own link to the sender, both directions (`None`: the scenario's
    /// `net`). Whichever applies, each direction of each receiver keeps
    /// its own state and generator: losses are independent per receiver;
    /// the two directions of one link share their stall and outage
    /// schedules.
    pub net: Option<NetModel>,
    /// The least latency it asks of the session (`bark.latency.min-msec`,
    /// `bark.profile = wifi`), ns; 0: none.
    pub latency_floor_ns: u64,
}

/// A whole scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Name, as given to `--scenario`.
    pub name: String,
    /// Simulated seconds.
    pub duration_s: f64,
    /// Sender system clock offset (ns) and rate error (ppm).
    pub sender_clock: (f64, f64),
    /// Sender audio device rate error, ppm.
    pub sender_device_ppm: f64,
    /// Sender buffer size, frames.
    pub sender_quantum: usize,
    /// Scheduling jitter of buffer timestamps on both ends, ns (uniform ±).
    pub sched_jitter_ns: f64,
    /// The receivers.
    pub receivers: Vec<RxSpec>,
    /// Sender → receivers and receivers → sender, for receivers without
    /// their own ([`RxSpec::net`]).
    pub net: NetModel,
    /// Sender restarts (new session) at these times, s.
    pub restarts_s: Vec<f64>,
    /// Target latency, ns.
    pub latency_ns: u64,
    /// Random seed.
    pub seed: u64,
    /// Whether the sender multicasts sync messages
    /// ([`crate::sender::SYNC_INTERVAL_NS`]); `false` models a sender from
    /// before them, whose receivers keep their own exchanges at full pace.
    pub sync: bool,
    /// Whether the receivers ask for lost packets again
    /// ([`ReceiverConfig::repair`]; the sender always keeps its history).
    pub repair: bool,
    /// Spans `(from_s, to_s)` in which the sender's sink is idle: no
    /// buffers, only its idle sync messages (its data timer runs every
    /// 50 ms). Each span's end is an onset: its first frame must be heard
    /// at its instant ([`Onset`]).
    pub idle_s: Vec<(f64, f64)>,
    /// The most the session latency may rise to, ns
    /// ([`crate::sender::SenderConfig::max_latency_ns`]).
    pub max_latency_ns: u64,
    /// The sender's FEC blocks (`bark.fec`), `(k, m)`; `None`: off.
    pub fec: Option<(u8, u8)>,
    /// Whether the sender encodes Opus (`audio.format = OPUS`, 160 kbit/s,
    /// 10 ms frames) instead of F32: the real encoder and decoder, so the
    /// codec's lookahead, its framing and its concealment are in the path.
    /// The tone is then [`OPUS_TONE_HZ`].
    pub opus: bool,
    /// The Opus encoder's settings, with `opus`.
    pub opus_config: crate::opus::OpusConfig,
}

/// Scenario names [`scenario`] knows.
pub const SCENARIOS: [&str; 15] = [
    "wired",
    "busy",
    "drift",
    "restart",
    "join",
    "idle",
    "downstream",
    "ratematch",
    "pulse",
    "loss3",
    "wifi",
    "floor",
    "fec",
    "opus",
    "opus-loss3",
];

fn rx(offset_ms: f64, clock_ppm: f64, device_ppm: f64, quantum: usize) -> RxSpec {
    RxSpec {
        clock_offset_ns: offset_ms * 1e6,
        clock_ppm,
        device_ppm,
        quantum,
        join_s: 0.0,
        delay_ns: 0,
        downstream: vec![],
        output: OutputPath::Core,
        net: None,
        latency_floor_ns: 0,
    }
}

/// A named scenario, 60 simulated seconds, or `None` for an unknown name.
pub fn scenario(name: &str) -> Option<Scenario> {
    let mut s = Scenario {
        name: name.to_string(),
        duration_s: 60.0,
        sender_clock: (-250e6, 20.0),
        sender_device_ppm: 35.0,
        sender_quantum: 256,
        sched_jitter_ns: 30_000.0,
        receivers: vec![
            rx(730.0, -40.0, 25.0, 256),
            rx(-910.0, 60.0, -45.0, 512),
            rx(120.0, 10.0, 80.0, 480),
        ],
        net: NetModel::wired(200_000.0, 100_000.0),
        restarts_s: vec![],
        latency_ns: crate::sender::DEFAULT_LATENCY_NS,
        seed: 0x6261_726b,
        sync: true,
        repair: true,
        idle_s: vec![],
        max_latency_ns: crate::sender::DEFAULT_MAX_LATENCY_NS,
        fec: None,
        opus: false,
        opus_config: Default::default(),
    };
    match name {
        "wired" => {}
        "busy" => {
            s.net = NetModel {
                delay_ns: 300_000.0,
                jitter_min_ns: 1_000_000.0,
                jitter_max_ns: 5_000_000.0,
                loss: 0.02,
                burst_start: 0.001,
                burst_len: 5,
                reorder: 0.01,
                reorder_ns: 3_000_000.0,
                duplicate: 0.01,
                ..NetModel::wired(0.0, 0.0)
            };
        }
        "drift" => {
            s.sender_clock = (400e6, -200.0);
            s.sender_device_ppm = 200.0;
            s.receivers = vec![
                rx(-1000.0, 200.0, -200.0, 256),
                rx(1000.0, -200.0, 200.0, 512),
                rx(3.0, 150.0, 190.0, 480),
            ];
        }
        "restart" => s.restarts_s = vec![25.0],
        "join" => {
            let mut late = rx(-333.0, -120.0, 70.0, 256);
            late.join_s = 20.0;
            s.receivers.push(late);
        }
        "idle" => {
            // A sink idle at first (the receivers lock onto its
            // announcements), then playback with pauses: long ones (the
            // receivers stop), a short one (they play through it), and a
            // receiver that joins while the sink is idle.
            s.idle_s = vec![
                (0.0, 2.0),
                (10.0, 16.0),
                (20.0, 20.3),
                (30.0, 40.0),
                (47.0, 47.05),
            ];
            let mut late = rx(-333.0, -120.0, 70.0, 256);
            late.join_s = 32.0;
            s.receivers.push(late);
        }
        "downstream" => {
            // Receiver 1 plays through an output that adds 50 ms, then
            // 150 ms (a Bluetooth speaker), then nothing: the session
            // latency rises to cover it and comes back down.
            s.receivers[1].downstream = vec![(0.0, 50e6), (20.0, 150e6), (40.0, 0.0)];
        }
        "floor" => {
            // Receiver 2 is on Wi-Fi (`bark.profile = wifi`): it asks for
            // 250 ms, and every receiver moves there together.
            s.receivers[2].latency_floor_ns = crate::settings::WIFI_LATENCY_FLOOR_NS;
        }
        "ratematch" => {
            // `bark.resampler = pipewire` on every receiver of "wired",
            // with the sender restart of "restart" (a new session: the
            // clock estimate settles again under a locked loop).
            for r in &mut s.receivers {
                r.output = OutputPath::RateMatch;
            }
            s.restarts_s = vec![25.0];
        }
        "pulse" => {
            // bark-pulse receivers: the sinks' cycles are short (a null
            // sink renders in small blocks); the devices drift against
            // their hosts' clocks by +30 and -25 ppm (sound cards, "a few
            // tens of ppm", see `frameclock`) and not at all (a null sink
            // on CLOCK_MONOTONIC).
            for ((r, q), ppm) in s
                .receivers
                .iter_mut()
                .zip([256, 240, 192])
                .zip([30.0, -25.0, 0.0])
            {
                r.output = OutputPath::Pulse;
                r.quantum = q;
                r.device_ppm = r.clock_ppm + ppm;
            }
        }
        "opus" => s.opus = true,
        "opus-loss3" => {
            // loss3's links, with an Opus stream: lost packets are resent,
            // and the decoder waits for them before concealing. At 60 ms:
            // an Opus packet leaves up to a frame (10 ms) plus the
            // lookahead (2.5 ms) later than PCM would, and a lost one
            // whose push sent nothing after it is noticed only when the
            // next comes, a frame later; at 40 ms the receivers with
            // 512-frame quanta then lose most resends (docs/BENCHMARKS.md,
            // "Opus").
            s.latency_ns = 60_000_000;
            let net = NetModel {
                loss: 0.03,
                ..s.net.clone()
            };
            for r in &mut s.receivers {
                r.net = Some(net.clone());
            }
            s.opus = true;
        }
        "loss3" => {
            // The wired LAN with 3 % random loss on every receiver's own
            // link, both ways, independent per packet (issue 14's
            // acceptance case; bursts are the `wifi` scenario's).
            let net = NetModel {
                loss: 0.03,
                ..s.net.clone()
            };
            for r in &mut s.receivers {
                r.net = Some(net.clone());
            }
        }
        "fec" => {
            // loss3's links with FEC 4:1 on the sender: most losses are
            // rebuilt from the group's repair packets before a NACK would
            // go (receivers still ask for what FEC cannot rebuild).
            let net = NetModel {
                loss: 0.03,
                ..s.net.clone()
            };
            for r in &mut s.receivers {
                r.net = Some(net.clone());
            }
            s.fec = Some((4, 1));
        }
        "wifi" => {
            // Every receiver on its own Wi-Fi link
            // (`NetModel::wifi_station`, each outage at its own phase) at
            // the Wi-Fi profile's 250 ms. Such receivers subscribe for
            // unicast (no beacon grid in the model); the group's copies,
            // one down each receiver's own path, carry the same traffic.
            s.latency_ns = 250_000_000;
            for (i, r) in s.receivers.iter_mut().enumerate() {
                r.net = Some(NetModel {
                    fuzz_ns: WIFI_HOST_FUZZ_NS,
                    ..NetModel::wifi_station(5e9 + i as f64 * 1.7e9)
                });
            }
        }
        _ => return None,
    }
    Some(s)
}

/// The first frame after an idle span (or of the session), as one receiver
/// played it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Onset {
    /// When the onset's first frame is due at this receiver, s of
    /// simulated time.
    pub due_s: f64,
    /// How late the first audible frame at or after the onset was heard,
    /// ms (0: nothing of the onset was lost); `None`: none was heard in
    /// the second after it.
    pub clipped_ms: Option<f64>,
    /// |error| of that first audible frame, µs.
    pub error_us: f64,
}

/// Results of one receiver.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RxReport {
    /// Worst time from audio being due to convergence, ms (over the start
    /// and every sender restart); `None` if it never converged.
    pub converge_ms: Option<f64>,
    /// p99 of |error| after convergence, µs.
    pub p99_error_us: f64,
    /// p99 of |error| over the run's second half (after convergence), µs:
    /// the steady state, without the start-up.
    pub p99_second_half_us: f64,
    /// Max |error| after convergence, µs.
    pub max_error_us: f64,
    /// Mean error after convergence, µs (signed, late positive).
    pub mean_error_us: f64,
    /// Output frames measured after convergence.
    pub frames: u64,
    /// Underruns the receiver counted, and for [`OutputPath::Pulse`] the
    /// sink's cycles that found frames missing from the stream.
    pub underruns: u64,
    /// Frames concealed.
    pub concealed: u64,
    /// Read-position jumps (start-ups included).
    pub jumps: u64,
    /// Packets lost, late and duplicated as the receiver counted them.
    pub lost: u64,
    /// See `lost`.
    pub late: u64,
    /// See `lost`.
    pub duplicated: u64,
    /// Time requests per second over the run's second half (after the
    /// fast start, except for a receiver joining later): the clock-sync
    /// load this receiver puts on the sender.
    pub requests_per_s: f64,
    /// Every onset (the end of each idle span) after the receiver joined.
    pub onsets: Vec<Onset>,
    /// The adapter's estimator, ppm: the rate-match loop's correction
    /// ([`OutputPath::RateMatch`]; consumption ratio − 1) averaged over the
    /// run's second half (it dithers over PipeWire's 20.8 ppm steps, by
    /// ±35 ppm from one cycle to another), the frame clock's fitted drift
    /// at the end ([`OutputPath::Pulse`]); `None` on the core path.
    pub estimator_ppm: Option<f64>,
    /// Times the adapter's estimator started again: the rate-match loop's
    /// resyncs, the frame clock's restarts (0 on the core path).
    pub estimator_restarts: u64,
    /// The receiver's own counters at the end, as its status packets carry
    /// them (`packets`, `lost`, `late`, `duplicated`, `concealed_frames`…).
    pub status: StatusCounters,
    /// Audio datagrams the sender sent while this receiver was on the
    /// network (first sendings: resends are not counted).
    pub audio_sent: u64,
    /// Of those, the ones its downstream path dropped: the truth the
    /// receiver's `lost` and `late` are judged against.
    pub audio_dropped: u64,
    /// What its downstream path (sender → receiver, every datagram) did.
    pub down: PathStats,
    /// What its upstream path (receiver → sender) did.
    pub up: PathStats,
    /// What its repair did (NACKs, resends, expiries).
    pub repair: crate::repair::nack::RepairCounts,
    /// What FEC rebuilt for it.
    pub fec: crate::fec::FecCounts,
}

/// Results of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Per receiver.
    pub receivers: Vec<RxReport>,
    /// p99 over 1 ms instants of (max − min) error across receivers, µs.
    pub skew_p99_us: f64,
    /// The sender's session latency over the run: `(s, ns)` at the start
    /// and at each change.
    pub latency: Vec<(f64, u64)>,
    /// What the last sender sent, by kind (audio, resends, FEC repair
    /// packets, answers): its bandwidth.
    pub sender: crate::endpoint::Counts,
}

impl Report {
    /// Worst convergence time over receivers, ms (`inf` if one never did).
    pub fn converge_ms(&self) -> f64 {
        self.receivers
            .iter()
            .map(|r| r.converge_ms.unwrap_or(f64::INFINITY))
            .fold(0.0, f64::max)
    }
    /// Worst p99 over receivers, µs.
    pub fn p99_error_us(&self) -> f64 {
        self.receivers
            .iter()
            .map(|r| r.p99_error_us)
            .fold(0.0, f64::max)
    }
    /// Worst max over receivers, µs.
    pub fn max_error_us(&self) -> f64 {
        self.receivers
            .iter()
            .map(|r| r.max_error_us)
            .fold(0.0, f64::max)
    }
    /// Total underruns.
    pub fn underruns(&self) -> u64 {
        self.receivers.iter().map(|r| r.underruns).sum()
    }
    /// Highest time-request rate over receivers, per second (second half).
    pub fn requests_per_s(&self) -> f64 {
        self.receivers
            .iter()
            .map(|r| r.requests_per_s)
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for Report {
    /// The summary line scripts read.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sim: scenario={} receivers={} converge_ms={:.1} p99_error_us={:.2} max_error_us={:.2} skew_p99_us={:.2} underruns={} requests_per_s={:.1}",
            self.scenario,
            self.receivers.len(),
            self.converge_ms(),
            self.p99_error_us(),
            self.max_error_us(),
            self.skew_p99_us,
            self.underruns(),
            self.requests_per_s()
        )
    }
}

/// A clock: reading = true · (1 + ppm·1e-6) + offset.
#[derive(Clone, Copy)]
struct Clock {
    offset: f64,
    ppm: f64,
}
impl Clock {
    fn read(&self, t: f64) -> u64 {
        (t * (1.0 + self.ppm * 1e-6) + self.offset).max(0.0) as u64
    }

    /// The true time at which the clock reads `ns` (1 ns after, so that it
    /// reads at least `ns` despite rounding).
    fn when_reads(&self, ns: u64) -> f64 {
        (ns as f64 - self.offset) / (1.0 + self.ppm * 1e-6) + 1.0
    }
}

struct Queued {
    at: u64,
    seq: u64,
    ev: Event,
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

enum Event {
    SenderCycle,
    /// The sender's data timer: its endpoint's idle syncs and status.
    SenderTimer,
    Restart,
    RxCycle(usize),
    /// The receiver's data timer: its endpoint's time requests and status.
    RxTimer(usize),
    /// A turn of bark-pulse's loop ([`OutputPath::Pulse`]): timing
    /// reports and writes.
    RxClient(usize),
    ToRx(usize, Vec<u8>),
    ToSender(usize, Vec<u8>),
}

/// Per-receiver measurement state.
struct Meter {
    due_from: f64,
    window_start: f64,
    window_max: f64,
    converged: bool,
    converge_ms: Option<f64>,
    hist: Vec<u64>,
    max: f64,
    sum: f64,
    n: u64,
    /// The same histogram, count and max over frames heard from
    /// `second_half` (true ns) on.
    second_half: f64,
    hist_late: Vec<u64>,
    n_late: u64,
    max_late: f64,
    skew: Vec<f32>,
    /// Onsets due (true ns), with the first audible frame heard at or
    /// after each: `(due, Some((heard, err)))`.
    onsets: Vec<(f64, Option<(f64, f64)>)>,
}

const HIST_BIN_NS: f64 = 100.0;
/// An audible frame heard this long before an onset is due counts as the
/// onset's (a receiver early by a few samples still played it), ns.
const ONSET_SLACK_NS: f64 = 1e6;
const HIST_BINS: usize = 20_000;

impl Meter {
    fn new(due_from: f64, ms: usize, second_half: f64) -> Self {
        Meter {
            due_from,
            window_start: due_from,
            window_max: 0.0,
            converged: false,
            converge_ms: None,
            hist: vec![0; HIST_BINS + 1],
            max: 0.0,
            sum: 0.0,
            n: 0,
            second_half,
            hist_late: vec![0; HIST_BINS + 1],
            n_late: 0,
            max_late: 0.0,
            skew: vec![f32::NAN; ms],
            onsets: Vec::new(),
        }
    }

    /// An onset is due at true time `due` (ns).
    fn onset(&mut self, due: f64) {
        self.onsets.push((due, None));
    }

    /// Audio is due again from `t` (a restart): convergence is re-measured.
    fn rearm(&mut self, t: f64) {
        self.due_from = t;
        self.window_start = t;
        self.window_max = 0.0;
        self.converged = false;
    }

    fn frame(&mut self, heard: f64, err: Option<f64>) {
        if let Some(e) = err {
            for o in self.onsets.iter_mut() {
                if o.1.is_none() && heard >= o.0 - ONSET_SLACK_NS && heard < o.0 + 1e9 {
                    o.1 = Some((heard, e));
                }
            }
        }
        if heard < self.due_from {
            return;
        }
        if !self.converged {
            let e = err.map_or(f64::INFINITY, f64::abs);
            self.window_max = self.window_max.max(e);
            if heard - self.window_start >= WINDOW_NS {
                if self.window_max <= CONVERGED_NS {
                    self.converged = true;
                    let ms = (self.window_start - self.due_from) / 1e6;
                    self.converge_ms = Some(self.converge_ms.map_or(ms, |c: f64| c.max(ms)));
                } else {
                    self.window_start = heard;
                    self.window_max = 0.0;
                }
            }
            return;
        }
        let Some(e) = err else { return };
        let a = e.abs();
        let bin = ((a / HIST_BIN_NS) as usize).min(HIST_BINS);
        self.hist[bin] += 1;
        self.max = self.max.max(a);
        self.sum += e;
        self.n += 1;
        if heard >= self.second_half {
            self.hist_late[bin] += 1;
            self.n_late += 1;
            self.max_late = self.max_late.max(a);
        }
        let ms = (heard / 1e6) as usize;
        if ms < self.skew.len() && self.skew[ms].is_nan() {
            self.skew[ms] = e as f32;
        }
    }

    fn p99(&self) -> f64 {
        p99_of(&self.hist, self.n, self.max)
    }

    fn p99_late(&self) -> f64 {
        p99_of(&self.hist_late, self.n_late, self.max_late)
    }
}

/// The 99th percentile of `n` |errors| binned in `hist`, ns (upper bin
/// edge), or `max` if it falls in the overflow bin.
fn p99_of(hist: &[u64], n: u64, max: f64) -> f64 {
    let target = (n as f64 * 0.99).ceil() as u64;
    let mut acc = 0;
    for (i, c) in hist.iter().enumerate() {
        acc += c;
        if acc >= target {
            return (i + 1) as f64 * HIST_BIN_NS;
        }
    }
    max
}

struct SimRx {
    spec: RxSpec,
    clock: Clock,
    /// Created at the receiver's first cycle: before, it is off the
    /// network.
    ep: Option<ReceiverEndpoint>,
    /// Where its time requests and status come from.
    addr: SocketAddr,
    /// The device's next output frame.
    frame: u64,
    t0: f64,
    period: f64,
    /// What the receiver fills (a buffer, or a write).
    out: Vec<f32>,
    /// What the device plays in one cycle, when it is not `out`.
    dev: Vec<f32>,
    meter: Meter,
    /// Sender → this receiver, and back: each direction with its own state
    /// and generator, so that every receiver's losses are its own.
    down: Leg,
    up: Leg,
    /// Audio datagrams the sender sent while this receiver was on the
    /// network, and how many of them its downstream path dropped.
    audio_sent: u64,
    audio_dropped: u64,
    /// Its adapter's randomness: report jitter, PulseAudio's lags.
    rng: Rng,
    /// Requests sent when the run's second half began.
    requests_mark: Option<u64>,
    path: Path,
}

/// Frames of stream kept for the modelled adapters (a ring), beyond any
/// buffer, queue and look-ahead.
const STREAM_RING: usize = 8192;

/// The adapter state of one receiver's output.
enum Path {
    Core,
    RateMatch(Box<RateMatchOut>),
    Pulse(Box<PulseOut>),
}

/// [`OutputPath::RateMatch`]: the loop and the modelled adapter resampler.
struct RateMatchOut {
    lp: RateMatchLoop,
    /// The resampler's read position, stream frames.
    pos: f64,
    /// Stream frames handed to the resampler so far.
    have: u64,
    /// Input frames consumed per output frame, as applied.
    ratio: f64,
    /// The stream's frames, by frame index modulo [`STREAM_RING`].
    ring: Vec<[f32; 2]>,
    /// Sum and count of the loop's correction over the run's second half.
    corr_sum: f64,
    corr_n: u64,
}

/// [`OutputPath::Pulse`]: bark-pulse's estimate and the server's stream.
struct PulseOut {
    fc: FrameClock,
    /// Frames the client wrote (the index of its next write).
    written: u64,
    /// A timing reply on its way: `(arrival, true ns; reply stamp, local
    /// ns; sink latency, µs; read index, frames)`.
    reply: Option<(f64, u64, u64, u64)>,
    /// When the client asks for timing next, true ns.
    next_request: f64,
    /// Stream frames, by frame index modulo [`STREAM_RING`].
    ring: Vec<[f32; 2]>,
    /// Sink cycles that found frames missing.
    underruns: u64,
    /// Whether the last sink cycle did (one underrun per run of them).
    in_underrun: bool,
}

impl RateMatchOut {
    /// The input frames the adapter asks for this cycle (the stream's
    /// `requested`), at most `cap`: what its resampler needs for `q`
    /// output frames at the ratio in effect, with its look-ahead.
    fn request(&self, q: usize, cap: usize) -> usize {
        let need = (self.pos + q as f64 * self.ratio).ceil() as u64 + RM_DELAY_FRAMES;
        (need.saturating_sub(self.have) as usize).min(cap)
    }

    /// Takes the filled `input` and plays one cycle into `dev` (interleaved
    /// stereo) with the loop's `ratio` applied as PipeWire 0.3.65 does.
    /// Linear interpolation is exact enough for the 1 Hz tone.
    fn play(&mut self, input: &[f32], ratio: f64, rate: u32, dev: &mut [f32]) {
        for (k, f) in input.chunks_exact(2).enumerate() {
            self.ring[(self.have as usize + k) % STREAM_RING] = [f[0], f[1]];
        }
        self.have += (input.len() / 2) as u64;
        let in_rate = pipewire_0365_input_rate(pipewire_rate(ratio, rate), rate);
        self.ratio = in_rate as f64 / rate as f64;
        if in_rate == rate {
            // A plain copy: the fractional phase is dropped.
            self.pos = self.pos.floor();
        }
        for (j, o) in dev.chunks_exact_mut(2).enumerate() {
            let x = self.pos + j as f64 * self.ratio;
            let k = x.floor() as u64;
            let a = (x - k as f64) as f32;
            if k + 1 >= self.have {
                // Starved (cannot happen with the look-ahead): silence.
                o.fill(0.0);
                continue;
            }
            let (p, n) = (
                self.ring[k as usize % STREAM_RING],
                self.ring[(k + 1) as usize % STREAM_RING],
            );
            o[0] = p[0] + (n[0] - p[0]) * a;
            o[1] = p[1] + (n[1] - p[1]) * a;
        }
        self.pos += (dev.len() / 2) as f64 * self.ratio;
    }
}

impl PulseOut {
    /// The client's write: `out` (interleaved stereo) lands at frame
    /// `written` of the stream.
    fn write(&mut self, out: &[f32]) {
        for (k, f) in out.chunks_exact(2).enumerate() {
            self.ring[(self.written as usize + k) % STREAM_RING] = [f[0], f[1]];
        }
        self.written += (out.len() / 2) as u64;
    }

    /// The sink's cycle: plays frames `from..` of the stream into `dev`
    /// (interleaved stereo); frames not written yet are silent, and lost
    /// (`prebuf = 0` keeps every frame's slot). `count`: whether missing
    /// frames count as an underrun (not before the receiver plays).
    fn take(&mut self, from: u64, dev: &mut [f32], count: bool) {
        let n = (dev.len() / 2) as u64;
        let missing = from + n > self.written;
        if missing && count && !self.in_underrun {
            self.underruns += 1;
        }
        self.in_underrun = missing && count;
        for (j, o) in dev.chunks_exact_mut(2).enumerate() {
            let k = from + j as u64;
            if k < self.written {
                o.copy_from_slice(&self.ring[k as usize % STREAM_RING]);
            } else {
                o.fill(0.0);
            }
        }
    }
}

/// Creates receiver `i`'s endpoint (keyless, status to the group too, as
/// on a multicast LAN) on its first cycle.
fn ensure_rx(r: &mut SimRx, i: usize, repair: bool, fec: bool) {
    if r.ep.is_none() {
        let cfg = ReceiverConfig {
            node_id: 100 + i as u64,
            delay_ns: r.spec.delay_ns,
            repair,
            fec,
            latency_floor_ns: r.spec.latency_floor_ns,
            ..Default::default()
        };
        r.ep = Some(ReceiverEndpoint::new(cfg, None, true).expect("valid receiver config"));
    }
}

/// One direction of one receiver's link: the path's state and the
/// generator of its per-datagram draws.
struct Leg {
    path: NetPath,
    rng: Rng,
}

impl Leg {
    fn new(net: &NetModel, seed: u64, link_seed: u64) -> Self {
        Leg {
            path: NetPath::new(net, link_seed),
            rng: Rng::new(seed),
        }
    }

    /// Arrival time of a datagram of `bytes` sent at `t`, or `None`.
    fn transit(&mut self, t: f64, bytes: usize, group: bool) -> Option<f64> {
        self.path.transit(&mut self.rng, t, bytes, group)
    }
}

/// The event queue. Times are kept in 1/16 ns so that ordering is exact,
/// and ties go in the order pushed.
#[derive(Default)]
struct Events {
    heap: BinaryHeap<Reverse<Queued>>,
    seq: u64,
}

impl Events {
    fn push(&mut self, t: f64, ev: Event) {
        self.heap.push(Reverse(Queued {
            at: (t.max(0.0) * 16.0) as u64,
            seq: self.seq,
            ev,
        }));
        self.seq += 1;
    }

    fn pop(&mut self) -> Option<(f64, Event)> {
        self.heap.pop().map(|Reverse(q)| (q.at as f64 / 16.0, q.ev))
    }
}

/// The session latency as the simulator's truth follows it.
struct Latency {
    /// On the sender's clock, ns.
    ns: u64,
    /// In true ns.
    true_ns: f64,
    /// `(s, ns)` at the start and at each change.
    log: Vec<(f64, u64)>,
    sender_ppm: f64,
}

impl Latency {
    fn new(ns: u64, sender_ppm: f64) -> Self {
        Latency {
            ns,
            true_ns: ns as f64 / (1.0 + sender_ppm * 1e-6),
            log: vec![(0.0, ns)],
            sender_ppm,
        }
    }

    /// The sender's latency is `ns` at true time `t`: on a change every
    /// receiver resyncs to it, and frames count again once each has
    /// converged on it.
    fn observe(&mut self, t: f64, ns: u64, rxs: &mut [SimRx]) {
        if ns == self.ns {
            return;
        }
        self.ns = ns;
        self.true_ns = ns as f64 / (1.0 + self.sender_ppm * 1e-6);
        self.log.push((t / 1e9, ns));
        for r in rxs {
            r.meter.rearm((t + self.true_ns).max(r.meter.due_from));
        }
    }
}

/// When a timer of period `tick` (ns) that also serves an endpoint wanting
/// `poll_transmit` at true time `due` fires after `t`: the earlier of the
/// two. A deadline already past (the endpoint had nothing to send for it
/// yet, say no sender to send a request to) waits for the tick rather
/// than spinning.
fn next_wake(t: f64, tick: f64, due: f64) -> f64 {
    if due > t {
        due.min(t + tick)
    } else {
        t + tick
    }
}

/// Whether `d` is an audio datagram sent for the first time (the truth
/// counts those; a resend is the sender answering a NACK).
fn is_audio(d: &[u8]) -> bool {
    matches!(protocol::parse(d), Ok(protocol::Packet::Audio(a)) if !a.resent)
}

/// Sends `d` from the sender at true time `t` to receiver `i` through its
/// downstream path; `group`: a copy of a datagram to the group (which the
/// path may duplicate, as the simulator always did).
fn to_rx(ev: &mut Events, i: usize, r: &mut SimRx, t: f64, d: &[u8], group: bool) {
    if r.ep.is_none() {
        return;
    }
    let audio = is_audio(d);
    r.audio_sent += audio as u64;
    match r.down.transit(t, d.len(), group) {
        Some(at) => {
            ev.push(at, Event::ToRx(i, d.to_vec()));
            if group && r.down.path.duplicate(&mut r.down.rng) {
                ev.push(at + DUPLICATE_LAG_NS, Event::ToRx(i, d.to_vec()));
            }
        }
        None => r.audio_dropped += audio as u64,
    }
}

/// Sends the sender's `d` for [`Dest::Group`] at true time `t`: one copy
/// to every receiver on the network, each through its own path.
fn fan_out(ev: &mut Events, rxs: &mut [SimRx], t: f64, d: &[u8]) {
    for (i, r) in rxs.iter_mut().enumerate() {
        to_rx(ev, i, r, t, d, true);
    }
}

/// The sender endpoint's turn at true time `t`: everything
/// `poll_transmit` has, stamped with its clock then, to where it names:
/// [`Dest::Group`] to every receiver, [`Dest::To`] to the receiver with
/// that address.
fn sender_transmit(
    sender: &mut SenderEndpoint,
    clock: &Clock,
    t: f64,
    ev: &mut Events,
    rxs: &mut [SimRx],
    buf: &mut [u8],
    cpu: &mut SenderCpu,
) {
    let now = clock.read(t);
    while let Some((n, dest)) = cpu.time(|| sender.poll_transmit(now, 0, buf)) {
        match dest {
            Dest::Group => fan_out(ev, rxs, t, &buf[..n]),
            Dest::To(a) => {
                if let Some(i) = rxs.iter().position(|r| r.addr == a) {
                    to_rx(ev, i, &mut rxs[i], t, &buf[..n], false);
                }
            }
        }
    }
}

/// Receiver `i`'s endpoint's turn at true time `t`: its time requests and
/// status to the sender go up its path. The copy of its status for the
/// group is dropped: nothing simulated listens there for it (receivers
/// ignore status packets, the sender gets its own copy by [`Dest::To`]),
/// and carrying it would only spend the path's draws.
fn rx_transmit(
    r: &mut SimRx,
    i: usize,
    t: f64,
    sender_addr: SocketAddr,
    ev: &mut Events,
    buf: &mut [u8],
) {
    let Some(ep) = r.ep.as_mut() else {
        return;
    };
    let now = r.clock.read(t);
    while let Some((n, dest)) = ep.poll_transmit(now, 0, buf) {
        if dest == Dest::To(sender_addr) {
            if let Some(at) = r.up.transit(t, n, false) {
                ev.push(at, Event::ToSender(i, buf[..n].to_vec()));
            }
        }
    }
}

/// Wall time spent inside the sender endpoint's own calls (`push`,
/// `handle_datagram`, `poll_transmit`), not the simulator's delivery of
/// what it sends: what the sink's data thread would spend on it. Not
/// deterministic (a wall clock); for reports only.
#[derive(Default)]
struct SenderCpu(std::time::Duration);

impl SenderCpu {
    fn time<R>(&mut self, f: impl FnOnce() -> R) -> R {
        let t0 = std::time::Instant::now();
        let r = f();
        self.0 += t0.elapsed();
        r
    }
}

/// Runs a scenario to completion.
pub fn run(sc: &Scenario) -> Report {
    run_traced(sc, None)
}

/// Runs a scenario, printing once per simulated second to stderr receiver
/// `trace`'s clock-estimate error against the truth (a diagnostic).
pub fn run_traced(sc: &Scenario, trace: Option<usize>) -> Report {
    run_timed(sc, trace).0
}

/// [`run_traced`], and the wall time the sender endpoint's own calls took
/// (`push`, `handle_datagram`, `poll_transmit`), ns: measured on this
/// host, so not deterministic and not part of the [`Report`]; for
/// benchmarks, never for assertions.
pub fn run_timed(sc: &Scenario, trace: Option<usize>) -> (Report, u64) {
    let rate = 48_000u32;
    // The sender's scheduling jitter. Every receiver and every path has
    // its own generator: what one receiver draws never moves another's.
    let mut rng = Rng::new(sc.seed);
    // Bases of several seconds keep every clock positive from the start.
    let sender_clock = Clock {
        offset: sc.sender_clock.0 + 10e9,
        ppm: sc.sender_clock.1,
    };
    let sender_addr: SocketAddr = "10.0.0.1:1530".parse().expect("literal address");
    let s_period = 1e9 / (rate as f64 * (1.0 + sc.sender_device_ppm * 1e-6));
    let mut latency = Latency::new(sc.latency_ns, sc.sender_clock.1);
    let idle_at = |t: f64| sc.idle_s.iter().any(|&(a, b)| t >= a * 1e9 && t < b * 1e9);
    let mut was_idle = false;
    let mut session = 0u64;
    let new_sender = |session: &mut u64| {
        *session += 1;
        let cfg = SenderConfig {
            session_id: 0x5e55_0000 + *session,
            latency_ns: sc.latency_ns,
            max_latency_ns: sc.max_latency_ns,
            sync_interval_ns: if sc.sync {
                crate::sender::SYNC_INTERVAL_NS
            } else {
                0
            },
            fec: sc.fec,
            opus: sc.opus_config,
            format: if sc.opus {
                AudioFormat {
                    sample: crate::SampleFormat::Opus,
                    rate,
                    channels: 2,
                }
            } else {
                AudioFormat::default()
            },
            ..Default::default()
        };
        SenderEndpoint::new(cfg, None, false, 1).expect("valid sender config")
    };
    let mut sender = new_sender(&mut session);
    // Session start in true time, and frames sent so far in it.
    let mut s_t0 = 0.001;
    let mut s_frame = 0u64;
    let ms_total = (sc.duration_s * 1000.0) as usize + 1;
    let mut rxs: Vec<SimRx> = sc
        .receivers
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let period = 1e9 / (rate as f64 * (1.0 + spec.device_ppm * 1e-6));
            // Audio is due from the first frame sent (after an idle
            // start) plus the latency.
            let join = (spec.join_s * 1e9).max(s_t0);
            let first_audio = sc
                .idle_s
                .iter()
                .find(|(a, b)| a * 1e9 <= join && join < b * 1e9)
                .map_or(join, |&(_, b)| b * 1e9);
            let due = (spec.join_s * 1e9).max(first_audio + latency.true_ns);
            // Both directions share the link's stall and outage schedule.
            let net = spec.net.as_ref().unwrap_or(&sc.net);
            let stream = 4 * i as u64;
            let link_seed = seed_for(sc.seed, stream + 3);
            SimRx {
                clock: Clock {
                    offset: spec.clock_offset_ns + 5e9,
                    ppm: spec.clock_ppm,
                },
                ep: None,
                addr: SocketAddr::from(([10, 0, 1 + (i / 200) as u8, 10 + (i % 200) as u8], 1530)),
                frame: 0,
                t0: spec.join_s * 1e9 + 1e6 * (i as f64 + 0.37),
                period,
                out: vec![
                    0.0;
                    match spec.output {
                        OutputPath::Core => spec.quantum,
                        // A cycle's input at the largest ratio, the
                        // look-ahead included; a write.
                        OutputPath::RateMatch => spec.quantum * 2 + RM_DELAY_FRAMES as usize,
                        OutputPath::Pulse => STREAM_RING / 2,
                    } * 2
                ],
                dev: vec![0.0; spec.quantum * 2],
                path: match spec.output {
                    OutputPath::Core => Path::Core,
                    OutputPath::RateMatch => Path::RateMatch(Box::new(RateMatchOut {
                        lp: RateMatchLoop::default(),
                        // The resampler starts with its look-ahead of
                        // silence (the native resampler's reset history).
                        pos: 0.0,
                        have: RM_DELAY_FRAMES,
                        ratio: 1.0,
                        ring: vec![[0.0; 2]; STREAM_RING],
                        corr_sum: 0.0,
                        corr_n: 0,
                    })),
                    OutputPath::Pulse => Path::Pulse(Box::new(PulseOut {
                        fc: FrameClock::new(rate),
                        written: 0,
                        reply: None,
                        next_request: 0.0,
                        ring: vec![[0.0; 2]; STREAM_RING],
                        underruns: 0,
                        in_underrun: false,
                    })),
                },
                meter: Meter::new(due, ms_total, sc.duration_s * 1e9 / 2.0),
                down: Leg::new(net, seed_for(sc.seed, stream + 1), link_seed),
                up: Leg::new(net, seed_for(sc.seed, stream + 2), link_seed),
                audio_sent: 0,
                audio_dropped: 0,
                rng: Rng::new(seed_for(sc.seed, stream + 4)),
                requests_mark: None,
                spec: spec.clone(),
            }
        })
        .collect();

    let mut queue = Events::default();
    queue.push(s_t0, Event::SenderCycle);
    queue.push(s_t0 + 0.5, Event::SenderTimer);
    for (i, r) in rxs.iter().enumerate() {
        queue.push(r.t0, Event::RxCycle(i));
        queue.push(r.t0 + 1.0, Event::RxTimer(i));
        if let Path::Pulse(_) = r.path {
            queue.push(r.t0 + 0.5, Event::RxClient(i));
        }
    }
    for &t in &sc.restarts_s {
        queue.push(t * 1e9, Event::Restart);
    }
    let end = sc.duration_s * 1e9;
    let mut samples = vec![0f32; sc.sender_quantum * 2];
    let mut outbox: Vec<Vec<u8>> = Vec::new();
    let mut buf = vec![0u8; TRANSMIT_BUF];
    let mut cpu = SenderCpu::default();
    let tone_hz = if sc.opus { OPUS_TONE_HZ } else { TONE_HZ };
    let tone_w = 2.0 * std::f64::consts::PI * tone_hz / rate as f64;

    while let Some((t, ev)) = queue.pop() {
        if t > end {
            break;
        }
        match ev {
            Event::Restart => {
                sender = new_sender(&mut session);
                s_t0 = t;
                s_frame = 0;
                for r in &mut rxs {
                    r.meter.rearm((t + latency.true_ns).max(r.meter.due_from));
                }
                latency.observe(t, sender.sender().latency_ns(), &mut rxs);
            }
            Event::SenderCycle => {
                let first_true = s_t0 + s_frame as f64 * s_period;
                let idle = idle_at(t);
                if !idle {
                    for (j, f) in samples.chunks_exact_mut(2).enumerate() {
                        let ph = tone_w * (s_frame + j as u64) as f64;
                        f[0] = ph.sin() as f32;
                        f[1] = ph.cos() as f32;
                    }
                    let jitter = (rng.uniform() - 0.5) * 2.0 * sc.sched_jitter_ns;
                    // Zero-mean: PipeWire's cycle times come from the driver's
                    // smoothed clock, not from wake-ups.
                    let now = sender_clock.read(first_true + jitter);
                    outbox.clear();
                    // The cycle runs (and sends) at true time `t`; adapters
                    // stamp the sync message with the clock read right then.
                    let send_ns = sender_clock.read(t);
                    cpu.time(|| {
                        sender.push(now, &mut || send_ns, 0, &samples, &mut |d, _| {
                            outbox.push(d.to_vec())
                        })
                    });
                    for d in &outbox {
                        fan_out(&mut queue, &mut rxs, t, d);
                    }
                    latency.observe(t, sender.sender().latency_ns(), &mut rxs);
                    if was_idle {
                        // An onset: its first frame is due at each receiver
                        // that has joined.
                        for r in rxs.iter_mut().filter(|r| r.t0 < t) {
                            let due = first_true + latency.true_ns + r.spec.delay_ns as f64;
                            r.meter.onset(due);
                        }
                    }
                }
                // The sink serves its endpoint from its cycle too.
                sender_transmit(
                    &mut sender,
                    &sender_clock,
                    t,
                    &mut queue,
                    &mut rxs,
                    &mut buf,
                    &mut cpu,
                );
                latency.observe(t, sender.sender().latency_ns(), &mut rxs);
                was_idle = idle;
                // An idle sink's frames still advance with time: the
                // tone's phase stays the frame's true entry time.
                s_frame += sc.sender_quantum as u64;
                let next = s_t0 + s_frame as f64 * s_period;
                queue.push(next, Event::SenderCycle);
            }
            Event::SenderTimer => {
                // The sink's data timer (50 ms), or sooner when the
                // endpoint wants it.
                sender_transmit(
                    &mut sender,
                    &sender_clock,
                    t,
                    &mut queue,
                    &mut rxs,
                    &mut buf,
                    &mut cpu,
                );
                latency.observe(t, sender.sender().latency_ns(), &mut rxs);
                let due = sender_clock.when_reads(sender.poll_timeout(sender_clock.read(t)));
                queue.push(next_wake(t, 50e6, due), Event::SenderTimer);
            }
            Event::ToRx(i, mut d) => {
                let r = &mut rxs[i];
                if let Some(ep) = r.ep.as_mut() {
                    let _ = ep.handle_datagram(r.clock.read(t), 0, &mut d, sender_addr);
                }
                // The adapter serves its endpoint when a datagram comes.
                rx_transmit(r, i, t, sender_addr, &mut queue, &mut buf);
            }
            Event::ToSender(i, mut d) => {
                let from = rxs[i].addr;
                let now = sender_clock.read(t);
                let _ = cpu.time(|| sender.handle_datagram(now, 0, &mut d, from));
                latency.observe(t, sender.sender().latency_ns(), &mut rxs);
                // The sink serves its endpoint when a datagram comes: a
                // time reply leaves (and is stamped) 20 µs later.
                let t3 = t + 20_000.0;
                sender_transmit(
                    &mut sender,
                    &sender_clock,
                    t3,
                    &mut queue,
                    &mut rxs,
                    &mut buf,
                    &mut cpu,
                );
                latency.observe(t3, sender.sender().latency_ns(), &mut rxs);
            }
            Event::RxTimer(i) => {
                // The adapter's timer on the data loop (2 ms), or sooner
                // when the endpoint wants it.
                let r = &mut rxs[i];
                let tick = crate::receiver::FAST_INTERVAL_NS as f64;
                let mut next = t + tick;
                if let Some(ep) = r.ep.as_ref() {
                    if r.requests_mark.is_none() && t >= end / 2.0 {
                        r.requests_mark = Some(ep.receiver().requests());
                    }
                    rx_transmit(r, i, t, sender_addr, &mut queue, &mut buf);
                    if let Some(ep) = r.ep.as_ref() {
                        next = next_wake(t, tick, r.clock.when_reads(ep.poll_timeout()));
                    }
                }
                queue.push(next, Event::RxTimer(i));
            }
            Event::RxCycle(i) => {
                let r = &mut rxs[i];
                ensure_rx(r, i, sc.repair, sc.fec.is_some());
                let q = r.spec.quantum;
                let heard0 = r.t0 + r.frame as f64 * r.period;
                let downstream = downstream_at(&r.spec, t);
                // The device asks one quantum plus 0.5 ms ahead of playing,
                // and the downstream latency before that.
                let cb = heard0 - q as f64 * r.period - 500_000.0 - downstream;
                let ep = r.ep.as_mut().expect("created above");
                let now = r.clock.read(cb.max(0.0));
                if trace == Some(i) && r.frame % (rate as u64) < q as u64 {
                    let rx = ep.receiver();
                    if let Some(e) = rx.clock().estimate() {
                        let truth = sender_clock.read(cb) as f64;
                        let truth_rate =
                            (1.0 + sender_clock.ppm * 1e-6) / (1.0 + r.clock.ppm * 1e-6) - 1.0;
                        eprintln!(
                            "trace rx{i} t={:.1}s clock_err_us={:.1} rate_err_ppm={:.2} exchanges={} jitter_us={:.0} sync_err_us={:.1} buffer_us={} play_latency_ms={:.1} need_ms={:.1} concealed={}",
                            cb / 1e9,
                            (e.to_sender(now as i64) - truth) / 1e3,
                            (e.rate - truth_rate) * 1e6,
                            rx.clock().exchanges(),
                            rx.clock().jitter_ns() / 1e3,
                            rx.sync_error_ns() / 1e3,
                            rx.counters().buffer_us,
                            rx.play_latency_ns() as f64 / 1e6,
                            rx.need_ns() as f64 / 1e6,
                            rx.counters().concealed_frames,
                        );
                    }
                }
                // What the device plays this cycle.
                let played: &[f32] = match &mut r.path {
                    Path::Core => {
                        // The receiver's downstream latency is how long
                        // before being heard it fills a buffer: the
                        // device's own lead included.
                        let report_jitter = (r.rng.uniform() - 0.5) * 4_000.0;
                        let play = r.clock.read(heard0 + report_jitter);
                        ep.fill(play, (heard0 - cb) as u64, &mut r.out);
                        &r.out
                    }
                    Path::RateMatch(m) => {
                        // pw-module's `fill_rate_matched`: the graph says
                        // the buffer is heard after the resampler's delay
                        // (not its fractional phase); the core fills it for
                        // the loop's virtual time; the loop's ratio goes to
                        // the resampler, which plays the cycle with it.
                        let report_jitter = (r.rng.uniform() - 0.5) * 4_000.0;
                        let frames = m.request(q, r.out.len() / 2);
                        let reported = heard0 + RM_DELAY_FRAMES as f64 * 1e9 / rate as f64;
                        let v = m.lp.virtual_time(r.clock.read(reported + report_jitter));
                        let input = &mut r.out[..frames * 2];
                        ep.fill(v, (reported - cb) as u64, input);
                        let ratio = m.lp.advance_after_fill(ep.receiver(), frames);
                        if t >= end / 2.0 {
                            m.corr_sum += m.lp.correction();
                            m.corr_n += 1;
                        }
                        m.play(input, ratio, rate, &mut r.dev);
                        &r.dev
                    }
                    Path::Pulse(p) => {
                        // The sink's cycle; bark-pulse writes in its own
                        // turns (`RxClient`).
                        p.take(r.frame, &mut r.dev, ep.receiver().playing());
                        &r.dev
                    }
                };
                // A receiver whose output needs more than the session
                // latency plays late on purpose (until the sender raises
                // the latency): not a sync error; measured again after.
                let late = ep.receiver().late();
                for (j, f) in played.chunks_exact(2).enumerate() {
                    let heard = heard0 + j as f64 * r.period;
                    let (sn, cs) = (f[0] as f64, f[1] as f64);
                    let amp = (sn * sn + cs * cs).sqrt();
                    let err = (amp > AUDIBLE).then(|| {
                        // Frame due now, then the played frame from the tone phase.
                        let due =
                            (heard - latency.true_ns - r.spec.delay_ns as f64 - s_t0) / s_period;
                        let want = tone_w * due;
                        let got = sn.atan2(cs);
                        let mut d = (got - want) % (2.0 * std::f64::consts::PI);
                        if d > std::f64::consts::PI {
                            d -= 2.0 * std::f64::consts::PI;
                        } else if d < -std::f64::consts::PI {
                            d += 2.0 * std::f64::consts::PI;
                        }
                        // Playing frame `due + δ` means it is heard δ frames early.
                        -(d / tone_w) * s_period
                    });
                    if late {
                        r.meter.rearm(heard + latency.true_ns);
                    } else {
                        r.meter.frame(heard, err);
                    }
                }
                r.frame += q as u64;
                let next_cb = r.t0 + r.frame as f64 * r.period
                    - q as f64 * r.period
                    - 500_000.0
                    - downstream_at(&r.spec, t);
                queue.push(next_cb.max(t + 1.0), Event::RxCycle(i));
                // The adapter serves its endpoint from the cycle too: a
                // status made due by the fill leaves now.
                rx_transmit(r, i, t, sender_addr, &mut queue, &mut buf);
            }
            Event::RxClient(i) => {
                let r = &mut rxs[i];
                ensure_rx(r, i, sc.repair, sc.fec.is_some());
                let ep = r.ep.as_mut().expect("created above");
                let Path::Pulse(p) = &mut r.path else {
                    continue;
                };
                let now = r.clock.read(t);
                // A reply that came in: frame `written` is heard at the
                // stamp plus the sink's latency plus what is queued before
                // it (at the nominal rate), as bark-pulse's
                // `timing::Info::playback` reads it.
                if let Some((arrival, stamp, sink_us, read)) = p.reply {
                    if arrival <= t {
                        p.reply = None;
                        let queued = p.written as f64 - read as f64;
                        let play = stamp as f64 + sink_us as f64 * 1e3 + queued * 1e9 / rate as f64;
                        p.fc.add(stamp, p.written, play);
                    }
                }
                if p.reply.is_none() && t >= p.next_request {
                    p.next_request = t + 10e6 * (0.7 + 0.6 * r.rng.uniform());
                    // The server snapshots now and stamps its reply later.
                    let lag = if r.rng.chance(PULSE_SLOW_LAG_NS.0) {
                        PULSE_SLOW_LAG_NS.1
                            + r.rng.uniform() * (PULSE_SLOW_LAG_NS.2 - PULSE_SLOW_LAG_NS.1)
                    } else {
                        PULSE_LAG_NS.0 + r.rng.uniform() * (PULSE_LAG_NS.1 - PULSE_LAG_NS.0)
                    };
                    // Its sink latency: until the frame the sink takes next
                    // is heard, on the host's clock, whole µs.
                    let read = r.frame;
                    let next_heard = r.clock.read(r.t0 + read as f64 * r.period);
                    let sink_us = next_heard.saturating_sub(now) / 1000;
                    let stamp = r.clock.read(t + lag);
                    p.reply = Some((t + lag + 20_000.0, stamp, sink_us, read));
                }
                // Writes up to `PULSE_BUFFER_NS` ahead of the device.
                let ahead = ((t + PULSE_BUFFER_NS - r.t0) / r.period).max(0.0) as u64;
                let n = (ahead.saturating_sub(p.written) as usize).min(r.out.len() / 2);
                if n > 0 {
                    let out = &mut r.out[..n * 2];
                    let mut est = p.fc.play_ns(p.written, now);
                    if est.is_some_and(|x| x < now as f64 - 200e6 || x > now as f64 + 2e9) {
                        // bark-pulse's sanity bounds: start again.
                        p.fc.reset();
                        est = None;
                    }
                    match est {
                        Some(x) if x > 0.0 => {
                            ep.fill(x as u64, (x - now as f64).max(0.0) as u64, out);
                        }
                        _ => out.fill(0.0),
                    }
                    p.write(out);
                }
                // bark-pulse's tick: 2 ms while the core syncs its clock,
                // 5 ms once it plays.
                let tick = if ep.receiver().playing() { 5e6 } else { 2e6 };
                queue.push(t + tick, Event::RxClient(i));
                rx_transmit(r, i, t, sender_addr, &mut queue, &mut buf);
            }
        }
    }

    let reports: Vec<RxReport> = rxs
        .iter()
        .map(|r| {
            let rx = r.ep.as_ref().map(|e| e.receiver());
            let c = rx.map(|x| x.counters()).unwrap_or_default();
            let (estimator_ppm, estimator_restarts, out_underruns) = match &r.path {
                Path::Core => (None, 0, 0),
                Path::RateMatch(m) => {
                    let corr = if m.corr_n > 0 {
                        m.corr_sum / m.corr_n as f64
                    } else {
                        m.lp.correction()
                    };
                    (Some(corr * 1e6), m.lp.resyncs(), 0)
                }
                Path::Pulse(p) => (Some(p.fc.drift_ppm()), p.fc.resets(), p.underruns),
            };
            RxReport {
                converge_ms: r.meter.converge_ms.filter(|_| r.meter.converged),
                p99_error_us: r.meter.p99() / 1000.0,
                p99_second_half_us: r.meter.p99_late() / 1000.0,
                max_error_us: r.meter.max / 1000.0,
                mean_error_us: if r.meter.n > 0 {
                    r.meter.sum / r.meter.n as f64 / 1000.0
                } else {
                    0.0
                },
                frames: r.meter.n,
                underruns: c.underruns + out_underruns,
                concealed: c.concealed_frames,
                jumps: rx.map_or(0, |x| x.jumps()),
                lost: c.lost,
                late: c.late,
                duplicated: c.duplicated,
                requests_per_s: match (rx, r.requests_mark) {
                    (Some(x), Some(m)) => (x.requests() - m) as f64 / (sc.duration_s / 2.0),
                    _ => 0.0,
                },
                onsets: r
                    .meter
                    .onsets
                    .iter()
                    .filter(|(due, _)| *due < end)
                    .map(|&(due, got)| Onset {
                        due_s: due / 1e9,
                        clipped_ms: got.map(|(heard, _)| ((heard - due) / 1e6).max(0.0)),
                        error_us: got.map_or(f64::INFINITY, |(_, e)| e.abs() / 1e3),
                    })
                    .collect(),
                estimator_ppm,
                estimator_restarts,
                status: c,
                audio_sent: r.audio_sent,
                audio_dropped: r.audio_dropped,
                down: *r.down.path.stats(),
                up: *r.up.path.stats(),
                repair: rx.map(|x| *x.repair()).unwrap_or_default(),
                fec: rx.map(|x| x.fec()).unwrap_or_default(),
            }
        })
        .collect();
    let mut skews: Vec<f32> = (0..ms_total)
        .filter_map(|ms| {
            let vals: Vec<f32> = rxs.iter().map(|r| r.meter.skew[ms]).collect();
            if vals.iter().any(|v| v.is_nan()) {
                return None;
            }
            let hi = vals.iter().cloned().fold(f32::MIN, f32::max);
            let lo = vals.iter().cloned().fold(f32::MAX, f32::min);
            Some(hi - lo)
        })
        .collect();
    skews.sort_by(f32::total_cmp);
    let skew_p99_us = skews
        .get(((skews.len() as f64 * 0.99) as usize).min(skews.len().saturating_sub(1)))
        .map_or(0.0, |v| *v as f64 / 1000.0);
    let report = Report {
        scenario: sc.name.clone(),
        receivers: reports,
        skew_p99_us,
        latency: latency.log,
        sender: *sender.wire().counts(),
    };
    (report, cpu.0.as_nanos() as u64)
}

/// The downstream latency of receiver `spec`'s output at true time `t`
/// (ns), ns.
fn downstream_at(spec: &RxSpec, t: f64) -> f64 {
    spec.downstream
        .iter()
        .rev()
        .find(|(from, _)| t >= from * 1e9)
        .map_or(0.0, |&(_, ns)| ns)
}

/// Audio packets per second a sender of `format` makes at the default MTU
/// (for reports).
pub fn packets_per_second(format: &AudioFormat) -> f64 {
    format.rate as f64 / protocol::frames_for_mtu(protocol::DEFAULT_MTU, format) as f64
}

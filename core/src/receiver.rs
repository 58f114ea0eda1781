//! The receiving side: follows one sender's stream and fills output buffers
//! so that every frame is heard at its presentation time plus the target
//! latency, on the sender's clock.
//!
//! Per output buffer ([`Receiver::fill`]):
//! 1. a [`Dll`] smooths the adapter's "first frame heard at" timestamps and
//!    measures the output device's real frame period;
//! 2. that instant is mapped onto the sender clock ([`ClockSync`]), minus the
//!    latency and the per-receiver delay, and through the sender's timeline
//!    (`pts` of recent packets) to a fractional target frame;
//! 3. the [`DriftController`] compares it with the frame actually being
//!    played and trims the resampling ratio (or jumps);
//! 4. frames come out of the [`JitterBuffer`], with holes faded out and in,
//!    through the interpolation [`Kernel`].
//!
//! Everything is preallocated in [`Receiver::new`]; neither `fill` nor
//! `handle_packet` allocates.

use crate::channels::{ChannelMask, ChannelMix, Layout, Selection};
use crate::clock::ClockSync;
use crate::dll::Dll;
use crate::drift::{Action, DriftController};
use crate::fec::FecDecoder;
use crate::format::{AudioFormat, SampleFormat, MAX_RATE};
use crate::jitter::{Insert, JitterBuffer, Samples};
use crate::opus::{Offer, OpusDecoderStage, Screen};
use crate::protocol::{
    self, Packet, Role, StatusCounters, StatusPacket, TimePacket, FEC_MAX_SHARD, STATUS_ACTIVE,
    STATUS_LATE,
};
use crate::repair::nack::{
    NackScheduler, RepairCounts, FIRST_WAIT_NS, MAX_MISSING, MAX_NACKS_PER_POLL,
};
use crate::resample::{Kernel, Planes, AFTER, BEFORE, TAPS};
use crate::select::{Choice, Selector, QUIET_NS};
use crate::settings::{self, Value};
use crate::trust::SyncGate;
use crate::Error;
use std::net::SocketAddr;

/// Largest target latency, ns (2 s); the ring is sized for it. Defined
/// with the settings' limits, which it bounds.
pub use crate::settings::MAX_LATENCY_NS;
/// Ring length, s of audio at [`MAX_RATE`]: latency plus headroom.
const RING_SECONDS: f64 = 2.5;
/// A round of NACKs, ns: at most [`MAX_NACKS_PER_POLL`] go out per round.
const NACK_ROUND_NS: u64 = 1_000_000;
/// Margin for late wake-ups in a packet's read deadline, ns.
const READ_MARGIN_NS: u64 = 1_000_000;
/// Frames over which audio fades out before a hole and in after it: about
/// 1.3 ms at 48 kHz, long enough to avoid a click, short enough to keep most
/// of the audio around a single lost packet.
pub const FADE_FRAMES: usize = 64;
/// Time requests during the first [`FAST_SAMPLES`] exchanges, ns apart:
/// the clock estimate's error shrinks with the number of exchanges times the
/// span they cover, so a burst of them (about a second) right after a start
/// gives a usable rate within the 2 s convergence budget. Adapters call
/// [`Receiver::poll_transmit`] at least this often (a timer on the data
/// loop), else requests simply go out at their call rate.
pub const FAST_INTERVAL_NS: u64 = 2_000_000;
/// Exchanges made at the fast interval after a (re)start.
pub const FAST_SAMPLES: usize = 500;
/// Time requests afterwards, ns apart (40 per second: 48-byte requests and
/// replies, ≈ 3 kB/s each way with IP and UDP headers).
pub const SLOW_INTERVAL_NS: u64 = 25_000_000;
/// Time requests on a busy network, ns apart (100 per second, ≈ 8 kB/s each
/// way): the estimate's error scales with queueing noise over the number of
/// exchanges, so more exchanges buy back the precision a quiet LAN gives.
pub const BUSY_INTERVAL_NS: u64 = 10_000_000;
/// Queueing noise width (ns) above which the network counts as busy.
pub const BUSY_JITTER_NS: f64 = 500_000.0;
/// Exchanges needed before playback starts (≈ 60 ms at the fast interval).
pub const MIN_CLOCK_SAMPLES: usize = 32;
/// An output play time this far (ns) from the output loop's prediction is
/// a discontinuity (an xrun of the output, a stream moved), not jitter: the
/// adapters' play times are smooth (PipeWire's driver clock, bark-pulse's
/// envelope), so the loop re-anchors rather than filtering it. Filtered, a
/// one-quantum step swung the feed-forward ratio by up to 0.3 % for about
/// a second, more than the drift controller's slew limit: ms-sized sync
/// excursions after every output xrun (seen in the lab under load).
pub const OUTPUT_STEP_NS: f64 = 1_000_000.0;
/// Exchanges after the fast start still made at the pace of a sender
/// without sync messages ([`SLOW_INTERVAL_NS`] or [`BUSY_INTERVAL_NS`]:
/// 5 or 2 s): the rate is still uncertain by ppm (tens on a busy network)
/// after the fast start, and more dense forward points settle it before the
/// sparse pace (simulation, p99 |error| without this phase / with it:
/// wired 8.2 / 6.0 µs, busy 62 / 45 µs, restart 13.1 / 8.2 µs). Like the
/// fast start, this happens once per join.
pub const SETTLE_SAMPLES: usize = 200;
/// Time requests after the fast start while the sender's sync messages
/// arrive, ns apart (2 per second). The sync messages give the backward
/// points and, being dense, the rate; exchanges then only have to place
/// the forward level, and the least-queued of the ~60 forward points in a
/// [`crate::clock::SPAN_NS`] window does that on a quiet LAN (wired
/// simulation: p99 |error| 6.0 µs at this pace, 7.6 µs at 1 per second,
/// 9.0 µs before sync messages at 40 per second).
pub const SYNC_SLOW_INTERVAL_NS: u64 = 500_000_000;
/// The same on a busy network (see [`BUSY_JITTER_NS`]), ns apart (50 per
/// second, half of [`BUSY_INTERVAL_NS`]'s; 48-byte requests and replies,
/// ≈ 4 kB/s each way, ≈ 6 kB/s keyed): the forward level's error is the queueing width
/// over the forward points in the window, and on a loaded host each
/// datagram's delay is blurred near its floor (see
/// [`crate::netmodel::NetModel::fuzz_ns`]), which takes many more points
/// to find. Simulator, mean over six seeds of the p99 |error| (busy) and
/// skew (wifi, three receivers, with and without the lab's host noise),
/// 10 per second against 50: busy 67.7 / 58.8 µs, wifi 52.2 / 39.1 µs,
/// wifi with 80 µs of host noise 103.6 / 89.0 µs.
pub const SYNC_BUSY_INTERVAL_NS: u64 = 20_000_000;
/// Sync messages count as flowing while the last one from the followed
/// session is at most this old, ns (1 s: a hundred intervals, so loss
/// bursts do not matter, and a sender that stops sending them, e.g. paused,
/// is noticed within a second).
pub const SYNC_STALE_NS: u64 = 1_000_000_000;
/// A packet whose pts is this far (ns) from the sender timeline's
/// prediction starts a new timeline (the sender paused or re-anchored).
const PTS_BREAK_NS: f64 = 1_000_000.0;
/// A followed session is live while a packet was accepted this recently,
/// ns; only then are its packets checked for plausibility.
const LIVE_NS: u64 = 2_000_000_000;
/// Gaps between an Opus session's newest packets seen before its pace is
/// trusted to say a packet is overdue ([`Receiver::watch_tail`]).
const PACE_GAPS: u32 = 16;
/// An Opus packet is overdue once this many times the longest recent gap
/// (plus [`FIRST_WAIT_NS`]) has passed without it: a sink's cycles scatter
/// by a few percent of a frame.
const PACE_SLACK: f64 = 1.25;
/// Per packet, the longest gap decays by this (to half in ~140 packets,
/// 1.4 s of 10 ms frames), so a sink that moved to shorter cycles is
/// followed.
const PACE_DECAY: f64 = 0.995;
/// A gap this long is a pause (the sink idled), not the pace, ns.
const PACE_MAX_GAP_NS: f64 = 100_000_000.0;
/// Largest distance of a live session's packet sequence number from the
/// highest seen: 4 minutes of packets at 273/s, far beyond any loss burst
/// a live session survives.
const SEQ_WINDOW: u64 = 1 << 16;
/// Why a datagram of a known session from another address than the one it
/// was first heard from is refused ([`crate::trust::SourcePin`]).
const FROM_ELSEWHERE: &str = "datagram of a known session from another address than its sender's";
/// Largest distance of a live session's packet frame from the newest, s of
/// frames at the stream rate (a live session pauses for less than
/// [`LIVE_NS`]).
const FRAME_WINDOW_S: u64 = 10;
/// Largest distance of a live session's `pts` from the timeline's
/// prediction for its frame, ns (a genuine sender stays on one line: see
/// docs/PROTOCOL.md, audio `frame`).
const PTS_WINDOW_NS: f64 = 1e9;
/// Output frames rendered per inner step; bounds the scratch buffers.
const CHUNK: usize = 4096;
/// What a receiver needs in hand beyond its downstream latency and one
/// output quantum, ns (6 ms): the sender's time from its cycle start to
/// the send (≤ 1 ms, measured), the network (≤ 1 ms on a wired LAN), the
/// interpolator's look-ahead ([`AFTER`] frames, 0.2 ms) and late wake-ups
/// of the two audio threads without real-time scheduling. Rounding the
/// session latency up to its 5 ms grid adds 0–5 ms more. With 12 ms,
/// bark-pulse receivers (a 20 ms write-ahead buffer) needed more than the
/// default 40 ms and raised every session for nothing: they play 40 ms
/// without a gap (docs/BENCHMARKS.md, "bark-pulse"). A receiver's need
/// ([`Receiver::need_ns`]) is the latency below which it would risk gaps.
pub const NEED_MARGIN_NS: u64 = 6_000_000;
/// A receiver's own need falls only after it stayed lower for this long,
/// ns (5 s): a graph whose quantum or latency flickers (a stream moved, a
/// node added) must not make the receiver jump back and forth.
pub const NEED_FALL_HOLD_NS: u64 = 5_000_000_000;

/// Shortest output quantum [`plan_quantum`] picks, frames at 48 kHz
/// (5.3 ms): below it a graph wakes so often that a loaded machine misses
/// deadlines (docs/BENCHMARKS.md, "Low latency").
pub const MIN_PLANNED_QUANTUM_48K: u32 = 256;

/// The output quantum a receiver should ask its graph for, frames at
/// `rate` Hz: `default` (the adapter's rule for its configured latency)
/// when a frame of the session still arrives in time with it — its need,
/// `downstream_ns` + one quantum + [`NEED_MARGIN_NS`], within
/// `latency_ns` —, else the largest power of two that fits, down to
/// [`MIN_PLANNED_QUANTUM_48K`] (scaled to `rate`); if none fits, `default`
/// (the session latency then rises for this receiver instead). So a
/// receiver behind a DSP of 20 ms keeps the default 40 ms session by
/// running 512-frame cycles, and one behind a Bluetooth speaker makes the
/// latency rise rather than waking every 5 ms. `latency_ns` 0 (not known
/// yet) gives `default`.
pub fn plan_quantum(latency_ns: u64, downstream_ns: u64, rate: u32, default: u32) -> u32 {
    let fits = |frames: u32| {
        let q = frames as u64 * 1_000_000_000 / rate.max(1) as u64;
        downstream_ns + q + NEED_MARGIN_NS <= latency_ns
    };
    if latency_ns == 0 || fits(default) {
        return default;
    }
    let min = (MIN_PLANNED_QUANTUM_48K as u64 * rate as u64 / 48_000).max(32) as u32;
    let mut q = default.next_power_of_two() / 2;
    while q >= min {
        if fits(q) {
            return q;
        }
        q /= 2;
    }
    default
}

/// Settings of a receiver.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Output rate, Hz (`audio.rate` of the playback stream).
    pub rate: u32,
    /// Output channels (`audio.channels`).
    pub channels: u8,
    /// Target latency override (`sess.latency.msec`), ns; `None` follows the
    /// sender's. At most [`MAX_LATENCY_NS`].
    pub latency_ns: Option<u64>,
    /// Extra per-receiver delay (`bark.delay.msec`), ns; may be negative
    /// (e.g. to compensate a slow DAC) but not below −latency.
    pub delay_ns: i64,
    /// Stream to follow (`bark.stream`); `None` follows the best one
    /// (see [`crate::select`]).
    pub stream: Option<String>,
    /// Random non-zero node id, stable for the receiver's lifetime.
    pub node_id: u64,
    /// `node.name`, reported in status packets.
    pub node_name: String,
    /// Host name, reported in status packets.
    pub host: String,
    /// Whether lost packets are asked for again (`bark.repair`; see
    /// [`crate::repair`]).
    pub repair: bool,
    /// Whether lost packets are rebuilt from the sender's FEC repair
    /// packets (`bark.fec` on the source; [`crate::fec`]). Off by
    /// default: the codec's global tables take 8 MiB.
    pub fec: bool,
    /// A sender to subscribe to for unicast delivery (`bark.sender`: its
    /// address and `bark.control.port`; see [`crate::subscribe`]), or
    /// `None` to listen on the group only.
    pub sender: Option<std::net::SocketAddr>,
    /// The least need this receiver reports, ns (`bark.latency.min-msec`,
    /// or 250 ms with `bark.profile = wifi`; see
    /// [`crate::settings::latency_floor_ns`]): the session latency rises
    /// to it on every receiver. 0: none. At most [`MAX_LATENCY_NS`].
    pub latency_floor_ns: u64,
    /// Output channel positions (`audio.position` of the playback
    /// stream), `channels` of them; `None`: the default layout for
    /// `channels` ([`crate::channels`]).
    pub layout: Option<Layout>,
    /// Which of the stream's channels it plays (`bark.channels`); a
    /// controller may change it ([`Receiver::set_settings`]).
    pub selection: Selection,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig {
            rate: crate::settings::DEFAULT_RATE,
            channels: crate::settings::DEFAULT_CHANNELS,
            latency_ns: None,
            delay_ns: 0,
            stream: None,
            node_id: 1,
            node_name: "bark_source".into(),
            host: String::new(),
            repair: true,
            fec: false,
            sender: None,
            latency_floor_ns: 0,
            layout: None,
            selection: Selection::All,
        }
    }
}

/// The sender's timeline: frame index → sender-clock time, from the `pts`
/// of recent packets. Anchors one second apart give the sender's true frame
/// period over up to 16 s.
#[derive(Clone, Debug)]
struct Timeline {
    nominal: f64,
    period: f64,
    anchors: [(u64, i64); 16],
    n: usize,
    head: usize,
    newest: Option<(u64, i64)>,
}

impl Timeline {
    fn new(nominal: f64) -> Self {
        Timeline {
            nominal,
            period: nominal,
            anchors: [(0, 0); 16],
            n: 0,
            head: 0,
            newest: None,
        }
    }

    fn update(&mut self, frame: u64, pts: i64) {
        if let Some((f, p)) = self.newest {
            if frame <= f {
                return;
            }
            let predicted = p as f64 + (frame - f) as f64 * self.period;
            if (pts as f64 - predicted).abs() > PTS_BREAK_NS {
                self.n = 0;
            }
        }
        self.newest = Some((frame, pts));
        let last_anchor = self.anchors[(self.head + 15) % 16].1;
        if self.n == 0 || pts - last_anchor >= 1_000_000_000 {
            self.anchors[self.head] = (frame, pts);
            self.head = (self.head + 1) % 16;
            self.n = (self.n + 1).min(16);
        }
        let (f0, p0) = self.anchors[(self.head + 16 - self.n) % 16];
        if pts - p0 >= 500_000_000 && frame > f0 {
            self.period = ((pts - p0) as f64 / (frame - f0) as f64)
                .clamp(self.nominal * 0.99, self.nominal * 1.01);
        }
    }

    /// Fractional frame index presented at sender time `s`.
    fn frame_at(&self, s: f64) -> Option<f64> {
        self.newest
            .map(|(f, p)| f as f64 + (s - p as f64) / self.period)
    }
}

/// State of the followed session.
#[derive(Clone, Debug)]
struct Session {
    id: u64,
    /// The stream format; `None` while the session is followed on its
    /// announcements alone (idle sender, no audio yet).
    format: Option<AudioFormat>,
    /// Session latency from the newest audio packet, ns (0: none yet).
    latency_ns: u64,
    /// Session latency from the newest announcement, ns (0: none): for
    /// planning the output before audio arrives, never for playing.
    announced_latency_ns: u64,
    timeline: Timeline,
    /// Sequence number and frame end (one past its last frame) of the
    /// audio packet with the highest sequence number, once one arrived.
    newest: Option<(u64, u64)>,
    /// Most frames seen in one packet (the sender's packet size).
    max_frames: u64,
    first_seq: u64,
    max_seq: u64,
    unique: u64,
    late: u64,
    /// The sender's last announcement said its sink is idle.
    sender_idle: bool,
    /// The order of its sync messages ([`crate::trust`]).
    syncs: SyncGate,
    /// Its sender marks the last packet of each sink buffer
    /// ([`protocol::AUDIO_LAST_OF_BUFFER`]).
    marks_buffers: bool,
    /// An Opus session's pace: when its newest packet came (local ns) and
    /// whether it was its buffer's last, the longest recent gap from a
    /// buffer's last packet to the next (ns, decaying), and how many gaps
    /// went into it ([`Receiver::watch_tail`]).
    pace: (Option<(u64, bool)>, f64, u32),
}

/// The receiver state machine.
pub struct Receiver {
    cfg: ReceiverConfig,
    /// What a controller set ([`Receiver::set_settings`]).
    remote: crate::command::Settings,
    /// The node's command port, reported with the settings (0: none).
    command_port: u16,
    /// Output gain applied here (`apply_volume`), else 1.
    gain: f32,
    /// The output's channel positions.
    out_layout: Layout,
    /// The channel mix in use and what it was built for: the stream's
    /// layout, its channel count and the selection.
    mix: (ChannelMask, u8, Selection, ChannelMix),
    selector: Selector,
    clock: ClockSync,
    jitter: JitterBuffer,
    kernel: Kernel,
    cutoff: f64,
    session: Option<Session>,
    out_dll: Dll,
    drift: DriftController,
    playing: bool,
    in_underrun: bool,
    /// Fractional sender frame heard at the next output frame.
    x: f64,
    ratio: f64,
    scratch: Vec<f32>,
    dist: Vec<u16>,
    next_request: u64,
    outstanding: [u64; 32],
    out_next: usize,
    counters: StatusCounters,
    lost_before: u64,
    last_error_ns: f64,
    last_heard: u64,
    last_sync: Option<u64>,
    requests: u64,
    /// Frames `[.0, .1)` skipped by the last backward resync: faded out and
    /// in around, not counted as concealed.
    mute: (u64, u64),
    /// Frames `[.0, .1)` of the session that nobody sent (the sender was
    /// idle, or the session had not begun): played as silence, not
    /// concealed as lost, and the onset after them is not faded in.
    silence: (u64, u64),
    /// Counters when the current underrun began: if the stream resumes
    /// with nothing lost, it was the sender pausing, and the underrun and
    /// its concealed frames are taken back.
    pause_undo: Option<(u64, u64)>,
    /// The output's downstream latency, ns, and one output quantum, ns,
    /// as the adapter last reported them.
    downstream_ns: u64,
    quantum_ns: u64,
    quantum_hint_ns: Option<u64>,
    /// The need in force ([`Receiver::need_ns`]) and since when a lower one
    /// was seen (for [`NEED_FALL_HOLD_NS`]).
    need_ns: u64,
    need_low_since: Option<u64>,
    status_due: bool,
    /// (need on the grid, session latency) last reported as late.
    late_reported: (u64, u64),
    /// The play latency of the last fill, ns.
    play_latency_ns: u64,
    /// One output quantum of audio rendered at the old position, for the
    /// crossfade after a jump.
    xfade: Vec<f32>,
    /// Missing packets and the NACKs for them.
    repair: NackScheduler,
    /// FEC rebuilds of the followed session ([`crate::fec`]); `None`:
    /// `bark.fec` off, repair packets ignored.
    fec: Option<FecDecoder>,
    /// Inside [`Receiver::take_rebuilt`]: the packet in hand was rebuilt.
    rebuilding: bool,
    /// NACKs sent in the current round: (when it began, how many).
    nack_round: (u64, usize),
    /// The newest packet (sequence number, arrival, local ns) when it is
    /// not the last of its sink buffer: unless more comes within
    /// [`crate::repair::nack::FIRST_WAIT_NS`], the next one was lost.
    tail_watch: Option<(u64, u64, u64)>,
    /// Decodes an Opus session's packets in sequence order and conceals
    /// the lost ones ([`crate::opus`]); idle for PCM sessions.
    opus: OpusDecoderStage,
}

impl Receiver {
    /// Creates a receiver; preallocates the ring (2.5 s at 192 kHz) and all
    /// scratch space.
    ///
    /// # Errors
    /// [`Error::Config`] for an output format, a latency or a delay outside
    /// its limits in [`crate::settings`], or a node id of 0.
    pub fn new(cfg: ReceiverConfig) -> Result<Self, Error> {
        AudioFormat {
            rate: cfg.rate,
            channels: cfg.channels,
            ..Default::default()
        }
        .validate()?;
        if let Some(l) = cfg.latency_ns {
            let latency = settings::find(settings::Role::Source, "sess.latency.msec");
            latency.validate(Value::ns_u64(l))?;
        }
        settings::find(settings::Role::Source, "bark.delay.msec")
            .validate(Value::Ns(cfg.delay_ns))?;
        if cfg.node_id == 0 {
            return Err(Error::Config("node id must not be 0".into()));
        }
        let out_layout = match cfg.layout {
            Some(l) if l.channels() != cfg.channels as usize => {
                return Err(Error::Config(format!(
                    "audio.position {l} names {} channels but audio.channels is {}",
                    l.channels(),
                    cfg.channels
                )))
            }
            Some(l) => l,
            None => Layout::default_for(cfg.channels)
                .ok_or_else(|| Error::Config("no default layout for audio.channels".into()))?,
        };
        let mix = {
            let m = ChannelMask::default_for(cfg.channels);
            (
                m,
                cfg.channels,
                cfg.selection,
                ChannelMix::new(m, cfg.channels, cfg.selection, &out_layout),
            )
        };
        let ch = cfg.channels as usize;
        let ring = (MAX_RATE as f64 * RING_SECONDS) as usize;
        // Input frames one chunk can read at the highest rate ratio.
        let max_ratio = (MAX_RATE as f64 / cfg.rate as f64) * 1.01;
        let scratch_frames = (CHUNK as f64 * max_ratio) as usize + TAPS + 2 * FADE_FRAMES + 8;
        Ok(Receiver {
            selector: Selector::new(cfg.stream.as_deref().map(protocol::stream_hash)),
            clock: ClockSync::new(),
            jitter: JitterBuffer::new(ring, ch),
            kernel: Kernel::new(1.0),
            cutoff: 1.0,
            session: None,
            out_dll: Dll::with_step(1e9 / cfg.rate as f64, OUTPUT_STEP_NS),
            drift: DriftController::new(),
            playing: false,
            in_underrun: false,
            x: 0.0,
            ratio: 1.0,
            scratch: vec![0.0; scratch_frames * ch],
            dist: vec![0; scratch_frames],
            next_request: 0,
            outstanding: [u64::MAX; 32],
            out_next: 0,
            counters: StatusCounters::default(),
            lost_before: 0,
            last_error_ns: 0.0,
            last_heard: 0,
            last_sync: None,
            requests: 0,
            silence: (0, 0),
            mute: (0, 0),
            pause_undo: None,
            downstream_ns: 0,
            quantum_ns: 0,
            quantum_hint_ns: None,
            need_ns: 0,
            need_low_since: None,
            status_due: false,
            late_reported: (0, 0),
            play_latency_ns: 0,
            xfade: vec![0.0; FADE_FRAMES * ch],
            repair: NackScheduler::new(cfg.node_id),
            fec: cfg.fec.then(FecDecoder::new),
            rebuilding: false,
            nack_round: (0, 0),
            tail_watch: None,
            opus: OpusDecoderStage::new()?,
            out_layout,
            mix,
            remote: crate::command::Settings {
                channels: cfg.selection,
                delay_ns: cfg.delay_ns,
                name: crate::command::Label::new(&cfg.node_name),
                stream: crate::command::Label::new(cfg.stream.as_deref().unwrap_or("")),
                ..Default::default()
            },
            command_port: 0,
            gain: 1.0,
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ReceiverConfig {
        &self.cfg
    }

    /// Whether audio is being played (not silence).
    pub fn playing(&self) -> bool {
        self.playing
    }

    /// Session id followed, if any.
    pub fn session(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// Format of the followed stream (once its audio was heard).
    pub fn format(&self) -> Option<AudioFormat> {
        self.session.as_ref().and_then(|s| s.format)
    }

    /// The sender clock estimator.
    pub fn clock(&self) -> &ClockSync {
        &self.clock
    }

    /// Read-position jumps so far (start-ups and resyncs).
    pub fn jumps(&self) -> u64 {
        self.drift.jumps()
    }

    /// The latest playback error, ns (late positive).
    pub fn sync_error_ns(&self) -> f64 {
        self.last_error_ns
    }

    /// What repair did so far (all sessions).
    pub fn repair(&self) -> &RepairCounts {
        self.repair.counts()
    }

    /// What the Opus decoder stage did since the receiver began: packets
    /// decoded, concealed, refused ([`crate::opus`]; all zero for PCM).
    pub fn opus(&self) -> crate::opus::OpusCounts {
        self.opus.counts()
    }

    /// What FEC rebuilt ([`crate::fec`]; all zero with `bark.fec` off).
    pub fn fec(&self) -> crate::fec::FecCounts {
        self.fec.as_ref().map(|f| *f.counts()).unwrap_or_default()
    }

    /// Seeds the nonces of repair's Hellos with 64 random bits (the
    /// endpoint does, from the OS; otherwise they derive from the node
    /// id, which status packets show).
    pub fn seed_repair(&mut self, seed: u64) {
        self.repair.seed_nonces(seed);
    }

    /// Whether repair can work: on (`bark.repair`) and a cookie from the
    /// followed sender held. An adapter then looks at its sockets often
    /// enough for a gap found in one cycle to be asked for within
    /// milliseconds.
    pub fn repair_armed(&self) -> bool {
        self.cfg.repair && self.repair.has_cookie()
    }

    /// Whether packets are missing that repair may still bring: an adapter
    /// then handles datagrams as they arrive rather than once a cycle, so
    /// that NACKs and resends lose no time.
    pub fn repair_pending(&self) -> bool {
        // Without a cookie (a sender before repair, or with it off) there
        // is nothing to wait for but the deadlines.
        (self.repair.pending() || self.tail_watch.is_some()) && self.repair.has_cookie()
    }

    /// Time requests sent so far (all sessions).
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// When the next time request is due, local ns (`u64::MAX` while no
    /// session is followed).
    pub fn next_request_ns(&self) -> u64 {
        if self.session.is_some() {
            let repair = if self.cfg.repair && self.selector.current_addr().is_some() {
                let tail = self.tail_watch.map_or(u64::MAX, |(_, _, due)| due);
                let mut due = self.repair.next_due_ns();
                if self.nack_round.1 >= MAX_NACKS_PER_POLL {
                    // This round's NACKs are spent: not before the next.
                    due = due.max(self.nack_round.0 + NACK_ROUND_NS);
                }
                due.min(tail)
            } else {
                u64::MAX
            };
            self.next_request.min(repair)
        } else {
            u64::MAX
        }
    }

    /// The followed sender's address (where its audio and announcements
    /// come from, and where time requests and status go), if any.
    pub fn sender_addr(&self) -> Option<SocketAddr> {
        self.selector.current_addr()
    }

    /// Whether the followed sender's sync messages are arriving (as of the
    /// last one heard, local ns `now_ns`): time requests then go out at the
    /// sparse pace.
    pub fn sync_flowing(&self, now_ns: u64) -> bool {
        self.last_sync
            .is_some_and(|t| now_ns.saturating_sub(t) <= SYNC_STALE_NS)
    }

    /// Handles a datagram received at local time `now_ns` (kernel receive
    /// timestamp when available) from `from`. Audio of other streams, status
    /// packets and requests are ignored. A sync message of the followed
    /// session (`now_ns` is its t4) adds a backward point to the clock
    /// estimate.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a malformed datagram; it is dropped and
    /// nothing buffered is touched.
    pub fn handle_packet(
        &mut self,
        now_ns: u64,
        data: &[u8],
        from: SocketAddr,
    ) -> Result<(), Error> {
        match protocol::parse(data)? {
            Packet::Audio(a) => {
                let h = a.header;
                if !self.plausible(now_ns, &h) {
                    return Err(Error::Malformed(
                        "audio sequence, frame or pts implausible for the live session",
                    ));
                }
                if h.format.sample == SampleFormat::Opus && !self.opus.valid(a.payload, h.frames) {
                    return Err(Error::Malformed(
                        "Opus packet invalid or not of the header's frame count",
                    ));
                }
                if let Some(s) = self.session.as_ref().filter(|s| s.id == h.stream_id) {
                    // A sender never changes its format within a session
                    // (`SenderConfig::format`): another one, while the
                    // session's own audio flows, is a corrupted or forged
                    // header, and taking it would drop everything
                    // buffered. Once nothing in the session's format has
                    // come for `LIVE_NS`, the first format was the wrong
                    // one (a forgery heard first): the new one is taken.
                    let live = now_ns.saturating_sub(self.last_heard) <= LIVE_NS;
                    if live && s.format.is_some_and(|f| f != h.format) {
                        return Err(Error::Malformed(
                            "audio format differs from the followed session's",
                        ));
                    }
                }
                if !self.selector.admit(now_ns, h.stream_id, from) {
                    return Err(Error::Malformed(FROM_ELSEWHERE));
                }
                match self.selector.offer(now_ns, &h, from) {
                    Choice::Ignore => return Ok(()),
                    Choice::Switch => self.start_session(now_ns, h.stream_id),
                    Choice::Follow => {}
                }
                if self
                    .session
                    .as_ref()
                    .is_some_and(|s| s.format != Some(h.format))
                {
                    self.set_format(h.format);
                }
                let screen = if h.format.sample == SampleFormat::Opus {
                    self.opus.screen(h.seq)
                } else {
                    Screen::Near
                };
                if screen == Screen::Far {
                    // One sequence number far from the stream's, not (yet)
                    // confirmed by a second: nothing of it is taken.
                    return Err(Error::Malformed(
                        "Opus sequence number far from the followed stream's",
                    ));
                }
                self.last_heard = now_ns;
                self.insert_audio(now_ns, &h, a.payload, a.resent, screen);
                // Resends too: one that becomes the newest and is not a
                // buffer's last leaves the rest of that buffer to watch.
                self.watch_tail(now_ns, h.seq, a.last_of_buffer, a.resent);
                if let Some(f) = self.fec.as_mut() {
                    f.source(now_ns, h.seq, data);
                    self.take_rebuilt(now_ns, from);
                }
            }
            Packet::Fec(f) => {
                if !self.selector.admit(now_ns, f.stream_id, from) {
                    return Err(Error::Malformed(FROM_ELSEWHERE));
                }
                let ours = self.session.as_ref().is_some_and(|s| s.id == f.stream_id);
                if let (true, Some(dec)) = (ours, self.fec.as_mut()) {
                    dec.repair(now_ns, &f);
                    self.take_rebuilt(now_ns, from);
                }
            }
            Packet::TimeReply(t) => self.handle_reply(now_ns, &t),
            Packet::Sync(y) => {
                if !self.selector.admit(now_ns, y.stream_id, from) {
                    return Err(Error::Malformed(FROM_ELSEWHERE));
                }
                // The order check comes before the announcement is taken,
                // so that a replayed sync keeps no session alive.
                let followed = self.session.as_mut().filter(|s| s.id == y.stream_id);
                if let Some(s) = followed {
                    if !s.syncs.admit(now_ns, y.seq) {
                        // A network duplicate, one overtaken by a later
                        // one, or a replay: not malformed, just not news.
                        return Ok(());
                    }
                }
                if let Some(a) = y.announce {
                    if self.selector.announce(now_ns, y.stream_id, &a, from) == Choice::Switch {
                        self.start_session(now_ns, y.stream_id);
                        if let Some(s) = self.session.as_mut() {
                            s.syncs.admit(now_ns, y.seq);
                        }
                    }
                }
                if let Some(s) = self.session.as_mut().filter(|s| s.id == y.stream_id) {
                    if let Some(a) = y.announce {
                        s.sender_idle = !a.streaming;
                        s.announced_latency_ns = a.latency_ms as u64 * 1_000_000;
                    }
                    self.last_sync = Some(now_ns);
                    self.clock.add_backward(y.t3, now_ns);
                }
            }
            Packet::Cookie(c) => {
                let ours = Some(c.stream_id) == self.session()
                    && c.node_id == self.cfg.node_id
                    && self.selector.current_addr() == Some(from);
                if ours {
                    self.repair.take_cookie(now_ns, c.nonce, c.cookie, c.offers);
                }
            }
            Packet::TimeRequest(_)
            | Packet::Status(_)
            | Packet::Nack(_)
            | Packet::Hello(_)
            | Packet::Subscribe(_)
            | Packet::Command(_)
            | Packet::CommandAck(_) => {}
        }
        Ok(())
    }

    /// Whether an audio packet of the followed session fits it while the
    /// session is live (a packet accepted within [`LIVE_NS`]): sequence
    /// within [`SEQ_WINDOW`] of the highest seen, frame within
    /// [`FRAME_WINDOW_S`] of the newest, and `pts` within
    /// [`PTS_WINDOW_NS`] of the timeline's prediction for its frame. A
    /// genuine sender never breaks these (seq counts packets, so loss moves
    /// it little; a pause moves frame and pts together, and a pause longer
    /// than `LIVE_NS` ends the live state); a forged or corrupted packet
    /// with the session's id would otherwise move the playback position
    /// anywhere and stop playback for good. Other sessions, and any packet
    /// after a silence, pass: the selector and the timeline handle them.
    fn plausible(&self, now_ns: u64, h: &protocol::AudioHeader) -> bool {
        let Some(s) = self.session.as_ref().filter(|s| s.id == h.stream_id) else {
            return true;
        };
        if now_ns.saturating_sub(self.last_heard) > LIVE_NS || s.unique == 0 {
            return true;
        }
        if h.seq.abs_diff(s.max_seq) > SEQ_WINDOW {
            return false;
        }
        let Some((f, p)) = s.timeline.newest else {
            return true;
        };
        if h.frame.abs_diff(f) > FRAME_WINDOW_S * h.format.rate as u64 {
            return false;
        }
        let predicted = p as f64 + (h.frame as f64 - f as f64) * s.timeline.period;
        (h.pts as f64 - predicted).abs() <= PTS_WINDOW_NS
    }

    fn handle_reply(&mut self, now_ns: u64, t: &TimePacket) {
        if Some(t.stream_id) != self.session() || t.node_id != self.cfg.node_id {
            return;
        }
        // Only replies to requests we sent, each once.
        let Some(slot) = self.outstanding.iter().position(|&o| o == t.t1) else {
            return;
        };
        self.outstanding[slot] = u64::MAX;
        self.clock.add(t.t1, t.t2, t.t3, now_ns);
    }

    /// Follows session `id` from now on: the clock, buffered audio and
    /// drift state of any previous session are dropped. Its format and
    /// latency come with its first audio packet.
    fn start_session(&mut self, now_ns: u64, id: u64) {
        self.lost_before = self.counters.lost;
        self.session = Some(Session {
            id,
            format: None,
            latency_ns: 0,
            announced_latency_ns: 0,
            timeline: Timeline::new(1e9 / self.cfg.rate as f64),
            newest: None,
            max_frames: 0,
            first_seq: 0,
            max_seq: 0,
            unique: 0,
            late: 0,
            sender_idle: false,
            syncs: SyncGate::default(),
            marks_buffers: false,
            pace: (None, 0.0, 0),
        });
        self.clock.reset();
        self.jitter.clear();
        self.drift.reset();
        self.playing = false;
        self.next_request = now_ns;
        self.last_sync = None;
        self.outstanding = [u64::MAX; 32];
        self.silence = (0, 0);
        self.mute = (0, 0);
        self.pause_undo = None;
        self.repair.reset(now_ns);
        if let Some(f) = self.fec.as_mut() {
            f.reset(id);
        }
        self.tail_watch = None;
        self.opus.reset(2);
    }

    /// The followed session's audio format is `format`, from its first
    /// audio packet (a session never changes it: `handle_packet` refuses
    /// audio of another format while the session's own flows). Taken
    /// again after a silence, buffered audio of the old format is dropped;
    /// the clock is kept (same sender).
    fn set_format(&mut self, format: AudioFormat) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.format.is_some() {
            self.jitter.clear();
            self.playing = false;
            s.newest = None;
        }
        s.format = Some(format);
        s.timeline = Timeline::new(format.frame_ns());
        self.opus.reset(format.channels);
        let r0 = format.rate as f64 / self.cfg.rate as f64;
        let cutoff = if (r0 - 1.0).abs() < 1e-3 {
            1.0
        } else {
            (1.0 / r0).min(1.0) * 0.92
        };
        if cutoff != self.cutoff {
            self.kernel.set_cutoff(cutoff);
            self.cutoff = cutoff;
        }
        self.ratio = r0;
    }

    /// Stores an audio packet of the followed session and keeps the
    /// session's bookkeeping: loss counts, the timeline, and the silent
    /// span before a run of audio (docs/PROTOCOL.md, "Idle senders").
    fn insert_audio(
        &mut self,
        now_ns: u64,
        h: &protocol::AudioHeader,
        payload: &[u8],
        resent: bool,
        screen: Screen,
    ) {
        self.note_gap(now_ns, h);
        let was_missing = if self.rebuilding {
            self.repair.rebuilt(h.seq)
        } else {
            self.repair.arrived(h.seq, now_ns, resent)
        };
        let keep_from = if self.playing {
            (self.x.floor() as i64 - (BEFORE + FADE_FRAMES) as i64).max(0) as u64
        } else {
            (h.frame + h.frames as u64).saturating_sub(self.jitter.capacity() / 2)
        };
        let Some(s) = self.session.as_mut() else {
            return;
        };
        if s.newest.is_none_or(|(seq, _)| h.seq >= seq) {
            // Not from a resend or a reordered packet: the latency in
            // force is the newest packet's.
            s.latency_ns = h.latency_us as u64 * 1000;
        }
        let layout = h.positions.or_default(h.format.channels);
        let want = (layout, h.format.channels, self.remote.channels);
        if (self.mix.0, self.mix.1, self.mix.2) != want {
            // A new stream layout or selection: a matrix of at most 8×8,
            // built here without allocation.
            let m = ChannelMix::new(layout, h.format.channels, want.2, &self.out_layout);
            self.mix = (want.0, want.1, want.2, m);
        }
        let end = h.frame + h.frames as u64;
        match s.newest {
            None => {
                // The first audio of the session (or of its format): what
                // lies before it was never sent to us.
                s.first_seq = h.seq;
                s.max_seq = h.seq;
                self.silence = (0, h.frame);
            }
            Some((seq, prev_end))
                if h.seq > seq
                    && h.frame - prev_end.min(h.frame)
                        > (h.seq - seq - 1).saturating_mul(s.max_frames) =>
            {
                // More frames skipped than the packets skipped could hold:
                // the sender sent nothing for a while (its sink idled, a
                // track changed). Silence, not loss; the onset after it
                // plays without a fade-in. The underrun that began at the
                // end of the previous run was the pause, not a fault
                // (packets lost at its edge count as lost).
                self.silence = (prev_end, h.frame);
                if let Some((underruns, concealed)) = self.pause_undo.take() {
                    self.counters.underruns = underruns;
                    self.counters.concealed_frames = concealed;
                }
            }
            Some((seq, _))
                if h.seq < seq && h.frame >= self.silence.0 && h.frame < self.silence.1 =>
            {
                // An earlier packet of the new run, overtaken in the
                // network by a later one: the run begins here.
                self.silence.1 = h.frame;
            }
            _ => {}
        }
        s.max_frames = s.max_frames.max(h.frames as u64);
        if s.newest.is_none_or(|(seq, _)| h.seq > seq) {
            s.newest = Some((h.seq, end));
        }
        let mut result = if h.format.sample == SampleFormat::Opus {
            let (r, concealed) = offer_opus(
                &mut self.opus,
                &mut self.jitter,
                &self.mix.3,
                (h, payload, screen),
                keep_from,
            );
            self.counters.concealed_frames += concealed;
            if r == Insert::TooFar {
                // The stream moved on: decoded from the new position on.
                self.playing = false;
                Insert::New
            } else {
                r
            }
        } else {
            self.jitter.insert(
                h.frame,
                h.frames as usize,
                payload,
                h.format.sample,
                &self.mix.3,
                keep_from,
            )
        };
        if result == Insert::TooFar {
            // The stream moved on (a long pause): restart playback from
            // wherever it is now.
            self.playing = false;
            result = self.jitter.insert(
                h.frame,
                h.frames as usize,
                payload,
                h.format.sample,
                &self.mix.3,
                h.frame,
            );
        }
        match result {
            Insert::New => {
                s.unique += 1;
                self.counters.packets += 1;
                if resent && was_missing {
                    self.counters.repaired += 1;
                }
            }
            Insert::Duplicate => self.counters.duplicated += 1,
            Insert::Late => {
                s.late += 1;
                self.counters.late += 1;
            }
            Insert::TooFar => {}
        }
        if result != Insert::Duplicate {
            s.max_seq = s.max_seq.max(h.seq);
            s.first_seq = s.first_seq.min(h.seq);
        }
        s.timeline.update(h.frame, h.pts);
        let expected = s.max_seq - s.first_seq + 1;
        // Late packets arrived, just too late: they are not lost. Nor are
        // those repair may still bring in time.
        let pending = self.repair.pending_count();
        self.counters.lost =
            self.lost_before + expected.saturating_sub(s.unique + s.late + pending);
    }

    /// A datagram to send now, written into `buf` (≥ [`protocol::TIME_LEN`]
    /// bytes), and its destination: the time request of the PTP-style
    /// exchange, to the followed sender's address. Call until `None` each
    /// cycle.
    pub fn poll_transmit(&mut self, now_ns: u64, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        if let Some(r) = self.poll_time_request(now_ns, buf) {
            return Some(r);
        }
        self.poll_repair(now_ns, buf)
    }

    /// A Hello or NACK to the followed sender, if one is due.
    fn poll_repair(&mut self, now_ns: u64, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        if !self.cfg.repair {
            return None;
        }
        let session = self.session()?;
        let addr = self.selector.current_addr()?;
        if let Some(e) = self.clock.estimate() {
            self.repair.seed_rtt(e.min_rtt);
        }
        if let Some(nonce) = self.repair.poll_hello(now_ns) {
            let hello = protocol::HelloPacket {
                stream_id: session,
                node_id: self.cfg.node_id,
                nonce,
            };
            return protocol::write_hello(buf, &hello).map(|n| (n, addr));
        }
        self.check_tail(now_ns);
        if now_ns.saturating_sub(self.nack_round.0) >= NACK_ROUND_NS {
            self.nack_round = (now_ns, 0);
        }
        if self.nack_round.1 >= MAX_NACKS_PER_POLL {
            return None;
        }
        let (cookie, base, mask) = self.repair.poll_nack(now_ns)?;
        self.nack_round.1 += 1;
        let nack = protocol::NackPacket {
            stream_id: session,
            node_id: self.cfg.node_id,
            cookie,
            base,
            mask,
        };
        protocol::write_nack(buf, &nack).map(|n| (n, addr))
    }

    /// After a packet of the followed session (not a resend) arrived at
    /// `now_ns`: watches for the rest of its sink buffer when it is the
    /// newest and not marked as the buffer's last; for an Opus session,
    /// whose packets a short sink cycle sends one at a time, also for the
    /// next one when the session's pace says it is overdue.
    fn watch_tail(&mut self, now_ns: u64, seq: u64, last: bool, resent: bool) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        s.marks_buffers |= last;
        if s.newest.is_some_and(|(newest, _)| newest == seq) {
            let opus = s.format.is_some_and(|f| f.sample == SampleFormat::Opus);
            if opus && !resent {
                // The pace between buffers: the gap after a buffer's last
                // packet to the next packet (a pause is not a gap).
                if let Some((t, true)) = s.pace.0 {
                    let gap = now_ns.saturating_sub(t) as f64;
                    if gap < PACE_MAX_GAP_NS {
                        s.pace.1 = gap.max(s.pace.1 * PACE_DECAY);
                        s.pace.2 = s.pace.2.saturating_add(1);
                    }
                }
                s.pace.0 = Some((now_ns, last));
            }
            self.tail_watch = if !last && s.marks_buffers {
                Some((seq, now_ns, now_ns + FIRST_WAIT_NS))
            } else if opus && last && s.pace.2 >= PACE_GAPS {
                // A sink cycle shorter than an Opus frame sends one packet
                // or none, each its buffer's last: a lost one would show
                // only when the next comes, a frame later. The stream's own
                // pace says sooner when the next one is overdue. (Waited
                // for from then, so that one merely late teaches repair no
                // reordering delay.)
                let due = now_ns + (s.pace.1 * PACE_SLACK) as u64 + FIRST_WAIT_NS;
                Some((seq, due, due))
            } else {
                None
            };
        }
    }

    /// A watched tail that nothing followed for
    /// [`crate::repair::nack::FIRST_WAIT_NS`]: the next packet, the rest of
    /// the buffer, is missing. Without this, a lost last packet of a
    /// buffer shows only when the next buffer comes (21 ms later with
    /// 1024-frame buffers at 48 kHz), too late at the default latency.
    fn check_tail(&mut self, now_ns: u64) {
        let Some((seq, at, due)) = self.tail_watch else {
            return;
        };
        if now_ns < due {
            return;
        }
        self.tail_watch = None;
        let Some((newest, end)) = self.session.as_ref().and_then(|s| s.newest) else {
            return;
        };
        if let (true, Some(next)) = (newest == seq, seq.checked_add(1)) {
            let deadline = self.read_deadline_ns(now_ns, end);
            self.repair.missing(next, at, deadline);
        }
    }

    /// Audio packets FEC rebuilt, through the audio path like resends
    /// (a rebuilt one is marked so, and is not kept as a shard again).
    /// Flat: a rebuilt packet's own pass does not drain again.
    fn take_rebuilt(&mut self, now_ns: u64, from: SocketAddr) {
        if self.rebuilding {
            return;
        }
        self.rebuilding = true;
        let mut d = [0u8; FEC_MAX_SHARD];
        while let Some(n) = self.fec.as_mut().and_then(|f| f.take_recovered(&mut d)) {
            // Checked like any audio; one refused is counted there.
            let _ = self.handle_packet(now_ns, &d[..n], from);
        }
        self.rebuilding = false;
    }

    /// Marks the packets between the newest one and `h` as missing, with
    /// the local time their frames are read by, for repair. `h` passed
    /// every check of `handle_packet` (a forged sequence number must not
    /// make the receiver ask for anything).
    fn note_gap(&mut self, now_ns: u64, h: &protocol::AudioHeader) {
        if !self.cfg.repair {
            return;
        }
        // While FEC flows, a lost packet's block may come back whole
        // once the next block begins (k + 1 packets at most): ask after
        // that.
        let fec = self.fec.as_ref();
        let active = fec.is_some_and(|f| f.active(now_ns));
        let hold = match (active, fec.and_then(FecDecoder::k), self.session.as_ref()) {
            (true, Some(k), Some(s)) => {
                let per_packet = s.max_frames.max(u64::from(h.frames)) * 1_000_000_000
                    / u64::from(h.format.rate);
                (k as u64 + 1) * per_packet + 2_000_000
            }
            _ => 0,
        };
        self.repair.set_hold_ns(hold);
        let Some(s) = self.session.as_ref() else {
            return;
        };
        let Some((hi, hi_end)) = s.newest else {
            return;
        };
        // Also before the cookie has come: once it does, whatever can
        // still arrive in time is asked for. Checked arithmetic: a
        // session's first packet may carry any sequence number.
        let Some(next) = hi.checked_add(1) else {
            return;
        };
        if h.seq <= next || s.max_frames == 0 {
            return;
        }
        let first = next.max(h.seq.saturating_sub(MAX_MISSING as u64));
        let max_frames = s.max_frames;
        for seq in first..h.seq {
            // Its first frame is no earlier than the packets below could
            // reach if all were full, nor than the packets above could
            // reach back (after a pause the frames jump while the
            // sequence numbers do not, and the packet after it is the
            // better guide).
            let from_below = hi_end.saturating_add((seq - next).saturating_mul(max_frames));
            let from_above = h
                .frame
                .saturating_sub((h.seq - seq).saturating_mul(max_frames));
            let deadline = self.read_deadline_ns(now_ns, from_below.max(from_above));
            self.repair.missing(seq, now_ns, deadline);
        }
    }

    /// Local time by which frame `frame` of the followed session must be
    /// buffered, ns: when it is heard (the inverse of
    /// [`Receiver::target`]'s mapping) less the downstream latency, one
    /// output quantum (its buffer is filled a quantum ahead), the frames
    /// the interpolator and a fade read ahead, and 1 ms for late
    /// wake-ups. Before the clock or the timeline is known: half the
    /// session latency from `now_ns`.
    fn read_deadline_ns(&self, now_ns: u64, frame: u64) -> u64 {
        let fallback = now_ns + self.session_latency_ns() / 2;
        let (Some(s), Some(e)) = (self.session.as_ref(), self.clock.estimate()) else {
            return fallback;
        };
        let Some((f, p)) = s.timeline.newest else {
            return fallback;
        };
        let latency = if self.play_latency_ns > 0 {
            self.play_latency_ns
        } else {
            self.session_latency(s)
        };
        let heard_sender = p as f64
            + (frame as f64 - f as f64) * s.timeline.period
            + latency as f64
            + self.delay_ns(latency) as f64;
        // to_sender(l) = l + offset + rate·(l − at), inverted.
        let heard = (heard_sender - e.offset + e.rate * e.at as f64) / (1.0 + e.rate);
        let ahead = (AFTER + FADE_FRAMES) as f64 * s.timeline.period;
        let read = heard
            - self.downstream_ns as f64
            - self.quantum_ns as f64
            - ahead
            - READ_MARGIN_NS as f64;
        // At most the largest latency ahead: a packet numbered far ahead
        // (a forgery from the sender's own address) must not keep the
        // repair table busy for minutes.
        let latest = now_ns.saturating_add(MAX_LATENCY_NS);
        if read.is_finite() && read > 0.0 {
            (read as u64).min(latest)
        } else {
            fallback
        }
    }

    /// The next time request, if due.
    fn poll_time_request(&mut self, now_ns: u64, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let session = self.session()?;
        if now_ns < self.next_request {
            return None;
        }
        let addr = self.selector.current_addr()?;
        let busy = self.clock.jitter_ns() > BUSY_JITTER_NS;
        let interval = if self.clock.exchanges() < FAST_SAMPLES as u64 {
            FAST_INTERVAL_NS
        } else if self.sync_flowing(now_ns)
            && self.clock.exchanges() >= (FAST_SAMPLES + SETTLE_SAMPLES) as u64
        {
            if busy {
                SYNC_BUSY_INTERVAL_NS
            } else {
                SYNC_SLOW_INTERVAL_NS
            }
        } else if busy {
            BUSY_INTERVAL_NS
        } else {
            SLOW_INTERVAL_NS
        };
        self.next_request = now_ns + interval;
        let len = protocol::write_time(
            buf,
            false,
            &TimePacket::request(session, self.cfg.node_id, now_ns),
        )?;
        self.outstanding[self.out_next] = now_ns;
        self.out_next = (self.out_next + 1) % self.outstanding.len();
        self.requests += 1;
        Some((len, addr))
    }

    /// Tells the receiver its output's downstream latency, ns: from the
    /// moment a frame leaves the receiver until it is heard, as the audio
    /// server reports it (PipeWire: `pw_time.delay` and queued data; the
    /// same figure the adapter adds into `fill`'s `play_ns`). With the
    /// output quantum (from `fill`) it gives the receiver's need
    /// ([`Receiver::need_ns`]). Adapters call it before each `fill`.
    pub fn set_downstream_ns(&mut self, ns: u64) {
        self.downstream_ns = ns;
    }

    /// The downstream latency last told by [`Receiver::set_downstream_ns`],
    /// ns.
    pub fn downstream_ns(&self) -> u64 {
        self.downstream_ns
    }

    /// The least session latency at which this receiver plays every frame
    /// in time, ns: its downstream latency, one output quantum and
    /// [`NEED_MARGIN_NS`], or its configured floor
    /// ([`ReceiverConfig::latency_floor_ns`]) if that is more (0 before
    /// the first `fill`). It rises at once and
    /// falls after [`NEED_FALL_HOLD_NS`]. Reported to the sender in status
    /// packets, so that the session latency covers it (see
    /// [`crate::latency`]).
    pub fn need_ns(&self) -> u64 {
        self.need_ns
    }

    /// The latency the receiver plays at, ns (as of the last `fill`): the
    /// session's (or this receiver's `sess.latency.msec`), raised to its
    /// own need, rounded up to [`crate::latency::GRID_NS`], when that is
    /// larger. It then plays late, out of sync with the other receivers,
    /// rather than a stream of gaps; [`Receiver::late`] says so.
    pub fn play_latency_ns(&self) -> u64 {
        self.play_latency_ns
    }

    /// Whether the receiver plays later than the session latency (its
    /// output needs more; see [`Receiver::play_latency_ns`]).
    pub fn late(&self) -> bool {
        self.session
            .as_ref()
            .is_some_and(|s| self.play_latency_ns > self.session_latency(s))
    }

    /// The session latency this receiver follows, ns: its own override or
    /// the sender's (from its audio; before any, from its announcements,
    /// for planning); 0 while unknown.
    pub fn session_latency_ns(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| self.session_latency(s))
    }

    fn session_latency(&self, s: &Session) -> u64 {
        let sender = if s.latency_ns > 0 {
            s.latency_ns
        } else {
            s.announced_latency_ns
        };
        self.cfg.latency_ns.unwrap_or(sender).min(MAX_LATENCY_NS)
    }

    /// Tells the receiver the output quantum its adapter just asked the
    /// graph for, ns, until the buffers it fills have that size (`None`):
    /// its need is then computed with it, so that a receiver switching to
    /// a shorter quantum (see [`plan_quantum`]) does not first report the
    /// need of the longer one, and make the session latency rise for
    /// nothing.
    pub fn set_quantum_hint_ns(&mut self, ns: Option<u64>) {
        self.quantum_hint_ns = ns;
    }

    /// Whether a status packet should go out now, ahead of the periodic
    /// one (true once after the need rose past the session latency: the
    /// receiver plays late until the sender has raised the latency, so the
    /// sender should hear of it at once; or after its settings changed).
    /// Adapters call it after `fill`.
    pub fn take_status_due(&mut self) -> bool {
        std::mem::take(&mut self.status_due)
    }

    fn update_need(&mut self, now_ns: u64, quantum_ns: u64) {
        let quantum_ns = self.quantum_hint_ns.unwrap_or(quantum_ns);
        self.quantum_ns = quantum_ns;
        let need = (self.downstream_ns + quantum_ns + NEED_MARGIN_NS)
            .max(self.cfg.latency_floor_ns.min(MAX_LATENCY_NS));
        // The sender must hear at once when this receiver needs more than
        // the session gives: when its need grows past it, and when it
        // learns the session's latency (a new session, a change) and its
        // need is already past it.
        let session = self.session.as_ref().map_or(0, |s| self.session_latency(s));
        let key = (crate::latency::round_up(need.max(self.need_ns)), session);
        if session > 0 && key.0 > session && key != self.late_reported {
            self.status_due = true;
            self.late_reported = key;
        }
        if need >= self.need_ns {
            self.need_ns = need;
            self.need_low_since = None;
        } else {
            match self.need_low_since {
                None => self.need_low_since = Some(now_ns),
                Some(t) if now_ns.saturating_sub(t) >= NEED_FALL_HOLD_NS => {
                    self.need_ns = need;
                    self.need_low_since = None;
                }
                Some(_) => {}
            }
        }
    }

    /// Real-time entry: fills `out` (interleaved, `channels` per frame; a
    /// trailing partial frame is zeroed) with the audio to be heard from
    /// local time `play_ns` on: the instant the first frame of `out` reaches
    /// the listener. Silence until a stream is followed and the clock is
    /// known. The first frame of a run of audio (after the sender was idle,
    /// or a new session) is heard exactly at its instant, from within the
    /// buffer that reaches it. Does not allocate.
    pub fn fill(&mut self, play_ns: u64, out: &mut [f32]) {
        self.fill_at(play_ns, out);
        if !self.remote.enabled {
            out.fill(0.0);
        } else if self.gain != 1.0 {
            for x in out.iter_mut() {
                *x *= self.gain;
            }
        }
    }

    /// The settings a controller gave ([`crate::command`]): the delay
    /// offset, the stream to follow, enabled, and the name, volume and
    /// mute that status packets report. `port` is the node's command
    /// port (status packets carry the settings only when it is not 0).
    /// `apply_volume`: the receiver scales its output by the volume and
    /// mute itself (`bark receive`; an audio server's adapter applies
    /// them through its own stream volume instead, and passes false). A
    /// change makes the status packet due at once. Does not allocate.
    pub fn set_settings(&mut self, s: &crate::command::Settings, port: u16, apply_volume: bool) {
        // As given (within ±2 s, checked by the command's parser and the
        // settings table); held to −latency where it is used.
        self.cfg.delay_ns = s
            .delay_ns
            .clamp(-crate::command::MAX_DELAY_NS, crate::command::MAX_DELAY_NS);
        if s.stream != self.remote.stream {
            let name = s.stream.as_str();
            self.selector
                .set_want((!name.is_empty()).then(|| protocol::stream_hash(name)));
        }
        if *s != self.remote {
            // Controllers and `bark stats` see the change now, not within
            // the second.
            self.status_due = true;
        }
        self.remote = *s;
        self.command_port = port;
        self.gain = if apply_volume {
            crate::command::Settings {
                enabled: true,
                ..*s
            }
            .gain()
        } else {
            1.0
        };
    }

    /// The delay offset at playback latency `latency_ns`: the one set, but
    /// never earlier than the frame's own sending (−latency).
    fn delay_ns(&self, latency_ns: u64) -> i64 {
        self.cfg
            .delay_ns
            .max(-(latency_ns.min(i64::MAX as u64) as i64))
    }

    /// The settings last given ([`Receiver::set_settings`]).
    pub fn settings(&self) -> &crate::command::Settings {
        &self.remote
    }

    fn fill_at(&mut self, play_ns: u64, out: &mut [f32]) {
        let ch = self.cfg.channels as usize;
        let frames = out.len() / ch;
        out[frames * ch..].fill(0.0);
        if frames == 0 {
            return;
        }
        // The smoothed time is not used for the target: PipeWire's timestamps
        // are already smooth, and the loop's phase lag while it learns would
        // show as sync error. Its period feeds the feed-forward ratio.
        self.out_dll.update(play_ns as i64, frames as u32);
        let dt_s = frames as f64 * self.out_dll.period() * 1e-9;
        self.update_need(play_ns, (frames as f64 * self.out_dll.period()) as u64);
        let Some(target) = self.target(play_ns as i64) else {
            self.playing = false;
            out.fill(0.0);
            return;
        };
        let Some(s) = self.session.as_ref() else {
            out.fill(0.0);
            return;
        };
        let period = s.timeline.period;
        let r0 =
            self.out_dll.period() * (1.0 + self.clock.estimate().map_or(0.0, |e| e.rate)) / period;
        if self.opus.waiting() {
            // An Opus packet is missing before others: conceal it now if
            // this buffer reads its frames (repair had until now).
            // (A jump of the drift controller may move to the target:
            // reach the further, keep from the nearer.)
            let (near, far_pos) = if self.playing {
                (self.x.min(target), self.x.max(target))
            } else {
                (target, target)
            };
            let reach = far_pos + frames as f64 * r0 * 1.01 + (AFTER + FADE_FRAMES) as f64;
            let keep_from = (near.floor() as i64 - (BEFORE + FADE_FRAMES) as i64).max(0) as u64;
            let (concealed, far) = drain_opus(
                &mut self.opus,
                &mut self.jitter,
                &self.mix.3,
                reach.max(0.0) as u64,
                keep_from,
            );
            self.counters.concealed_frames += concealed;
            if far {
                // The stream moved on: restart from where it is now.
                self.playing = false;
            }
        }
        let mut jumped_from = None;
        if !self.playing {
            let k = target.floor();
            // Joining a run already under way: from the target, as soon as
            // its frames are here. Or the run begins within this buffer:
            // from the target too, with the silence before the run's first
            // frame, so that frame is heard at its instant.
            let run = self.silence.1;
            let reach = target + frames as f64 * r0;
            let under_way =
                k >= BEFORE as f64 && self.jitter.has(k as u64) && self.jitter.has(k as u64 + 1);
            let onset = target < run as f64 && reach >= run as f64 && self.jitter.has(run);
            if !(under_way || onset) {
                out.fill(0.0);
                return;
            }
            self.playing = true;
            self.x = target;
            self.ratio = r0;
            self.drift.note_jump();
        } else {
            let err = (target - self.x) * period;
            self.last_error_ns = err;
            match self.drift.update(err, dt_s) {
                Action::Jump => {
                    jumped_from = Some(self.x);
                    if target < self.x {
                        // Back (the latency rose): what lies between was
                        // heard already. Pause over it rather than play it
                        // twice; the audio fades back in after it.
                        self.mute = (target.floor().max(0.0) as u64, self.x.ceil() as u64);
                    }
                    self.x = target;
                    self.ratio = r0;
                }
                Action::Slew(k) => self.ratio = r0 * (1.0 + k),
            }
        }
        let mut done = 0;
        while done < frames {
            let n = (frames - done).min(CHUNK);
            self.render(&mut out[done * ch..(done + n) * ch], true);
            done += n;
        }
        if let Some(old) = jumped_from {
            self.crossfade_from(old, out);
        }
        if let Some(end) = self.jitter.end() {
            self.counters.buffer_us = ((end as f64 - self.x).max(0.0) * period / 1000.0) as u32;
        }
    }

    /// After a jump: blends the first [`FADE_FRAMES`] of `out` from the
    /// audio at the old read position `old` (fading out) into the new
    /// (fading in), so that a resync is a short crossfade, not a click.
    fn crossfade_from(&mut self, old: f64, out: &mut [f32]) {
        let ch = self.cfg.channels as usize;
        let n = FADE_FRAMES.min(out.len() / ch);
        let (x, ratio) = (self.x, self.ratio);
        self.x = old;
        let mut xfade = std::mem::take(&mut self.xfade);
        self.render(&mut xfade[..n * ch], false);
        for i in 0..n {
            let g = (i + 1) as f32 / (n + 1) as f32;
            for c in 0..ch {
                let o = &mut out[i * ch + c];
                *o = xfade[i * ch + c] * (1.0 - g) + *o * g;
            }
        }
        self.xfade = xfade;
        self.x = x;
        self.ratio = ratio;
    }

    /// Target read position for output heard at smoothed local time `t`.
    fn target(&mut self, t: i64) -> Option<f64> {
        let s = self.session.as_ref()?;
        if self.clock.exchanges() < MIN_CLOCK_SAMPLES as u64 {
            return None;
        }
        if t > 0 && (t as u64).saturating_sub(self.last_heard) > QUIET_NS {
            return None;
        }
        let session = self.session_latency(s);
        let latency = if self.need_ns > session {
            crate::latency::round_up(self.need_ns).min(MAX_LATENCY_NS)
        } else {
            session
        };
        let e = self.clock.estimate()?;
        let sender_t = e.to_sender(t) - latency as f64 - self.delay_ns(latency) as f64;
        // A non-finite target (a broken estimate) must never reach the
        // read position: silence instead.
        let frame = s.timeline.frame_at(sender_t).filter(|f| f.is_finite());
        self.play_latency_ns = latency;
        frame
    }

    /// Renders one chunk at the current position and ratio, and advances.
    /// `count`: whether underruns and concealed frames are counted (not
    /// for the crossfade's second look at the old position).
    fn render(&mut self, out: &mut [f32], count: bool) {
        let ch = self.cfg.channels as usize;
        let n = out.len() / ch;
        let step = self.ratio;
        let first = self.x.floor() as i64 - BEFORE as i64;
        // One frame more than the last position reaches: the kernel steps in
        // 32.32 fixed point, whose rounding over a chunk can carry the last
        // position past an integer the float sum stays below.
        let last = (self.x + (n - 1) as f64 * step).floor() as i64 + AFTER as i64 + 1;
        let len = (last - first + 1) as usize;
        let fade = FADE_FRAMES as i64;
        let span = len + 2 * FADE_FRAMES;
        if span > self.dist.len() {
            // Cannot happen with CHUNK-sized calls and a clamped ratio;
            // stay silent rather than read out of bounds.
            out.fill(0.0);
            self.x += n as f64 * step;
            return;
        }
        let end = self.jitter.end().unwrap_or(0) as i64;
        if count {
            if last >= end {
                if !self.in_underrun {
                    self.pause_undo =
                        Some((self.counters.underruns, self.counters.concealed_frames));
                    self.counters.underruns += 1;
                    self.in_underrun = true;
                }
            } else {
                // Data came in time: that underrun was not a pause.
                self.in_underrun = false;
                self.pause_undo = None;
            }
        }
        // Each frame in [first − fade, last + fade] is present, silent (never
        // sent: before the session or between runs) or missing (lost, or
        // not yet received within what this chunk reads; also the span
        // skipped by a backward resync). Frames not yet received beyond
        // this chunk are simply still on their way.
        let lo = first - fade;
        let jitter = &self.jitter;
        let (s0, s1) = (self.silence.0 as i64, self.silence.1 as i64);
        let (m0, m1) = (self.mute.0 as i64, self.mute.1 as i64);
        let silent = |k: i64| k < 0 || (k >= s0 && k < s1 && (k >= end || !jitter.has(k as u64)));
        let missing = |k: i64| -> bool {
            if silent(k) {
                return false;
            }
            if k >= m0 && k < m1 {
                return true;
            }
            if k >= end {
                return k <= last;
            }
            !jitter.has(k as u64)
        };
        // Forward pass: distance (frames) since the last missing frame,
        // capped at `fade`; also whether any frame is not plainly present
        // (the common case is none).
        let cap = fade as u16;
        let mut d = cap;
        let mut any_special = false;
        for i in 0..span {
            let k = lo + i as i64;
            d = if missing(k) {
                any_special = true;
                0
            } else {
                (d + 1).min(cap)
            };
            any_special |= silent(k);
            self.dist[i] = d;
        }
        // The scratch holds one plane per channel, `len` frames each.
        if !any_special {
            for i in 0..len {
                let src = self.jitter.get_unchecked_tag((first + i as i64) as u64);
                for (c, v) in src.iter().enumerate() {
                    self.scratch[c * len + i] = *v;
                }
            }
        } else {
            // Backward pass: distance to the next missing frame.
            d = cap;
            for i in (0..span).rev() {
                d = if self.dist[i] == 0 {
                    0
                } else {
                    (d + 1).min(cap)
                };
                self.dist[i] = self.dist[i].min(d);
            }
            let consumed_to = (self.x + n as f64 * step).floor() as i64;
            let from = self.x.floor() as i64;
            for i in 0..len {
                let k = first + i as i64;
                let dist = self.dist[i + FADE_FRAMES];
                let src = if dist > 0 && k >= 0 {
                    self.jitter.get(k as u64)
                } else {
                    None
                };
                match src {
                    Some(src) => {
                        let g = dist as f32 / fade as f32;
                        for (c, v) in src.iter().enumerate() {
                            self.scratch[c * len + i] = v * g;
                        }
                    }
                    None => {
                        for c in 0..ch {
                            self.scratch[c * len + i] = 0.0;
                        }
                        let muted = k >= m0 && k < m1;
                        if count && dist == 0 && !muted && k >= from && k < consumed_to {
                            self.counters.concealed_frames += 1;
                        }
                    }
                }
            }
        }
        let planes = Planes {
            data: &self.scratch[..len * ch],
            plane: len,
            channels: ch,
        };
        self.kernel.render(planes, self.x - first as f64, step, out);
        self.x += n as f64 * step;
    }

    /// Counters for status packets and `bark stats`.
    pub fn counters(&self) -> StatusCounters {
        let mut c = self.counters;
        if let Some(s) = &self.session {
            if let Some(f) = s.format {
                c.sample = f.sample.code();
                c.channels = f.channels;
                c.rate = f.rate;
            }
            c.latency_us = (self.session_latency(s) / 1000) as u32;
        }
        if let Some(e) = self.clock.estimate() {
            c.clock_offset_ns = e.offset as i64;
            c.rate_error_ppb = (e.rate * 1e9) as i32;
        }
        c.sync_error_ns = self.last_error_ns.clamp(i32::MIN as f64, i32::MAX as f64) as i32;
        c.downstream_us = (self.downstream_ns / 1000).min(u32::MAX as u64) as u32;
        c.need_us = (self.need_ns / 1000).min(u32::MAX as u64) as u32;
        c.play_latency_us = (self.play_latency_ns / 1000).min(u32::MAX as u64) as u32;
        c
    }

    /// Writes this receiver's status packet into `buf`
    /// (≥ [`protocol::MAX_STATUS_LEN`] bytes); returns its length.
    pub fn write_status(&self, buf: &mut [u8]) -> Option<usize> {
        protocol::write_status(
            buf,
            &StatusPacket {
                stream_id: self.session().unwrap_or(0),
                node_id: self.cfg.node_id,
                role: Role::Receiver,
                flags: if self.playing { STATUS_ACTIVE } else { 0 }
                    | if self.late() { STATUS_LATE } else { 0 },
                counters: self.counters(),
                name: &self.cfg.node_name,
                host: &self.cfg.host,
                stream: self.remote.stream.as_str(),
                settings: crate::command::SettingsBlock::reported(
                    crate::command::RECEIVER_FIELDS,
                    &self.remote,
                    self.command_port,
                ),
            },
        )
    }
}

/// Offers an Opus packet (its header, payload, and where its sequence
/// number lies: [`OpusDecoderStage::screen`]) to the decoder stage and
/// stores in `jitter`
/// whatever PCM it then has ready in sequence order (holes are concealed
/// by the playback position, [`Receiver::fill`], or to make room in a full
/// ring). Returns what became of the packet, as [`JitterBuffer::insert`]
/// would say, and the frames concealed. `TooFar`: the stream moved on by
/// more than the ring holds (confirmed by a second packet); the stage
/// restarted from this packet. Does not allocate.
fn offer_opus(
    stage: &mut OpusDecoderStage,
    jitter: &mut JitterBuffer,
    mix: &ChannelMix,
    (h, payload, screen): (&protocol::AudioHeader, &[u8], Screen),
    keep_from: u64,
) -> (Insert, u64) {
    let offer = stage.offer_screened(screen, h.seq, h.frame, h.frames, payload);
    let (concealed, far) = drain_opus(stage, jitter, mix, 0, keep_from);
    let r = match offer {
        Offer::Restarted => Insert::TooFar,
        _ if far => Insert::TooFar,
        Offer::Stored => Insert::New,
        Offer::Duplicate => Insert::Duplicate,
        // Far from the stream and unconfirmed (a forgery moves nothing),
        // or behind what was decoded: not played.
        Offer::Late | Offer::TooFar => Insert::Late,
        // Checked before (`OpusDecoderStage::valid`).
        Offer::Invalid => Insert::Duplicate,
    };
    (r, concealed)
}

/// Stores every block of PCM the Opus stage has ready (concealing holes
/// whose frames start before `conceal_before`) in `jitter`. Returns the
/// frames concealed and whether a block lay beyond the ring (then stored
/// from its own position: the stream moved on). Does not allocate.
fn drain_opus(
    stage: &mut OpusDecoderStage,
    jitter: &mut JitterBuffer,
    mix: &ChannelMix,
    conceal_before: u64,
    keep_from: u64,
) -> (u64, bool) {
    let (mut concealed, mut far) = (0, false);
    while let Some(b) = stage.pop(conceal_before) {
        let pcm = Samples::F32(stage.pcm(&b));
        let mut r = jitter.insert_samples(b.frame, b.frames, pcm, mix, keep_from);
        if r == Insert::TooFar {
            far = true;
            r = jitter.insert_samples(b.frame, b.frames, pcm, mix, b.frame);
        }
        if b.concealed && r == Insert::New {
            concealed += b.frames as u64;
        }
    }
    (concealed, far)
}

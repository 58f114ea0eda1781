//! The sending side: stamps the sink's buffers on the sender clock and cuts
//! them into audio packets; multicasts sync messages (the sender half of the
//! clock sync, one per [`SenderConfig::sync_interval_ns`] whatever the
//! number of receivers); answers receivers' time requests.
//!
//! Presentation timestamps come from a [`Dll`] over the buffers' raw
//! timestamps, so they follow the sender's real audio clock (its true sample
//! rate, not a nominal 48000) with the scheduling jitter averaged away.

use crate::channels::{ChannelMask, Layout};
use crate::dll::Dll;
use crate::format::AudioFormat;
use crate::latency::SessionLatency;
use crate::opus::{OpusConfig, OpusFrameEncoder};
use crate::protocol::{
    self, Announce, AudioHeader, Packet, Role, StatusCounters, StatusPacket, SyncPacket, TimePacket,
};
use crate::settings::{self, Value};
use crate::Error;

/// Default target latency, ns (`sess.latency.msec` = 40): PipeWire's default
/// quantum (1024 frames, 21.3 ms at 48 kHz) on the receiver plus network
/// jitter, with margin.
pub const DEFAULT_LATENCY_NS: u64 = 40_000_000;
/// [`SenderConfig::input_step_ns`] for adapters whose buffer times are
/// smooth, so that any larger error is a discontinuity (a skipped cycle, a
/// pause), handled as a gap in the timeline rather than jitter to filter:
/// a filtered step would swing the timeline's period, and so every
/// presentation timestamp, for about a second
/// ([`crate::dll::Dll::with_step`]). PipeWire's driver clock is such a
/// source; 2 ms, ns.
pub const SMOOTH_INPUT_STEP_NS: f64 = 2_000_000.0;

/// Default spacing of sync messages, ns (10 ms: 100 per second, 32-byte
/// datagrams, ≈ 60 kbit/s on Ethernet, 4 % of a 48 kHz stereo s16 stream).
/// It is the rate at which every receiver gets backward points of its clock
/// estimate: the same density a receiver's own exchanges gave on a busy
/// network (`receiver::BUSY_INTERVAL_NS`), where the estimate's error scales
/// with queueing noise over the points per window. At most one goes out per
/// [`Sender::push`], so with quanta longer than this (PipeWire's default
/// 1024 frames, 21.3 ms) there is one per buffer.
pub const SYNC_INTERVAL_NS: u64 = 10_000_000;
/// Spacing of sync messages while the sink is idle, ns (100 ms: 10 per
/// second, 40-byte datagrams, ≈ 5.4 kbit/s on Ethernet with IP and UDP
/// headers). They keep every receiver's clock estimate (and its lock on
/// this session) alive through idle spans, so that the first frame after
/// one is played at its instant: a receiver that had to learn the clock
/// when audio starts needs [`crate::receiver::MIN_CLOCK_SAMPLES`] exchanges
/// first, which clipped the first 50–150 ms of every playback (the lab,
/// docs/BENCHMARKS.md, "Start of playback"). A tenth of the streaming
/// pace suffices: idle, only the forward level and the rate must be held,
/// and both change slowly.
pub const IDLE_SYNC_INTERVAL_NS: u64 = 100_000_000;
/// The sink counts as idle once no buffer arrived for this long, ns
/// (200 ms: above any graph quantum, 8192 frames at 44.1 kHz are 186 ms).
pub const IDLE_AFTER_NS: u64 = 200_000_000;
/// Digital silence (every sample exactly 0) that lasts this long stops the
/// audio packets until a non-zero sample comes, ns (250 ms): the sink is
/// then idle as far as the network is concerned. Players that keep a stream
/// open playing zeros (a paused browser tab, a game), and PipeWire 1.x,
/// which runs an idle sink whenever another node of its link group runs,
/// would otherwise send 3.3 Mbit/s of zeros for nothing. Receivers play
/// the frames not sent as silence, and the first one after them at its
/// instant; shorter silences inside music are sent as they are.
pub const SILENCE_HOLD_NS: u64 = 250_000_000;
/// What a receiver needs after a rebuilt packet is in hand, ns (30 ms),
/// for [`Sender::fec_advice`]: its output quantum, downstream latency and
/// margin ([`crate::receiver::NEED_MARGIN_NS`]), 17-28 ms for the
/// simulator's receivers (256-512-frame quanta, 5.8 ms downstream), with
/// room for a rebuild's own delay: their rebuilt Opus packets of a
/// 42.5 ms block came in time at 80 ms, not all at 70
/// (docs/BENCHMARKS.md, "Opus and FEC").
pub const FEC_RECEIVER_ROOM_NS: u64 = 30_000_000;

/// Default for [`SenderConfig::max_latency_ns`]: the session latency rises
/// to cover the slowest receiver's output up to 1 s (a Bluetooth speaker's
/// 150–250 ms with room to spare), ns.
pub const DEFAULT_MAX_LATENCY_NS: u64 = 1_000_000_000;

/// Settings of a sender.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Stream format; the sink's buffers arrive as interleaved `f32` of
    /// `format.channels` and are sent as `format.sample`.
    pub format: AudioFormat,
    /// Stream name (`bark.stream`).
    pub stream: String,
    /// Stream priority (`bark.priority`); higher wins on a shared group.
    pub priority: i8,
    /// Base target latency (`sess.latency.msec`), ns: receivers play each
    /// frame this long after it entered the sink, unless one of them needs
    /// more (see `max_latency_ns`).
    pub latency_ns: u64,
    /// The most the session latency may rise to, ns
    /// (`bark.latency.max-msec`), so that every receiver plays every frame
    /// in time whatever its output adds ([`crate::latency`]); equal to
    /// `latency_ns` pins the latency (a receiver that needs more then plays
    /// late and says so). Values below `latency_ns` count as `latency_ns`.
    pub max_latency_ns: u64,
    /// Path MTU (`net.mtu`), bytes; packets never exceed it.
    pub mtu: usize,
    /// Non-zero random session id, new at every start.
    pub session_id: u64,
    /// `node.name`, reported in status packets.
    pub node_name: String,
    /// Host name, reported in status packets.
    pub host: String,
    /// Least spacing of sync messages, ns ([`SYNC_INTERVAL_NS`]); 0 sends
    /// none (as senders before sync messages did: receivers then keep up
    /// their own exchanges at full pace).
    pub sync_interval_ns: u64,
    /// A buffer time this far (ns) from the timeline's prediction restarts
    /// it (a gap: the skipped span counts as frames nobody sent) instead of
    /// being filtered: [`SMOOTH_INPUT_STEP_NS`] for smooth time sources
    /// (the PipeWire sink), the default [`crate::dll::RESET_NS`] (20 ms)
    /// for sources that scatter by up to a quantum (bark-pulse on
    /// pipewire-pulse, whose timing reports come from the last graph
    /// cycle).
    pub input_step_ns: f64,
    /// Whether recent packets are kept and resent to receivers that ask
    /// (`bark.repair`; see [`crate::repair`]). Used by
    /// [`crate::endpoint::SenderEndpoint`].
    pub repair: bool,
    /// FEC blocks, `(k, m)`: `m` repair packets for every `k` audio
    /// packets (`bark.fec`; see [`crate::fec`]); `None`: off. Used by
    /// [`crate::endpoint::SenderEndpoint`].
    pub fec: Option<(u8, u8)>,
    /// The sink's channel positions in its channel order
    /// (`audio.position`); `None`: the default for the channel count, or
    /// positions a [`ChannelMask`] cannot name (AUX channels): packets
    /// then carry mask 0, "the default for the count". Packets carry the
    /// channels in mask-bit order ([`crate::channels`]), reordered here
    /// when the sink's order differs.
    pub layout: Option<Layout>,
    /// Encoder settings when `format.sample` is
    /// [`crate::SampleFormat::Opus`] (`bark.opus.bitrate`,
    /// `bark.opus.frame-msec`); ignored otherwise.
    pub opus: OpusConfig,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            format: AudioFormat::default(),
            stream: "default".into(),
            priority: 0,
            latency_ns: DEFAULT_LATENCY_NS,
            max_latency_ns: DEFAULT_MAX_LATENCY_NS,
            mtu: protocol::DEFAULT_MTU,
            session_id: 1,
            node_name: "bark_sink".into(),
            host: String::new(),
            sync_interval_ns: SYNC_INTERVAL_NS,
            input_step_ns: crate::dll::RESET_NS,
            repair: true,
            fec: None,
            layout: None,
            opus: OpusConfig::default(),
        }
    }
}

/// The sender state machine. Owns one preallocated packet buffer; nothing
/// in [`Sender::push`] allocates.
pub struct Sender {
    cfg: SenderConfig,
    name_hash: u32,
    packet_frames: usize,
    buf: Vec<u8>,
    dll: Dll,
    frame: u64,
    seq: u64,
    next_time: Option<f64>,
    packets: u64,
    sync_seq: u64,
    next_sync: u64,
    /// Sender-clock time of the last buffer sent (ns), if any.
    last_push: Option<u64>,
    /// Since when the buffers have been digital silence (ns), if they are.
    silent_since: Option<u64>,
    /// Digital silence has lasted [`SILENCE_HOLD_NS`]: nothing is sent.
    suppressing: bool,
    latency: SessionLatency,
    /// What a controller set ([`Sender::set_settings`]).
    remote: crate::command::Settings,
    /// The node's command port, reported with the settings (0: none).
    command_port: u16,
    /// The layout packets carry.
    positions: ChannelMask,
    /// Sink channel of each wire channel, when they differ; with
    /// `reordered`, a packet's samples in wire order.
    order: Option<[u8; crate::format::MAX_CHANNELS as usize]>,
    reordered: Vec<f32>,
    /// The Opus encoder of an Opus stream (taken out while it encodes).
    opus: Option<OpusFrameEncoder>,
}

impl Sender {
    /// The settings a controller gave ([`crate::command`]): the stream
    /// name and priority its audio and syncs carry from the next packet
    /// on (receivers that follow by name move with it), and the name its
    /// status reports. `port`: the node's command port (status packets
    /// carry the settings when it is not 0). An empty stream name is
    /// ignored (a sender always has one). Does not allocate.
    pub fn set_settings(&mut self, s: &crate::command::Settings, port: u16) {
        self.remote = *s;
        if s.stream.is_empty() {
            self.remote.stream = crate::command::Label::new(&self.cfg.stream);
        }
        self.name_hash = protocol::stream_hash(self.remote.stream.as_str());
        self.cfg.priority = s.priority;
        self.command_port = port;
    }

    /// The settings last given, or those of the configuration.
    pub fn settings(&self) -> &crate::command::Settings {
        &self.remote
    }

    /// Creates a sender.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad format, a zero session id, an MTU that
    /// cannot carry one frame, or a latency (base or maximum) outside its
    /// limits in [`crate::settings`] (2 s: what a receiver can hold).
    pub fn new(cfg: SenderConfig) -> Result<Self, Error> {
        cfg.format.validate()?;
        if cfg.session_id == 0 {
            return Err(Error::Config("session id must not be 0".into()));
        }
        let min_mtu =
            protocol::IP_UDP_OVERHEAD + protocol::AUDIO_HEADER_LEN + cfg.format.frame_bytes();
        if cfg.mtu < min_mtu || cfg.mtu > settings::MAX_MTU {
            return Err(Error::Config(format!(
                "net.mtu = {}: must be within {min_mtu}..={} bytes for this format",
                cfg.mtu,
                settings::MAX_MTU
            )));
        }
        for (key, ns) in [
            ("sess.latency.msec", cfg.latency_ns),
            ("bark.latency.max-msec", cfg.max_latency_ns),
        ] {
            settings::find(settings::Role::Sink, key).validate(Value::ns_u64(ns))?;
        }
        let opus = if cfg.format.sample == crate::SampleFormat::Opus {
            Some(OpusFrameEncoder::new(
                cfg.format.channels,
                &cfg.opus,
                opus_room(cfg.mtu),
            )?)
        } else {
            None
        };
        let packet_frames = match &opus {
            Some(e) => e.frames(),
            None => protocol::frames_for_mtu(cfg.mtu, &cfg.format),
        };
        let buf = vec![0u8; max_datagram(&cfg.format, packet_frames, cfg.mtu)];
        let ch = cfg.format.channels as usize;
        let (positions, order) = match cfg.layout {
            Some(l) if l.channels() != ch => {
                return Err(Error::Config(format!(
                    "audio.position {l} names {} channels but audio.channels is {ch}",
                    l.channels()
                )))
            }
            Some(l) => {
                let order = l.wire_order();
                let same = (0..ch).all(|k| order[k] as usize == k);
                (l.mask(), (!same).then_some(order))
            }
            None => (ChannelMask::default(), None),
        };
        let reordered = if order.is_some() {
            vec![0.0; packet_frames * ch]
        } else {
            Vec::new()
        };
        let latency = SessionLatency::new(cfg.latency_ns, cfg.max_latency_ns);
        let remote = crate::command::Settings {
            name: crate::command::Label::new(&cfg.node_name),
            stream: crate::command::Label::new(&cfg.stream),
            priority: cfg.priority,
            ..Default::default()
        };
        Ok(Sender {
            remote,
            command_port: 0,
            name_hash: protocol::stream_hash(&cfg.stream),
            dll: Dll::with_step(cfg.format.frame_ns(), cfg.input_step_ns),
            packet_frames,
            buf,
            cfg,
            frame: 0,
            seq: 0,
            next_time: None,
            packets: 0,
            sync_seq: 0,
            next_sync: 0,
            last_push: None,
            silent_since: None,
            suppressing: false,
            latency,
            positions,
            order,
            reordered,
            opus,
        })
    }

    /// Longest audio datagram this sender sends, bytes (before any
    /// authentication trailer).
    pub fn max_datagram(&self) -> usize {
        max_datagram(&self.cfg.format, self.packet_frames, self.cfg.mtu)
    }

    /// The session latency now, ns: the base latency, raised to cover the
    /// receivers' reported needs ([`crate::latency::SessionLatency`]).
    /// Carried in every audio packet.
    pub fn latency_ns(&self) -> u64 {
        self.latency.current()
    }

    /// The session-latency controller.
    pub fn session_latency(&self) -> &SessionLatency {
        &self.latency
    }

    /// Whether the sink is idle at sender time `now_ns`: no buffer for
    /// [`IDLE_AFTER_NS`], or only digital silence for [`SILENCE_HOLD_NS`].
    pub fn idle(&self, now_ns: u64) -> bool {
        self.suppressing
            || self
                .last_push
                .is_none_or(|t| now_ns.saturating_sub(t) >= IDLE_AFTER_NS)
    }

    /// Timer entry, while the sink may be idle: sends a sync message
    /// (announcing the session as idle) through `send` when one is due at
    /// the idle pace, [`IDLE_SYNC_INTERVAL_NS`], and expires stale latency
    /// reports. `now_ns` is the sender clock read right before sending.
    /// Call at least every [`IDLE_SYNC_INTERVAL_NS`] (the adapters' data
    /// timer does); while buffers flow it sends nothing, as
    /// [`Sender::push_at`] sends the syncs. Does not allocate.
    pub fn poll_idle(&mut self, now_ns: u64, send: &mut dyn FnMut(&[u8])) {
        self.latency.update(now_ns);
        if !self.idle(now_ns) || self.cfg.sync_interval_ns == 0 {
            return;
        }
        if now_ns.saturating_add(IDLE_SYNC_INTERVAL_NS) < self.next_sync {
            self.next_sync = now_ns;
        }
        if now_ns >= self.next_sync {
            self.next_sync = now_ns.saturating_add(IDLE_SYNC_INTERVAL_NS);
            self.send_sync(now_ns, false, send);
        }
    }

    fn send_sync(&mut self, t3: u64, streaming: bool, send: &mut dyn FnMut(&[u8])) {
        let sync = SyncPacket {
            stream_id: self.cfg.session_id,
            seq: self.sync_seq,
            t3,
            announce: Some(Announce {
                name_hash: self.name_hash,
                priority: self.cfg.priority,
                streaming,
                latency_ms: (self.latency.current() / 1_000_000).min(u16::MAX as u64) as u16,
            }),
        };
        let mut out = [0u8; protocol::SYNC_LEN];
        if let Some(len) = protocol::write_sync(&mut out, &sync) {
            send(&out[..len]);
            self.sync_seq += 1;
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Whether FEC can rebuild this Opus stream's packets in time at its
    /// base latency (`sess.latency.msec`): `None` if so (or if it is not
    /// Opus with FEC), else a warning naming the latency it needs and the
    /// Opus frame that would fit, for the front end to log once at start.
    /// A block of `k` Opus packets is whole, and its lost packet rebuilt,
    /// up to `k` frames and the encoder's lookahead after the first
    /// packet's pts (42.5 ms for 4:1 of 10 ms frames); receivers need
    /// [`FEC_RECEIVER_ROOM_NS`] after that, and the need is rounded up to
    /// 10 ms (docs/BENCHMARKS.md, "Opus and FEC"). PCM is left alone: its
    /// packets are 3.7 ms and leave in bursts per sink cycle, so a block's
    /// time depends on the quantum (BENCHMARKS "FEC"; the drop-in advises
    /// 80 ms for 8:2). Allocates (a message): not for the data thread.
    pub fn fec_advice(&self) -> Option<String> {
        let (enc, (k, m)) = (self.opus.as_ref()?, self.cfg.fec?);
        let rate = u64::from(self.cfg.format.rate.max(1));
        let ms = |frames: u64| frames as f64 * 1000.0 / rate as f64;
        let ready = |frames: u64| {
            (u64::from(k) * frames + u64::from(enc.lookahead())) * 1_000_000_000 / rate
        };
        let need =
            |frames: u64| (ready(frames) + FEC_RECEIVER_ROOM_NS).div_ceil(10_000_000) * 10_000_000;
        let frames = enc.frames() as u64;
        let latency = self.cfg.latency_ns;
        if latency >= need(frames) {
            return None;
        }
        let shorter = crate::opus::OPUS_FRAME_SIZES
            .iter()
            .map(|&f| u64::from(f))
            .filter(|&f| f < frames && need(f) <= latency)
            .max()
            .map(|f| format!(", or bark.opus.frame-msec = {}", ms(f)))
            .unwrap_or_default();
        Some(format!(
            "bark.fec = {k}:{m} with audio.format = OPUS ({} ms frames): a rebuilt packet is ready {:.1} ms after its pts, too late for sess.latency.msec = {}; use {} or more{shorter}",
            ms(frames),
            ready(frames) as f64 / 1e6,
            latency / 1_000_000,
            need(frames) / 1_000_000,
        ))
    }

    /// Frames per audio packet: as many as the configured MTU carries, or
    /// an Opus stream's frame ([`OpusConfig::frames`]).
    pub fn packet_frames(&self) -> usize {
        self.packet_frames
    }

    /// Real-time entry: one buffer of the sink. `now_ns` is the sender-clock
    /// time at which its first frame entered the sink (PipeWire: the cycle's
    /// `now`); `samples` holds whole interleaved frames (a trailing partial
    /// frame is ignored). `send` is called once per datagram, to go to the
    /// group: a sync message first when one is due (stamped `now_ns`, so
    /// use [`Sender::push_at`] when `now_ns` is not the current time), then
    /// the audio packets. Does not allocate.
    pub fn push(&mut self, now_ns: u64, samples: &[f32], send: &mut dyn FnMut(&[u8])) {
        self.push_at(now_ns, now_ns, samples, send)
    }

    /// [`Sender::push`] with the sync message's t3 given apart: `send_ns` is
    /// the sender clock read right before this call's first send (ns). The
    /// buffer's `now_ns` is when its audio entered the sink, which may be
    /// milliseconds before (a graph cycle's start, an estimated play time);
    /// t3 must be when the datagram leaves, because any lag between the
    /// two adds to the backward delay every receiver measures and so shifts
    /// every receiver's clock by half of it. Empty `samples` send only the
    /// sync message, if due.
    pub fn push_at(
        &mut self,
        now_ns: u64,
        send_ns: u64,
        samples: &[f32],
        send: &mut dyn FnMut(&[u8]),
    ) {
        let interval = self.cfg.sync_interval_ns;
        if send_ns.saturating_add(interval.max(IDLE_SYNC_INTERVAL_NS)) < self.next_sync {
            // The clock went back (a restarted adapter clock): sync
            // messages must not stop for as long as it went back.
            self.next_sync = send_ns;
        }
        if !samples.is_empty() {
            // Exact zeros only: dither or a quiet passage is audio.
            if samples.iter().any(|&v| v != 0.0) {
                self.silent_since = None;
            } else {
                self.silent_since.get_or_insert(now_ns);
            }
            let was_idle = self.idle(now_ns);
            self.suppressing = self
                .silent_since
                .is_some_and(|t| now_ns.saturating_sub(t) >= SILENCE_HOLD_NS);
            if !self.suppressing {
                // Once buffers flow, syncs go at the streaming pace at once
                // (the idle pace may have scheduled the next one 100 ms out).
                if was_idle {
                    self.next_sync = self.next_sync.min(send_ns);
                }
                self.last_push = Some(now_ns);
            }
        }
        self.latency.update(now_ns);
        if interval > 0 && send_ns >= self.next_sync && !self.suppressing {
            self.next_sync = send_ns.saturating_add(interval);
            self.send_sync(send_ns, true, send);
        }
        let ch = self.cfg.format.channels as usize;
        let frames = samples.len() / ch;
        if frames == 0 {
            return;
        }
        let u = self.dll.update(now_ns as i64, frames as u32);
        if u.reset {
            if let Some(expected) = self.next_time {
                // After a pause, keep frame index and time on one line: the
                // skipped span counts as frames nobody sent.
                let gap = (now_ns as f64 - expected) / self.dll.period();
                if gap > 0.0 {
                    self.frame += gap.round() as u64;
                }
            }
        }
        let period = self.dll.period();
        self.next_time = Some(u.time as f64 + frames as f64 * period);
        if self.suppressing {
            // The timeline runs on; the frames are counted, not sent.
            // (An Opus encoder restarts where its input resumes.)
            self.frame += frames as u64;
            return;
        }
        if self.opus.is_some() {
            self.push_opus(u.time, period, &samples[..frames * ch], send);
            return;
        }
        let base = self.audio_base();
        let mut done = 0;
        while done < frames {
            let n = (frames - done).min(self.packet_frames);
            let h = AudioHeader {
                seq: self.seq,
                frame: self.frame,
                pts: u.time + (done as f64 * period).round() as i64,
                frames: n as u16,
                ..base
            };
            let chunk = wire_order(
                self.order.as_ref(),
                &mut self.reordered,
                &samples[done * ch..(done + n) * ch],
                ch,
            );
            if let Some(len) = protocol::write_audio(&mut self.buf, &h, chunk) {
                if done + n == frames {
                    self.buf[55] |= protocol::AUDIO_LAST_OF_BUFFER;
                }
                send(&self.buf[..len]);
                self.packets += 1;
            }
            self.seq += 1;
            self.frame += n as u64;
            done += n;
        }
    }

    /// What every audio packet of this buffer shares (session, format,
    /// name, priority, latency, layout); sequence number, frame index, pts
    /// and length are the packet's own (left 0 here).
    fn audio_base(&self) -> AudioHeader {
        AudioHeader {
            positions: self.positions,
            stream_id: self.cfg.session_id,
            seq: 0,
            frame: 0,
            pts: 0,
            format: self.cfg.format,
            latency_us: (self.latency.current() / 1000) as u32,
            name_hash: self.name_hash,
            priority: self.cfg.priority,
            frames: 0,
        }
    }

    /// [`Sender::push_at`] for an Opus stream: the buffer's frames into the
    /// encoder, a packet for every Opus frame they complete, stamped with
    /// the frame index and pts of its first decoded frame (the input's,
    /// less the encoder's lookahead in time: [`crate::opus`]). `t0`: pts
    /// of the buffer's first frame, ns.
    fn push_opus(&mut self, t0: i64, period: f64, samples: &[f32], send: &mut dyn FnMut(&[u8])) {
        let Some(mut enc) = self.opus.take() else {
            return;
        };
        let ch = self.cfg.format.channels as usize;
        let frames = samples.len() / ch;
        let shift = enc.lookahead() as f64 * period;
        // The packets this buffer completes; the last is marked as the
        // buffer's last (repair watches for a lost tail by it).
        let pending = if enc.continues(self.frame) {
            enc.pending()
        } else {
            0
        };
        let mut left = (pending + frames) / enc.frames();
        let base = self.audio_base();
        let mut done = 0;
        while done < frames {
            let n = (frames - done).min(self.packet_frames);
            let chunk = wire_order(
                self.order.as_ref(),
                &mut self.reordered,
                &samples[done * ch..(done + n) * ch],
                ch,
            );
            let first = self.frame + done as u64;
            let pts = t0 as f64 + done as f64 * period;
            let mut emit = |e: &OpusFrameEncoder, x: crate::opus::Encoded| {
                left = left.saturating_sub(1);
                let h = AudioHeader {
                    seq: self.seq,
                    frame: x.frame,
                    pts: (x.pts - shift).round() as i64,
                    frames: e.frames() as u16,
                    ..base
                };
                if let Some(len) = protocol::write_audio_payload(&mut self.buf, &h, e.packet(&x)) {
                    if left == 0 {
                        self.buf[55] |= protocol::AUDIO_LAST_OF_BUFFER;
                    }
                    send(&self.buf[..len]);
                    self.packets += 1;
                }
                self.seq += 1;
            };
            enc.push(first, pts, period, chunk, &mut emit);
            done += n;
        }
        self.frame += frames as u64;
        self.opus = Some(enc);
    }

    /// Handles a datagram that arrived for the sender. A time request
    /// addressed to this session gets a reply written into `reply`
    /// (≥ [`protocol::TIME_LEN`] bytes); the length is returned, to be sent
    /// back to the requester's address. `t2_ns` is when the request arrived
    /// (kernel timestamp when available), `t3_ns` the time right before the
    /// reply is sent. A receiver's status packet for this session reports
    /// the latency it needs ([`SessionLatency::report`]). Anything else is
    /// ignored (`Ok(None)`).
    ///
    /// # Errors
    /// [`Error::Malformed`] for a malformed datagram.
    pub fn handle_packet(
        &mut self,
        t2_ns: u64,
        t3_ns: u64,
        data: &[u8],
        reply: &mut [u8],
    ) -> Result<Option<usize>, Error> {
        match protocol::parse(data)? {
            Packet::TimeRequest(t) if t.stream_id == self.cfg.session_id => {
                Ok(protocol::write_time(
                    reply,
                    true,
                    &TimePacket {
                        t2: t2_ns,
                        t3: t3_ns.max(t2_ns),
                        ..t
                    },
                ))
            }
            Packet::Status(st)
                if st.role == Role::Receiver && st.stream_id == self.cfg.session_id =>
            {
                self.latency
                    .report(t2_ns, st.node_id, st.counters.need_us as u64 * 1000);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Writes this sender's status packet into `buf`
    /// (≥ [`protocol::MAX_STATUS_LEN`] bytes), with `repaired` packets
    /// resent so far; returns its length.
    pub fn write_status(&self, node_id: u64, repaired: u64, buf: &mut [u8]) -> Option<usize> {
        let f = &self.cfg.format;
        protocol::write_status(
            buf,
            &StatusPacket {
                stream_id: self.cfg.session_id,
                node_id,
                role: Role::Sender,
                flags: u8::from(self.last_push.is_some() && !self.suppressing),
                counters: StatusCounters {
                    sample: f.sample.code(),
                    channels: f.channels,
                    rate: f.rate,
                    latency_us: (self.latency.current() / 1000) as u32,
                    need_us: (self.cfg.latency_ns / 1000) as u32,
                    play_latency_us: (self.latency.max() / 1000) as u32,
                    rate_error_ppb: ((f.frame_ns() / self.dll.period() - 1.0) * 1e9) as i32,
                    packets: self.packets,
                    repaired,
                    ..Default::default()
                },
                name: &self.cfg.node_name,
                host: &self.cfg.host,
                stream: self.remote.stream.as_str(),
                settings: crate::command::SettingsBlock::reported(
                    crate::command::SENDER_FIELDS,
                    &self.remote,
                    self.command_port,
                ),
            },
        )
    }
}

/// `chunk` (whole frames of `ch` samples) in wire order: as it is, or
/// reordered into `buf` by `order` (the sink channel of each wire
/// channel). Does not allocate.
fn wire_order<'a>(
    order: Option<&[u8; crate::format::MAX_CHANNELS as usize]>,
    buf: &'a mut [f32],
    chunk: &'a [f32],
    ch: usize,
) -> &'a [f32] {
    let Some(order) = order else {
        return chunk;
    };
    let out = &mut buf[..chunk.len()];
    for (dst, src) in out.chunks_exact_mut(ch).zip(chunk.chunks_exact(ch)) {
        for (d, &k) in dst.iter_mut().zip(order.iter()) {
            *d = src[k as usize];
        }
    }
    out
}

/// Longest audio datagram for `format` with `packet_frames` per packet at
/// path MTU `mtu`, bytes: header and PCM payload, or header and the
/// longest Opus packet the MTU leaves room for.
fn max_datagram(format: &AudioFormat, packet_frames: usize, mtu: usize) -> usize {
    protocol::AUDIO_HEADER_LEN
        + if format.sample == crate::SampleFormat::Opus {
            opus_room(mtu)
        } else {
            packet_frames * format.frame_bytes()
        }
}

/// Longest Opus packet at path MTU `mtu`, bytes.
fn opus_room(mtu: usize) -> usize {
    mtu.saturating_sub(protocol::IP_UDP_OVERHEAD + protocol::AUDIO_HEADER_LEN)
        .clamp(1, crate::opus::MAX_OPUS_PACKET)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::parse;

    #[test]
    fn splits_buffers_by_mtu_and_numbers_frames() {
        let mut s = Sender::new(SenderConfig::default()).unwrap();
        let per = s.packet_frames();
        let samples = vec![0.25f32; 1024 * 2];
        let mut got = Vec::new();
        s.push(1_000_000, &samples, &mut |d| got.push(d.to_vec()));
        s.push(1_000_000 + 21_333_333, &samples, &mut |d| {
            got.push(d.to_vec())
        });
        // Each buffer: one sync message (21 ms apart), then its audio.
        assert!(matches!(parse(&got[0]), Ok(Packet::Sync(_))));
        got.retain(|d| !matches!(parse(d), Ok(Packet::Sync(_))));
        let headers: Vec<_> = got
            .iter()
            .map(|d| match parse(d).unwrap() {
                Packet::Audio(a) => a.header,
                _ => panic!(),
            })
            .collect();
        assert_eq!(headers.len(), 2 * 1024usize.div_ceil(per));
        let mut next_frame = 0;
        for (i, h) in headers.iter().enumerate() {
            assert_eq!(h.seq, i as u64);
            assert_eq!(h.frame, next_frame);
            next_frame += h.frames as u64;
            assert!(got[i].len() + protocol::IP_UDP_OVERHEAD <= 1500);
        }
        assert_eq!(next_frame, 2048);
        // Second buffer's first packet is stamped at its time.
        let second = headers.iter().find(|h| h.frame == 1024).unwrap();
        assert_eq!(second.pts, 1_000_000 + 21_333_333);
    }

    #[test]
    fn sync_goes_first_at_most_once_per_interval() {
        let mut s = Sender::new(SenderConfig::default()).unwrap();
        // Audio, not digital silence (which is not sent after 250 ms).
        let samples = vec![0.1f32; 256 * 2];
        let mut syncs = Vec::new();
        let mut first_kinds = Vec::new();
        // 256-frame buffers (5.3 ms) for one second, sent 40 µs after
        // their stamp.
        for i in 0..188u64 {
            let now = 1_000_000_000 + i * 5_333_333;
            let mut first = true;
            s.push_at(now, now + 40_000, &samples, &mut |d| {
                let p = parse(d).unwrap();
                if first {
                    first_kinds.push(matches!(p, Packet::Sync(_)));
                    first = false;
                }
                if let Packet::Sync(y) = p {
                    syncs.push(y);
                }
            });
        }
        // One per 10 ms at most: every second buffer here.
        assert_eq!(syncs.len(), 94);
        assert_eq!(first_kinds.iter().filter(|&&k| k).count(), 94);
        for (k, y) in syncs.iter().enumerate() {
            assert_eq!((y.seq, y.stream_id), (k as u64, 1));
            assert_eq!(y.t3, 1_000_000_000 + 2 * k as u64 * 5_333_333 + 40_000);
        }
        // A clock that went back does not silence them.
        let mut n = 0;
        s.push(5_000_000, &samples, &mut |d| {
            n += usize::from(matches!(parse(d), Ok(Packet::Sync(_))))
        });
        assert_eq!(n, 1);
        // Disabled: none.
        let mut s = Sender::new(SenderConfig {
            sync_interval_ns: 0,
            ..Default::default()
        })
        .unwrap();
        s.push(1_000, &samples, &mut |d| {
            assert!(matches!(parse(d), Ok(Packet::Audio(_))))
        });
    }

    #[test]
    fn pause_advances_frame_index_with_time() {
        let mut s = Sender::new(SenderConfig::default()).unwrap();
        let samples = vec![0.1f32; 480 * 2];
        let mut last = None;
        s.push(0, &samples, &mut |_| {});
        // One second later (a paused sink), frames continue on the same line.
        s.push(1_000_000_000, &samples, &mut |d| {
            if let Ok(Packet::Audio(a)) = parse(d) {
                last.get_or_insert(a.header);
            }
        });
        let h = last.unwrap();
        assert_eq!(h.frame, 48_000);
        assert_eq!(h.pts, 1_000_000_000);
    }

    #[test]
    fn answers_only_its_own_time_requests() {
        let cfg = SenderConfig {
            session_id: 42,
            ..Default::default()
        };
        let mut s = Sender::new(cfg).unwrap();
        let mut req = [0u8; protocol::TIME_LEN];
        let t = TimePacket::request(42, 9, 100);
        protocol::write_time(&mut req, false, &t).unwrap();
        let mut reply = [0u8; 64];
        let n = s
            .handle_packet(200, 210, &req, &mut reply)
            .unwrap()
            .unwrap();
        match parse(&reply[..n]).unwrap() {
            Packet::TimeReply(r) => assert_eq!((r.t1, r.t2, r.t3, r.node_id), (100, 200, 210, 9)),
            _ => panic!(),
        }
        let other = TimePacket { stream_id: 43, ..t };
        protocol::write_time(&mut req, false, &other).unwrap();
        assert_eq!(s.handle_packet(200, 210, &req, &mut reply).unwrap(), None);
        assert!(s.handle_packet(200, 210, b"junk", &mut reply).is_err());
    }

    #[test]
    fn rejects_bad_config() {
        for cfg in [
            SenderConfig {
                session_id: 0,
                ..Default::default()
            },
            SenderConfig {
                mtu: 50,
                ..Default::default()
            },
            SenderConfig {
                format: AudioFormat {
                    rate: 1,
                    ..Default::default()
                },
                ..Default::default()
            },
        ] {
            assert!(Sender::new(cfg).is_err());
        }
    }
}

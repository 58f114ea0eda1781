//! Opus streams (`audio.format = OPUS`): the sender's encoder, which cuts
//! the sink's frames into fixed Opus frames, and the receiver's decoder
//! stage, which decodes packets in sequence order and conceals the ones
//! that never came with the decoder's own packet-loss concealment.
//!
//! Timing through the codec. An encoder fed frames `[n, n + N)` returns a
//! packet whose decoded frames are the input's `[n − L, n + N − L)`, `L`
//! being the encoder's lookahead (`OPUS_GET_LOOKAHEAD`: 120 frames, 2.5 ms,
//! with `OPUS_APPLICATION_RESTRICTED_LOWDELAY` at 48 kHz; libopus 1.3.1
//! `opus_encoder.c`, and RFC 7845 §4.2 on pre-skip). A packet therefore
//! carries the frame index `n` of its first decoded frame and the
//! presentation timestamp of input frame `n − L`: pts(n) − L / rate. The
//! session's timeline (frame index ↔ pts) stays linear, and each decoded
//! frame plays at the instant the same audio would as PCM
//! (docs/PROTOCOL.md, "Opus").
//!
//! Loss. Opus in CELT mode (every frame under 10 ms, and
//! `RESTRICTED_LOWDELAY`) has no in-band FEC, so a missing packet is
//! repaired by Bark's own NACK and FEC ([`crate::repair`], [`crate::fec`])
//! if it can be, and otherwise concealed by the decoder (a NULL packet of
//! the missing duration, `opus_decode_float`, RFC 6716 §4.4). For repair
//! to be of use the decoder must wait for it: a packet after a hole is
//! held until the hole is filled or until playback is about to need the
//! hole's frames ([`OpusDecoderStage::pop`]); only then is it concealed.
//!
//! Opus runs at 48 kHz with 1 or 2 channels here (one Opus stream; more
//! channels would need the multistream API).

use crate::format::MAX_CHANNELS;
use crate::Error;
use opusic_c::{Application, Bitrate, Channels, Decoder, Encoder, SampleRate};

/// The only rate Opus streams run at, Hz (Opus is 48 kHz internally;
/// RFC 6716 §2).
pub const OPUS_RATE: u32 = 48_000;
/// Most channels an Opus stream carries here (one Opus stream, RFC 6716
/// §3.1: mono or stereo).
pub const OPUS_MAX_CHANNELS: u8 = 2;
/// Largest Opus packet of one frame, bytes (RFC 6716 §3.2.1: 1275).
pub const MAX_OPUS_PACKET: usize = 1275;
/// Opus frame sizes at 48 kHz, frames: 2.5, 5, 10 and 20 ms (RFC 6716
/// §2.1.4; the CELT-only sizes).
pub const OPUS_FRAME_SIZES: [u16; 4] = [120, 240, 480, 960];
/// Default bitrate, kbit/s (`bark.opus.bitrate`): 160 kbit/s stereo is
/// near-transparent for music with CELT, and with 10 ms frames (100
/// packets/s of 88 header bytes) the stream is 1/13 of F32's on the wire
/// (docs/BENCHMARKS.md, "Opus").
pub const DEFAULT_OPUS_KBPS: u32 = 160;
/// Default frame, frames (`bark.opus.frame-msec` = 10): 2.5 ms of
/// lookahead plus up to 10 ms of accumulation is what Opus adds before a
/// frame can leave, inside the default 40 ms session latency; shorter
/// frames cost more header bytes per second (docs/BENCHMARKS.md, "Opus").
pub const DEFAULT_OPUS_FRAMES: u16 = 480;
/// Packets the decoder stage holds, waiting for a hole before them to be
/// repaired: 2.56 s of 2.5 ms frames, more than the largest session
/// latency (2 s). 1.3 MB of packet bytes per receiver.
pub const STAGE_SLOTS: usize = 1024;
/// A packet confirms a far one ([`Offer::TooFar`]) when its sequence
/// number is at most this many after it.
pub const OPUS_CONFIRM_SEQS: u64 = 8;

/// An Opus stream's encoder settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpusConfig {
    /// Target bitrate, kbit/s, 6..=510 (`bark.opus.bitrate`).
    pub bitrate_kbps: u32,
    /// Frames per Opus frame (and per packet), one of
    /// [`OPUS_FRAME_SIZES`] (`bark.opus.frame-msec`).
    pub frames: u16,
}

impl Default for OpusConfig {
    fn default() -> Self {
        OpusConfig {
            bitrate_kbps: DEFAULT_OPUS_KBPS,
            frames: DEFAULT_OPUS_FRAMES,
        }
    }
}

impl OpusConfig {
    /// The settings `bark.opus.bitrate` = `bitrate_kbps` and
    /// `bark.opus.frame-msec` = `frame_msec` (text as the table checked it;
    /// anything else is the default frame).
    pub fn new(bitrate_kbps: u32, frame_msec: &str) -> Self {
        OpusConfig {
            bitrate_kbps,
            frames: frame_msec
                .trim()
                .parse()
                .ok()
                .and_then(Self::frames_for_ms)
                .unwrap_or(DEFAULT_OPUS_FRAMES),
        }
    }

    /// Frames per Opus frame for a `bark.opus.frame-msec` of `ms`
    /// (2.5, 5, 10 or 20), if it is one.
    pub fn frames_for_ms(ms: f64) -> Option<u16> {
        OPUS_FRAME_SIZES
            .into_iter()
            .find(|&f| (f as f64 * 1000.0 / OPUS_RATE as f64 - ms).abs() < 1e-6)
    }
}

fn channels(n: u8) -> Result<Channels, Error> {
    match n {
        1 => Ok(Channels::Mono),
        2 => Ok(Channels::Stereo),
        _ => Err(Error::Config(format!(
            "audio.format = OPUS carries 1 or 2 channels, not {n}"
        ))),
    }
}

fn opus_error(what: &str, e: opusic_c::ErrorCode) -> Error {
    Error::Config(format!("libopus: {what}: {e:?}"))
}

/// The sender's encoder: collects the sink's frames into Opus frames of
/// [`OpusConfig::frames`] and encodes each as it fills. Allocates at
/// creation only.
pub struct OpusFrameEncoder {
    enc: Encoder,
    channels: usize,
    frames: usize,
    lookahead: u32,
    /// Interleaved input of the frame being filled.
    acc: Vec<f32>,
    /// Frames in `acc`.
    fill: usize,
    /// Frame index and pts (ns) of `acc`'s first frame.
    first: (u64, f64),
    /// The frame index that continues what was pushed last, if anything
    /// was: input that does not start there follows frames nobody sent.
    expected: Option<u64>,
    out: Vec<u8>,
}

/// One encoded Opus frame: its first input frame's index and pts, and the
/// packet bytes ([`OpusFrameEncoder::packet`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Encoded {
    /// Frame index of the first input frame.
    pub frame: u64,
    /// Presentation timestamp of that input frame, sender clock, ns.
    pub pts: f64,
    /// Packet length, bytes.
    pub len: usize,
}

impl OpusFrameEncoder {
    /// An encoder for `channels` (1 or 2) at 48 kHz with `cfg`, whose
    /// packets never exceed `max_packet` bytes (the room an MTU leaves;
    /// at most [`MAX_OPUS_PACKET`]). `RESTRICTED_LOWDELAY`: CELT only, the
    /// least lookahead (2.5 ms), music at any bitrate.
    ///
    /// # Errors
    /// [`Error::Config`] for a channel count, bitrate or frame size Opus
    /// does not take, or if libopus refuses.
    pub fn new(channels_n: u8, cfg: &OpusConfig, max_packet: usize) -> Result<Self, Error> {
        let ch = channels(channels_n)?;
        if !OPUS_FRAME_SIZES.contains(&cfg.frames) {
            return Err(Error::Config(format!(
                "bark.opus.frame-msec: {} frames is not an Opus frame (2.5, 5, 10 or 20 ms)",
                cfg.frames
            )));
        }
        if !(6..=510).contains(&cfg.bitrate_kbps) {
            return Err(Error::Config(format!(
                "bark.opus.bitrate = {}: must be within 6..=510 kbit/s",
                cfg.bitrate_kbps
            )));
        }
        let mut enc = Encoder::new(ch, SampleRate::Hz48000, Application::LowDelay)
            .map_err(|e| opus_error("encoder", e))?;
        enc.set_bitrate(Bitrate::Value(cfg.bitrate_kbps * 1000))
            .map_err(|e| opus_error("bitrate", e))?;
        let lookahead = enc
            .get_look_ahead()
            .map_err(|e| opus_error("lookahead", e))?;
        let frames = cfg.frames as usize;
        Ok(OpusFrameEncoder {
            enc,
            channels: channels_n as usize,
            frames,
            lookahead,
            acc: vec![0.0; frames * channels_n as usize],
            fill: 0,
            first: (0, 0.0),
            expected: None,
            out: vec![0; max_packet.clamp(1, MAX_OPUS_PACKET)],
        })
    }

    /// The encoder's lookahead, frames (`OPUS_GET_LOOKAHEAD`).
    pub fn lookahead(&self) -> u32 {
        self.lookahead
    }

    /// Frames per Opus frame.
    pub fn frames(&self) -> usize {
        self.frames
    }

    /// Frames waiting in the frame being filled.
    pub fn pending(&self) -> usize {
        self.fill
    }

    /// Whether input starting at frame index `frame` continues what was
    /// pushed last (else [`OpusFrameEncoder::push`] drops the partly filled
    /// frame and restarts).
    pub fn continues(&self, frame: u64) -> bool {
        self.expected.is_none_or(|e| e == frame)
    }

    /// The last packet encoded ([`Encoded::len`] bytes of it).
    pub fn packet(&self, e: &Encoded) -> &[u8] {
        &self.out[..e.len.min(self.out.len())]
    }

    /// Adds interleaved `samples` (whole frames; the first is frame
    /// `frame`, at `pts` ns, one frame every `period` ns), calling `done`
    /// for every Opus frame they complete. Input that does not continue
    /// the last (frames nobody sent lie between: a pause of the sink, or
    /// digital silence not sent) drops a partly filled frame and restarts
    /// the encoder, whose next packet then starts with its lookahead of
    /// silence, which is what came before; a receiver restarts its decoder
    /// at the same packets, which are the ones whose frame index does not
    /// follow the packet before ([`OpusDecoderStage::pop`]), so the two
    /// stay in step. (The last partly filled frame before such a break is
    /// not sent: an Opus frame leaves only when full.) Does not allocate.
    pub fn push(
        &mut self,
        frame: u64,
        pts: f64,
        period: f64,
        samples: &[f32],
        done: &mut dyn FnMut(&Self, Encoded),
    ) {
        let ch = self.channels;
        let total = samples.len() / ch;
        if total == 0 {
            return;
        }
        if !self.continues(frame) {
            self.fill = 0;
            // OPUS_RESET_STATE cannot fail on a valid encoder.
            let _ = self.enc.reset();
        }
        self.expected = Some(frame.wrapping_add(total as u64));
        let mut i = 0;
        while i < total {
            if self.fill == 0 {
                self.first = (frame.wrapping_add(i as u64), pts + i as f64 * period);
            }
            let n = (self.frames - self.fill).min(total - i);
            self.acc[self.fill * ch..(self.fill + n) * ch]
                .copy_from_slice(&samples[i * ch..(i + n) * ch]);
            self.fill += n;
            i += n;
            if self.fill == self.frames {
                self.fill = 0;
                if let Ok(len) = self.enc.encode_float_to_slice(&self.acc, &mut self.out) {
                    let e = Encoded {
                        frame: self.first.0,
                        pts: self.first.1,
                        len,
                    };
                    done(self, e);
                }
            }
        }
    }
}

/// What [`OpusDecoderStage::offer`] did with a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Stored, to be decoded in sequence order.
    Stored,
    /// Already stored.
    Duplicate,
    /// Its sequence number was decoded or concealed already.
    Late,
    /// [`STAGE_SLOTS`] or more away from the next one to decode, ahead or
    /// behind, and nothing confirms it yet: dropped. A genuine stream that
    /// moved that far (a long loss, a sender that went back) sends another
    /// packet near it, which confirms it: see [`Offer::Restarted`]. One
    /// forged or corrupted sequence number therefore moves nothing.
    TooFar,
    /// Confirmed a stream that moved by [`STAGE_SLOTS`] or more (the
    /// packet before was [`Offer::TooFar`] and this one is just after
    /// it): the stage restarted from this packet, which is stored.
    Restarted,
    /// Not a valid Opus packet for the frames the header says: dropped
    /// (its frames are concealed when they are due).
    Invalid,
}

/// Where a packet's sequence number lies for the stage
/// ([`OpusDecoderStage::screen`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Screen {
    /// Near the next one to decode: taken as usual.
    Near,
    /// Far, and nothing confirms it: dropped, nothing else touched.
    Far,
    /// Far, just after a far one: the stream moved; the stage restarts.
    Restart,
}

/// A block of decoded frames ([`OpusDecoderStage::pop`]), whose samples are
/// [`OpusDecoderStage::pcm`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Frame index of the first frame.
    pub frame: u64,
    /// Frames.
    pub frames: usize,
    /// Concealed (the packet never came, or did not decode), not decoded.
    pub concealed: bool,
}

/// Counts of an Opus decoder stage since its creation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpusCounts {
    /// Packets decoded.
    pub decoded: u64,
    /// Packets concealed by the decoder's packet-loss concealment.
    pub concealed: u64,
    /// Packets dropped as invalid (wrong length, or a TOC that disagrees
    /// with the header's frame count, or refused by the decoder).
    pub invalid: u64,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    used: bool,
    seq: u64,
    frame: u64,
    frames: u16,
    len: u16,
    /// Decoded already: the slot is kept (until the ring laps it) only so
    /// that another copy of the packet (a second resend) counts as a
    /// duplicate, not as late.
    done: bool,
}

const EMPTY: Slot = Slot {
    used: false,
    seq: 0,
    frame: 0,
    frames: 0,
    len: 0,
    done: false,
};

/// The receiver's Opus decoder stage: a ring of [`STAGE_SLOTS`] packets by
/// sequence number, decoded strictly in sequence order into one block of
/// PCM at a time. Allocates at creation only; nothing after allocates.
pub struct OpusDecoderStage {
    mono: Decoder,
    stereo: Decoder,
    channels: usize,
    slots: Vec<Slot>,
    bytes: Vec<u8>,
    pcm: Vec<f32>,
    /// Next sequence number to decode and the frame index it should start.
    next: Option<(u64, u64)>,
    /// Highest sequence number stored.
    newest: Option<u64>,
    /// Frames of the last packet seen: a lost packet's duration.
    last_frames: u16,
    /// A packet [`Offer::TooFar`] dropped, by sequence number: a stream
    /// that moved there, if the next packet is near it.
    candidate: Option<u64>,
    counts: OpusCounts,
}

impl OpusDecoderStage {
    /// A stage with its decoders (mono and stereo, 48 kHz) and ring.
    ///
    /// # Errors
    /// [`Error::Config`] if libopus cannot make a decoder.
    pub fn new() -> Result<Self, Error> {
        let max = *OPUS_FRAME_SIZES.last().unwrap_or(&960) as usize;
        Ok(OpusDecoderStage {
            mono: Decoder::new(Channels::Mono, SampleRate::Hz48000)
                .map_err(|e| opus_error("decoder", e))?,
            stereo: Decoder::new(Channels::Stereo, SampleRate::Hz48000)
                .map_err(|e| opus_error("decoder", e))?,
            channels: 2,
            slots: vec![EMPTY; STAGE_SLOTS],
            bytes: vec![0; STAGE_SLOTS * MAX_OPUS_PACKET],
            pcm: vec![0.0; max * OPUS_MAX_CHANNELS as usize],
            next: None,
            newest: None,
            last_frames: DEFAULT_OPUS_FRAMES,
            candidate: None,
            counts: OpusCounts::default(),
        })
    }

    /// Forgets every packet and the decoders' history: a new session, or
    /// a new run of audio after a pause. `channels`: the stream's, 1 or 2
    /// (others are treated as 2 and their packets refused). Does not
    /// allocate.
    pub fn reset(&mut self, channels: u8) {
        self.channels = if channels == 1 { 1 } else { 2 };
        self.slots.fill(EMPTY);
        self.next = None;
        self.newest = None;
        self.candidate = None;
        let _ = self.mono.reset();
        let _ = self.stereo.reset();
    }

    /// Counts so far.
    pub fn counts(&self) -> OpusCounts {
        self.counts
    }

    /// Whether a packet after the next one to decode is stored: the next
    /// one is then a hole.
    pub fn waiting(&self) -> bool {
        matches!((self.next, self.newest), (Some((s, _)), Some(n)) if n > s)
    }

    /// The stage's next frame index to produce, if it has begun.
    pub fn next_frame(&self) -> Option<u64> {
        self.next.map(|(_, f)| f)
    }

    /// Whether `payload` can be an Opus packet of `frames` decoded frames:
    /// 1 to [`MAX_OPUS_PACKET`] bytes, `frames` one of
    /// [`OPUS_FRAME_SIZES`], and the packet's TOC (RFC 6716 §3.1) saying
    /// as many. Does not allocate.
    pub fn valid(&self, payload: &[u8], frames: u16) -> bool {
        !payload.is_empty()
            && payload.len() <= MAX_OPUS_PACKET
            && OPUS_FRAME_SIZES.contains(&frames)
            && self.stereo.get_nb_samples(payload).ok() == Some(frames as usize)
    }

    /// Stores packet `seq` (header frame index `frame`, `frames` decoded
    /// frames, Opus packet `payload`). The first packet after creation or
    /// [`OpusDecoderStage::reset`] begins the sequence. Does not allocate.
    pub fn offer(&mut self, seq: u64, frame: u64, frames: u16, payload: &[u8]) -> Offer {
        if !self.valid(payload, frames) {
            self.counts.invalid += 1;
            return Offer::Invalid;
        }
        let screen = self.screen(seq);
        self.offer_screened(screen, seq, frame, frames, payload)
    }

    /// Where sequence number `seq` lies for the stage, before anything
    /// else of its packet is taken: near the next one to decode (within
    /// [`STAGE_SLOTS`], or the stage has not begun), far, or far but just
    /// after a far one ([`OPUS_CONFIRM_SEQS`]), which confirms a stream
    /// that moved. Remembers a far one as the candidate (a near one
    /// forgets it). A receiver screens every packet of its session with
    /// this first, so that a far one it drops touches none of its own
    /// bookkeeping either. Does not allocate.
    pub fn screen(&mut self, seq: u64) -> Screen {
        let Some((next_seq, _)) = self.next else {
            return Screen::Near;
        };
        if seq.abs_diff(next_seq) < STAGE_SLOTS as u64 {
            self.candidate = None;
            return Screen::Near;
        }
        let confirms = self
            .candidate
            .is_some_and(|c| seq > c && seq - c <= OPUS_CONFIRM_SEQS);
        self.candidate = Some(seq);
        if confirms {
            Screen::Restart
        } else {
            Screen::Far
        }
    }

    /// [`OpusDecoderStage::offer`] of a packet already screened
    /// ([`OpusDecoderStage::screen`]; `payload` checked with
    /// [`OpusDecoderStage::valid`]). Does not allocate.
    pub fn offer_screened(
        &mut self,
        screen: Screen,
        seq: u64,
        frame: u64,
        frames: u16,
        payload: &[u8],
    ) -> Offer {
        let mut result = Offer::Stored;
        match screen {
            Screen::Far => return Offer::TooFar,
            Screen::Restart => {
                let ch = self.channels as u8;
                self.reset(ch);
                self.next = Some((seq, frame));
                result = Offer::Restarted;
            }
            Screen::Near => {}
        }
        let (next_seq, _) = *self.next.get_or_insert((seq, frame));
        let k = (seq % STAGE_SLOTS as u64) as usize;
        if self.slots[k].used && self.slots[k].seq == seq {
            // Stored, or decoded and still remembered.
            return Offer::Duplicate;
        }
        if seq < next_seq {
            return Offer::Late;
        }
        self.slots[k] = Slot {
            used: true,
            seq,
            frame,
            frames,
            len: payload.len() as u16,
            done: false,
        };
        self.bytes[k * MAX_OPUS_PACKET..k * MAX_OPUS_PACKET + payload.len()]
            .copy_from_slice(payload);
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        self.last_frames = frames;
        result
    }

    /// The next block of PCM in sequence order, if one is ready: the next
    /// packet decoded if it is stored; or, if it is missing while a later
    /// one is stored, its frames concealed, once they start before
    /// `conceal_before` (the frame index playback will read up to soon) or
    /// once the ring needs its slot. `None` while the next packet may still
    /// come in time. Does not allocate.
    pub fn pop(&mut self, conceal_before: u64) -> Option<Block> {
        let (seq, frame) = self.next?;
        let newest = self.newest?;
        if newest < seq {
            return None;
        }
        let k = (seq % STAGE_SLOTS as u64) as usize;
        let slot = self.slots[k];
        let ch = self.channels;
        let dec = if ch == 1 {
            &mut self.mono
        } else {
            &mut self.stereo
        };
        if slot.used && slot.seq == seq && !slot.done {
            self.slots[k].done = true;
            let n = slot.frames as usize;
            if slot.frame != frame {
                // Frames nobody sent lie before this packet (or it follows a
                // concealed one that was the first after them): its encoder
                // restarted there (`OpusFrameEncoder::push`), so does ours.
                let _ = dec.reset();
            }
            let data = &self.bytes[k * MAX_OPUS_PACKET..k * MAX_OPUS_PACKET + slot.len as usize];
            let out = &mut self.pcm[..n * ch];
            let concealed = match dec.decode_float_to_slice(data, out, false) {
                Ok(got) if got == n => {
                    self.counts.decoded += 1;
                    false
                }
                _ => {
                    self.counts.invalid += 1;
                    conceal(dec, out);
                    self.counts.concealed += 1;
                    true
                }
            };
            self.next = Some((seq.saturating_add(1), slot.frame.wrapping_add(n as u64)));
            return Some(Block {
                frame: slot.frame,
                frames: n,
                concealed,
            });
        }
        // A hole. Its duration is the stream's packet duration (a sender
        // keeps one frame size).
        let ring_full = newest - seq >= STAGE_SLOTS as u64 - 1;
        if frame >= conceal_before && !ring_full {
            return None;
        }
        let n = self.last_frames as usize;
        conceal(dec, &mut self.pcm[..n * ch]);
        self.counts.concealed += 1;
        self.next = Some((seq.saturating_add(1), frame.wrapping_add(n as u64)));
        Some(Block {
            frame,
            frames: n,
            concealed: true,
        })
    }

    /// The samples of the block [`OpusDecoderStage::pop`] returned last:
    /// `block.frames` frames of the stream's channels, interleaved.
    pub fn pcm(&self, b: &Block) -> &[f32] {
        &self.pcm[..(b.frames * self.channels).min(self.pcm.len())]
    }
}

/// Fills `out` with the decoder's concealment of a lost packet of its
/// length (a NULL packet; `out.len()` / channels frames, a multiple of
/// 2.5 ms), or silence if libopus refuses.
fn conceal(dec: &mut Decoder, out: &mut [f32]) {
    if dec.decode_float_to_slice(&[], out, false).is_err() {
        out.fill(0.0);
    }
}

/// Checks an Opus stream's format: 48 kHz, 1 or 2 channels.
///
/// # Errors
/// [`Error::Config`] saying what to change.
pub fn check_format(rate: u32, channels_n: u8) -> Result<(), Error> {
    if rate != OPUS_RATE {
        return Err(Error::Config(format!(
            "audio.format = OPUS runs at audio.rate = 48000, not {rate} (Opus is 48 kHz; the sound server resamples 44.1 kHz players into the sink)"
        )));
    }
    channels(channels_n).map(|_| ())
}

const _: () = assert!(OPUS_MAX_CHANNELS <= MAX_CHANNELS);

#[cfg(test)]
mod tests {
    use super::*;

    /// A 1 kHz-ish mix of two tones, stereo, at frame `i`.
    fn music(i: usize) -> [f32; 2] {
        let t = i as f32 / 48_000.0;
        let a = (t * 2.0 * std::f32::consts::PI * 997.0).sin() * 0.4;
        let b = (t * 2.0 * std::f32::consts::PI * 3_011.0).sin() * 0.2;
        [a + b, a - b]
    }

    fn encode(frames: usize, cfg: &OpusConfig) -> (u32, Vec<(Encoded, Vec<u8>)>) {
        let mut e = OpusFrameEncoder::new(2, cfg, 1400).unwrap();
        let l = e.lookahead();
        let mut pkts = Vec::new();
        let mut buf = Vec::new();
        // The sink's buffers: 1024 frames, not a multiple of the Opus frame.
        let mut i = 0;
        while i < frames {
            let n = 1024.min(frames - i);
            buf.clear();
            for k in i..i + n {
                buf.extend_from_slice(&music(k));
            }
            e.push(
                i as u64,
                i as f64 * 1e9 / 48e3,
                1e9 / 48e3,
                &buf,
                &mut |e, x| pkts.push((x, e.packet(&x).to_vec())),
            );
            i += n;
        }
        (l, pkts)
    }

    #[test]
    fn packets_are_whole_opus_frames_stamped_with_their_first_frame() {
        let cfg = OpusConfig::default();
        let (l, pkts) = encode(48_000, &cfg);
        assert_eq!(l, 120, "RESTRICTED_LOWDELAY's lookahead at 48 kHz");
        assert_eq!(pkts.len(), 100);
        for (k, (e, p)) in pkts.iter().enumerate() {
            assert_eq!(e.frame, k as u64 * 480);
            assert!((e.pts - k as f64 * 1e7).abs() < 1e-3);
            assert!(!p.is_empty() && p.len() <= 1400);
        }
        // 160 kbit/s: 200 bytes per 10 ms on average.
        let mean = pkts.iter().map(|(_, p)| p.len()).sum::<usize>() / pkts.len();
        assert!((150..=260).contains(&mean), "{mean} bytes per packet");
    }

    /// Decoded frame `frame + j` of a packet is input frame `frame + j − L`.
    #[test]
    fn decoded_frames_are_the_input_delayed_by_the_lookahead() {
        let cfg = OpusConfig::default();
        let (l, pkts) = encode(24_000, &cfg);
        let mut st = OpusDecoderStage::new().unwrap();
        st.reset(2);
        let mut out = vec![[0f32; 2]; 24_000];
        for (seq, (e, p)) in pkts.iter().enumerate() {
            assert_eq!(st.offer(seq as u64, e.frame, 480, p), Offer::Stored);
            let b = st.pop(0).unwrap();
            assert_eq!((b.frame, b.frames, b.concealed), (e.frame, 480, false));
            for (j, s) in st.pcm(&b).chunks_exact(2).enumerate() {
                out[b.frame as usize + j] = [s[0], s[1]];
            }
        }
        // Correlate decoded frame k with input frame k − L (after the
        // codec settles).
        let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
        for (k, o) in out.iter().enumerate().skip(4_800) {
            let x = music(k - l as usize);
            for c in 0..2 {
                xy += (x[c] * o[c]) as f64;
                xx += (x[c] * x[c]) as f64;
                yy += (o[c] * o[c]) as f64;
            }
        }
        let r = xy / (xx * yy).sqrt();
        assert!(r > 0.99, "correlation at the lookahead {r}");
        // One frame off is clearly worse: the alignment is exact.
        let (mut xy1, mut yy1) = (0.0f64, 0.0f64);
        for (k, o) in out.iter().enumerate().skip(4_800) {
            let x = music(k - l as usize + 3);
            for c in 0..2 {
                xy1 += (x[c] * o[c]) as f64;
                yy1 += (o[c] * o[c]) as f64;
            }
        }
        assert!(xy1 / (xx * yy1).sqrt() < r - 0.01);
    }

    #[test]
    fn holds_after_a_hole_until_repaired_or_due_then_conceals() {
        let (_, pkts) = encode(9_600, &OpusConfig::default());
        let mut st = OpusDecoderStage::new().unwrap();
        st.reset(2);
        let (e0, p0) = &pkts[0];
        st.offer(0, e0.frame, 480, p0);
        assert!(!st.pop(0).unwrap().concealed);
        // 1 is lost for now; 2 and 3 arrive.
        for s in [2usize, 3] {
            assert_eq!(
                st.offer(s as u64, pkts[s].0.frame, 480, &pkts[s].1),
                Offer::Stored
            );
        }
        assert!(st.waiting());
        // Playback does not need frame 480 yet: wait for the repair.
        assert_eq!(st.pop(480), None);
        // The repair comes: 1, 2, 3 decode in order.
        st.offer(1, pkts[1].0.frame, 480, &pkts[1].1);
        for s in 1..4u64 {
            let b = st.pop(0).unwrap();
            assert_eq!((b.frame, b.concealed), (s * 480, false));
        }
        assert_eq!(st.pop(u64::MAX), None, "nothing after the newest");
        // 4 is lost for good: once its frames are due, concealed.
        st.offer(5, pkts[5].0.frame, 480, &pkts[5].1);
        assert_eq!(st.pop(4 * 480), None);
        let b = st.pop(4 * 480 + 1).unwrap();
        assert_eq!((b.frame, b.frames, b.concealed), (4 * 480, 480, true));
        assert!(
            st.pcm(&b).iter().any(|&v| v != 0.0),
            "concealment, not silence"
        );
        assert_eq!(
            st.pop(0).map(|b| (b.frame, b.concealed)),
            Some((5 * 480, false))
        );
        // The lost packet arriving now is late; another copy of one
        // decoded (a second resend) is a duplicate.
        assert_eq!(st.offer(4, pkts[4].0.frame, 480, &pkts[4].1), Offer::Late);
        assert_eq!(
            st.offer(5, pkts[5].0.frame, 480, &pkts[5].1),
            Offer::Duplicate
        );
        assert_eq!(
            st.offer(1, pkts[1].0.frame, 480, &pkts[1].1),
            Offer::Duplicate
        );
        assert_eq!(st.counts().concealed, 1);
    }

    #[test]
    fn invalid_payloads_are_refused_and_concealed_when_due() {
        let (_, pkts) = encode(4_800, &OpusConfig::default());
        let mut st = OpusDecoderStage::new().unwrap();
        st.reset(2);
        st.offer(0, 0, 480, &pkts[0].1);
        st.pop(0);
        // Empty, too long, a TOC of another frame size.
        assert_eq!(st.offer(1, 480, 480, &[]), Offer::Invalid);
        assert_eq!(st.offer(1, 480, 480, &[0u8; 1276]), Offer::Invalid);
        assert_eq!(st.offer(1, 480, 240, &pkts[1].1), Offer::Invalid);
        assert_eq!(st.offer(1, 480, 100, &pkts[1].1), Offer::Invalid);
        // Garbage whose TOC says 10 ms: stored, and concealed if it does
        // not decode; random bytes never crash the decoder.
        let mut junk = pkts[1].1.clone();
        for (i, b) in junk.iter_mut().enumerate().skip(1) {
            *b = (i * 151 % 251) as u8;
        }
        if st.offer(1, 480, 480, &junk) == Offer::Stored {
            let b = st.pop(0).unwrap();
            assert_eq!(b.frames, 480);
        }
        assert!(st.counts().invalid >= 4);
    }

    #[test]
    fn a_full_ring_conceals_the_oldest_hole() {
        let (_, pkts) = encode(4_800, &OpusConfig::default());
        let mut st = OpusDecoderStage::new().unwrap();
        st.reset(2);
        st.offer(0, 0, 480, &pkts[0].1);
        st.pop(0);
        // 1 never comes; a packet STAGE_SLOTS − 1 ahead needs its slot.
        let far = STAGE_SLOTS as u64;
        st.offer(far, far * 480, 480, &pkts[2].1);
        let b = st.pop(0).unwrap();
        assert_eq!((b.frame, b.concealed), (480, true));
    }

    #[test]
    fn one_far_sequence_number_moves_nothing_two_near_each_other_do() {
        let (_, pkts) = encode(4_800, &OpusConfig::default());
        let mut st = OpusDecoderStage::new().unwrap();
        st.reset(2);
        for s in 0..2u64 {
            st.offer(s, s * 480, 480, &pkts[s as usize].1);
            assert!(!st.pop(0).unwrap().concealed);
        }
        // A forged packet far ahead, and one far behind: dropped.
        assert_eq!(st.offer(5_000, 0, 480, &pkts[2].1), Offer::TooFar);
        assert_eq!(st.offer(u64::MAX, 0, 480, &pkts[2].1), Offer::TooFar);
        // The stream goes on as if nothing came.
        assert_eq!(st.offer(2, 960, 480, &pkts[2].1), Offer::Stored);
        assert_eq!(
            st.pop(0).map(|b| (b.frame, b.concealed)),
            Some((960, false))
        );
        // A stream that really moved: a second packet just after the first.
        assert_eq!(st.offer(9_000, 90_000, 480, &pkts[3].1), Offer::TooFar);
        assert_eq!(st.offer(9_001, 90_480, 480, &pkts[4].1), Offer::Restarted);
        assert_eq!(st.pop(0).map(|b| b.frame), Some(90_480));
    }

    /// After frames nobody sent, encoder and decoder restart at the same
    /// packet: the first one after the break plays at the input's level
    /// (a decoder that kept its history, against an encoder that did not,
    /// played it about 35 dB too quiet).
    #[test]
    fn encoder_and_decoder_restart_together_after_a_break() {
        let cfg = OpusConfig::default();
        let mut e = OpusFrameEncoder::new(2, &cfg, 1400).unwrap();
        let mut st = OpusDecoderStage::new().unwrap();
        st.reset(2);
        let tone: Vec<f32> = (0..1024)
            .flat_map(|i| {
                let v = (i as f32 * 0.07).sin() * 0.5;
                [v, v]
            })
            .collect();
        let silence = vec![0f32; 2048];
        let mut seq = 0u64;
        let mut rms_after = Vec::new();
        // Music, silence (sent, then a break as if suppressed), music.
        for (k, (first, buf)) in [
            (0u64, &tone),
            (1024, &tone),
            (2048, &silence),
            (3072, &silence),
            (100_000, &tone),
            (101_024, &tone),
            (102_048, &tone),
        ]
        .into_iter()
        .enumerate()
        {
            e.push(first, 0.0, 1.0, buf, &mut |e, x| {
                assert_eq!(st.offer(seq, x.frame, 480, e.packet(&x)), Offer::Stored);
                seq += 1;
                while let Some(b) = st.pop(0) {
                    if k >= 4 {
                        let p = st.pcm(&b);
                        let rms = (p.iter().map(|v| v * v).sum::<f32>() / p.len() as f32).sqrt();
                        rms_after.push(rms);
                    }
                }
            });
        }
        // The first packet after the break: its lookahead of silence, then
        // the tone at its level (0.35 rms) within 3 dB.
        assert!(rms_after.len() >= 4, "{rms_after:?}");
        let want = 0.5 / 2f32.sqrt();
        for r in &rms_after[1..] {
            assert!(*r > want * 0.7 && *r < want * 1.4, "{rms_after:?}");
        }
        // (Its first 120 frames are the lookahead's silence: 0.87 of the
        // level at most; a decoder restarted against an encoder that was
        // not would overshoot instead.)
        assert!(
            rms_after[0] > want * 0.5 && rms_after[0] < want * 1.1,
            "first packet after the break: {rms_after:?}"
        );
    }

    #[test]
    fn config_errors_say_what_to_change() {
        assert!(check_format(44_100, 2)
            .unwrap_err()
            .to_string()
            .contains("48000"));
        assert!(check_format(48_000, 6).is_err());
        assert!(check_format(48_000, 1).is_ok());
        let bad = OpusConfig {
            bitrate_kbps: 900,
            ..Default::default()
        };
        assert!(OpusFrameEncoder::new(2, &bad, 1400).is_err());
        let bad = OpusConfig {
            frames: 500,
            ..Default::default()
        };
        assert!(OpusFrameEncoder::new(2, &bad, 1400).is_err());
        assert_eq!(OpusConfig::frames_for_ms(2.5), Some(120));
        assert_eq!(OpusConfig::frames_for_ms(20.0), Some(960));
        assert_eq!(OpusConfig::frames_for_ms(7.0), None);
    }
}

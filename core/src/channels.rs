//! Channel layouts, and which of a stream's channels a receiver plays.
//!
//! A stream's layout travels in every audio packet as a [`ChannelMask`]:
//! one bit per speaker position, the channels on the wire in the order of
//! the bits. The bits and their order are those of the WAVE format's
//! `dwChannelMask` (Microsoft, WAVEFORMATEXTENSIBLE, "speaker positions"),
//! which is also the order of PipeWire's default layouts for one to eight
//! channels; 0 means "the default layout for the channel count" (what
//! senders before layouts meant). A sender given another order
//! (`audio.position = [ FR FL ]`) reorders its channels onto the wire
//! ([`Layout::wire_order`]).
//!
//! A receiver plays a [`Selection`] of them (`bark.channels`: all, a
//! downmix to mono, or a list such as `[ FL ]` for one side of a stereo
//! pair) on its output layout through a [`ChannelMix`]: a matrix built off
//! the audio path whenever the stream's layout or the selection changes,
//! and applied per frame without allocation.
//!
//! Downmix coefficients are those of ITU-R BS.775-3 (Table 2: a centre or
//! surround channel folds into the front pair at 1/√2; to mono, the front
//! pair at 1/√2, the centre at 1, the surrounds at 1/2); the LFE channel is
//! left out of every downmix, as BS.775 leaves it. Each output's
//! coefficients are then scaled to sum to at most 1, so a downmix of
//! full-scale channels cannot clip (and a mono receiver of a stereo pair is
//! not louder than the pair: (L + R)/2).

use crate::format::MAX_CHANNELS;
use std::fmt;

/// Most channels of a frame.
const MAX: usize = MAX_CHANNELS as usize;

/// 1/√2: the BS.775 coefficient of a channel folded into a neighbour pair.
const H: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// A speaker position a [`ChannelMask`] can name, in mask-bit order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(clippy::upper_case_acronyms)]
pub enum Position {
    /// Front left (bit 0).
    FL,
    /// Front right (bit 1).
    FR,
    /// Front centre (bit 2); also a mono channel.
    FC,
    /// Low-frequency effects (bit 3).
    LFE,
    /// Rear (back) left (bit 4).
    RL,
    /// Rear (back) right (bit 5).
    RR,
    /// Front left of centre (bit 6).
    FLC,
    /// Front right of centre (bit 7).
    FRC,
    /// Rear (back) centre (bit 8).
    RC,
    /// Side left (bit 9).
    SL,
    /// Side right (bit 10).
    SR,
    /// Top centre (bit 11).
    TC,
    /// Top front left (bit 12).
    TFL,
    /// Top front centre (bit 13).
    TFC,
    /// Top front right (bit 14).
    TFR,
    /// Top rear left (bit 15).
    TRL,
}

use Position::*;

/// Every position, in mask-bit order.
pub const POSITIONS: [Position; 16] = [
    FL, FR, FC, LFE, RL, RR, FLC, FRC, RC, SL, SR, TC, TFL, TFC, TFR, TRL,
];

impl Position {
    /// The position's bit in a [`ChannelMask`].
    pub const fn bit(self) -> u16 {
        1 << self as u8
    }

    /// PipeWire's short name (`FL`, `LFE`, ...).
    pub const fn name(self) -> &'static str {
        match self {
            FL => "FL",
            FR => "FR",
            FC => "FC",
            LFE => "LFE",
            RL => "RL",
            RR => "RR",
            FLC => "FLC",
            FRC => "FRC",
            RC => "RC",
            SL => "SL",
            SR => "SR",
            TC => "TC",
            TFL => "TFL",
            TFC => "TFC",
            TFR => "TFR",
            TRL => "TRL",
        }
    }

    /// From PipeWire's short name, any case; `MONO` is the front centre
    /// (as WAVE places a mono channel). `None` for other names (`AUX0`...).
    pub fn from_name(name: &str) -> Option<Position> {
        if name.eq_ignore_ascii_case("MONO") {
            return Some(FC);
        }
        POSITIONS
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// The SPA channel id (`enum spa_audio_channel`, spa/param/audio/raw.h:
    /// `SPA_AUDIO_CHANNEL_FL` = 3 up to `SPA_AUDIO_CHANNEL_TRL` = 18).
    pub const fn spa(self) -> u32 {
        match self {
            FL => 3,
            FR => 4,
            FC => 5,
            LFE => 6,
            SL => 7,
            SR => 8,
            FLC => 9,
            FRC => 10,
            RC => 11,
            RL => 12,
            RR => 13,
            TC => 14,
            TFL => 15,
            TFC => 16,
            TFR => 17,
            TRL => 18,
        }
    }

    /// From an SPA channel id; `SPA_AUDIO_CHANNEL_MONO` (2) is the front
    /// centre. `None` for ids without a mask bit (AUX channels, ...).
    pub fn from_spa(id: u32) -> Option<Position> {
        if id == 2 {
            return Some(FC);
        }
        POSITIONS.into_iter().find(|p| p.spa() == id)
    }
}

/// A set of speaker positions, one bit per [`Position`]; a stream's
/// channels are on the wire in the order of their bits. `ChannelMask(0)`
/// stands for [`ChannelMask::default_for`] the channel count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChannelMask(pub u16);

impl ChannelMask {
    /// Number of positions in the set.
    pub const fn count(self) -> u32 {
        self.0.count_ones()
    }

    /// Whether `p` is in the set.
    pub const fn contains(self, p: Position) -> bool {
        self.0 & p.bit() != 0
    }

    /// The positions, in bit (wire) order.
    pub fn positions(self) -> impl Iterator<Item = Position> {
        POSITIONS.into_iter().filter(move |p| self.contains(*p))
    }

    /// PipeWire's default layout for `channels` (1 mono, 2 stereo, 3 2.1,
    /// 4 quad, 5 5.0, 6 5.1, 7 6.1, 8 7.1: the positions PipeWire and
    /// `pw-cli` assume when `audio.position` is not given); 0 for other
    /// counts.
    pub const fn default_for(channels: u8) -> ChannelMask {
        let m = match channels {
            1 => FC.bit(),
            2 => FL.bit() | FR.bit(),
            3 => FL.bit() | FR.bit() | LFE.bit(),
            4 => FL.bit() | FR.bit() | RL.bit() | RR.bit(),
            5 => FL.bit() | FR.bit() | FC.bit() | RL.bit() | RR.bit(),
            6 => FL.bit() | FR.bit() | FC.bit() | LFE.bit() | RL.bit() | RR.bit(),
            7 => FL.bit() | FR.bit() | FC.bit() | LFE.bit() | RC.bit() | SL.bit() | SR.bit(),
            8 => {
                FL.bit()
                    | FR.bit()
                    | FC.bit()
                    | LFE.bit()
                    | RL.bit()
                    | RR.bit()
                    | SL.bit()
                    | SR.bit()
            }
            _ => 0,
        };
        ChannelMask(m)
    }

    /// The layout of a stream of `channels` whose packets carry this mask:
    /// the mask itself, or the default for the count when it is 0 or does
    /// not name `channels` positions.
    pub const fn or_default(self, channels: u8) -> ChannelMask {
        if self.0 != 0 && self.count() == channels as u32 {
            self
        } else {
            ChannelMask::default_for(channels)
        }
    }
}

/// An ordered layout: the position of each channel of a sink or an
/// output, at most eight, none twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    n: u8,
    pos: [Position; MAX],
}

impl Layout {
    /// From positions in channel order; `None` if there are more than
    /// eight or one repeats.
    pub fn new(positions: &[Position]) -> Option<Layout> {
        if positions.is_empty() || positions.len() > MAX {
            return None;
        }
        let mut pos = [FL; MAX];
        let mut seen = 0u16;
        for (slot, p) in pos.iter_mut().zip(positions) {
            if seen & p.bit() != 0 {
                return None;
            }
            seen |= p.bit();
            *slot = *p;
        }
        Some(Layout {
            n: positions.len() as u8,
            pos,
        })
    }

    /// The positions of `mask` in its bit order.
    pub fn of_mask(mask: ChannelMask) -> Option<Layout> {
        let mut pos = [FL; MAX];
        let mut n = 0;
        for p in mask.positions() {
            if n == MAX {
                return None;
            }
            pos[n] = p;
            n += 1;
        }
        (n > 0).then_some(Layout { n: n as u8, pos })
    }

    /// [`ChannelMask::default_for`] `channels` in its order; `None` for
    /// counts without a default.
    pub fn default_for(channels: u8) -> Option<Layout> {
        Layout::of_mask(ChannelMask::default_for(channels))
    }

    /// Parses `audio.position` or a channel list: `[ FL FR ]` (commas and
    /// quotes allowed) or `FL,FR`.
    ///
    /// # Errors
    /// A message naming the unknown or repeated position, or a list of
    /// more than eight.
    pub fn parse(text: &str) -> Result<Layout, String> {
        let mut pos = Vec::new();
        for tok in list_items(text) {
            let p = Position::from_name(tok)
                .ok_or_else(|| format!("unknown channel position {tok:?} (FL, FR, FC, LFE, RL, RR, FLC, FRC, RC, SL, SR, TC, TFL, TFC, TFR, TRL or MONO)"))?;
            pos.push(p);
        }
        Layout::new(&pos).ok_or_else(|| {
            if pos.is_empty() {
                format!("{text:?} names no channel")
            } else if pos.len() > MAX {
                format!("{text:?} names more than {MAX} channels")
            } else {
                format!("{text:?} names a position twice")
            }
        })
    }

    /// Channels in the layout.
    pub fn channels(&self) -> usize {
        self.n as usize
    }

    /// The positions in channel order.
    pub fn positions(&self) -> &[Position] {
        &self.pos[..self.n as usize]
    }

    /// The set of positions.
    pub fn mask(&self) -> ChannelMask {
        ChannelMask(self.positions().iter().fold(0, |m, p| m | p.bit()))
    }

    /// For a sender: the sink channel that goes out as wire channel `k`
    /// (the wire carries the channels in mask-bit order), for each `k`.
    pub fn wire_order(&self) -> [u8; MAX] {
        let mut order = [0u8; MAX];
        for (slot, p) in order.iter_mut().zip(self.mask().positions()) {
            *slot = self.index(p).unwrap_or(0) as u8;
        }
        order
    }

    fn index(&self, p: Position) -> Option<usize> {
        self.positions().iter().position(|q| *q == p)
    }
}

impl fmt::Display for Layout {
    /// `[ FL FR ]`, as `audio.position` is written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for p in self.positions() {
            write!(f, " {}", p.name())?;
        }
        f.write_str(" ]")
    }
}

/// The items of `[ A B ]`, `[ "A", "B" ]` or `A,B`.
fn list_items(text: &str) -> impl Iterator<Item = &str> {
    text.trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|t| t.trim_matches('"'))
        .filter(|t| !t.is_empty())
}

/// Which of a stream's channels a receiver plays (`bark.channels`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Selection {
    /// Every channel, mixed to the output's layout (the default).
    #[default]
    All,
    /// A downmix of every channel to one, on every output channel.
    Mono,
    /// These channels of the stream: one is played on every output
    /// channel; as many as the output has, at positions it has none of, go
    /// one to one in order (`[ RL RR ]` on a stereo output); otherwise
    /// mixed to the output's layout. Channels the stream lacks are silent.
    Only(ChannelMask),
}

impl Selection {
    /// Parses `bark.channels`: `all` (or empty), `mono`, or a list of
    /// positions (`[ FL ]`, `[ RL RR ]`, `FL,FR`).
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> Result<Selection, String> {
        let t = text.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("all") {
            return Ok(Selection::All);
        }
        if t.eq_ignore_ascii_case("mono") {
            return Ok(Selection::Mono);
        }
        let l = Layout::parse(t).map_err(|e| format!("bark.channels: {e}"))?;
        Ok(Selection::Only(l.mask()))
    }

    /// The settings block's form: 0 all, 0xffff mono, else the mask.
    pub const fn to_wire(self) -> u16 {
        match self {
            Selection::All => 0,
            Selection::Mono => 0xffff,
            Selection::Only(m) => m.0,
        }
    }

    /// From [`Selection::to_wire`]'s form.
    pub const fn from_wire(v: u16) -> Selection {
        match v {
            0 => Selection::All,
            0xffff => Selection::Mono,
            m => Selection::Only(ChannelMask(m)),
        }
    }
}

impl fmt::Display for Selection {
    /// `all`, `mono` or `[ FL FR ]`: what [`Selection::parse`] reads.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selection::All => f.write_str("all"),
            Selection::Mono => f.write_str("mono"),
            Selection::Only(m) => {
                f.write_str("[")?;
                for p in m.positions() {
                    write!(f, " {}", p.name())?;
                }
                f.write_str(" ]")
            }
        }
    }
}

/// Where a position goes on an output that lacks it: alternatives in
/// order of preference, each a list of (position, coefficient); the first
/// whose positions the output all has is used. BS.775-3 Table 2 for the
/// front, centre and surround folds; the others by their nearest
/// neighbours at the same coefficients. An empty list (LFE): left out.
fn folds(p: Position) -> &'static [&'static [(Position, f32)]] {
    match p {
        FL => &[&[(FC, H)]],
        FR => &[&[(FC, H)]],
        FC => &[&[(FL, H), (FR, H)]],
        LFE => &[],
        RL => &[&[(SL, 1.0)], &[(FL, H)], &[(FC, 0.5)]],
        RR => &[&[(SR, 1.0)], &[(FR, H)], &[(FC, 0.5)]],
        SL => &[&[(RL, 1.0)], &[(FL, H)], &[(FC, 0.5)]],
        SR => &[&[(RR, 1.0)], &[(FR, H)], &[(FC, 0.5)]],
        FLC => &[&[(FL, 1.0)], &[(FC, H)]],
        FRC => &[&[(FR, 1.0)], &[(FC, H)]],
        RC => &[
            &[(RL, H), (RR, H)],
            &[(SL, H), (SR, H)],
            &[(FL, 0.5), (FR, 0.5)],
            &[(FC, H)],
        ],
        TC => &[&[(FL, 0.5), (FR, 0.5)], &[(FC, H)]],
        TFC => &[&[(FC, H)], &[(FL, 0.5), (FR, 0.5)]],
        TFL => &[&[(FL, H)], &[(FC, 0.5)]],
        TFR => &[&[(FR, H)], &[(FC, 0.5)]],
        TRL => &[&[(RL, H)], &[(SL, H)], &[(FL, 0.5)], &[(FC, 0.5 * H)]],
    }
}

/// The mix from a stream's channels to an output's: `m[out][in]`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChannelMix {
    inputs: u8,
    outputs: u8,
    identity: bool,
    m: [[f32; MAX]; MAX],
}

impl ChannelMix {
    /// The mix for a stream of `in_channels` with layout `stream` (as its
    /// packets carry it: [`ChannelMask::or_default`] is applied), a
    /// receiver's `selection`, and its output `out` (a one-channel output
    /// is mono, whatever its position). A one-channel stream plays on
    /// every output channel. Positions the output cannot place at all
    /// (a layout without a default) go by index, channel `i` to output
    /// `i mod outputs`, as before layouts existed.
    pub fn new(
        stream: ChannelMask,
        in_channels: u8,
        selection: Selection,
        out: &Layout,
    ) -> ChannelMix {
        let inputs = (in_channels as usize).clamp(1, MAX);
        let outputs = out.channels();
        let mono_out = Layout {
            n: 1,
            pos: [FC; MAX],
        };
        let out = if outputs == 1 { &mono_out } else { out };
        let mut mix = ChannelMix {
            inputs: inputs as u8,
            outputs: outputs as u8,
            identity: false,
            m: [[0.0; MAX]; MAX],
        };
        let layout = stream.or_default(in_channels);
        let mut in_pos = [None; MAX];
        if layout.count() as usize == inputs {
            for (slot, p) in in_pos.iter_mut().zip(layout.positions()) {
                *slot = Some(p);
            }
        }
        let chosen = |i: usize| match selection {
            Selection::All | Selection::Mono => true,
            Selection::Only(sel) => in_pos[i].is_some_and(|p| sel.contains(p)),
        };
        let picked: usize = (0..inputs).filter(|&i| chosen(i)).count();
        if inputs == 1 || picked == 1 && matches!(selection, Selection::Only(_)) {
            // One channel: on every output channel.
            let i = (0..inputs).find(|&i| inputs == 1 || chosen(i)).unwrap_or(0);
            for row in &mut mix.m[..outputs] {
                row[i] = 1.0;
            }
        } else if selection == Selection::Mono {
            let mut row = [0.0f32; MAX];
            for (i, c) in row.iter_mut().enumerate().take(inputs) {
                *c = route_to(in_pos[i], i, &mono_out)
                    .into_iter()
                    .map(|(_, g)| g)
                    .sum();
            }
            normalize(&mut row);
            for r in &mut mix.m[..outputs] {
                *r = row;
            }
        } else if matches!(selection, Selection::Only(_))
            && picked == outputs
            && (0..inputs)
                .filter(|&i| chosen(i))
                .all(|i| in_pos[i].is_none_or(|p| out.index(p).is_none()))
        {
            // As many as the output has, none at a position it has (the
            // rears of a surround set on a stereo output): in order.
            for (o, i) in (0..inputs).filter(|&i| chosen(i)).enumerate() {
                mix.m[o][i] = 1.0;
            }
        } else {
            for i in (0..inputs).filter(|&i| chosen(i)) {
                for (o, c) in route_to(in_pos[i], i, out) {
                    mix.m[o][i] += c;
                }
            }
            for row in &mut mix.m[..outputs] {
                normalize(row);
            }
        }
        mix.identity = inputs == outputs
            && (0..outputs).all(|o| (0..inputs).all(|i| mix.m[o][i] == f32::from(o == i)));
        mix
    }

    /// Channels of the stream's frames.
    pub fn inputs(&self) -> usize {
        self.inputs as usize
    }

    /// Channels of the output's frames.
    pub fn outputs(&self) -> usize {
        self.outputs as usize
    }

    /// Whether every output channel is the input channel of its index.
    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// The gain of stream channel `input` in output channel `output`.
    pub fn coefficient(&self, output: usize, input: usize) -> f32 {
        self.m
            .get(output)
            .and_then(|r| r.get(input))
            .copied()
            .unwrap_or(0.0)
    }

    /// Mixes one frame: `input` has [`ChannelMix::inputs`] samples,
    /// `output` [`ChannelMix::outputs`] (extra samples of either are left
    /// alone).
    pub fn apply(&self, input: &[f32], output: &mut [f32]) {
        for (o, out) in output.iter_mut().enumerate().take(self.outputs()) {
            let row = &self.m[o];
            *out = input
                .iter()
                .zip(row)
                .take(self.inputs())
                .map(|(x, c)| x * c)
                .sum();
        }
    }
}

/// Output channels and gains for stream channel `i` at position `p` (or
/// of unknown position) on `out`.
fn route_to(p: Option<Position>, i: usize, out: &Layout) -> RouteList {
    let mut r = RouteList::default();
    let Some(p) = p else {
        r.push(i % out.channels(), 1.0);
        return r;
    };
    if let Some(o) = out.index(p) {
        r.push(o, 1.0);
        return r;
    }
    if p == LFE {
        return r;
    }
    for alt in folds(p) {
        if alt.iter().all(|(q, _)| out.index(*q).is_some()) {
            for (q, c) in *alt {
                r.push(out.index(*q).unwrap_or(0), *c);
            }
            return r;
        }
    }
    // An output with none of the fold targets (e.g. `[ RL RR ]` for a
    // front channel): by index.
    r.push(i % out.channels(), 1.0);
    r
}

/// At most two (output, gain) pairs, without allocation.
#[derive(Default)]
struct RouteList {
    n: usize,
    v: [(usize, f32); 2],
}

impl RouteList {
    fn push(&mut self, o: usize, c: f32) {
        if self.n < self.v.len() {
            self.v[self.n] = (o, c);
            self.n += 1;
        }
    }
}

impl IntoIterator for RouteList {
    type Item = (usize, f32);
    type IntoIter = std::iter::Take<std::array::IntoIter<(usize, f32), 2>>;
    fn into_iter(self) -> Self::IntoIter {
        self.v.into_iter().take(self.n)
    }
}

/// Scales a row of gains to sum to at most 1 (no output can clip).
fn normalize(row: &mut [f32; MAX]) {
    let sum: f32 = row.iter().map(|c| c.abs()).sum();
    if sum > 1.0 {
        for c in row.iter_mut() {
            *c /= sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stereo() -> Layout {
        Layout::default_for(2).unwrap()
    }

    fn mix(stream: u8, sel: &str, out: &Layout) -> ChannelMix {
        ChannelMix::new(ChannelMask(0), stream, Selection::parse(sel).unwrap(), out)
    }

    #[test]
    fn defaults_are_pipewires_and_in_wire_order() {
        let six = Layout::default_for(6).unwrap();
        assert_eq!(six.to_string(), "[ FL FR FC LFE RL RR ]");
        assert_eq!(
            Layout::default_for(8).unwrap().to_string(),
            "[ FL FR FC LFE RL RR SL SR ]"
        );
        assert_eq!(
            Layout::default_for(7).unwrap().to_string(),
            "[ FL FR FC LFE RC SL SR ]"
        );
        assert_eq!(Layout::default_for(1).unwrap().to_string(), "[ FC ]");
        assert_eq!(six.wire_order()[..6], [0, 1, 2, 3, 4, 5]);
        // A sink given another order sends in bit order.
        let odd = Layout::parse("[ FC FR FL ]").unwrap();
        assert_eq!(odd.wire_order()[..3], [2, 1, 0]);
        assert_eq!(ChannelMask(0).or_default(2), ChannelMask(3));
        // A mask that does not match the count is not believed.
        assert_eq!(ChannelMask(0b111).or_default(2), ChannelMask(3));
    }

    #[test]
    fn names_and_spa_ids_round_trip() {
        for p in POSITIONS {
            assert_eq!(Position::from_name(p.name()), Some(p));
            assert_eq!(Position::from_spa(p.spa()), Some(p));
            assert_eq!(1u16 << (p as u8), p.bit());
        }
        assert_eq!(Position::from_name("mono"), Some(FC));
        assert_eq!(Position::from_name("AUX0"), None);
        assert!(Layout::parse("[ FL FL ]").is_err());
        assert!(Layout::parse("[ FL XX ]").unwrap_err().contains("XX"));
    }

    #[test]
    fn selections_parse_and_print() {
        for (text, shown) in [
            ("", "all"),
            ("all", "all"),
            ("MONO", "mono"),
            ("[ FL ]", "[ FL ]"),
            ("[ RR RL ]", "[ RL RR ]"),
            ("FL,FR", "[ FL FR ]"),
        ] {
            let s = Selection::parse(text).unwrap();
            assert_eq!(s.to_string(), shown, "{text}");
            assert_eq!(Selection::from_wire(s.to_wire()), s);
        }
        assert!(Selection::parse("[ left ]").is_err());
    }

    #[test]
    fn same_layout_is_identity() {
        assert!(mix(2, "all", &stereo()).is_identity());
        assert!(mix(6, "all", &Layout::default_for(6).unwrap()).is_identity());
    }

    #[test]
    fn one_side_of_a_pair_plays_on_every_output_channel() {
        let m = mix(2, "[ FL ]", &stereo());
        let mut out = [0.0; 2];
        m.apply(&[0.25, -0.5], &mut out);
        assert_eq!(out, [0.25, 0.25]);
        let m = mix(2, "[ FR ]", &Layout::default_for(1).unwrap());
        let mut out = [0.0; 1];
        m.apply(&[0.25, -0.5], &mut out);
        assert_eq!(out, [-0.5]);
    }

    #[test]
    fn mono_downmix_halves_and_cancels_anti_phase() {
        for out in [stereo(), Layout::default_for(1).unwrap()] {
            let m = mix(2, "mono", &out);
            let mut o = [0.0; 2];
            m.apply(&[0.8, 0.8], &mut o);
            assert!((o[0] - 0.8).abs() < 1e-6, "not louder than either side");
            m.apply(&[0.8, -0.8], &mut o);
            assert!(o[0].abs() < 1e-6, "anti-phase cancels");
            // A mono receiver of a stereo stream: the same as an output
            // of one channel with the selection `all`.
        }
        let m = mix(2, "all", &Layout::default_for(1).unwrap());
        assert!((m.coefficient(0, 0) - 0.5).abs() < 1e-6);
        assert!((m.coefficient(0, 1) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn five_one_to_stereo_follows_bs775_without_clipping() {
        let m = mix(6, "all", &stereo());
        // FL FR FC LFE RL RR: L = FL + FC/√2 + RL/√2, scaled by 1/(1+√2).
        let s = 1.0 + 2.0 * H;
        let want_l = [1.0 / s, 0.0, H / s, 0.0, H / s, 0.0];
        for (i, w) in want_l.iter().enumerate() {
            assert!((m.coefficient(0, i) - w).abs() < 1e-6, "L from {i}");
        }
        assert_eq!(m.coefficient(1, 3), 0.0, "no LFE");
        let mut o = [0.0; 2];
        m.apply(&[1.0; 6], &mut o);
        assert!(o.iter().all(|v| *v <= 1.0 + 1e-6), "{o:?}");
        // Mono from 5.1: centre 1, fronts 1/√2, surrounds 1/2, normalised.
        let m = mix(6, "mono", &stereo());
        let s = 1.0 + 2.0 * H + 1.0;
        assert!((m.coefficient(0, 2) - 1.0 / s).abs() < 1e-6);
        assert!((m.coefficient(1, 4) - 0.5 / s).abs() < 1e-6);
    }

    #[test]
    fn each_channel_of_five_one_reaches_its_own_receiver() {
        let six = Layout::default_for(6).unwrap();
        for (k, p) in six.positions().iter().enumerate() {
            let sel = format!("[ {} ]", p.name());
            let m = mix(6, &sel, &stereo());
            for i in 0..6 {
                let want = if i == k { 1.0 } else { 0.0 };
                assert_eq!(m.coefficient(0, i), want, "{sel} from {i}");
                assert_eq!(m.coefficient(1, i), want, "{sel} from {i}");
            }
        }
    }

    #[test]
    fn two_chosen_on_two_outputs_go_in_order_or_by_position() {
        let m = mix(6, "[ RL RR ]", &stereo());
        assert_eq!((m.coefficient(0, 4), m.coefficient(1, 5)), (1.0, 1.0));
        let swapped = Layout::parse("[ FR FL ]").unwrap();
        let m = mix(2, "[ FL FR ]", &swapped);
        assert_eq!((m.coefficient(0, 1), m.coefficient(1, 0)), (1.0, 1.0));
    }

    #[test]
    fn a_stereo_stream_on_a_five_one_output_stays_in_front() {
        let m = mix(2, "all", &Layout::default_for(6).unwrap());
        assert_eq!((m.coefficient(0, 0), m.coefficient(1, 1)), (1.0, 1.0));
        for o in 2..6 {
            assert_eq!((m.coefficient(o, 0), m.coefficient(o, 1)), (0.0, 0.0));
        }
        // A mono stream plays everywhere.
        let m = mix(1, "all", &Layout::default_for(6).unwrap());
        assert!((0..6).all(|o| m.coefficient(o, 0) == 1.0));
    }

    #[test]
    fn a_channel_the_stream_lacks_is_silent() {
        let m = mix(2, "[ RL ]", &stereo());
        assert!((0..2).all(|o| (0..2).all(|i| m.coefficient(o, i) == 0.0)));
    }
}

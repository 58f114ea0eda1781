//! The jitter buffer: received frames stored by their frame index in the
//! sender's session, already decoded to `f32` and mapped to the output's
//! channels.
//!
//! Each slot carries a tag naming which frame it holds, so reordering,
//! duplicates, holes and stale data from an earlier lap of the ring all fall
//! out of one comparison, with no per-packet bookkeeping.

use crate::channels::ChannelMix;
use crate::format::{SampleFormat, MAX_CHANNELS};

/// Outcome of [`JitterBuffer::insert`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insert {
    /// At least one new frame stored.
    New,
    /// Every frame was already there.
    Duplicate,
    /// Entirely before `keep_from`: played already or about to be.
    Late,
    /// Too far ahead of `keep_from` to fit the ring.
    TooFar,
}

/// Frames to store: a PCM payload as it came, or samples already decoded
/// (an Opus packet's, [`crate::opus`]).
#[derive(Clone, Copy, Debug)]
pub enum Samples<'a> {
    /// Interleaved samples in wire format.
    Wire(&'a [u8], SampleFormat),
    /// Interleaved `f32` samples.
    F32(&'a [f32]),
}

impl Samples<'_> {
    /// Samples held.
    fn len(&self) -> usize {
        match self {
            Samples::Wire(b, f) => b.len() / f.bytes(),
            Samples::F32(v) => v.len(),
        }
    }

    /// Samples `[from, from + out.len())` into `out`.
    fn read(&self, from: usize, out: &mut [f32]) {
        match self {
            Samples::Wire(b, f) => {
                let k = f.bytes();
                f.decode(&b[from * k..(from + out.len()) * k], out);
            }
            Samples::F32(v) => out.copy_from_slice(&v[from..from + out.len()]),
        }
    }
}

/// Ring of frames. Capacity is a power of two, fixed at creation.
#[derive(Clone, Debug)]
pub struct JitterBuffer {
    channels: usize,
    mask: u64,
    shift: u32,
    data: Vec<f32>,
    tags: Vec<u32>,
    newest: Option<u64>,
}

impl JitterBuffer {
    /// A ring of at least `min_frames` frames of `channels` samples.
    pub fn new(min_frames: usize, channels: usize) -> Self {
        let cap = min_frames.max(16).next_power_of_two();
        JitterBuffer {
            channels,
            mask: cap as u64 - 1,
            shift: cap.trailing_zeros(),
            data: vec![0.0; cap * channels],
            tags: vec![0; cap],
            newest: None,
        }
    }

    /// Capacity, frames.
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// Output channels per frame.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// One past the highest frame index stored since the last clear.
    pub fn end(&self) -> Option<u64> {
        self.newest
    }

    /// Empties the ring (O(capacity); on session changes only).
    pub fn clear(&mut self) {
        self.tags.fill(0);
        self.newest = None;
    }

    fn tag(&self, frame: u64) -> u32 {
        // Lap number, never 0 so that 0 means empty.
        ((frame >> self.shift) as u32).wrapping_add(1).max(1)
    }

    /// The frame `frame`, if stored.
    pub fn get(&self, frame: u64) -> Option<&[f32]> {
        let slot = (frame & self.mask) as usize;
        if self.tags[slot] == self.tag(frame) {
            Some(&self.data[slot * self.channels..(slot + 1) * self.channels])
        } else {
            None
        }
    }

    /// The slot that holds `frame` if stored, without checking its tag:
    /// for callers that just checked [`JitterBuffer::has`].
    pub fn get_unchecked_tag(&self, frame: u64) -> &[f32] {
        let slot = (frame & self.mask) as usize;
        &self.data[slot * self.channels..(slot + 1) * self.channels]
    }

    /// Whether `frame` is stored.
    pub fn has(&self, frame: u64) -> bool {
        self.tags[(frame & self.mask) as usize] == self.tag(frame)
    }

    /// Stores `frames` frames starting at index `first`, decoded from
    /// `payload` (wire format `sample`, [`ChannelMix::inputs`] per frame)
    /// and mixed to the ring's channels by `mix` (the receiver's choice of
    /// the stream's channels, [`crate::channels`]). Frames before
    /// `keep_from` (the playback position) are skipped; the ring keeps
    /// `[keep_from, keep_from + capacity)`. Does not allocate.
    pub fn insert(
        &mut self,
        first: u64,
        frames: usize,
        payload: &[u8],
        sample: SampleFormat,
        mix: &ChannelMix,
        keep_from: u64,
    ) -> Insert {
        self.insert_samples(
            first,
            frames,
            Samples::Wire(payload, sample),
            mix,
            keep_from,
        )
    }

    /// [`JitterBuffer::insert`] from [`Samples`] of either kind.
    pub fn insert_samples(
        &mut self,
        first: u64,
        frames: usize,
        payload: Samples<'_>,
        mix: &ChannelMix,
        keep_from: u64,
    ) -> Insert {
        let in_channels = mix.inputs();
        let last = first + frames as u64;
        if last <= keep_from {
            return Insert::Late;
        }
        if last > keep_from + self.capacity() {
            return Insert::TooFar;
        }
        let out_ch = self.channels;
        let mut fresh = false;
        let mut frame_in = [0f32; MAX_CHANNELS as usize];
        if payload.len() < frames * in_channels || mix.outputs() != out_ch {
            // The caller's parser checked the length; the mix is built for
            // this ring. Anything else is dropped, never a panic.
            return Insert::Duplicate;
        }
        let mut i = 0;
        while i < frames {
            let frame = first + i as u64;
            if frame < keep_from || self.has(frame) {
                i += 1;
                continue;
            }
            fresh = true;
            if mix.is_identity() {
                // Decode the whole run of missing frames that does not wrap
                // the ring in one call: the common case is the whole packet.
                let slot = (frame & self.mask) as usize;
                let room = self.capacity() as usize - slot;
                let mut run = 1;
                while run < (frames - i).min(room) && !self.has(frame + run as u64) {
                    run += 1;
                }
                payload.read(
                    i * in_channels,
                    &mut self.data[slot * out_ch..(slot + run) * out_ch],
                );
                for r in 0..run {
                    self.tags[slot + r] = self.tag(frame + r as u64);
                }
                i += run;
                continue;
            }
            let slot = (frame & self.mask) as usize;
            let dst = &mut self.data[slot * out_ch..(slot + 1) * out_ch];
            payload.read(i * in_channels, &mut frame_in[..in_channels]);
            mix.apply(&frame_in[..in_channels], dst);
            self.tags[slot] = self.tag(frame);
            i += 1;
        }
        self.newest = Some(self.newest.map_or(last, |n| n.max(last)));
        if fresh {
            Insert::New
        } else {
            Insert::Duplicate
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::{ChannelMask, Layout, Selection};

    /// The default mix from `inp` channels to `out`.
    fn mix(inp: u8, out: u8) -> ChannelMix {
        ChannelMix::new(
            ChannelMask(0),
            inp,
            Selection::All,
            &Layout::default_for(out).unwrap(),
        )
    }

    fn payload(values: &[f32]) -> Vec<u8> {
        let mut b = vec![0u8; values.len() * 4];
        SampleFormat::F32.encode(values, &mut b);
        b
    }

    #[test]
    fn stores_reordered_and_flags_duplicates_and_late() {
        let mut j = JitterBuffer::new(64, 2);
        let p = payload(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            j.insert(10, 2, &p, SampleFormat::F32, &mix(2, 2), 0),
            Insert::New
        );
        assert_eq!(
            j.insert(4, 2, &p, SampleFormat::F32, &mix(2, 2), 0),
            Insert::New
        );
        assert_eq!(
            j.insert(10, 2, &p, SampleFormat::F32, &mix(2, 2), 0),
            Insert::Duplicate
        );
        assert_eq!(
            j.insert(4, 2, &p, SampleFormat::F32, &mix(2, 2), 8),
            Insert::Late
        );
        assert_eq!(j.get(11), Some(&[3.0, 4.0][..]));
        assert_eq!(j.get(12), None);
        assert_eq!(j.end(), Some(12));
        assert_eq!(
            j.insert(200, 2, &p, SampleFormat::F32, &mix(2, 2), 100),
            Insert::TooFar
        );
    }

    #[test]
    fn a_lap_later_the_old_frame_is_gone() {
        let mut j = JitterBuffer::new(16, 1);
        let p = payload(&[0.5]);
        j.insert(3, 1, &p, SampleFormat::F32, &mix(1, 1), 0);
        assert!(j.has(3));
        assert!(!j.has(3 + 16));
        j.insert(19, 1, &payload(&[0.25]), SampleFormat::F32, &mix(1, 1), 10);
        assert!(!j.has(3));
        assert_eq!(j.get(19), Some(&[0.25][..]));
    }

    #[test]
    fn a_packet_across_the_wrap_and_a_partial_duplicate() {
        let mut j = JitterBuffer::new(16, 1);
        let vals: Vec<f32> = (0..6).map(|v| v as f32).collect();
        assert_eq!(
            j.insert(13, 6, &payload(&vals), SampleFormat::F32, &mix(1, 1), 10),
            Insert::New
        );
        for (i, v) in vals.iter().enumerate() {
            assert_eq!(j.get(13 + i as u64), Some(&[*v][..]));
        }
        // Overlaps frames 16..19 (stored) and brings 19..21 (new).
        let more: Vec<f32> = (0..5).map(|v| 10.0 + v as f32).collect();
        assert_eq!(
            j.insert(16, 5, &payload(&more), SampleFormat::F32, &mix(1, 1), 10),
            Insert::New
        );
        assert_eq!(j.get(16), Some(&[3.0][..]));
        assert_eq!(j.get(19), Some(&[13.0][..]));
        assert_eq!(j.get(20), Some(&[14.0][..]));
    }

    #[test]
    fn maps_channels() {
        let mut down = JitterBuffer::new(16, 1);
        down.insert(
            0,
            1,
            &payload(&[0.2, 0.4]),
            SampleFormat::F32,
            &mix(2, 1),
            0,
        );
        assert!((down.get(0).unwrap()[0] - 0.3).abs() < 1e-6);
        let mut up = JitterBuffer::new(16, 2);
        up.insert(0, 1, &payload(&[0.7]), SampleFormat::F32, &mix(1, 2), 0);
        assert_eq!(up.get(0).unwrap(), &[0.7, 0.7]);
    }
}

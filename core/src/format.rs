//! Sample formats and stream formats, and their conversion to and from the
//! interleaved `f32` samples that the rest of the core works on.

use crate::Error;

/// Lowest stream rate Bark accepts, in Hz.
pub const MIN_RATE: u32 = 8_000;
/// Highest stream rate Bark accepts, in Hz (hi-fi 192 kHz material).
pub const MAX_RATE: u32 = 192_000;
/// Most channels in one stream (7.1).
pub const MAX_CHANNELS: u8 = 8;

/// How one sample is carried on the wire. All are little-endian and
/// interleaved by frame.
/// Largest magnitude a decoded `F32` sample keeps: 1000, 60 dB above full
/// scale. Far beyond any real signal (PipeWire's float samples exceed ±1
/// only by what a mix clips), small enough that the resampler's sums of
/// taps and the crossfades stay finite.
pub const F32_DECODE_MAX: f32 = 1000.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SampleFormat {
    /// IEEE-754 binary32, 4 bytes. Lossless for what PipeWire's graph carries.
    #[default]
    F32 = 0,
    /// Signed 24-bit integer packed in 3 bytes (full scale ±8388607).
    S24 = 1,
    /// Signed 16-bit integer, 2 bytes (full scale ±32767).
    S16 = 2,
    /// Opus (RFC 6716): each packet's payload is one Opus packet, not PCM
    /// ([`crate::opus`]); 48 kHz, 1 or 2 channels. Its samples are `f32`
    /// once decoded.
    Opus = 3,
}

impl SampleFormat {
    /// Bytes of one sample on the wire; for [`SampleFormat::Opus`], whose
    /// payload is a packet of its own length, 4 (its decoded `f32`).
    pub const fn bytes(self) -> usize {
        match self {
            SampleFormat::F32 | SampleFormat::Opus => 4,
            SampleFormat::S24 => 3,
            SampleFormat::S16 => 2,
        }
    }

    /// Wire code of the format (byte in the audio header).
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// Format from its wire code.
    ///
    /// # Errors
    /// [`Error::Malformed`] for an unknown code.
    pub fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            0 => Ok(SampleFormat::F32),
            1 => Ok(SampleFormat::S24),
            2 => Ok(SampleFormat::S16),
            3 => Ok(SampleFormat::Opus),
            _ => Err(Error::Malformed("unknown sample format")),
        }
    }

    /// Parses the PipeWire spelling (`F32`, `F32LE`, `S24`, `S24LE`, `S16`,
    /// `S16LE`), or `OPUS`, case-insensitively.
    ///
    /// # Errors
    /// [`Error::Config`] naming the accepted values.
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name.to_ascii_uppercase().as_str() {
            "F32" | "F32LE" => Ok(SampleFormat::F32),
            "S24" | "S24LE" => Ok(SampleFormat::S24),
            "S16" | "S16LE" => Ok(SampleFormat::S16),
            "OPUS" => Ok(SampleFormat::Opus),
            _ => Err(Error::Config(
                "audio.format must be one of F32, S24, S16, OPUS".into(),
            )),
        }
    }

    /// PipeWire-style name (`F32LE`, `S24LE`, `S16LE`), or `OPUS`.
    pub const fn name(self) -> &'static str {
        match self {
            SampleFormat::F32 => "F32LE",
            SampleFormat::S24 => "S24LE",
            SampleFormat::S16 => "S16LE",
            SampleFormat::Opus => "OPUS",
        }
    }

    /// Encodes `samples` into `out`, which must hold exactly
    /// `samples.len() * self.bytes()` bytes. Integer formats clip to full
    /// scale and round to nearest. [`SampleFormat::Opus`] is not PCM:
    /// its packets come from [`crate::opus::OpusFrameEncoder`], and here
    /// it writes the samples as `F32`.
    pub fn encode(self, samples: &[f32], out: &mut [u8]) {
        debug_assert_eq!(out.len(), samples.len() * self.bytes());
        match self {
            SampleFormat::F32 | SampleFormat::Opus => {
                for (s, o) in samples.iter().zip(out.chunks_exact_mut(4)) {
                    o.copy_from_slice(&s.to_le_bytes());
                }
            }
            SampleFormat::S24 => {
                for (s, o) in samples.iter().zip(out.chunks_exact_mut(3)) {
                    let v = (s.clamp(-1.0, 1.0) * 8_388_607.0).round() as i32;
                    o.copy_from_slice(&v.to_le_bytes()[..3]);
                }
            }
            SampleFormat::S16 => {
                for (s, o) in samples.iter().zip(out.chunks_exact_mut(2)) {
                    let v = (s.clamp(-1.0, 1.0) * 32_767.0).round() as i16;
                    o.copy_from_slice(&v.to_le_bytes());
                }
            }
        }
    }

    /// Decodes `data` (a whole number of samples) into `out`, which must hold
    /// `data.len() / self.bytes()` samples. Non-finite `F32` samples become 0
    /// and finite ones are clamped to ±[`F32_DECODE_MAX`], so that a
    /// hostile sender cannot poison the resampler's state (a sum of
    /// near-`f32::MAX` samples overflows to infinity). [`SampleFormat::Opus`]
    /// reads `F32` (the decoder stage, [`crate::opus`], decodes packets).
    pub fn decode(self, data: &[u8], out: &mut [f32]) {
        debug_assert_eq!(out.len() * self.bytes(), data.len());
        match self {
            SampleFormat::F32 | SampleFormat::Opus => {
                for (o, d) in out.iter_mut().zip(data.chunks_exact(4)) {
                    let v = f32::from_le_bytes([d[0], d[1], d[2], d[3]]);
                    *o = if v.is_finite() {
                        v.clamp(-F32_DECODE_MAX, F32_DECODE_MAX)
                    } else {
                        0.0
                    };
                }
            }
            SampleFormat::S24 => {
                for (o, d) in out.iter_mut().zip(data.chunks_exact(3)) {
                    // Sign-extend by placing the 24 bits high and shifting back.
                    let v = i32::from_le_bytes([0, d[0], d[1], d[2]]) >> 8;
                    *o = v as f32 / 8_388_607.0;
                }
            }
            SampleFormat::S16 => {
                for (o, d) in out.iter_mut().zip(data.chunks_exact(2)) {
                    *o = i16::from_le_bytes([d[0], d[1]]) as f32 / 32_767.0;
                }
            }
        }
    }
}

/// The format of one stream: sample format, rate and channel count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    /// Wire sample format.
    pub sample: SampleFormat,
    /// Frames per second, Hz, in [`MIN_RATE`, `MAX_RATE`].
    pub rate: u32,
    /// Samples per frame, 1..=[`MAX_CHANNELS`].
    pub channels: u8,
}

impl Default for AudioFormat {
    /// F32, 48000 Hz, stereo.
    fn default() -> Self {
        AudioFormat {
            sample: SampleFormat::F32,
            rate: crate::settings::DEFAULT_RATE,
            channels: crate::settings::DEFAULT_CHANNELS,
        }
    }
}

impl AudioFormat {
    /// Checks rate and channel count against the settings table
    /// ([`crate::settings`]: `audio.rate`, `audio.channels`), and an Opus
    /// stream's against what Opus carries ([`crate::opus::check_format`]).
    ///
    /// # Errors
    /// [`Error::Config`] saying which value is out of range.
    pub fn validate(&self) -> Result<(), Error> {
        use crate::settings::{find, Role, Value};
        find(Role::Sink, "audio.rate").validate(Value::Int(self.rate.into()))?;
        find(Role::Sink, "audio.channels").validate(Value::Int(self.channels.into()))?;
        if self.sample == SampleFormat::Opus {
            crate::opus::check_format(self.rate, self.channels)?;
        }
        Ok(())
    }

    /// Bytes of one frame on the wire.
    pub const fn frame_bytes(&self) -> usize {
        self.sample.bytes() * self.channels as usize
    }

    /// Nominal duration of one frame, ns (1e9 / rate).
    pub fn frame_ns(&self) -> f64 {
        1e9 / self.rate as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_formats_round_trip_within_one_step() {
        let samples = [0.0f32, 0.5, -0.5, 1.0, -1.0, 0.123_456];
        for (fmt, step) in [
            (SampleFormat::S24, 1.0 / 8_388_607.0),
            (SampleFormat::S16, 1.0 / 32_767.0),
        ] {
            let mut bytes = vec![0u8; samples.len() * fmt.bytes()];
            fmt.encode(&samples, &mut bytes);
            let mut back = vec![0f32; samples.len()];
            fmt.decode(&bytes, &mut back);
            for (a, b) in samples.iter().zip(&back) {
                assert!((a - b).abs() <= step, "{fmt:?}: {a} -> {b}");
            }
        }
    }

    #[test]
    fn f32_is_bit_exact_and_non_finite_is_silenced() {
        let samples = [0.1f32, -0.7, f32::NAN, f32::INFINITY, 7.5];
        let mut bytes = [0u8; 20];
        SampleFormat::F32.encode(&samples, &mut bytes);
        // Huge finite samples (a hostile sender's) are clamped on decode.
        bytes[12..16].copy_from_slice(&f32::MAX.to_le_bytes());
        bytes[16..20].copy_from_slice(&(-1e30f32).to_le_bytes());
        let mut back = [0f32; 5];
        SampleFormat::F32.decode(&bytes, &mut back);
        assert_eq!(back, [0.1, -0.7, 0.0, F32_DECODE_MAX, -F32_DECODE_MAX]);
    }

    #[test]
    fn integer_formats_clip() {
        let mut bytes = [0u8; 4];
        SampleFormat::S16.encode(&[2.0, -2.0], &mut bytes);
        let mut back = [0f32; 2];
        SampleFormat::S16.decode(&bytes, &mut back);
        assert_eq!(back, [1.0, -1.0]);
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let mut f = AudioFormat::default();
        assert!(f.validate().is_ok());
        f.rate = 4000;
        assert!(f.validate().is_err());
        f.rate = 44_100;
        f.channels = 9;
        assert!(f.validate().is_err());
    }
}

//! Input for `bark stream`: decode a file or stdin (WAV, FLAC, Ogg Vorbis,
//! MP3, through symphonia), map its channels and resample it to the stream
//! rate (rubato's FFT resampler), and hand it out in quantum-sized chunks
//! from a thread, ahead of real time, so that decoding never stalls pacing.

use anyhow::{anyhow, bail, Context, Result};
use rubato::{FftFixedIn, Resampler};
use std::fs::File;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{Decoder, DecoderOptions, CODEC_TYPE_NULL};
use symphonia::core::errors::Error as SymError;
use symphonia::core::formats::{FormatOptions, FormatReader};
use symphonia::core::io::{MediaSourceStream, ReadOnlySource};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

/// Chunks decoded ahead of playback (each one quantum).
const AHEAD_CHUNKS: usize = 64;
/// Input frames per resampler call.
const RESAMPLE_CHUNK: usize = 1024;

/// What the input is.
#[derive(Clone, Debug)]
pub struct SourceInfo {
    /// Rate, Hz.
    pub rate: u32,
    /// Channels.
    pub channels: usize,
    /// Codec name, e.g. "vorbis".
    pub codec: String,
    /// Frames in the input, if the container says.
    pub frames: Option<u64>,
}

/// One input file (or stdin) being decoded.
struct FileDecoder {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn Decoder>,
    track_id: u32,
    info: SourceInfo,
    sample_buf: Option<SampleBuffer<f32>>,
}

fn open(input: &str) -> Result<FileDecoder> {
    let mut hint = Hint::new();
    let mss = if input == "-" {
        MediaSourceStream::new(
            Box::new(ReadOnlySource::new(std::io::stdin())),
            Default::default(),
        )
    } else {
        if let Some(ext) = std::path::Path::new(input)
            .extension()
            .and_then(|e| e.to_str())
        {
            hint.with_extension(ext);
        }
        let f = File::open(input).with_context(|| format!("--input {input}"))?;
        MediaSourceStream::new(Box::new(f), Default::default())
    };
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            mss,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(|e| anyhow!("--input {input}: not a WAV, FLAC, Ogg Vorbis or MP3 file ({e})"))?;
    let format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| anyhow!("--input {input}: no audio track"))?;
    let params = track.codec_params.clone();
    let decoder = symphonia::default::get_codecs()
        .make(&params, &DecoderOptions::default())
        .map_err(|e| anyhow!("--input {input}: unsupported codec ({e})"))?;
    let rate = params
        .sample_rate
        .ok_or_else(|| anyhow!("--input {input}: unknown sample rate"))?;
    let channels = params.channels.map(|c| c.count()).unwrap_or(0);
    let codec = symphonia::default::get_codecs()
        .get_codec(params.codec)
        .map(|d| d.short_name.to_string())
        .unwrap_or_else(|| "?".into());
    Ok(FileDecoder {
        track_id: track.id,
        format,
        decoder,
        info: SourceInfo {
            rate,
            channels,
            codec,
            frames: params.n_frames,
        },
        sample_buf: None,
    })
}

impl FileDecoder {
    /// The next block of interleaved samples; `None` at the end.
    fn next_block(&mut self) -> Result<Option<Vec<f32>>> {
        loop {
            let packet = match self.format.next_packet() {
                Ok(p) => p,
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None)
                }
                Err(SymError::ResetRequired) => return Ok(None),
                Err(e) => bail!("reading the input: {e}"),
            };
            if packet.track_id() != self.track_id {
                continue;
            }
            let decoded = match self.decoder.decode(&packet) {
                Ok(d) => d,
                // A corrupt packet: skip it, as players do.
                Err(SymError::DecodeError(e)) => {
                    log::warn!("skipping an undecodable packet: {e}");
                    continue;
                }
                Err(SymError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(None)
                }
                Err(e) => bail!("decoding the input: {e}"),
            };
            let spec = *decoded.spec();
            let ch = spec.channels.count();
            if self.info.channels == 0 {
                self.info.channels = ch;
            }
            if ch != self.info.channels {
                bail!(
                    "the input changed from {} to {ch} channels mid-stream",
                    self.info.channels
                );
            }
            let frames = decoded.capacity() as u64;
            let sb = match &mut self.sample_buf {
                Some(sb) if sb.capacity() as u64 >= frames * ch as u64 => sb,
                other => other.insert(SampleBuffer::<f32>::new(frames, spec)),
            };
            sb.copy_interleaved_ref(decoded);
            if sb.samples().is_empty() {
                continue;
            }
            return Ok(Some(sb.samples().to_vec()));
        }
    }
}

/// Maps interleaved `input` with `in_ch` channels onto `out_ch` planar
/// channels, appended to `planes`: mono is copied to every channel, any
/// input to mono is averaged, otherwise output channel c takes input
/// channel c modulo `in_ch`.
pub fn map_channels(input: &[f32], in_ch: usize, planes: &mut [Vec<f32>]) {
    let out_ch = planes.len();
    for frame in input.chunks_exact(in_ch) {
        if out_ch == 1 {
            planes[0].push(frame.iter().sum::<f32>() / in_ch as f32);
        } else {
            for (c, p) in planes.iter_mut().enumerate() {
                p.push(frame[c % in_ch]);
            }
        }
    }
}

/// Resampling and re-chunking stage, fed planar blocks at the input rate.
struct Pipeline {
    resampler: Option<FftFixedIn<f32>>,
    pending: Vec<Vec<f32>>,
    out_buf: Vec<Vec<f32>>,
    /// Output frames still to drop (the resampler's delay).
    skip: usize,
    chunk: Vec<f32>,
    quantum: usize,
    channels: usize,
    in_rate: u32,
    out_rate: u32,
    /// Frames fed in, at the input rate.
    in_frames: u64,
    /// Frames emitted, at the output rate.
    out_frames: u64,
    /// Emit no more than this many frames in all (set when flushing).
    limit: u64,
}

impl Pipeline {
    fn new(in_rate: u32, out_rate: u32, channels: usize, quantum: usize) -> Result<Self> {
        let resampler = if in_rate == out_rate {
            None
        } else {
            Some(
                FftFixedIn::<f32>::new(
                    in_rate as usize,
                    out_rate as usize,
                    RESAMPLE_CHUNK,
                    2,
                    channels,
                )
                .map_err(|e| anyhow!("resampling {in_rate} Hz to {out_rate} Hz: {e}"))?,
            )
        };
        let skip = resampler.as_ref().map_or(0, |r| r.output_delay());
        let out_buf = resampler
            .as_ref()
            .map_or_else(Vec::new, |r| r.output_buffer_allocate(true));
        Ok(Pipeline {
            resampler,
            pending: vec![Vec::new(); channels],
            out_buf,
            skip,
            chunk: Vec::with_capacity(quantum * channels),
            quantum,
            channels,
            in_rate,
            out_rate,
            in_frames: 0,
            out_frames: 0,
            limit: u64::MAX,
        })
    }

    /// Emits full chunks of output frames to `emit`; false once the
    /// consumer has gone.
    fn emit_frames(
        &mut self,
        planes: &[Vec<f32>],
        n: usize,
        emit: &mut dyn FnMut(Vec<f32>) -> bool,
    ) -> bool {
        let mut start = 0;
        if self.skip > 0 {
            start = self.skip.min(n);
            self.skip -= start;
        }
        for i in start..n {
            if self.out_frames >= self.limit {
                break;
            }
            self.out_frames += 1;
            for p in planes.iter().take(self.channels) {
                self.chunk.push(p[i]);
            }
            if self.chunk.len() == self.quantum * self.channels {
                let full = std::mem::replace(
                    &mut self.chunk,
                    Vec::with_capacity(self.quantum * self.channels),
                );
                if !emit(full) {
                    return false;
                }
            }
        }
        true
    }

    /// Feeds planar frames appended to `self.pending`.
    fn run(&mut self, emit: &mut dyn FnMut(Vec<f32>) -> bool) -> Result<bool> {
        let Some(mut rs) = self.resampler.take() else {
            let planes = std::mem::replace(&mut self.pending, vec![Vec::new(); self.channels]);
            let n = planes[0].len();
            return Ok(self.emit_frames(&planes, n, emit));
        };
        let r = self.resample(&mut rs, emit);
        self.resampler = Some(rs);
        r
    }

    fn resample(
        &mut self,
        rs: &mut FftFixedIn<f32>,
        emit: &mut dyn FnMut(Vec<f32>) -> bool,
    ) -> Result<bool> {
        loop {
            if self.pending[0].len() < rs.input_frames_next() {
                return Ok(true);
            }
            if !self.resample_once(rs, emit)? {
                return Ok(false);
            }
        }
    }

    /// One resampler call on the head of `self.pending`, its output
    /// emitted; false once the consumer has gone.
    fn resample_once(
        &mut self,
        rs: &mut FftFixedIn<f32>,
        emit: &mut dyn FnMut(Vec<f32>) -> bool,
    ) -> Result<bool> {
        let (used, made) = rs
            .process_into_buffer(&self.pending, &mut self.out_buf, None)
            .map_err(|e| anyhow!("resampling: {e}"))?;
        for p in &mut self.pending {
            p.drain(..used);
        }
        let out = std::mem::take(&mut self.out_buf);
        let ok = self.emit_frames(&out, made, emit);
        self.out_buf = out;
        Ok(ok)
    }

    /// Flushes what is left: the pending input, the resampler's delay, and
    /// a last partial chunk, so that the output is as long as the input.
    fn finish(mut self, emit: &mut dyn FnMut(Vec<f32>) -> bool) -> Result<()> {
        if let Some(mut rs) = self.resampler.take() {
            self.limit =
                (self.in_frames as f64 * self.out_rate as f64 / self.in_rate as f64).round() as u64;
            // Zero padding pushes the input left and the delay out; bounded
            // in case the resampler makes no progress.
            for _ in 0..1000 {
                if self.out_frames >= self.limit {
                    break;
                }
                let need = rs.input_frames_next();
                for p in &mut self.pending {
                    p.resize(p.len().max(need), 0.0);
                }
                if !self.resample_once(&mut rs, emit)? {
                    return Ok(());
                }
            }
        }
        if !self.chunk.is_empty() {
            let last = std::mem::take(&mut self.chunk);
            emit(last);
        }
        Ok(())
    }
}

/// A decoding thread and the chunks it produces.
pub struct Decoded {
    /// Interleaved chunks of `quantum` frames at the stream rate and
    /// channels (the last one may be shorter); closed at the end.
    pub chunks: Receiver<Vec<f32>>,
    /// The input's own format.
    pub info: SourceInfo,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Decoded {
    /// Waits for the decoder thread; its error if it failed.
    ///
    /// # Errors
    /// What stopped decoding.
    pub fn join(mut self) -> Result<()> {
        drop(self.chunks);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("the decoder thread panicked"),
            None => Ok(()),
        }
    }
}

/// Opens `input` (a path or "-") and starts decoding it, mapped to
/// `channels` and resampled to `rate`, in chunks of `quantum` frames;
/// `repeat` starts over at the end. Errors about the input itself (missing,
/// not audio) come back from here, before any audio is produced.
///
/// # Errors
/// An input that cannot be opened or decoded, or `repeat` with stdin.
pub fn start(
    input: &str,
    repeat: bool,
    rate: u32,
    channels: usize,
    quantum: usize,
) -> Result<Decoded> {
    if repeat && input == "-" {
        bail!("--loop needs a file: stdin cannot be read twice");
    }
    let first = open(input)?;
    let info = first.info.clone();
    if info.channels == 0 {
        // Some containers only know after the first packet.
        log::debug!("input channel count unknown until decoding starts");
    }
    let (tx, rx) = sync_channel::<Vec<f32>>(AHEAD_CHUNKS);
    let input = input.to_string();
    let thread = std::thread::Builder::new()
        .name("bark-decode".into())
        .spawn(move || decode_loop(first, &input, repeat, rate, channels, quantum, &tx))
        .context("starting the decoder thread")?;
    Ok(Decoded {
        chunks: rx,
        info,
        thread: Some(thread),
    })
}

fn decode_loop(
    mut dec: FileDecoder,
    input: &str,
    repeat: bool,
    rate: u32,
    channels: usize,
    quantum: usize,
    tx: &SyncSender<Vec<f32>>,
) -> Result<()> {
    let in_rate = dec.info.rate;
    let mut pipe = Pipeline::new(in_rate, rate, channels, quantum)?;
    let mut emit = |c: Vec<f32>| tx.send(c).is_ok();
    let mut got_any = false;
    loop {
        match dec.next_block()? {
            Some(block) => {
                got_any = true;
                map_channels(&block, dec.info.channels, &mut pipe.pending);
                pipe.in_frames += (block.len() / dec.info.channels.max(1)) as u64;
                if !pipe.run(&mut emit)? {
                    return Ok(());
                }
            }
            None if repeat && got_any => {
                dec = open(input)?;
                if dec.info.rate != in_rate {
                    bail!("--input {input} changed its rate while looping");
                }
            }
            None if !got_any => bail!("--input {input}: no audio in it"),
            None => break,
        }
    }
    pipe.finish(&mut emit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit WAV of `frames` frames of a 440 Hz tone at half scale, the
    /// same on each of its `channels`, in a fresh directory (deleted when
    /// the first value is dropped); its path.
    fn tone_wav(rate: u32, channels: u16, frames: usize) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tone.wav");
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..frames {
            let v = (i as f64 * 440.0 * std::f64::consts::TAU / rate as f64).sin() * 0.5;
            for _ in 0..channels {
                w.write_sample((v * 32767.0) as i16).unwrap();
            }
        }
        w.finalize().unwrap();
        let path = path.to_str().unwrap().to_string();
        (dir, path)
    }

    fn collect(d: Decoded) -> Vec<f32> {
        let mut all = Vec::new();
        for c in d.chunks.iter() {
            all.extend(c);
        }
        all
    }

    #[test]
    fn maps_channels() {
        let mut planes = vec![Vec::new(); 2];
        map_channels(&[0.5, -0.5], 1, &mut planes);
        assert_eq!(planes, vec![vec![0.5, -0.5], vec![0.5, -0.5]]);
        let mut mono = vec![Vec::new()];
        map_channels(&[0.2, 0.4, 1.0, 0.0], 2, &mut mono);
        assert_eq!(mono, vec![vec![0.3f32, 0.5]]);
        let mut four = vec![Vec::new(); 4];
        map_channels(&[1.0, 2.0], 2, &mut four);
        assert_eq!(four, vec![vec![1.0], vec![2.0], vec![1.0], vec![2.0]]);
    }

    #[test]
    fn decodes_wav_in_quantum_chunks_without_resampling() {
        let (_dir, p) = tone_wav(48_000, 1, 1000);
        let d = start(&p, false, 48_000, 2, 256).unwrap();
        assert_eq!((d.info.rate, d.info.channels), (48_000, 1));
        let mut sizes = Vec::new();
        let mut all = Vec::new();
        for c in d.chunks.iter() {
            sizes.push(c.len() / 2);
            all.extend(c);
        }
        assert_eq!(sizes, vec![256, 256, 256, 232]);
        // Mono copied to both channels, samples as written.
        let want = (1.0 * 440.0 * std::f64::consts::TAU / 48_000.0).sin() * 0.5;
        assert!((all[2] as f64 - want).abs() < 1e-4);
        assert_eq!(all[2], all[3]);
    }

    #[test]
    fn resamples_to_the_stream_rate_keeping_length_and_pitch() {
        let (_dir, p) = tone_wav(44_100, 2, 44_100);
        let d = start(&p, false, 48_000, 2, 480).unwrap();
        let all = collect(d);
        let frames = all.len() / 2;
        assert!(
            (frames as i64 - 48_000).abs() <= 1,
            "{frames} frames out of 1 s"
        );
        // Still a 440 Hz tone: count zero crossings over the middle 0.5 s.
        let left: Vec<f32> = all.chunks(2).map(|f| f[0]).collect();
        let mid = &left[12_000..36_000];
        let zc = mid
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count();
        assert!((zc as i64 - 440).abs() <= 2, "{zc} zero crossings");
        // Aligned with the source (the resampler's delay is removed): the
        // sine starts at 0 and rises.
        let want = (100.0 * 440.0 * std::f64::consts::TAU / 48_000.0).sin() * 0.5;
        assert!(
            (left[100] as f64 - want).abs() < 0.02,
            "{} vs {want}",
            left[100]
        );
    }

    #[test]
    fn loops_and_reports_bad_input() {
        let (dir, p) = tone_wav(48_000, 2, 300);
        let d = start(&p, true, 48_000, 2, 256).unwrap();
        // More than the file holds: it starts over.
        let got: usize = d.chunks.iter().take(10).map(|c| c.len() / 2).sum();
        assert_eq!(got, 2560);
        let junk = dir.path().join("junk.wav");
        std::fs::write(&junk, b"not audio at all").unwrap();
        let e = start(junk.to_str().unwrap(), false, 48_000, 2, 256)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a WAV, FLAC, Ogg Vorbis or MP3"), "{e}");
        let e = start("/nonexistent.wav", false, 48_000, 2, 256)
            .err()
            .unwrap();
        assert!(format!("{e:#}").contains("/nonexistent.wav"), "{e:#}");
        assert!(start("-", true, 48_000, 2, 256).is_err());
    }
}

//! bark-lab-codec: real music through Bark's Opus path offline, to judge
//! what a listener gets at a bitrate and frame size: the core's sender-side
//! encoder (`bark_core::opus::OpusFrameEncoder`, fed in the sink's
//! 1024-frame buffers) and the receiver's decoder stage
//! (`OpusDecoderStage`), every packet delivered, or every `--lose`-th one
//! concealed. The decoded audio is aligned by the packets' own frame
//! indices and the encoder's lookahead (as a receiver plays it) and
//! compared with the input, window by window.
//!
//! Prints, per setting: the measured bitrate of the Opus payloads, the
//! wire rate of the stream with Bark's and IP/UDP headers, and the
//! normalized correlation per window (mean of the channels): mean, p1,
//! min, and the share of windows below 0.99 and 0.9. `--json` writes the
//! same. The input must be 48 kHz (sox it first); stereo or mono.

use anyhow::{bail, Result};
use bark_core::opus::{OpusConfig, OpusDecoderStage, OpusFrameEncoder};
use bark_core::protocol::{AUDIO_HEADER_LEN, IP_UDP_OVERHEAD};
use clap::Parser;
use serde_json::json;
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Real music through Bark's Opus encoder and decoder: bitrate and fidelity")]
struct Args {
    /// 48 kHz WAV to encode.
    #[arg(long)]
    input: PathBuf,
    /// Bitrates to try, kbit/s.
    #[arg(long, value_delimiter = ',', default_value = "96,128,160,192,256")]
    kbps: Vec<u32>,
    /// Frame sizes to try, ms (2.5, 5, 10, 20).
    #[arg(long, value_delimiter = ',', default_value = "10")]
    frame_ms: Vec<String>,
    /// Correlation window, ms.
    #[arg(long, default_value_t = 100.0)]
    window_ms: f64,
    /// Conceal every Nth packet instead of decoding it (0: none).
    #[arg(long, default_value_t = 0)]
    lose: u64,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p / 100.0).round() as usize]
}

fn main() -> Result<()> {
    let a = Args::parse();
    let mut r = hound::WavReader::open(&a.input)?;
    let spec = r.spec();
    if spec.sample_rate != 48_000 || !(1..=2).contains(&spec.channels) {
        bail!("{}: want 48 kHz mono or stereo", a.input.display());
    }
    let ch = spec.channels as usize;
    let pcm: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            let full = (1i64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 / full))
                .collect::<Result<_, _>>()?
        }
    };
    let frames = pcm.len() / ch;
    let seconds = frames as f64 / 48_000.0;
    let mut results = Vec::new();
    for ms in &a.frame_ms {
        for &kbps in &a.kbps {
            let cfg = OpusConfig::new(kbps, ms);
            let mut enc = OpusFrameEncoder::new(ch as u8, &cfg, 1275)?;
            let l = enc.lookahead() as usize;
            let mut st = OpusDecoderStage::new()?;
            st.reset(ch as u8);
            let mut out = vec![0f32; pcm.len()];
            let (mut bytes, mut packets, mut seq) = (0usize, 0u64, 0u64);
            let n = cfg.frames;
            for (k, buf) in pcm.chunks(1024 * ch).enumerate() {
                let first = (k * 1024) as u64;
                enc.push(first, 0.0, 1.0, &buf[..buf.len() / ch * ch], &mut |e, x| {
                    bytes += x.len;
                    packets += 1;
                    let lost = a.lose > 0 && seq % a.lose == a.lose - 1 && seq > 0;
                    if !lost {
                        st.offer(seq, x.frame, n, e.packet(&x));
                    }
                    seq += 1;
                    // Holes are concealed once the next packet is in.
                    while let Some(b) = st.pop(u64::MAX) {
                        let at = b.frame as usize * ch;
                        let src = st.pcm(&b);
                        let end = (at + src.len()).min(out.len());
                        if at < end {
                            out[at..end].copy_from_slice(&src[..end - at]);
                        }
                    }
                });
            }
            // Decoded frame f is input frame f − L.
            let w = (a.window_ms * 48.0) as usize;
            let mut corr = Vec::new();
            let mut f = l + 4_800;
            while f + w <= frames {
                let mut c_sum = 0.0;
                for c in 0..ch {
                    let (mut xy, mut xx, mut yy) = (0.0f64, 0.0f64, 0.0f64);
                    for i in f..f + w {
                        let x = pcm[(i - l) * ch + c] as f64;
                        let y = out[i * ch + c] as f64;
                        xy += x * y;
                        xx += x * x;
                        yy += y * y;
                    }
                    c_sum += if xx > 1e-9 && yy > 1e-9 {
                        xy / (xx * yy).sqrt()
                    } else {
                        1.0
                    };
                }
                corr.push(c_sum / ch as f64);
                f += w;
            }
            if corr.is_empty() {
                bail!("input too short");
            }
            let kbit = bytes as f64 * 8.0 / seconds / 1e3;
            let wire = (bytes + packets as usize * (AUDIO_HEADER_LEN + IP_UDP_OVERHEAD)) as f64
                * 8.0
                / seconds
                / 1e3;
            let mean = corr.iter().sum::<f64>() / corr.len() as f64;
            let below99 = corr.iter().filter(|c| **c < 0.99).count() as f64 / corr.len() as f64;
            let below9 = corr.iter().filter(|c| **c < 0.9).count();
            let p1 = percentile(&mut corr, 1.0);
            let min = corr[0];
            println!(
                "opus {kbps} kbit/s, {ms} ms frames (lookahead {l}): payload {kbit:.1} kbit/s, on the wire {wire:.1} kbit/s; correlation per {} ms window: mean {mean:.4} p1 {p1:.4} min {min:.4}, below 0.99 {:.1} %, below 0.9 {below9} of {}",
                a.window_ms,
                below99 * 100.0,
                corr.len()
            );
            results.push(json!({
                "kbps": kbps, "frame_ms": ms, "lookahead_frames": l,
                "payload_kbit_s": kbit, "wire_kbit_s": wire,
                "windows": corr.len(), "mean": mean, "p1": p1, "min": min,
                "below_0_99": below99, "below_0_9": below9, "lose_every": a.lose,
            }));
        }
    }
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&results)?)?;
    }
    Ok(())
}

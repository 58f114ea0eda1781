//! Small PipeWire helpers shared by the lab's stream tools.

use anyhow::{Context, Result};
use pipewire as pw;
use pw::spa;

/// Serialize an `EnumFormat` pod for interleaved F32LE audio at `rate` Hz
/// with `channels` channels (FL FR for 2, MONO for 1). Fixing the rate to
/// the graph rate keeps the stream's adapter from resampling, so no
/// resampler delay sits between the graph and our samples.
pub fn f32_format_pod(rate: u32, channels: u32) -> Result<Vec<u8>> {
    let mut info = spa::param::audio::AudioInfoRaw::new();
    info.set_format(spa::param::audio::AudioFormat::F32LE);
    info.set_rate(rate);
    info.set_channels(channels);
    let mut pos = [0u32; spa::sys::SPA_AUDIO_MAX_CHANNELS as usize];
    match channels {
        1 => pos[0] = spa::sys::SPA_AUDIO_CHANNEL_MONO,
        2 => {
            pos[0] = spa::sys::SPA_AUDIO_CHANNEL_FL;
            pos[1] = spa::sys::SPA_AUDIO_CHANNEL_FR;
        }
        _ => anyhow::bail!("only 1 or 2 channels are supported"),
    }
    info.set_position(pos);
    let obj = spa::pod::Object {
        type_: spa::utils::SpaTypes::ObjectParamFormat.as_raw(),
        id: spa::param::ParamType::EnumFormat.as_raw(),
        properties: info.into(),
    };
    let bytes = spa::pod::serialize::PodSerializer::serialize(
        std::io::Cursor::new(Vec::new()),
        &spa::pod::Value::Object(obj),
    )
    .map_err(|e| anyhow::anyhow!("serializing format pod: {e:?}"))?
    .0
    .into_inner();
    Ok(bytes)
}

/// Current CLOCK_MONOTONIC time, ns: the clock `pw_time.now` uses.
pub fn monotonic_ns() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `pw_time.delay` (ticks of `num/den` s) as nanoseconds.
pub fn ticks_to_ns(ticks: i64, num: u32, den: u32) -> i64 {
    if den == 0 {
        return 0;
    }
    (i128::from(ticks) * i128::from(num) * 1_000_000_000 / i128::from(den)) as i64
}

/// Initialise PipeWire and connect to the daemon of `$XDG_RUNTIME_DIR`.
pub fn connect() -> Result<(
    pw::main_loop::MainLoopRc,
    pw::context::ContextRc,
    pw::core::CoreRc,
)> {
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None).context("pw main loop")?;
    let context = pw::context::ContextRc::new(&mainloop, None).context("pw context")?;
    let core = context
        .connect_rc(None)
        .context("connecting to PipeWire (is XDG_RUNTIME_DIR that of a running daemon?)")?;
    Ok((mainloop, context, core))
}

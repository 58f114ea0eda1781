//! Small PipeWire helpers shared by the lab's stream tools
//! (`bark-lab-record`, `bark-lab-play`, `bark-lab-delay`): connecting to the
//! host's daemon, an F32 stream format, and a main loop that stops on a
//! poll's verdict or on SIGINT/SIGTERM.

use anyhow::{Context, Result};
use pipewire as pw;
use pw::spa;
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Serialize an `EnumFormat` pod for interleaved F32LE audio at `rate` Hz
/// with `channels` channels in PipeWire's default layout for the count
/// (MONO for 1, FL FR for 2, ..., FL FR FC LFE RL RR for 6: the layouts
/// of [`bark_core::channels::Layout::default_for`]). Fixing the rate to
/// the graph rate keeps the stream's adapter from resampling, so no
/// resampler delay sits between the graph and our samples.
pub fn f32_format_pod(rate: u32, channels: u32) -> Result<Vec<u8>> {
    let mut info = spa::param::audio::AudioInfoRaw::new();
    info.set_format(spa::param::audio::AudioFormat::F32LE);
    info.set_rate(rate);
    info.set_channels(channels);
    let mut pos = [0u32; spa::sys::SPA_AUDIO_MAX_CHANNELS as usize];
    if channels == 1 {
        pos[0] = spa::sys::SPA_AUDIO_CHANNEL_MONO;
    } else {
        let layout = u8::try_from(channels)
            .ok()
            .and_then(bark_core::channels::Layout::default_for)
            .ok_or_else(|| anyhow::anyhow!("{channels} channels: only 1 to 8 are supported"))?;
        for (p, q) in pos.iter_mut().zip(layout.positions()) {
            *p = q.spa();
        }
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

/// Connect `stream` for interleaved F32LE audio at `rate` Hz with
/// `channels` channels ([`f32_format_pod`]), in `direction`, with
/// `MAP_BUFFERS | RT_PROCESS` and `flags`. `RT_PROCESS`: `process()` runs on
/// the data thread inside the graph cycle, which is what makes a buffer's
/// `pw_time` that of the cycle that plays it (the tools' stamps rely on it).
///
/// Errors: `channels` outside 1..=8, or `pw_stream_connect` failing.
pub fn connect_f32(
    stream: &pw::stream::Stream,
    direction: spa::utils::Direction,
    flags: pw::stream::StreamFlags,
    rate: u32,
    channels: u32,
) -> Result<()> {
    let fmt = f32_format_pod(rate, channels)?;
    let mut params = [spa::pod::Pod::from_bytes(&fmt).context("format pod")?];
    let flags = flags | pw::stream::StreamFlags::MAP_BUFFERS | pw::stream::StreamFlags::RT_PROCESS;
    stream.connect(direction, None, flags, &mut params)?;
    Ok(())
}

/// Block SIGINT and SIGTERM in the calling thread. Called before PipeWire
/// starts its data thread: threads inherit the mask, so the signals stay
/// pending for the main loop's signalfd ([`run`]) instead of killing the
/// process from a thread that does not block them (then nothing is written
/// and no teardown runs: a `bark-lab-play` stopped with TERM mid-play left
/// no WAV).
fn block_stop_signals() {
    // SAFETY: plain libc calls on a sigset we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Initialise PipeWire and connect to the daemon of `$XDG_RUNTIME_DIR`.
///
/// SIGINT and SIGTERM are blocked first (see `block_stop_signals`): the
/// caller must take them through [`run`], or they stay pending for good.
pub fn connect() -> Result<(
    pw::main_loop::MainLoopRc,
    pw::context::ContextRc,
    pw::core::CoreRc,
)> {
    block_stop_signals();
    pw::init();
    let mainloop = pw::main_loop::MainLoopRc::new(None).context("pw main loop")?;
    let context = pw::context::ContextRc::new(&mainloop, None).context("pw context")?;
    let core = context
        .connect_rc(None)
        .context("connecting to PipeWire (is XDG_RUNTIME_DIR that of a running daemon?)")?;
    Ok((mainloop, context, core))
}

/// Run `mainloop` until `poll`, called every `period`, returns an outcome,
/// or SIGINT or SIGTERM arrives (outcome `"signal"`); return the outcome.
/// Every wait in the lab is bounded: `poll` is where a tool puts its
/// deadline.
pub fn run(
    mainloop: &pw::main_loop::MainLoopRc,
    period: Duration,
    poll: impl Fn() -> Option<&'static str> + 'static,
) -> &'static str {
    let outcome = Rc::new(Cell::new("done"));
    let (ml, oc) = (mainloop.clone(), outcome.clone());
    let timer = mainloop.loop_().add_timer(move |_| {
        if let Some(o) = poll() {
            oc.set(o);
            ml.quit();
        }
    });
    let _ = timer.update_timer(Some(period), Some(period));
    let on_signal = || {
        let (ml, oc) = (mainloop.clone(), outcome.clone());
        move || {
            oc.set("signal");
            ml.quit();
        }
    };
    let _sigint = mainloop
        .loop_()
        .add_signal_local(pw::loop_::Signal::INT, on_signal());
    let _sigterm = mainloop
        .loop_()
        .add_signal_local(pw::loop_::Signal::TERM, on_signal());
    mainloop.run();
    outcome.get()
}

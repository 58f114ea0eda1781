//! The life of a loaded module, for either role: load (check arguments,
//! open sockets, create and connect the stream), the PipeWire callbacks,
//! and unload (free everything in order).
//!
//! State is split by thread. `Main` is touched only on the main loop
//! (PipeWire's callbacks other than `process` run there); `Rt` only on the
//! data thread in `process`; `Counters` are atomics read by both.

use crate::args::{self, SinkArgs, SourceArgs};
use crate::clock::{monotonic_ns, ClockMap};
use crate::ffi::{self, Hook, Properties};
use crate::pw::{self, CoreConn, DataLoop, DataSource, Stream, Timer};
use crate::sink::RtSink;
use crate::source::RtSource;
use crate::stats::{Counters, Reporter};
use crate::{log_debug, log_error, log_info, log_warn};
use libspa::param::audio::AudioInfoRaw;
use libspa_sys as spa;
use pipewire_sys as pws;
use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{
    AtomicPtr,
    Ordering::{Acquire, Relaxed, Release},
};

/// Which module this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `libpipewire-module-bark-sink`.
    Sink,
    /// `libpipewire-module-bark-source`.
    Source,
}

impl Role {
    /// The role for a module name or file name (`...bark-sink[.so]`).
    pub fn from_name(name: &str) -> Option<Role> {
        let base = name.rsplit('/').next().unwrap_or(name);
        let base = base.strip_suffix(".so").unwrap_or(base);
        if base.ends_with("bark-sink") {
            Some(Role::Sink)
        } else if base.ends_with("bark-source") {
            Some(Role::Source)
        } else {
            None
        }
    }

    /// Short name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Role::Sink => "bark-sink",
            Role::Source => "bark-source",
        }
    }

    /// `module.description`.
    pub fn description(self) -> &'static str {
        match self {
            Role::Sink => "Bark sender: a sink that streams to the network in sync",
            Role::Source => "Bark receiver: plays a Bark network stream in sync",
        }
    }

    /// `module.usage`.
    pub fn usage(self) -> &'static str {
        match self {
            Role::Sink => args::usage(bark_core::settings::Role::Sink),
            Role::Source => args::usage(bark_core::settings::Role::Source),
        }
    }
}

/// Why a load failed: a message for the log and the errno to return.
#[derive(Debug)]
pub struct LoadError {
    /// Positive errno.
    pub errno: i32,
    /// What went wrong, for users.
    pub msg: String,
}

impl LoadError {
    /// Bad arguments (EINVAL).
    pub fn invalid(msg: impl Into<String>) -> Self {
        LoadError {
            errno: libc::EINVAL,
            msg: msg.into(),
        }
    }

    /// A system error, keeping its errno.
    pub fn io(e: std::io::Error) -> Self {
        LoadError {
            errno: e.raw_os_error().unwrap_or(libc::EIO),
            msg: e.to_string(),
        }
    }

    /// A PipeWire failure (EIO unless errno says otherwise).
    pub fn pipewire(msg: impl Into<String>) -> Self {
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .filter(|&e| e != 0)
            .unwrap_or(libc::EIO);
        LoadError {
            errno,
            msg: msg.into(),
        }
    }
}

/// What a role hands to the common loader to create its stream.
pub struct Setup {
    /// Stream name.
    pub name: String,
    /// Stream properties.
    pub props: Properties,
    /// INPUT for the sink, OUTPUT for the source.
    pub direction: spa::spa_direction,
    /// Stream flags.
    pub flags: pws::pw_stream_flags,
    /// Serialized `EnumFormat`.
    pub format_pod: Vec<u8>,
    /// Stream rate, Hz (to check the negotiated format).
    pub rate: u32,
    /// Stream channels.
    pub channels: u8,
    /// One line about the configuration, logged once loaded.
    pub info: String,
}

// Boxed: the receiver is large and the two differ widely in size.
enum Rt {
    Sink(Box<RtSink>),
    Source(Box<RtSource>),
}

struct Main {
    // Field order is teardown order: the stream (which waits for the data
    // thread to leave `process`), then the core, then the timer.
    stream: Option<Stream>,
    // Data-loop sources (sockets, timer): removed on the data thread before
    // the sockets in `rt` close.
    data_sources: Vec<DataSource>,
    core: Option<CoreConn>,
    timer: Option<Timer>,
    module_hook: Hook,
    module: *mut pws::pw_impl_module,
    who: String,
    rate: u32,
    channels: u8,
    reporter: Reporter,
    unloading: bool,
    /// The output quantum last asked of the graph (receiver), frames.
    asked_quantum: u64,
    /// Main-loop timer ticks, to report once a second.
    ticks: u64,
}

/// One loaded module.
struct Bark {
    main: UnsafeCell<Main>,
    rt: UnsafeCell<Rt>,
    stream: AtomicPtr<pws::pw_stream>,
    /// The data loop and the receiver's timer source, to re-arm it from
    /// the data thread; set once at load.
    data_loop: UnsafeCell<Option<DataLoop>>,
    rt_timer: AtomicPtr<spa::spa_source>,
    /// The receiver's socket sources, to pause them from the data thread
    /// while graph cycles drain the sockets anyway; set once at load.
    rt_io: [AtomicPtr<spa::spa_source>; 2],
    /// The adapter's rate-match area (`io_changed`), or null: the receiver
    /// steers PipeWire's resampler through it with `bark.resampler =
    /// pipewire`. It lives in the adapter, as long as the stream.
    rate_match: AtomicPtr<spa::spa_io_rate_match>,
    counters: Counters,
    /// Test only: where to panic on purpose (see [`TEST_PANIC_ENV`]).
    test_panic: TestPanic,
}

/// **Test only:** `BARK_TEST_PANIC="<node.name>:<where>[,...]"`, read at
/// load, makes the named module panic on purpose, once, inside a real-time
/// callback: `process` (the stream's process callback) or `data` (its
/// data-loop socket/timer callback). It shows that the `catch_unwind` guard
/// around every `extern "C"` entry keeps the daemon alive and the module
/// idles (make test-pw checks it). Unset, it costs one branch per cycle.
pub const TEST_PANIC_ENV: &str = "BARK_TEST_PANIC";

/// Where a module was told to panic by [`TEST_PANIC_ENV`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TestPanic {
    process: bool,
    data: bool,
}

impl TestPanic {
    /// From the environment, for the module of stream name `name`.
    fn from_env(name: &str) -> TestPanic {
        let mut t = TestPanic::default();
        if let Ok(v) = std::env::var(TEST_PANIC_ENV) {
            for item in v.split(',') {
                match item.trim().split_once(':') {
                    Some((n, "process")) if n == name => t.process = true,
                    Some((n, "data")) if n == name => t.data = true,
                    _ => {}
                }
            }
        }
        t
    }
}

impl Bark {
    /// Main-thread state.
    ///
    /// # Safety
    /// Main thread only, and no other reference to `Main` alive.
    #[allow(clippy::mut_from_ref)]
    unsafe fn main(&self) -> &mut Main {
        &mut *self.main.get()
    }

    fn schedule_unload(&self, why: &str) {
        // SAFETY: main-thread callers only.
        let m = unsafe { self.main() };
        if !m.unloading {
            m.unloading = true;
            log_info!("{}: {why}; unloading the module", m.who);
            // SAFETY: the module is alive until its destroy event, which
            // is what this schedules.
            unsafe { pws::pw_impl_module_schedule_destroy(m.module) };
        }
    }

    /// Socket and timer work on the data thread, between graph cycles.
    fn service(&self, timer: bool) {
        if self.counters.panicked.load(Relaxed) {
            return;
        }
        if self.test_panic.data {
            panic!("{TEST_PANIC_ENV}: on purpose in a data-loop callback");
        }
        // SAFETY: data-loop sources run on the data thread, like `process`,
        // so they never overlap with it.
        let rt = unsafe { &mut *self.rt.get() };
        match rt {
            Rt::Sink(s) => s.serve(&self.counters),
            Rt::Source(s) => {
                s.pump(&self.counters);
                if timer {
                    let now = monotonic_ns();
                    let period = s.timer_schedule(now);
                    // SAFETY: set once at load, before any source existed.
                    if let Some(dl) = unsafe { *self.data_loop.get() } {
                        let t = self.rt_timer.load(Relaxed);
                        if !t.is_null() && period != s.current_interval_ns() {
                            s.set_current_interval_ns(period);
                            // SAFETY: the timer lives until teardown, which
                            // removes it on this thread first.
                            unsafe { dl.set_timer_raw(t, period, period) };
                        }
                        let io = s.wants_socket_wakeups(now);
                        if io != s.socket_wakeups() {
                            s.set_socket_wakeups(io);
                            for p in &self.rt_io {
                                let src = p.load(Relaxed);
                                if !src.is_null() {
                                    // SAFETY: like the timer, the sources
                                    // live until teardown removes them on
                                    // this thread.
                                    unsafe { dl.set_io_raw(src, io) };
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn process(&self) {
        let stream = self.stream.load(Relaxed);
        if stream.is_null() {
            return;
        }
        // SAFETY: only `process` (data thread) touches `rt` once the stream
        // exists; PipeWire never runs two `process` calls at once.
        let rt = unsafe { &mut *self.rt.get() };
        let panicked = self.counters.panicked.load(Relaxed);
        if self.test_panic.process && !panicked {
            panic!("{TEST_PANIC_ENV}: on purpose in process");
        }
        // SAFETY: this is the stream's process callback, stream is live.
        unsafe {
            match rt {
                Rt::Sink(s) if panicked => s.idle(stream),
                Rt::Source(s) if panicked => s.idle(stream),
                Rt::Sink(s) => s.process(stream, &self.counters),
                Rt::Source(s) => s.process(stream, self.rate_match.load(Acquire), &self.counters),
            }
        }
    }
}

/// Loads `role` into `module` with the arguments in `props`.
///
/// # Safety
/// `module` must be the module being initialized, on the main thread.
pub unsafe fn load(
    module: *mut pws::pw_impl_module,
    role: Role,
    props: &Properties,
) -> Result<(), LoadError> {
    let a: &dyn args::Lookup = props;
    for k in args::unknown_keys(a, role == Role::Sink) {
        log_warn!(
            "{}: ignoring unknown argument {k:?} (stream properties go in stream.props)",
            role.name()
        );
    }
    let clock = ClockMap::from_env(monotonic_ns()).map_err(LoadError::invalid)?;
    if !clock.is_identity() {
        log_warn!(
            "{}: {} is set: test-only clock skew {clock:?}",
            role.name(),
            crate::clock::TEST_CLOCK_ENV
        );
    }
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default();
    let (rt, setup) = match role {
        Role::Sink => {
            let args = SinkArgs::parse(a).map_err(LoadError::invalid)?;
            let (rt, s) = crate::sink::setup(&args, clock, &host)?;
            (Rt::Sink(Box::new(rt)), s)
        }
        Role::Source => {
            let args = SourceArgs::parse(a).map_err(LoadError::invalid)?;
            let (rt, s) = crate::source::setup(&args, clock, &host)?;
            (Rt::Source(Box::new(rt)), s)
        }
    };

    let bark = Box::new(Bark {
        main: UnsafeCell::new(Main {
            stream: None,
            data_sources: Vec::new(),
            core: None,
            timer: None,
            module_hook: Hook::new(),
            module,
            who: format!("{} {}", role.name(), setup.name),
            rate: setup.rate,
            channels: setup.channels,
            reporter: Reporter::default(),
            unloading: false,
            asked_quantum: 0,
            ticks: 0,
        }),
        rt: UnsafeCell::new(rt),
        stream: AtomicPtr::new(std::ptr::null_mut()),
        data_loop: UnsafeCell::new(None),
        rt_timer: AtomicPtr::new(std::ptr::null_mut()),
        rt_io: [
            AtomicPtr::new(std::ptr::null_mut()),
            AtomicPtr::new(std::ptr::null_mut()),
        ],
        rate_match: AtomicPtr::new(std::ptr::null_mut()),
        counters: Counters::default(),
        test_panic: TestPanic::from_env(&setup.name),
    });
    if bark.test_panic != TestPanic::default() {
        log_warn!(
            "{}: {TEST_PANIC_ENV} is set: test-only panic in {:?}",
            role.name(),
            bark.test_panic
        );
    }
    let data = &*bark as *const Bark as *mut c_void;
    // Read before the stream exists: from then on only the data thread may
    // touch `rt`.
    let (fds, interval): (Vec<std::os::fd::RawFd>, u64) = match &*bark.rt.get() {
        Rt::Sink(s) => (vec![s.fd()], SINK_TIMER_NS),
        Rt::Source(s) => (s.fds().to_vec(), s.timer_schedule(monotonic_ns())),
    };

    // From here on, an error drops `bark`, which releases whatever exists.
    // `Main` is borrowed afresh after each PipeWire call, because those may
    // emit events that borrow it too.
    let context = pws::pw_impl_module_get_context(module);
    let mut core = CoreConn::new(context).map_err(LoadError::pipewire)?;
    core.listen(&PROXY_EVENTS, &CORE_EVENTS, data);
    let core_ptr = core.as_ptr();
    bark.main().core = Some(core);

    let stream = Stream::new(core_ptr, &setup.name, setup.props, &STREAM_EVENTS, data)
        .map_err(LoadError::pipewire)?;
    bark.stream.store(stream.as_ptr(), Relaxed);
    let stream_ptr = stream.as_ptr();
    bark.main().stream = Some(stream);
    pw::connect(stream_ptr, setup.direction, setup.flags, &setup.format_pod)
        .map_err(LoadError::pipewire)?;

    // Sockets and a timer on the data loop: datagrams are handled when they
    // arrive and time exchanges keep their pace whether or not the graph
    // runs this node.
    let dl = DataLoop::of(context).ok_or_else(|| LoadError::pipewire("no data loop"))?;
    *bark.data_loop.get() = Some(dl);
    for (i, fd) in fds.into_iter().enumerate() {
        let src = dl
            .add_io(fd, on_data_io, data)
            .map_err(LoadError::pipewire)?;
        if let Some(slot) = bark.rt_io.get(i) {
            slot.store(src.as_raw(), Relaxed);
        }
        bark.main().data_sources.push(src);
    }
    let timer = dl
        .add_timer(on_data_timer, data, interval)
        .map_err(LoadError::pipewire)?;
    bark.rt_timer.store(timer.as_raw(), Relaxed);
    bark.main().data_sources.push(timer);

    let main_loop = pws::pw_context_get_main_loop(context);
    let timer =
        Timer::new(main_loop, on_timer, data, MAIN_TIMER_NS).map_err(LoadError::pipewire)?;
    bark.main().timer = Some(timer);

    let hook = bark.main().module_hook.as_ptr();
    pws::pw_impl_module_add_listener(module, hook, &MODULE_EVENTS, data);
    log_info!("{}: loaded: {}", bark.main().who, setup.info);
    let _ = Box::into_raw(bark);
    Ok(())
}

unsafe fn with<R>(data: *mut c_void, what: &str, default: R, f: impl FnOnce(&Bark) -> R) -> R {
    if data.is_null() {
        return default;
    }
    let b = &*(data as *const Bark);
    ffi::guard(&b.counters.panicked, what, default, || f(b))
}

unsafe extern "C" fn on_module_destroy(data: *mut c_void) {
    ffi::guard(
        &std::sync::atomic::AtomicBool::new(false),
        "module destroy",
        (),
        || {
            let bark = Box::from_raw(data as *mut Bark);
            let m = bark.main();
            m.module_hook.remove();
            log_info!("{}: unloading", m.who);
            // Teardown order is Main's field order; then the sockets in `rt`.
            drop(bark);
        },
    );
}

/// Sink: the socket is checked, and the endpoint polled (status packets,
/// and while the sink is idle its sync messages, 10 a second), at least
/// this often, ns: half the idle sync spacing, so that none is skipped.
const SINK_TIMER_NS: u64 = bark_core::sender::IDLE_SYNC_INTERVAL_NS / 2;

unsafe extern "C" fn on_data_io(data: *mut c_void, _fd: c_int, _mask: u32) {
    with(data, "socket", (), |b| b.service(false));
}

unsafe extern "C" fn on_data_timer(data: *mut c_void, _expirations: u64) {
    with(data, "data timer", (), |b| b.service(true));
}

unsafe extern "C" fn on_process(data: *mut c_void) {
    with(data, "process", (), |b| b.process());
}

/// PipeWire destroys a stream itself when its core goes away (daemon
/// shutdown, lost connection): forget it, stop `process` from touching it,
/// and unload.
unsafe extern "C" fn on_stream_destroy(data: *mut c_void) {
    with(data, "stream destroy", (), |b| {
        b.stream.store(std::ptr::null_mut(), Relaxed);
        b.rate_match.store(std::ptr::null_mut(), Release);
        if let Some(s) = b.main().stream.as_mut() {
            s.forget();
        }
        b.schedule_unload("stream destroyed");
    });
}

unsafe extern "C" fn on_state_changed(
    data: *mut c_void,
    old: pws::pw_stream_state,
    state: pws::pw_stream_state,
    error: *const c_char,
) {
    with(data, "state_changed", (), |b| {
        let m = b.main();
        let err = ffi::str_from(error).unwrap_or("");
        match state {
            pws::pw_stream_state_PW_STREAM_STATE_ERROR => {
                log_error!("{}: stream error: {err}", m.who)
            }
            _ => log_info!(
                "{}: stream {} -> {}",
                m.who,
                pw::state_name(old),
                pw::state_name(state)
            ),
        }
        if state == pws::pw_stream_state_PW_STREAM_STATE_UNCONNECTED && old != state {
            b.schedule_unload("stream disconnected");
        }
    });
}

/// The adapter hands the stream its IO areas; keep the rate-match one
/// (PipeWire 0.3.65 has no `pw_stream_set_rate`).
unsafe extern "C" fn on_io_changed(data: *mut c_void, id: u32, area: *mut c_void, size: u32) {
    with(data, "io_changed", (), |b| {
        if id != spa::SPA_IO_RateMatch {
            return;
        }
        let ok = !area.is_null() && size as usize >= std::mem::size_of::<spa::spa_io_rate_match>();
        let p = if ok {
            area as *mut spa::spa_io_rate_match
        } else {
            std::ptr::null_mut()
        };
        b.rate_match.store(p, Release);
    });
}

unsafe extern "C" fn on_param_changed(data: *mut c_void, id: u32, param: *const spa::spa_pod) {
    with(data, "param_changed", (), |b| {
        if id != spa::SPA_PARAM_Format || param.is_null() {
            return;
        }
        let m = b.main();
        let mut info = AudioInfoRaw::new();
        let pod = libspa::pod::Pod::from_raw(param);
        if info.parse(pod).is_err() {
            log_warn!("{}: cannot parse the negotiated format", m.who);
            return;
        }
        let positions: Vec<String> = info.position()[..info.channels().min(64) as usize]
            .iter()
            .map(|p| crate::format::channel_name(*p))
            .collect();
        log_info!(
            "{}: negotiated {} {} Hz {} ch [{}]",
            m.who,
            crate::format::sample_format_name(info.format().as_raw()),
            info.rate(),
            info.channels(),
            positions.join(" ")
        );
        if info.rate() != m.rate || info.channels() != m.channels as u32 {
            log_warn!("{}: expected {} Hz {} ch", m.who, m.rate, m.channels);
        }
    });
}

/// Main-loop timer period, ns: a receiver's change of output quantum is
/// applied within this (its core plans with the new quantum meanwhile);
/// the counters are reported every tenth tick.
const MAIN_TIMER_NS: u64 = 100_000_000;

unsafe extern "C" fn on_timer(data: *mut c_void, _expirations: u64) {
    with(data, "timer", (), |b| {
        let m = b.main();
        m.ticks += 1;
        let want = b.counters.wanted_quantum.load(Relaxed);
        if want > 0 && want != m.asked_quantum {
            if let Some(s) = m.stream.as_ref() {
                // The graph runs at the smallest node.latency asked; this
                // receiver's share of the session latency is what is left
                // after its output's downstream latency.
                let mut p = Properties::new();
                p.set("node.latency", &format!("{want}/{}", m.rate));
                s.update_properties(&p);
                if m.asked_quantum > 0 {
                    log_info!(
                        "{}: asking the graph for {want}-frame cycles: the output adds {:.1} ms, the session latency is {:.1} ms",
                        m.who,
                        b.counters.downstream_ns.load(Relaxed) as f64 / 1e6,
                        b.counters.latency_ns.load(Relaxed) as f64 / 1e6
                    );
                }
                m.asked_quantum = want;
            }
        }
        if m.ticks.is_multiple_of(1_000_000_000 / MAIN_TIMER_NS) {
            m.reporter.tick(&m.who, &b.counters);
        }
    });
}

unsafe extern "C" fn on_core_proxy_destroy(data: *mut c_void) {
    with(data, "core destroy", (), |b| {
        if let Some(c) = b.main().core.as_mut() {
            c.forget();
        }
        b.schedule_unload("connection to the core destroyed");
    });
}

unsafe extern "C" fn on_core_error(
    data: *mut c_void,
    id: u32,
    _seq: c_int,
    res: c_int,
    message: *const c_char,
) {
    with(data, "core error", (), |b| {
        let m = b.main();
        let msg = ffi::str_from(message).unwrap_or("");
        let e = std::io::Error::from_raw_os_error(-res);
        if id == pws::PW_ID_CORE {
            log_error!("{}: core error: {e} ({msg})", m.who);
        } else {
            // Errors on the stream's own objects also reach the stream,
            // which logs them through state_changed.
            log_debug!("{}: error on object {id}: {e} ({msg})", m.who);
        }
        if id == pws::PW_ID_CORE && res == -libc::EPIPE {
            b.schedule_unload("connection to the core lost");
        }
    });
}

static MODULE_EVENTS: pws::pw_impl_module_events = pws::pw_impl_module_events {
    version: pws::PW_VERSION_IMPL_MODULE_EVENTS,
    destroy: Some(on_module_destroy),
    free: None,
    initialized: None,
    registered: None,
};

static STREAM_EVENTS: pws::pw_stream_events = pws::pw_stream_events {
    version: pws::PW_VERSION_STREAM_EVENTS,
    destroy: Some(on_stream_destroy),
    state_changed: Some(on_state_changed),
    control_info: None,
    io_changed: Some(on_io_changed),
    param_changed: Some(on_param_changed),
    add_buffer: None,
    remove_buffer: None,
    process: Some(on_process),
    drained: None,
    command: None,
    trigger_done: None,
};

static PROXY_EVENTS: pws::pw_proxy_events = pws::pw_proxy_events {
    version: pws::PW_VERSION_PROXY_EVENTS,
    destroy: Some(on_core_proxy_destroy),
    bound: None,
    removed: None,
    done: None,
    error: None,
};

static CORE_EVENTS: pws::pw_core_events = pws::pw_core_events {
    version: pws::PW_VERSION_CORE_EVENTS,
    info: None,
    done: None,
    ping: None,
    error: Some(on_core_error),
    remove_id: None,
    bound_id: None,
    add_mem: None,
    remove_mem: None,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_from_module_names() {
        assert_eq!(
            Role::from_name("libpipewire-module-bark-sink"),
            Some(Role::Sink)
        );
        assert_eq!(
            Role::from_name("/usr/lib/pipewire-0.3/libpipewire-module-bark-source.so"),
            Some(Role::Source)
        );
        assert_eq!(Role::from_name("libpipewire-module-rtp-sink"), None);
    }
}

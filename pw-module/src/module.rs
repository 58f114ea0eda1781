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
use crate::pw::{self, CoreConn, DataLoop, DataSource, MainSource, Stream};
use crate::sink::RtSink;
use crate::source::RtSource;
use crate::stats::{Counters, Reporter};
use crate::{log_debug, log_error, log_info, log_warn};
use bark_core::command::{SET_MUTE, SET_VOLUME};
use libspa::param::audio::AudioInfoRaw;
use libspa_sys as spa;
use pipewire_sys as pws;
use std::cell::UnsafeCell;
use std::ffi::{c_char, c_int, c_void};
use std::sync::atomic::{
    AtomicBool, AtomicPtr,
    Ordering::{Acquire, Relaxed, Release},
};
use std::sync::OnceLock;

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
    /// The node's command socket (which saves its settings), served on
    /// the main loop.
    pub command: Option<bark_io::command::CommandPort>,
    /// Its DNS-SD advertisement (mDNS's own thread), while loaded.
    pub advert: Option<bark_io::discovery::Advertiser>,
    /// `bark.unicast`: the search for the sender to subscribe to.
    pub finder: Option<bark_io::discovery::SenderFinder>,
}

// Boxed: the receiver is large and the two differ widely in size.
enum Rt {
    Sink(Box<RtSink>),
    Source(Box<RtSource>),
}

struct Main {
    // Teardown order ([`free`]): the stream (which waits for the data
    // thread to leave `process`), the data-loop sources, the core, the
    // timer; then the rest of the state.
    stream: Option<Stream>,
    // Data-loop sources (sockets, timer): removed on the data thread before
    // the sockets in `rt` close.
    data_sources: Vec<DataSource>,
    core: Option<CoreConn>,
    timer: Option<MainSource>,
    /// The command socket ([`bark_io::command`]) and its main-loop
    /// source; the socket drops with the state, after the source.
    command: Option<bark_io::command::CommandPort>,
    command_source: Option<MainSource>,
    /// The DNS-SD advertisement: goodbye and its thread's end at unload.
    advert: Option<bark_io::discovery::Advertiser>,
    /// `bark.unicast`: polled by the timer; a sender found goes to the
    /// data thread through `sender_box`.
    finder: Option<bark_io::discovery::SenderFinder>,
    /// A found sender the data thread has not been handed yet.
    sender_pending: Option<std::net::SocketAddr>,
    /// Settings the data thread has not been handed yet (its mailbox was
    /// being read): posted again at the next timer tick.
    settings_pending: bool,
    /// Settings changed since they were last saved: saved at the next
    /// whole second of the timer (a file write, at most once a second).
    settings_dirty: bool,
    /// Restored volume and mute still to be set on the stream: its
    /// controls exist once it is connected (PAUSED); until then its
    /// `control_info` reports defaults, not a change made on this host.
    restore_pending: bool,
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

/// The data-thread state behind a try-lock that never blocks or spins.
/// `process` and the data-loop sources normally run on one thread, so it is
/// never contended; but PipeWire 1.1 and later can run the node on another
/// of several data loops (`context.num-data-loops`) than the one
/// `pw_context_get_data_loop` gives us for the sockets, and then the two
/// callbacks could overlap: the lock makes the later one skip its turn
/// instead of racing.
struct RtCell<T> {
    busy: AtomicBool,
    rt: UnsafeCell<T>,
}

impl<T> RtCell<T> {
    fn new(rt: T) -> Self {
        RtCell {
            busy: AtomicBool::new(false),
            rt: UnsafeCell::new(rt),
        }
    }

    /// Runs `f` on the state, or returns `None` when another callback
    /// holds it. No allocation, no blocking.
    fn try_with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.busy.swap(true, Acquire) {
            return None;
        }
        /// Frees the lock when `f` returns or unwinds.
        struct Unlock<'a>(&'a AtomicBool);
        impl Drop for Unlock<'_> {
            fn drop(&mut self) {
                self.0.store(false, Release);
            }
        }
        let _unlock = Unlock(&self.busy);
        // SAFETY: `busy` was clear and is ours until `_unlock` drops, after
        // `f` (also when it unwinds); every access goes through here, so
        // this is the only reference to the state meanwhile.
        Some(f(unsafe { &mut *self.rt.get() }))
    }
}

/// One loaded module. It lives from `load` to [`free`], behind the raw
/// pointer that every PipeWire registration carries as its `data`.
struct Bark {
    main: UnsafeCell<Main>,
    rt: RtCell<Rt>,
    stream: AtomicPtr<pws::pw_stream>,
    /// The data loop, to re-arm the receiver's timer and sockets from the
    /// data thread; set once at load, before any source exists.
    data_loop: OnceLock<DataLoop>,
    rt_timer: AtomicPtr<spa::spa_source>,
    /// The receiver's socket sources, to pause them from the data thread
    /// while graph cycles drain the sockets anyway; set once at load.
    rt_io: [AtomicPtr<spa::spa_source>; 2],
    /// The adapter's rate-match area (`io_changed`), or null: the receiver
    /// steers PipeWire's resampler through it with `bark.resampler =
    /// pipewire`. It lives in the adapter, as long as the stream.
    rate_match: AtomicPtr<spa::spa_io_rate_match>,
    counters: Counters,
    /// Settings (and the command port) from the main loop to the data
    /// thread's receiver.
    settings_box: crate::mailbox::Mailbox<(bark_core::command::Settings, u16)>,
    /// A sender found with DNS-SD (`bark.unicast`), from the main loop to
    /// the data thread's endpoint.
    sender_box: crate::mailbox::Mailbox<std::net::SocketAddr>,
    /// Set while the main loop changes the stream's own controls, whose
    /// `control_info` echo is then ours, not the desktop's.
    applying: AtomicBool,
    /// Test only: where to panic on purpose (see [`TEST_PANIC_ENV`]).
    test_panic: TestPanic,
    /// Last, so that it drops after everything else: the last instance
    /// to go unregisters the log topic.
    _log: crate::log::Instance,
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
    /// Main thread only, and no other reference to `Main` alive: PipeWire
    /// runs main-loop callbacks one at a time, and those we make from
    /// them emit nothing into our listeners (`load` and [`free`] borrow
    /// afresh around the calls that do).
    #[allow(clippy::mut_from_ref)]
    unsafe fn main(&self) -> &mut Main {
        // SAFETY: the contract above.
        unsafe { &mut *self.main.get() }
    }

    /// Asks PipeWire to unload the module (it then emits its destroy event).
    ///
    /// # Safety
    /// Main thread only, with no `&mut Main` alive.
    unsafe fn schedule_unload(&self, why: &str) {
        // SAFETY: the contract above.
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
    ///
    /// # Safety
    /// Only from a callback of a source on `data_loop` (its thread).
    unsafe fn service(&self, timer: bool) {
        if self.counters.panicked.load(Relaxed) {
            return;
        }
        if self.test_panic.data {
            panic!("{TEST_PANIC_ENV}: on purpose in a data-loop callback");
        }
        // Busy: `process` runs on another data loop right now (see
        // RtCell) and serves the sockets itself; the next wake-up comes.
        let _ = self.rt.try_with(|rt| match rt {
            Rt::Sink(s) => {
                if let Some((settings, port)) = self.settings_box.take() {
                    s.apply_settings(&settings, port);
                }
                s.serve(&self.counters)
            }
            Rt::Source(s) => {
                if let Some((settings, port)) = self.settings_box.take() {
                    s.apply_settings(&settings, port);
                }
                if let Some(to) = self.sender_box.take() {
                    s.subscribe_to(to);
                }
                s.pump(&self.counters);
                if timer {
                    let now = monotonic_ns();
                    let period = s.timer_schedule(now);
                    if let Some(dl) = self.data_loop.get() {
                        let t = self.rt_timer.load(Relaxed);
                        if !t.is_null() && period != s.current_interval_ns() {
                            s.set_current_interval_ns(period);
                            // SAFETY: our timer source on `dl`, which lives
                            // until `free` removes it (on this thread, after
                            // this callback); this is its thread (the
                            // contract).
                            unsafe { dl.set_timer_raw(t, period, period) };
                        }
                        let io = s.wants_socket_wakeups(now);
                        if io != s.socket_wakeups() {
                            s.set_socket_wakeups(io);
                            for p in &self.rt_io {
                                let src = p.load(Relaxed);
                                if !src.is_null() {
                                    // SAFETY: like the timer: our io
                                    // sources on `dl`, alive until `free`
                                    // removes them; this is their thread.
                                    unsafe { dl.set_io_raw(src, io) };
                                }
                            }
                        }
                    }
                }
            }
        });
    }

    /// One graph cycle.
    ///
    /// # Safety
    /// Only from the process callback of the stream in `self.stream`.
    unsafe fn process(&self) {
        let stream = self.stream.load(Relaxed);
        if stream.is_null() {
            return;
        }
        let panicked = self.counters.panicked.load(Relaxed);
        if self.test_panic.process && !panicked {
            panic!("{TEST_PANIC_ENV}: on purpose in process");
        }
        let rate_match = self.rate_match.load(Acquire);
        // Busy: a socket callback runs on another data loop right now (see
        // RtCell); this cycle is skipped, as an xrun would be.
        let _ = self.rt.try_with(|rt| {
            // SAFETY: the process callback of the live `stream` (the
            // contract; `on_stream_destroy` clears it before the stream
            // goes); `rate_match` is null or the area its `io_changed`
            // gave, which lives as long as the stream.
            unsafe {
                match rt {
                    Rt::Sink(s) if panicked => s.idle(stream),
                    Rt::Source(s) if panicked => s.idle(stream),
                    Rt::Sink(s) => {
                        if let Some((settings, port)) = self.settings_box.take() {
                            s.apply_settings(&settings, port);
                        }
                        s.process(stream, &self.counters)
                    }
                    Rt::Source(s) => {
                        if let Some((settings, port)) = self.settings_box.take() {
                            s.apply_settings(&settings, port);
                        }
                        if let Some(to) = self.sender_box.take() {
                            s.subscribe_to(to);
                        }
                        s.process(stream, rate_match, &self.counters)
                    }
                }
            }
        });
    }
}

/// Loads `role` into `module` with the arguments in `props`; the loaded
/// state keeps `instance` until the module is unloaded (dropped at once on
/// an error).
///
/// # Safety
/// `module` must be the module being initialized, on the main thread.
pub unsafe fn load(
    module: *mut pws::pw_impl_module,
    role: Role,
    props: &Properties,
    instance: crate::log::Instance,
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
    let host = bark_io::node::hostname();
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

    // Read before the state is shared: from then on only data-loop
    // callbacks touch `rt`.
    let (fds, interval): (Vec<std::os::fd::RawFd>, u64) = match &rt {
        Rt::Sink(s) => (vec![s.fd()], SINK_TIMER_NS),
        Rt::Source(s) => (s.fds().to_vec(), s.timer_schedule(monotonic_ns())),
    };
    let test_panic = TestPanic::from_env(&setup.name);
    if test_panic != TestPanic::default() {
        log_warn!(
            "{}: {TEST_PANIC_ENV} is set: test-only panic in {test_panic:?}",
            role.name(),
        );
    }
    // A raw pointer from here on: PipeWire's callbacks get it as `data` and
    // may run on other threads, so no `Box` (a unique owner) exists until
    // `free` has fenced them all off.
    let bark = Box::into_raw(Box::new(Bark {
        main: UnsafeCell::new(Main {
            stream: None,
            data_sources: Vec::new(),
            core: None,
            timer: None,
            command: None,
            command_source: None,
            advert: None,
            finder: None,
            sender_pending: None,
            settings_pending: false,
            settings_dirty: false,
            restore_pending: false,
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
        rt: RtCell::new(rt),
        stream: AtomicPtr::new(std::ptr::null_mut()),
        data_loop: OnceLock::new(),
        rt_timer: AtomicPtr::new(std::ptr::null_mut()),
        rt_io: [
            AtomicPtr::new(std::ptr::null_mut()),
            AtomicPtr::new(std::ptr::null_mut()),
        ],
        rate_match: AtomicPtr::new(std::ptr::null_mut()),
        counters: Counters::default(),
        settings_box: crate::mailbox::Mailbox::new(),
        sender_box: crate::mailbox::Mailbox::new(),
        applying: AtomicBool::new(false),
        test_panic,
        _log: instance,
    }));
    // Frees the state, and whatever PipeWire already holds of it, when
    // attaching fails or panics.
    let on_failure = FreeOnDrop(bark);
    // SAFETY: `bark` is fresh from Box::into_raw and not yet shared;
    // `module` is the module being initialized, on the main thread (this
    // function's contract).
    unsafe { attach(bark, module, setup, fds, interval) }?;
    // PipeWire holds the state now; the module's destroy event frees it.
    std::mem::forget(on_failure);
    Ok(())
}

/// Connects a new module's state to PipeWire: the core and its listeners,
/// the stream, the data-loop sources, the main-loop timer, and last the
/// module listener. On an error, what was made is in the state for `free`.
///
/// # Safety
/// `bark` is from `Box::into_raw` in `load` and not yet shared; `module`
/// is the module being initialized; main thread.
unsafe fn attach(
    bark: *mut Bark,
    module: *mut pws::pw_impl_module,
    setup: Setup,
    fds: Vec<std::os::fd::RawFd>,
    interval: u64,
) -> Result<(), LoadError> {
    let data = bark as *mut c_void;
    // SAFETY: alive until `free`, which runs only after this returns; only
    // shared references to it are ever made outside `free` (it changes
    // through UnsafeCell, atomics and OnceLock).
    let b = unsafe { &*bark };
    // `Main` is borrowed afresh after each PipeWire call below, because
    // those may emit events that borrow it too; every such borrow is on
    // this (the main) thread, one at a time.

    // SAFETY: the module being initialized (the contract): its context is
    // live, and outlives the module and so this state.
    let context = unsafe { pws::pw_impl_module_get_context(module) };
    // SAFETY: a live context.
    let mut core = unsafe { CoreConn::new(context) }.map_err(LoadError::pipewire)?;
    // SAFETY: `data` lives until `free`, which drops the core (removing
    // these listeners) before it frees the state; the callbacks take it.
    unsafe { core.listen(&PROXY_EVENTS, &CORE_EVENTS, data) };
    let core_ptr = core.as_ptr();
    // SAFETY: main thread, no other borrow of `Main` alive.
    unsafe { b.main() }.core = Some(core);

    // SAFETY: a live core, kept in `Main`; `data` lives until `free`,
    // which drops the stream first.
    let stream = unsafe { Stream::new(core_ptr, &setup.name, setup.props, &STREAM_EVENTS, data) }
        .map_err(LoadError::pipewire)?;
    b.stream.store(stream.as_ptr(), Relaxed);
    let stream_ptr = stream.as_ptr();
    // SAFETY: main thread, no other borrow of `Main` alive.
    unsafe { b.main() }.stream = Some(stream);
    // SAFETY: the live stream just kept in `Main`.
    unsafe { pw::connect(stream_ptr, setup.direction, setup.flags, &setup.format_pod) }
        .map_err(LoadError::pipewire)?;

    // Sockets and a timer on the data loop: datagrams are handled when they
    // arrive and time exchanges keep their pace whether or not the graph
    // runs this node.
    // SAFETY: a live context; the DataLoop is kept in the state, which the
    // module and so the context outlive.
    let dl = unsafe { DataLoop::of(context) }.ok_or_else(|| LoadError::pipewire("no data loop"))?;
    let _ = b.data_loop.set(dl);
    for (i, fd) in fds.into_iter().enumerate() {
        // SAFETY: `data` lives until `free`, which drops the sources
        // (removing them on the data thread) before it frees the state;
        // `fd` is a socket in `rt`, closed only when the state drops, after
        // the sources.
        let src = unsafe { dl.add_io(fd, on_data_io, data) }.map_err(LoadError::pipewire)?;
        if let Some(slot) = b.rt_io.get(i) {
            slot.store(src.as_raw(), Relaxed);
        }
        // SAFETY: main thread, no other borrow of `Main` alive.
        unsafe { b.main() }.data_sources.push(src);
    }
    // SAFETY: as for the sockets.
    let timer =
        unsafe { dl.add_timer(on_data_timer, data, interval) }.map_err(LoadError::pipewire)?;
    b.rt_timer.store(timer.as_raw(), Relaxed);
    // SAFETY: main thread, no other borrow of `Main` alive.
    unsafe { b.main() }.data_sources.push(timer);

    // SAFETY: a live context.
    let main_loop = unsafe { pws::pw_context_get_main_loop(context) };
    // SAFETY: the context's main loop, whose thread this is; `free` drops
    // the timer, on this thread and while the loop lives, before it frees
    // the state that `data` points to.
    let timer = unsafe { MainSource::timer(main_loop, on_timer, data, MAIN_TIMER_NS) }
        .map_err(LoadError::pipewire)?;
    // SAFETY: main thread, no other borrow of `Main` alive.
    unsafe { b.main() }.timer = Some(timer);
    // SAFETY: main thread, no other borrow of `Main` alive.
    let m = unsafe { b.main() };
    m.advert = setup.advert;
    m.finder = setup.finder;
    if let Some(cmd) = setup.command {
        let fd = cmd.fd();
        // Restored volume and mute: set on the stream once it is
        // connected (`on_state_changed`).
        let s = *cmd.responder().settings();
        // SAFETY: main thread, no other borrow of `Main` alive.
        unsafe { b.main() }.restore_pending = s.volume != 1.0 || s.mute;
        // SAFETY: main thread, no other borrow of `Main` alive.
        unsafe { b.main() }.command = Some(cmd);
        // SAFETY: the context's main loop, this thread; `free` drops the
        // source before the state (and so the socket `fd` in it) and
        // `data`.
        let src = unsafe { MainSource::io(main_loop, fd, on_command, data) }
            .map_err(LoadError::pipewire)?;
        // SAFETY: main thread, no other borrow of `Main` alive.
        unsafe { b.main() }.command_source = Some(src);
    }
    // SAFETY: main thread, no other borrow of `Main` alive.
    let m = unsafe { b.main() };
    let hook = m.module_hook.as_ptr();
    // SAFETY: the module being initialized; the hook is boxed in `Main`
    // and unlinked by `free` (while the module lives) before it is freed;
    // `data` lives until then.
    unsafe { pws::pw_impl_module_add_listener(module, hook, &MODULE_EVENTS, data) };
    log_info!("{}: loaded: {}", m.who, setup.info);
    Ok(())
}

/// Frees the state `load` made once nothing can call into it any more:
/// first the stream (pw_stream_destroy waits for the data thread to leave
/// `process`), the data-loop sources (removed on the data thread, so no
/// socket or timer callback is running or to come), the core and its
/// listeners, the main-loop timer and the module listener; only then the
/// state itself, sockets last. A null `bark` is ignored.
///
/// # Safety
/// `bark` is null or from `Box::into_raw` in `load`, freed only here and
/// once; main thread; the module it was loaded into is still alive.
unsafe fn free(bark: *mut Bark) {
    if bark.is_null() {
        return;
    }
    // Taken out first, so that no borrow of `Main` is alive while they
    // drop (their teardown emits nothing into our listeners, but a borrow
    // across PipeWire calls is what `Bark::main` rules out).
    let (stream, sources, core, timer, command_source) = {
        // SAFETY: alive (freed only below); main thread; no other borrow
        // of `Main` (the contract; callers hold none).
        let m = unsafe { (*bark).main() };
        // SAFETY: the module is alive (the contract), so its listener list
        // is; an unlinked hook (load failed before adding it) is skipped.
        unsafe { m.module_hook.remove() };
        save_settings(m);
        (
            m.stream.take(),
            std::mem::take(&mut m.data_sources),
            m.core.take(),
            m.timer.take(),
            m.command_source.take(),
        )
    };
    drop(stream);
    drop(sources);
    drop(core);
    drop(timer);
    drop(command_source);
    // SAFETY: from Box::into_raw in `load`, freed once (the contract). No
    // callback can reach it now: the stream, the data-loop sources, the
    // core's listeners, the main-loop timer and the module listener are
    // gone, and the data thread has left every callback (the stream's
    // destroy and the sources' removal synchronize with it), so this
    // thread holds the only access.
    drop(unsafe { Box::from_raw(bark) });
}

/// Frees, through `free`, a state that `load` made and did not hand to
/// PipeWire (it forgets this guard once it has).
struct FreeOnDrop(*mut Bark);

impl Drop for FreeOnDrop {
    fn drop(&mut self) {
        // SAFETY: `load` made the pointer with Box::into_raw and, on the
        // main thread, drops this guard only when attaching failed or
        // panicked, while the module is still being initialized. The
        // module listener, whose destroy event is the only other way to
        // free the state, was then never added, or (a panic after adding
        // it) is removed by `free`: this is the one free.
        unsafe { free(self.0) };
    }
}

/// The state behind a callback's `data`; `None` for a null pointer.
///
/// The callback contract, which every `extern "C"` callback below relies
/// on: PipeWire passes back the `data` it was registered with, a state that
/// stays alive until `free`, which removes every registration first. The
/// stream's and core's events, the module's and the main-loop timer's run
/// on the main thread, one at a time; `process` and the data-loop sources
/// on a data thread.
///
/// # Safety
/// `data` is null or the pointer `load` registered, and the state alive
/// for `'a` (the callback's duration).
unsafe fn state<'a>(data: *mut c_void) -> Option<&'a Bark> {
    // SAFETY: null or a live Bark (the contract), only ever shared outside
    // `free`.
    unsafe { (data as *const Bark).as_ref() }
}

impl Bark {
    /// Runs a callback's body `f` inside the panic guard (see
    /// [`ffi::guard`]); `default` when it panics.
    fn guard<R>(&self, what: &str, default: R, f: impl FnOnce() -> R) -> R {
        ffi::guard(&self.counters.panicked, what, default, f)
    }
}

unsafe extern "C" fn on_module_destroy(data: *mut c_void) {
    ffi::guard(&AtomicBool::new(false), "module destroy", (), || {
        let bark = data as *mut Bark;
        if bark.is_null() {
            return;
        }
        // SAFETY: the callback contract (see `state`): the module's destroy
        // event, on the main thread, with our live state; no borrow of
        // `Main` is alive.
        log_info!("{}: unloading", unsafe { (*bark).main() }.who);
        // SAFETY: the state from `load` (the callback contract), on the
        // main thread, inside the module's destroy event (so the module is
        // alive). The event comes once, and only for a state that `load`
        // handed over, so this is its only free.
        unsafe { free(bark) };
    });
}

/// Sink: the socket is checked, and the endpoint polled (status packets,
/// and while the sink is idle its sync messages, 10 a second), at least
/// this often, ns: half the idle sync spacing, so that none is skipped.
const SINK_TIMER_NS: u64 = bark_core::sender::IDLE_SYNC_INTERVAL_NS / 2;

unsafe extern "C" fn on_data_io(data: *mut c_void, _fd: c_int, _mask: u32) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("socket", (), || {
        // SAFETY: a source on our data loop, called on its thread.
        unsafe { b.service(false) }
    });
}

unsafe extern "C" fn on_data_timer(data: *mut c_void, _expirations: u64) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("data timer", (), || {
        // SAFETY: a source on our data loop, called on its thread.
        unsafe { b.service(true) }
    });
}

unsafe extern "C" fn on_process(data: *mut c_void) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("process", (), || {
        // SAFETY: the process callback of the stream in `b.stream` (the
        // only stream registered with these events).
        unsafe { b.process() }
    });
}

/// PipeWire destroys a stream itself when its core goes away (daemon
/// shutdown, lost connection): forget it, stop `process` from touching it,
/// and unload.
unsafe extern "C" fn on_stream_destroy(data: *mut c_void) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("stream destroy", (), || {
        b.stream.store(std::ptr::null_mut(), Relaxed);
        b.rate_match.store(std::ptr::null_mut(), Release);
        // SAFETY: a stream event, on the main thread; no other borrow of
        // `Main` is alive.
        if let Some(s) = unsafe { b.main() }.stream.as_mut() {
            s.forget();
        }
        // SAFETY: main thread; the borrow above has ended.
        unsafe { b.schedule_unload("stream destroyed") };
    });
}

unsafe extern "C" fn on_state_changed(
    data: *mut c_void,
    old: pws::pw_stream_state,
    state: pws::pw_stream_state,
    error: *const c_char,
) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { self::state(data) }) else {
        return;
    };
    b.guard("state_changed", (), || {
        // SAFETY: a stream event, on the main thread; no other borrow of
        // `Main` is alive. The one PipeWire call it spans,
        // pw_stream_set_control (restoring the volume), re-enters only
        // `on_control_info` (which sees `applying`) and `on_param_changed`
        // (Props), neither of which borrows `Main` then.
        let m = unsafe { b.main() };
        // SAFETY: NULL or a string PipeWire keeps alive for the call.
        let err = unsafe { ffi::str_from(error) }.unwrap_or("");
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
        let connected = state == pws::pw_stream_state_PW_STREAM_STATE_PAUSED
            || state == pws::pw_stream_state_PW_STREAM_STATE_STREAMING;
        if connected && m.restore_pending {
            m.restore_pending = false;
            if let (Some(stream), Some(cmd)) = (m.stream.as_ref(), m.command.as_ref()) {
                let s = *cmd.responder().settings();
                // Our own change: its `control_info` echo is not one made
                // on this host.
                b.applying.store(true, Relaxed);
                crate::remote::apply_to_stream(stream, m.channels, SET_VOLUME | SET_MUTE, &s);
                b.applying.store(false, Relaxed);
                log_info!(
                    "{}: restored {}",
                    m.who,
                    crate::remote::describe(SET_VOLUME | SET_MUTE, &s)
                );
            }
        }
        if state == pws::pw_stream_state_PW_STREAM_STATE_UNCONNECTED && old != state {
            // SAFETY: main thread; `m` is not used past here.
            unsafe { b.schedule_unload("stream disconnected") };
        }
    });
}

/// The adapter hands the stream its IO areas; keep the rate-match one
/// (PipeWire 0.3.65 has no `pw_stream_set_rate`).
unsafe extern "C" fn on_io_changed(data: *mut c_void, id: u32, area: *mut c_void, size: u32) {
    // SAFETY: the callback contract (see `state`); whatever thread this
    // runs on, it only stores an atomic.
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("io_changed", (), || {
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
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("param_changed", (), || {
        // Before any borrow of `Main`: our own pw_stream_set_control (in
        // `on_command`, `on_state_changed`, which hold it) re-enters here
        // with the Props it set.
        if id != spa::SPA_PARAM_Format || param.is_null() {
            return;
        }
        // SAFETY: a stream event, on the main thread; no other borrow of
        // `Main` is alive.
        let m = unsafe { b.main() };
        let mut info = AudioInfoRaw::new();
        // SAFETY: a non-NULL pod that PipeWire keeps alive for the call,
        // which `pod` does not outlive.
        let pod = unsafe { libspa::pod::Pod::from_raw(param) };
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

/// Commands on the command socket (main thread): applied to the stream's
/// own controls and properties here, and to the receiver through the
/// mailbox.
unsafe extern "C" fn on_command(data: *mut c_void, _fd: c_int, _mask: u32) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("command", (), || {
        // SAFETY: a main-loop source, on the main thread; no other borrow
        // of `Main` is alive. Of the PipeWire calls it spans,
        // pw_stream_set_control may echo `control_info` into our listener,
        // which sees `applying` and leaves `Main` alone.
        let m = unsafe { b.main() };
        let Some(cmd) = m.command.as_mut() else {
            return;
        };
        let (changed, warning) = cmd.serve(monotonic_ns(), crate::clock::realtime_ns());
        if let Some(w) = warning {
            log_warn!("{}: {w}", m.who);
        }
        if changed == 0 {
            return;
        }
        let (settings, port) = (*cmd.responder().settings(), cmd.port());
        log_info!(
            "{}: a controller changed {}",
            m.who,
            crate::remote::describe(changed, &settings)
        );
        if let Some(stream) = m.stream.as_ref() {
            b.applying.store(true, Relaxed);
            crate::remote::apply_to_stream(stream, m.channels, changed, &settings);
            b.applying.store(false, Relaxed);
        }
        m.settings_pending = !b.settings_box.post((settings, port));
        m.settings_dirty = true;
    });
}

/// Saves the settings for the next start if they changed (from the
/// timer, at most once a second, and at unload); a failure is logged.
fn save_settings(m: &mut Main) {
    if !std::mem::take(&mut m.settings_dirty) {
        return;
    }
    if let Some(w) = m.command.as_ref().and_then(|c| c.save()) {
        log_warn!("{}: {w}", m.who);
    }
}

/// The stream's own controls changed (pavucontrol, `wpctl`, the desktop's
/// volume applet, or our own `set_control`): a change made on this host
/// is taken into the settings the node reports.
unsafe extern "C" fn on_control_info(
    data: *mut c_void,
    id: u32,
    control: *const pws::pw_stream_control,
) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("control_info", (), || {
        if b.applying.load(Relaxed) || control.is_null() {
            return;
        }
        // SAFETY: a control PipeWire keeps alive for the call, its values
        // with it.
        let Some(local) = (unsafe { crate::remote::from_control(id, &*control) }) else {
            return;
        };
        // SAFETY: a stream event, on the main thread; not inside
        // `on_command` (`applying` is clear), so no other borrow of `Main`
        // is alive.
        let m = unsafe { b.main() };
        if m.restore_pending {
            return;
        }
        let Some(cmd) = m.command.as_mut() else {
            return;
        };
        let mut s = *cmd.responder().settings();
        // A sender has no volume of its own (its sink's is the player's).
        let mask = crate::remote::merge_local(&mut s, local) & cmd.responder().fields();
        let changed = cmd.set_local(mask, &s);
        if changed != 0 {
            log_info!(
                "{}: changed on this host: {}",
                m.who,
                crate::remote::describe(changed, &s)
            );
            m.settings_pending = !b.settings_box.post((s, cmd.port()));
            m.settings_dirty = true;
        }
    });
}

/// Main-loop timer period, ns: a receiver's change of output quantum is
/// applied within this (its core plans with the new quantum meanwhile);
/// the counters are reported every tenth tick.
const MAIN_TIMER_NS: u64 = 100_000_000;

unsafe extern "C" fn on_timer(data: *mut c_void, _expirations: u64) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("timer", (), || {
        // SAFETY: the main-loop timer, on the main thread; no other borrow
        // of `Main` is alive. It spans one PipeWire call,
        // pw_stream_update_properties, which emits node info to the graph,
        // never into our stream listener.
        let m = unsafe { b.main() };
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
        if let Some((to, line)) = m.finder.as_mut().and_then(|f| f.poll_logged()) {
            log_info!("{}: {line}", m.who);
            m.sender_pending = Some(to);
        }
        if let Some(to) = m.sender_pending {
            if b.sender_box.post(to) {
                m.sender_pending = None;
            }
        }
        if m.settings_pending {
            if let Some(c) = m.command.as_ref() {
                m.settings_pending = !b.settings_box.post((*c.responder().settings(), c.port()));
            }
        }
        if m.ticks.is_multiple_of(1_000_000_000 / MAIN_TIMER_NS) {
            m.reporter.tick(&m.who, &b.counters);
            save_settings(m);
        }
    });
}

unsafe extern "C" fn on_core_proxy_destroy(data: *mut c_void) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("core destroy", (), || {
        // SAFETY: a core proxy event, on the main thread; no other borrow
        // of `Main` is alive.
        if let Some(c) = unsafe { b.main() }.core.as_mut() {
            c.forget();
        }
        // SAFETY: main thread; the borrow above has ended.
        unsafe { b.schedule_unload("connection to the core destroyed") };
    });
}

unsafe extern "C" fn on_core_error(
    data: *mut c_void,
    id: u32,
    _seq: c_int,
    res: c_int,
    message: *const c_char,
) {
    // SAFETY: the callback contract (see `state`).
    let Some(b) = (unsafe { state(data) }) else {
        return;
    };
    b.guard("core error", (), || {
        // SAFETY: a core event, on the main thread; no other borrow of
        // `Main` is alive.
        let m = unsafe { b.main() };
        // SAFETY: NULL or a string PipeWire keeps alive for the call.
        let msg = unsafe { ffi::str_from(message) }.unwrap_or("");
        let e = std::io::Error::from_raw_os_error(-res);
        if id == pws::PW_ID_CORE {
            log_error!("{}: core error: {e} ({msg})", m.who);
        } else {
            // Errors on the stream's own objects also reach the stream,
            // which logs them through state_changed.
            log_debug!("{}: error on object {id}: {e} ({msg})", m.who);
        }
        if id == pws::PW_ID_CORE && res == -libc::EPIPE {
            // SAFETY: main thread; `m` is not used past here.
            unsafe { b.schedule_unload("connection to the core lost") };
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
    control_info: Some(on_control_info),
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

    #[test]
    fn rt_cell_refuses_a_second_holder_and_unlocks_after_a_panic() {
        let cell = RtCell::new(1u32);
        let nested = cell.try_with(|v| {
            *v += 1;
            cell.try_with(|_| ())
        });
        assert_eq!(nested, Some(None), "a second holder must be refused");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            cell.try_with(|_| panic!("on purpose"))
        }));
        assert!(caught.is_err());
        assert_eq!(cell.try_with(|v| *v), Some(2), "unlocked by the unwind");
    }
}

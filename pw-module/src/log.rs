//! Logging through PipeWire's own log, under the topic `mod.bark`, so that
//! `PIPEWIRE_DEBUG` (e.g. `PIPEWIRE_DEBUG=mod.bark:4` or `PIPEWIRE_DEBUG=3`)
//! and the daemon's log targets apply to Bark as to any other module.
//!
//! The macros format into a heap string: use them on the main thread, never
//! per buffer on the data thread.
//!
//! Where `mod.bark`'s level comes from: PipeWire 1.1 and later apply
//! `PIPEWIRE_DEBUG` patterns, and later changes to them
//! (`pw_log_set_level_string`, e.g. from the `log.level` key of the
//! `settings` metadata), only to topics registered with
//! `pw_log_topic_register`, by writing into the registered struct. So
//! while any module instance of this library is alive ([`Instance`]) one
//! heap-allocated topic stays registered, and main-thread log calls read
//! its level afresh. 0.3 has no registry (nor those symbols): there its
//! logger's `topic_init` gives the level, at each load.

use libspa_sys as spa;
use pipewire_sys as pw;
use std::ffi::{c_char, c_void, CStr, CString};
use std::fmt;
use std::marker::PhantomData;
use std::ptr;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32,
    Ordering::{AcqRel, Acquire, Relaxed, Release},
};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Log levels, as PipeWire numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum Level {
    /// Something failed.
    Error = spa::SPA_LOG_LEVEL_ERROR,
    /// Something is off but works.
    Warn = spa::SPA_LOG_LEVEL_WARN,
    /// Setup and state changes.
    Info = spa::SPA_LOG_LEVEL_INFO,
    /// Details for debugging.
    Debug = spa::SPA_LOG_LEVEL_DEBUG,
}

/// The topic's name, as `PIPEWIRE_DEBUG` patterns match it.
const TOPIC_NAME: &CStr = c"mod.bark";

/// The library that has the topic registry, by the soname that the daemon
/// and this module link.
const LIBPIPEWIRE: &CStr = c"libpipewire-0.3.so.0";

/// [`CUSTOM_LEVEL`] when no `PIPEWIRE_DEBUG` pattern names the topic: the
/// global level applies, as for PipeWire's own topics.
const NO_CUSTOM_LEVEL: u32 = u32::MAX;

/// The level that `PIPEWIRE_DEBUG` patterns give `mod.bark`, or
/// [`NO_CUSTOM_LEVEL`], as last read on the main thread. The panic guard
/// logs from data threads too; it reads only this, so that no data thread
/// ever follows a pointer into the registered topic (freed at the last
/// unload) or calls into PipeWire to decide.
static CUSTOM_LEVEL: AtomicU32 = AtomicU32::new(NO_CUSTOM_LEVEL);

/// This library's registration of `mod.bark`, shared by its instances.
static REGISTRY: Registry = Registry::new();

/// The cached form of a topic's level: `level` if a pattern named the
/// topic, else [`NO_CUSTOM_LEVEL`].
fn custom_level(has_custom_level: bool, level: u32) -> u32 {
    if has_custom_level {
        level
    } else {
        NO_CUSTOM_LEVEL
    }
}

/// The most verbose level printed, given the cached custom level and
/// PipeWire's global level.
fn limit(custom: u32, global: u32) -> u32 {
    if custom != NO_CUSTOM_LEVEL {
        custom
    } else {
        global
    }
}

/// Whether `limit` lets messages of `level` through.
fn allows(limit: u32, level: Level) -> bool {
    limit >= level as u32
}

/// A `spa_log_topic` for `mod.bark` carrying `custom` (a level, or
/// [`NO_CUSTOM_LEVEL`]). Built on the stack for each use, so that C never
/// writes memory that another thread reads.
fn topic(custom: u32) -> spa::spa_log_topic {
    spa::spa_log_topic {
        version: spa::SPA_VERSION_LOG_TOPIC,
        topic: TOPIC_NAME.as_ptr(),
        level: if custom == NO_CUSTOM_LEVEL {
            spa::SPA_LOG_LEVEL_INFO
        } else {
            custom
        },
        has_custom_level: custom != NO_CUSTOM_LEVEL,
    }
}

// `struct spa_log_topic`, from PipeWire's spa/include/spa/support/log.h
// (identical in 0.3.65, 1.0.0, 1.2.0, 1.4.2 and master f03a55d7f, 2026):
//
//     uint32_t version;               offset  0
//     const char *topic;              offset  8 on LP64 (4 on ILP32)
//     enum spa_log_level level;       offset 16 on LP64 (8 on ILP32)
//     bool has_custom_level;          offset 20 on LP64 (12 on ILP32)
//                                     size 24, align 8 (16, 4)
//
// `enum spa_log_level` holds 0..=5, so GCC and Clang make it an unsigned
// int (as libspa-sys' binding does). PipeWire writes `level` and
// `has_custom_level` of a registered topic in place; `read_topic` loads
// them atomically through pointers to those two fields, which is sound
// only if they are an aligned u32 and a one-byte bool where C puts them.
// The binding is generated from the installed header; the tests check it
// against a hand-written #[repr(C)] mirror of the layout above.

/// `void (struct spa_log_topic *)`: `pw_log_topic_register` and
/// `pw_log_topic_unregister` (pipewire/log.h, since 1.1.0).
type TopicFn = unsafe extern "C" fn(*mut spa::spa_log_topic);

/// PipeWire's topic registry, as found at run time.
#[derive(Clone, Copy)]
struct RegistryFns {
    register: TopicFn,
    /// Every PipeWire that has `register` has this too; without it the
    /// topic stays registered, and allocated, for good.
    unregister: Option<TopicFn>,
}

/// One registered topic for all the module instances of this library:
/// PipeWire keeps a pointer to it from the first load to the last unload.
struct Registry {
    /// Taken only at module load and unload, on the main thread.
    state: Mutex<State>,
    /// The registered topic, or null; changed only under `state`, read
    /// without it by [`Registry::read`].
    topic: AtomicPtr<spa::spa_log_topic>,
}

struct State {
    /// Live [`Instance`]s.
    live: usize,
    /// How to unregister `topic`; `None` when nothing is registered or
    /// PipeWire cannot unregister it.
    unregister: Option<TopicFn>,
}

impl Registry {
    const fn new() -> Self {
        Registry {
            state: Mutex::new(State {
                live: 0,
                unregister: None,
            }),
            topic: AtomicPtr::new(ptr::null_mut()),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update under the lock is a single store that cannot panic
        // half done, so a poisoned state is still consistent; and this
        // runs inside Drop, where a panic would abort.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one more live instance. The first (or the first after the
    /// last was released) registers a fresh topic through what `lookup`
    /// finds; `None` (PipeWire 0.3) registers nothing.
    fn acquire(&self, lookup: impl FnOnce() -> Option<RegistryFns>) {
        let mut s = self.state();
        s.live = s.live.saturating_add(1);
        if s.live > 1 || !self.topic.load(Relaxed).is_null() {
            return;
        }
        let Some(fns) = lookup() else {
            return;
        };
        let t = new_topic();
        // SAFETY: `register` is pw_log_topic_register (`lookup`'s
        // promise), which takes a topic that stays valid until it is
        // unregistered; `t` is complete, and neither it nor its name is
        // freed before `release` has unregistered it (never, without
        // `unregister`). PipeWire computes the level under its own lock.
        unsafe { (fns.register)(t) };
        s.unregister = fns.unregister;
        self.topic.store(t, Release);
    }

    /// Counts one live instance fewer. The last unregisters the topic, so
    /// that PipeWire holds no pointer to it once this library may be
    /// unloaded, and then frees it.
    fn release(&self) {
        let mut s = self.state();
        s.live = s.live.saturating_sub(1);
        if s.live > 0 {
            return;
        }
        let Some(unregister) = s.unregister.take() else {
            return;
        };
        let t = self.topic.swap(ptr::null_mut(), AcqRel);
        if t.is_null() {
            return;
        }
        // SAFETY: `t` is the topic `acquire` registered through the
        // registry that `unregister` belongs to, unregistered once (the
        // pointer was just taken out). pw_log_topic_unregister drops it
        // from PipeWire's list under the lock that every write to it
        // holds, so PipeWire neither holds nor touches it after the call.
        // `read` cannot be following it: it runs on the main thread, as
        // this does, or in a callback of a live instance, and none is
        // left.
        unsafe {
            unregister(t);
            free_topic(t);
        }
    }

    /// The cached form of the level that the registered topic holds now,
    /// or `None` when none is registered. Main thread, or a callback of a
    /// live instance (which keeps the topic from being freed meanwhile).
    fn read(&self) -> Option<u32> {
        let t = self.topic.load(Acquire);
        if t.is_null() {
            return None;
        }
        // SAFETY: a topic from `new_topic`, published after it was
        // initialized; freed only by `release` when no instance is left,
        // which is never concurrently with this (above).
        Some(unsafe { read_topic(t) })
    }
}

/// A `mod.bark` topic on the heap, its name too: PipeWire holds both
/// pointers while it is registered, and neither may point into this
/// library, which PipeWire unmaps when it unloads the last module.
fn new_topic() -> *mut spa::spa_log_topic {
    Box::into_raw(Box::new(spa::spa_log_topic {
        version: spa::SPA_VERSION_LOG_TOPIC,
        topic: TOPIC_NAME.to_owned().into_raw(),
        level: spa::SPA_LOG_LEVEL_INFO,
        has_custom_level: false,
    }))
}

/// # Safety
/// `t` is from [`new_topic`], registered with no one, and freed once.
unsafe fn free_topic(t: *mut spa::spa_log_topic) {
    // SAFETY: from Box::into_raw in `new_topic`, whose name came from
    // CString::into_raw; nothing else holds either (the contract).
    unsafe {
        let t = Box::from_raw(t);
        drop(CString::from_raw(t.topic as *mut c_char));
    }
}

/// The cached form of the level in `t`.
///
/// # Safety
/// `t` points to a live topic for the duration of the call.
unsafe fn read_topic(t: *mut spa::spa_log_topic) -> u32 {
    // SAFETY: live (the contract); its `level` and `has_custom_level` are
    // an aligned u32 and a bool (the layout above), as from_ptr requires.
    // PipeWire stores them with plain C writes under a lock of its own
    // that we cannot take, from whichever thread changes the levels; an
    // atomic load of each (never torn, cached or merged) is the closest
    // Rust can come, and the same unlocked read that PipeWire's own
    // pw_log_topic_enabled makes on every thread. A change caught half
    // done (the new flag with the old level) lasts one message: the next
    // read sees both.
    unsafe {
        let custom = AtomicBool::from_ptr(ptr::addr_of_mut!((*t).has_custom_level)).load(Relaxed);
        let level = AtomicU32::from_ptr(ptr::addr_of_mut!((*t).level)).load(Relaxed);
        custom_level(custom, level)
    }
}

/// The addresses of `names` in `lib` if it is loaded (never loading it),
/// else in the process's global scope; null where not found.
///
/// The library handle comes first because a module is dlopen'ed by its
/// host (RTLD_LOCAL), and RTLD_DEFAULT searches only the global scope:
/// a host that itself dlopen'ed libpipewire locally would hide it, and any
/// other library in the global scope may export the same name. Once
/// libpipewire is found, its answer stands (a missing symbol there means
/// a PipeWire without it, not a reason to look elsewhere).
fn symbols<const N: usize>(lib: &CStr, names: [&CStr; N]) -> [*mut c_void; N] {
    // SAFETY: a NUL-terminated name; with RTLD_NOLOAD dlopen never loads
    // or initializes anything: it returns a new reference to a library
    // already loaded, or NULL.
    let handle = unsafe { libc::dlopen(lib.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    let scope = if handle.is_null() {
        libc::RTLD_DEFAULT
    } else {
        handle
    };
    let found = names.map(|name| {
        // SAFETY: a live handle (or RTLD_DEFAULT) and a NUL-terminated
        // name; dlsym only looks it up.
        unsafe { libc::dlsym(scope, name.as_ptr()) }
    });
    if !handle.is_null() {
        // SAFETY: the handle from the dlopen above, closed once. That
        // drops only the reference the dlopen added: libpipewire stays
        // loaded as long as the daemon and this module (which links it)
        // are, so the addresses found stay valid.
        unsafe { libc::dlclose(handle) };
    }
    found
}

/// PipeWire's topic registry (1.1 and later), or `None` (0.3).
fn pipewire_registry() -> Option<RegistryFns> {
    let [register, unregister] = symbols(
        LIBPIPEWIRE,
        [c"pw_log_topic_register", c"pw_log_topic_unregister"],
    );
    let as_fn = |p: *mut c_void| {
        (!p.is_null()).then(|| {
            // SAFETY: a non-null address of pw_log_topic_register or
            // pw_log_topic_unregister, both declared
            // `void (struct spa_log_topic *)` in pipewire/log.h.
            unsafe { std::mem::transmute::<*mut c_void, TopicFn>(p) }
        })
    };
    Some(RegistryFns {
        register: as_fn(register)?,
        unregister: as_fn(unregister),
    })
}

/// One live module instance. While any is alive, `mod.bark` stays
/// registered with PipeWire's topic registry (1.1 and later); dropping the
/// last unregisters it, before PipeWire can unload this library. Acquire
/// one on the main thread as a module loads, and drop it there once every
/// callback of that module is gone (hence not `Send`).
pub struct Instance {
    _main_thread: PhantomData<*const ()>,
}

impl Instance {
    /// Counts a module instance in (registering `mod.bark` for the first)
    /// and reads the level that PipeWire gives the topic now.
    pub fn acquire() -> Instance {
        REGISTRY.acquire(pipewire_registry);
        load_level();
        Instance {
            _main_thread: PhantomData,
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        REGISTRY.release();
    }
}

/// Takes up the level that the registered topic holds now, if there is
/// one. Main thread only (see [`Registry::read`]); cheap: no lookup, no
/// lock, no call into PipeWire.
fn refresh() {
    if let Some(level) = REGISTRY.read() {
        CUSTOM_LEVEL.store(level, Relaxed);
    }
}

/// Asks PipeWire which level its `PIPEWIRE_DEBUG` patterns give `mod.bark`
/// (the registered topic on 1.1 and later, its logger's `topic_init`
/// before) and caches it for [`enabled`] and [`log_at`]. Main thread.
fn load_level() {
    if let Some(level) = REGISTRY.read() {
        CUSTOM_LEVEL.store(level, Relaxed);
        return;
    }
    let mut t = topic(NO_CUSTOM_LEVEL);
    // SAFETY: pw_log_get returns the process's logger or NULL; a non-NULL
    // logger's `iface` is a live spa_interface whose `funcs` (checked for
    // NULL) is a spa_log_methods table. `topic_init` is a version-1 method
    // (the interface itself is version 0; spa_log_topic_init checks the
    // methods' version the same way), called only when present. It writes
    // `t`, a local that lives across the call and that no other thread can
    // see; the logger keeps no pointer to it (support/logger.c).
    unsafe {
        let log = pw::pw_log_get();
        if log.is_null() {
            return;
        }
        let iface = &(*log).iface;
        if iface.cb.funcs.is_null() {
            return;
        }
        let m = &*(iface.cb.funcs as *const spa::spa_log_methods);
        match m.topic_init {
            Some(f) if m.version >= 1 => f(iface.cb.data, &mut t),
            _ => return,
        }
    }
    CUSTOM_LEVEL.store(custom_level(t.has_custom_level, t.level), Relaxed);
}

/// Whether messages of `level` are printed, by the cached level (any
/// thread).
pub fn enabled(level: Level) -> bool {
    // SAFETY: a read of PipeWire's exported global level, a plain C
    // variable that PipeWire writes only where levels change
    // (pw_log_set_level). Our callers are main-loop callbacks and, once
    // per module at most, the panic guard on a data thread, which reads it
    // unsynchronized exactly as every PipeWire thread's own pw_log_*
    // checks do (C offers nothing to synchronize with); volatile keeps it
    // one aligned load, never cached.
    let global = unsafe { std::ptr::addr_of!(pw::pw_log_level).read_volatile() };
    allows(limit(CUSTOM_LEVEL.load(Relaxed), global), level)
}

/// Logs a message at `level`; `file`, `line` and `func` say where from
/// (PipeWire prints them at debug levels). Main thread only: it first takes
/// up the level PipeWire gives `mod.bark` now, so that a change made at
/// run time (`pw-metadata -n settings 0 log.level ...` on 1.x) applies.
pub fn log_at(level: Level, file: &CStr, line: u32, func: &CStr, args: fmt::Arguments) {
    refresh();
    emit(level, file, line, func, args);
}

/// Logs an error without location, by the cached level: for the panic
/// guard, which may run on a data thread.
pub fn error(args: fmt::Arguments) {
    emit(Level::Error, c"bark", 0, c"bark", args);
}

fn emit(level: Level, file: &CStr, line: u32, func: &CStr, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let msg = crate::ffi::cstring(&args.to_string());
    // pw_log_logt checks the level again against the topic it is given: a
    // copy, so that what it reads is ours alone.
    let t = topic(CUSTOM_LEVEL.load(Relaxed));
    // SAFETY: "%s" with one NUL-terminated string, `msg`; the topic, file
    // and function strings are NUL-terminated and, like `t`, outlive the
    // call, which only reads them (the logger keeps no pointer).
    unsafe {
        pw::pw_log_logt(
            level as u32,
            &t,
            file.as_ptr(),
            line as i32,
            func.as_ptr(),
            c"%s".as_ptr() as *const c_char,
            msg.as_ptr(),
        );
    }
}

/// Logs at a level: `bark_log!(Level::Info, "fmt", args...)`.
#[macro_export]
macro_rules! bark_log {
    ($lvl:expr, $($arg:tt)*) => {
        $crate::log::log_at(
            $lvl,
            match ::std::ffi::CStr::from_bytes_with_nul(concat!(file!(), "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => c"?",
            },
            line!(),
            match ::std::ffi::CStr::from_bytes_with_nul(concat!(module_path!(), "\0").as_bytes()) {
                Ok(c) => c,
                Err(_) => c"?",
            },
            format_args!($($arg)*),
        )
    };
}

/// Logs an error (main thread only).
#[macro_export]
macro_rules! log_error { ($($arg:tt)*) => { $crate::bark_log!($crate::log::Level::Error, $($arg)*) }; }
/// Logs a warning (main thread only).
#[macro_export]
macro_rules! log_warn { ($($arg:tt)*) => { $crate::bark_log!($crate::log::Level::Warn, $($arg)*) }; }
/// Logs an info message (main thread only).
#[macro_export]
macro_rules! log_info { ($($arg:tt)*) => { $crate::bark_log!($crate::log::Level::Info, $($arg)*) }; }
/// Logs a debug message (main thread only).
#[macro_export]
macro_rules! log_debug { ($($arg:tt)*) => { $crate::bark_log!($crate::log::Level::Debug, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};
    use std::sync::atomic::AtomicUsize;

    /// `struct spa_log_topic` as spa/support/log.h declares it.
    #[repr(C)]
    struct Mirror {
        version: u32,
        topic: *const c_char,
        level: u32,
        has_custom_level: bool,
    }

    #[test]
    fn topic_layout_matches_the_header() {
        type T = spa::spa_log_topic;
        assert_eq!(offset_of!(T, version), offset_of!(Mirror, version));
        assert_eq!(offset_of!(T, topic), offset_of!(Mirror, topic));
        assert_eq!(offset_of!(T, level), offset_of!(Mirror, level));
        assert_eq!(
            offset_of!(T, has_custom_level),
            offset_of!(Mirror, has_custom_level)
        );
        assert_eq!(size_of::<T>(), size_of::<Mirror>());
        assert_eq!(align_of::<T>(), align_of::<Mirror>());
        assert_eq!(size_of::<spa::spa_log_level>(), 4);
        let expect = if cfg!(target_pointer_width = "64") {
            (0, 8, 16, 20, 24)
        } else {
            (0, 4, 8, 12, 16)
        };
        assert_eq!(
            (
                offset_of!(Mirror, version),
                offset_of!(Mirror, topic),
                offset_of!(Mirror, level),
                offset_of!(Mirror, has_custom_level),
                size_of::<Mirror>()
            ),
            expect
        );
        // What AtomicU32/AtomicBool::from_ptr need of the two fields.
        assert_eq!(offset_of!(T, level) % align_of::<AtomicU32>(), 0);
        assert!(align_of::<T>() >= align_of::<AtomicU32>());
        assert_eq!(size_of::<AtomicBool>(), size_of::<bool>());
        assert_eq!(align_of::<AtomicBool>(), align_of::<bool>());
    }

    #[test]
    fn levels_map_as_pipewire_numbers_them() {
        assert_eq!(
            [Level::Error, Level::Warn, Level::Info, Level::Debug].map(|l| l as u32),
            [1, 2, 3, 4]
        );
        assert_eq!(custom_level(false, 4), NO_CUSTOM_LEVEL);
        assert_eq!(custom_level(true, 4), 4);
        // `mod.bark:0` silences Bark; it is not "no pattern".
        assert_eq!(custom_level(true, 0), 0);
        assert_eq!(limit(NO_CUSTOM_LEVEL, 2), 2);
        assert_eq!(limit(4, 2), 4);
        assert_eq!(limit(0, 5), 0);
        assert!(allows(limit(NO_CUSTOM_LEVEL, 2), Level::Warn));
        assert!(!allows(limit(NO_CUSTOM_LEVEL, 2), Level::Info));
        assert!(allows(limit(3, 2), Level::Info));
        assert!(!allows(limit(3, 5), Level::Debug));
        assert!(!allows(limit(0, 5), Level::Error));

        let t = topic(NO_CUSTOM_LEVEL);
        assert!(!t.has_custom_level);
        assert_eq!(custom_level(t.has_custom_level, t.level), NO_CUSTOM_LEVEL);
        let t = topic(4);
        assert!(t.has_custom_level);
        assert_eq!(t.level, 4);
        // SAFETY: TOPIC_NAME, a NUL-terminated static.
        assert_eq!(unsafe { CStr::from_ptr(t.topic) }, TOPIC_NAME);
    }

    /// What a fake registry saw.
    struct Seen {
        registered: AtomicUsize,
        unregistered: AtomicUsize,
        last: AtomicPtr<spa::spa_log_topic>,
        /// Whether every topic it was given was named `mod.bark`.
        named: AtomicBool,
    }

    impl Seen {
        const fn new() -> Self {
            Seen {
                registered: AtomicUsize::new(0),
                unregistered: AtomicUsize::new(0),
                last: AtomicPtr::new(ptr::null_mut()),
                named: AtomicBool::new(true),
            }
        }
        fn counts(&self) -> (usize, usize) {
            (
                self.registered.load(Relaxed),
                self.unregistered.load(Relaxed),
            )
        }
    }

    /// One per test, as tests run in parallel.
    static SEEN: [Seen; 2] = [Seen::new(), Seen::new()];

    /// Checks the name (must still be readable) and records `t`.
    ///
    /// # Safety
    /// `t` points to a live topic with a live name.
    unsafe fn note(seen: &Seen, t: *mut spa::spa_log_topic) {
        // SAFETY: the contract.
        let name = unsafe { CStr::from_ptr((*t).topic) };
        if name != TOPIC_NAME {
            seen.named.store(false, Relaxed);
        }
        seen.last.store(t, Relaxed);
    }

    /// pw_log_topic_register as if `PIPEWIRE_DEBUG` held `mod.bark:4`
    /// (what update_topic_level writes). No panic: it is `extern "C"`.
    unsafe extern "C" fn fake_register<const S: usize>(t: *mut spa::spa_log_topic) {
        // SAFETY: the registry passes a live topic.
        unsafe {
            note(&SEEN[S], t);
            (*t).level = spa::SPA_LOG_LEVEL_DEBUG;
            (*t).has_custom_level = true;
        }
        SEEN[S].registered.fetch_add(1, Relaxed);
    }

    unsafe extern "C" fn fake_unregister<const S: usize>(t: *mut spa::spa_log_topic) {
        // SAFETY: the registry unregisters before it frees.
        unsafe { note(&SEEN[S], t) };
        SEEN[S].unregistered.fetch_add(1, Relaxed);
    }

    /// What pw_log_set_level_string does to a registered topic.
    ///
    /// # Safety
    /// `t` is live and nothing reads it meanwhile.
    unsafe fn set_level(t: *mut spa::spa_log_topic, custom: bool, level: u32) {
        // SAFETY: the contract.
        unsafe {
            (*t).level = level;
            (*t).has_custom_level = custom;
        }
    }

    #[test]
    fn first_instance_registers_and_last_unregisters() {
        let seen = &SEEN[0];
        let r = Registry::new();
        let lookups = AtomicUsize::new(0);
        let lookup = || {
            lookups.fetch_add(1, Relaxed);
            Some(RegistryFns {
                register: fake_register::<0>,
                unregister: Some(fake_unregister::<0>),
            })
        };
        assert_eq!(r.read(), None);

        r.acquire(lookup);
        assert_eq!((lookups.load(Relaxed), seen.counts()), (1, (1, 0)));
        let t = r.topic.load(Relaxed);
        assert!(!t.is_null());
        assert_eq!(seen.last.load(Relaxed), t);
        assert_eq!(r.read(), Some(spa::SPA_LOG_LEVEL_DEBUG));

        // Levels changed at run time show at the next read.
        // SAFETY: `t` is registered (live) and only this thread reads it.
        unsafe { set_level(t, true, spa::SPA_LOG_LEVEL_TRACE) };
        assert_eq!(r.read(), Some(spa::SPA_LOG_LEVEL_TRACE));
        // SAFETY: as above.
        unsafe { set_level(t, false, spa::SPA_LOG_LEVEL_WARN) };
        assert_eq!(r.read(), Some(NO_CUSTOM_LEVEL));

        // A second instance shares the registration.
        r.acquire(lookup);
        assert_eq!((lookups.load(Relaxed), seen.counts()), (1, (1, 0)));
        r.release();
        assert_eq!(seen.counts(), (1, 0));
        assert_eq!(r.topic.load(Relaxed), t);

        // The last one unregisters the same topic, name still readable.
        r.release();
        assert_eq!(seen.counts(), (1, 1));
        assert_eq!(seen.last.load(Relaxed), t);
        assert!(r.topic.load(Relaxed).is_null());
        assert_eq!(r.read(), None);

        // A later load starts over; an unmatched release changes nothing.
        r.acquire(lookup);
        assert_eq!((lookups.load(Relaxed), seen.counts()), (2, (2, 1)));
        r.release();
        r.release();
        assert_eq!(seen.counts(), (2, 2));
        assert!(seen.named.load(Relaxed));
    }

    #[test]
    fn without_unregister_the_topic_stays_registered_and_is_reused() {
        let seen = &SEEN[1];
        let r = Registry::new();
        let lookup = || {
            Some(RegistryFns {
                register: fake_register::<1>,
                unregister: None,
            })
        };
        r.acquire(lookup);
        let t = r.topic.load(Relaxed);
        r.release();
        assert_eq!(seen.counts(), (1, 0));
        assert_eq!(r.topic.load(Relaxed), t, "kept: PipeWire still holds it");
        assert_eq!(r.read(), Some(spa::SPA_LOG_LEVEL_DEBUG));
        r.acquire(lookup);
        assert_eq!(seen.counts(), (1, 0), "not registered twice");
        r.release();
        assert!(seen.named.load(Relaxed));
    }

    #[test]
    fn without_a_registry_nothing_is_registered() {
        let r = Registry::new();
        r.acquire(|| None);
        assert_eq!(r.read(), None);
        r.release();
        assert_eq!(r.read(), None);
        // The next first instance looks again.
        let looked = AtomicBool::new(false);
        r.acquire(|| {
            looked.store(true, Relaxed);
            None
        });
        assert!(looked.load(Relaxed));
        r.release();
    }

    #[test]
    fn symbols_come_from_the_loaded_library_else_the_global_scope() {
        // libc is loaded: its own symbols come from it.
        let [getpid] = symbols(c"libc.so.6", [c"getpid"]);
        assert!(!getpid.is_null());
        // A library that is not loaded is not loaded now: the global
        // scope answers instead.
        let missing = c"libbark-no-such-library.so.0";
        assert_eq!(symbols(missing, [c"getpid"]), [getpid]);
        // SAFETY: a NUL-terminated name; NOLOAD only queries.
        let h = unsafe { libc::dlopen(missing.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        assert!(h.is_null());
        // Once the library is found, what it lacks is not sought
        // elsewhere: _Unwind_Resume is in libgcc_s, which every Rust test
        // on Linux has loaded, not in libc.
        let [in_global] = symbols(missing, [c"_Unwind_Resume"]);
        assert!(!in_global.is_null());
        assert_eq!(
            symbols(c"libc.so.6", [c"_Unwind_Resume"]),
            [ptr::null_mut()]
        );
    }

    #[test]
    fn pipewire_has_both_registry_functions_or_neither() {
        let [register, unregister] = symbols(
            LIBPIPEWIRE,
            [c"pw_log_topic_register", c"pw_log_topic_unregister"],
        );
        assert_eq!(register.is_null(), unregister.is_null());
        let fns = pipewire_registry();
        assert_eq!(fns.is_some(), !register.is_null());
        assert!(fns.is_none_or(|f| f.unregister.is_some()));
    }
}

//! Logging through PipeWire's own log, under the topic `mod.bark`, so that
//! `PIPEWIRE_DEBUG` (e.g. `PIPEWIRE_DEBUG=mod.bark:4` or `PIPEWIRE_DEBUG=3`)
//! and the daemon's log targets apply to Bark as to any other module.
//!
//! The macros format into a heap string: use them on the main thread, never
//! per buffer on the data thread.

use libspa_sys as spa;
use pipewire_sys as pw;
use std::ffi::{c_char, c_void, CStr};
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::OnceLock;

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

/// [`CUSTOM_LEVEL`] when no `PIPEWIRE_DEBUG` pattern names the topic: the
/// global level applies, as for PipeWire's own topics.
const NO_CUSTOM_LEVEL: u32 = u32::MAX;

/// The level that `PIPEWIRE_DEBUG` patterns give `mod.bark`, or
/// [`NO_CUSTOM_LEVEL`]. Every module load refreshes it on the main thread
/// while another instance's data thread may read it (its panic guard logs),
/// so it is an atomic rather than a `spa_log_topic` that PipeWire writes
/// in place: C's plain stores would race those reads.
static CUSTOM_LEVEL: AtomicU32 = AtomicU32::new(NO_CUSTOM_LEVEL);

/// A `spa_log_topic` for `mod.bark` carrying `custom` (a level, or
/// [`NO_CUSTOM_LEVEL`]). Built on the stack for each use, so that C never
/// writes memory that another thread reads.
fn topic(custom: u32) -> spa::spa_log_topic {
    spa::spa_log_topic {
        version: 0,
        topic: TOPIC_NAME.as_ptr(),
        level: if custom == NO_CUSTOM_LEVEL {
            spa::SPA_LOG_LEVEL_INFO
        } else {
            custom
        },
        has_custom_level: custom != NO_CUSTOM_LEVEL,
    }
}

/// The custom level of `mod.bark` from PipeWire's topic registry, or
/// [`NO_CUSTOM_LEVEL`]; `None` where there is no registry.
///
/// PipeWire 1.1 and later apply `PIPEWIRE_DEBUG` patterns only to topics
/// registered with `pw_log_topic_register` (the logger's `topic_init`,
/// which 0.3 uses, no longer looks at them), so without this
/// `PIPEWIRE_DEBUG=mod.bark:4` showed nothing on 1.x. The symbol is looked
/// up at run time because 0.3 has none. The topic is registered once per
/// load of this library and never unregistered: it and its name live on
/// the heap, not in this library's memory, so that PipeWire may still walk
/// its registry after the module is unloaded (a leak of some 40 bytes per
/// load).
fn registered_level() -> Option<u32> {
    static TOPIC: OnceLock<usize> = OnceLock::new();
    type Register = unsafe extern "C" fn(*mut spa::spa_log_topic);
    // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only looks
    // the symbol up in the loaded objects (the daemon links libpipewire).
    let sym = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"pw_log_topic_register".as_ptr()) };
    if sym.is_null() {
        return None;
    }
    let at = *TOPIC.get_or_init(|| {
        let t = Box::into_raw(Box::new(spa::spa_log_topic {
            version: 0,
            topic: TOPIC_NAME.to_owned().into_raw(),
            level: spa::SPA_LOG_LEVEL_INFO,
            has_custom_level: false,
        }));
        // SAFETY: `sym` is pw_log_topic_register (PipeWire ≥ 1.1):
        // `void (struct spa_log_topic *)`. `t` points to a live topic that
        // is never freed; PipeWire keeps the pointer and writes the level
        // fields under its lock from the thread that changes log levels.
        unsafe {
            let register: Register = std::mem::transmute::<*mut c_void, Register>(sym);
            register(t);
        }
        t as usize
    });
    let t = at as *const spa::spa_log_topic;
    // SAFETY: `t` is the topic registered above, never freed. PipeWire
    // writes its level fields only when log levels change, on the main
    // thread, which is the thread this runs on (module load).
    let (level, custom) = unsafe {
        (
            std::ptr::addr_of!((*t).level).read_volatile(),
            std::ptr::addr_of!((*t).has_custom_level).read_volatile(),
        )
    };
    Some(if custom { level } else { NO_CUSTOM_LEVEL })
}

/// Asks PipeWire which level its `PIPEWIRE_DEBUG` patterns give `mod.bark`
/// (its topic registry on 1.1 and later, its logger's `topic_init` before)
/// and keeps it for [`enabled`] and [`log_at`]. Call on the main thread at
/// each load: a later load picks up patterns changed since.
pub fn init() {
    if let Some(level) = registered_level() {
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
    let level = if t.has_custom_level {
        t.level
    } else {
        NO_CUSTOM_LEVEL
    };
    CUSTOM_LEVEL.store(level, Relaxed);
}

/// Whether messages of `level` are printed.
pub fn enabled(level: Level) -> bool {
    let custom = CUSTOM_LEVEL.load(Relaxed);
    let lim = if custom != NO_CUSTOM_LEVEL {
        custom
    } else {
        // SAFETY: a read of PipeWire's exported global level, a plain C
        // variable that PipeWire writes only from its main thread
        // (pw_log_set_level). Our callers are main-loop callbacks, which
        // no such write can overlap, and, once per module at most, the
        // panic guard on the data thread, which reads it unsynchronized
        // exactly as every PipeWire thread's own pw_log_* checks do (C
        // offers nothing to synchronize with); volatile keeps it one
        // aligned load, never cached.
        unsafe { std::ptr::addr_of!(pw::pw_log_level).read_volatile() }
    };
    lim >= level as u32
}

/// Logs a message at `level`; `file`, `line` and `func` say where from
/// (PipeWire prints them at debug levels).
pub fn log_at(level: Level, file: &CStr, line: u32, func: &CStr, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let msg = crate::ffi::cstring(&args.to_string());
    // pw_log_logt checks the level again against the topic it is given.
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

/// Logs an error without location (for the panic guard).
pub fn error(args: fmt::Arguments) {
    log_at(Level::Error, c"bark", 0, c"bark", args);
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

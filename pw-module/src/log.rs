//! Logging through PipeWire's own log, under the topic `mod.bark`, so that
//! `PIPEWIRE_DEBUG` (e.g. `PIPEWIRE_DEBUG=mod.bark:4` or `PIPEWIRE_DEBUG=3`)
//! and the daemon's log targets apply to Bark as to any other module.
//!
//! The macros format into a heap string: use them on the main thread, never
//! per buffer on the data thread.

use libspa_sys as spa;
use pipewire_sys as pw;
use std::cell::UnsafeCell;
use std::ffi::{c_char, CStr};
use std::fmt;

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

/// The topic: PipeWire writes its level into it (from `PIPEWIRE_DEBUG`
/// patterns), so it lives in a mutable static.
struct Topic(UnsafeCell<spa::spa_log_topic>);
// SAFETY: PipeWire writes the level fields only from topic_init, which we
// call from the main thread at module load; other threads only read them.
unsafe impl Sync for Topic {}

static TOPIC: Topic = Topic(UnsafeCell::new(spa::spa_log_topic {
    version: 0,
    topic: c"mod.bark".as_ptr(),
    level: spa::SPA_LOG_LEVEL_INFO,
    has_custom_level: false,
}));

/// Registers the topic with PipeWire's logger so that `PIPEWIRE_DEBUG`
/// patterns for `mod.bark` take effect. Call on the main thread at load.
pub fn init() {
    // SAFETY: pw_log_get returns the global logger (or NULL); topic_init is
    // a version-1 method of spa_log, called only when the logger has it.
    unsafe {
        let log = pw::pw_log_get();
        if log.is_null() {
            return;
        }
        let iface = &(*log).iface;
        // The interface itself is version 0 (SPA_VERSION_LOG); topic_init
        // is a version-1 *method*, which is what spa_log_topic_init checks.
        if iface.cb.funcs.is_null() {
            return;
        }
        let m = &*(iface.cb.funcs as *const spa::spa_log_methods);
        if m.version >= 1 {
            if let Some(f) = m.topic_init {
                f(iface.cb.data, TOPIC.0.get());
            }
        }
    }
}

/// Whether messages of `level` are printed.
pub fn enabled(level: Level) -> bool {
    // SAFETY: plain reads of PipeWire's level globals; a torn read at worst
    // prints or drops one message.
    unsafe {
        let t = TOPIC.0.get();
        let lim = if std::ptr::addr_of!((*t).has_custom_level).read_volatile() {
            std::ptr::addr_of!((*t).level).read_volatile()
        } else {
            std::ptr::addr_of!(pw::pw_log_level).read_volatile()
        };
        lim >= level as u32
    }
}

/// Logs a message at `level`; `file`, `line` and `func` say where from
/// (PipeWire prints them at debug levels).
pub fn log_at(level: Level, file: &CStr, line: u32, func: &CStr, args: fmt::Arguments) {
    if !enabled(level) {
        return;
    }
    let msg = crate::ffi::cstring(&args.to_string());
    // SAFETY: "%s" with one valid C string argument.
    unsafe {
        pw::pw_log_logt(
            level as u32,
            TOPIC.0.get(),
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

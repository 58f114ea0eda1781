//! Module lifecycle in one running process, with no daemon: a PipeWire
//! context on a thread loop (as in any PipeWire process) loads and unloads
//! each module 20 times through `pw_context_load_module` /
//! `pw_impl_module_destroy`, the same calls the daemon makes for
//! `context.modules` and `pw-cli destroy <module>`. Its own binary, so no
//! other test shares the process whose RSS and descriptors are measured.
//!
//! Checks:
//! - bad arguments make `pw_context_load_module` fail (NULL, errno set), and
//!   the process goes on;
//! - after 3 warm-up cycles, 20 more leave this process's descriptor count
//!   exactly where it was and its RSS within 4 MiB (why: see `RSS_SLACK_KIB`).
//!
//! Run by `make test-pw` (needs `make modules` first, like tests/headless.rs),
//! and by `make test-pw1` inside a Debian 13 root, where this process loads
//! PipeWire 1.4.2's libpipewire. There it is the only test of unloading: 1.x
//! does not let a client unload a module from a running daemon (see
//! tests/headless.rs).

mod common;
use common::{module_dir, system_module_dir};
use pipewire_sys as pw;
use std::ffi::CString;
use std::ptr;
use std::thread;
use std::time::Duration;

/// Warm-up cycles before the baseline: first loads map libraries, fill
/// PipeWire's type and plugin caches and grow the allocator's arenas.
const WARMUP: usize = 3;
const CYCLES: usize = 20;
/// RSS growth tolerated over the 20 cycles, KiB. glibc keeps freed memory in
/// its arenas and returns it lazily, so RSS wanders by a few hundred KiB
/// between identical cycles. A leak of what one cycle allocates is larger
/// than this over 20 cycles: the receiver alone preallocates its 2.5 s ring
/// (~3.7 MiB for 2 channels at 192 kHz), the sender a packet buffer plus
/// the stream's buffers, and a leaked stream or core connection its
/// shared-memory pool (≥ 1 MiB each).
const RSS_SLACK_KIB: u64 = 4096;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A context on a running thread loop.
struct Host {
    tl: *mut pw::pw_thread_loop,
    ctx: *mut pw::pw_context,
}

impl Host {
    fn new() -> Host {
        // SAFETY: plain PipeWire set-up calls with valid arguments; the
        // loop outlives the context (dropped in reverse).
        unsafe {
            pw::pw_init(ptr::null_mut(), ptr::null_mut());
            let tl = pw::pw_thread_loop_new(c"bark-lifecycle".as_ptr(), ptr::null());
            assert!(!tl.is_null(), "pw_thread_loop_new");
            let ctx = pw::pw_context_new(pw::pw_thread_loop_get_loop(tl), ptr::null_mut(), 0);
            assert!(!ctx.is_null(), "pw_context_new");
            assert_eq!(pw::pw_thread_loop_start(tl), 0, "pw_thread_loop_start");
            Host { tl, ctx }
        }
    }

    /// Loads `name` with `args`; the module or the errno of the failure.
    fn load(&self, name: &str, args: &str) -> Result<*mut pw::pw_impl_module, i32> {
        let n = CString::new(name).unwrap();
        let a = CString::new(args).unwrap();
        // SAFETY: under the loop lock, as PipeWire requires for a context
        // whose loop runs on another thread.
        unsafe {
            pw::pw_thread_loop_lock(self.tl);
            let m = pw::pw_context_load_module(self.ctx, n.as_ptr(), a.as_ptr(), ptr::null_mut());
            let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
            pw::pw_thread_loop_unlock(self.tl);
            if m.is_null() {
                Err(e)
            } else {
                Ok(m)
            }
        }
    }

    fn unload(&self, m: *mut pw::pw_impl_module) {
        // SAFETY: `m` was loaded into this context and not destroyed yet.
        unsafe {
            pw::pw_thread_loop_lock(self.tl);
            pw::pw_impl_module_destroy(m);
            pw::pw_thread_loop_unlock(self.tl);
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SAFETY: created in `new`; the loop is stopped before the context
        // goes, so no callback runs on a destroyed context.
        unsafe {
            pw::pw_thread_loop_stop(self.tl);
            pw::pw_context_destroy(self.ctx);
            pw::pw_thread_loop_destroy(self.tl);
        }
    }
}

#[test]
#[ignore = "needs libpipewire and built modules: run `make test-pw`"]
fn load_unload_cycles_leak_nothing() {
    let dir = module_dir();
    assert!(
        dir.join("libpipewire-module-bark-sink.so").exists(),
        "modules missing in {}: run `make modules` first",
        dir.display()
    );
    let sysdir = system_module_dir();
    // SAFETY (edition 2021: safe fn): set before any PipeWire call or
    // thread reads the environment.
    std::env::set_var("PIPEWIRE_MODULE_DIR", format!("{}:{sysdir}", dir.display()));
    // A private runtime dir: nothing here may reach a real daemon.
    let run = tempfile::tempdir().expect("tempdir");
    std::env::set_var("XDG_RUNTIME_DIR", run.path());
    std::env::remove_var("PIPEWIRE_REMOTE");
    let host = Host::new();

    for (m, args) in [
        ("libpipewire-module-bark-sink", "{ audio.rate = 0 }"),
        (
            "libpipewire-module-bark-sink",
            "{ destination.ip = 300.1.2.3 }",
        ),
        ("libpipewire-module-bark-sink", "{ audio.format = U8 }"),
        (
            "libpipewire-module-bark-source",
            "{ media.class = Video/Source }",
        ),
        ("libpipewire-module-bark-source", "{ source.port = 99999 }"),
        (
            "libpipewire-module-bark-source",
            "{ sess.latency.msec = -5 }",
        ),
    ] {
        match host.load(m, args) {
            Ok(_) => panic!("{m} {args} loaded"),
            Err(e) => eprintln!("ok: {m} {args}: refused (errno {e})"),
        }
    }

    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (m, args) in [
        (
            "libpipewire-module-bark-sink",
            format!(
                "{{ node.name = cycle_sink destination.ip = 127.0.0.1 destination.port = {port} }}"
            ),
        ),
        (
            "libpipewire-module-bark-source",
            format!("{{ node.name = cycle_source source.ip = 127.0.0.1 source.port = {port} }}"),
        ),
    ] {
        // Descriptors open while loaded: shows the module really set up
        // its sockets and stream, so the count coming back means something.
        let loaded_fds = std::cell::Cell::new(0);
        let cycle = || {
            let h = host
                .load(m, &args)
                .unwrap_or_else(|e| panic!("{m}: load failed, errno {e}"));
            // Let the stream connect and the data-loop sources run.
            thread::sleep(Duration::from_millis(150));
            loaded_fds.set(fd_count());
            host.unload(h);
            thread::sleep(Duration::from_millis(50));
        };
        for _ in 0..WARMUP {
            cycle();
        }
        let (rss0, fd0) = (rss_kib(), fd_count());
        for _ in 0..CYCLES {
            cycle();
        }
        let (rss1, fd1) = (rss_kib(), fd_count());
        eprintln!(
            "{m}: {CYCLES} load/unload cycles: RSS {rss0} -> {rss1} KiB ({:+}), fds {fd0} -> {fd1} ({} while loaded)",
            rss1 as i64 - rss0 as i64,
            loaded_fds.get()
        );
        assert!(
            loaded_fds.get() > fd0,
            "{m}: opened no descriptor while loaded"
        );
        assert_eq!(fd1, fd0, "{m}: descriptors leaked");
        assert!(
            rss1 <= rss0 + RSS_SLACK_KIB,
            "{m}: RSS grew {} KiB over {CYCLES} cycles",
            rss1 - rss0
        );
    }
    drop(host);
}

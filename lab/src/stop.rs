//! SIGTERM/SIGINT as a flag, for the lab's long-running tools
//! (bark-lab-relay, bark-lab-wire): the lab stops them with TERM, and they
//! still print their counters on the way out.

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Installs the handler for SIGTERM and SIGINT; after either, [`stopped`]
/// returns true. Call once, early in `main`.
pub fn install() {
    // SAFETY: the handler only stores to an atomic, which is
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// True once SIGTERM or SIGINT arrived (after [`install`]).
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

//! The libpulse plumbing both roles share: one single-threaded main loop,
//! the connection to the server with reconnection, and panic guards.
//!
//! Design: everything runs on one thread, in [`Loop::iterate`]'s caller.
//! libpulse callbacks never touch the PulseAudio objects or the core; they
//! only record what happened (a state change, a result, "data is
//! wanted") in shared cells. Right after each loop turn the role's
//! `service()` reads those notes and does the work: reads and writes audio,
//! drives the connection's state machine, serves the sockets. Nothing is
//! locked, nothing is shared between threads, and no libpulse object is
//! borrowed from inside one of its own callbacks.
//!
//! libpulse-binding already runs each closure under `catch_unwind`, but it
//! drops the panic silently. Every closure written here goes through
//! [`Guard::run`], which logs the panic and marks the process broken, so the
//! loop exits with an error (and systemd restarts it) rather than running on
//! in an unknown state.

use anyhow::{anyhow, Result};
use libpulse_binding as pulse;
use pulse::context::{Context, FlagSet as CtxFlags, State as CtxState};
use pulse::mainloop::api::Mainloop as _;
use pulse::mainloop::api::MainloopInner;
use pulse::mainloop::events::io::{FlagSet as IoFlags, IoEvent};
use pulse::mainloop::events::timer::TimeEvent;
use pulse::mainloop::signal::{Event as SignalEvent, MainloopSignals as _};
use pulse::mainloop::standard::{IterateResult, Mainloop, MainloopInternal};

/// The standard main loop's inner type, which its events are generic over.
pub type Inner = MainloopInner<MainloopInternal>;
use pulse::proplist::Proplist;
use pulse::time::{MicroSeconds, MonotonicTs};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Duration;

/// Records panics of callbacks (see the module docs).
#[derive(Clone, Default)]
pub struct Guard(Rc<Cell<bool>>);

impl Guard {
    /// Runs `f`, catching a panic: logged, remembered, `None` returned.
    pub fn run<R>(&self, what: &str, f: impl FnOnce() -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(r) => Some(r),
            Err(e) => {
                let msg = e
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| e.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                log::error!("bug: panic in {what} callback: {msg}");
                self.0.set(true);
                None
            }
        }
    }

    /// Whether some callback panicked.
    pub fn tripped(&self) -> bool {
        self.0.get()
    }
}

/// The main loop, its periodic tick, and SIGINT/SIGTERM.
pub struct Loop {
    // Field order is drop order: the signal events and the timer hold
    // pointers into the main loop and must go before it.
    signals: Vec<SignalEvent>,
    _tick: TimeEvent<Inner>,
    ml: Mainloop,
    tick_us: Rc<Cell<u64>>,
    quit: Rc<Cell<Option<i32>>>,
    /// Panic guard for every callback of this loop's users.
    pub guard: Guard,
}

impl Drop for Loop {
    fn drop(&mut self) {
        // pa_signal_free each while the loop they were registered with
        // still exists. (pa_signal_done is not called: in libpulse 16.1 it
        // aborts on an assertion after the events were freed; the signal
        // pipe's watch goes with the main loop, at process exit anyway.)
        self.signals.clear();
    }
}

impl Loop {
    /// A loop that wakes at least every `tick_us` µs.
    ///
    /// # Errors
    /// When libpulse cannot create a main loop or timer.
    pub fn new(tick_us: u64) -> Result<Loop> {
        let mut ml =
            Mainloop::new().ok_or_else(|| anyhow!("cannot create a PulseAudio main loop"))?;
        let guard = Guard::default();
        let tick = Rc::new(Cell::new(tick_us.max(100)));
        let t = tick.clone();
        let g = guard.clone();
        let first = MonotonicTs::now() + MicroSeconds(tick.get());
        let timer = ml
            .new_timer_event_rt(
                first,
                Box::new(move |mut ev| {
                    g.run("tick", || {
                        // The tick only wakes the loop; the work is done by
                        // the caller of iterate().
                        ev.restart_rt(MonotonicTs::now() + MicroSeconds(t.get()));
                    });
                }),
            )
            .ok_or_else(|| anyhow!("cannot create a timer"))?;
        ml.init_signals()
            .map_err(|e| anyhow!("cannot set up signal handling: {e}"))?;
        let quit = Rc::new(Cell::new(None));
        let mut signals = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM] {
            let q = quit.clone();
            let g = guard.clone();
            signals.push(SignalEvent::new(sig, move |s| {
                g.run("signal", || q.set(Some(s)));
            }));
        }
        // A closed pipe or socket must give an error, not kill us.
        // SAFETY: setting a signal disposition to SIG_IGN is always sound.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        Ok(Loop {
            ml,
            tick_us: tick,
            _tick: timer,
            quit,
            signals,
            guard,
        })
    }

    /// The libpulse main loop (to create contexts on).
    pub fn mainloop(&self) -> &Mainloop {
        &self.ml
    }

    /// Changes the tick period, µs (takes effect at the next tick).
    pub fn set_tick_us(&self, us: u64) {
        self.tick_us.set(us.max(100));
    }

    /// Blocks until at least one event was handled (a tick at the latest).
    ///
    /// # Errors
    /// When the main loop itself fails (not the connection).
    pub fn iterate(&mut self) -> Result<()> {
        match self.ml.iterate(true) {
            IterateResult::Success(_) => Ok(()),
            IterateResult::Quit(_) => Err(anyhow!("main loop quit")),
            IterateResult::Err(e) => Err(anyhow!("main loop failed: {e}")),
        }
    }

    /// The signal asked to stop, if any.
    pub fn quit_signal(&self) -> Option<i32> {
        self.quit.get()
    }

    /// Wakes the loop whenever `fd` is readable (the caller drains it).
    ///
    /// # Errors
    /// When libpulse cannot watch the descriptor.
    pub fn watch_readable(&mut self, fd: i32) -> Result<IoEvent<Inner>> {
        let g = self.guard.clone();
        self.ml
            .new_io_event(
                fd,
                IoFlags::INPUT,
                Box::new(move |_, _, _| {
                    g.run("socket", || ());
                }),
            )
            .ok_or_else(|| anyhow!("cannot watch fd {fd}"))
    }
}

/// Backoff between connection attempts: 250 ms doubling to 4 s, so a
/// restarting server is found quickly and a missing one is not hammered.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: Duration::from_millis(250),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt; doubles it for the one after.
    pub fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Duration::from_secs(4));
        d
    }

    /// Back to the shortest delay (after a connection succeeded).
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// A context (connection to the server) and its state as last reported.
pub struct Conn {
    /// The context.
    pub ctx: Context,
    state: Rc<Cell<CtxState>>,
}

impl Conn {
    /// Starts connecting to `server` (or the default server). Never spawns
    /// a daemon: the session starts the sound server, not us.
    ///
    /// # Errors
    /// When the context cannot be created or the connection cannot start.
    pub fn connect(lp: &Loop, app: &str, role: &str, server: Option<&str>) -> Result<Conn> {
        let mut pl = Proplist::new().ok_or_else(|| anyhow!("cannot create a property list"))?;
        let _ = pl.set_str(pulse::proplist::properties::APPLICATION_NAME, app);
        let _ = pl.set_str(
            pulse::proplist::properties::APPLICATION_ID,
            "org.bark.pulse",
        );
        let _ = pl.set_str(
            pulse::proplist::properties::APPLICATION_ICON_NAME,
            "network-wireless",
        );
        let _ = pl.set_str(
            pulse::proplist::properties::APPLICATION_VERSION,
            env!("CARGO_PKG_VERSION"),
        );
        let _ = pl.set_str("bark.role", role);
        let mut ctx = Context::new_with_proplist(lp.mainloop(), app, &pl)
            .ok_or_else(|| anyhow!("cannot create a PulseAudio context"))?;
        let state = Rc::new(Cell::new(CtxState::Unconnected));
        let s = state.clone();
        let g = lp.guard.clone();
        // The callback cannot read the context (it is not ours to borrow
        // there); it only notes that the state changed, and Conn::poll
        // reads it.
        ctx.set_state_callback(Some(Box::new(move || {
            g.run("context state", || s.set(CtxState::Connecting));
        })));
        ctx.connect(server, CtxFlags::NOAUTOSPAWN, None)
            .map_err(|e| {
                anyhow!(
                    "cannot connect to PulseAudio{}: {e}",
                    server.map(|s| format!(" at {s}")).unwrap_or_default()
                )
            })?;
        Ok(Conn { ctx, state })
    }

    /// The context's current state.
    pub fn state(&self) -> CtxState {
        let st = self.ctx.get_state();
        self.state.set(st);
        st
    }

    /// Whether the connection is gone for good (failed or terminated).
    pub fn is_dead(&self) -> bool {
        matches!(self.state(), CtxState::Failed | CtxState::Terminated)
    }

    /// The last error, as text.
    pub fn error(&self) -> String {
        self.ctx
            .errno()
            .to_string()
            .unwrap_or_else(|| "unknown error".into())
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.ctx.set_state_callback(None);
        self.ctx.disconnect();
    }
}

/// Runs the loop until `done()` or `limit` passes (bounded waits, e.g. for
/// the module to unload at exit).
pub fn run_until(lp: &mut Loop, limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if done() {
            return true;
        }
        if lp.iterate().is_err() {
            return false;
        }
    }
    done()
}

/// A one-shot result slot filled by an operation's callback.
pub type Slot<T> = Rc<std::cell::RefCell<Option<T>>>;

/// A new empty slot.
pub fn slot<T>() -> Slot<T> {
    Rc::new(std::cell::RefCell::new(None))
}

/// A new empty slot, and a callback for an operation with one result that
/// fills it (under `lp`'s guard; `what` names it if it panics).
pub fn answer<T: 'static>(lp: &Loop, what: &'static str) -> (Slot<T>, impl FnMut(T) + 'static) {
    let result = slot();
    let (r, g) = (result.clone(), lp.guard.clone());
    let fill = move |v| {
        g.run(what, || *r.borrow_mut() = Some(v));
    };
    (result, fill)
}

/// Real-time priority for the (single) audio thread, best effort: a late
/// turn of the loop is an audible underrun, and the PipeWire modules run
/// on PipeWire's real-time data thread. `SCHED_RR` at a low priority (3,
/// below PulseAudio's default 5) when `RLIMIT_RTPRIO` or root allows it,
/// else nice −11 (what PulseAudio asks for itself), else nothing. Not
/// inherited by children (`SCHED_RESET_ON_FORK`). Returns what was got.
/// `BARK_PULSE_NO_REALTIME` (any value) skips it.
pub fn raise_priority() -> &'static str {
    // For measurements: how the client fares without it (the lab's
    // PipeWire hosts run without real-time scheduling).
    if std::env::var_os("BARK_PULSE_NO_REALTIME").is_some() {
        return "normal (BARK_PULSE_NO_REALTIME)";
    }
    let param = libc::sched_param { sched_priority: 3 };
    // SAFETY: plain syscalls on this process with a valid parameter block.
    unsafe {
        if libc::sched_setscheduler(0, libc::SCHED_RR | libc::SCHED_RESET_ON_FORK, &param) == 0 {
            return "SCHED_RR 3";
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, -11) == 0 {
            return "nice -11";
        }
    }
    "normal"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_four_seconds() {
        let mut b = Backoff::default();
        let d: Vec<u64> = (0..7).map(|_| b.step().as_millis() as u64).collect();
        assert_eq!(d, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        b.reset();
        assert_eq!(b.step().as_millis(), 250);
    }
}

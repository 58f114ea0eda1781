//! The main loop both roles run: serve the sockets, connect to the server
//! with backoff and again when it goes away, advance the connection's
//! set-up, move audio, report every 10 s, until SIGINT/SIGTERM or a
//! callback's panic. The role (sink or source) fills in its parts through
//! [`Role`]; the network side is the role's and outlives connections.

use crate::clock::{monotonic_ns, ClockMap, TEST_CLOCK_ENV};
use crate::pa::{self, Backoff, Conn, Loop};
use crate::session::{Session, Step, Turn};
use anyhow::{anyhow, Result};
use bark_core::auth::Key;
use std::path::Path;
use std::time::{Duration, Instant};

/// How often the debug report is logged.
const REPORT_PERIOD: Duration = Duration::from_secs(10);

/// What both roles start from, before their endpoint and sockets.
pub struct Start {
    /// This host's name.
    pub host: String,
    /// A fresh random id: the sender's session, the receiver's node.
    pub id: u64,
    /// The `key-file`'s key, if set.
    pub key: Option<Key>,
    /// CLOCK_MONOTONIC onto the endpoint's clock: the identity, or the
    /// test skew of `BARK_TEST_CLOCK`.
    pub clock: ClockMap,
}

impl Start {
    /// Reads the host name, draws the id, loads `key_file`, and sets the
    /// clock map up (warning under `log_target` when it skews).
    ///
    /// # Errors
    /// A malformed `BARK_TEST_CLOCK`, or the key file's problem.
    pub fn load(key_file: Option<&Path>, log_target: &str) -> Result<Start> {
        let host = bark_io::node::hostname();
        let clock = ClockMap::from_env(monotonic_ns()).map_err(|e| anyhow!(e))?;
        if !clock.is_identity() {
            log::warn!(target: log_target, "test clock skew active ({TEST_CLOCK_ENV})");
        }
        let id = bark_io::node::random_nonzero_u64();
        let key = crate::keyed::load(key_file)?;
        Ok(Start {
            host,
            id,
            key,
            clock,
        })
    }

    /// ", key id …" for the start-up line when a key is set, else nothing.
    pub fn key_note(&self) -> String {
        self.key
            .as_ref()
            .map(|k| format!(", key id {}", k.id()))
            .unwrap_or_default()
    }
}

/// One role's session type.
pub type SessionOf<R> = Session<<R as Role>::Setup, <R as Role>::State>;

/// What a role adds to the shared loop. Every method runs on the loop's
/// thread, after a loop turn; none may block.
pub trait Role {
    /// The role's own set-up steps (see [`Step::Setup`]).
    type Setup;
    /// The role's state of one connection (see [`Session::role`]).
    type State;
    /// `bark.role` of the connection: "sender" or "receiver".
    const NAME: &'static str;
    /// Target of the loop's log lines: the role's module (`module_path!()`),
    /// so that a filter such as `RUST_LOG=bark_pulse::sink=debug` sees
    /// them as it did before the loop was shared.
    const LOG_TARGET: &'static str;

    /// The server to connect to (`None`: the default one).
    fn server(&self) -> Option<&str>;
    /// A session for a new connection.
    fn open(&self, conn: Conn) -> SessionOf<Self>;
    /// Serves the sockets; every turn, connected or not.
    fn serve(&mut self, lp: &Loop);
    /// Starts the set-up: just connected, or a retry is due.
    fn begin(&mut self, s: &mut SessionOf<Self>, lp: &Loop);
    /// Advances the set-up.
    ///
    /// # Errors
    /// Problems no retry can fix; they end the loop.
    fn setup(&mut self, s: &mut SessionOf<Self>, lp: &Loop) -> Result<()>;
    /// The stream became ready.
    fn ready(&mut self, s: &mut SessionOf<Self>);
    /// The stream failed or ended: says why (the stream is dropped after).
    fn stopped(&mut self, s: &mut SessionOf<Self>);
    /// Moves audio and handles the stream's notes and timing reports;
    /// every turn while the stream is ready. `now_ns`: CLOCK_MONOTONIC.
    fn service(&mut self, s: &mut SessionOf<Self>, lp: &Loop, now_ns: u64);
    /// After the connection's work; every turn, connected or not.
    fn after_turn(&mut self, _s: Option<&SessionOf<Self>>) {}
    /// The periodic debug report.
    fn report(&self, s: Option<&SessionOf<Self>>);
    /// Tears the session down at exit.
    fn close(&mut self, s: SessionOf<Self>, lp: &mut Loop);
}

/// Runs `role` on `lp` until SIGINT/SIGTERM (`Ok`), a set-up problem no
/// retry can fix, a callback's panic or a main loop failure (`Err`).
///
/// # Errors
/// See above.
pub fn run<R: Role>(role: &mut R, lp: &mut Loop) -> Result<()> {
    log::debug!(target: R::LOG_TARGET, "scheduling: {}", pa::raise_priority());
    let mut backoff = Backoff::default();
    let mut session: Option<SessionOf<R>> = None;
    let mut retry_at = Instant::now();
    let mut last_report = Instant::now();
    let result = loop {
        if let Some(sig) = lp.quit_signal() {
            log::info!(target: R::LOG_TARGET, "signal {sig}: stopping");
            break Ok(());
        }
        if lp.guard.tripped() {
            break Err(anyhow!("a callback panicked (see above)"));
        }
        role.serve(lp);
        if session.is_none() && Instant::now() >= retry_at {
            match Conn::connect(lp, "Bark", R::NAME, role.server()) {
                Ok(c) => session = Some(role.open(c)),
                Err(e) => {
                    log::warn!(target: R::LOG_TARGET, "{e:#}");
                    retry_at = Instant::now() + backoff.step();
                }
            }
        }
        if let Some(s) = session.as_mut() {
            if s.conn.is_dead() {
                log::warn!(target: R::LOG_TARGET, "lost PulseAudio ({}); reconnecting", s.conn.error());
                s.drop_stream();
                session = None;
                retry_at = Instant::now() + backoff.step();
            } else {
                if let Err(e) = advance(role, s, lp) {
                    break Err(e);
                }
                if matches!(s.step, Step::Streaming) {
                    backoff.reset();
                }
                if s.stream_ready() {
                    role.service(s, lp, monotonic_ns());
                }
            }
        }
        role.after_turn(session.as_ref());
        if last_report.elapsed() >= REPORT_PERIOD {
            last_report = Instant::now();
            role.report(session.as_ref());
        }
        if let Err(e) = lp.iterate() {
            break Err(e);
        }
    };
    if let Some(s) = session.take() {
        role.close(s, lp);
    }
    result
}

/// Advances the connection's set-up one step: the shared steps, and the
/// role's where they leave it something to do.
fn advance<R: Role>(role: &mut R, s: &mut SessionOf<R>, lp: &Loop) -> Result<()> {
    match s.advance() {
        Turn::Wait => {}
        Turn::Connected => {
            log::info!(
                target: R::LOG_TARGET,
                "connected to PulseAudio ({})",
                s.conn.ctx.get_server().unwrap_or_default()
            );
            role.begin(s, lp);
        }
        Turn::Begin => role.begin(s, lp),
        Turn::Setup => role.setup(s, lp)?,
        Turn::Ready => role.ready(s),
        Turn::Stopped => {
            role.stopped(s);
            s.retry_stream();
        }
    }
    Ok(())
}

//! # bark-pulse
//!
//! Bark's two roles for machines that run PulseAudio instead of PipeWire,
//! interoperable with the PipeWire modules (same protocol, same defaults):
//!
//! - [`sink`]: `bark-pulse sink` loads a null sink, "Bark Network", records
//!   its monitor and sends it ([`bark_core::Sender`]);
//! - [`source`]: `bark-pulse source` plays the network stream in sync into
//!   a sink ([`bark_core::Receiver`]).
//!
//! PulseAudio has no supported API for out-of-tree modules, so this is a
//! small client the session starts (conf/systemd/). It is single-threaded:
//! libpulse's standard main loop wakes it for the server, the sockets and
//! a short tick, and one `service` pass after each wake-up does all the work
//! (see [`pa`]). Both roles run the same loop ([`driver`]) and connection
//! life cycle ([`session`]); [`sink`] and [`source`] hold only their own
//! parts. Timing comes from `pa_timing_info` ([`timing`]), smoothed into a
//! frame → time estimate ([`frameclock`]).

pub mod clock;
pub mod config;
pub mod driver;
pub mod flags;
pub mod frameclock;
pub mod keyed;
pub mod pa;
pub mod remote;
pub mod session;
pub mod sink;
pub mod source;
pub mod timing;

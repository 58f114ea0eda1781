//! # bark-core
//!
//! The sans-IO heart of Bark: live, synchronized, lossless audio over a LAN.
//! Nothing in this crate opens a socket, starts a thread or reads a clock.
//! Adapters (the PipeWire modules, the PulseAudio client, the CLI) feed it
//! datagrams and timestamps and move the bytes and samples it produces.
//!
//! - [`sender::Sender`] turns the sink's buffers into audio packets stamped on
//!   the sender clock, and answers time requests.
//! - [`receiver::Receiver`] keeps the sender clock ([`clock`]), buffers audio
//!   by frame ([`jitter`]), picks the stream to follow ([`select`]), and fills
//!   output buffers at the right instant through a drift-controlled
//!   resampler ([`drift`], [`resample`]).
//! - [`ratematch`] and [`frameclock`] are the adapters' estimators: the
//!   rate-match loop that steers an output's own resampler (the PipeWire
//!   receiver's `bark.resampler = pipewire`), and the play-time estimate
//!   from noisy timing reports (bark-pulse).
//! - [`command`] is the control plane's datagram: a controller changes a
//!   node's volume, mute, delay, name, stream; the node acks.
//! - [`auth`] seals and opens datagrams with an optional pre-shared key, at
//!   the adapters' socket boundary.
//! - [`sim`] drives all of it through simulated clocks and networks, the
//!   latter modelled by [`netmodel`].
//!
//! All times are `u64`/`i64` nanoseconds of the node's own monotonic clock
//! unless a name says otherwise.

pub mod auth;
pub mod channels;
pub mod clock;
pub mod command;
pub mod dll;
pub mod drift;
pub mod endpoint;
pub mod fanout;
pub mod fec;
pub mod format;
pub mod frameclock;
pub mod jitter;
pub mod latency;
pub mod netmodel;
pub mod opus;
pub mod protocol;
pub mod ratematch;
pub mod receiver;
pub mod repair;
pub mod resample;
pub mod select;
pub mod sender;
pub mod settings;
pub mod sim;
pub mod subscribe;
pub mod trust;

pub use format::{AudioFormat, SampleFormat};
pub use receiver::{Receiver, ReceiverConfig};
pub use sender::{Sender, SenderConfig};

/// Errors of the core. None of them is fatal to the caller: a malformed
/// packet is dropped, a bad config is reported to the user.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum Error {
    /// A datagram that does not follow docs/PROTOCOL.md; says what is wrong.
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// A setting out of range; says which and why.
    #[error("invalid configuration: {0}")]
    Config(String),
}

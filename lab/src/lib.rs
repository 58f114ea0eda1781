//! Bark lab: the measurement side of the network-namespace LAN harness.
//!
//! - [`recording`]: timestamped recordings (WAV + per-buffer CLOCK_MONOTONIC
//!   stamps) as written by `bark-lab-record` and `bark-lab-tone`.
//! - [`args`]: command-line option groups the tools share.
//! - [`analysis`]: alignment, latency, inter-receiver skew, dropouts and
//!   fidelity, as used by `bark-lab-analyze`.
//! - [`stalls`]: stalls of the machine itself (`bark-lab-stalls`), which
//!   explain a dropout no audio system could avoid.
//! - [`stop`]: SIGTERM/SIGINT as a flag for the long-running tools.
//!
//! The shell side (namespaces, daemons, sessions) is in `lab/*.sh`; see
//! `lab/README.md`.

pub mod analysis;
pub mod args;
pub mod onset;
pub mod pwutil;
pub mod recording;
pub mod stalls;
pub mod stop;

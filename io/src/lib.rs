//! Adapter-side helpers that every Bark adapter needs in the same form: the
//! PipeWire module (`pw-module/`), `bark-pulse` (`pulse-module/`) and the
//! `bark` CLI (`cli/`). The core (`bark-core`) stays sans-IO; this crate
//! holds what the adapters drive it with and share about the OS: clock
//! reads ([`clock`]), the UDP transport with kernel receive stamps
//! ([`net`]), key files ([`keyfile`]), node ids and the host name
//! ([`node`]), a node's command socket ([`command`]), and the rate-limited warnings about dropped datagrams
//! ([`dropwarn`]). Each adapter keeps only the translation from its own
//! settings and its own logger.

pub mod clock;
pub mod command;
pub mod discovery;
pub mod dropwarn;
pub mod keyfile;
pub mod net;
pub mod node;
pub mod state;

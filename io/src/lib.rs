//! Adapter-side helpers that every Bark adapter needs in the same form: the
//! PipeWire module (`pw-module/`), `bark-pulse` (`pulse-module/`) and the
//! `bark` CLI (`cli/`). The core (`bark-core`) stays sans-IO; this crate
//! holds the thin layer of clock reads it is driven with.

pub mod clock;

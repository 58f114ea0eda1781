//! # bark-cli
//!
//! The `bark` command: live cluster stats (`bark stats`), a headless sender
//! (`bark stream`) and receiver (`bark receive`), and diagnostics
//! (`bark doctor`). Thin adapters over [`bark_core`]: sockets, clocks and
//! files live here, the protocol and all timing logic in the core.

pub mod cli;
pub mod clock;
pub mod decode;
pub mod doctor;
pub mod keyed;
pub mod man;
pub mod net;
pub mod receive;
pub mod rooms;
pub mod stamps;
pub mod stats;
pub mod stream;
pub mod summary;
pub mod util;
pub mod web;

/// Runs a parsed command line; the process's exit code on success.
///
/// # Errors
/// Anything that stops the command, with context for the user.
pub fn run(cli: cli::Cli) -> anyhow::Result<i32> {
    match cli.command {
        cli::Command::Stats(a) => stats::run(&a).map(|()| 0),
        cli::Command::Ls(a) => rooms::ls(&a),
        cli::Command::Set(a) => rooms::set(&a),
        cli::Command::Zone(a) => rooms::zone(&a),
        cli::Command::Web(a) => web::run(&a).map(|()| 0),
        cli::Command::Stream(a) => stream::run(&a).map(|()| 0),
        cli::Command::Receive(a) => receive::run(&a).map(|()| 0),
        cli::Command::Doctor(a) => doctor::run(&a),
        cli::Command::Keygen(a) => keyed::keygen(&a.file).map(|()| 0),
        cli::Command::Man(a) => man::write_all(&a.dir).map(|()| 0),
    }
}

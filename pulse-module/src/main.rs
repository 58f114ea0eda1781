//! `bark-pulse`: see the library docs (`bark_pulse`) and `--help`.

use bark_pulse::config::{ConfigFile, SinkConfig, SourceConfig};
use bark_pulse::flags::{Cli, Role};
use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Role::Man(a) = &cli.role {
        return match bark_pulse::flags::write_man_pages(&a.dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bark-pulse man: {}: {e}", a.dir.display());
                ExitCode::FAILURE
            }
        };
    }
    let level = match cli.verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    let (file, path) = match ConfigFile::load(cli.config.as_deref(), cli.no_config) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("bark-pulse: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(p) = &path {
        log::info!("settings from {}", p.display());
    }
    let result = match &cli.role {
        Role::Sink(flags) => match SinkConfig::resolve(flags, &file) {
            Ok(c) if !cli.dry_run => bark_pulse::sink::run(c),
            r => return settle("sink", r.map(|c| c.summary())),
        },
        Role::Source(flags) => match SourceConfig::resolve(flags, &file) {
            Ok(c) if !cli.dry_run => bark_pulse::source::run(c),
            r => return settle("source", r.map(|c| c.summary())),
        },
        // Written and returned before the settings were read.
        Role::Man(_) => Ok(()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The end of a run that does not play: a settings error (exit 2), or
/// `--dry-run`'s summary.
fn settle<E: std::fmt::Display>(role: &str, r: Result<String, E>) -> ExitCode {
    match r {
        Err(e) => {
            eprintln!("bark-pulse {role}: {e}");
            ExitCode::from(2)
        }
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
    }
}

//! bark-pulse's command line: the global flags, the two roles, and each
//! role's settings flags, generated from the settings table (see
//! [`crate::config`], which resolves them over the file and defaults).

use crate::config::PULSE_ONLY;
use bark_core::settings::Role::{Sink, Source};
use bark_core::settings::{self, Kind, Setting};
use clap::{Arg, ArgMatches, Args, Command, Parser, Subcommand};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "bark-pulse",
    version,
    about = "Bark on PulseAudio: the \"Bark Network\" sink (sender) and the synchronized receiver",
    long_about = "Bark on PulseAudio: the \"Bark Network\" sink (sender) and the synchronized \
receiver, interoperable with Bark's PipeWire modules.\n\nSettings come from flags, then the \
[sink] or [source] table of a TOML file (--config, else $XDG_CONFIG_HOME/bark/pulse.toml if it \
exists), then defaults. Logging: RUST_LOG=debug or -v."
)]
pub struct Cli {
    /// TOML settings file (must exist when given).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Read no settings file, not even the default one.
    #[arg(long, global = true)]
    pub no_config: bool,
    /// More logging (-v: debug, -vv: trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Check and print the settings, then exit.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// What to run.
    #[command(subcommand)]
    pub role: Role,
}

/// The two roles.
#[derive(Subcommand, Debug)]
pub enum Role {
    /// The sender: a "Bark Network" null sink whose monitor goes to the network.
    Sink(SinkFlags),
    /// The receiver: plays the network stream in sync into a sink.
    Source(SourceFlags),
    /// Write the man pages (bark-pulse.1, bark-pulse-sink.1,
    /// bark-pulse-source.1) into a directory; used by the meson install.
    #[command(hide = true)]
    Man(ManArgs),
}

/// Flags of the hidden `bark-pulse man`.
#[derive(Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// Writes the man pages, generated from this command line definition by
/// clap_mangen, into `dir`: one page for `bark-pulse` and one per visible
/// subcommand, so they list exactly the flags the binary accepts.
///
/// # Errors
/// If the directory or a page cannot be written.
pub fn write_man_pages(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), dir)
}

/// Flags of `bark-pulse sink` (`SINK`) or `bark-pulse source`: one
/// `--NAME VALUE` for each setting of the role that bark-pulse has, with
/// the table's doc line, limits and default as help; kept as given (by
/// name) and parsed with the file's keys.
#[derive(Clone, Debug, Default)]
pub struct Flags<const SINK: bool>(pub BTreeMap<String, String>);
/// Flags of `bark-pulse sink`.
pub type SinkFlags = Flags<true>;
/// Flags of `bark-pulse source`.
pub type SourceFlags = Flags<false>;

impl<const SINK: bool> Flags<SINK> {
    const ROLE: settings::Role = [Source, Sink][SINK as usize];
}

/// The settings of `role` bark-pulse has, with their names, table order.
pub(crate) fn pulse_settings(
    role: settings::Role,
) -> impl Iterator<Item = (&'static Setting, &'static str)> {
    [settings::TABLE, PULSE_ONLY]
        .into_iter()
        .flatten()
        .filter(move |s| s.has(role))
        .filter_map(|s| s.pulse.map(|n| (s, n)))
}

impl<const SINK: bool> Args for Flags<SINK> {
    fn augment_args(cmd: Command) -> Command {
        let args = pulse_settings(Self::ROLE)
            .enumerate()
            .map(|(i, (s, name))| {
                let help = s.help();
                let (value, negative) = match s.kind {
                    Kind::Int { min, .. } => ("N", min < 0),
                    Kind::Msec { min, .. } => ("MS", min < 0.0),
                    Kind::Bool => ("BOOL", false),
                    Kind::Ipv4(_) => ("IPV4", false),
                    Kind::Ipv4Port => ("IPV4:PORT", false),
                    Kind::Destinations => ("IPV4[,IPV4...]", false),
                    Kind::Channels => ("CHANNELS", false),
                    Kind::Sample => ("FORMAT", false),
                    Kind::Text | Kind::Choice(_) => ("TEXT", false),
                };
                Arg::new(name)
                    .long(name)
                    .value_name(value)
                    .allow_hyphen_values(negative)
                    // After the global flags.
                    .display_order(100 + i)
                    .help(help[..1].to_uppercase() + &help[1..])
            });
        cmd.args(args)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl<const SINK: bool> clap::FromArgMatches for Flags<SINK> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut f = Self::default();
        f.update_from_arg_matches(m)?;
        Ok(f)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for (_, name) in pulse_settings(Self::ROLE) {
            if let Some(v) = m.get_one::<String>(name) {
                self.0.insert(name.to_owned(), v.clone());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn man_pages_cover_both_roles_and_their_flags() {
        let dir = tempfile::tempdir().unwrap();
        write_man_pages(dir.path()).unwrap();
        let page = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap_or_default();
        // The hidden `man` subcommand gets no page.
        assert!(page("bark-pulse.1").contains("sink") && page("bark-pulse-man.1").is_empty());
        // roff escapes "-" as "\-"; the help has the table's limits and default.
        let source = page("bark-pulse-source.1");
        assert!(
            source.contains("buffer\\-msec") && source.contains("\\-2000..=2000 ms; default 0")
        );
        assert!(page("bark-pulse-sink.1").contains("\\-\\-latency\\-msec"));
    }
}

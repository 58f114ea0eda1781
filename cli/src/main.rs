//! `bark`: see `bark --help` and bark(1).

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("warn,bark_cli=info"),
    )
    .format_target(false)
    .init();
    let cli = bark_cli::cli::Cli::parse();
    match bark_cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("bark: error: {e:#}");
            std::process::exit(1);
        }
    }
}

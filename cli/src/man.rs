//! Man pages from the clap definition (clap_mangen): bark(1) and one page
//! per subcommand (bark-stats(1), bark-stream(1), ...), so the pages always
//! list exactly the flags the binary accepts, with the same help text.

use anyhow::{Context, Result};
use std::path::Path;

/// Writes every page into `dir` (created if missing).
///
/// # Errors
/// If the directory or a page cannot be written.
pub fn write_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(crate::cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_page_per_public_subcommand_with_every_flag() {
        let dir = tempfile::tempdir().unwrap();
        super::write_all(dir.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "bark-doctor.1",
                "bark-keygen.1",
                "bark-ls.1",
                "bark-receive.1",
                "bark-set.1",
                "bark-stats.1",
                "bark-stream.1",
                "bark-web.1",
                "bark-zone.1",
                "bark.1"
            ]
        );
        let stream = std::fs::read_to_string(dir.path().join("bark-stream.1")).unwrap();
        // roff escapes "-" as "\-".
        for flag in [
            "latency\\-msec",
            "destination\\-ip",
            "multicast\\-loop",
            "loop",
            "key\\-file",
            "encrypt",
        ] {
            assert!(stream.contains(flag), "bark-stream.1 lacks {flag}");
        }
        assert!(stream.contains("default: 40") || stream.contains("[default: 40]"));
    }
}

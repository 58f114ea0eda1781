//! What the debug aids share: `NAME REF.wav PROBE.wav ARGS...` on the
//! command line.

use bark_lab::recording::Recording;

/// The reference and probe recordings named by the first two arguments,
/// and the `n` arguments after them; fails with `usage` when the count
/// is wrong.
pub fn pair(n: usize, usage: &str) -> anyhow::Result<(Recording, Recording, Vec<String>)> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() != n + 2 {
        anyhow::bail!("usage: {usage}");
    }
    let r = Recording::load(a[0].as_ref())?;
    let p = Recording::load(a[1].as_ref())?;
    Ok((r, p, a[2..].to_vec()))
}

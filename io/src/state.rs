//! A node's settings kept across restarts: what controllers (and the
//! desktop's volume) last set, in a small TOML file under
//! `$XDG_STATE_HOME/bark/` (`~/.local/state/bark/` without it), one per
//! `node.name`. Read at load; written by the main loop after a change,
//! never by a data thread. A value the node's configuration gives
//! explicitly (a drop-in's `bark.delay.msec`) wins over the file.

use bark_core::channels::Selection;
use bark_core::command::{
    Label, Settings, MAX_DELAY_NS, MAX_VOLUME, SET_CHANNELS, SET_DELAY, SET_ENABLED, SET_MUTE,
    SET_NAME, SET_PRIORITY, SET_STREAM, SET_VOLUME,
};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// The file's fields; absent ones are not restored.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct StateFile {
    /// Volume on the user's (cubic) scale, percent.
    volume_pct: Option<f64>,
    mute: Option<bool>,
    /// Delay offset, ms.
    delay_ms: Option<f64>,
    name: Option<String>,
    stream: Option<String>,
    enabled: Option<bool>,
    priority: Option<i8>,
    /// `bark.channels`: `all`, `mono` or `[ FL ]`.
    channels: Option<String>,
}

/// Where node `node_name`'s state lives: `$XDG_STATE_HOME/bark/NAME.toml`
/// (or `$HOME/.local/state/bark/NAME.toml`), the name's characters other
/// than letters, digits, `-`, `_` and `.` replaced by `_`. `None`
/// without either variable.
pub fn path(node_name: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))?;
    let safe: String = node_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(base.join("bark").join(format!("{safe}.toml")))
}

/// The settings saved at `path` over `base`, and the mask of the fields
/// the file had; `Ok(None)` when there is no file.
///
/// # Errors
/// The file exists but cannot be read, is not TOML of this shape, or has
/// a value out of range (the message names the file and the field).
pub fn load(path: &Path, base: &Settings) -> io::Result<Option<(u16, Settings)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
    };
    let f: StateFile = toml::from_str(&text).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {e}", path.display()),
        )
    })?;
    let bad = |what: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {what} out of range", path.display()),
        )
    };
    let mut s = *base;
    let mut mask = 0;
    if let Some(v) = f.volume_pct {
        if !(0.0..=f64::from(MAX_VOLUME) * 100.0).contains(&v) {
            return Err(bad("volume_pct"));
        }
        s.volume = (v / 100.0) as f32;
        mask |= SET_VOLUME;
    }
    if let Some(m) = f.mute {
        s.mute = m;
        mask |= SET_MUTE;
    }
    if let Some(d) = f.delay_ms {
        if !(d.is_finite() && (d * 1e6).abs() <= MAX_DELAY_NS as f64) {
            return Err(bad("delay_ms"));
        }
        s.delay_ns = (d * 1e6).round() as i64;
        mask |= SET_DELAY;
    }
    if let Some(n) = f.name.filter(|n| !n.is_empty()) {
        s.name = Label::new(&n);
        mask |= SET_NAME;
    }
    if let Some(st) = f.stream {
        s.stream = Label::new(&st);
        mask |= SET_STREAM;
    }
    if let Some(e) = f.enabled {
        s.enabled = e;
        mask |= SET_ENABLED;
    }
    if let Some(p) = f.priority {
        s.priority = p;
        mask |= SET_PRIORITY;
    }
    if let Some(c) = f.channels {
        s.channels = Selection::parse(&c).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: channels: {e}", path.display()),
            )
        })?;
        mask |= SET_CHANNELS;
    }
    Ok(Some((mask, s)))
}

/// Writes the fields of `mask` of `s` to `path` (creating its directory;
/// through a temporary file, synced, and a rename, so a crash or a power
/// cut leaves the old file or the new, never half of one).
///
/// # Errors
/// The directory or file cannot be written.
pub fn save(path: &Path, mask: u16, s: &Settings) -> io::Result<()> {
    let has = |bit| mask & bit != 0;
    let f = StateFile {
        volume_pct: has(SET_VOLUME).then(|| (f64::from(s.volume) * 1e4).round() / 100.0),
        mute: has(SET_MUTE).then_some(s.mute),
        delay_ms: has(SET_DELAY).then(|| s.delay_ns as f64 / 1e6),
        name: has(SET_NAME).then(|| s.name.as_str().to_string()),
        stream: has(SET_STREAM).then(|| s.stream.as_str().to_string()),
        enabled: has(SET_ENABLED).then_some(s.enabled),
        priority: has(SET_PRIORITY).then_some(s.priority),
        channels: has(SET_CHANNELS).then(|| s.channels.to_string()),
    };
    let text = toml::to_string(&f).map_err(io::Error::other)?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("toml.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(
            format!("# Bark node settings, written by Bark; see docs/API.md\n{text}").as_bytes(),
        )?;
        // On disk before the rename, so that a power cut leaves the old
        // file or the new one.
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// A node's settings at load: `configured` (its configuration's), with
/// the fields saved at `path` restored except those in `given` (set
/// explicitly in its configuration, which wins). Returns the settings
/// and a warning to log when the file could not be used (the node then
/// starts from its configuration).
pub fn restore(
    path: Option<&Path>,
    configured: &Settings,
    given: u16,
) -> (Settings, Option<String>) {
    let Some(p) = path else {
        return (*configured, None);
    };
    match load(p, configured) {
        Ok(Some((mask, saved))) => {
            let mut s = *configured;
            s.merge(mask & !given, &saved);
            (s, None)
        }
        Ok(None) => (*configured, None),
        Err(e) => (*configured, Some(format!("ignoring saved settings: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_settings_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bark/kitchen.toml");
        assert!(load(&p, &Settings::default()).unwrap().is_none());
        let s = Settings {
            volume: 0.4,
            mute: true,
            delay_ns: 12_500_000,
            name: Label::new("Küche"),
            stream: Label::new("livingroom"),
            enabled: false,
            priority: 0,
            channels: Selection::parse("[ FR ]").unwrap(),
        };
        let mask =
            SET_VOLUME | SET_MUTE | SET_DELAY | SET_NAME | SET_STREAM | SET_ENABLED | SET_CHANNELS;
        save(&p, mask, &s).unwrap();
        let (m, back) = load(&p, &Settings::default()).unwrap().unwrap();
        assert_eq!(m, mask);
        assert_eq!(back, s);
        std::fs::write(&p, "volume_pct = 900\n").unwrap();
        let e = load(&p, &Settings::default()).unwrap_err();
        assert!(e.to_string().contains("volume_pct"), "{e}");
        std::fs::write(&p, "colour = 1\n").unwrap();
        assert!(load(&p, &Settings::default()).is_err());
    }

    #[test]
    fn configured_values_win_over_saved_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("n.toml");
        let saved = Settings {
            volume: 0.5,
            delay_ns: 7_000_000,
            ..Settings::default()
        };
        save(&p, SET_VOLUME | SET_DELAY, &saved).unwrap();
        let configured = Settings {
            delay_ns: 3_000_000,
            ..Settings::default()
        };
        let (s, w) = restore(Some(&p), &configured, SET_DELAY);
        assert!(w.is_none());
        assert_eq!((s.volume, s.delay_ns), (0.5, 3_000_000));
    }

    #[test]
    fn node_names_make_safe_file_names() {
        std::env::set_var("XDG_STATE_HOME", "/s");
        assert_eq!(
            path("bark/../x y").unwrap(),
            PathBuf::from("/s/bark/bark_.._x_y.toml")
        );
    }
}

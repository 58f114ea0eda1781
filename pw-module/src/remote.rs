//! The PipeWire side of a node's settings ([`bark_core::command`]): a
//! controller's volume and mute become the stream's own controls
//! (`SPA_PROP_channelVolumes`, `SPA_PROP_mute`), its name the stream's
//! `node.description`, so pavucontrol, `wpctl` and the desktop show
//! them; and the stream's controls, changed on this host, become the
//! settings the node reports. Main thread only.

use crate::ffi::Properties;
use crate::pw::Stream;
use bark_core::command::{Settings, MAX_VOLUME, SET_MUTE, SET_NAME, SET_VOLUME};
use libspa_sys as spa;
use pipewire_sys as pws;

/// Volume changes smaller than this (on the user's scale) are the echo of
/// our own setting through the cube and its root, not a change.
const VOLUME_EPSILON: f32 = 5e-4;

/// Applies the fields of `changed` that PipeWire holds to `stream`:
/// volume and mute as its controls (linear gain: the volume cubed, on
/// each of `channels`), the name as `node.description`.
pub fn apply_to_stream(stream: &Stream, channels: u8, changed: u16, s: &Settings) {
    if changed & (SET_VOLUME | SET_MUTE) != 0 {
        stream.set_volume_mute(channels, s.volume.powi(3), s.mute);
    }
    if changed & SET_NAME != 0 {
        let mut p = Properties::new();
        p.set("node.description", s.name.as_str());
        p.set("media.name", s.name.as_str());
        stream.update_properties(&p);
    }
}

/// A control of the stream as PipeWire reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Local {
    /// Volume on the user's scale (the cube root of the loudest
    /// channel's linear gain).
    Volume(f32),
    /// Mute.
    Mute(bool),
}

/// The volume or mute in a `control_info` event, if it is one of those.
///
/// # Safety
/// `c.values` must point to `c.n_values` floats (PipeWire's control, for
/// the duration of the event).
pub unsafe fn from_control(id: u32, c: &pws::pw_stream_control) -> Option<Local> {
    if c.values.is_null() || c.n_values == 0 {
        return None;
    }
    // SAFETY: the caller's contract.
    let v = unsafe { std::slice::from_raw_parts(c.values, c.n_values as usize) };
    match id {
        spa::SPA_PROP_channelVolumes => {
            let loudest = v
                .iter()
                .copied()
                .filter(|x| x.is_finite())
                .fold(0.0f32, f32::max);
            Some(Local::Volume(loudest.cbrt().clamp(0.0, MAX_VOLUME)))
        }
        spa::SPA_PROP_mute => Some(Local::Mute(v[0] >= 0.5)),
        _ => None,
    }
}

/// Takes `l` into `s`; returns the field's mask if it changed (0 for a
/// volume within [`VOLUME_EPSILON`] of the one held).
pub fn merge_local(s: &mut Settings, l: Local) -> u16 {
    match l {
        Local::Volume(v) if (v - s.volume).abs() >= VOLUME_EPSILON => {
            s.volume = v;
            SET_VOLUME
        }
        Local::Mute(m) if m != s.mute => {
            s.mute = m;
            SET_MUTE
        }
        _ => 0,
    }
}

/// One log line about the fields of `changed`.
pub fn describe(changed: u16, s: &Settings) -> String {
    use bark_core::command::{SET_CHANNELS, SET_DELAY, SET_ENABLED, SET_PRIORITY, SET_STREAM};
    let mut parts = Vec::new();
    if changed & SET_VOLUME != 0 {
        parts.push(format!("volume {:.1} %", s.volume * 100.0));
    }
    if changed & SET_MUTE != 0 {
        parts.push(format!("mute {}", if s.mute { "on" } else { "off" }));
    }
    if changed & SET_DELAY != 0 {
        parts.push(format!("delay {:.2} ms", s.delay_ns as f64 / 1e6));
    }
    if changed & SET_NAME != 0 {
        parts.push(format!("name {:?}", s.name.as_str()));
    }
    if changed & SET_STREAM != 0 {
        parts.push(format!("stream {:?}", s.stream.as_str()));
    }
    if changed & SET_ENABLED != 0 {
        parts.push(if s.enabled { "enabled" } else { "disabled" }.to_string());
    }
    if changed & SET_PRIORITY != 0 {
        parts.push(format!("priority {}", s.priority));
    }
    if changed & SET_CHANNELS != 0 {
        parts.push(format!("plays {}", s.channels));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_volume_echo_is_not_a_change() {
        let mut s = Settings {
            volume: 0.4,
            ..Settings::default()
        };
        let echo = (0.4f32).powi(3).cbrt();
        assert_eq!(merge_local(&mut s, Local::Volume(echo)), 0);
        assert_eq!(merge_local(&mut s, Local::Volume(0.3)), SET_VOLUME);
        assert_eq!(s.volume, 0.3);
        assert_eq!(merge_local(&mut s, Local::Mute(true)), SET_MUTE);
        assert_eq!(merge_local(&mut s, Local::Mute(true)), 0);
    }
}

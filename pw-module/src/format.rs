//! The streams' audio format: channel positions and the `EnumFormat` pod.
//!
//! Both modules exchange interleaved `f32` with the graph (the wire format is
//! the core's business), at a fixed rate and channel count, so the adapter in
//! front of the stream converts whatever the graph runs at.

use bark_core::channels::{Layout, Position};
use libspa::param::audio::{AudioFormat, AudioInfoRaw};
use libspa::param::ParamType;
use libspa::pod::serialize::PodSerializer;
use libspa::pod::{Object, Value};
use libspa::utils::SpaTypes;
use libspa_sys as spa;
use std::ffi::CStr;

/// Most channels a SPA raw audio format carries.
pub const SPA_MAX_CHANNELS: usize = spa::SPA_AUDIO_MAX_CHANNELS as usize;

/// Channel position from its PipeWire short name (`FL`, `FR`, `FC`, `LFE`,
/// `RL`, `RR`, `SL`, `SR`, `MONO`, `AUX0`, ...), case-sensitive as in
/// PipeWire's configs.
pub fn channel_from_name(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: PipeWire's static type table and a valid C string.
    let id =
        unsafe { spa::spa_debug_type_find_type_short(spa::spa_type_audio_channel, c.as_ptr()) };
    (id != spa::SPA_ID_INVALID && id != spa::SPA_AUDIO_CHANNEL_UNKNOWN).then_some(id)
}

/// Short name of a channel position (for logs).
pub fn channel_name(pos: u32) -> String {
    // SAFETY: reading the extern static that points at PipeWire's type table.
    short_name(unsafe { spa::spa_type_audio_channel }, pos)
}

/// Short name of a SPA sample format (`F32LE`...), for logs.
pub fn sample_format_name(fmt: u32) -> String {
    // SAFETY: reading the extern static that points at PipeWire's type table.
    short_name(unsafe { spa::spa_type_audio_format }, fmt)
}

/// The short name of `id` in SPA type table `table`, or `#id`.
fn short_name(table: *const spa::spa_type_info, id: u32) -> String {
    // SAFETY: `table` is one of PipeWire's static, NULL-terminated type
    // tables; the result is NULL or a static NUL-terminated string.
    unsafe {
        let p = spa::spa_debug_type_find_short_name(table, id);
        if p.is_null() {
            format!("#{id}")
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// The default layout for `channels` channels: MONO, FL FR, then the
/// common 2.1 / 4.0 / 5.0 / 5.1 / 6.1 / 7.1 orders, AUX beyond.
pub fn default_positions(channels: u8) -> Vec<u32> {
    let names: &[&str] = match channels {
        1 => &["MONO"],
        2 => &["FL", "FR"],
        3 => &["FL", "FR", "LFE"],
        4 => &["FL", "FR", "RL", "RR"],
        5 => &["FL", "FR", "FC", "RL", "RR"],
        6 => &["FL", "FR", "FC", "LFE", "RL", "RR"],
        7 => &["FL", "FR", "FC", "LFE", "RC", "SL", "SR"],
        8 => &["FL", "FR", "FC", "LFE", "RL", "RR", "SL", "SR"],
        _ => &[],
    };
    if names.is_empty() {
        (0..channels as u32)
            .map(|i| spa::SPA_AUDIO_CHANNEL_AUX0 + i)
            .collect()
    } else {
        names.iter().filter_map(|n| channel_from_name(n)).collect()
    }
}

/// `positions` (SPA ids, in channel order) as the core's [`Layout`];
/// `None` when one of them has no [`ChannelMask`] bit (AUX channels) or
/// repeats: the stream then goes out with the default layout of its
/// channel count, and a receiver plays its channels by index.
///
/// [`ChannelMask`]: bark_core::channels::ChannelMask
pub fn layout(positions: &[u32]) -> Option<Layout> {
    let p: Option<Vec<Position>> = positions.iter().map(|&id| Position::from_spa(id)).collect();
    Layout::new(&p?)
}

/// Parses `audio.position`: a JSON array (`[ FL FR ]`, commas and quotes
/// allowed) or a bare comma-separated list (`FL,FR`), which must name
/// exactly `channels` positions. `None` gives [`default_positions`].
///
/// # Errors
/// A message naming the bad entry or the count mismatch.
pub fn parse_positions(value: Option<&str>, channels: u8) -> Result<Vec<u32>, String> {
    let Some(v) = value else {
        return Ok(default_positions(channels));
    };
    let inner = v.trim().trim_start_matches('[').trim_end_matches(']');
    let mut out = Vec::new();
    for tok in inner
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
    {
        let name = tok.trim_matches('"');
        let pos = channel_from_name(name)
            .ok_or_else(|| format!("audio.position: unknown channel {name:?}"))?;
        out.push(pos);
    }
    if out.len() != channels as usize {
        return Err(format!(
            "audio.position {v:?} names {} channels but audio.channels is {channels}",
            out.len()
        ));
    }
    Ok(out)
}

/// Serializes the `EnumFormat` param: interleaved F32 (native endian) at
/// `rate` Hz with `positions.len()` channels in that order.
pub fn enum_format_pod(rate: u32, positions: &[u32]) -> Vec<u8> {
    let mut info = AudioInfoRaw::new();
    // Native-endian f32: the process callbacks read and write it as `f32`.
    #[cfg(target_endian = "little")]
    info.set_format(AudioFormat::F32LE);
    #[cfg(target_endian = "big")]
    info.set_format(AudioFormat::F32BE);
    info.set_rate(rate);
    info.set_channels(positions.len() as u32);
    let mut pos = [0u32; SPA_MAX_CHANNELS];
    for (d, s) in pos.iter_mut().zip(positions) {
        *d = *s;
    }
    info.set_position(pos);
    let obj = Object {
        type_: SpaTypes::ObjectParamFormat.as_raw(),
        id: ParamType::EnumFormat.as_raw(),
        properties: info.into(),
    };
    PodSerializer::serialize(std::io::Cursor::new(Vec::new()), &Value::Object(obj))
        .map(|(c, _)| c.into_inner())
        .expect("serializing a fixed audio format cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_position_lists() {
        let fl = channel_from_name("FL").unwrap();
        let fr = channel_from_name("FR").unwrap();
        assert_eq!(parse_positions(Some("[ FL FR ]"), 2).unwrap(), vec![fl, fr]);
        assert_eq!(
            parse_positions(Some("[\"FL\",\"FR\"]"), 2).unwrap(),
            vec![fl, fr]
        );
        assert_eq!(parse_positions(Some("FL,FR"), 2).unwrap(), vec![fl, fr]);
        assert_eq!(parse_positions(None, 2).unwrap(), vec![fl, fr]);
        assert!(parse_positions(Some("[ FL XX ]"), 2).is_err());
        assert!(parse_positions(Some("[ FL ]"), 2).is_err());
        assert_eq!(channel_name(fl), "FL");
        assert_eq!(sample_format_name(spa::SPA_AUDIO_FORMAT_F32_LE), "F32LE");
        for ch in 1..=8 {
            assert_eq!(default_positions(ch).len(), ch as usize);
        }
    }

    #[test]
    fn format_pod_round_trips() {
        let pos = default_positions(2);
        let bytes = enum_format_pod(44_100, &pos);
        let pod = libspa::pod::Pod::from_bytes(&bytes).unwrap();
        let mut info = AudioInfoRaw::new();
        info.parse(pod).unwrap();
        assert_eq!(info.rate(), 44_100);
        assert_eq!(info.channels(), 2);
        assert_eq!(info.format(), AudioFormat::F32LE);
        assert_eq!(&info.position()[..2], &pos[..]);
    }
}

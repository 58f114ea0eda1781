//! `libpipewire-module-bark-source`: the receiver. A playback stream (or a
//! virtual `Audio/Source`) fed by [`bark_core::Receiver`].
//!
//! Everything here runs on the data thread from `process`: feed queued
//! datagrams to the receiver, send what it wants sent, then fill the buffer
//! for the instant it will be heard.

use crate::args::SourceArgs;
use crate::clock::{monotonic_ns, ClockMap, ClockPair};
use crate::ffi::Properties;
use crate::module::{LoadError, Setup};
use crate::net::{self, UdpSocket};
use crate::pw::{self, Buffer};
use crate::stats::Counters;
use crate::timing::{play_ns, StreamTime};
use bark_core::protocol::{parse_header, PacketType, MAX_STATUS_LEN};
use bark_core::{Receiver, ReceiverConfig};
use libspa_sys as spa;
use pipewire_sys as pws;
use socket2::SockAddr;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;

/// Most datagrams handled per socket per `process` call.
const MAX_RX_PER_CYCLE: usize = 64;
/// Most datagrams the receiver may send per `process` call.
const MAX_TX_PER_CYCLE: usize = 16;
/// Status packet period, ns.
const STATUS_PERIOD_NS: u64 = 1_000_000_000;

/// The receiver's data-thread state. Everything is allocated at load.
pub struct RtSource {
    receiver: Receiver,
    group: UdpSocket,
    control: UdpSocket,
    group_addr: SockAddr,
    multicast: bool,
    clock: ClockMap,
    rate: u32,
    channels: usize,
    rx: Vec<u8>,
    tx: Vec<u8>,
    next_status_ns: u64,
    timer_ns: u64,
}

/// The `node.latency` the receiver asks of its graph unless `stream.props`
/// says otherwise: half the target latency, as a power of two between 64
/// and 1024 frames (512 at the default 40 ms and 48 kHz: half the wake-ups
/// of a smaller quantum, and still a whole quantum of margin). The graph
/// runs at the smallest quantum any node asks for, and a frame must have
/// arrived one output quantum before it is heard: a player that asks for 2048 frames (pw-play does) would
/// otherwise stretch the quantum past a 40 ms latency and starve the
/// receiver.
fn output_quantum(a: &SourceArgs) -> String {
    let latency = a
        .latency_ns
        .unwrap_or(bark_core::sender::DEFAULT_LATENCY_NS);
    let frames = (latency as f64 / 2.0 * a.rate as f64 / 1e9) as u32;
    let pow2 = if frames == 0 {
        64
    } else {
        1 << (31 - frames.leading_zeros())
    };
    format!("{}/{}", pow2.clamp(64, 1024), a.rate)
}

/// Checks the arguments, opens the sockets and builds the receiver.
pub fn setup(a: &SourceArgs, clock: ClockMap, host: &str) -> Result<(RtSource, Setup), LoadError> {
    let node_id = crate::random_nonzero_u64();
    let receiver = Receiver::new(ReceiverConfig {
        rate: a.rate,
        channels: a.channels,
        latency_ns: a.latency_ns,
        delay_ns: a.delay_ns,
        stream: a.stream.clone(),
        node_id,
        node_name: a.node_name.clone(),
        host: host.to_owned(),
    })
    .map_err(|e| LoadError::invalid(e.to_string()))?;
    let (group, control) = net::receiver_sockets(a).map_err(LoadError::io)?;
    let ctl = control.local_addr().map_err(LoadError::io)?;

    let mut props = Properties::new();
    if let Some(sp) = &a.stream_props {
        props.update_json(sp);
    }
    props.set("node.name", &a.node_name);
    props.set("node.description", &a.node_description);
    props.set("media.class", a.class.media_class());
    props.set_default("media.name", &a.node_description);
    // WirePlumber never links nodes of one link group to each other: this
    // keeps a receiver from playing into a Bark sink on the same host (a
    // feedback loop), even when that sink is the default.
    props.set_default("node.link-group", crate::LINK_GROUP);
    props.set("audio.rate", &a.rate.to_string());
    props.set("audio.channels", &a.channels.to_string());
    props.set_default("node.latency", &output_quantum(a));

    let info = format!(
        "{} ({}, {}) listening on {}{}, control port {}, output {} Hz {} ch, latency {}, delay {} ms, stream {}, node {node_id:016x}",
        a.node_description,
        a.node_name,
        a.class.media_class(),
        a.group,
        a.ifname.as_deref().map(|i| format!(" on {i}")).unwrap_or_default(),
        ctl.port(),
        a.rate,
        a.channels,
        a.latency_ns.map_or("from sender".to_owned(), |l| format!("{} ms", l as f64 / 1e6)),
        a.delay_ns as f64 / 1e6,
        a.stream.as_deref().unwrap_or("(best)"),
    );
    let rt = RtSource {
        receiver,
        group,
        control,
        group_addr: a.group.into(),
        multicast: a.group.ip().is_multicast(),
        clock,
        rate: a.rate,
        channels: a.channels as usize,
        rx: vec![0; 65_536],
        tx: vec![0; 2048],
        next_status_ns: 0,
        timer_ns: bark_core::receiver::FAST_INTERVAL_NS,
    };
    let setup = Setup {
        name: a.node_name.clone(),
        props,
        direction: spa::SPA_DIRECTION_OUTPUT,
        flags: pws::pw_stream_flags_PW_STREAM_FLAG_AUTOCONNECT
            | pws::pw_stream_flags_PW_STREAM_FLAG_MAP_BUFFERS
            | pws::pw_stream_flags_PW_STREAM_FLAG_RT_PROCESS,
        format_pod: crate::format::enum_format_pod(a.rate, &a.positions),
        rate: a.rate,
        channels: a.channels,
        info,
    };
    Ok((rt, setup))
}

impl RtSource {
    /// One graph cycle (data thread). No allocation, no blocking.
    ///
    /// # Safety
    /// Only from the process callback of the live `stream`.
    pub unsafe fn process(&mut self, stream: *mut pws::pw_stream, c: &Counters) {
        self.pump(c);
        // SAFETY: the caller is the stream's process callback.
        let Some(mut b) = (unsafe { Buffer::dequeue(stream) }) else {
            return;
        };
        // SAFETY: live stream, data thread.
        let t = StreamTime::from(&unsafe { pw::stream_time(stream) });
        let play = self.clock.map(play_ns(&t, self.rate, monotonic_ns()));
        let requested = b.requested() as usize;
        let ch = self.channels;
        if let Some(d) = b.data() {
            let out = pw::write_samples(d);
            let max_frames = out.len() / ch;
            let frames = if requested > 0 {
                requested.min(max_frames)
            } else {
                max_frames
            };
            self.fill(play, &mut out[..frames * ch], c);
            pw::set_chunk(d, frames, ch * 4);
            b.set_size(frames as u64);
        }
    }

    /// Fills `out` (interleaved) with what is heard from `play_ns` on, a
    /// (mapped) local CLOCK_MONOTONIC time. No allocation.
    pub fn fill(&mut self, play_ns: u64, out: &mut [f32], c: &Counters) {
        self.receiver.fill(play_ns, out);
        Counters::bump(&c.cycles);
    }

    /// The period the data-loop timer should have now, ns: the core's
    /// fast exchange pace until playback runs (clock sync at start or after
    /// a change of sender), then a relaxed one that still meets its
    /// busy-network pace.
    pub fn timer_interval_ns(&self) -> u64 {
        if self.receiver.playing() {
            bark_core::receiver::BUSY_INTERVAL_NS / 2
        } else {
            bark_core::receiver::FAST_INTERVAL_NS
        }
    }

    /// The period the timer was last set to, ns.
    pub fn current_interval_ns(&self) -> u64 {
        self.timer_ns
    }

    /// Records the period the timer was set to, ns.
    pub fn set_current_interval_ns(&mut self, ns: u64) {
        self.timer_ns = ns;
    }

    /// The sockets, for data-loop sources.
    pub fn fds(&self) -> [std::os::fd::RawFd; 2] {
        [self.group.fd(), self.control.fd()]
    }

    /// After a panic: output silence, touch nothing else.
    ///
    /// # Safety
    /// Only from the process callback of the live `stream`.
    pub unsafe fn idle(&mut self, stream: *mut pws::pw_stream) {
        // SAFETY: the caller is the stream's process callback.
        if let Some(mut b) = unsafe { Buffer::dequeue(stream) } {
            let ch = self.channels;
            if let Some(d) = b.data() {
                let out = pw::write_samples(d);
                let frames = out.len() / ch;
                out.fill(0.0);
                pw::set_chunk(d, frames, ch * 4);
            }
        }
    }

    /// Feeds queued datagrams to the receiver, sends what it asks for and
    /// the periodic status packet, and publishes its counters.
    ///
    /// Runs from `process`, from the sockets' data-loop sources when a
    /// datagram arrives, and from the data-loop timer (so that time requests
    /// keep their pace when no graph cycle runs, e.g. an unrecorded
    /// `Audio/Source`). Data thread only; no allocation.
    pub fn pump(&mut self, c: &Counters) {
        let RtSource {
            receiver,
            group,
            control,
            clock,
            rx,
            ..
        } = self;
        for sock in [&mut *group, &mut *control] {
            for _ in 0..MAX_RX_PER_CYCLE {
                let d = match sock.recv(rx) {
                    Ok(Some(d)) => d,
                    Ok(None) => break,
                    Err(_) => {
                        Counters::bump(&c.recv_errors);
                        break;
                    }
                };
                Counters::bump(&c.received);
                if d.truncated {
                    Counters::bump(&c.malformed);
                    continue;
                }
                let data = &rx[..d.len];
                if matches!(parse_header(data), Ok(h) if h.ptype == PacketType::Audio) {
                    Counters::bump(&c.audio_received);
                }
                let pair = ClockPair::now();
                let arrival = clock.map(d.kernel_real_ns.map_or(pair.mono, |r| pair.to_mono(r)));
                if receiver
                    .handle_packet(arrival, data, SocketAddr::V4(d.from))
                    .is_err()
                {
                    Counters::bump(&c.malformed);
                }
            }
        }
        c.playing.store(self.receiver.playing(), Relaxed);
        let now = monotonic_ns();
        let mapped = self.clock.map(now);
        for _ in 0..MAX_TX_PER_CYCLE {
            let Some((n, to)) = self.receiver.poll_transmit(mapped, &mut self.tx) else {
                break;
            };
            self.control
                .send_counted(&self.tx[..n.min(self.tx.len())], &SockAddr::from(to), c);
        }
        if now >= self.next_status_ns {
            self.next_status_ns = now + STATUS_PERIOD_NS;
            let k = self.receiver.counters();
            c.lost.store(k.lost, Relaxed);
            c.late.store(k.late, Relaxed);
            c.underruns.store(k.underruns, Relaxed);
            c.buffer_us.store(k.buffer_us as i64, Relaxed);
            c.sync_error_ns.store(k.sync_error_ns as i64, Relaxed);
            // Status goes to the group, where `bark stats` and the other
            // nodes listen; with a unicast address it would only reach us.
            if self.multicast && self.tx.len() >= MAX_STATUS_LEN {
                if let Some(n) = self.receiver.write_status(&mut self.tx) {
                    self.control
                        .send_counted(&self.tx[..n], &self.group_addr, c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(pairs: &[(&str, &str)]) -> SourceArgs {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        SourceArgs::parse(&m).unwrap()
    }

    #[test]
    fn output_quantum_is_half_the_latency() {
        // 40 ms default: 20 ms = 960 frames, down to 512.
        assert_eq!(output_quantum(&args(&[])), "512/48000");
        let q = |lat: &str, rate: &str| {
            output_quantum(&args(&[("sess.latency.msec", lat), ("audio.rate", rate)]))
        };
        assert_eq!(q("200", "48000"), "1024/48000");
        assert_eq!(q("2", "48000"), "64/48000");
        assert_eq!(q("40", "96000"), "1024/96000");
    }
}

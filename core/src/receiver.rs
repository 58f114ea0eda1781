//! The receiving side. (API frozen; implementation in progress.)

use crate::format::AudioFormat;
use crate::protocol::StatusCounters;
use crate::Error;
use std::net::SocketAddr;

/// Settings of a receiver.
#[derive(Clone, Debug)]
pub struct ReceiverConfig {
    /// Output rate, Hz (`audio.rate` of the playback stream).
    pub rate: u32,
    /// Output channels (`audio.channels`).
    pub channels: u8,
    /// Target latency override (`sess.latency.msec`), ns; `None` follows the sender.
    pub latency_ns: Option<u64>,
    /// Extra per-receiver delay (`bark.delay.msec`), ns; may be negative.
    pub delay_ns: i64,
    /// Stream to follow (`bark.stream`); `None` follows the best one.
    pub stream: Option<String>,
    /// Random node id.
    pub node_id: u64,
    /// `node.name`.
    pub node_name: String,
    /// Host name.
    pub host: String,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        ReceiverConfig { rate: 48_000, channels: 2, latency_ns: None, delay_ns: 0, stream: None, node_id: 1, node_name: "bark_source".into(), host: String::new() }
    }
}

/// The receiver state machine.
pub struct Receiver {
    cfg: ReceiverConfig,
}

impl Receiver {
    /// Creates a receiver; preallocates everything.
    ///
    /// # Errors
    /// [`Error::Config`] for out-of-range settings.
    pub fn new(cfg: ReceiverConfig) -> Result<Self, Error> {
        AudioFormat { rate: cfg.rate, channels: cfg.channels, ..Default::default() }.validate()?;
        Ok(Receiver { cfg })
    }

    /// Handles a datagram received at local time `now_ns` from `from`.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a malformed datagram (dropped).
    pub fn handle_packet(&mut self, now_ns: u64, data: &[u8], from: SocketAddr) -> Result<(), Error> {
        let _ = (now_ns, data, from);
        Ok(())
    }

    /// A datagram to send now (a time request), written into `buf`
    /// (≥ 64 bytes), with its destination.
    pub fn poll_transmit(&mut self, now_ns: u64, buf: &mut [u8]) -> Option<(usize, SocketAddr)> {
        let _ = (now_ns, buf);
        None
    }

    /// Real-time entry: fills `out` (interleaved, `channels` per frame) with
    /// the audio to be heard from local time `play_ns` on.
    pub fn fill(&mut self, play_ns: u64, out: &mut [f32]) {
        let _ = play_ns;
        out.fill(0.0);
    }

    /// Counters for status packets and `bark stats`.
    pub fn counters(&self) -> StatusCounters {
        StatusCounters::default()
    }

    /// Writes this receiver's status packet into `buf`; returns its length.
    pub fn write_status(&self, buf: &mut [u8]) -> Option<usize> {
        let _ = (buf, &self.cfg);
        None
    }
}

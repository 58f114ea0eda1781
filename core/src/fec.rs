//! Forward error correction for multicast to many receivers (`bark.fec`).
//!
//! NACK repair ([`crate::repair`]) costs one request and one resend per
//! receiver per lost packet: with many receivers losing different packets,
//! the sender's upstream grows with their number. A Reed–Solomon code over
//! a block of `k` consecutive audio packets (the *source packets*) gives
//! `m` *repair packets* ([`crate::protocol::FecPacket`]), sent to the
//! group; any `k` of the `k + m` rebuild the block, so each receiver
//! repairs up to `m` losses of its own per block from the same repair
//! packets, with no request. The code is `reed-solomon-simd` (Leopard-RS's
//! O(n log n) algorithm, Lin, Chung and Han, "Novel polynomial basis and
//! its application to Reed-Solomon erasure codes", FOCS 2014).
//!
//! Blocks are aligned to the sequence numbers (`base % k == 0`), so a
//! receiver knows which block a source packet belongs to before any repair
//! packet of it arrives. A shard is the plain (unsealed) audio datagram as
//! first sent, its length in front (2 bytes, little-endian), zero-padded to
//! the block's shard length: the session's largest audio datagram plus 2,
//! rounded up to even. A receiver keeps shards only of packets it got as
//! sent (not resends, whose latency field and flag differ), and only while
//! the session carries FEC ([`ACTIVE_NS`] since the last repair packet).
//!
//! What it costs: `m / k` more audio bandwidth, one block of delay before
//! a lost packet can be rebuilt (k packets: 14.7 ms for `4:1` at the
//! default 176-frame packets), and the codec's CPU (docs/BENCHMARKS.md).
//!
//! Both sides size everything at construction; `reset` to the same or a
//! smaller shape reuses the codec's buffers, so encoding and decoding
//! allocate nothing (core/tests/fec_noalloc.rs).

use crate::protocol::{
    self, FecPacket, PacketType, AUDIO_HEADER_LEN, AUDIO_RESENT, FEC_MAX_K, FEC_MAX_M,
    FEC_MAX_SHARD,
};
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// The shapes a sink offers (`bark.fec`): `k:m`, `k` source packets and
/// `m` repair packets per block, or `off` (the default). From the
/// figures in docs/BENCHMARKS.md: `4:1` adds 25 % and fits the default
/// 40 ms latency; the longer blocks need a longer latency.
pub const FEC_CHOICES: &[&str] = &["off", "4:1", "6:1", "8:2", "12:2"];

/// How long a receiver keeps shards after the last repair packet, ns (a
/// session that stops sending FEC stops costing the copies).
pub const ACTIVE_NS: u64 = 2_000_000_000;

/// Blocks a receiver keeps at once (the newest and three before it).
pub const FEC_BLOCKS: usize = 4;

/// `k` and `m` of a `bark.fec` choice; `None` for `off` (or anything not
/// of the form `k:m`).
pub fn parse_shape(text: &str) -> Option<(u8, u8)> {
    let (k, m) = text.split_once(':')?;
    let (k, m) = (k.trim().parse().ok()?, m.trim().parse().ok()?);
    let ok = (2..=FEC_MAX_K as u8).contains(&k) && (1..=FEC_MAX_M as u8).contains(&m);
    ok.then_some((k, m))
}

/// Shard length for datagrams of at most `max_datagram` bytes: the length
/// prefix and the datagram, rounded up to even (the codec's unit).
pub fn shard_len(max_datagram: usize) -> usize {
    (max_datagram + 2 + 1) & !1
}

fn put_shard(dst: &mut [u8], datagram: &[u8]) {
    dst[..2].copy_from_slice(&(datagram.len() as u16).to_le_bytes());
    dst[2..2 + datagram.len()].copy_from_slice(datagram);
    dst[2 + datagram.len()..].fill(0);
}

/// What FEC did, on either side; plain counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FecCounts {
    /// Sender: blocks encoded. Receiver: blocks in which a lost packet
    /// was rebuilt.
    pub blocks: u64,
    /// Sender: repair packets made. Receiver: repair packets taken.
    pub repairs: u64,
    /// Receiver: audio packets rebuilt.
    pub recovered: u64,
    /// Receiver: repair packets of another shape than the session's
    /// current one, of a block long gone, or rebuilt datagrams that were
    /// not the block's audio (a forgery, or corruption).
    pub refused: u64,
}

/// The sender's half: turns each block of source packets into its repair
/// packets.
pub struct FecEncoder {
    k: usize,
    m: usize,
    shard: usize,
    stream_id: u64,
    rs: ReedSolomonEncoder,
    /// `k` shards of the block being filled.
    block: Box<[u8]>,
    have: usize,
    base: u64,
    /// `m` repair shards of the last complete block.
    repairs: Box<[u8]>,
    /// The next repair packet to hand out; `m`: none.
    next: usize,
    counts: FecCounts,
}

impl FecEncoder {
    /// An encoder of `k:m` blocks for session `stream_id`, whose audio
    /// datagrams are at most `max_datagram` bytes.
    ///
    /// # Errors
    /// A shape outside 2..=16 : 1..=4, or datagrams too long for a shard
    /// (FEC needs `net.mtu ≤ 1500`).
    pub fn new(k: u8, m: u8, max_datagram: usize, stream_id: u64) -> Result<Self, String> {
        let (k, m) = (usize::from(k), usize::from(m));
        if !(2..=FEC_MAX_K).contains(&k) || !(1..=FEC_MAX_M).contains(&m) {
            return Err(format!(
                "bark.fec = {k}:{m}: want 2..={FEC_MAX_K} : 1..={FEC_MAX_M}"
            ));
        }
        let shard = shard_len(max_datagram);
        if shard > FEC_MAX_SHARD {
            return Err(format!(
                "bark.fec needs audio datagrams of at most {} bytes (net.mtu ≤ 1500); these are {max_datagram}",
                FEC_MAX_SHARD - 2
            ));
        }
        let rs = ReedSolomonEncoder::new(k, m, shard).map_err(|e| format!("bark.fec: {e}"))?;
        Ok(FecEncoder {
            k,
            m,
            shard,
            stream_id,
            rs,
            block: vec![0; k * shard].into_boxed_slice(),
            have: 0,
            base: 0,
            repairs: vec![0; m * shard].into_boxed_slice(),
            next: m,
            counts: FecCounts::default(),
        })
    }

    /// What the encoder did.
    pub fn counts(&self) -> &FecCounts {
        &self.counts
    }

    /// Takes the plain audio datagram `d`, sequence number `seq`, as it is
    /// first sent. Returns whether it completed a block, whose repair
    /// packets [`FecEncoder::next_repair`] then gives. A block starts at a
    /// multiple of `k`; one with a gap is dropped. Does not allocate.
    pub fn source(&mut self, seq: u64, d: &[u8]) -> bool {
        if d.len() + 2 > self.shard {
            self.have = 0;
            return false;
        }
        if seq.is_multiple_of(self.k as u64) {
            self.base = seq;
            self.have = 0;
        } else if self.have == 0 || seq != self.base + self.have as u64 {
            self.have = 0;
            return false;
        }
        let at = self.have * self.shard;
        put_shard(&mut self.block[at..at + self.shard], d);
        self.have += 1;
        if self.have < self.k {
            return false;
        }
        self.have = 0;
        if self.encode().is_err() {
            return false;
        }
        self.next = 0;
        self.counts.blocks += 1;
        true
    }

    fn encode(&mut self) -> Result<(), reed_solomon_simd::Error> {
        self.rs.reset(self.k, self.m, self.shard)?;
        for s in self.block.chunks_exact(self.shard) {
            self.rs.add_original_shard(s)?;
        }
        let r = self.rs.encode()?;
        for (dst, src) in self
            .repairs
            .chunks_exact_mut(self.shard)
            .zip(r.recovery_iter())
        {
            dst.copy_from_slice(src);
        }
        Ok(())
    }

    /// The next repair packet of the last complete block, written (plain)
    /// into `out`; `None` when all are out or `out` is too small. Does not
    /// allocate.
    pub fn next_repair(&mut self, out: &mut [u8]) -> Option<usize> {
        if self.next >= self.m {
            return None;
        }
        let i = self.next;
        self.next += 1;
        let p = FecPacket {
            stream_id: self.stream_id,
            base: self.base,
            k: self.k as u8,
            m: self.m as u8,
            index: i as u8,
            shard: &self.repairs[i * self.shard..(i + 1) * self.shard],
        };
        let n = protocol::write_fec(out, &p)?;
        self.counts.repairs += 1;
        Some(n)
    }
}

/// One block a receiver holds shards of.
#[derive(Clone, Copy, Debug, Default)]
struct Block {
    live: bool,
    /// Block number, `base / k`.
    number: u64,
    /// Bit i: source packet `base + i` is held.
    sources: u32,
    /// Bit i: repair packet i is held.
    repairs: u8,
    /// Rebuilt (or nothing left to rebuild).
    done: bool,
}

/// The receiver's half: holds the shards of the last [`FEC_BLOCKS`] blocks
/// and rebuilds lost source packets once any `k` of a block's `k + m` are
/// in.
pub struct FecDecoder {
    /// `(k, m, shard length)` of the session's FEC, from its last repair
    /// packet.
    shape: Option<(usize, usize, usize)>,
    session: u64,
    active_until_ns: u64,
    /// The newest sequence number among the source packets seen: a block
    /// is rebuilt once a later block has begun.
    newest: Option<u64>,
    blocks: [Block; FEC_BLOCKS],
    sources: Box<[u8]>,
    repairs: Box<[u8]>,
    rs: ReedSolomonDecoder,
    /// Rebuilt datagrams waiting for [`FecDecoder::take_recovered`].
    out: Box<[u8]>,
    out_len: [u16; FEC_MAX_K],
    out_n: usize,
    out_next: usize,
    counts: FecCounts,
}

impl FecDecoder {
    /// A decoder with room for the largest shape.
    ///
    /// # Panics
    /// Never for the crate's constants (the largest shape is one the codec
    /// supports).
    pub fn new() -> Self {
        FecDecoder {
            shape: None,
            session: 0,
            active_until_ns: 0,
            newest: None,
            blocks: [Block::default(); FEC_BLOCKS],
            sources: vec![0; FEC_BLOCKS * FEC_MAX_K * FEC_MAX_SHARD].into_boxed_slice(),
            repairs: vec![0; FEC_BLOCKS * FEC_MAX_M * FEC_MAX_SHARD].into_boxed_slice(),
            rs: ReedSolomonDecoder::new(FEC_MAX_K, FEC_MAX_M, FEC_MAX_SHARD)
                .expect("the largest FEC shape is supported"),
            out: vec![0; FEC_MAX_K * FEC_MAX_SHARD].into_boxed_slice(),
            out_len: [0; FEC_MAX_K],
            out_n: 0,
            out_next: 0,
            counts: FecCounts::default(),
        }
    }

    /// What the decoder did.
    pub fn counts(&self) -> &FecCounts {
        &self.counts
    }

    /// Whether the session carries FEC at `now_ns` (a repair packet within
    /// [`ACTIVE_NS`]).
    pub fn active(&self, now_ns: u64) -> bool {
        self.shape.is_some() && now_ns < self.active_until_ns
    }

    /// Source packets per block while active (for how long a NACK should
    /// give FEC first).
    pub fn k(&self) -> Option<usize> {
        self.shape.map(|(k, ..)| k)
    }

    /// Forgets everything (a new session).
    pub fn reset(&mut self, session: u64) {
        self.session = session;
        self.shape = None;
        self.newest = None;
        self.blocks = [Block::default(); FEC_BLOCKS];
        self.out_n = 0;
        self.out_next = 0;
    }

    /// The block slot for block `number`, cleared if it held an older one;
    /// `None` for a block older than the one there (long gone).
    fn slot(&mut self, number: u64) -> Option<usize> {
        let i = (number % FEC_BLOCKS as u64) as usize;
        let b = &mut self.blocks[i];
        if b.live && b.number == number {
            return Some(i);
        }
        if b.live && b.number > number {
            return None;
        }
        *b = Block {
            live: true,
            number,
            ..Block::default()
        };
        Some(i)
    }

    fn source_at(&mut self, slot: usize, i: usize) -> &mut [u8] {
        let shard = self.shape.map_or(0, |s| s.2);
        let at = (slot * FEC_MAX_K + i) * FEC_MAX_SHARD;
        &mut self.sources[at..at + shard]
    }

    /// An audio packet of the session arrived at `now_ns` (the plain
    /// datagram `d`, sequence number `seq`): its shard is kept while the
    /// session carries FEC, and it may complete a block's rebuild. Resends
    /// are not kept (they differ from what was encoded). Does not
    /// allocate.
    pub fn source(&mut self, now_ns: u64, seq: u64, d: &[u8]) {
        if d.len() < AUDIO_HEADER_LEN || d[55] & AUDIO_RESENT != 0 {
            return;
        }
        // Where the stream is, also before any repair packet: it bounds
        // which blocks a repair packet may name.
        self.newest = Some(self.newest.map_or(seq, |n| n.max(seq)));
        if !self.active(now_ns) {
            return;
        }
        let Some((k, _, shard)) = self.shape else {
            return;
        };
        if d.len() + 2 > shard {
            return;
        }
        let number = seq / k as u64;
        let Some(slot) = self.slot(number) else {
            return;
        };
        let i = (seq % k as u64) as usize;
        if self.blocks[slot].sources & (1 << i) == 0 {
            put_shard(self.source_at(slot, i), d);
            self.blocks[slot].sources |= 1 << i;
        }
        // This packet may show that one of this block's or the block
        // before's is lost, not late.
        self.try_rebuild(slot);
        if let Some(prev) = number.checked_sub(1) {
            let p = (prev % FEC_BLOCKS as u64) as usize;
            if self.blocks[p].live && self.blocks[p].number == prev {
                self.try_rebuild(p);
            }
        }
    }

    /// A repair packet for the followed session arrived at `now_ns`. A
    /// shape other than the session's last one starts over with it. Does
    /// not allocate.
    pub fn repair(&mut self, now_ns: u64, f: &FecPacket<'_>) {
        // A shape the parser would take (a caller may build one by hand),
        // and a block the stream is at: the newest block or the
        // [`FEC_BLOCKS`] - 1 before it, or the next. One numbered far
        // ahead (a forgery) would otherwise take a slot for the rest of
        // the session.
        let shaped = f.shape_error().is_none();
        let k = u64::from(f.k);
        let number = f.base / k.max(1);
        let near = self.newest.is_some_and(|n| {
            let newest = n / k.max(1);
            number <= newest.saturating_add(1)
                && number.saturating_add(FEC_BLOCKS as u64 - 1) >= newest
        });
        if f.stream_id != self.session || !shaped || !near {
            self.counts.refused += 1;
            return;
        }
        let shape = (usize::from(f.k), usize::from(f.m), f.shard.len());
        if self.shape != Some(shape) {
            self.shape = Some(shape);
            self.blocks = [Block::default(); FEC_BLOCKS];
        }
        self.active_until_ns = now_ns.saturating_add(ACTIVE_NS);
        let Some(slot) = self.slot(number) else {
            self.counts.refused += 1;
            return;
        };
        let bit = 1u8 << f.index;
        if self.blocks[slot].repairs & bit != 0 {
            return;
        }
        let at = (slot * FEC_MAX_M + usize::from(f.index)) * FEC_MAX_SHARD;
        self.repairs[at..at + shape.2].copy_from_slice(f.shard);
        self.blocks[slot].repairs |= bit;
        self.counts.repairs += 1;
        self.try_rebuild(slot);
    }

    /// Rebuilds the block in `slot` if it lacks source packets and holds
    /// enough shards; the rebuilt datagrams wait for `take_recovered`.
    fn try_rebuild(&mut self, slot: usize) {
        let Some((k, m, shard)) = self.shape else {
            return;
        };
        let b = self.blocks[slot];
        let full = (1u32 << k) - 1;
        if b.done || b.sources == full {
            return;
        }
        if (b.sources.count_ones() + b.repairs.count_ones()) < k as u32 {
            return;
        }
        // Only once a later block has begun: packets of one sink buffer
        // leave back to back and may swap places on the way, so a source
        // missing while its block's last packets come in is more likely
        // still on its way (the simulator reorders them half the time).
        if self
            .newest
            .is_none_or(|n| n < b.number.saturating_add(1).saturating_mul(k as u64))
        {
            return;
        }
        if self.out_next < self.out_n {
            // The last rebuild is still being taken (two blocks
            // completing in one call): this one waits for the next call.
            return;
        }
        self.blocks[slot].done = true;
        if self.rebuild(slot, k, m, shard).is_err() {
            self.counts.refused += 1;
        }
    }

    fn rebuild(
        &mut self,
        slot: usize,
        k: usize,
        m: usize,
        shard: usize,
    ) -> Result<(), reed_solomon_simd::Error> {
        let b = self.blocks[slot];
        self.rs.reset(k, m, shard)?;
        for i in (0..k).filter(|i| b.sources & (1 << i) != 0) {
            let at = (slot * FEC_MAX_K + i) * FEC_MAX_SHARD;
            self.rs
                .add_original_shard(i, &self.sources[at..at + shard])?;
        }
        for i in (0..m).filter(|i| b.repairs & (1 << i) != 0) {
            let at = (slot * FEC_MAX_M + i) * FEC_MAX_SHARD;
            self.rs
                .add_recovery_shard(i, &self.repairs[at..at + shard])?;
        }
        let r = self.rs.decode()?;
        let base = b.number.saturating_mul(k as u64);
        let (mut n, mut blocks) = (0, 0);
        for (i, s) in r.restored_original_iter() {
            let len = usize::from(u16::from_le_bytes([s[0], s[1]]));
            let d = &s[2..];
            // What comes out must be this block's audio packet, or the
            // shards were not what the sender encoded.
            let ok = len >= AUDIO_HEADER_LEN
                && len <= d.len()
                && protocol::parse_header(&d[..len])
                    .is_ok_and(|h| h.ptype == PacketType::Audio && h.stream_id == self.session)
                && Some(protocol::audio_seq_pts(&d[..len]).0) == base.checked_add(i as u64);
            if !ok {
                self.counts.refused += 1;
                continue;
            }
            let at = n * FEC_MAX_SHARD;
            self.out[at..at + len].copy_from_slice(&d[..len]);
            self.out_len[n] = len as u16;
            n += 1;
            blocks = 1;
        }
        self.out_n = n;
        self.out_next = 0;
        self.counts.blocks += blocks;
        Ok(())
    }

    /// The next rebuilt audio datagram (plain, marked as a resend), copied
    /// into `out`; its length, or `None` when there is none (or `out` is
    /// too small, which drops it).
    pub fn take_recovered(&mut self, out: &mut [u8]) -> Option<usize> {
        while self.out_next < self.out_n {
            let i = self.out_next;
            self.out_next += 1;
            let len = usize::from(self.out_len[i]);
            let Some(dst) = out.get_mut(..len) else {
                continue;
            };
            dst.copy_from_slice(&self.out[i * FEC_MAX_SHARD..i * FEC_MAX_SHARD + len]);
            dst[55] |= AUDIO_RESENT;
            self.counts.recovered += 1;
            return Some(len);
        }
        None
    }
}

impl Default for FecDecoder {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{AudioFormat, SampleFormat};
    use crate::protocol::{write_audio, AudioHeader, Packet};

    fn audio(seq: u64, frames: u16) -> Vec<u8> {
        let h = AudioHeader {
            positions: Default::default(),
            stream_id: 9,
            seq,
            frame: seq * 176,
            pts: seq as i64 * 3_666_666,
            format: AudioFormat {
                sample: SampleFormat::S16,
                rate: 48_000,
                channels: 2,
            },
            latency_us: 40_000,
            name_hash: 1,
            priority: 0,
            frames,
        };
        let samples: Vec<f32> = (0..frames as usize * 2)
            .map(|i| ((seq as usize * 31 + i) % 200) as f32 / 400.0)
            .collect();
        let mut out = vec![0u8; 2048];
        let n = write_audio(&mut out, &h, &samples).unwrap();
        out.truncate(n);
        out
    }

    /// Sends `seqs` through an encoder of `k:m`; delivers the packets not
    /// in `lost` (and the repair packets not in `lost_repairs`) to a
    /// decoder; returns what it rebuilt, by sequence number.
    fn run(
        k: u8,
        m: u8,
        seqs: std::ops::Range<u64>,
        lost: &[u64],
        lost_repairs: &[u8],
    ) -> Vec<u64> {
        let mut enc = FecEncoder::new(k, m, 60 + 176 * 4, 9).unwrap();
        let mut dec = FecDecoder::new();
        dec.reset(9);
        let mut got = vec![];
        let mut buf = vec![0u8; 2048];
        let mut now = 1_000_000_000u64;
        for seq in seqs {
            // The last packet of a block is shorter: padding must not
            // reach the rebuilt datagram.
            let d = audio(seq, if seq % 3 == 2 { 100 } else { 176 });
            now += 3_666_666;
            if !lost.contains(&seq) {
                dec.source(now, seq, &d);
            }
            if enc.source(seq, &d) {
                while let Some(n) = enc.next_repair(&mut buf) {
                    let Ok(Packet::Fec(f)) = protocol::parse(&buf[..n]) else {
                        panic!("a repair packet")
                    };
                    if !lost_repairs.contains(&f.index) {
                        let f = FecPacket {
                            shard: f.shard,
                            ..f
                        };
                        dec.repair(now, &f);
                    }
                }
            }
            let mut out = vec![0u8; 2048];
            while let Some(n) = dec.take_recovered(&mut out) {
                let Ok(Packet::Audio(a)) = protocol::parse(&out[..n]) else {
                    panic!("rebuilt audio")
                };
                assert!(a.resent, "marked as not first sent");
                let mut want = audio(a.header.seq, a.header.frames);
                want[55] |= AUDIO_RESENT;
                assert_eq!(&out[..n], &want[..], "seq {}", a.header.seq);
                got.push(a.header.seq);
            }
        }
        got
    }

    #[test]
    fn up_to_m_losses_per_block_are_rebuilt_exactly() {
        // Blocks of 4 from 8 (4..8 is the first whole one after the
        // repair packets start to flow: the decoder learns the shape from
        // block 0..4's repair packet).
        assert_eq!(run(4, 1, 0..24, &[5, 10, 19], &[]), vec![5, 10, 19]);
        assert_eq!(run(8, 2, 0..32, &[9, 10, 20, 23], &[]), vec![9, 10, 20, 23]);
    }

    #[test]
    fn more_losses_than_repairs_rebuild_nothing_of_that_block() {
        assert_eq!(run(4, 1, 0..20, &[5, 6, 13], &[]), vec![13]);
        // A lost repair packet counts as one of the block's losses.
        assert_eq!(run(8, 2, 0..32, &[9, 10, 20], &[1]), vec![20]);
    }

    #[test]
    fn shapes_parse_from_the_choices() {
        assert_eq!(parse_shape("off"), None);
        for c in FEC_CHOICES.iter().skip(1) {
            let (k, m) = parse_shape(c).unwrap();
            assert!(FecEncoder::new(k, m, 1468, 1).is_ok(), "{c}");
        }
        assert_eq!(parse_shape("1:1"), None);
        assert_eq!(parse_shape("4:5"), None);
        assert!(
            FecEncoder::new(4, 1, 1473, 1).is_err(),
            "too long for a shard"
        );
    }

    #[test]
    fn a_forged_repair_packet_rebuilds_nothing_wrong() {
        let mut dec = FecDecoder::new();
        dec.reset(9);
        let now = 1_000_000_000;
        let shard = vec![0x55u8; shard_len(60 + 176 * 4)];
        for seq in [0u64, 1, 2] {
            dec.source(now, seq, &audio(seq, 176));
        }
        dec.repair(
            now,
            &FecPacket {
                stream_id: 9,
                base: 0,
                k: 4,
                m: 1,
                index: 0,
                shard: &shard,
            },
        );
        for seq in [4u64, 5, 6, 8] {
            dec.source(now, seq, &audio(seq, 176));
        }
        dec.repair(
            now,
            &FecPacket {
                stream_id: 9,
                base: 4,
                k: 4,
                m: 1,
                index: 0,
                shard: &shard,
            },
        );
        let mut out = vec![0u8; 2048];
        assert_eq!(dec.take_recovered(&mut out), None);
        assert!(dec.counts().refused >= 1, "{:?}", dec.counts());
        // Another session's repair packets are not taken at all.
        dec.repair(
            now,
            &FecPacket {
                stream_id: 8,
                base: 8,
                k: 4,
                m: 1,
                index: 0,
                shard: &shard,
            },
        );
        assert_eq!(dec.counts().repairs, 2);
    }

    #[test]
    fn a_repair_packet_far_from_the_stream_is_refused_and_takes_no_slot() {
        let mut enc = FecEncoder::new(4, 1, 60 + 176 * 4, 9).unwrap();
        let mut dec = FecDecoder::new();
        dec.reset(9);
        let shard = vec![0u8; shard_len(60 + 176 * 4)];
        let (mut buf, mut out) = (vec![0u8; 2048], vec![0u8; 2048]);
        let (mut got, mut now) = (vec![], 1_000_000_000u64);
        for seq in 0..24u64 {
            now += 3_666_666;
            // Forged ahead of the stream, as far as u64 goes and a bit.
            for far in [u64::MAX - u64::MAX % 4, seq / 4 * 4 + 400] {
                let f = FecPacket {
                    stream_id: 9,
                    base: far,
                    k: 4,
                    m: 1,
                    index: 0,
                    shard: &shard,
                };
                dec.repair(now, &f);
            }
            let d = audio(seq, 176);
            if seq != 9 {
                dec.source(now, seq, &d);
            }
            if enc.source(seq, &d) {
                while let Some(n) = enc.next_repair(&mut buf) {
                    if let Ok(Packet::Fec(f)) = protocol::parse(&buf[..n]) {
                        dec.repair(now, &f);
                    }
                }
            }
            while let Some(n) = dec.take_recovered(&mut out) {
                got.push(protocol::audio_seq_pts(&out[..n]).0);
            }
        }
        assert_eq!(got, vec![9]);
        assert!(dec.counts().refused >= 48, "{:?}", dec.counts());
    }
}

//! The sender's recent audio datagrams, plain (before sealing), by
//! sequence number, for resending.

/// A ring of the last `slots` audio datagrams, each up to `slot_len`
/// bytes, allocated once.
pub struct History {
    data: Vec<u8>,
    /// Per slot: sequence number, length (0: empty) and `pts`, ns.
    meta: Vec<(u64, usize, i64)>,
    slot_len: usize,
}

impl History {
    /// A history of `slots` datagrams of at most `slot_len` bytes.
    pub fn new(slots: usize, slot_len: usize) -> Self {
        let slots = slots.max(1);
        History {
            data: vec![0; slots * slot_len],
            meta: vec![(0, 0, 0); slots],
            slot_len,
        }
    }

    /// Datagrams it holds at most.
    pub fn slots(&self) -> usize {
        self.meta.len()
    }

    /// Longest datagram it keeps, bytes.
    pub fn slot_len(&self) -> usize {
        self.slot_len
    }

    /// Keeps the plain audio datagram `d` of sequence number `seq`
    /// presented at `pts` (sender clock, ns), in place of the one
    /// `slots()` before it. One longer than `slot_len` is not kept. No
    /// allocation.
    pub fn store(&mut self, seq: u64, pts: i64, d: &[u8]) {
        let i = (seq % self.meta.len() as u64) as usize;
        if d.len() > self.slot_len {
            self.meta[i] = (0, 0, 0);
            return;
        }
        let at = i * self.slot_len;
        self.data[at..at + d.len()].copy_from_slice(d);
        self.meta[i] = (seq, d.len(), pts);
    }

    /// The datagram of `seq` and its `pts`, if still held.
    pub fn get(&self, seq: u64) -> Option<(&[u8], i64)> {
        let i = (seq % self.meta.len() as u64) as usize;
        let (s, len, pts) = self.meta[i];
        if len == 0 || s != seq {
            return None;
        }
        let at = i * self.slot_len;
        Some((&self.data[at..at + len], pts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_last_slots_datagrams_only() {
        let mut h = History::new(4, 8);
        for seq in 0..10u64 {
            h.store(seq, seq as i64 * 10, &[seq as u8; 5]);
        }
        assert!(h.get(5).is_none(), "overwritten");
        assert_eq!(h.get(6), Some((&[6u8; 5][..], 60)));
        assert_eq!(h.get(9), Some((&[9u8; 5][..], 90)));
        assert!(h.get(10).is_none(), "not sent yet");
        assert!(h.get(13).is_none(), "same slot as 9, other seq");
        h.store(10, 0, &[0; 9]);
        assert!(h.get(10).is_none(), "too long to keep");
        assert!(h.get(6).is_none(), "its slot was cleared");
    }
}

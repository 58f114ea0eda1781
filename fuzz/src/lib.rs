//! Helpers shared by the fuzz targets: a reader that turns libFuzzer's
//! bytes into values and never fails (an exhausted input reads as zeros,
//! so every input is a valid program).

/// Cursor over the fuzzer's input.
pub struct Bytes<'a> {
    d: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// Reads from `d`.
    pub fn new(d: &'a [u8]) -> Self {
        Bytes { d }
    }

    /// Whether the input is used up.
    pub fn is_empty(&self) -> bool {
        self.d.is_empty()
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.d.len());
        let (a, b) = self.d.split_at(n);
        self.d = b;
        a
    }

    /// One byte, 0 at the end.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// Little-endian u16, zero-padded at the end.
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let t = self.take(2);
        b[..t.len()].copy_from_slice(t);
        u16::from_le_bytes(b)
    }

    /// Little-endian u32, zero-padded at the end.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let t = self.take(4);
        b[..t.len()].copy_from_slice(t);
        u32::from_le_bytes(b)
    }

    /// Little-endian u64, zero-padded at the end.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let t = self.take(8);
        b[..t.len()].copy_from_slice(t);
        u64::from_le_bytes(b)
    }
}

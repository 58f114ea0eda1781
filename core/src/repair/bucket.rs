//! A token bucket (the traffic shaper of RFC 2697 §3, one bucket), in
//! bytes: how much a sender may resend.

/// A token bucket of `depth` bytes refilled at `rate` bytes per second.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    depth: f64,
    level: f64,
    last_ns: u64,
}

impl TokenBucket {
    /// A full bucket: `rate` bytes/s, `depth` bytes, as of `now_ns`.
    pub fn new(rate: f64, depth: f64, now_ns: u64) -> Self {
        TokenBucket {
            rate,
            depth,
            level: depth,
            last_ns: now_ns,
        }
    }

    /// Whether `bytes` may go at `now_ns`; if so they are taken. Time
    /// going backwards adds nothing.
    pub fn take(&mut self, now_ns: u64, bytes: usize) -> bool {
        let dt = now_ns.saturating_sub(self.last_ns) as f64 * 1e-9;
        self.last_ns = self.last_ns.max(now_ns);
        self.level = (self.level + dt * self.rate).min(self.depth);
        if self.level >= bytes as f64 {
            self.level -= bytes as f64;
            true
        } else {
            false
        }
    }

    /// Gives back `bytes` taken but not sent.
    pub fn refund(&mut self, bytes: usize) {
        self.level = (self.level + bytes as f64).min(self.depth);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_at_most_depth_plus_rate_times_time() {
        let mut b = TokenBucket::new(1000.0, 250.0, 0);
        let mut sent = 0usize;
        // 10 s of asking for 100 bytes every ms.
        for ms in 0..10_000u64 {
            if b.take(ms * 1_000_000, 100) {
                sent += 100;
            }
        }
        assert!(sent <= 250 + 10_000, "{sent}");
        assert!(sent >= 9_900, "{sent}");
        // Time going back gives nothing.
        let mut b = TokenBucket::new(1000.0, 100.0, 5_000_000_000);
        assert!(b.take(5_000_000_000, 100));
        assert!(!b.take(0, 1));
        b.refund(60);
        assert!(b.take(0, 60));
        assert!(!b.take(0, 1));
    }
}

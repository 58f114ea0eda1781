//! Rate-limited warnings about the datagrams the authentication layer
//! dropped ([`AuthCounters`]): the first of each kind at once, then a
//! summary of that kind at most once per [`WARN_PERIOD_NS`], so that a
//! misconfigured node on the group is named without flooding the log.
//!
//! The messages are built here, the same for every adapter but for the
//! name of its key setting; each adapter logs them with its own logger
//! (the PipeWire module on its main loop, never on the data thread).

use bark_core::auth::{AuthCounters, MAX_CLOCK_SKEW_NS};

/// Time between two warnings of one kind, ns (one minute).
pub const WARN_PERIOD_NS: u64 = 60_000_000_000;

/// The rate limit of one kind of warning: the first occurrence at once,
/// then at most one summary per [`WARN_PERIOD_NS`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Throttle {
    /// The running total at the last warning.
    logged: u64,
    /// When the last warning was given, ns (any monotonic clock).
    last_ns: Option<u64>,
}

impl Throttle {
    /// How many occurred since the last warning, if a warning is due at
    /// `now_ns` (ns on a monotonic clock); `total` is the running count.
    /// A due warning is taken: the next one waits a period.
    pub fn due(&mut self, now_ns: u64, total: u64) -> Option<u64> {
        if total <= self.logged {
            return None;
        }
        if self
            .last_ns
            .is_some_and(|t| now_ns.saturating_sub(t) < WARN_PERIOD_NS)
        {
            return None;
        }
        let n = total - self.logged;
        self.logged = total;
        self.last_ns = Some(now_ns);
        Some(n)
    }
}

/// The kinds, in the order their warnings are given.
const KINDS: usize = 6;

/// Rate-limited warnings about dropped datagrams, one [`Throttle`] per
/// reason ([`bark_core::auth::AuthError`]).
#[derive(Clone, Debug, Default)]
pub struct DropWarnings {
    kinds: [Throttle; KINDS],
}

impl DropWarnings {
    /// The warnings due at `now_ns` (ns on a monotonic clock, the same one
    /// at every call) given the running counts `c`, each a message that
    /// starts with "dropped N ". `key_setting` is the adapter's name for
    /// the key file setting (`bark.key-file`, `key-file`, `--key-file`),
    /// which a node without a key is told to set. Allocates only when a
    /// warning is due.
    pub fn due(&mut self, c: &AuthCounters, now_ns: u64, key_setting: &str) -> Vec<String> {
        let totals = [
            c.no_key,
            c.unauthenticated,
            c.bad_tag,
            c.replayed,
            c.stale,
            c.malformed,
        ];
        let mut out = Vec::new();
        for (i, (t, total)) in self.kinds.iter_mut().zip(totals).enumerate() {
            if let Some(n) = t.due(now_ns, total) {
                out.push(message(i, n, c, key_setting));
            }
        }
        out
    }
}

/// The warning of kind `i` (the order of [`DropWarnings::due`]'s totals)
/// about `n` datagrams.
fn message(i: usize, n: u64, c: &AuthCounters, key_setting: &str) -> String {
    match i {
        0 => format!("dropped {n} authenticated datagrams: senders use a key and this node has none; set {key_setting} to their key file"),
        1 => format!("dropped {n} unauthenticated datagrams: a node without a key file is sending to this group"),
        2 => format!("dropped {n} datagrams that failed authentication: a node with a different key (compare the key ids in the logs), or corrupted or forged datagrams"),
        3 => format!("dropped {n} replayed datagrams"),
        4 => format!(
            "dropped {n} authentic datagrams stamped {:.0} s from this host's wall clock (limit {} s): set the hosts' clocks (NTP), or these are old captures being replayed",
            c.last_stale_skew_ns as f64 / 1e9,
            MAX_CLOCK_SKEW_NS / 1_000_000_000
        ),
        _ => format!("dropped {n} malformed datagrams: not Bark v1, unknown header flags, or too short for the authentication trailer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn a_throttle_warns_at_once_then_once_a_period() {
        let mut t = Throttle::default();
        assert_eq!(t.due(S, 0), None, "nothing happened");
        assert_eq!(t.due(S, 3), Some(3), "the first at once");
        assert_eq!(t.due(2 * S, 10), None, "then not within a period");
        assert_eq!(t.due(S + WARN_PERIOD_NS - 1, 11), None);
        assert_eq!(t.due(S + WARN_PERIOD_NS, 12), Some(9), "a summary");
        assert_eq!(t.due(200 * S, 12), None, "nothing new");
        assert_eq!(t.due(201 * S, 13), Some(1), "a period has passed");
    }

    #[test]
    fn each_kind_is_throttled_on_its_own_and_names_the_setting() {
        let mut w = DropWarnings::default();
        let key = "--key-file";
        let mut c = AuthCounters {
            no_key: 2,
            ..Default::default()
        };
        let m = w.due(&c, S, key);
        assert_eq!(m.len(), 1);
        assert!(
            m[0].starts_with("dropped 2 authenticated datagrams")
                && m[0].contains("set --key-file to their key file"),
            "{}",
            m[0]
        );
        c.no_key = 5;
        c.stale = 1;
        c.last_stale_skew_ns = -400 * S as i64;
        let m = w.due(&c, 2 * S, key);
        assert_eq!(m.len(), 1, "no_key waits, stale is new: {m:?}");
        assert!(m[0].starts_with("dropped 1 authentic datagrams stamped -400 s"));
        assert!(m[0].contains("(limit 300 s)"), "{}", m[0]);
        assert!(w.due(&c, 3 * S, key).is_empty());
        c.bad_tag = 7;
        c.replayed = 1;
        c.unauthenticated = 4;
        c.malformed = 2;
        let m = w.due(&c, S + WARN_PERIOD_NS, key);
        let expected = [
            "dropped 3 authenticated datagrams:",
            "dropped 4 unauthenticated datagrams:",
            "dropped 7 datagrams that failed authentication:",
            "dropped 1 replayed datagrams",
            "dropped 2 malformed datagrams:",
        ];
        // The no-key summary is due a period after its first warning; the
        // stale one is not (warned at 2 s).
        assert_eq!(m.len(), expected.len(), "{m:?}");
        for (got, want) in m.iter().zip(expected) {
            assert!(got.starts_with(want), "{got:?} is not {want:?}");
        }
        let pulse = DropWarnings::default().due(
            &AuthCounters {
                no_key: 1,
                ..Default::default()
            },
            0,
            "key-file",
        );
        assert!(pulse[0].ends_with("set key-file to their key file"));
    }
}

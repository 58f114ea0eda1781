//! Stateless cookies: a receiver asks for one with a Hello, and the sender
//! answers only NACKs that carry a cookie minted for their source address,
//! so that a NACK with a spoofed source makes the sender send nothing to
//! the address it names. The idea is that of DTLS' HelloVerifyRequest
//! (RFC 6347 §4.2.1) and QUIC's Retry token (RFC 9000 §8.1.2): the cookie
//! is a MAC of the address under a secret only the sender knows, so the
//! sender keeps no state per Hello.

use crate::protocol::{CookieTag, COOKIE_MAC_LEN};
use blake2::digest::Mac;
use blake2::Blake2sMac256;
use std::net::SocketAddr;
use zeroize::Zeroize;

/// A cookie's slot is the sender's clock, ns, shifted right by this:
/// 2^36 ns = 68.7 s.
pub const SLOT_SHIFT: u32 = 36;
/// How often a receiver asks for a fresh cookie, ns (30 s: a cookie is
/// accepted in its slot and the next, 68.7–137 s).
pub const COOKIE_REFRESH_NS: u64 = 30_000_000_000;

const LABEL: &[u8] = b"bark v1 cookie";

/// The sender's cookie secret (32 random bytes, wiped on drop).
pub struct CookieJar {
    secret: [u8; 32],
}

impl Drop for CookieJar {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

fn slot_of(now_ns: u64) -> u32 {
    (now_ns >> SLOT_SHIFT) as u32
}

impl CookieJar {
    /// A jar with a fresh secret from the OS.
    ///
    /// # Errors
    /// When the OS has no randomness to give (getrandom).
    pub fn new() -> Result<Self, getrandom::Error> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(CookieJar { secret })
    }

    /// A jar with a given secret (tests, fuzzing).
    pub fn with_secret(secret: [u8; 32]) -> Self {
        CookieJar { secret }
    }

    fn mac(&self, slot: u32, session: u64, node_id: u64, addr: SocketAddr) -> [u8; COOKIE_MAC_LEN] {
        // A 32-byte key always fits BLAKE2s.
        let Ok(mut m) = <Blake2sMac256 as Mac>::new_from_slice(&self.secret) else {
            return [0; COOKIE_MAC_LEN];
        };
        m.update(LABEL);
        m.update(&session.to_le_bytes());
        m.update(&node_id.to_le_bytes());
        match addr {
            SocketAddr::V4(a) => m.update(&a.ip().octets()),
            SocketAddr::V6(a) => m.update(&a.ip().octets()),
        }
        m.update(&addr.port().to_le_bytes());
        m.update(&slot.to_le_bytes());
        let full = m.finalize().into_bytes();
        let mut out = [0u8; COOKIE_MAC_LEN];
        out.copy_from_slice(&full[..COOKIE_MAC_LEN]);
        out
    }

    /// The cookie for receiver `node_id` of `session` at `addr`, at sender
    /// time `now_ns`.
    pub fn mint(&self, now_ns: u64, session: u64, node_id: u64, addr: SocketAddr) -> CookieTag {
        let slot = slot_of(now_ns);
        CookieTag {
            slot,
            mac: self.mac(slot, session, node_id, addr),
        }
    }

    /// Whether `tag` was minted for exactly this session, node and address
    /// in the current slot or the one before.
    pub fn check(
        &self,
        now_ns: u64,
        session: u64,
        node_id: u64,
        addr: SocketAddr,
        tag: &CookieTag,
    ) -> bool {
        let cur = slot_of(now_ns);
        if tag.slot != cur && tag.slot.wrapping_add(1) != cur {
            return false;
        }
        let want = self.mac(tag.slot, session, node_id, addr);
        // Constant time: the comparison must not tell a forger how many
        // leading bytes were right.
        want.iter()
            .zip(tag.mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_holds_for_its_address_node_and_session_for_two_slots() {
        let jar = CookieJar::with_secret([3; 32]);
        let a: SocketAddr = "10.0.0.2:40000".parse().unwrap();
        let t0 = 5u64 << SLOT_SHIFT;
        let c = jar.mint(t0 + 1, 7, 9, a);
        assert!(jar.check(t0 + 2, 7, 9, a, &c));
        assert!(jar.check(t0 + (1 << SLOT_SHIFT), 7, 9, a, &c), "next slot");
        assert!(!jar.check(t0 + (2 << SLOT_SHIFT), 7, 9, a, &c), "expired");
        assert!(!jar.check(t0 - 1, 7, 9, a, &c), "from the future");
        assert!(!jar.check(t0, 8, 9, a, &c), "other session");
        assert!(!jar.check(t0, 7, 8, a, &c), "other node");
        let port: SocketAddr = "10.0.0.2:40001".parse().unwrap();
        let host: SocketAddr = "10.0.0.3:40000".parse().unwrap();
        assert!(!jar.check(t0, 7, 9, port, &c));
        assert!(!jar.check(t0, 7, 9, host, &c));
        let mut bent = c;
        bent.mac[15] ^= 1;
        assert!(!jar.check(t0, 7, 9, a, &bent));
        // Another sender's secret.
        assert!(!CookieJar::with_secret([4; 32]).check(t0, 7, 9, a, &c));
    }
}

//! Who this node is: random ids (session and node ids) and the host name
//! that status packets carry.

use crate::clock::{monotonic_ns, realtime_ns};

/// A random non-zero `u64`, for session and node ids (0 means "none" on
/// the wire).
pub fn random_nonzero_u64() -> u64 {
    loop {
        // getrandom only fails without any entropy source; the clocks are
        // then unique enough for an id.
        let v = getrandom::u64().unwrap_or_else(|_| realtime_ns() ^ monotonic_ns().rotate_left(32));
        if v != 0 {
            return v;
        }
    }
}

/// This machine's host name, as status packets report it ("" if it cannot
/// be read or is not UTF-8).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_nonzero_and_differ() {
        let a = random_nonzero_u64();
        let b = random_nonzero_u64();
        assert!(a != 0 && b != 0);
        assert_ne!(a, b, "two 64-bit random ids collided");
    }

    #[test]
    fn hostname_is_the_kernels() {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(hostname(), kernel.trim_end());
    }
}

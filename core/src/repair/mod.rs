//! Repair of lost audio packets by retransmission on request (NACK).
//!
//! A receiver that sees a gap in the audio sequence numbers asks the
//! sender for the missing packets ([`nack::NackScheduler`]) until their
//! frames are due; the sender keeps its recent packets ([`history`]) and
//! resends them to the address that asked, within caps
//! ([`bucket::TokenBucket`]) and only to an address that proved it
//! receives there ([`cookie`]). docs/design/REPAIR.md gives the design,
//! docs/PROTOCOL.md the bytes and docs/SECURITY.md the limits.

pub mod bucket;
pub mod cookie;
pub mod history;
pub mod nack;
pub mod resend;

//! The packet parser on arbitrary datagrams: it must never panic, and what
//! it accepts must survive a round trip through the core's own writers
//! (write(parse(d)) parses to the same packet), so parser and writers agree
//! on every field of docs/PROTOCOL.md. The sender's request path, which
//! parses the same bytes on the sending side, is driven too.
#![no_main]

use bark_core::protocol::{self, Packet};
use bark_core::{Sender, SenderConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|d: &[u8]| {
    let mut out = vec![0u8; 70_000];
    match protocol::parse(d) {
        Ok(Packet::Audio(a)) => {
            let h = a.header;
            let mut samples = vec![0f32; h.frames as usize * h.format.channels as usize];
            h.format.sample.decode(a.payload, &mut samples);
            assert!(samples.iter().all(|s| s.is_finite()));
            let n = protocol::write_audio(&mut out, &h, &samples).expect("room for audio");
            assert_eq!(n, d.len());
            match protocol::parse(&out[..n]) {
                Ok(Packet::Audio(b)) => assert_eq!(b.header, h),
                other => panic!("audio did not round-trip: {other:?}"),
            }
        }
        Ok(Packet::TimeRequest(t)) | Ok(Packet::TimeReply(t)) => {
            let reply = matches!(protocol::parse(d), Ok(Packet::TimeReply(_)));
            let n = protocol::write_time(&mut out, reply, &t).expect("room for time");
            assert_eq!(n, protocol::TIME_LEN);
            let back = protocol::parse(&out[..n]).expect("time round-trip");
            match back {
                Packet::TimeRequest(u) | Packet::TimeReply(u) => assert_eq!(u, t),
                other => panic!("time did not round-trip: {other:?}"),
            }
        }
        Ok(Packet::Status(s)) => {
            let n = protocol::write_status(&mut out, &s).expect("room for status");
            assert_eq!(n, d.len());
            match protocol::parse(&out[..n]) {
                Ok(Packet::Status(b)) => assert_eq!(b, s),
                other => panic!("status did not round-trip: {other:?}"),
            }
        }
        // Packet types added after this target was written.
        #[allow(unreachable_patterns)]
        Ok(_) => {}
        Err(_) => {}
    }
    // The sender parses whatever reaches its socket too.
    let mut sender = Sender::new(SenderConfig {
        session_id: 0x5eed,
        ..Default::default()
    })
    .expect("default sender config");
    let mut reply = [0u8; protocol::TIME_LEN];
    if let Ok(Some(n)) = sender.handle_packet(10, 20, d, &mut reply) {
        match protocol::parse(&reply[..n]) {
            Ok(Packet::TimeReply(t)) => assert_eq!(t.stream_id, 0x5eed),
            other => panic!("the sender wrote a bad reply: {other:?}"),
        }
    }
});

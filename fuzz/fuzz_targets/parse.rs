//! The packet parser on arbitrary datagrams: it must never panic, and what
//! it accepts must survive a round trip through the core's own writers
//! (write(parse(d)) parses to the same packet), so parser and writers agree
//! on every field of docs/PROTOCOL.md; a control packet (NACK, Hello,
//! Cookie, Subscribe) re-written is byte for byte the datagram (but the header's
//! flags), a NACK names exactly its base and mask bits, a Cookie is never
//! longer than a Hello, and an audio packet marked as a resend parses with
//! the flag and the new latency. The sender's request path, which
//! parses the same bytes on the sending side, is driven too.
#![no_main]

use bark_core::protocol::{self, AudioHeader, Packet};
use bark_core::{Sender, SenderConfig};
use libfuzzer_sys::fuzz_target;

/// A control packet the writer re-wrote from its parse is the datagram
/// itself, but for the header's flag bytes (6..8), which the parser only
/// checks for the sealing bit and the writer leaves 0: every body byte is
/// a field or a reserved byte the parser checked.
fn same_body(d: &[u8], out: &[u8]) {
    assert_eq!(d.len(), out.len());
    assert_eq!(&d[..6], &out[..6], "header differs");
    assert_eq!(&d[8..], &out[8..], "body differs after a round trip");
}

fuzz_target!(|d: &[u8]| {
    let mut out = vec![0u8; 70_000];
    match protocol::parse(d) {
        Ok(Packet::Audio(a)) => {
            let h = a.header;
            let n = if h.format.sample == bark_core::SampleFormat::Opus {
                // An Opus packet is carried as it is (1..=1275 bytes).
                assert!((1..=bark_core::opus::MAX_OPUS_PACKET).contains(&a.payload.len()));
                protocol::write_audio_payload(&mut out, &h, a.payload).expect("room for audio")
            } else {
                let mut samples = vec![0f32; h.frames as usize * h.format.channels as usize];
                h.format.sample.decode(a.payload, &mut samples);
                assert!(samples.iter().all(|s| s.is_finite()));
                protocol::write_audio(&mut out, &h, &samples).expect("room for audio")
            };
            assert_eq!(n, d.len());
            match protocol::parse(&out[..n]) {
                Ok(Packet::Audio(b)) => {
                    assert_eq!(b.header, h);
                    assert!(!b.resent, "the writer marked a fresh packet resent");
                }
                other => panic!("audio did not round-trip: {other:?}"),
            }
            // Marked as a resend (as the sender does, with the latency of
            // when it leaves): the flag, the new latency, all else kept.
            let latency_us = h.latency_us.rotate_left(7);
            protocol::mark_resent(&mut out[..n], latency_us);
            match protocol::parse(&out[..n]) {
                Ok(Packet::Audio(b)) => {
                    assert!(b.resent, "mark_resent did not mark");
                    assert_eq!(b.header, AudioHeader { latency_us, ..h });
                }
                other => panic!("a resend did not parse: {other:?}"),
            }
            // The flags are the byte's only bits the parser lets through.
            let flags = if a.resent { protocol::AUDIO_RESENT } else { 0 }
                | if a.last_of_buffer {
                    protocol::AUDIO_LAST_OF_BUFFER
                } else {
                    0
                };
            assert_eq!(d[55], flags);
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
        Ok(Packet::Nack(k)) => {
            let n = protocol::write_nack(&mut out, &k).expect("room for a NACK");
            assert_eq!(n, d.len());
            same_body(d, &out[..n]);
            match protocol::parse(&out[..n]) {
                Ok(Packet::Nack(b)) => assert_eq!(b, k),
                other => panic!("NACK did not round-trip: {other:?}"),
            }
            // Its base first, then the mask's bits above it, in order,
            // none beyond the span, none wrapping past u64::MAX.
            let seqs: Vec<u64> = k.seqs().collect();
            assert_eq!(seqs.first(), Some(&k.base), "a NACK names its base first");
            assert!(
                seqs.windows(2).all(|w| w[0] < w[1]),
                "NACK seqs out of order"
            );
            for &s in &seqs[1..] {
                let i = s - k.base - 1;
                assert!(i < 64 && k.mask >> i & 1 == 1, "seq {s} not in the mask");
            }
            let named = (0..64u64)
                .filter(|&i| k.mask >> i & 1 == 1 && k.base.checked_add(1 + i).is_some())
                .count();
            assert_eq!(seqs.len(), 1 + named);
            assert!(seqs.len() as u64 <= protocol::NACK_SPAN);
        }
        Ok(Packet::Hello(h)) => {
            let n = protocol::write_hello(&mut out, &h).expect("room for a Hello");
            assert_eq!(n, d.len());
            same_body(d, &out[..n]);
            match protocol::parse(&out[..n]) {
                Ok(Packet::Hello(b)) => assert_eq!(b, h),
                other => panic!("Hello did not round-trip: {other:?}"),
            }
            // Its answer is never longer than the Hello: a spoofed Hello
            // gets a reflector nothing.
            let answer = protocol::CookiePacket {
                stream_id: h.stream_id,
                node_id: h.node_id,
                nonce: h.nonce,
                cookie: protocol::CookieTag::default(),
                offers: protocol::OFFER_NACK,
            };
            let m = protocol::write_cookie(&mut out, &answer).expect("room for a Cookie");
            assert!(m <= n, "Cookie ({m}) longer than Hello ({n})");
        }
        Ok(Packet::Subscribe(sub)) => {
            let n = protocol::write_subscribe(&mut out, &sub).expect("room for a Subscribe");
            assert_eq!(n, d.len());
            same_body(d, &out[..n]);
            match protocol::parse(&out[..n]) {
                Ok(Packet::Subscribe(b)) => assert_eq!(b, sub),
                other => panic!("Subscribe did not round-trip: {other:?}"),
            }
            assert!(
                sub.flags & !protocol::SUBSCRIBE_LEAVE == 0,
                "unknown Subscribe flags taken"
            );
        }
        Ok(Packet::Fec(f)) => {
            let n = protocol::write_fec(&mut out, &f).expect("room for an FEC packet");
            assert_eq!(n, d.len());
            same_body(d, &out[..n]);
            match protocol::parse(&out[..n]) {
                Ok(Packet::Fec(b)) => assert_eq!(b, f),
                other => panic!("FEC packet did not round-trip: {other:?}"),
            }
            assert!(
                f.index < f.m && f.base % u64::from(f.k) == 0,
                "FEC shape taken: {f:?}"
            );
        }
        Ok(Packet::Cookie(c)) => {
            let n = protocol::write_cookie(&mut out, &c).expect("room for a Cookie");
            assert_eq!(n, d.len());
            same_body(d, &out[..n]);
            match protocol::parse(&out[..n]) {
                Ok(Packet::Cookie(b)) => assert_eq!(b, c),
                other => panic!("Cookie did not round-trip: {other:?}"),
            }
        }
        Ok(Packet::Sync(y)) => {
            let n = protocol::write_sync(&mut out, &y).expect("room for a sync message");
            assert_eq!(n, d.len());
            same_body(d, &out[..n]);
            match protocol::parse(&out[..n]) {
                Ok(Packet::Sync(b)) => assert_eq!(b, y),
                other => panic!("sync did not round-trip: {other:?}"),
            }
        }
        Ok(Packet::Command(c)) => {
            let n = bark_core::command::write_command(&mut out, &c).expect("room for a command");
            assert_eq!(n, d.len(), "a command has one length");
            match protocol::parse(&out[..n]) {
                Ok(Packet::Command(b)) => assert_eq!(b, c),
                other => panic!("command did not round-trip: {other:?}"),
            }
        }
        Ok(Packet::CommandAck(a)) => {
            let n = bark_core::command::write_ack(&mut out, &a).expect("room for an ack");
            assert_eq!(n, d.len());
            match protocol::parse(&out[..n]) {
                Ok(Packet::CommandAck(b)) => assert_eq!(b, a),
                other => panic!("ack did not round-trip: {other:?}"),
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

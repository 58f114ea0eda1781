//! Loopback tests of the transport: traffic stays on this host (`lo`,
//! multicast TTL 0).

use super::*;
use crate::clock::{monotonic_ns, realtime_ns};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

const NAMES: FrontEnd = FrontEnd::PipeWire;

const LOCAL_ANY_PORT: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0);

/// Waits (at most 1 s, loopback delivers at once) for one datagram.
fn recv_one(s: &mut UdpSocket, buf: &mut [u8]) -> Datagram {
    wait_readable(&[s], 1_000_000_000);
    s.recv(buf).unwrap().expect("a datagram on loopback")
}

#[test]
fn loopback_round_trip_with_kernel_timestamp() {
    let mut g = group_socket(LOCAL_ANY_PORT, None, NAMES).unwrap();
    let c = control_socket(LOCAL_ANY_PORT, None, 1, NAMES).unwrap();
    let to = g.local_addr().unwrap();
    let mut buf = [0u8; 64];
    assert!(g.recv(&mut buf).unwrap().is_none(), "nothing queued yet");
    let before = realtime_ns();
    c.send_to(b"hello", to.into()).unwrap();
    let d = recv_one(&mut g, &mut buf);
    let after = realtime_ns();
    assert_eq!(&buf[..d.len], b"hello");
    assert_eq!(d.from.port(), c.local_addr().unwrap().port());
    let stamp = d.kernel_real_ns.expect("a kernel receive stamp");
    assert!(
        before <= stamp && stamp <= after,
        "{before} {stamp} {after}"
    );
    assert!(!d.truncated);
}

#[test]
fn a_datagram_larger_than_the_buffer_is_reported_cut() {
    let mut g = group_socket(LOCAL_ANY_PORT, None, NAMES).unwrap();
    let c = control_socket(LOCAL_ANY_PORT, None, 1, NAMES).unwrap();
    let to: SocketAddr = g.local_addr().unwrap().into();
    let mut buf = [0u8; 64];
    c.send_to(&[7u8; 100], to).unwrap();
    let d = recv_one(&mut g, &mut buf);
    assert!(d.truncated);
    assert_eq!(d.len, 64);
    // The next datagram is whole again: the cut one is gone.
    c.send_to(b"whole", to).unwrap();
    let d = recv_one(&mut g, &mut buf);
    assert_eq!((&buf[..d.len], d.truncated), (&b"whole"[..], false));
}

#[test]
fn drain_is_bounded_and_stamps_arrivals_on_the_monotonic_clock() {
    let mut g = group_socket(LOCAL_ANY_PORT, None, NAMES).unwrap();
    let c = control_socket(LOCAL_ANY_PORT, None, 1, NAMES).unwrap();
    let to: SocketAddr = g.local_addr().unwrap().into();
    let from = c.local_addr().unwrap().port();
    let t0 = monotonic_ns();
    for i in 0..3u8 {
        c.send_to(&[i], to).unwrap();
    }
    let mut seen = Vec::new();
    // Loopback has normally queued all three when send_to returns; a
    // delivery the kernel deferred is waited for.
    let mut calls = 0;
    while seen.len() < 3 && calls < 100 {
        wait_readable(&[&g], 1_000_000_000);
        let d = g.drain(2, |data, a, at| {
            assert_eq!(a.port(), from);
            assert!(t0 <= at.mono_ns && at.mono_ns <= monotonic_ns());
            seen.push(data[0]);
        });
        assert!(d.handled <= 2, "at most `max` per call: {d:?}");
        assert!(d.truncated == 0 && d.error.is_none(), "{d:?}");
        calls += 1;
    }
    assert_eq!(seen, [0, 1, 2]);
    assert!(
        calls >= 2,
        "three datagrams took {calls} drains of at most 2"
    );
    let d = g.drain(2, |_, _, _| panic!("nothing more was sent"));
    assert_eq!(d.handled, 0);
}

#[test]
fn multicast_on_loopback_reaches_a_joined_group_socket() {
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 13), 0);
    let mut g = group_socket(group, Some("lo"), NAMES).unwrap();
    let port = g.local_addr().unwrap().port();
    let dest = SocketAddrV4::new(*group.ip(), port);
    // TTL 0: the datagram never leaves this host.
    let path = SendPath {
        copies: Vec::new(),
        destination: dest,
        source_ip: None,
        ifname: Some("lo".into()),
        ttl: 0,
        control_port: 0,
        multicast_loop: true,
    };
    let s = sender_socket(&path, NAMES).unwrap();
    s.send_to(b"to the group", dest.into()).unwrap();
    let mut buf = [0u8; 64];
    let d = recv_one(&mut g, &mut buf);
    assert_eq!(&buf[..d.len], b"to the group");
    assert_eq!(d.from.port(), s.local_addr().unwrap().port());
    assert!(d.kernel_real_ns.is_some());
}

#[test]
fn errors_name_the_setting() {
    let e = interface_ipv4("nosuchif0", NAMES).unwrap_err().to_string();
    assert!(
        e.contains("local.ifname \"nosuchif0\": no such interface"),
        "{e}"
    );
    let e = group_socket(
        SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 13), 0),
        Some("nosuchif0"),
        NAMES,
    )
    .err()
    .expect("an unknown interface is refused")
    .to_string();
    assert!(e.contains("no such interface"), "{e}");
    // 192.0.2.1 (TEST-NET-1) is no address of this host: bind fails.
    let dest = SocketAddrV4::new(Ipv4Addr::new(239, 255, 77, 13), 1530);
    let bad = Some(Ipv4Addr::new(192, 0, 2, 1));
    let path = SendPath {
        copies: Vec::new(),
        destination: dest,
        source_ip: bad,
        ifname: None,
        ttl: 1,
        control_port: 0,
        multicast_loop: true,
    };
    let e = sender_socket(&path, NAMES)
        .err()
        .expect("binding to a foreign address is refused")
        .to_string();
    assert!(e.starts_with("binding to source.ip 192.0.2.1: "), "{e}");
}

#[test]
fn transmit_sends_what_poll_returns_to_its_destination() {
    use bark_core::endpoint::Dest;
    let mut group = group_socket(LOCAL_ANY_PORT, None, NAMES).unwrap();
    let mut peer = group_socket(LOCAL_ANY_PORT, None, NAMES).unwrap();
    let mut c = control_socket(LOCAL_ANY_PORT, None, 1, NAMES).unwrap();
    let to_group: SocketAddr = group.local_addr().unwrap().into();
    let to_peer: SocketAddr = peer.local_addr().unwrap().into();
    let mut queue = vec![
        (b"one".as_slice(), Dest::Group),
        (b"two".as_slice(), Dest::To(to_peer)),
        (b"three".as_slice(), Dest::Group),
    ]
    .into_iter();
    let mut outcomes = Vec::new();
    let poll = |buf: &mut [u8]| {
        let (bytes, dest) = queue.next()?;
        buf[..bytes.len()].copy_from_slice(bytes);
        Some((bytes.len(), dest))
    };
    c.transmit(to_group, 2, poll, |r, to| outcomes.push((r.is_ok(), to)));
    assert_eq!(outcomes, [(true, to_group), (true, to_peer)], "at most 2");
    let mut buf = [0u8; 16];
    let d = recv_one(&mut group, &mut buf);
    assert_eq!(&buf[..d.len], b"one");
    let d = recv_one(&mut peer, &mut buf);
    assert_eq!(&buf[..d.len], b"two");
    // The third is still queued at the source, not sent.
    assert_eq!(queue.next().map(|q| q.0), Some(b"three".as_slice()));
    assert!(group.recv(&mut buf).unwrap().is_none());
}

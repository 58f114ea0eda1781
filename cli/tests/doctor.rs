//! `bark doctor` finds what is broken and passes what is not: on the
//! loopback of this host, and (root) in network namespaces this test makes
//! broken on purpose: no multicast route, a firewall dropping the port.

mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A network namespace of this test's own, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("bkdoc{tag}{}", std::process::id() % 100_000);
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap();
        assert!(st.success(), "ip netns add {name}");
        let ns = Netns(name);
        let st = Command::new("ip")
            .args(["-n", &ns.0, "link", "set", "lo", "up"])
            .status()
            .unwrap();
        assert!(st.success());
        ns
    }

    fn doctor(&self, args: &[&str]) -> (Option<i32>, serde_json::Value) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.0,
                bark(),
                "doctor",
                "--no-audio",
                "--output",
                "json",
            ])
            .args(args)
            .output()
            .unwrap();
        let v = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Anything still inside is ours (doctor runs to completion).
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn status_of(v: &serde_json::Value, name: &str) -> String {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map(|c| c["status"].as_str().unwrap().to_string())
        .unwrap_or_else(|| format!("no {name} check in {v}"))
}

#[test]
fn loopback_passes() {
    let net = unique_net();
    let mut a = vec!["doctor", "--no-audio"];
    a.extend(net.iter().map(String::as_str));
    let (st, out, err) = run(&a, T);
    assert_eq!(st.code(), Some(0), "{out}{err}");
    for line in [
        "[ ok ] group",
        "[ ok ] firewall",
        "[ ok ] unicast",
        "[ ok ] ttl",
        "no problem found.",
    ] {
        assert!(out.contains(line), "no {line:?} in:\n{out}");
    }
    a.extend(["--output", "json", "--ttl", "0"]);
    let (_, out, _) = run(&a, T);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["failed"], 0);
    assert_eq!(status_of(&v, "ttl"), "warn");
    for name in ["interface", "route", "modules", "config", "audio-server"] {
        status_of(&v, name);
    }
}

#[test]
fn finds_a_missing_route_and_a_firewall() {
    if !is_root() {
        eprintln!("skipped: needs root for network namespaces");
        return;
    }
    let ns = Netns::new("r");
    // Only a loopback, no routes: nothing to send the group on.
    let (code, v) = ns.doctor(&[]);
    assert_eq!(code, Some(1), "{v}");
    assert_eq!(status_of(&v, "route"), "fail");
    let fix = v["checks"][1]["fix"].as_str().unwrap_or("");
    assert!(fix.contains("ip route add 224.0.0.0/4"), "{v}");
    // With a multicast route on lo, the route is fine and the probes pass.
    let st = Command::new("ip")
        .args(["-n", &ns.0, "route", "add", "224.0.0.0/4", "dev", "lo"])
        .status()
        .unwrap();
    assert!(st.success());
    let lo = ["--local-ifname", "lo"];
    let (code, v) = ns.doctor(&lo);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(status_of(&v, "route"), "ok");
    assert_eq!(status_of(&v, "firewall"), "ok");

    // A firewall dropping the port (nftables inside the namespace only).
    let rules = "add table inet bktest; \
        add chain inet bktest input { type filter hook input priority 0; policy accept; }; \
        add rule inet bktest input udp dport 1530 drop";
    let nft = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", rules])
        .status();
    match nft {
        Ok(s) if s.success() => {
            let (code, v) = ns.doctor(&lo);
            assert_eq!(code, Some(1), "{v}");
            assert_eq!(status_of(&v, "firewall"), "fail");
            assert_eq!(status_of(&v, "firewall-rules"), "warn");
            // Another port is not affected.
            let (code, v) = ns.doctor(&["--local-ifname", "lo", "--port", "1531"]);
            assert_eq!(code, Some(0), "{v}");
        }
        _ => panic!("nft is needed for this test (make deps installs nftables)"),
    }
}

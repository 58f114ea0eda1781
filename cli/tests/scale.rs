//! A small scale run in network namespaces (root): 1 `bark stream` and 4
//! `bark receive`, each in its own namespace on the lab's private bridge
//! (lab/lan.sh), each receiver with its own artificial clock error of
//! several milliseconds and tens of ppm. Checks that every receiver plays
//! the stream in time with the others (clock sync did its work), that the
//! sender sends every packet once whatever the number of receivers
//! (multicast), and that `bark stats` on the sender's host sees everyone.
//! The 32-receiver version with timing figures is cli/bench/scale.sh.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const RECEIVERS: usize = 4;
const SECONDS: f64 = 6.0;
/// Clock errors of the receivers: (offset ns, ppm).
const CLOCKS: [(i64, i32); RECEIVERS] = [
    (3_000_000, 40),
    (-2_500_000, -30),
    (1_700_000, 20),
    (-4_000_000, -50),
];

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn lan_sh() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../lab/lan.sh")
}

/// The lab LAN of this test, torn down (processes and namespaces) when
/// dropped, also when the test fails.
struct Lan {
    id: String,
}

impl Lan {
    fn up(hosts: usize) -> Lan {
        let id = format!("t{}", std::process::id() % 10_000);
        let out = Command::new(lan_sh())
            .args(["up", "--id", &id, "--hosts", &hosts.to_string()])
            .output()
            .unwrap();
        let lan = Lan { id };
        assert!(
            out.status.success(),
            "lan.sh up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        lan
    }

    fn ns(&self, host: usize) -> String {
        format!("bark{}-h{host}", self.id)
    }

    /// `bark ARGS` inside host `host`'s namespace, marked as this run's.
    fn bark(&self, host: usize, args: &[String]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host), "env"])
            .arg(format!("BARK_LAB_RUN={}", self.id))
            .arg(bark())
            .args(args);
        c
    }

    fn eth0_tx_bytes(&self, host: usize) -> u64 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "cat"])
            .arg("/sys/class/net/eth0/statistics/tx_bytes")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new(lan_sh())
            .args(["down", "--id", &self.id])
            .output();
    }
}

/// Needs root (network namespaces): `make test` runs it with `--ignored`,
/// under the lab lock; a plain `cargo test` shows it as ignored.
#[test]
#[ignore = "needs root"]
fn one_sender_four_receivers_in_namespaces() {
    assert!(is_root(), "needs root for network namespaces");
    let dir = scratch("scale");
    let src = dir.join("source.wav");
    write_test_wav(&src, 48_000, SECONDS);
    let lan = Lan::up(RECEIVERS + 1);
    // Children are declared after the LAN, so they are stopped before it
    // goes down.
    let mut rx = Vec::new();
    for (i, (off, ppm)) in CLOCKS.iter().enumerate() {
        let n = i + 1;
        let mut a = s(&[
            "receive",
            "--local-ifname",
            "eth0",
            "--seconds",
            "10",
            "--node-name",
        ]);
        a.push(format!("rx{n}"));
        a.extend(s(&["-o", dir.join(format!("rx{n}.wav")).to_str().unwrap()]));
        a.extend(s(&[
            "--summary",
            dir.join(format!("rx{n}.json")).to_str().unwrap(),
        ]));
        a.push(format!("--test-clock={off},{ppm}"));
        rx.push(Proc::spawn_cmd(
            &format!("rx{n}"),
            &mut lan.bark(n, &a),
            &dir.join(format!("rx{n}.log")),
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    let tx_bytes0 = lan.eth0_tx_bytes(0);
    let mut a = s(&[
        "stream",
        "--local-ifname",
        "eth0",
        "--node-name",
        "sender",
        "--input",
    ]);
    a.push(src.to_str().unwrap().into());
    a.extend(s(&["--record", dir.join("ref.wav").to_str().unwrap()]));
    a.extend(s(&["--summary", dir.join("tx.json").to_str().unwrap()]));
    let mut tx = Proc::spawn_cmd("stream", &mut lan.bark(0, &a), &dir.join("tx.log"));

    std::thread::sleep(Duration::from_secs(3));
    let out = lan
        .bark(
            0,
            &s(&[
                "stats",
                "--local-ifname",
                "eth0",
                "--once",
                "--json",
                "--wait-sec",
                "1.5",
            ]),
        )
        .output()
        .unwrap();
    let snap: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(snap["senders"], 1, "{snap}");
    assert_eq!(snap["receivers"], RECEIVERS, "{snap}");
    for n in snap["nodes"].as_array().unwrap() {
        assert_eq!(n["playing"], true, "{n}");
        if n["role"] == "receiver" {
            // Each receiver found its own clock error (several ms).
            let name = n["name"].as_str().unwrap();
            let i: usize = name[2..].parse().unwrap();
            let off_us = n["clock_offset_us"].as_f64().unwrap();
            let want = -(CLOCKS[i - 1].0 as f64) / 1e3;
            assert!(
                (off_us - want).abs() < 500.0,
                "{name}: offset {off_us} us, want ≈ {want}"
            );
        }
    }

    let (st, _) = tx.wait(Duration::from_secs(20));
    assert!(
        st.success(),
        "stream failed: see {}",
        dir.join("tx.log").display()
    );
    let tx_bytes = lan.eth0_tx_bytes(0) - tx_bytes0;
    for r in &mut rx {
        let (st, _) = r.wait(Duration::from_secs(20));
        assert!(st.success(), "{} failed", r.name);
    }

    // Multicast: every packet left the sender once, for all receivers.
    let txs = read_json(&dir.join("tx.json"));
    let frames = txs["frames_sent"].as_u64().unwrap();
    assert_eq!(frames, (SECONDS * 48_000.0) as u64);
    let sent = txs["tx"]["audio"]["packets"].as_u64().unwrap();
    assert_eq!(
        sent,
        frames.div_ceil(txs["packet_frames"].as_u64().unwrap())
    );
    let audio_bytes = txs["tx"]["audio"]["ip_bytes"].as_u64().unwrap();
    assert!(
        tx_bytes < audio_bytes * 13 / 10,
        "sender sent {tx_bytes} bytes on eth0 for {audio_bytes} bytes of audio"
    );
    assert!(
        tx_bytes > audio_bytes,
        "eth0 counted less than the audio sent"
    );

    let reference = Rec::load(&dir.join("ref.wav"));
    let mut lat = Vec::new();
    for n in 1..=RECEIVERS {
        let sum = read_json(&dir.join(format!("rx{n}.json")));
        let got = sum["rx"]["audio"]["packets"].as_u64().unwrap();
        assert!(got * 100 >= sent * 99, "rx{n} got {got} of {sent}");
        assert!(
            sum["counters"]["lost"].as_u64().unwrap() * 100 <= sent,
            "{sum}"
        );
        assert!(sum["playing_cycles"].as_u64().unwrap() > 900, "{sum}");
        let r = Rec::load(&dir.join(format!("rx{n}.wav")));
        for at in [3.0, 5.0] {
            let (l, corr) = latency_ms(&reference, &r, 0, at, 0.5, 40.0, 8.0);
            assert!(corr > 0.97, "rx{n} at {at}s: correlation {corr}");
            // Unsynchronized, the clock offsets would put this several ms off.
            assert!((l - 40.0).abs() < 1.0, "rx{n} at {at}s: latency {l} ms");
            lat.push(l);
        }
    }
    let spread_us = (lat.iter().cloned().fold(f64::MIN, f64::max)
        - lat.iter().cloned().fold(f64::MAX, f64::min))
        * 1e3;
    eprintln!("scale: latencies (ms) {lat:?}; spread {spread_us:.1} us; sender eth0 {tx_bytes} B for {audio_bytes} B of audio");
}

//! `--key-file` end to end over loopback (multicast on `lo`, TTL 0): a
//! keyed, encrypted `bark stream` plays on a receiver with the same key,
//! and on neither a receiver with another key nor one without a key,
//! whose summaries count why; `bark stats` with the key sees the keyed
//! nodes; `bark keygen` and the key-file checks.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

fn keygen(path: &std::path::Path) -> String {
    let (st, out, err) = run(&["keygen", path.to_str().unwrap()], Duration::from_secs(10));
    assert!(st.success(), "{err}");
    out
}

#[test]
fn keygen_writes_private_files_and_never_overwrites() {
    let dir = scratch("keyed-keygen");
    let k = dir.join("a.key");
    let out = keygen(&k);
    assert!(out.contains("key id "), "{out}");
    let mode = std::fs::metadata(&k).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&k).unwrap();
    let hex = text.lines().last().unwrap();
    assert_eq!(hex.len(), 64);
    assert!(!out.contains(hex), "keygen printed the key");
    let (st, _, err) = run(&["keygen", k.to_str().unwrap()], Duration::from_secs(10));
    assert!(!st.success() && err.contains("never overwrites"), "{err}");
    assert_eq!(std::fs::read_to_string(&k).unwrap(), text);

    // A readable key file is refused with the fix; its bytes never shown.
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = [
        "receive",
        "--seconds",
        "1",
        "--key-file",
        k.to_str().unwrap(),
    ];
    let (st, _, err) = run_net(&a, &unique_net());
    assert!(!st.success(), "loaded a world-readable key file");
    assert!(err.contains("chmod 600") && err.contains("a.key"), "{err}");
    assert!(!err.contains(&hex[..16]));
    // --encrypt without a key is a usage error.
    let (st, _, err) = run(
        &["stream", "--input", "x.wav", "--encrypt"],
        Duration::from_secs(10),
    );
    assert!(!st.success() && err.contains("--key-file"), "{err}");
}

#[test]
fn keyed_stream_plays_only_with_the_same_key() {
    let (dir, net, src) = scratch_with_source("keyed-stream", 48_000, 3.0);
    let (ka, kb) = (dir.join("a.key"), dir.join("b.key"));
    keygen(&ka);
    keygen(&kb);
    let ka_s = ka.to_str().unwrap();

    let mut rx = Vec::new();
    for (name, key) in [("same", Some(&ka)), ("other", Some(&kb)), ("open", None)] {
        let mut node = NodeCmd::receive(&dir, name, "5").named(name).recorded();
        if let Some(k) = key {
            node = node.path("--key-file", k);
        }
        rx.push(node.spawn(&net));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut tx = NodeCmd::stream(&dir, "tx")
        .named("tx-keyed")
        .args(&["--encrypt"])
        .path("--key-file", &ka)
        .path("--input", &src)
        .summary()
        .spawn(&net);

    // While it plays, `bark stats` with the key sees the sender and the
    // receiver with the same key; the other key's status is dropped.
    std::thread::sleep(Duration::from_millis(1500));
    let snap = stats_snapshot(&net, "1.5", &["--key-file", ka_s]);
    let names = node_names(&snap);
    assert!(
        names.contains(&"tx-keyed") && names.contains(&"same"),
        "{snap}"
    );
    assert!(!names.contains(&"other"), "{snap}");
    assert!(snap["auth_dropped"].as_u64().unwrap() > 0, "{snap}");
    let a = ["stats", "--once", "--wait-sec", "1.5", "--key-file", ka_s];
    let (st, table, err) = run_net(&a, &net);
    assert!(st.success(), "{err}");
    assert!(table.contains("dropped by key checks"), "{table}");

    tx.wait_ok(Duration::from_secs(15));
    for r in &mut rx {
        r.wait_ok(Duration::from_secs(15));
    }
    let txs = read_json(&dir.join("tx.json"));
    // The 48-byte trailer costs 6 frames of stereo F32 per packet.
    assert_eq!(txs["packet_frames"].as_u64().unwrap(), 170);
    let sent = txs["tx"]["audio"]["packets"].as_u64().unwrap();
    assert!(
        txs["tx"]["time_reply"]["packets"].as_u64().unwrap() > 50,
        "{txs}"
    );
    // Only the receiver with the same key asked for the time.
    assert_eq!(txs["auth"]["bad_tag"], 0, "{txs}");

    let same = read_json(&dir.join("same.json"));
    assert!(
        same["rx"]["audio"]["packets"].as_u64().unwrap() * 100 >= sent * 98,
        "{same}"
    );
    assert!(same["playing_cycles"].as_u64().unwrap() > 300, "{same}");
    // Of the others on the group, it heard only their status packets.
    let status_of = |n: &serde_json::Value| n["tx"]["status"]["packets"].as_u64().unwrap();
    let other = read_json(&dir.join("other.json"));
    let open = read_json(&dir.join("open.json"));
    assert!(
        same["auth"]["bad_tag"].as_u64().unwrap() <= status_of(&other),
        "{same}"
    );
    assert!(
        same["auth"]["unauthenticated"].as_u64().unwrap() <= status_of(&open),
        "{same}"
    );
    assert_eq!(same["auth"]["replayed"], 0, "{same}");
    let r = Rec::load(&dir.join("same.wav"));
    assert!(
        r.rms(0, 48_000, 96_000) > 0.05,
        "the keyed receiver is silent"
    );

    assert_eq!(other["playing_cycles"], 0, "{other}");
    assert_eq!(other["rx"]["audio"]["packets"], 0, "{other}");
    assert!(
        other["auth"]["bad_tag"].as_u64().unwrap() >= sent,
        "{other}"
    );
    let r = Rec::load(&dir.join("other.wav"));
    assert_eq!(
        r.rms(0, 0, r.frames()),
        0.0,
        "the other key's receiver played"
    );

    assert_eq!(open["playing_cycles"], 0, "{open}");
    assert!(open["auth"]["no_key"].as_u64().unwrap() >= sent, "{open}");
    assert_eq!(open["rx"]["malformed"], 0, "{open}");
    let log = std::fs::read_to_string(dir.join("open.log")).unwrap();
    assert!(
        log.contains("this node has none; set --key-file to their key file"),
        "{log}"
    );
    let warnings = log.lines().filter(|l| l.contains("dropped")).count();
    assert!(warnings <= 2, "warning spam:\n{log}");
}

//! Summarizes one run of cli/bench/scale.sh as one JSON line: sender CPU and
//! bandwidth, clock-sync traffic per receiver, receiver health, what
//! `bark stats` saw, and (when analyzed) skew across every receiver pair.
//!
//!     scale-summary N RUN_DIR SECONDS

use serde_json::{json, Value};
use std::path::Path;

fn load(p: &Path) -> Value {
    std::fs::read_to_string(p)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// min / median / max of a per-receiver figure.
fn spread(rx: &[Value], get: impl Fn(&Value) -> f64) -> Value {
    let mut v: Vec<f64> = rx.iter().map(get).collect();
    v.sort_by(f64::total_cmp);
    json!({ "min": v.first(), "p50": v.get(v.len() / 2), "max": v.last() })
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: scale-summary N RUN_DIR SECONDS");
        std::process::exit(2);
    }
    let n: usize = args[1].parse().expect("N");
    let d = Path::new(&args[2]);
    let secs: f64 = args[3].parse().expect("SECONDS");
    let tx = load(&d.join("tx.json"));
    let eth = load(&d.join("sender-eth0.json"));
    let st = load(&d.join("stats.json"));
    let rx: Vec<Value> = (1..=n)
        .map(|i| load(&d.join(format!("rx{i}.json"))))
        .collect();
    let w = f(&tx["wall_s"]);
    let kbit = |bytes: &Value| f(bytes) * 8.0 / 1e3 / w;
    let per_s = |r: &Value, v: &Value| f(v) / f(&r["wall_s"]);
    let mut res = json!({
        "receivers": n,
        "seconds": secs,
        "sender_cpu_percent": tx["cpu_percent"],
        "sender_audio_kbit_s": kbit(&tx["tx"]["audio"]["ip_bytes"]),
        "sender_audio_packets_s": f(&tx["tx"]["audio"]["packets"]) / w,
        "sender_eth0_tx_kbit_s": kbit(&eth["tx_bytes"]),
        "sender_eth0_tx_packets_s": f(&eth["tx_packets"]) / w,
        // Steady state: a window in the second half, after every
        // receiver's start-up burst. In: time requests plus one status
        // packet per receiver per second.
        "window_s": eth["window"]["seconds"],
        "window_sender_user_percent": 100.0 * f(&eth["window"]["sender_user_s"]) / f(&eth["window"]["seconds"]),
        "window_sender_sys_percent": 100.0 * f(&eth["window"]["sender_sys_s"]) / f(&eth["window"]["seconds"]),
        "window_sender_eth0_tx_kbit_s": f(&eth["window"]["tx_bytes"]) * 8.0 / 1e3 / f(&eth["window"]["seconds"]),
        "window_sender_eth0_tx_packets_s": f(&eth["window"]["tx_packets"]) / f(&eth["window"]["seconds"]),
        "window_sender_eth0_rx_kbit_s": f(&eth["window"]["rx_bytes"]) * 8.0 / 1e3 / f(&eth["window"]["seconds"]),
        "window_sender_eth0_rx_packets_s": f(&eth["window"]["rx_packets"]) / f(&eth["window"]["seconds"]),
        "sender_time_reply_kbit_s": kbit(&tx["tx"]["time_reply"]["ip_bytes"]),
        "sender_time_replies_s": f(&tx["tx"]["time_reply"]["packets"]) / w,
        "sender_sync_kbit_s": kbit(&tx["tx"]["sync"]["ip_bytes"]),
        "sender_sync_s": f(&tx["tx"]["sync"]["packets"]) / w,
        "sender_time_requests_s": f(&tx["rx"]["time_request"]["packets"]) / w,
        "sender_late_cycles": tx["late_cycles"],
        // Repair (--loss, --fec): what the sender added to the stream.
        "sender_resend_kbit_s": kbit(&tx["tx"]["resend"]["ip_bytes"]),
        "sender_fec_kbit_s": kbit(&tx["tx"]["fec"]["ip_bytes"]),
        "sender_nacks_in_s": f(&tx["rx"]["nack"]["packets"]) / w,
        "rx_test_loss_dropped": spread(&rx, |r| f(&r["rx"]["test_loss_dropped"])),
        "rx_repaired": spread(&rx, |r| f(&r["counters"]["repaired"])),
        "rx_late": spread(&rx, |r| f(&r["counters"]["late"])),
        "rx_sync_out_bytes_s": spread(&rx, |r| per_s(r, &r["tx"]["time_request"]["ip_bytes"])),
        "rx_sync_in_bytes_s": spread(&rx, |r| per_s(r, &r["rx"]["time_reply"]["ip_bytes"])),
        "rx_time_requests_s": spread(&rx, |r| per_s(r, &r["tx"]["time_request"]["packets"])),
        "rx_sync_msgs_in_s": spread(&rx, |r| per_s(r, &r["rx"]["sync"]["packets"])),
        "rx_status_out_bytes_s": spread(&rx, |r| per_s(r, &r["tx"]["status"]["ip_bytes"])),
        "rx_cpu_percent": spread(&rx, |r| f(&r["cpu_percent"])),
        "rx_late_cycles": spread(&rx, |r| f(&r["late_cycles"])),
        "rx_lost": spread(&rx, |r| f(&r["counters"]["lost"])),
        "rx_underruns": spread(&rx, |r| f(&r["counters"]["underruns"])),
        "rx_self_reported_abs_sync_error_p99_us": spread(&rx, |r| f(&r["abs_sync_error_us"]["p99"])),
        "stats_saw": { "senders": st["senders"], "receivers": st["receivers"] },
    });
    let an = load(&d.join("analysis.json"));
    if let Some(pairs) = an["pairs"].as_array() {
        let mut p99: Vec<f64> = pairs.iter().map(|p| f(&p["abs_skew_us"]["p99"])).collect();
        let mut mx: Vec<f64> = pairs.iter().map(|p| f(&p["abs_skew_us"]["max"])).collect();
        p99.sort_by(f64::total_cmp);
        mx.sort_by(f64::total_cmp);
        let rxs = an["receivers"].as_array().cloned().unwrap_or_default();
        let mut lat: Vec<f64> = rxs.iter().map(|r| f(&r["latency_ms"]["p50"])).collect();
        lat.sort_by(f64::total_cmp);
        let sum = |k: &str| rxs.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
        let fid = rxs
            .iter()
            .map(|r| f(&r["fidelity"]["min"]))
            .fold(f64::INFINITY, f64::min);
        res["pairs"] = json!(pairs.len());
        res["skew_p99_us_worst_pair"] = json!(p99.last());
        res["skew_p99_us_median_pair"] = json!(p99.get(p99.len() / 2));
        res["skew_max_us_worst_pair"] = json!(mx.last());
        res["latency_ms_p50_range"] = json!([lat.first(), lat.last()]);
        res["dropouts"] = json!(sum("dropouts"));
        res["jumps"] = json!(sum("jumps"));
        res["fidelity_min"] = json!(fid);
    }
    println!("{res}");
}

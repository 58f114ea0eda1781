//! Runs a deterministic simulation scenario and prints per-receiver figures,
//! then the summary line:
//! `sim: scenario=NAME receivers=N converge_ms=X p99_error_us=X max_error_us=X skew_p99_us=X underruns=N`.
//!
//! Usage: `cargo run --release -p bark-core --example simulate -- --scenario wired [--seconds 60]`
//! (`--scenario all` runs every scenario; `--trace N` prints receiver N's
//! clock-estimate error once per simulated second; `--seed N` changes the
//! impairments' random seed; `--no-sync` models a sender without sync
//! messages; `--no-repair` receivers that never ask for lost packets;
//! `--fec K:M` the sender's `bark.fec`; `--receivers N` N receivers, the
//! scenario's repeated, each on its own link; `--latency-ms MS` the session
//! latency). The "sender cpu" line is the wall time of the sender
//! endpoint's own calls ([`sim::run_timed`]): this host's, not
//! deterministic.

use bark_core::sim;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut name = "wired".to_string();
    let mut seconds = None;
    let mut trace = None;
    let mut seed = None;
    let mut sync = true;
    let mut repair = true;
    let mut fec: Option<Option<(u8, u8)>> = None;
    let mut receivers = None;
    let mut latency_ms = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--scenario" => name = args.next().unwrap_or_default(),
            "--seconds" => seconds = args.next().and_then(|s| s.parse::<f64>().ok()),
            "--trace" => trace = args.next().and_then(|s| s.parse::<usize>().ok()),
            "--seed" => seed = args.next().and_then(|s| s.parse::<u64>().ok()),
            "--no-sync" => sync = false,
            "--no-repair" => repair = false,
            "--fec" => fec = args.next().map(|s| bark_core::fec::parse_shape(&s)),
            "--latency-ms" => latency_ms = args.next().and_then(|s| s.parse::<u64>().ok()),
            "--receivers" => receivers = args.next().and_then(|s| s.parse::<usize>().ok()),
            "-h" | "--help" => {
                println!(
                    "usage: simulate --scenario {{{}|all}} [--seconds S] [--trace RECEIVER] [--seed N] [--no-sync] [--no-repair] [--fec off|K:M] [--receivers N] [--latency-ms MS]",
                    sim::SCENARIOS.join("|")
                );
                return;
            }
            other => {
                eprintln!("simulate: unknown argument {other:?} (try --help)");
                std::process::exit(2);
            }
        }
    }
    let names: Vec<&str> = if name == "all" {
        sim::SCENARIOS.to_vec()
    } else {
        vec![name.as_str()]
    };
    for n in names {
        let Some(mut sc) = sim::scenario(n) else {
            eprintln!(
                "simulate: unknown scenario {n:?}; known: {}",
                sim::SCENARIOS.join(", ")
            );
            std::process::exit(2);
        };
        if let Some(s) = seconds {
            sc.duration_s = s;
        }
        if let Some(s) = seed {
            sc.seed = s;
        }
        if let Some(ms) = latency_ms {
            sc.latency_ns = ms * 1_000_000;
        }
        if let Some(f) = fec {
            sc.fec = f;
        }
        if let Some(n) = receivers {
            // More receivers like the scenario's, cycling through them.
            let base = sc.receivers.clone();
            sc.receivers = (0..n).map(|i| base[i % base.len()].clone()).collect();
        }
        sc.sync = sync;
        sc.repair = repair;
        let started = std::time::Instant::now();
        let (report, sender_cpu_ns) = sim::run_timed(&sc, trace);
        let c = &report.sender;
        println!(
            "  sender: audio {} B, resends {} B ({} packets), fec {} B ({} packets), nacks in {}",
            c.tx_audio.bytes,
            c.tx_resend.bytes,
            c.tx_resend.packets,
            c.tx_fec.bytes,
            c.tx_fec.packets,
            c.rx_nack.packets
        );
        println!(
            "  sender cpu: {:.1} ms in its endpoint over {} simulated s ({:.3} % of a core; wall time, this host)",
            sender_cpu_ns as f64 / 1e6,
            sc.duration_s,
            sender_cpu_ns as f64 / (sc.duration_s * 1e9) * 100.0
        );
        for (i, r) in report.receivers.iter().enumerate() {
            println!(
                "  rx{i}: converge_ms={} p99_us={:.2} p99_2nd_half_us={:.2} max_us={:.2} mean_us={:.2} frames={} underruns={} concealed={} jumps={} lost={} late={} dup={} audio_sent={} audio_dropped={}",
                r.converge_ms.map_or("never".into(), |c| format!("{c:.1}")),
                r.p99_error_us, r.p99_second_half_us, r.max_error_us, r.mean_error_us, r.frames, r.underruns, r.concealed, r.jumps, r.lost, r.late, r.duplicated, r.audio_sent, r.audio_dropped
            );
            println!(
                "    repair: nacks={} resent={} fec_recovered={} fec_blocks={}",
                r.repair.nacks, r.repair.resent, r.fec.recovered, r.fec.blocks
            );
            if let Some(ppm) = r.estimator_ppm {
                // The adapter's estimator (rate-match loop, frame clock).
                println!(
                    "    estimator: ppm={ppm:.2} restarts={}",
                    r.estimator_restarts
                );
            }
            for o in &r.onsets {
                println!(
                    "    onset at {:.3} s: clipped_ms={} error_us={:.1}",
                    o.due_s,
                    o.clipped_ms.map_or("all".into(), |c| format!("{c:.3}")),
                    o.error_us
                );
            }
        }
        if report.latency.len() > 1 {
            let steps: Vec<String> = report
                .latency
                .iter()
                .map(|(t, l)| format!("{:.1}s:{}ms", t, *l as f64 / 1e6))
                .collect();
            println!("  session latency: {}", steps.join(" "));
        }
        println!(
            "  wall: {:.2} s for {} simulated s",
            started.elapsed().as_secs_f64(),
            sc.duration_s
        );
        println!("{report}");
    }
}

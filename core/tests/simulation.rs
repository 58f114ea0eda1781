//! The deterministic simulation's acceptance criteria, per scenario, in
//! simulated time: exact and repeatable.

use bark_core::sim::{run, scenario, Report, SCENARIOS};

fn check(name: &str) -> Report {
    let sc = scenario(name).expect("known scenario");
    let r = run(&sc);
    println!("{r}");
    for (i, rx) in r.receivers.iter().enumerate() {
        let c = rx.converge_ms.unwrap_or(f64::INFINITY);
        assert!(c <= 2000.0, "{name} rx{i}: converged after {c} ms");
        assert!(
            rx.p99_error_us <= 50.0,
            "{name} rx{i}: p99 |error| {} µs",
            rx.p99_error_us
        );
        assert!(
            rx.max_error_us <= 250.0,
            "{name} rx{i}: max |error| {} µs",
            rx.max_error_us
        );
        // Several seconds of measured audio per receiver, not a vacuous pass.
        assert!(
            rx.frames > 48_000 * 20,
            "{name} rx{i}: only {} frames measured",
            rx.frames
        );
    }
    r
}

#[test]
fn wired() {
    let r = check("wired");
    assert_eq!(r.underruns(), 0);
    for rx in &r.receivers {
        assert_eq!(rx.jumps, 1, "one start-up jump, no resyncs");
        assert_eq!(rx.concealed, 0);
    }
}

#[test]
fn busy() {
    let r = check("busy");
    for rx in &r.receivers {
        // Loss is concealed, duplicates are caught, and nothing resyncs.
        assert!(
            rx.concealed > 0 && rx.lost > 0 && rx.duplicated > 0,
            "{rx:?}"
        );
        assert!(rx.jumps <= 2, "resync storm: {} jumps", rx.jumps);
    }
}

#[test]
fn drift() {
    let r = check("drift");
    assert_eq!(r.underruns(), 0);
    assert!(r.skew_p99_us <= 50.0, "skew p99 {} µs", r.skew_p99_us);
}

#[test]
fn restart() {
    let r = check("restart");
    for rx in &r.receivers {
        assert_eq!(rx.jumps, 2, "start and the new session");
    }
}

#[test]
fn join() {
    let r = check("join");
    assert_eq!(r.receivers.len(), 4);
    assert_eq!(r.underruns(), 0);
}

/// With sync messages, a receiver's time requests after its start-up fall
/// to a few per second (2 quiet, 10 busy, against 40 and 100), so the
/// sender's clock-sync work no longer grows with the receivers; without
/// them (an older sender) receivers keep the full pace.
#[test]
fn sync_messages_make_time_requests_sparse() {
    for name in ["wired", "busy"] {
        let with = run(&scenario(name).unwrap());
        // receiver::SYNC_SLOW_INTERVAL_NS and SYNC_BUSY_INTERVAL_NS: 2 and
        // 10 per second.
        let bound = if name == "busy" { 10.5 } else { 2.5 };
        for (i, rx) in with.receivers.iter().enumerate() {
            assert!(
                rx.requests_per_s > 0.5 && rx.requests_per_s <= bound,
                "{name} rx{i}: {} requests/s with sync messages",
                rx.requests_per_s
            );
        }
        let mut sc = scenario(name).unwrap();
        sc.sync = false;
        let without = run(&sc);
        println!("{name}: with sync {with}\n{name}: without {without}");
        // 40 per second, up to 100 while the network counts as busy
        // (receiver::SLOW_INTERVAL_NS, BUSY_INTERVAL_NS).
        for (i, rx) in without.receivers.iter().enumerate() {
            assert!(
                rx.requests_per_s > 36.0 && rx.requests_per_s < 105.0,
                "{name} rx{i}: {} requests/s without sync messages",
                rx.requests_per_s
            );
            assert!(rx.p99_error_us <= 60.0, "{name} rx{i} without sync: {rx:?}");
        }
    }
}

#[test]
fn summary_line_has_the_scripted_form() {
    let mut sc = scenario("wired").unwrap();
    sc.duration_s = 5.0;
    let line = run(&sc).to_string();
    let keys: Vec<&str> = line
        .strip_prefix("sim: ")
        .expect("prefix")
        .split(' ')
        .map(|kv| kv.split('=').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "scenario",
            "receivers",
            "converge_ms",
            "p99_error_us",
            "max_error_us",
            "skew_p99_us",
            "underruns",
            "requests_per_s"
        ]
    );
    assert!(SCENARIOS.iter().all(|n| scenario(n).is_some()));
    assert!(scenario("nope").is_none());
}

//! The command line: help and man pages document every flag with units and
//! defaults, and bad input gives a clear error and a non-zero exit.

mod common;
use common::*;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

#[test]
fn help_shows_units_and_defaults() {
    let wanted: [(&str, &[&str]); 3] = [
        (
            "stream",
            &[
                "--destination-ip <IPV4[,IPV4...]>",
                "[default: 239.255.66.66]",
                "--latency-msec <MS>",
                "[default: 40]",
                "--port <PORT>",
                "[default: 1530]",
                "--mtu <BYTES>",
                "--ttl <HOPS>",
                "--multicast-loop <BOOL>",
                "--loop",
                "--rate <HZ>",
                "[default: 48000]",
                "--format <FORMAT>",
                "--priority <N>",
                "--latency-max-msec <MS>",
                "[default: 1000]",
                "--lead-in-msec <MS>",
                "[default: 500]",
            ],
        ),
        (
            "receive",
            &[
                "--delay-msec <MS>",
                "--output <FILE.wav|null>",
                "--quantum <FRAMES>",
                "--stream <NAME>",
            ],
        ),
        (
            "stats",
            &[
                "--once",
                "--json",
                "--metrics-listen <ADDR>",
                "--interval-msec <MS>",
                "[default: 250]",
            ],
        ),
    ];
    for (cmd, needles) in wanted {
        let (st, out, err) = run(&[cmd, "--help"], T);
        assert!(st.success(), "{cmd} --help: {err}");
        for needle in needles {
            assert!(
                out.contains(needle),
                "{cmd} --help lacks {needle:?}:\n{out}"
            );
        }
        // The test-only clock stays out of the help.
        assert!(!out.contains("test-clock"), "{cmd} --help:\n{out}");
    }
}

#[test]
fn man_pages_are_written() {
    let dir = scratch("man");
    let (st, _, err) = run(&["man", "--dir", dir.to_str().unwrap()], T);
    assert!(st.success(), "{err}");
    let page = std::fs::read_to_string(dir.join("bark-receive.1")).unwrap();
    assert!(page.starts_with(".ie") || page.contains(".TH"), "{page}");
    assert!(page.contains("delay\\-msec"));
}

#[test]
fn bad_flags_and_inputs_are_clear_errors() {
    for (args, code, needle) in [
        (
            vec!["stream", "--input", "x.wav", "--rate", "1000"],
            2,
            "8000..=192000",
        ),
        (
            vec!["stream", "--input", "x.wav", "--channels", "0"],
            2,
            "--channels",
        ),
        (
            vec!["stream", "--input", "x.wav", "--format", "mp3"],
            2,
            "F32, S24, S16",
        ),
        (vec!["stream"], 2, "--input"),
        (
            vec!["receive", "--output", "out.flac"],
            2,
            "FILE.wav or null",
        ),
        (vec!["receive", "--delay-msec", "-3000"], 2, "-2000..=2000"),
        (vec!["stats", "--wait-sec", "abc"], 2, "number of seconds"),
        (vec!["nosuch"], 2, "unrecognized subcommand"),
        (
            vec![
                "stream",
                "--input",
                "/nonexistent/file.wav",
                "--local-ifname",
                "lo",
                "--ttl",
                "0",
            ],
            1,
            "/nonexistent/file.wav",
        ),
        (
            vec![
                "stream",
                "--input",
                "-",
                "--loop",
                "--local-ifname",
                "lo",
                "--ttl",
                "0",
            ],
            1,
            "--loop needs a file",
        ),
        (
            vec!["receive", "--local-ifname", "nosuchif0", "--seconds", "1"],
            1,
            "no such interface",
        ),
        (
            vec![
                "stats",
                "--local-ifname",
                "lo",
                "--quiet-sec",
                "10",
                "--drop-sec",
                "5",
                "--once",
            ],
            1,
            "--drop-sec",
        ),
        // Without a terminal the live view cannot run.
        (vec!["stats", "--local-ifname", "lo"], 1, "not a terminal"),
    ] {
        let (st, _, err) = run(&args, T);
        assert_eq!(st.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    // An input that is not audio.
    let dir = scratch("badinput");
    let junk = dir.join("junk.mp3");
    std::fs::write(&junk, vec![0x55u8; 4096]).unwrap();
    let (st, _, err) = run(
        &[
            "stream",
            "--input",
            junk.to_str().unwrap(),
            "--local-ifname",
            "lo",
            "--ttl",
            "0",
        ],
        T,
    );
    assert_eq!(st.code(), Some(1));
    assert!(err.contains("junk.mp3"), "{err}");
}

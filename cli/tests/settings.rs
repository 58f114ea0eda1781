//! One settings table, one refusal: the same out-of-range values go to
//! every front end (the PipeWire modules' argument parser, bark-pulse's
//! flags and TOML keys, the `bark` CLI's flags, and the core's own
//! checks), and each refuses with the table's message, naming the value
//! the way it was given.

use bark_core::settings::{self, Role};
use bark_pulse::config::{ConfigFile, SinkConfig, SourceConfig};
use bark_pw_module::args::{SinkArgs, SourceArgs};
use clap::Parser;
use std::collections::HashMap;

/// Role, module argument, value: each outside its limits or not a value
/// of its type.
const CASES: &[(Role, &str, &str)] = &[
    (Role::Source, "bark.delay.msec", "3000"),
    (Role::Source, "bark.delay.msec", "-2000.5"),
    (Role::Sink, "sess.latency.msec", "20000"),
    (Role::Source, "sess.latency.msec", "20000"),
    (Role::Sink, "bark.latency.max-msec", "20000"),
    (Role::Sink, "audio.channels", "9"),
    (Role::Source, "audio.channels", "0"),
    (Role::Sink, "audio.rate", "1000"),
    (Role::Source, "audio.rate", "384000"),
    (Role::Sink, "net.mtu", "50"),
    (Role::Sink, "bark.priority", "200"),
    (Role::Sink, "net.ttl", "256"),
    (Role::Sink, "destination.port", "0"),
    (Role::Source, "source.port", "70000"),
    (Role::Sink, "audio.format", "U8"),
    (Role::Sink, "net.loop", "maybe"),
    (Role::Sink, "destination.ip", "0.0.0.0"),
    (Role::Sink, "destination.ip", "::1"),
    (Role::Source, "source.ip", "255.255.255.255"),
    (Role::Sink, "bark.control.port", "65536"),
    (Role::Source, "bark.sender", "10.0.0.1"),
    (Role::Source, "bark.sender", "10.0.0.1:0"),
    (Role::Source, "bark.sender", "0.0.0.0:4010"),
    (Role::Source, "bark.sender", "239.255.66.66:4010"),
    (Role::Source, "bark.channels", "XX"),
    (Role::Source, "bark.channels", "left"),
    (Role::Source, "bark.channels", "FL,FL"),
];

/// The PipeWire module's refusal.
fn module(role: Role, key: &str, value: &str) -> String {
    let m = HashMap::from([(key.to_owned(), value.to_owned())]);
    match role {
        Role::Sink => SinkArgs::parse(&m).map(drop),
        Role::Source => SourceArgs::parse(&m).map(drop),
    }
    .expect_err("accepted")
}

/// bark-pulse's refusal of `--NAME VALUE` (or of the file's `NAME = VALUE`
/// when `toml`).
fn pulse(role: Role, name: &str, value: &str, toml: bool) -> String {
    let r = role.name();
    let (argv, file) = if toml {
        let quoted = value
            .parse::<f64>()
            .map_or(format!("{value:?}"), |_| value.into());
        (vec!["bark-pulse", r], format!("[{r}]\n{name} = {quoted}\n"))
    } else {
        let flag = format!("--{name}={value}");
        (vec!["bark-pulse", r, flag.leak()], String::new())
    };
    let file = ConfigFile::parse(&file, "test.toml").unwrap();
    match bark_pulse::flags::Cli::try_parse_from(argv).unwrap().role {
        bark_pulse::flags::Role::Sink(f) => SinkConfig::resolve(&f, &file).map(drop),
        bark_pulse::flags::Role::Source(f) => SourceConfig::resolve(&f, &file).map(drop),
        bark_pulse::flags::Role::Man(_) => unreachable!(),
    }
    .expect_err("accepted")
}

/// The `bark` CLI's refusal (clap's message).
fn cli(role: Role, flag: &str, value: &str) -> String {
    let flag = format!("--{flag}={value}");
    let argv = match role {
        Role::Sink => vec!["bark", "stream", "--input", "x.wav", &flag],
        Role::Source => vec!["bark", "receive", &flag],
    };
    bark_cli::cli::Cli::try_parse_from(argv)
        .map(drop)
        .expect_err("accepted")
        .to_string()
}

/// The core's refusal of a configuration holding the value, where the core
/// has the setting.
fn core(key: &str, value: &str) -> Option<String> {
    use bark_core::{endpoint::SenderEndpoint, AudioFormat, Receiver, ReceiverConfig, Sender};
    let int = || value.parse::<i64>().ok();
    let ns = || value.parse::<f64>().ok().map(|ms| (ms * 1e6) as i64);
    let e = match key {
        "bark.delay.msec" => Receiver::new(ReceiverConfig {
            delay_ns: ns()?,
            ..Default::default()
        })
        .err(),
        "sess.latency.msec" | "bark.latency.max-msec" => {
            let mut c = bark_core::SenderConfig::default();
            let l = u64::try_from(ns()?).ok()?;
            *(if key == "sess.latency.msec" {
                &mut c.latency_ns
            } else {
                &mut c.max_latency_ns
            }) = l;
            Sender::new(c).err()
        }
        "audio.rate" => AudioFormat {
            rate: u32::try_from(int()?).ok()?,
            ..Default::default()
        }
        .validate()
        .err(),
        "audio.channels" => AudioFormat {
            channels: u8::try_from(int()?).ok()?,
            ..Default::default()
        }
        .validate()
        .err(),
        "net.mtu" => SenderEndpoint::new(
            bark_core::SenderConfig {
                mtu: usize::try_from(int()?).ok()?,
                ..Default::default()
            },
            None,
            false,
            1,
        )
        .err(),
        _ => return None,
    };
    Some(e.expect("accepted").to_string())
}

#[test]
fn every_front_end_refuses_the_same_values_with_the_same_message() {
    let mut core_checked = 0;
    for &(role, key, value) in CASES {
        let s = settings::find(role, key);
        let why = s.parse(value).expect_err("not a refused value");
        assert_eq!(module(role, key, value), format!("{key} = {value}: {why}"));
        if let Some(name) = s.pulse {
            let flag = pulse(role, name, value, false);
            assert_eq!(flag, format!("--{name} {value}: {why}"), "bark-pulse flag");
            let toml = pulse(role, name, value, true);
            assert_eq!(toml, format!("{}.{name} = {value}: {why}", role.name()));
        }
        if let Some(flag) = s.cli {
            let e = cli(role, flag, value);
            assert!(
                e.contains(&format!("invalid value '{value}' for '--{flag} <"))
                    && e.contains(&format!(">': {why}\n")),
                "bark --{flag}={value}: {e} (want {why:?})"
            );
        }
        if let Some(e) = core(key, value) {
            let want = format!("invalid configuration: {key} = {value}: {why}");
            assert_eq!(e, want, "core");
            core_checked += 1;
        }
    }
    assert!(core_checked >= 8, "the core saw {core_checked} cases");
}

/// The brief's examples, spelled out, so that a change of wording in the
/// table shows here.
#[test]
fn the_refusals_read_well() {
    for (role, message) in [
        (
            Role::Source,
            "bark.delay.msec = 3000: must be within -2000..=2000 ms",
        ),
        (
            Role::Sink,
            "sess.latency.msec = 20000: must be within 0..=2000 ms",
        ),
        (Role::Sink, "audio.channels = 9: must be within 1..=8"),
        (
            Role::Sink,
            "audio.rate = 1000: must be within 8000..=192000 Hz",
        ),
        (Role::Sink, "net.mtu = 50: must be within 168..=65507 bytes"),
        (Role::Sink, "bark.priority = 200: must be within -128..=127"),
    ] {
        let (key, rest) = message.split_once(" = ").unwrap();
        let value = rest.split_once(':').unwrap().0;
        assert_eq!(module(role, key, value), message);
    }
    assert_eq!(
        cli(Role::Source, "delay-msec", "3000").lines().next(),
        Some("error: invalid value '3000' for '--delay-msec <MS>': must be within -2000..=2000 ms")
    );
    let e = pulse(Role::Source, "delay-msec", "3000", false);
    assert_eq!(e, "--delay-msec 3000: must be within -2000..=2000 ms");
}

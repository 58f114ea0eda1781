//! Parsers for the text doctor reads: /proc files, `ip route get`, and
//! PipeWire module arguments. Pure functions of their input.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// Interfaces on which `group` is joined, with their user counts, from
/// the text of /proc/net/igmp.
pub fn igmp_joined(text: &str, group: Ipv4Addr) -> Vec<(String, u32)> {
    let mut dev = String::new();
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        if !line.starts_with('\t') {
            // "1\tlo        :     1      V3"
            dev = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .trim_end_matches(':')
                .to_string();
            continue;
        }
        let mut f = line.split_whitespace();
        let (Some(hex), Some(users)) = (f.next(), f.next()) else {
            continue;
        };
        // The kernel prints the network-order address as a host integer.
        let Ok(v) = u32::from_str_radix(hex, 16) else {
            continue;
        };
        if Ipv4Addr::from(v.to_ne_bytes()) == group {
            out.push((dev.clone(), users.parse().unwrap_or(0)));
        }
    }
    out
}

/// The device in `ip -o route get` output ("... dev eth0 src ...").
pub fn route_dev(out: &str) -> Option<String> {
    let mut w = out.split_whitespace();
    w.find(|t| *t == "dev")?;
    w.next().map(String::from)
}

/// The real uid in the text of /proc/PID/status.
pub fn status_uid(text: &str) -> Option<u32> {
    text.lines()
        .find(|l| l.starts_with("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The version after "libpipewire" in `pw-cli --version` or `pipewire
/// --version` output: the "Linked with" line when present (what runs),
/// else "Compiled with".
pub fn linked_version(out: &str) -> Option<String> {
    let pick = |key: &str| {
        out.lines()
            .find(|l| l.contains(key) && l.contains("libpipewire"))
            .and_then(|l| l.split_whitespace().last())
            .map(String::from)
    };
    pick("Linked").or_else(|| pick("libpipewire"))
}

/// The top-level scalar arguments of a PipeWire module's `args` string,
/// key to value, e.g. `{ bark.delay.msec = -20 node.name = "x" }`.
///
/// The string is SPA JSON, a relaxed JSON (bare words, `=` or `:`
/// between key and value, optional commas, `#` comments, which conf
/// files carry into `args`) that no Rust crate parses; only the top level
/// is needed, so this tokenises it. Nested objects and arrays are skipped.
pub fn module_args(args: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let tokens = spa_tokens(args);
    // PipeWire also accepts the outer braces left out.
    let mut depth = usize::from(!matches!(tokens.first(), Some(Tok::Open)));
    let mut key: Option<String> = None;
    for tok in tokens {
        match tok {
            Tok::Open => {
                if depth == 1 {
                    key = None;
                }
                depth += 1;
            }
            Tok::Close => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 1 => match key.take() {
                None => key = Some(w),
                Some(k) => {
                    out.insert(k, w);
                }
            },
            Tok::Word(_) => {}
        }
    }
    out
}

enum Tok {
    Open,
    Close,
    Word(String),
}

fn spa_tokens(s: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        match c {
            '{' | '[' => out.push(Tok::Open),
            '}' | ']' => out.push(Tok::Close),
            '#' => {
                for c in it.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' => {
                let mut w = String::new();
                while let Some(c) = it.next() {
                    match c {
                        '\\' => w.extend(it.next()),
                        '"' => break,
                        c => w.push(c),
                    }
                }
                out.push(Tok::Word(w));
            }
            c if c.is_whitespace() || matches!(c, '=' | ':' | ',') => {}
            c => {
                let mut w = String::from(c);
                while let Some(&n) = it.peek() {
                    if n.is_whitespace() || "{}[]=:,\"#".contains(n) {
                        break;
                    }
                    w.push(n);
                    it.next();
                }
                out.push(Tok::Word(w));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_endian = "little")] // the kernel prints host-order integers
    fn finds_igmp_memberships_per_device() {
        let text = include_str!("../../tests/fixtures/doctor/igmp.txt");
        assert_eq!(
            igmp_joined(text, Ipv4Addr::new(239, 255, 66, 66)),
            [("eth0".to_string(), 2)]
        );
        assert_eq!(
            igmp_joined(text, Ipv4Addr::new(224, 0, 0, 1)),
            [("lo".to_string(), 1), ("eth0".to_string(), 1)]
        );
        assert!(igmp_joined(text, Ipv4Addr::new(239, 1, 1, 1)).is_empty());
        assert!(igmp_joined("", Ipv4Addr::new(224, 0, 0, 1)).is_empty());
    }

    #[test]
    fn reads_route_device_and_uid() {
        let out = "multicast 239.255.66.66 dev eth0 src 192.0.2.2 uid 0 \\    cache <mc> \n";
        assert_eq!(route_dev(out).as_deref(), Some("eth0"));
        assert_eq!(route_dev("RTNETLINK answers: Network is unreachable"), None);
        let status = "Name:\tpipewire\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\n";
        assert_eq!(status_uid(status), Some(1000));
        assert_eq!(status_uid("Name:\tx\n"), None);
    }

    #[test]
    fn reads_the_linked_library_version() {
        let v = "pw-cli\nCompiled with libpipewire 1.4.1\nLinked with libpipewire 1.4.2\n";
        assert_eq!(linked_version(v).as_deref(), Some("1.4.2"));
        let old = "pipewire\nCompiled with libpipewire 0.3.65\n";
        assert_eq!(linked_version(old).as_deref(), Some("0.3.65"));
        assert_eq!(linked_version("bash: pw-cli: command not found"), None);
    }

    #[test]
    fn reads_top_level_module_args() {
        // As PipeWire stores them: the conf text between the braces,
        // comments and nested objects included.
        let args = "{ source.ip = 127.0.0.1 source.port = 1599 bark.delay.msec = -20.5\n  \
                    # bark.delay.msec = 99\n  \
                    stream.props = { target.object = dsp node.latency = 256/48000 }\n  \
                    node.name = \"kitchen \\\"left\\\"\", audio.position: [ FL FR ] media.class=Audio/Source }";
        let m = module_args(args);
        assert_eq!(m.get("bark.delay.msec").map(String::as_str), Some("-20.5"));
        assert_eq!(m.get("source.port").map(String::as_str), Some("1599"));
        assert_eq!(
            m.get("node.name").map(String::as_str),
            Some("kitchen \"left\"")
        );
        assert_eq!(
            m.get("media.class").map(String::as_str),
            Some("Audio/Source")
        );
        // Nested values are not top-level arguments.
        assert!(!m.contains_key("target.object"));
        assert!(!m.contains_key("stream.props"));
        assert!(module_args("").is_empty());
        let bare = module_args("bark.delay.msec=5 node.name=x");
        assert_eq!(bare.get("bark.delay.msec").map(String::as_str), Some("5"));
    }
}

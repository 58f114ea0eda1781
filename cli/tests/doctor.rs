//! `bark doctor`.
//!
//! `doctor_judge`: the verdicts, from fixed facts (samples of /proc files
//! and of `pw-dump` from PipeWire 0.3.65 and 1.4.2, in fixtures/doctor/):
//! nothing of this host is read. `doctor_live`: the binary on this host's
//! loopback, and (root) in network namespaces this test makes broken on
//! purpose: no multicast route, a firewall dropping the port.

mod common;

/// Verdicts from fixed facts.
mod doctor_judge {
    use bark_cli::doctor::facts::{AudioFacts, Daemon, Facts, Iface, Probe, ReceiverReport};
    use bark_cli::doctor::{judge, render_text, Check, Status};
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::path::PathBuf;

    fn fixture(name: &str) -> String {
        let p = format!(
            "{}/tests/fixtures/doctor/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    const ETH0: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const ETH1: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
    const UNREACHABLE: &str = "Network is unreachable (os error 101)";

    fn iface(name: &str, ip: Ipv4Addr, loopback: bool) -> Iface {
        Iface {
            name: name.into(),
            ip: Some(ip),
            prefix: if loopback { 8 } else { 24 },
            up: true,
            multicast: true,
            loopback,
        }
    }

    fn daemon(name: &str) -> Daemon {
        Daemon {
            name: name.into(),
            uid: 1000,
        }
    }

    fn version_output(prog: &str, v: &str) -> Option<String> {
        Some(format!(
            "{prog}\nCompiled with libpipewire {v}\nLinked with libpipewire {v}\n"
        ))
    }

    /// A healthy receiver host on Debian 12: eth0 routes the group, the
    /// probes pass, PipeWire 0.3.65 plays bark_source straight into the
    /// speaker.
    fn healthy() -> Facts {
        let mut f = Facts::new(SocketAddrV4::new(Ipv4Addr::new(239, 255, 66, 66), 1530));
        f.ifaces = vec![
            iface("eth0", ETH0, false),
            iface("lo", Ipv4Addr::LOCALHOST, true),
        ];
        f.route.by_table = Ok(ETH0);
        f.route.ip_route_get = Some(
            "multicast 239.255.66.66 dev eth0 src 192.0.2.2 uid 1000 \\    cache <mc> \n".into(),
        );
        f.igmp = Some(fixture("igmp.txt"));
        f.join = Some(Ok(()));
        f.multicast_probe = Some(Probe::Arrived);
        f.unicast_probe = Some((ETH0, Probe::Arrived));
        f.rmem_max = Some("4194304\n".into());
        f.module_files = vec![PathBuf::from(
            "/usr/lib/x86_64-linux-gnu/pipewire-0.3/libpipewire-module-bark-source.so",
        )];
        f.dropins = vec![(
            PathBuf::from("/home/u/.config/pipewire/pipewire.conf.d/bark-source.conf"),
            "context.modules = [ { name = libpipewire-module-bark-source } ]".into(),
        )];
        f.daemons = ["pipewire", "pipewire-pulse", "wireplumber"]
            .map(daemon)
            .to_vec();
        f.uid = 1000;
        f.pw_cli_version = version_output("pw-cli", "0.3.65");
        f.pipewire_version = version_output("pipewire", "0.3.65");
        set_dump(&mut f, &fixture("pw-dump-0.3.65-direct.json"));
        f
    }

    /// How a case's facts differ from [`healthy`].
    type Edit = fn(&mut Facts);

    /// [`healthy`] facts with `edit` made.
    fn edited(edit: Edit) -> Facts {
        let mut f = healthy();
        edit(&mut f);
        f
    }

    /// The audio server answered `pw-dump` with `dump`.
    fn set_dump(f: &mut Facts, dump: &str) {
        f.audio = Some(AudioFacts {
            pw_dump: Some(Ok(dump.to_string())),
            ..AudioFacts::default()
        });
    }

    /// A pw-dump fixture with one node's `info` fields changed.
    fn node_edited(name: &str, node: &str, edit: impl Fn(&mut serde_json::Value)) -> String {
        let mut v: serde_json::Value = serde_json::from_str(&fixture(name)).unwrap();
        let o = v
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|o| o["info"]["props"]["node.name"] == node)
            .unwrap();
        edit(&mut o["info"]);
        v.to_string()
    }

    /// A pw-dump fixture without its links.
    fn unlinked(dump: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(dump).unwrap();
        v.as_array_mut()
            .unwrap()
            .retain(|o| o["type"] != "PipeWire:Interface:Link");
        v.to_string()
    }

    /// What a case expects of one check: its status and words in its
    /// detail or fix; `None`: the check must be absent.
    type Want = (&'static str, Option<Status>, &'static [&'static str]);

    /// A case: its name, its facts, what it expects.
    type Case = (&'static str, Edit, &'static [Want]);

    fn find<'a>(v: &'a [Check], name: &str) -> Option<&'a Check> {
        v.iter().find(|c| c.name == name)
    }

    /// Judges `f` and checks what `case` wants of it; the checks.
    fn expect(case: &str, f: &Facts, wants: &[Want]) -> Vec<Check> {
        let v = judge(f);
        for (name, status, words) in wants {
            let c = find(&v, name);
            match (c, status) {
                (None, None) => {}
                (Some(c), None) => panic!("{case}: {name} should be absent: {c:?}"),
                (None, Some(_)) => panic!("{case}: no {name} check in {v:#?}"),
                (Some(c), Some(s)) => {
                    assert_eq!(c.status, *s, "{case}: {name}: {c:#?}");
                    let text = format!("{} {}", c.detail, c.fix.as_deref().unwrap_or(""));
                    for w in *words {
                        assert!(text.contains(w), "{case}: {name}: no {w:?} in {text:?}");
                    }
                }
            }
        }
        v
    }

    /// Every case of a table, each from [`healthy`] facts with its edit.
    fn expect_all(cases: &[Case]) {
        for (case, edit, wants) in cases {
            expect(case, &edited(*edit), wants);
        }
    }

    #[test]
    fn healthy_host_passes_every_check() {
        #[rustfmt::skip]
        let wants: &[Want] = &[
            ("interface", Some(Status::Ok), &["eth0 (192.0.2.2/24)"]),
            ("route", Some(Status::Ok), &["via eth0 from 192.0.2.2"]),
            ("group", Some(Status::Ok), &["already joined on this host on eth0 by 2"]),
            ("firewall", Some(Status::Ok), &["reached a listener"]),
            ("unicast", Some(Status::Ok), &["192.0.2.2"]),
            ("firewall-rules", None, &[]),
            ("ttl", Some(Status::Ok), &["TTL 1"]),
            ("buffers", Some(Status::Ok), &["4194304"]),
            ("modules", Some(Status::Ok), &["bark-source.so"]),
            ("config", Some(Status::Ok), &["bark-source.conf (bark-source)"]),
            ("audio-server", Some(Status::Ok), &["PipeWire with its PulseAudio server"]),
            ("pipewire", Some(Status::Ok), &["PipeWire 0.3.65 (the running daemon): supported, tested in Bark's lab"]),
            ("bark-node", Some(Status::Ok), &["libpipewire-module-bark-source", "bark_source (Stream/Output/Audio, running)"]),
            ("receiver", Some(Status::Ok), &["bark_source → speaker; PipeWire reports 0.0 ms downstream"]),
        ];
        let v = expect("healthy", &healthy(), wants);
        assert!(v.iter().all(|c| c.status == Status::Ok), "{v:#?}");
        // Debian 12's known issues, each with what it means and what to do.
        let notes = &find(&v, "pipewire").unwrap().notes;
        assert_eq!(notes.len(), 5, "{notes:#?}");
        for w in [
            "`condition`",
            "pw_stream_set_rate",
            "cannot report its delay",
            "whole Hz",
        ] {
            assert!(
                notes.iter().any(|n| n.contains(w)),
                "no {w:?} in {notes:#?}"
            );
        }
        // Only where the user can act does a note carry a workaround.
        let workarounds: Vec<&String> = notes
            .iter()
            .filter(|n| n.contains("; workaround: "))
            .collect();
        assert_eq!(workarounds.len(), 2, "{notes:#?}");
        assert!(workarounds
            .iter()
            .any(|n| n.contains("workaround: set bark.delay.msec = -<its delay in ms>")));
    }

    /// `--local-ifname eth1`, another interface than the routing table's.
    fn on_eth1(f: &mut Facts) {
        f.ifaces.push(iface("eth1", ETH1, false));
        f.ifname = Some("eth1".into());
        f.route.via_ifname = Some(Ok(ETH1));
    }

    /// No route for the group: nothing could be joined or probed.
    fn no_route(f: &mut Facts) {
        f.route.by_table = Err(UNREACHABLE.into());
        f.route.ip_route_get = None;
        f.join = None;
        f.multicast_probe = None;
        f.unicast_probe = None;
    }

    #[test]
    fn network_problems_and_their_fixes() {
        #[rustfmt::skip]
        expect_all(&[
            ("only a loopback", |f| f.ifaces = vec![iface("lo", Ipv4Addr::LOCALHOST, true)], &[
                ("interface", Some(Status::Fail), &["no interface is up with multicast"]),
            ]),
            ("interface down", |f| { f.ifname = Some("eth0".into()); f.ifaces[0].up = false; f.route.via_ifname = None }, &[
                ("interface", Some(Status::Fail), &["eth0 is down", "sudo ip link set eth0 up"]),
                ("route", Some(Status::Fail), &["has no IPv4 address to route from"]),
                ("group", None, &[]),
                ("firewall", None, &[]),
            ]),
            ("no such interface", |f| f.ifname = Some("wlan9".into()), &[
                ("interface", Some(Status::Fail), &["--local-ifname wlan9: no such interface (have: eth0, lo)"]),
            ]),
            ("multicast off", |f| { f.ifname = Some("eth0".into()); f.ifaces[0].multicast = false; f.route.via_ifname = Some(Ok(ETH0)) }, &[
                ("interface", Some(Status::Fail), &["multicast turned off", "multicast on"]),
            ]),
            ("no route", no_route, &[
                ("route", Some(Status::Fail), &["no route for 239.255.66.66", "sudo ip route add 224.0.0.0/4 dev eth0"]),
                ("group", None, &[]),
                ("firewall", None, &[]),
                ("unicast", None, &[]),
                ("ttl", Some(Status::Ok), &[]),
            ]),
            ("routed to lo", |f| {
                f.route.by_table = Ok(Ipv4Addr::LOCALHOST);
                f.route.ip_route_get = Some("multicast 239.255.66.66 dev lo src 127.0.0.1 uid 0\n".into());
            }, &[
                ("route", Some(Status::Warn), &["routed to the loopback", "dev eth0, or --local-ifname"]),
            ]),
            ("ifname differs from the table", on_eth1, &[
                ("route", Some(Status::Warn), &["via eth1 from 198.51.100.7", "the routing table would pick eth0"]),
            ]),
            ("cannot send via ifname", |f| { on_eth1(f); f.route.via_ifname = Some(Err(UNREACHABLE.into())) }, &[
                ("route", Some(Status::Fail), &["cannot send to 239.255.66.66 via eth1", "dev eth1"]),
            ]),
            ("no receiver here", |f| f.igmp = Some(fixture("igmp.txt").replace("4242FFEF", "010101EF")), &[
                ("group", Some(Status::Ok), &["joining 239.255.66.66:1530 works; no process on this host has joined it"]),
            ]),
            ("join fails", |f| f.join = Some(Err("joining 239.255.66.66 on eth0: No buffer space available".into())), &[
                ("group", Some(Status::Fail), &["cannot join", "No buffer space", "igmp_max_memberships"]),
            ]),
            ("firewall drops", |f| { f.multicast_probe = Some(Probe::Lost); f.unicast_probe = Some((ETH0, Probe::Lost)) }, &[
                ("firewall", Some(Status::Fail), &["never arrived", "udp dport 1530 accept"]),
                ("unicast", Some(Status::Fail), &["was dropped"]),
            ]),
            ("probe error", |f| f.multicast_probe = Some(Probe::Error("Operation not permitted".into())), &[
                ("firewall", Some(Status::Warn), &["could not probe", "Operation not permitted"]),
            ]),
        ]);
    }

    /// An nftables input chain with `body` after its `policy `.
    fn ruleset(body: &str) -> Option<String> {
        Some(format!(
            "table inet filter {{\n\tchain input {{\n\t\ttype filter hook input priority filter; policy {body}\n\t}}\n}}\n"
        ))
    }

    #[test]
    fn nftables_rules_are_read_as_hints() {
        #[rustfmt::skip]
        expect_all(&[
            ("a rule drops the port", |f| f.nft_ruleset = ruleset("accept;\n\t\tudp dport 1530 drop"), &[
                ("firewall-rules", Some(Status::Warn), &["`udp dport 1530 drop`"]),
            ]),
            ("drop policy, no port rule", |f| f.nft_ruleset = ruleset("drop;\n\t\tct state established accept"), &[
                ("firewall-rules", Some(Status::Warn), &["no rule mentions UDP port 1530"]),
            ]),
            ("drop policy, port allowed", |f| f.nft_ruleset = ruleset("drop;\n\t\tudp dport 1530 accept"), &[
                ("firewall-rules", Some(Status::Info), &["a rule mentions port 1530"]),
            ]),
        ]);
    }

    #[test]
    fn ttl_buffers_install_and_daemons() {
        #[rustfmt::skip]
        expect_all(&[
            ("ttl 0", |f| f.ttl = 0, &[("ttl", Some(Status::Warn), &["--ttl 1"])]),
            ("ttl 4", |f| f.ttl = 4, &[("ttl", Some(Status::Info), &["up to 3 routers"])]),
            ("small rmem_max", |f| f.rmem_max = Some("212992\n".into()), &[
                ("buffers", Some(Status::Info), &["212992 bytes", "rmem_max=1048576"]),
            ]),
            ("no rmem_max", |f| f.rmem_max = None, &[("buffers", None, &[])]),
            ("nothing installed", |f| {
                f.module_files.clear();
                f.dropins = vec![(PathBuf::from("/etc/pipewire/pipewire.conf.d/10-x.conf"), "context.properties = {}".into())];
            }, &[
                ("modules", Some(Status::Info), &["not installed"]),
                ("config", Some(Status::Info), &["no pipewire.conf.d drop-in loads a Bark module"]),
            ]),
            ("no daemon", |f| { f.daemons.clear(); f.audio = Some(AudioFacts::default()) }, &[
                ("audio-server", Some(Status::Warn), &["no PipeWire or PulseAudio is running", "systemctl --user start"]),
                ("bark-node", None, &[]),
            ]),
            ("pulseaudio beside pipewire", |f| f.daemons.push(daemon("pulseaudio")), &[
                ("audio-server", Some(Status::Warn), &["compete for the same clients", "mask pulseaudio.socket"]),
            ]),
            ("plain PulseAudio with bark-pulse", |f| {
                f.daemons = vec![daemon("pulseaudio")];
                f.pw_cli_version = None;
                f.pipewire_version = None;
                f.audio = Some(AudioFacts {
                    pactl_modules: Some("7\tmodule-native-protocol-unix\t\t\n".into()),
                    ..AudioFacts::default()
                });
            }, &[
                ("audio-server", Some(Status::Ok), &["PulseAudio: pulseaudio ×1"]),
                ("pipewire", None, &[]),
                ("bark-node", Some(Status::Info), &["PulseAudio has no Bark module loaded"]),
            ]),
        ]);
    }

    #[test]
    fn a_unicast_address_needs_no_route_or_group() {
        #[rustfmt::skip]
        expect_all(&[
            ("unicast", |f| { f.group = SocketAddrV4::new(ETH0, 1530); f.join = None; f.multicast_probe = None }, &[
                ("route", Some(Status::Info), &["192.0.2.2 is unicast"]),
                ("group", Some(Status::Info), &["unicast: nothing to join"]),
                ("firewall", None, &[]),
                ("unicast", Some(Status::Ok), &[]),
            ]),
        ]);
    }

    /// A pw-dump of just a core of PipeWire `v` and a factory.
    fn dump_of(v: &str) -> String {
        format!(
            r#"[{{"id":0,"type":"PipeWire:Interface:Core","version":4,"permissions":["r","x","m"],
                "info":{{"cookie":1,"user-name":"u","host-name":"h","version":"{v}","name":"pipewire-0",
                "change-mask":["props"],"props":{{"default.clock.rate":48000}}}}}},
               {{"id":1,"type":"PipeWire:Interface:Factory","version":3,
                "info":{{"name":"support.node.driver","type":"PipeWire:Interface:Node","version":3,"props":{{}}}}}}]"#
        )
    }

    /// PipeWire 1.2.7, daemon and library, without Bark.
    fn pipewire_1_2_7(f: &mut Facts) {
        set_dump(f, &dump_of("1.2.7"));
        f.pw_cli_version = version_output("pw-cli", "1.2.7");
    }

    #[test]
    fn pipewire_versions() {
        #[rustfmt::skip]
        expect_all(&[
            ("1.2.7, no Bark loaded", pipewire_1_2_7, &[
                ("pipewire", Some(Status::Ok), &["PipeWire 1.2.7 (the running daemon): supported"]),
                ("bark-node", Some(Status::Info), &["PipeWire has no Bark node loaded"]),
                ("receiver", None, &[]),
            ]),
            ("daemon older than the library", |f| { set_dump(f, &dump_of("0.3.65")); f.pw_cli_version = version_output("pw-cli", "1.4.2") }, &[
                ("pipewire", Some(Status::Warn), &[
                    "running daemon is PipeWire 0.3.65 but the installed library is 1.4.2",
                    "systemctl --user restart pipewire",
                ]),
            ]),
            ("old library, --no-audio", |f| {
                f.audio = None;
                f.pw_cli_version = None;
                f.pipewire_version = version_output("pipewire", "0.3.48");
            }, &[
                ("pipewire", Some(Status::Warn), &["PipeWire 0.3.48 (the installed library; the daemon was not asked): older than 0.3.65", "upgrade"]),
                ("bark-node", None, &[]),
                ("receiver", None, &[]),
            ]),
            ("unparsable version", |f| { set_dump(f, &dump_of("1.4.2-rc1")); f.pw_cli_version = None; f.pipewire_version = None }, &[
                ("pipewire", Some(Status::Info), &["not a version doctor understands"]),
            ]),
        ]);
        let v = judge(&edited(pipewire_1_2_7));
        let c = find(&v, "pipewire").unwrap();
        assert!(!c.detail.contains("lab"), "{c:?}");
        assert_eq!(c.notes.len(), 3, "{c:#?}");
    }

    #[test]
    fn pw_dump_failures_are_reported_not_fatal() {
        #[rustfmt::skip]
        expect_all(&[
            ("pw-dump timed out", |f| f.audio = Some(AudioFacts { pw_dump: Some(Err("pw-dump did not answer within 5 s".into())), ..AudioFacts::default() }), &[
                ("bark-node", Some(Status::Info), &["could not ask PipeWire (pw-dump did not answer within 5 s"]),
                ("pipewire", Some(Status::Ok), &["the installed library; the daemon was not asked"]),
            ]),
            ("pw-dump garbage", |f| set_dump(f, "Error: failed to connect"), &[
                ("bark-node", Some(Status::Info), &["pw-dump output not understood"]),
            ]),
        ]);
    }

    /// The 0.3.65 loopback fixture, its sink's output ports reporting a
    /// 10 ms latency of their own (as ALSA sinks do).
    fn loopback_before_a_10_ms_device(f: &mut Facts) {
        let mut v: serde_json::Value =
            serde_json::from_str(&fixture("pw-dump-0.3.65-loopback.json")).unwrap();
        for o in v.as_array_mut().unwrap() {
            if o["type"] == "PipeWire:Interface:Port" && o["info"]["direction"] == "output" {
                for l in o["info"]["params"]["Latency"].as_array_mut().unwrap() {
                    if l["direction"] == "Input" {
                        l["maxNs"] = 10_000_000.into();
                    }
                }
            }
        }
        set_dump(f, &v.to_string());
    }

    #[test]
    fn a_loopback_before_the_speaker_on_0_3_65() {
        let loopback: Edit = |f| set_dump(f, &fixture("pw-dump-0.3.65-loopback.json"));
        #[rustfmt::skip]
        expect_all(&[
            ("0.3.65 loopback", loopback, &[
                ("pipewire", Some(Status::Ok), &["PipeWire 0.3.65"]),
                ("receiver", Some(Status::Warn), &[
                    "bark_source → dsp → dsp.out → speaker",
                    "PipeWire reports 0.0 ms downstream",
                    "dsp is a loopback or filter whose delay PipeWire does not count (this PipeWire cannot report a loopback's delay)",
                    "set bark.delay.msec = -D",
                ]),
            ]),
            // A device that reports its own latency does not make the
            // loopback's delay counted.
            ("0.3.65 loopback before a device reporting 10 ms", loopback_before_a_10_ms_device, &[
                ("receiver", Some(Status::Warn), &["PipeWire reports 10.0 ms downstream", "dsp is a loopback or filter"]),
            ]),
            // Compensated by hand: nothing left to do.
            ("0.3.65 loopback, compensated", |f| {
                let dump = fixture("pw-dump-0.3.65-loopback.json");
                set_dump(f, &dump.replace("bark.delay.msec = 0", "bark.delay.msec = -50"));
            }, &[
                ("receiver", Some(Status::Ok), &["bark.delay.msec = -50"]),
            ]),
        ]);
        let v = judge(&edited(loopback));
        let fix = find(&v, "receiver").unwrap().fix.clone().unwrap();
        assert!(!fix.contains("latencyOffsetNsec"), "0.3.65 has none: {fix}");
    }

    #[test]
    fn a_loopback_before_the_speaker_on_1_4_2() {
        let loopback: Edit = |f| {
            set_dump(f, &fixture("pw-dump-1.4.2-loopback.json"));
            f.pw_cli_version = version_output("pw-cli", "1.4.2");
        };
        #[rustfmt::skip]
        expect_all(&[
            ("1.4.2 loopback, not reporting", loopback, &[
                ("pipewire", Some(Status::Ok), &["PipeWire 1.4.2 (the running daemon): supported, tested in Bark's lab"]),
                ("receiver", Some(Status::Warn), &["bark_source → dsp → dsp.out → speaker", "pw-cli set-param 61 Props", "latencyOffsetNsec", "bark.delay.msec = -D"]),
            ]),
            // After `pw-cli set-param 61 Props '{ "latencyOffsetNsec": 50000000 }'`
            // the loopback reports 50 ms, which the receiver counts.
            ("1.4.2 loopback reporting 50 ms", |f| {
                set_dump(f, &fixture("pw-dump-1.4.2-latency-offset.json"));
                f.pw_cli_version = version_output("pw-cli", "1.4.2");
            }, &[
                ("receiver", Some(Status::Ok), &["bark_source → dsp → dsp.out → speaker; PipeWire reports 50.0 ms downstream"]),
            ]),
        ]);
        let v = judge(&edited(loopback));
        assert_eq!(find(&v, "pipewire").unwrap().notes.len(), 2);
    }

    #[test]
    fn receivers_in_trouble() {
        #[rustfmt::skip]
        expect_all(&[
            ("receiver in error", |f| set_dump(f, &node_edited("pw-dump-0.3.65-direct.json", "bark_source", |i| {
                i["state"] = "error".into();
                i["error"] = "no node available".into();
            })), &[
                ("receiver", Some(Status::Warn), &["bark_source: error: no node available", "journalctl"]),
            ]),
            ("receiver not linked", |f| set_dump(f, &unlinked(&fixture("pw-dump-0.3.65-direct.json"))), &[
                ("receiver", Some(Status::Warn), &["bark_source is not linked to any sink", "target.object"]),
            ]),
            ("virtual source", |f| set_dump(f, &unlinked(&node_edited("pw-dump-0.3.65-direct.json", "bark_source", |i| {
                i["props"]["media.class"] = "Audio/Source".into();
            }))), &[
                ("receiver", Some(Status::Info), &["virtual source"]),
            ]),
        ]);
    }

    #[test]
    fn the_receivers_own_downstream_report_is_shown() {
        #[rustfmt::skip]
        expect_all(&[
            ("status packet hook", |f| {
                if let Some(a) = f.audio.as_mut() {
                    a.receiver_reports = vec![ReceiverReport { node_name: "bark_source".into(), downstream_us: Some(12_500) }];
                }
            }, &[
                ("receiver", Some(Status::Ok), &["; the receiver reports 12.5 ms downstream"]),
            ]),
        ]);
    }

    #[test]
    fn text_report_lists_fixes_and_notes() {
        let checks = vec![
            Check {
                name: "ttl",
                status: Status::Warn,
                detail: "TTL 0".into(),
                fix: Some("use --ttl 1".into()),
                notes: vec![],
            },
            Check {
                name: "pipewire",
                status: Status::Ok,
                detail: "PipeWire 1.4.2".into(),
                fix: None,
                notes: vec!["a".into(), "b".into()],
            },
            Check {
                name: "route",
                status: Status::Fail,
                detail: "no route".into(),
                fix: None,
                notes: vec![],
            },
        ];
        let t = render_text("239.255.66.66:1530", &checks);
        let pad = " ".repeat(7 + 15);
        assert_eq!(
            t,
            format!(
                "bark doctor: group 239.255.66.66:1530\n\
                 [WARN] ttl            TTL 0\n\
                 {pad}fix: use --ttl 1\n\
                 [ ok ] pipewire       PipeWire 1.4.2\n\
                 {pad}- a\n\
                 {pad}- b\n\
                 [FAIL] route          no route\n\
                 1 problem found.\n"
            )
        );
        assert!(render_text("g", &checks[..2]).ends_with("no problem found.\n"));
    }
}

/// The binary on this host.
mod doctor_live {
    use super::common::*;
    use std::path::Path;
    use std::process::Command;
    use std::time::Duration;

    const T: Duration = Duration::from_secs(30);

    fn check<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
        named(v, "checks", name)
    }

    fn status_of(v: &serde_json::Value, name: &str) -> String {
        check(v, name)["status"].as_str().unwrap().to_string()
    }

    /// Runs doctor with a module directory and a config directory of this
    /// test's own, so the install checks find what the test put there.
    fn doctor(args: &[&str], dir: &Path) -> (Option<i32>, String) {
        let mods = dir.join("modules");
        let conf = dir.join("config/pipewire/pipewire.conf.d");
        std::fs::create_dir_all(&mods).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        std::fs::write(mods.join("libpipewire-module-bark-source.so"), b"").unwrap();
        std::fs::write(
            conf.join("bark-source.conf"),
            "context.modules = [ { name = libpipewire-module-bark-source } ]\n",
        )
        .unwrap();
        let mut cmd = Command::new(bark());
        cmd.arg("doctor")
            .args(args)
            .env("PIPEWIRE_MODULE_DIR", &mods)
            .env("XDG_CONFIG_HOME", dir.join("config"));
        let mut p = Proc::spawn_cmd("doctor", &mut cmd, &dir.join("stderr.log"));
        let (st, out) = p.wait(T);
        (st.code(), out)
    }

    #[test]
    fn loopback_passes() {
        let dir = tempfile::tempdir().unwrap();
        let net = unique_net();
        let mut a = vec!["--no-audio"];
        a.extend(net.iter().map(String::as_str));
        let (code, out) = doctor(&a, dir.path());
        assert_eq!(code, Some(0), "{out}");
        for line in [
            "[ ok ] group",
            "[ ok ] firewall",
            "[ ok ] unicast",
            "[ ok ] ttl",
            "[ ok ] modules",
            "[ ok ] config",
            "no problem found.",
        ] {
            assert!(out.contains(line), "no {line:?} in:\n{out}");
        }
        a.extend(["--output", "json", "--ttl", "0"]);
        let (_, out) = doctor(&a, dir.path());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["failed"], 0);
        assert_eq!(status_of(&v, "ttl"), "warn");
        assert_eq!(status_of(&v, "interface"), "info", "--local-ifname lo");
        let modules = check(&v, "modules");
        assert_eq!(modules["status"], "ok");
        assert!(modules["detail"]
            .as_str()
            .unwrap()
            .contains(dir.path().to_str().unwrap()));
        assert_eq!(status_of(&v, "config"), "ok");
        // This host's routing table decides whether the group would leave
        // through lo without --local-ifname (ok) or another device (warn).
        let route = check(&v, "route");
        match route["status"].as_str().unwrap() {
            "ok" => {}
            "warn" => assert!(route["detail"]
                .as_str()
                .unwrap()
                .contains("without local.ifname")),
            s => panic!("route {s}: {route:#}"),
        }
        // Whether an audio server runs is this host's business; doctor
        // only says which, and never fails on it.
        let server = check(&v, "audio-server");
        assert!(
            ["ok", "warn"].contains(&server["status"].as_str().unwrap()),
            "{server:#}"
        );
        // --no-audio: the audio server is not asked.
        assert!(v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["name"] != "bark-node"));
    }

    /// The probe hears a receiver on this host report its downstream
    /// latency in its status packets.
    #[test]
    fn hears_the_receivers_report_their_downstream_latency() {
        use bark_cli::doctor::probe::{receiver_reports, STATUS_LISTEN};
        let dir = tempfile::tempdir().unwrap();
        let net = unique_net();
        let _rx = NodeCmd::receive(dir.path(), "rx", "5")
            .named("doc-rx")
            .args(&["--output-delay-msec", "12.5"])
            .spawn(&net);
        let group = format!("{}:{}", net[1], net[3]).parse().unwrap();
        let sock = bark_cli::net::group_socket(group, Some("lo")).unwrap();
        let host = bark_io::node::hostname();
        let reports = receiver_reports(sock, &host, STATUS_LISTEN);
        let r = reports
            .iter()
            .find(|r| r.node_name == "doc-rx")
            .unwrap_or_else(|| panic!("no report from doc-rx: {reports:?}"));
        assert_eq!(r.downstream_us, Some(12_500));
        // Another host's receivers are not this host's.
        let sock = bark_cli::net::group_socket(group, Some("lo")).unwrap();
        assert!(receiver_reports(sock, "elsewhere", STATUS_LISTEN).is_empty());
    }

    #[test]
    fn runs_commands_with_a_time_limit() {
        use bark_cli::doctor::probe::run_cmd;
        use std::time::Instant;
        let t = Instant::now();
        assert!(run_cmd("sleep", &["5"], Duration::from_millis(200)).is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(
            run_cmd("echo", &["hi"], Duration::from_secs(2)),
            Some((true, "hi\n".to_string()))
        );
        assert_eq!(
            run_cmd("false", &[], Duration::from_secs(2)),
            Some((false, String::new()))
        );
        assert!(run_cmd("/nonexistent/x", &[], Duration::from_secs(1)).is_none());
        // pw-dump prints far more than a pipe holds (64 KiB): the output
        // must be drained while the command runs, or it never finishes.
        let (ok, out) = run_cmd(
            "head",
            &["-c", "1048576", "/dev/zero"],
            Duration::from_secs(5),
        )
        .expect("head finished");
        assert!(ok);
        assert_eq!(out.len(), 1 << 20);
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

    #[test]
    #[ignore = "needs root"]
    fn finds_a_missing_route_and_a_firewall() {
        let ns = Netns::new("r");
        // Only a loopback, no routes: nothing to send the group on.
        let (code, v) = ns.doctor(&[]);
        assert_eq!(code, Some(1), "{v}");
        assert_eq!(status_of(&v, "route"), "fail");
        let fix = check(&v, "route")["fix"].as_str().unwrap_or("");
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
        assert!(
            nft.is_ok_and(|s| s.success()),
            "nft is needed for this test (make deps installs nftables)"
        );
        let (code, v) = ns.doctor(&lo);
        assert_eq!(code, Some(1), "{v}");
        assert_eq!(status_of(&v, "firewall"), "fail");
        assert_eq!(status_of(&v, "firewall-rules"), "warn");
        // Another port is not affected.
        let (code, v) = ns.doctor(&["--local-ifname", "lo", "--port", "1531"]);
        assert_eq!(code, Some(0), "{v}");
    }
}

//! Headless integration test of the modules in a real, private PipeWire.
//!
//! Run it with `make test-pw` (as root or any user, on Debian 12 with
//! pipewire, pipewire-bin, wireplumber, pipewire-pulse, pulseaudio-utils,
//! dbus and sox installed). That builds the modules and runs
//! `cargo test --release -p bark-pw-module --test headless -- --ignored --nocapture`.
//! `make test-pw1` runs the same binary inside a Debian 13 root, on
//! PipeWire 1.4.2 (lab/test-pw1.sh, lab/in-root.sh).
//! It is `#[ignore]`d so that a plain `cargo test` needs no audio stack.
//!
//! It starts pipewire, wireplumber (under `dbus-run-session`) and
//! pipewire-pulse with a private runtime and config directory, loads the
//! modules from a drop-in, and checks:
//! - the sink is listed by `pactl list sinks` as "Bark Network";
//! - the modules document their arguments (`module.usage`, author, version);
//! - bad arguments fail each load with a clear logged error while the
//!   daemon keeps answering, and leave no node behind;
//! - audio played into the sink leaves as Bark datagrams (unicast to
//!   127.0.0.1, caught here), and a second sink at 44.1 kHz negotiates
//!   44.1 kHz and feeds the receiver module, which syncs and plays;
//! - a 192 kHz sink negotiates 192 kHz;
//! - multicast, joined on lo with TTL 0, reaches a second receiver;
//! - unloading a module removes its node and closes its file descriptors
//!   (PipeWire 0.3.65; 1.x refuses to let a client unload a module, which
//!   is checked instead);
//! - the daemon shuts down cleanly with the modules loaded.
//!
//! All traffic stays on this host: unicast to 127.0.0.1, and multicast on lo
//! with TTL 0. Every process is started in its own
//! process group and killed by that id when the test ends, pass or fail; the
//! temporary directory is removed.

mod common;
use common::{module_dir, system_module_dir};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use std::fs;
use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long any one wait may take.
const WAIT: Duration = Duration::from_secs(20);

/// The private audio stack; everything is torn down on drop.
struct Stack {
    dir: tempfile::TempDir,
    children: Vec<(String, Child)>,
    env: Vec<(String, String)>,
}

impl Stack {
    fn new() -> Stack {
        let dir = tempfile::Builder::new()
            .prefix("bark-pw-test")
            .tempdir()
            .expect("tempdir");
        let p = |s: &str| dir.path().join(s).to_string_lossy().into_owned();
        for d in ["run", "config/pipewire/pipewire.conf.d", "state", "home"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.path().join("run"), fs::Permissions::from_mode(0o700)).unwrap();
        let sysdir = system_module_dir();
        let env = vec![
            ("XDG_RUNTIME_DIR".into(), p("run")),
            ("XDG_CONFIG_HOME".into(), p("config")),
            ("XDG_STATE_HOME".into(), p("state")),
            ("HOME".into(), p("home")),
            (
                "PIPEWIRE_MODULE_DIR".into(),
                format!("{}:{}", module_dir().display(), sysdir.trim()),
            ),
            // Only errors from the tools; the daemon gets its own level.
            ("PIPEWIRE_DEBUG".into(), "1".into()),
        ];
        Stack {
            dir,
            children: Vec::new(),
            env,
        }
    }

    fn path(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }

    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        // Nothing of the caller's session may leak in: no bus, no display,
        // no other PipeWire or Pulse server.
        for k in [
            "DBUS_SESSION_BUS_ADDRESS",
            "DISPLAY",
            "WAYLAND_DISPLAY",
            "PIPEWIRE_REMOTE",
            "PULSE_SERVER",
            "PULSE_RUNTIME_PATH",
        ] {
            c.env_remove(k);
        }
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.stdin(Stdio::null());
        c
    }

    /// Starts a long-running process in its own process group, logging to
    /// `<name>.log` in the temporary directory.
    fn spawn(&mut self, name: &str, mut c: Command) {
        let log = fs::File::create(self.path(&format!("{name}.log"))).unwrap();
        c.stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        self.children.push((name.into(), child));
    }

    /// Stops `name` with SIGTERM (its whole process group) and returns how
    /// it exited.
    fn stop(&mut self, name: &str) -> std::process::ExitStatus {
        let i = self.children.iter().position(|(n, _)| n == name).unwrap();
        let (_, mut child) = self.children.remove(i);
        let pg = Pid::from_raw(child.id() as i32);
        let _ = killpg(pg, Signal::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                let _ = killpg(pg, Signal::SIGKILL);
                return st;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = killpg(pg, Signal::SIGKILL);
                let _ = child.wait();
                panic!("{name} did not stop on SIGTERM");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid_of(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c.id())
            .unwrap()
    }

    /// Runs a short command with a timeout; returns its output.
    fn run(&self, prog: &str, args: &[&str]) -> Output {
        let mut c = self.cmd("timeout");
        c.arg("10").arg(prog).args(args);
        c.output()
            .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"))
    }

    fn run_ok(&self, prog: &str, args: &[&str]) -> String {
        let o = self.run(prog, args);
        assert!(
            o.status.success(),
            "{prog} {args:?} failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn daemon_log(&self) -> String {
        fs::read_to_string(self.path("pipewire.log")).unwrap_or_default()
    }

    fn dump(&self) -> Vec<Value> {
        serde_json::from_str(&self.run_ok("pw-dump", &[])).expect("pw-dump JSON")
    }

    /// The daemon's version, from its Core object: (major, minor, micro).
    fn daemon_version(&self) -> (u32, u32, u32) {
        let dump = self.dump();
        let v = dump
            .iter()
            .find(|o| o["type"].as_str().is_some_and(|t| t.ends_with("Core")))
            .and_then(|o| o["info"]["version"].as_str())
            .expect("no Core version in pw-dump")
            .to_owned();
        let mut n = v.split('.').map(|p| p.parse().unwrap_or(0));
        (
            n.next().unwrap_or(0),
            n.next().unwrap_or(0),
            n.next().unwrap_or(0),
        )
    }

    fn core_answers(&self) -> bool {
        self.run("pw-cli", &["info", "0"]).status.success()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Newest first: pipewire-pulse and wireplumber before the daemon.
        for (name, child) in self.children.iter_mut().rev() {
            let pg = Pid::from_raw(child.id() as i32);
            let _ = killpg(pg, Signal::SIGTERM);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            // Whatever is left of the group (dbus-daemon, a stuck child).
            let _ = killpg(pg, Signal::SIGKILL);
            let _ = child.wait();
            eprintln!("stopped {name}");
        }
        if std::thread::panicking() {
            eprintln!("--- pipewire.log (tail) ---");
            let log = self.daemon_log();
            let lines: Vec<&str> = log.lines().collect();
            for l in &lines[lines.len().saturating_sub(80)..] {
                eprintln!("{l}");
            }
        }
    }
}

fn run_ok(c: &mut Command) -> String {
    let o = c.output().expect("run");
    assert!(o.status.success(), "{c:?} failed");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < WAIT {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn props_of<'a>(dump: &'a [Value], ty: &str, key: &str, value: &str) -> Option<&'a Value> {
    dump.iter().find(|o| {
        o["type"].as_str().is_some_and(|t| t.ends_with(ty))
            && o["info"]["props"][key].as_str() == Some(value)
    })
}

/// Counts Bark datagrams arriving at `sock` until `stop`: (audio, status).
fn listen(sock: UdpSocket, stop: Arc<AtomicBool>) -> thread::JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let (mut audio, mut status) = (0, 0);
        let mut buf = [0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, _)) = sock.recv_from(&mut buf) {
                if n >= 16 && &buf[..4] == b"BARK" {
                    match buf[5] {
                        1 => audio += 1,
                        4 => status += 1,
                        _ => {}
                    }
                }
            }
        }
        (audio, status)
    })
}

#[test]
#[ignore = "needs a PipeWire stack and built modules: run `make test-pw`"]
fn modules_in_headless_pipewire() {
    let dir = module_dir();
    for m in [
        "libpipewire-module-bark-sink.so",
        "libpipewire-module-bark-source.so",
    ] {
        assert!(
            dir.join(m).exists(),
            "{} missing: run `make modules` first",
            dir.join(m).display()
        );
    }
    let mut s = Stack::new();

    // The sink sends to `catcher`; sink B sends to the receiver module.
    let catcher = UdpSocket::bind("127.0.0.1:0").unwrap();
    let catch_port = catcher.local_addr().unwrap().port();
    let rx_port = free_udp_port();
    let mc_port = free_udp_port();
    let k_port = free_udp_port();
    // A key file as `bark keygen` writes it, and a good key in a file that
    // others may read, which must be refused.
    let key = bark_core::auth::Key::generate().unwrap();
    let key_file = s.path("bark.key");
    bark_io::keyfile::write_key_file(&key_file, &key).unwrap();
    let bad_key_file = s.path("world-readable.key");
    fs::write(&bad_key_file, key.to_file_text()).unwrap();
    fs::set_permissions(
        &bad_key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let (key_file, bad_key_file) = (key_file.display(), bad_key_file.display());
    let conf = format!(
        r#"
context.modules = [
  {{ name = libpipewire-module-bark-sink
     args = {{ destination.ip = 127.0.0.1 destination.port = {catch_port} net.ttl = 1 }} }}
  {{ name = libpipewire-module-bark-sink
     args = {{ node.name = bark_sink_b node.description = "Bark B" audio.rate = 44100
              audio.format = S24 destination.ip = 127.0.0.1 destination.port = {rx_port}
              bark.stream = b stream.props = {{ node.latency = 512/44100 }} }} }}
  {{ name = libpipewire-module-bark-source
     args = {{ source.ip = 127.0.0.1 source.port = {rx_port} bark.delay.msec = -1.5 }} }}
  {{ name = libpipewire-module-bark-sink
     args = {{ node.name = bark_sink_mc node.description = "Bark MC" destination.ip = 239.255.66.66
              destination.port = {mc_port} local.ifname = lo net.ttl = 0 bark.stream = mc }} }}
  {{ name = libpipewire-module-bark-source
     args = {{ node.name = bark_source_mc source.ip = 239.255.66.66 source.port = {mc_port}
              local.ifname = lo bark.stream = mc bark.resampler = pipewire }} }}
  {{ name = libpipewire-module-bark-sink
     args = {{ node.name = bark_sink_hi audio.rate = 192000 destination.ip = 127.0.0.1 destination.port = {catch_port} }} }}
  {{ name = libpipewire-module-bark-sink
     args = {{ node.name = bark_sink_k destination.ip = 127.0.0.1 destination.port = {k_port}
              bark.stream = k bark.key-file = "{key_file}" bark.encrypt = true }} }}
  {{ name = libpipewire-module-bark-source
     args = {{ node.name = bark_source_k source.ip = 127.0.0.1 source.port = {k_port}
              bark.stream = k bark.key-file = "{key_file}" }} }}
  {{ name = libpipewire-module-bark-sink
     args = {{ node.name = bark_sink_kx destination.ip = 127.0.0.1 destination.port = {rx_port}
              bark.stream = kx bark.key-file = "{key_file}" }} }}
  {{ name = libpipewire-module-bark-sink args = {{ node.name = bad_key bark.key-file = "{bad_key_file}" }} flags = [ nofail ] }}
  {{ name = libpipewire-module-bark-sink args = {{ node.name = bad_encrypt bark.encrypt = true }} flags = [ nofail ] }}
  {{ name = libpipewire-module-bark-sink args = {{ node.name = bad_format audio.format = U8 }} flags = [ nofail ] }}
  {{ name = libpipewire-module-bark-sink args = {{ node.name = bad_rate audio.rate = 0 }} flags = [ nofail ] }}
  {{ name = libpipewire-module-bark-sink args = {{ node.name = bad_ip destination.ip = 300.1.2.3 }} flags = [ nofail ] }}
  {{ name = libpipewire-module-bark-sink args = {{ node.name = bad_channels audio.channels = 0 }} flags = [ nofail ] }}
  {{ name = libpipewire-module-bark-source args = {{ node.name = bad_class media.class = Video/Source }} flags = [ nofail ] }}
  {{ name = libpipewire-module-bark-source args = {{ node.name = bad_iface source.port = {rx_port} local.ifname = bark-no-such-if }} flags = [ nofail ] }}
]
"#
    );
    fs::write(
        s.path("config/pipewire/pipewire.conf.d/bark-test.conf"),
        conf,
    )
    .unwrap();

    let mut pw = s.cmd("pipewire");
    // Warnings for everyone, info for Bark: the module's topic must take
    // the pattern on both 0.3 and 1.x (1.1 applies patterns only to
    // registered topics), or none of the info lines checked below appear.
    pw.env("PIPEWIRE_DEBUG", "2,mod.bark:3");
    s.spawn("pipewire", pw);
    wait_for("the daemon", || s.core_answers());
    let version = s.daemon_version();
    eprintln!("PipeWire {}.{}.{}", version.0, version.1, version.2);
    let mut wp = s.cmd("dbus-run-session");
    wp.args(["--", "wireplumber"]);
    s.spawn("wireplumber", wp);
    s.spawn("pipewire-pulse", s.cmd("pipewire-pulse"));
    s.run_ok(
        "pw-cli",
        &["create-node", "adapter", "{ factory.name=support.null-audio-sink node.name=speaker media.class=Audio/Sink object.linger=true audio.position=[FL FR] }"],
    );

    // The sink is listed as "Bark Network".
    wait_for("pactl to list Bark Network", || {
        let o = s.run("pactl", &["list", "sinks"]);
        o.status.success()
            && String::from_utf8_lossy(&o.stdout).contains("Description: Bark Network")
    });
    eprintln!("ok: pactl lists the Bark Network sink");

    // Module info documents the arguments.
    let dump = s.dump();
    for (name, key) in [
        ("libpipewire-module-bark-sink", "destination.ip"),
        ("libpipewire-module-bark-source", "bark.delay.msec"),
    ] {
        let m = props_of(&dump, "Module", "module.name", name)
            .unwrap_or_else(|| panic!("{name} not loaded"));
        let p = &m["info"]["props"];
        assert!(
            p["module.usage"].as_str().unwrap_or("").contains(key),
            "{name} usage lacks {key}"
        );
        assert!(
            p["module.author"].is_string()
                && p["module.version"].is_string()
                && p["module.description"].is_string()
        );
    }
    eprintln!("ok: module.usage/author/version/description present");

    // Bad arguments: a clear error each, no node left, daemon alive.
    let log = s.daemon_log();
    for needle in [
        "audio.format = U8: must be one of F32, S24, S16",
        "audio.rate = 0: must be within 8000..=192000 Hz",
        "destination.ip = 300.1.2.3: must be an IPv4 address",
        "audio.channels = 0: must be within 1..=8",
        "media.class = Video/Source: must be one of",
        "\"bark-no-such-if\": no such interface",
        "lets other users read or change it; run `chmod 600",
        "bark.encrypt = true needs bark.key-file",
    ] {
        assert!(log.contains(needle), "no error logged for {needle:?}");
    }
    for bad in [
        "bad_format",
        "bad_rate",
        "bad_ip",
        "bad_channels",
        "bad_class",
        "bad_iface",
        "bad_key",
        "bad_encrypt",
    ] {
        assert!(
            props_of(&dump, "Node", "node.name", bad).is_none(),
            "{bad} exists"
        );
    }
    assert!(s.core_answers(), "daemon stopped answering");
    eprintln!("ok: bad arguments rejected with clear errors; daemon answers");

    // The receiver must not play into a Bark sink (feedback), even though
    // a Bark sink is the default one here.
    wait_for("bark_source linked to the speaker", || {
        let o = s.run("pw-link", &["-l"]);
        let out = String::from_utf8_lossy(&o.stdout);
        out.contains("bark_source:output_FL") && out.contains("speaker:playback_FL")
    });
    let links = s.run_ok("pw-link", &["-l"]);
    assert!(
        !links.lines().any(|l| l.contains("bark_sink")),
        "a Bark node links into a Bark sink:\n{links}"
    );
    eprintln!("ok: the receiver plays to the speaker, not into a Bark sink");

    // Audio in, datagrams out.
    let tone = s.path("tone.wav");
    run_ok(
        Command::new("sox")
            .args(["-n", "-r", "48000", "-c", "2", "-b", "16"])
            .arg(&tone)
            .args(["synth", "1.5", "sine", "440", "vol", "0.5"]),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let counter = listen(catcher, stop.clone());
    let tone_s = tone.to_string_lossy().into_owned();
    s.run_ok("pw-play", &["--target", "bark_sink", &tone_s]);
    thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (audio, status) = counter.join().unwrap();
    // 1.5 s at 48 kHz in packets of 176 frames: about 410. On PipeWire 1.x
    // (1.4.2) about ten times as many arrive: bark_sink_hi, idle but sending
    // to the same port, runs too (all Bark nodes share node.link-group, and
    // 1.x schedules a link group together; 0.3.65 does not), sending silence
    // at 192 kHz. Hence only a lower bound here.
    assert!(audio >= 300, "only {audio} audio datagrams");
    assert!(status >= 1, "no status datagram");
    eprintln!("ok: {audio} audio and {status} status datagrams sent for 1.5 s of audio");

    // 44.1 kHz sink feeding the receiver module.
    s.run_ok("pw-play", &["--target", "bark_sink_b", &tone_s]);
    wait_for(
        "sink B to negotiate 44.1 kHz and the receiver to get audio",
        || {
            let log = s.daemon_log();
            log.contains("bark_sink_b: negotiated F32LE 44100 Hz 2 ch")
                && log.contains("bark_source: network audio arriving")
                && log.contains("bark_source: playing in sync")
        },
    );
    eprintln!("ok: 44.1 kHz sink negotiated; the receiver module synced and played it");

    // With a key file on both ends and encrypted audio, the receiver plays;
    // the key never reaches the log, its id does.
    s.run_ok("pw-play", &["--target", "bark_sink_k", &tone_s]);
    wait_for("the keyed receiver to play", || {
        s.daemon_log().contains("bark_source_k: playing in sync")
    });
    let log = s.daemon_log();
    let id = format!("key id {}", key.id());
    assert!(
        log.contains(&format!("authenticated and encrypted, {id}")),
        "no key id for the sink"
    );
    assert!(
        log.contains(&format!("authenticated, {id}")),
        "no key id for the receiver"
    );
    let hex = key.to_file_text();
    let hex = hex.lines().last().unwrap();
    assert!(!log.contains(&hex[..16]), "key bytes in the log");
    eprintln!("ok: a keyed, encrypted sink played to a receiver with the same key file");

    // An open receiver hears a keyed sink's status packets: one clear
    // warning, no malformed spam.
    wait_for("the open receiver to warn about sealed datagrams", || {
        s.daemon_log()
            .contains("authenticated datagrams: senders use a key and this node has none")
    });
    assert!(
        !s.daemon_log()
            .lines()
            .any(|l| l.contains("bark_source: dropped") && l.contains("malformed")),
        "sealed datagrams counted as malformed"
    );
    eprintln!("ok: an open receiver drops a keyed sender's datagrams with a clear warning");

    // 192 kHz is accepted too.
    s.run_ok("pw-play", &["--target", "bark_sink_hi", &tone_s]);
    wait_for("the 192 kHz sink to negotiate", || {
        s.daemon_log()
            .contains("bark_sink_hi: negotiated F32LE 192000 Hz 2 ch")
    });
    eprintln!("ok: a 192 kHz sink negotiates 192 kHz");

    // Multicast, kept on this host: group joined on lo, TTL 0. This
    // receiver steers PipeWire's resampler (bark.resampler = pipewire).
    s.run_ok("pw-play", &["--target", "bark_sink_mc", &tone_s]);
    wait_for("the multicast receiver to play", || {
        let log = s.daemon_log();
        log.contains("bark_source_mc: playing in sync") && log.contains("resampler pipewire")
    });
    eprintln!("ok: multicast on lo (TTL 0) reached the receiver, which played it through PipeWire's resampler");

    // Unload: node gone, descriptors closed, daemon alive.
    let dump = s.dump();
    let module_id = |name: &str| {
        props_of(&dump, "Module", "module.name", name)
            .map(|m| m["id"].as_u64().unwrap())
            .unwrap()
    };
    let fds = |pid: u32| {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count())
            .unwrap_or(0)
    };
    let pid = s.pid_of("pipewire");
    let before = fds(pid);
    let source_id = module_id("libpipewire-module-bark-source").to_string();
    let destroy = s.run("pw-cli", &["destroy", &source_id]);
    // Versions differ. 0.3.65 lets a client destroy a module's global,
    // which unloads the module. 1.x (checked on 1.4.2) grants Module globals
    // only R|M (PW_MODULE_PERM_MASK, absent from 0.3.65's headers): the
    // destroy is refused, "no permission to destroy", and no client can
    // unload a module from a running daemon. There the refusal is what is
    // checked (module and node stay, daemon answers); unloading itself is
    // tested on both by tests/lifecycle.rs, in its own process.
    let refused = String::from_utf8_lossy(&destroy.stderr).contains("no permission to destroy");
    if refused {
        assert!(
            version > (0, 3, 65),
            "PipeWire {version:?} refused to unload a module"
        );
        thread::sleep(Duration::from_millis(500));
        assert!(
            props_of(&s.dump(), "Node", "node.name", "bark_source").is_some(),
            "bark_source gone although its unload was refused"
        );
        assert!(s.core_answers());
        eprintln!(
            "ok: PipeWire {}.{}: a client may not unload a module (refused); unloading: tests/lifecycle.rs",
            version.0, version.1
        );
    } else {
        assert!(destroy.status.success(), "pw-cli destroy failed");
        wait_for("bark_source to go away", || {
            props_of(&s.dump(), "Node", "node.name", "bark_source").is_none()
        });
        let after = fds(pid);
        // Its two sockets at least, plus the stream's own descriptors.
        assert!(
            after + 2 <= before,
            "fds {before} -> {after} after unloading the source"
        );
        assert!(s.core_answers());
        assert!(s.daemon_log().contains("bark_source: unloading"));
        eprintln!("ok: unloading closed {} descriptors", before - after);
    }

    // Daemon shutdown with the modules loaded: PipeWire tears down their
    // streams itself, and must exit cleanly.
    s.stop("pipewire-pulse");
    s.stop("wireplumber");
    let st = s.stop("pipewire");
    let log = s.daemon_log();
    assert!(st.success(), "pipewire exited with {st}");
    assert!(
        !log.contains("double free") && !log.contains("panicked"),
        "unclean shutdown"
    );
    assert!(log.contains("bark_sink: unloading") && log.contains("bark_source_mc: unloading"));
    eprintln!("ok: the daemon shut down cleanly with the modules loaded");

    eprintln!("--- the modules' log lines ---");
    for l in s.daemon_log().lines().filter(|l| l.contains("mod.bark")) {
        eprintln!("{l}");
    }
}

/// Panic containment in a private daemon: a panic forced inside `process`
/// (a sink) and inside a data-loop callback (a source) through the
/// test-only `BARK_TEST_PANIC` (pw-module/src/module.rs) is caught by the
/// `catch_unwind` guard: logged once, the module idles, the daemon keeps
/// answering and keeps running the graph. (Load/unload cycles:
/// tests/lifecycle.rs.)
#[test]
#[ignore = "needs a PipeWire stack and built modules: run `make test-pw`"]
fn panics_in_callbacks_are_contained() {
    let mut s = Stack::new();
    let rx_port = free_udp_port();
    let conf = format!(
        r#"
context.modules = [
  {{ name = libpipewire-module-bark-sink
     args = {{ node.name = bark_panic_process destination.ip = 127.0.0.1 destination.port = {rx_port} }} }}
  {{ name = libpipewire-module-bark-source
     args = {{ node.name = bark_panic_data source.ip = 127.0.0.1 source.port = {rx_port} }} }}
]
"#
    );
    fs::write(
        s.path("config/pipewire/pipewire.conf.d/bark-panic.conf"),
        conf,
    )
    .unwrap();
    let mut pw = s.cmd("pipewire");
    pw.env("PIPEWIRE_DEBUG", "3").env(
        "BARK_TEST_PANIC",
        "bark_panic_process:process,bark_panic_data:data",
    );
    s.spawn("pipewire", pw);
    wait_for("the daemon", || s.core_answers());
    let mut wp = s.cmd("dbus-run-session");
    wp.args(["--", "wireplumber"]);
    s.spawn("wireplumber", wp);
    s.run_ok(
        "pw-cli",
        &["create-node", "adapter", "{ factory.name=support.null-audio-sink node.name=speaker media.class=Audio/Sink object.linger=true audio.position=[FL FR] }"],
    );

    // Panics: the source's data-loop callbacks run on their own (its
    // timer, or its socket, which the idle sink's announcements reach
    // first); the sink's process runs once something plays into it.
    wait_for("the data-loop panic to be caught", || {
        let log = s.daemon_log();
        log.contains("bark: panic in data timer: BARK_TEST_PANIC")
            || log.contains("bark: panic in socket: BARK_TEST_PANIC")
    });
    let tone = s.path("tone.wav");
    run_ok(
        Command::new("sox")
            .args(["-n", "-r", "48000", "-c", "2", "-b", "16"])
            .arg(&tone)
            .args(["synth", "1", "sine", "440", "vol", "0.5"]),
    );
    let tone_s = tone.to_string_lossy().into_owned();
    s.run_ok("pw-play", &["--target", "bark_panic_process", &tone_s]);
    wait_for("the process panic to be caught", || {
        s.daemon_log()
            .contains("bark: panic in process: BARK_TEST_PANIC")
    });
    // Once each, then idle: the graph kept running the sink (pw-play
    // finished), and a second play still completes.
    s.run_ok("pw-play", &["--target", "bark_panic_process", &tone_s]);
    let log = s.daemon_log();
    assert_eq!(
        log.matches("bark: panic in").count(),
        2,
        "each panic logged once"
    );
    let dump = s.dump();
    for n in ["bark_panic_process", "bark_panic_data"] {
        assert!(
            props_of(&dump, "Node", "node.name", n).is_some(),
            "{n} gone"
        );
    }
    assert!(
        s.core_answers(),
        "daemon stopped answering after the panics"
    );
    eprintln!(
        "ok: panics in process and in a data-loop callback caught; modules idle, daemon answers"
    );
}

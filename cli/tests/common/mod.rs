//! Shared helpers of the integration tests: spawning `bark` with bounded
//! lifetimes, unique loopback groups, test audio, and measuring latency
//! between timestamped recordings.
#![allow(dead_code)]

use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bark() -> &'static str {
    env!("CARGO_BIN_EXE_bark")
}

/// A group and port of our own: a free UDP port (so parallel tests and
/// other engineers' runs never share one) and a group derived from it.
pub fn unique_net() -> Vec<String> {
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let group = format!("239.255.{}.{}", 100 + port % 100, 1 + port % 250);
    // Loopback only, TTL 0 where it applies: nothing leaves this host.
    vec![
        "--group".into(),
        group,
        "--port".into(),
        port.to_string(),
        "--local-ifname".into(),
        "lo".into(),
    ]
}

/// Owned arguments.
pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A `bark` node of a test: its arguments so far, and its files, in `dir`
/// and named after its tag: `TAG.log` takes its stderr, `TAG.wav` and
/// `TAG.json` its output and summary when asked for.
pub struct NodeCmd {
    dir: PathBuf,
    tag: String,
    args: Vec<String>,
    stdin: Option<std::fs::File>,
}

impl NodeCmd {
    /// `bark ARGS`, tagged `tag`.
    pub fn new(dir: &Path, tag: &str, args: &[&str]) -> NodeCmd {
        NodeCmd {
            dir: dir.to_path_buf(),
            tag: tag.into(),
            args: s(args),
            stdin: None,
        }
    }

    /// `bark receive --ttl 0 --seconds SECONDS` (TTL 0: nothing it sends
    /// leaves this host), tagged `tag`.
    pub fn receive(dir: &Path, tag: &str, seconds: &str) -> NodeCmd {
        Self::new(dir, tag, &["receive", "--ttl", "0", "--seconds", seconds])
    }

    /// `bark stream --ttl 0`, tagged `tag`.
    pub fn stream(dir: &Path, tag: &str) -> NodeCmd {
        Self::new(dir, tag, &["stream", "--ttl", "0"])
    }

    /// `--node-name NAME`.
    pub fn named(self, name: &str) -> NodeCmd {
        self.args(&["--node-name", name])
    }

    /// More arguments.
    pub fn args(mut self, more: &[&str]) -> NodeCmd {
        self.args.extend(s(more));
        self
    }

    /// `flag PATH`.
    pub fn path(mut self, flag: &str, path: &Path) -> NodeCmd {
        self.args.push(flag.into());
        self.args.push(path.to_str().unwrap().into());
        self
    }

    /// `-o TAG.wav --summary TAG.json`: a receiver recording what it plays
    /// and summing up.
    pub fn recorded(self) -> NodeCmd {
        let wav = self.dir.join(format!("{}.wav", self.tag));
        self.path("-o", &wav).summary()
    }

    /// `--summary TAG.json`.
    pub fn summary(self) -> NodeCmd {
        let json = self.dir.join(format!("{}.json", self.tag));
        self.path("--summary", &json)
    }

    /// Its stdin read from `file` (else empty).
    pub fn stdin(mut self, file: std::fs::File) -> NodeCmd {
        self.stdin = Some(file);
        self
    }

    /// Starts it on `net` (appended to its arguments).
    pub fn spawn(self, net: &[String]) -> Proc {
        let mut cmd = Command::new(bark());
        cmd.args(&self.args)
            .args(net)
            .stdin(self.stdin.map_or_else(Stdio::null, Stdio::from));
        Proc::start(
            &self.tag,
            &mut cmd,
            &self.dir.join(format!("{}.log", self.tag)),
        )
    }
}

/// A child process that is stopped (TERM, then KILL) when dropped, so a
/// failing test never leaves it behind. Only ever signals its own pid.
pub struct Proc {
    pub child: Option<Child>,
    pub name: String,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `bark` with `args`; stdout piped, stderr to `log`.
    pub fn spawn(name: &str, args: &[String], log: &Path) -> Proc {
        Self::spawn_cmd(name, Command::new(bark()).args(args), log)
    }

    /// Spawns a prepared command, its stdin empty.
    pub fn spawn_cmd(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        Self::start(name, cmd.stdin(Stdio::null()), log)
    }

    /// Spawns a prepared command, its stdin as `cmd` has it; stdout piped,
    /// stderr to `log`.
    fn start(name: &str, cmd: &mut Command, log: &Path) -> Proc {
        let err = std::fs::File::create(log).unwrap();
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
        Proc {
            child: Some(child),
            name: name.into(),
            log: log.to_path_buf(),
        }
    }

    /// [`Proc::wait`], and asserts that it exited cleanly (its log's end in
    /// the message if not); its stdout.
    pub fn wait_ok(&mut self, limit: Duration) -> String {
        let (st, out) = self.wait(limit);
        if !st.success() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{} failed ({st}); the end of {}:\n{}",
                self.name,
                self.log.display(),
                tail.join("\n")
            );
        }
        out
    }

    /// Waits at most `limit` for the process to exit; kills it and panics
    /// if it does not.
    pub fn wait(&mut self, limit: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let end = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let mut out = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                return (st, out);
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{} did not finish within {limit:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM (a clean stop: files finished) and waits.
    pub fn terminate(&mut self, limit: Duration) -> (ExitStatus, String) {
        if let Some(c) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        self.wait(limit)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            for _ in 0..50 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `bark` with `args` and then `net` to completion (10 s at most);
/// (status, stdout, stderr).
pub fn run_net(args: &[&str], net: &[String]) -> (ExitStatus, String, String) {
    let mut a = args.to_vec();
    a.extend(net.iter().map(String::as_str));
    run(&a, Duration::from_secs(10))
}

/// One `bark stats --once --json` snapshot of `net` after listening for
/// `wait_sec` seconds (`extra`: more arguments); asserts that it worked.
pub fn stats_snapshot(net: &[String], wait_sec: &str, extra: &[&str]) -> serde_json::Value {
    let mut a = vec!["stats", "--once", "--json", "--wait-sec", wait_sec];
    a.extend(extra);
    let (st, out, err) = run_net(&a, net);
    assert!(st.success(), "{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The names of the nodes in a stats snapshot, in its order.
pub fn node_names(snap: &serde_json::Value) -> Vec<&str> {
    snap["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect()
}

/// The element of the array `v[list]` whose "name" is `name`.
pub fn named<'a>(v: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {v:#}"))
}

/// Runs `bark` to completion (bounded); (status, stdout, stderr).
pub fn run(args: &[&str], limit: Duration) -> (ExitStatus, String, String) {
    let mut child = Command::new(bark())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (st, out, err);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bark {args:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes `seconds` of stereo test audio at `rate`: a different mix of
/// tones and noise on each channel, so that alignment is unambiguous and a
/// channel swap would show.
pub fn write_test_wav(path: &Path, rate: u32, seconds: f64) {
    let mut seed: u32 = 0x1234_5678;
    let mut noise = || {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        (seed >> 8) as f64 / (1u32 << 24) as f64 - 0.5
    };
    let tau = std::f64::consts::TAU;
    let mut lp = [0.0f64; 2];
    write_wav16(path, rate, seconds, |i| {
        let t = i as f64 / rate as f64;
        // Low-passed noise plus a slowly swept tone: like music, most energy
        // well below Nyquist (where any interpolating resampler is exact),
        // yet never periodic, so the alignment is unambiguous.
        lp[0] = 0.97 * lp[0] + 0.03 * noise();
        lp[1] = 0.95 * lp[1] + 0.05 * noise();
        let l = 0.25 * (tau * (300.0 + 200.0 * t) * t).sin() + 5.0 * lp[0];
        let r = 0.25 * (tau * 700.0 * t).sin() * (tau * 0.7 * t).cos() + 4.0 * lp[1];
        [l, r].map(|v| (v.clamp(-1.0, 1.0) * 30_000.0) as i16)
    });
}

/// Writes `seconds` of 16-bit stereo audio at `rate`, frame `i` being
/// `frame(i)` (left, right).
pub fn write_wav16(path: &Path, rate: u32, seconds: f64, mut frame: impl FnMut(usize) -> [i16; 2]) {
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(seconds * rate as f64) as usize {
        for v in frame(i) {
            w.write_sample(v).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// A recording: per-channel samples and its buffer stamps (frame, ns).
pub struct Rec {
    pub rate: u32,
    pub chans: Vec<Vec<f32>>,
    pub stamps: Vec<(u64, i64)>,
}

impl Rec {
    /// Loads `wav` and its `.ts.csv` sidecar (if any).
    pub fn load(wav: &Path) -> Rec {
        let mut r =
            hound::WavReader::open(wav).unwrap_or_else(|e| panic!("{}: {e}", wav.display()));
        let spec = r.spec();
        let ch = spec.channels as usize;
        let samples: Vec<f32> = match spec.sample_format {
            hound::SampleFormat::Float => r.samples::<f32>().map(Result::unwrap).collect(),
            hound::SampleFormat::Int => r
                .samples::<i32>()
                .map(|v| v.unwrap() as f32 / (1u32 << (spec.bits_per_sample - 1)) as f32)
                .collect(),
        };
        let mut chans = vec![Vec::with_capacity(samples.len() / ch); ch];
        for f in samples.chunks_exact(ch) {
            for (c, v) in f.iter().enumerate() {
                chans[c].push(*v);
            }
        }
        let mut stamps = Vec::new();
        if let Ok(text) = std::fs::read_to_string(wav.with_extension("ts.csv")) {
            for l in text.lines() {
                if l.starts_with('#') || l.starts_with("frame") {
                    continue;
                }
                let f: Vec<&str> = l.split(',').collect();
                stamps.push((f[0].parse().unwrap(), f[2].parse().unwrap()));
            }
        }
        Rec {
            rate: spec.sample_rate,
            chans,
            stamps,
        }
    }

    /// Frames in the recording.
    pub fn frames(&self) -> usize {
        self.chans[0].len()
    }

    /// CLOCK_MONOTONIC ns at which frame `f` is heard, from the stamps.
    pub fn time_of(&self, f: f64) -> f64 {
        let i = self
            .stamps
            .partition_point(|s| s.0 as f64 <= f)
            .saturating_sub(1);
        let (f0, t0) = self.stamps[i];
        t0 as f64 + (f - f0 as f64) * 1e9 / self.rate as f64
    }

    /// Fractional frame heard at `t` ns (inverse of [`Rec::time_of`]).
    pub fn frame_at(&self, t: f64) -> f64 {
        let i = self
            .stamps
            .partition_point(|s| (s.1 as f64) <= t)
            .saturating_sub(1);
        let (f0, t0) = self.stamps[i];
        f0 as f64 + (t - t0 as f64) * self.rate as f64 / 1e9
    }

    /// RMS of channel `c` over frames `[a, b)`.
    pub fn rms(&self, c: usize, a: usize, b: usize) -> f64 {
        let s = &self.chans[c][a..b];
        (s.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt()
    }
}

/// Normalized correlation of `a` (from `ia`) and `b` (from `ib`) over `n`.
fn ncorr(a: &[f32], ia: usize, b: &[f32], ib: usize, n: usize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for k in 0..n {
        let x = a[ia + k] as f64;
        let y = b[ib + k] as f64;
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa * bb).sqrt().max(1e-30)
}

/// Latency from `reference` to `rx` for channel `c`: a window of `win_s`
/// seconds of `rx` starting `at_s` seconds into it is matched against the
/// reference around `expect_ms` (± `search_ms`). Returns (latency ms with
/// sub-sample precision, normalized correlation at the peak).
pub fn latency_ms(
    reference: &Rec,
    rx: &Rec,
    c: usize,
    at_s: f64,
    win_s: f64,
    expect_ms: f64,
    search_ms: f64,
) -> (f64, f64) {
    assert_eq!(reference.rate, rx.rate);
    let rate = rx.rate as f64;
    let n = (win_s * rate) as usize;
    let i_rx = (at_s * rate) as usize;
    assert!(i_rx + n <= rx.frames(), "recording too short");
    let t_rx = rx.time_of(i_rx as f64);
    // The reference frame heard `expect_ms` earlier.
    let centre = reference.frame_at(t_rx - expect_ms * 1e6).round() as i64;
    let span = (search_ms * 1e-3 * rate) as i64;
    let mut best = (f64::MIN, 0i64);
    let mut scores = Vec::new();
    for d in -span..=span {
        let i_ref = centre + d;
        if i_ref < 0 || i_ref as usize + n > reference.frames() {
            scores.push(f64::MIN);
            continue;
        }
        let s = ncorr(&reference.chans[c], i_ref as usize, &rx.chans[c], i_rx, n);
        scores.push(s);
        if s > best.0 {
            best = (s, d);
        }
    }
    // Parabolic refinement around the best integer lag.
    let k = (best.1 + span) as usize;
    let mut frac = 0.0;
    if k > 0 && k + 1 < scores.len() && scores[k - 1] > f64::MIN && scores[k + 1] > f64::MIN {
        let (a, b, cc) = (scores[k - 1], scores[k], scores[k + 1]);
        let den = a - 2.0 * b + cc;
        if den.abs() > 1e-12 {
            frac = 0.5 * (a - cc) / den;
        }
    }
    let i_ref = (centre + best.1) as f64 + frac;
    let lat_ms = (t_rx - reference.time_of(i_ref)) / 1e6;
    (lat_ms, best.0)
}

/// A scratch directory under the target dir (kept for inspection if a test
/// fails; cleaned at the start of the next run).
pub fn scratch(name: &str) -> PathBuf {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).unwrap();
    base
}

/// A streaming test's start: its [`scratch`] directory, a group of its
/// own ([`unique_net`]), and `seconds` of [`write_test_wav`] audio at
/// `rate` in `source.wav` there.
pub fn scratch_with_source(name: &str, rate: u32, seconds: f64) -> (PathBuf, Vec<String>, PathBuf) {
    let dir = scratch(name);
    let src = dir.join("source.wav");
    write_test_wav(&src, rate, seconds);
    (dir, unique_net(), src)
}

/// Parses a JSON file.
pub fn read_json(p: &Path) -> serde_json::Value {
    let t = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&t).unwrap()
}

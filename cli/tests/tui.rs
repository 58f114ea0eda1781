//! The live view in a real terminal: `bark stats` runs inside tmux (a
//! private tmux server, killed at the end); the test reads the screen with
//! capture-pane and types with send-keys.

mod common;
use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

/// A private tmux server (its own socket name), killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux is needed for this test (make deps installs it)")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "stats"]).stdout)
            .into_owned()
    }

    fn alive(&self) -> bool {
        self.cmd(&["has-session", "-t", "stats"]).status.success()
    }

    /// Polls the screen until `pred` holds, at most `limit`.
    fn wait_for(&self, limit: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let end = Instant::now() + limit;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < end, "screen never showed {what}:\n{s}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn live_view_in_tmux() {
    let (dir, net, src) = scratch_with_source("tui", 48_000, 3.0);
    let _rx = NodeCmd::receive(&dir, "rx", "12")
        .named("kitchen")
        .spawn(&net);

    let tmux = Tmux {
        socket: format!("bark-test-{}", std::process::id()),
    };
    let stats = format!(
        "{} stats {} --quiet-sec 1 --drop-sec 60 2>{}",
        bark(),
        net.join(" "),
        dir.join("stats.log").display()
    );
    let st = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "stats",
        "-x",
        "200",
        "-y",
        "30",
        &stats,
    ]);
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );

    let mut tx = NodeCmd::stream(&dir, "tx")
        .named("tui-sender")
        .path("--input", &src)
        .spawn(&net);

    let s = tmux.wait_for(Duration::from_secs(10), "both nodes playing", |s| {
        s.lines()
            .any(|l| l.starts_with("tui-sender") && l.contains("streaming"))
            && s.lines()
                .any(|l| l.starts_with("kitchen") && l.contains("playing"))
    });
    assert!(s.contains("1 sender, 1 receiver"), "{s}");
    for header in ["NAME", "SYNC us", "BUF ms", "LOST", "UNDERRUN", "HEARD"] {
        assert!(s.contains(header), "no {header} column:\n{s}");
    }
    assert!(s.contains("q: quit"), "{s}");

    // It redraws by itself (at least twice a second): the "heard ... ago"
    // figures move between captures 300 ms apart.
    let mut screens = Vec::new();
    for _ in 0..4 {
        screens.push(tmux.screen());
        std::thread::sleep(Duration::from_millis(300));
    }
    screens.dedup();
    assert!(screens.len() >= 2, "the screen did not change in 1.2 s");

    // The stream ends: its sender goes quiet and is marked so.
    tx.wait(Duration::from_secs(10));
    tmux.wait_for(Duration::from_secs(6), "the sender marked QUIET", |s| {
        s.lines()
            .any(|l| l.starts_with("tui-sender") && l.contains("QUIET"))
    });

    // q quits and gives the terminal back.
    tmux.cmd(&["send-keys", "-t", "stats", "q"]);
    let end = Instant::now() + Duration::from_secs(5);
    while tmux.alive() {
        assert!(Instant::now() < end, "bark stats did not quit on q");
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! Running `rc` (ours, or another) for the rc tests: in a fresh directory, with a
//! cleared environment, a time limit, and its output collected.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Our rc.
pub const RC: &str = env!("CARGO_BIN_EXE_rc");
/// Debian's 9base rc (plan9port's before 2020).
pub const NINEBASE: &str = "/usr/lib/plan9/bin/rc";
/// Output beyond this is drained but not kept.
const OUTPUT_CAP: usize = 1 << 20;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Exit(i32),
    Signal(i32),
    TimedOut,
}

#[derive(Debug)]
pub struct Run {
    pub outcome: Outcome,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The exit code; panics (showing the run) if there was none.
    pub fn code(&self) -> i32 {
        match self.outcome {
            Outcome::Exit(c) => c,
            _ => panic!("no exit status: {self:#?}"),
        }
    }
}

/// A fresh directory for one test, removed when dropped: `home` is the working
/// directory and `$HOME`; `bin` is empty (a `PATH` under which nothing runs).
pub struct Sandbox {
    pub root: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        let root = tempfile::Builder::new()
            .prefix("rc-test.")
            .tempdir()
            .expect("tempdir");
        for d in ["home", "bin"] {
            std::fs::create_dir(root.path().join(d)).expect("mkdir");
        }
        Sandbox { root }
    }

    pub fn home(&self) -> PathBuf {
        self.root.path().join("home")
    }

    pub fn bin(&self) -> PathBuf {
        self.root.path().join("bin")
    }

    /// Write a file under `home` (making its directory), returning its path.
    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.home().join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(&p, text).expect("write");
        p
    }

    /// `prog` with argv[0] `rc`, in `home`, with only `HOME`, `PATH` (as given), and
    /// `LC_ALL=C` in its environment.
    pub fn cmd(&self, prog: &str, path: &str) -> Command {
        let mut c = Command::new(prog);
        c.arg0("rc")
            .current_dir(self.home())
            .env_clear()
            .env("HOME", self.home())
            .env("PATH", path)
            .env("LC_ALL", "C");
        c
    }

    /// Our rc, where `PATH` finds the system's programs.
    pub fn rc(&self) -> Command {
        self.cmd(RC, "/usr/bin:/bin")
    }
}

/// Read a pipe to its end on another thread, keeping at most OUTPUT_CAP bytes.
fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

/// Run `cmd` in a process group of its own with `input` on its standard input
/// (`/dev/null` if none). After `timeout` the whole group is killed, as it is when
/// something the command left behind still holds its output open then.
pub fn run(cmd: &mut Command, input: Option<&[u8]>, timeout: Duration) -> Run {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    if let Some(i) = input {
        let mut sin = child.stdin.take().expect("stdin");
        let data = i.to_vec();
        std::thread::spawn(move || {
            let _ = sin.write_all(&data);
        });
    }
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let deadline = started + timeout;
    let pgid = child.id() as i32;
    let kill_group = || {
        // SAFETY: signalling the process group created for this child.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    };
    let mut outcome = Outcome::TimedOut;
    loop {
        match child.try_wait().expect("wait") {
            Some(st) => {
                outcome = match (st.code(), st.signal()) {
                    (Some(c), _) => Outcome::Exit(c),
                    (None, Some(sig)) => Outcome::Signal(sig),
                    _ => Outcome::Exit(-1),
                };
                break;
            }
            None if Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                break;
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => v,
            Err(_) => {
                kill_group();
                rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
            }
        }
    };
    let stdout = collect(out);
    let stderr = collect(err);
    Run {
        outcome,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Whether a peer program is there; fails instead of skipping when
/// `NINESPACE_REQUIRE_PEERS=1`.
pub fn have_peer(path: &str, what: &str) -> bool {
    if Path::new(path).is_file() {
        return true;
    }
    if std::env::var("NINESPACE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{path} is missing and NINESPACE_REQUIRE_PEERS=1 ({what})");
    }
    eprintln!("notice: {path} is missing ({what}): test skipped");
    false
}

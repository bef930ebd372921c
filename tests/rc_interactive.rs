//! rc at a terminal: `rc -i` (and plain `rc` with a terminal on standard input) driven
//! through a pseudo-terminal, as a person types at it: line editing, the history file,
//! tab completion, the two prompts, interrupts and the ways rc ends.
//!
//! Each test starts its own rc in a new session whose controlling terminal is a fresh
//! pty, with a private `$home` and working directory. The transcript read from the pty
//! is kept with the terminal's escape sequences taken out; every wait is for text to
//! appear (or a process to start or end) within a time limit, and a failure shows the
//! transcript so far. The rc, and anything it started, is killed by its process group
//! and reaped when the test ends, however it ends.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

const RC: &str = env!("CARGO_BIN_EXE_rc");

/// How long any one step (a prompt, some output, a process starting) may take.
const STEP: Duration = Duration::from_secs(10);

/// How soon an interrupted `sleep 10` must give the prompt back.
const INTERRUPT_LIMIT: Duration = Duration::from_secs(5);

/// The prompts most tests use (set through the environment), easy to find in output.
const P1: &str = "P1> ";
const P2: &str = "P2> ";

/// A failed step, with the transcript so far.
struct Failure(String);

impl std::fmt::Debug for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

type R<T = ()> = Result<T, Failure>;

/// Fail the test (with the transcript of `$t`) unless `$cond` holds.
macro_rules! ensure {
    ($t:expr, $cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err($t.fail(&format!($($fmt)+)));
        }
    };
}

/// A test's directories: `$home`, and the working directory rc starts in.
struct Dirs {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

fn dirs() -> Dirs {
    let tmp = tempfile::Builder::new()
        .prefix("rc-interactive.")
        .tempdir()
        .expect("tempdir");
    let home = tmp.path().join("home");
    let work = tmp.path().join("work");
    std::fs::create_dir(&home).expect("mkdir home");
    std::fs::create_dir(&work).expect("mkdir work");
    Dirs {
        _tmp: tmp,
        home,
        work,
    }
}

/// How to start rc.
struct Opts<'a> {
    args: &'a [&'a str],
    /// Added to (or replacing) `TERM`, `HOME`, `PATH` and `prompt`.
    env: &'a [(&'a str, &'a str)],
    /// Leave `prompt` out of the environment, so that rcmain sets its default.
    default_prompt: bool,
}

impl Default for Opts<'_> {
    fn default() -> Self {
        Opts {
            args: &["-i"],
            env: &[],
            default_prompt: false,
        }
    }
}

/// Turns the bytes a terminal is sent into the text it shows, less the escape
/// sequences (cursor movement, erasing, modes); carriage returns and newlines stay.
enum Strip {
    Text,
    Esc,
    /// `ESC (` and the like: one more byte.
    Charset,
    Csi,
    Osc,
    OscEsc,
}

impl Strip {
    fn feed(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for &b in bytes {
            *self = match (&*self, b) {
                (Strip::Text, 0x1b) => Strip::Esc,
                (Strip::Text, _) => {
                    out.push(b);
                    Strip::Text
                }
                (Strip::Esc, b'[') => Strip::Csi,
                (Strip::Esc, b']') => Strip::Osc,
                (Strip::Esc, b'(' | b')' | b'*' | b'+' | b'#' | b'%') => Strip::Charset,
                (Strip::Esc, _) | (Strip::Charset, _) => Strip::Text,
                (Strip::Csi, 0x40..=0x7e) => Strip::Text,
                (Strip::Csi, _) => Strip::Csi,
                (Strip::Osc, 0x07) => Strip::Text,
                (Strip::Osc, 0x1b) => Strip::OscEsc,
                (Strip::Osc, _) => Strip::Osc,
                (Strip::OscEsc, _) => Strip::Text,
            };
        }
    }
}

/// An rc on a pseudo-terminal.
struct Term {
    child: Child,
    pid: i32,
    reaped: bool,
    master: File,
    rx: Receiver<Vec<u8>>,
    /// Everything shown so far, escape sequences taken out.
    shown: Vec<u8>,
    /// How much of `shown` the test has read past.
    pos: usize,
    strip: Strip,
    /// The pty's reader has seen the end (rc and everything it started are gone).
    closed: bool,
    p1: String,
    p2: String,
}

/// A new pseudo-terminal, both ends close-on-exec (so that no other test's child
/// inherits them), 80x24.
fn open_pty() -> (File, File) {
    use nix::fcntl::OFlag;
    let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .expect("posix_openpt");
    nix::pty::grantpt(&m).expect("grantpt");
    nix::pty::unlockpt(&m).expect("unlockpt");
    let name = nix::pty::ptsname_r(&m).expect("ptsname_r");
    // SAFETY: the descriptor was just taken out of the PtyMaster, which owned it.
    let master = unsafe { File::from_raw_fd(m.into_raw_fd()) };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .expect("open pty slave");
    let ws = libc::winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize that outlives the call.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    assert_eq!(r, 0, "TIOCSWINSZ: {}", std::io::Error::last_os_error());
    (master, slave)
}

impl Term {
    /// Start rc on a new terminal in `d.work` and wait for its first prompt.
    fn start(d: &Dirs, o: Opts<'_>) -> R<Term> {
        let (master, slave) = open_pty();
        let mut cmd = Command::new(RC);
        cmd.args(o.args)
            .current_dir(&d.work)
            .env_clear()
            .env("TERM", "xterm")
            .env("HOME", &d.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin");
        if !o.default_prompt {
            cmd.env("prompt", format!("{P1}\u{1}{P2}"));
        }
        for (k, v) in o.env {
            cmd.env(k, v);
        }
        let stdio = |f: &File| Stdio::from(OwnedFd::from(f.try_clone().expect("dup pty slave")));
        cmd.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: between fork and exec the child only makes system calls
        // (async-signal-safe): a new session, with the pty on fd 0 as its terminal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn rc");
        // Only rc (and its children) hold the slave now, so the reader sees the end
        // when they are gone.
        drop(cmd);
        drop(slave);
        let pid = child.id() as i32;
        let mut reader = master.try_clone().expect("dup pty master");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if tx.send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: the other side is closed.
                    Err(_) => break,
                }
            }
        });
        let (p1, p2) = if o.default_prompt {
            ("% ".to_string(), "\t".to_string())
        } else {
            (P1.to_string(), P2.to_string())
        };
        let mut t = Term {
            child,
            pid,
            reaped: false,
            master,
            rx,
            shown: Vec::new(),
            pos: 0,
            strip: Strip::Text,
            closed: false,
            p1,
            p2,
        };
        t.prompt()?;
        Ok(t)
    }

    /// A failure: `msg`, and what the terminal showed (the part not yet read past
    /// marked).
    fn fail(&self, msg: &str) -> Failure {
        let mut s = format!("{msg}\n--- terminal transcript (escape sequences removed) ---\n");
        let show = |s: &mut String, b: &[u8]| {
            for line in String::from_utf8_lossy(b).split_inclusive('\n') {
                s.push_str("  | ");
                s.push_str(&line.escape_debug().to_string());
                s.push('\n');
            }
        };
        show(&mut s, &self.shown[..self.pos]);
        s.push_str("--- not yet matched ---\n");
        show(&mut s, &self.shown[self.pos..]);
        let st = if self.closed { "closed" } else { "open" };
        s.push_str(&format!("--- (terminal {st}) ---"));
        Failure(s)
    }

    /// Take what the reader has sent, waiting until `deadline` for something.
    fn pump(&mut self, deadline: Instant) {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.rx.recv_timeout(wait) {
            Ok(b) => {
                self.strip.feed(&b, &mut self.shown);
                while let Ok(b) = self.rx.try_recv() {
                    self.strip.feed(&b, &mut self.shown);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                // Nothing more will come: wait out the deadline's worth no longer.
                std::thread::sleep(wait.min(Duration::from_millis(10)));
            }
        }
    }

    /// Wait up to `timeout` for `needle` to be shown; returns what came before it,
    /// and reads past both.
    fn expect_within(&mut self, needle: &str, timeout: Duration) -> R<String> {
        let deadline = Instant::now() + timeout;
        let n = needle.as_bytes();
        loop {
            if let Some(i) = self.shown[self.pos..].windows(n.len()).position(|w| w == n) {
                let start = self.pos;
                self.pos += i + n.len();
                return Ok(String::from_utf8_lossy(&self.shown[start..start + i]).into_owned());
            }
            if Instant::now() >= deadline || self.closed {
                let why = if self.closed {
                    "the terminal closed"
                } else {
                    "timed out"
                };
                return Err(self.fail(&format!(
                    "{why} waiting {timeout:?} for {needle:?} (rc pid {})",
                    self.pid
                )));
            }
            self.pump(deadline);
        }
    }

    fn expect(&mut self, needle: &str) -> R<String> {
        self.expect_within(needle, STEP)
    }

    /// Wait for the prompt for a new command; returns what was shown before it.
    fn prompt(&mut self) -> R<String> {
        let p = format!("\r{}", self.p1);
        self.expect(&p)
    }

    /// Wait for the prompt of a continuation line.
    fn prompt2(&mut self) -> R<String> {
        let p = format!("\r{}", self.p2);
        self.expect(&p)
    }

    fn send(&mut self, keys: &str) -> R {
        if let Err(e) = self.master.write_all(keys.as_bytes()) {
            return Err(self.fail(&format!("writing {keys:?} to the terminal: {e}")));
        }
        Ok(())
    }

    /// At a prompt: type `keys` and Enter, wait for the newline, then the next
    /// prompt; returns the output in between (without carriage returns).
    fn enter(&mut self, keys: &str) -> R<String> {
        self.send(keys)?;
        self.send("\r")?;
        // rustyline redraws the line (prompt included) while it is edited, but only
        // Enter moves to a new line: after it, the next prompt is a new one.
        self.expect("\n")?;
        Ok(self.prompt()?.replace('\r', ""))
    }

    /// `enter`, and the output must be `want`.
    fn run(&mut self, keys: &str, want: &str) -> R {
        let got = self.enter(keys)?;
        ensure!(
            self,
            got == want,
            "after typing {keys:?}: got output {got:?}, want {want:?}"
        );
        Ok(())
    }

    /// At a prompt: type `keys` and Enter, and wait for the continuation prompt.
    fn enter_continued(&mut self, keys: &str) -> R<String> {
        self.send(keys)?;
        self.send("\r")?;
        self.expect("\n")?;
        Ok(self.prompt2()?.replace('\r', ""))
    }

    /// Wait for rc to have a child running `comm` (exec'd, not merely forked).
    fn wait_for_child(&mut self, comm: &str) -> R {
        let deadline = Instant::now() + STEP;
        while !has_child(self.pid, comm) {
            if Instant::now() >= deadline {
                return Err(self.fail(&format!("no {comm} started by rc within {STEP:?}")));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Whether rc is still running.
    fn alive(&mut self) -> bool {
        if self.reaped {
            return false;
        }
        match self.child.try_wait() {
            Ok(None) => true,
            _ => {
                self.reaped = true;
                false
            }
        }
    }

    /// Wait for rc to exit (and reap it).
    fn wait_exit(&mut self) -> R<ExitStatus> {
        let deadline = Instant::now() + STEP;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    self.reaped = true;
                    return Ok(st);
                }
                Ok(None) if Instant::now() < deadline => {
                    // Keep the transcript current for a failure message.
                    self.pump(Instant::now() + Duration::from_millis(10));
                }
                Ok(None) => return Err(self.fail(&format!("rc did not exit within {STEP:?}"))),
                Err(e) => return Err(self.fail(&format!("waiting for rc: {e}"))),
            }
        }
    }

    /// Send rc a signal (not through the terminal).
    fn signal(&mut self, sig: libc::c_int) {
        // SAFETY: kill of the rc this test started and has not reaped.
        unsafe { libc::kill(self.pid, sig) };
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if !self.reaped {
            // rc leads its own session and process group; its commands are in that
            // group too (rc does no job control).
            // SAFETY: kill of the process group of an rc that has not been reaped, so
            // the id is still ours.
            unsafe {
                libc::kill(-self.pid, libc::SIGKILL);
                libc::kill(self.pid, libc::SIGKILL);
            }
            let _ = self.child.wait();
        }
    }
}

/// Whether process `ppid` has a child whose command name is `comm`.
fn has_child(ppid: i32, comm: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(l), Some(r)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[r + 1..].split_whitespace();
        let _state = rest.next();
        let parent = rest.next().and_then(|s| s.parse::<i32>().ok());
        if &stat[l + 1..r] == comm && parent == Some(ppid) {
            return true;
        }
    }
    false
}

/// The lines of a history file (rustyline's format: a `#V2` header, then a line
/// each).
fn history_lines(t: &Term, path: &Path) -> R<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s
            .lines()
            .filter(|l| *l != "#V2")
            .map(str::to_string)
            .collect()),
        Err(e) => Err(t.fail(&format!("reading history {}: {e}", path.display()))),
    }
}

// ---- line editing ----

#[test]
fn editing_keys() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    // Left twice, then insert.
    t.run("echo helo\x1b[D\x1b[Dl", "hello\n")?;
    // ^A to the start of the line, ^E back to the end.
    t.run("cho first\x01e", "first\n")?;
    t.run("echo secon\x01\x05d", "second\n")?;
    // ^U drops what is before the cursor; ^W the word before it.
    t.run("junk words\x15echo third", "third\n")?;
    t.run("echo fourth junk\x17fifth", "fourth fifth\n")?;
    // ^K drops what is from the cursor on.
    t.run("echo kept junk\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x0b", "kept\n")?;
    // Right, Home and End keys too.
    t.run("echo ac\x1b[D\x1b[D\x1b[Cb", "abc\n")?;
    t.run("cho sixt\x1b[He\x1b[Fh", "sixth\n")?;
    // ^D on a line with text deletes the character under the cursor, and rc goes on.
    t.run("echo abcX\x1b[D\x04", "abc\n")?;
    ensure!(t, t.alive(), "rc ended");
    Ok(())
}

// ---- history ----

#[test]
fn history_file_and_recall() -> R {
    let d = dirs();
    let hist = d.home.join("hist.txt");
    let h = hist.to_str().expect("utf-8 path");
    let mut t = Term::start(
        &d,
        Opts {
            env: &[("history", h)],
            ..Opts::default()
        },
    )?;
    t.run("echo one", "one\n")?;
    // Appended as entered: already there while rc still runs.
    let lines = history_lines(&t, &hist)?;
    ensure!(
        t,
        lines == ["echo one"],
        "history file after one command: {lines:?}"
    );
    t.run("echo $history", &format!("{h}\n"))?;
    t.run("echo two", "two\n")?;
    // Up recalls the last command; Up Up Up the one before that.
    t.run("\x1b[A", "two\n")?;
    t.run("\x1b[A\x1b[A\x1b[A", "one\n")?;
    // Down comes back towards the newest (history now: one, $history, two, one).
    t.run("\x1b[A\x1b[A\x1b[A\x1b[B", "two\n")?;
    // ^R searches back through the history.
    t.send("\x12$hist")?;
    t.expect("echo $history")?;
    t.run("", &format!("{h}\n"))?;
    // Recalled lines are entered again, but not one just like the line before.
    let lines = history_lines(&t, &hist)?;
    ensure!(
        t,
        lines
            == [
                "echo one",
                "echo $history",
                "echo two",
                "echo one",
                "echo two",
                "echo $history"
            ],
        "history file: {lines:?}"
    );
    // Nothing else was written under $home.
    ensure!(
        t,
        !d.home.join(".rc_history").exists(),
        "$home/.rc_history made though $history is set"
    );
    Ok(())
}

#[test]
fn history_set_in_the_session() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    let other = d.home.join("other-history");
    t.run(&format!("history={}", other.display()), "")?;
    t.run("echo into-other", "into-other\n")?;
    let lines = history_lines(&t, &other)?;
    ensure!(
        t,
        lines == ["echo into-other"],
        "$history set by assignment: {lines:?}"
    );
    // The assignment itself went to the default file, read before it ran.
    let def = history_lines(&t, &d.home.join(".rc_history"))?;
    ensure!(
        t,
        def.len() == 1 && def[0].starts_with("history="),
        "default history: {def:?}"
    );
    Ok(())
}

#[test]
fn history_shared_between_shells() -> R {
    let d = dirs();
    let hist = d.home.join("shared");
    let h = hist.to_str().expect("utf-8 path");
    let env = [("history", h)];
    let mut a = Term::start(
        &d,
        Opts {
            env: &env,
            ..Opts::default()
        },
    )?;
    a.run("echo from-a1", "from-a1\n")?;
    // A second rc with the same $history recalls the first one's command.
    let mut b = Term::start(
        &d,
        Opts {
            env: &env,
            ..Opts::default()
        },
    )?;
    b.run("\x1b[A", "from-a1\n")?;
    b.run("echo from-b1", "from-b1\n")?;
    // The first rc still appends without losing the second's line.
    a.run("echo from-a2", "from-a2\n")?;
    let lines = history_lines(&a, &hist)?;
    ensure!(
        a,
        lines == ["echo from-a1", "echo from-b1", "echo from-a2"],
        "shared history: {lines:?}"
    );
    // And a third, started now, recalls the newest line.
    b.send("\x04")?;
    b.wait_exit()?;
    let mut c = Term::start(
        &d,
        Opts {
            env: &env,
            ..Opts::default()
        },
    )?;
    c.run("\x1b[A", "from-a2\n")?;
    c.run("\x1b[A\x1b[A\x1b[A", "from-a1\n")?;
    Ok(())
}

#[test]
fn history_default_files() -> R {
    // No $home/lib: $home/.rc_history.
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    t.run("echo plain-home", "plain-home\n")?;
    let lines = history_lines(&t, &d.home.join(".rc_history"))?;
    ensure!(
        t,
        lines == ["echo plain-home"],
        "$home/.rc_history: {lines:?}"
    );
    ensure!(t, !d.home.join("lib").exists(), "$home/lib made");
    t.send("\x04")?;
    t.wait_exit()?;
    // A new rc finds it.
    let mut t = Term::start(&d, Opts::default())?;
    t.run("\x1b[A", "plain-home\n")?;
    drop(t);

    // With a $home/lib directory: $home/lib/rchistory.
    let d = dirs();
    std::fs::create_dir(d.home.join("lib")).expect("mkdir lib");
    let mut t = Term::start(&d, Opts::default())?;
    t.run("echo lib-home", "lib-home\n")?;
    let lines = history_lines(&t, &d.home.join("lib/rchistory"))?;
    ensure!(
        t,
        lines == ["echo lib-home"],
        "$home/lib/rchistory: {lines:?}"
    );
    ensure!(
        t,
        !d.home.join(".rc_history").exists(),
        "$home/.rc_history made though $home/lib is a directory"
    );
    Ok(())
}

#[test]
fn history_dev_null_keeps_none() -> R {
    let d = dirs();
    let mut t = Term::start(
        &d,
        Opts {
            env: &[("history", "/dev/null")],
            ..Opts::default()
        },
    )?;
    t.run("echo kept-nowhere", "kept-nowhere\n")?;
    // Still recalled within the session.
    t.run("\x1b[A", "kept-nowhere\n")?;
    let made: Vec<_> = std::fs::read_dir(&d.home)
        .expect("read home")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    ensure!(t, made.is_empty(), "files made in $home: {made:?}");
    Ok(())
}

// ---- completion ----

#[test]
fn completion_of_file_names() -> R {
    let d = dirs();
    std::fs::write(d.work.join("uniqfile"), "uniq contents\n").expect("write");
    std::fs::write(d.work.join("a b"), "spaced contents\n").expect("write");
    std::fs::write(d.work.join("it's"), "quoted contents\n").expect("write");
    std::fs::create_dir(d.work.join("subdir")).expect("mkdir");
    std::fs::write(d.work.join("subdir/inner.txt"), "inner contents\n").expect("write");
    let mut t = Term::start(&d, Opts::default())?;
    // A unique name.
    t.send("cat uniq\t")?;
    t.expect("cat uniqfile")?;
    t.run("", "uniq contents\n")?;
    // A name with a blank gets rc quotes.
    t.send("cat a\t")?;
    t.expect("cat 'a b'")?;
    t.run("", "spaced contents\n")?;
    t.send("cat it\t")?;
    t.expect("cat 'it''s'")?;
    t.run("", "quoted contents\n")?;
    // A directory gets a slash; a second tab goes on inside it.
    t.send("cat subd\t")?;
    t.expect("cat subdir/")?;
    t.send("\t")?;
    t.expect("cat subdir/inner.txt")?;
    t.run("", "inner contents\n")?;
    t.send("cd sub\t")?;
    t.expect("cd subdir/")?;
    t.run("", "")?;
    let want = format!("{}\n", d.work.join("subdir").display());
    t.run("pwd", &want)?;
    Ok(())
}

#[test]
fn completion_of_commands() -> R {
    let d = dirs();
    let bin = d.home.join("bin");
    std::fs::create_dir(&bin).expect("mkdir bin");
    let prog = bin.join("zzuniqcmd");
    std::fs::write(&prog, "#!/bin/sh\necho zzuniqcmd ran\n").expect("write");
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // Not executable: not a command.
    std::fs::write(bin.join("zzplainfile"), "").expect("write");
    let mut t = Term::start(&d, Opts::default())?;
    t.run(&format!("path=($path {})", bin.display()), "")?;
    // A program in $path.
    t.send("zzuniq\t")?;
    t.expect("zzuniqcmd")?;
    t.run("", "zzuniqcmd ran\n")?;
    // A function.
    t.run("fn zzmyfunc {echo in zzmyfunc}", "")?;
    t.send("zzmyf\t")?;
    t.expect("zzmyfunc")?;
    t.run("", "in zzmyfunc\n")?;
    // After `;` is command position too; after a command is not (no file matches).
    t.send("echo x; zzmyf\t")?;
    t.expect("echo x; zzmyfunc")?;
    t.run("", "x\nin zzmyfunc\n")?;
    t.run("echo zzmyf\t", "zzmyf\n")?;
    // The non-executable file is not offered.
    let out = t.enter("zzpla\t")?;
    ensure!(
        t,
        !out.contains("zzplainfile"),
        "a file that is not executable was completed as a command: {out:?}"
    );
    Ok(())
}

// ---- prompts ----

#[test]
fn prompts() -> R {
    let d = dirs();
    // rcmain's default: `% `, and a tab for continuation lines.
    let mut t = Term::start(
        &d,
        Opts {
            default_prompt: true,
            ..Opts::default()
        },
    )?;
    t.enter_continued("for(i in 1 2)")?;
    t.run("echo x$i", "x1\nx2\n")?;
    // A new $prompt takes effect at the next prompt.
    t.send("prompt=('new> ' 'more> ')\r")?;
    t.expect("\n")?;
    t.p1 = "new> ".into();
    t.p2 = "more> ".into();
    t.prompt()?;
    t.enter_continued("for(i in a b)")?;
    t.run("echo y$i", "ya\nyb\n")?;
    // A brace block: $prompt(2) on every line until it closes.
    t.enter_continued("{")?;
    t.enter_continued("echo inside")?;
    t.run("}", "inside\n")?;
    // A string open across lines.
    t.enter_continued("echo 'a")?;
    t.run("b'", "a\nb\n")?;
    Ok(())
}

// ---- interrupts ----

#[test]
fn interrupt_at_the_prompt() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    // The line typed so far is dropped.
    t.send("echo dropped-line")?;
    t.expect("dropped-line")?;
    t.send("\x03")?;
    t.expect("\n")?;
    let out = t.prompt()?;
    ensure!(
        t,
        !out.contains("dropped-line"),
        "the dropped line ran: {out:?}"
    );
    t.run("echo alive", "alive\n")?;
    // On a continuation line, the whole command is dropped and the prompt is
    // $prompt(1) again.
    t.enter_continued("for(i in 1 2)")?;
    t.send("\x03")?;
    t.expect("\n")?;
    t.prompt()?;
    t.run("echo done", "done\n")?;
    // Many interrupts in a row.
    for _ in 0..5 {
        t.send("\x03")?;
        t.expect("\n")?;
        t.prompt()?;
    }
    t.run("echo still alive", "still alive\n")?;
    ensure!(t, t.alive(), "rc ended");
    Ok(())
}

#[test]
fn interrupt_during_a_command() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    for round in 0..2 {
        t.send("sleep 10\r")?;
        t.expect("\n")?;
        t.wait_for_child("sleep")?;
        t.send("\x03")?;
        // Well before the 10 seconds are up.
        t.expect_within(&format!("\r{P1}"), INTERRUPT_LIMIT)?;
        ensure!(t, t.alive(), "round {round}: rc died of the interrupt");
        t.run("echo alive", "alive\n")?;
    }
    Ok(())
}

#[test]
fn interrupt_abandons_the_rest_of_the_line() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    // What follows the interrupted command on the line does not run.
    t.send("sleep 10; echo notreached\r")?;
    t.expect("\n")?;
    t.wait_for_child("sleep")?;
    t.send("\x03")?;
    let out = t.expect_within(&format!("\r{P1}"), INTERRUPT_LIMIT)?;
    ensure!(
        t,
        !out.contains("notreached"),
        "the rest of the line ran: {out:?}"
    );
    // A loop stops at once rather than going on to its next round.
    t.send("for(i in 1 2 3) sleep 3\r")?;
    t.expect("\n")?;
    t.wait_for_child("sleep")?;
    let start = Instant::now();
    t.send("\x03")?;
    t.expect_within(&format!("\r{P1}"), INTERRUPT_LIMIT)?;
    ensure!(
        t,
        start.elapsed() < Duration::from_secs(3),
        "the loop went on after ^C ({:?})",
        start.elapsed()
    );
    // No interrupt is left over to drop the next line.
    t.run("echo next", "next\n")?;
    t.run("echo $status", "\n")?;
    Ok(())
}

#[test]
fn completion_in_quoted_words_and_after_keywords() -> R {
    let d = dirs();
    std::fs::create_dir(d.work.join("sp dir")).expect("mkdir");
    std::fs::write(d.work.join("sp dir/inside"), "inside contents\n").expect("write");
    let mut t = Term::start(&d, Opts::default())?;
    t.send("cat sp\t")?;
    t.expect("cat 'sp dir'/")?;
    t.send("\t")?;
    t.expect("cat 'sp dir/inside'")?;
    t.run("", "inside contents\n")?;
    t.run("fn zzmyfunc {echo infunc}", "")?;
    t.send("if(true) zzmyf\t")?;
    t.expect("if(true) zzmyfunc")?;
    t.run("", "infunc\n")?;
    t.send("if not zzmyf\t")?;
    t.expect("if not zzmyfunc")?;
    t.send("\x03")?;
    t.prompt()?;
    Ok(())
}

#[test]
fn interrupt_runs_fn_sigint() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    t.run("fn sigint {echo caught}", "")?;
    // During a command: the command stops, sigint runs.
    t.send("sleep 10\r")?;
    t.expect("\n")?;
    t.wait_for_child("sleep")?;
    t.send("\x03")?;
    t.expect_within("caught\r\n", INTERRUPT_LIMIT)?;
    t.expect_within(&format!("\r{P1}"), INTERRUPT_LIMIT)?;
    t.run("echo alive", "alive\n")?;
    // What follows the interrupted command goes on, as in plan9port.
    t.send("sleep 10; echo after\r")?;
    t.expect("\n")?;
    t.wait_for_child("sleep")?;
    t.send("\x03")?;
    let out = t.expect_within(&format!("\r{P1}"), INTERRUPT_LIMIT)?;
    let out = out.replace('\r', "");
    ensure!(
        t,
        out.ends_with("caught\nafter\n"),
        "after ^C in `sleep 10; echo after`: {out:?}"
    );
    // At the prompt: the line is dropped and sigint runs.
    t.send("echo dropped-line")?;
    t.expect("dropped-line")?;
    t.send("\x03")?;
    t.expect("\n")?;
    let out = t.prompt()?.replace('\r', "");
    ensure!(t, out.contains("caught\n"), "^C at the prompt: {out:?}");
    ensure!(
        t,
        !out.contains("dropped-line"),
        "dropped line ran: {out:?}"
    );
    t.run("echo alive", "alive\n")?;
    ensure!(t, t.alive(), "rc ended");
    Ok(())
}

#[test]
fn quit_and_terminate_are_ignored() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    // At the prompt.
    t.signal(libc::SIGTERM);
    t.signal(libc::SIGQUIT);
    t.run("echo alive", "alive\n")?;
    // While a command runs (sent to rc only: the command goes on).
    t.send("sleep 10\r")?;
    t.expect("\n")?;
    t.wait_for_child("sleep")?;
    t.signal(libc::SIGTERM);
    t.signal(libc::SIGQUIT);
    ensure!(t, has_child(t.pid, "sleep"), "the command was stopped");
    t.send("\x03")?;
    t.expect_within(&format!("\r{P1}"), INTERRUPT_LIMIT)?;
    t.run("echo alive", "alive\n")?;
    ensure!(t, t.alive(), "rc ended");
    Ok(())
}

// ---- plain rc on a terminal ----

#[test]
fn plain_rc_on_a_terminal_is_interactive() -> R {
    let d = dirs();
    let mut t = Term::start(
        &d,
        Opts {
            args: &[],
            ..Opts::default()
        },
    )?;
    t.run("echo helo\x1b[D\x1b[Dl", "hello\n")?;
    t.run("\x1b[A", "hello\n")?;
    t.send("echo dropped-line\x03")?;
    t.expect("\n")?;
    t.prompt()?;
    t.send("sleep 10\r")?;
    t.expect("\n")?;
    t.wait_for_child("sleep")?;
    t.send("\x03")?;
    t.expect_within(&format!("\r{P1}"), INTERRUPT_LIMIT)?;
    t.run("echo alive", "alive\n")?;
    let lines = history_lines(&t, &d.home.join(".rc_history"))?;
    ensure!(
        t,
        lines == ["echo hello", "sleep 10", "echo alive"],
        "history: {lines:?}"
    );
    t.send("exit 4\r")?;
    let st = t.wait_exit()?;
    ensure!(t, st.code() == Some(4), "exit 4 gave {st:?}");
    Ok(())
}

// ---- ending ----

#[test]
fn exit_status() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    t.send("exit 3\r")?;
    let st = t.wait_exit()?;
    ensure!(t, st.code() == Some(3), "exit 3 gave {st:?}");
    Ok(())
}

#[test]
fn eof_ends_rc() -> R {
    let d = dirs();
    let mut t = Term::start(&d, Opts::default())?;
    t.run("echo last", "last\n")?;
    t.send("\x04")?;
    let st = t.wait_exit()?;
    ensure!(
        t,
        st.code() == Some(0),
        "^D after a successful command gave {st:?} (signal {:?})",
        st.signal()
    );
    Ok(())
}

#[test]
fn sigexit_runs_at_exit() -> R {
    let d = dirs();
    // `exit`.
    let mut t = Term::start(&d, Opts::default())?;
    t.run("fn sigexit {echo bye}", "")?;
    t.send("exit 3\r")?;
    t.expect("\n")?;
    t.expect("bye\r\n")?;
    let st = t.wait_exit()?;
    ensure!(t, st.code() == Some(3), "exit 3 gave {st:?}");
    drop(t);
    // End of file.
    let mut t = Term::start(&d, Opts::default())?;
    t.run("fn sigexit {echo bye from eof}", "")?;
    t.run("echo ok", "ok\n")?;
    t.send("\x04")?;
    t.expect("bye from eof\r\n")?;
    let st = t.wait_exit()?;
    ensure!(t, st.code() == Some(0), "^D gave {st:?}");
    Ok(())
}

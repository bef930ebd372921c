//! Private name spaces end to end (issue 6): rc scripts in tests/ns/ that `rfork n`,
//! bind, make unions, mount a ramfs posted in /srv and unmount, looking with the
//! host's `ls` and `cat` inside; and this harness looking from outside while they run.
//!
//! Each script `NAME.rc` runs in a fresh directory `$T` (a/, b/, c/, work/, home/ and
//! ns/, which is `$NAMESPACE`); what it prints (standard output and error, in order,
//! with `$T` for the directory) must be `NAME.out`. At each `checkpoint` the script
//! stops and waits on a fifo while the harness records the host's view of `$T` (the
//! files in it, and any mount of the test's on the host); that record must be
//! `NAME.outside`. A file `NAME.root.out` (or `.user.out`, `.outside`) is used
//! instead when the two modes differ. `NINESPACE_NS_BLESS=1` writes the files from
//! what the run gave (then read them through before committing).
//!
//! Every script runs twice: as root (`as_root::*`), and as the ordinary user
//! `ninespace-test` (created if missing) through setpriv (`as_user::*`), where the
//! engine makes a user namespace. Run as an ordinary user, the root runs are skipped
//! and the user runs are done as you. Without /dev/fuse open to the user or user
//! namespaces allowed, the tests are skipped, or fail with NINESPACE_REQUIRE_PEERS=1.
//!
//! After every run: no mount of the test's is left on the host, and no process with
//! the test's `$NAMESPACE` in its environment (the union and 9P servers the engine
//! started) is left once the scripts are gone. Every process is killed by pid when a
//! test fails, and everything runs against a deadline.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The ordinary user the tests run as when they are started as root.
const TEST_USER: &str = "ninespace-test";
/// How long a script (and each of its steps) may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the servers of a name space may take to go when it has gone.
const LEFTOVER_TIMEOUT: Duration = Duration::from_secs(3);
/// The scripts and what they must print.
const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ns");
/// The programs the scripts run from the build.
const BINS: [(&str, &str); 5] = [
    ("rc", env!("CARGO_BIN_EXE_rc")),
    ("ns", env!("CARGO_BIN_EXE_ns")),
    ("mk", env!("CARGO_BIN_EXE_mk")),
    ("ramfs", RAMFS),
    ("9p", NINEP),
];

// ---- the tests ----

/// The scripts: name, run as a login (`rc -l`), with a ramfs posted as `nstest`.
const SCRIPTS: &[(&str, bool, bool)] = &[
    ("bind", false, false),
    ("union", false, false),
    ("mount", false, true),
    ("rforkN", false, false),
    ("login", true, false),
    ("nonamespace", false, false),
    ("mk", false, false),
    ("security", false, true),
];

macro_rules! modes {
    ($($mode:ident => $m:expr),*) => {$(
        mod $mode {
            use super::*;
            #[test]
            fn bind() {
                script("bind", $m);
            }
            #[test]
            fn union() {
                script("union", $m);
            }
            #[test]
            fn mount() {
                script("mount", $m);
            }
            #[test]
            fn rfork_clean() {
                script("rforkN", $m);
            }
            #[test]
            fn login() {
                script("login", $m);
            }
            #[test]
            fn nonamespace() {
                script("nonamespace", $m);
            }
            #[test]
            fn mk_recipes() {
                script("mk", $m);
            }
            #[test]
            fn security() {
                security_test($m);
            }
            #[test]
            fn two_sessions() {
                sessions($m);
            }
        }
    )*};
}

modes!(as_root => Mode::Root, as_user => Mode::User);

/// A script from the table, checked inside (its output) and outside (the host's view
/// at each checkpoint).
fn script(name: &str, mode: Mode) {
    script_with(name, mode, |_, _, _| {});
}

/// Run a script of the table, calling `hook` at each checkpoint; false if skipped.
fn script_with(name: &str, mode: Mode, mut hook: impl FnMut(&Fixture, &Session, &str)) -> bool {
    let &(_, login, ramfs) = SCRIPTS
        .iter()
        .find(|s| s.0 == name)
        .expect("a script of the table");
    let Some(mut fx) = Fixture::new(mode) else {
        return false;
    };
    let t0 = Instant::now();
    if ramfs {
        fx.start_ramfs();
    }
    if login {
        let lib = fx.t.join("home/lib");
        std::fs::create_dir(&lib).expect("mkdir home/lib");
        std::fs::copy(fx.t.join("login.namespace"), lib.join("namespace")).expect("copy");
        std::fs::copy(fx.t.join("login.more"), lib.join("more")).expect("copy");
        fx.give(&lib);
    }
    let path = fx.t.join(format!("{name}.rc"));
    let path = path.to_str().expect("utf-8 path");
    let args: Vec<&str> = if login { vec!["-l", path] } else { vec![path] };
    let mut outside = fx.host_view("start");
    let mut s = Session::start(&fx, &args, "go");
    while let Some(cp) = s.next_checkpoint() {
        outside.push_str(&fx.host_view(&cp));
        hook(&fx, &s, &cp);
        s.release();
    }
    s.finish();
    outside.push_str(&fx.host_view("end"));
    fx.compare(name, "out", &s.out);
    fx.compare(name, "outside", &outside);
    fx.check_clean();
    eprintln!(
        "{name} as {}: {:.2}s",
        mode.name(),
        t0.elapsed().as_secs_f64()
    );
    true
}

/// The security script, and from outside while it holds its mounts: every mount made
/// in it is nosuid; FUSE mounts are the user's and not allow_other (root itself may not
/// look into the user's), as the kernel's mountinfo of the script's process shows.
fn security_test(mode: Mode) {
    let mut looked = false;
    let ran = script_with("security", mode, |fx, s, cp| {
        assert_eq!(cp, "mounted");
        looked = true;
        let pid = s.child.id();
        let info = std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
            .expect("the script's mountinfo");
        let t = fx.t.to_string_lossy();
        let mut seen = Vec::new();
        for l in info.lines() {
            let f: Vec<&str> = l.split(' ').collect();
            let point = f[4];
            let ours = point == format!("{t}/work") || point == "/n" || point == "/n/r";
            if !ours {
                continue;
            }
            let (_, sup) = l.split_once(" - ").expect("mountinfo line");
            let sup: Vec<&str> = sup.split(' ').collect();
            let (fstype, superopts) = (sup[0], sup.get(2).copied().unwrap_or(""));
            assert!(
                f[5].split(',').any(|o| o == "nosuid"),
                "a mount without nosuid: {l}"
            );
            if fstype.starts_with("fuse") {
                assert!(
                    !superopts.contains("allow_other"),
                    "a FUSE mount with allow_other: {l}"
                );
                assert!(
                    superopts
                        .split(',')
                        .any(|o| o == format!("user_id={}", fx.user.uid)),
                    "a FUSE mount not the user's: {l}"
                );
            }
            seen.push(format!("{point} {fstype}"));
        }
        let want = [format!("{t}/work"), "/n fuse".into(), "/n/r fuse".into()];
        for w in want {
            assert!(
                seen.iter().any(|s| s.starts_with(&w)),
                "no mount {w} in the script's name space: {seen:?}\n{info}"
            );
        }
        // Root outside, looking in through /proc: the plain bind is there; the user's
        // FUSE mounts are closed to it.
        if is_root() {
            let w = format!("/proc/{pid}/root{t}/work");
            assert_eq!(ls(Path::new(&w)), ["d", "onlya", "x"], "{w}");
        }
        if fx.user.other {
            let e = std::fs::read_dir(format!("/proc/{pid}/root/n"))
                .map(|_| ())
                .expect_err("root looked into the user's union");
            assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        }
    });
    assert!(!ran || looked, "the script did not get to its checkpoint");
}

/// Two sessions at once, each with its own binds on the same places: each sees only
/// its own, the host neither; looked at from outside through /proc as well.
fn sessions(mode: Mode) {
    let Some(fx) = Fixture::new(mode) else {
        return;
    };
    let t0 = Instant::now();
    let path = fx.t.join("session.rc");
    let path = path.to_str().expect("utf-8 path");
    let mut outside = fx.host_view("start");
    let mut a = Session::start(&fx, &[path, "a"], "go.a");
    assert_eq!(a.next_checkpoint().as_deref(), Some("bound"), "{}", a.out);
    let mut b = Session::start(&fx, &[path, "b"], "go.b");
    assert_eq!(b.next_checkpoint().as_deref(), Some("bound"), "{}", b.out);
    outside.push_str(&fx.host_view("both bound"));
    if is_root() {
        let t = fx.t.to_string_lossy();
        for (s, only) in [(&a, "onlya"), (&b, "onlyb")] {
            let w = format!("/proc/{}/root{t}/work", s.child.id());
            assert_eq!(ls(Path::new(&w)), ["d", only, "x"], "{w}");
        }
    }
    a.release();
    b.release();
    a.finish();
    b.finish();
    outside.push_str(&fx.host_view("end"));
    fx.compare("session.a", "out", &a.out);
    fx.compare("session.b", "out", &b.out);
    fx.compare("sessions", "outside", &outside);
    fx.check_clean();
    eprintln!(
        "two sessions as {}: {:.2}s",
        mode.name(),
        t0.elapsed().as_secs_f64()
    );
}

// ---- who runs them ----

#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Root,
    User,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::User => "user",
        }
    }
}

fn is_root() -> bool {
    // SAFETY: a getter that cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Skip (or, with NINESPACE_REQUIRE_PEERS=1, fail) for want of something.
fn skip(why: &str) {
    if std::env::var("NINESPACE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
}

/// A program on $PATH (or in the sbin directories, for useradd).
fn which(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(prog))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0)
        })
}

/// Who runs the scripts.
struct User {
    uid: u32,
    gid: u32,
    name: String,
    /// Someone other than us (we are root): commands go through setpriv.
    other: bool,
}

impl User {
    /// The user a mode runs as, if it can run here.
    fn get(mode: Mode) -> Option<User> {
        // SAFETY: getters that cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let me = || {
            let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| u.name)
                .unwrap_or_else(|| uid.to_string());
            User {
                uid,
                gid,
                name,
                other: false,
            }
        };
        match mode {
            Mode::Root if uid != 0 => {
                eprintln!("skipped: the root runs need root");
                None
            }
            Mode::Root => Some(me()),
            Mode::User if uid != 0 => Some(me()),
            Mode::User => {
                if which("setpriv").is_none() {
                    skip("no setpriv (util-linux) to run as an ordinary user");
                    return None;
                }
                static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
                let _one = CREATE.lock().unwrap_or_else(|e| e.into_inner());
                let find = || nix::unistd::User::from_name(TEST_USER).ok().flatten();
                let u = match find() {
                    Some(u) => u,
                    None => {
                        let useradd = which("useradd").expect("useradd (to create the test user)");
                        let st = Command::new(useradd)
                            .args([
                                "--system",
                                "--no-create-home",
                                "--shell",
                                "/usr/sbin/nologin",
                            ])
                            .arg(TEST_USER)
                            .stdin(Stdio::null())
                            .status()
                            .expect("run useradd");
                        find().unwrap_or_else(|| panic!("useradd {TEST_USER}: {st}"))
                    }
                };
                Some(User {
                    uid: u.uid.as_raw(),
                    gid: u.gid.as_raw(),
                    name: TEST_USER.into(),
                    other: true,
                })
            }
        }
    }

    /// `argv`, run as this user.
    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = if self.other {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", self.uid))
                .arg(format!("--regid={}", self.gid))
                .arg("--clear-groups")
                .arg("--")
                .args(argv);
            c
        } else {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        };
        c.stdin(Stdio::null());
        c
    }

    /// Does `argv`, run as this user, succeed?
    fn can(&self, argv: &[&str]) -> bool {
        run_with_input(&mut self.cmd(argv), None).status.success()
    }

    /// Whether private name spaces can work for this user here; if not, why.
    fn check(&self, mode: Mode) -> Result<(), String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        if !self.can(&["sh", "-c", "exec 3<>/dev/fuse"]) {
            return Err(format!("/dev/fuse is closed to {}", self.name));
        }
        if mode == Mode::User
            && which("unshare").is_some()
            && !self.can(&["unshare", "-Urm", "true"])
        {
            return Err("ordinary users may not make user namespaces here".into());
        }
        Ok(())
    }
}

// ---- a test's directory and processes ----

/// A test's directory `$T` and the ramfs it serves, with everything undone when dropped:
/// the processes of the test killed by pid, mounts detached, files removed.
struct Fixture {
    mode: Mode,
    user: User,
    _dir: tempfile::TempDir,
    /// The directory, as the kernel names it.
    t: PathBuf,
    /// Where the scripts find the programs.
    bin: PathBuf,
    ramfs: Option<Proc>,
    /// The host's /n and mounts at the start.
    host_n: Vec<String>,
    host_mounts: Vec<String>,
    /// No setuid-root program to try (as root, or setuid does not work in /tmp).
    no_suid: bool,
}

impl Fixture {
    fn new(mode: Mode) -> Option<Fixture> {
        let user = User::get(mode)?;
        if let Err(why) = user.check(mode) {
            skip(&why);
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("ninespace-ns.")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let t = dir.path().canonicalize().expect("canonicalize");
        chmod(&t, 0o755);
        let w = |p: &str, s: &str| std::fs::write(t.join(p), s).expect("write");
        for d in ["a", "a/d", "b", "b/d", "c", "work", "home", "ns", "bin"] {
            std::fs::create_dir(t.join(d)).expect("mkdir");
        }
        w("a/x", "a's x\n");
        w("a/onlya", "only in a\n");
        w("a/d/fa", "a's d/fa\n");
        w("b/x", "b's x\n");
        w("b/onlyb", "only in b\n");
        w("b/d/fb", "b's d/fb\n");
        chmod(&t.join("ns"), 0o700);
        for e in std::fs::read_dir(DIR).expect("tests/ns").flatten() {
            if e.file_type().is_ok_and(|f| f.is_file()) {
                let to = t.join(e.file_name());
                std::fs::copy(e.path(), &to).expect("copy a script");
                chmod(&to, 0o644);
            }
        }
        let mut fx = Fixture {
            mode,
            user,
            _dir: dir,
            t: t.clone(),
            bin: PathBuf::new(),
            ramfs: None,
            host_n: ls(Path::new("/n")),
            host_mounts: mountinfo(),
            no_suid: true,
        };
        for d in ["a", "b", "c", "work", "home", "ns"] {
            fx.give(&t.join(d));
        }
        // The programs: from the build, or copies where the user cannot reach it.
        let rc = BINS[0].1;
        fx.bin = if fx.user.can(&["test", "-x", rc]) {
            Path::new(rc).parent().expect("bin dir").to_path_buf()
        } else {
            for (name, path) in BINS {
                std::fs::copy(path, t.join("bin").join(name)).expect("copy a program");
                chmod(&t.join("bin").join(name), 0o755);
            }
            t.join("bin")
        };
        // A setuid-root program for the ordinary user: id(1), which says whose it is.
        // If setuid does not work here even outside (/tmp mounted nosuid), there is
        // nothing to show: the script's lines about it are left out on both sides.
        if fx.user.other {
            if let Some(id) = which("id") {
                let to = t.join("bin/suid-id");
                std::fs::copy(id, &to).expect("copy id");
                std::os::unix::fs::chown(&to, Some(0), Some(0)).expect("chown");
                chmod(&to, 0o4755);
                let out = run_with_input(&mut fx.user.cmd(&[&to.to_string_lossy(), "-u"]), None);
                if String::from_utf8_lossy(&out.stdout).trim() != "0" {
                    eprintln!("setuid does not work in /tmp here: not checked");
                    std::fs::remove_file(&to).expect("rm");
                }
            }
        }
        fx.no_suid = !t.join("bin/suid-id").exists();
        Some(fx)
    }

    /// Make `p` (and what is in it) the user's.
    fn give(&self, p: &Path) {
        if !self.user.other {
            return;
        }
        let (u, g) = (Some(self.user.uid), Some(self.user.gid));
        std::os::unix::fs::lchown(p, u, g).expect("chown");
        if p.is_dir() && !p.is_symlink() {
            for e in std::fs::read_dir(p).expect("readdir").flatten() {
                self.give(&e.path());
            }
        }
    }

    /// `argv` run as the user in `$T`, with the tests' environment only.
    fn cmd(&self, argv: &[&str]) -> Command {
        let mut c = self.user.cmd(argv);
        let path = format!("{}:/usr/local/bin:/usr/bin:/bin", self.bin.display());
        c.env_clear()
            .env("PATH", path)
            .env("T", &self.t)
            .env("NAMESPACE", self.ns())
            .env("HOME", self.t.join("home"))
            .env("USER", &self.user.name)
            .env("LC_ALL", "C")
            .env("MODE", self.mode.name())
            .env("U", self.user.uid.to_string())
            .current_dir(&self.t);
        c
    }

    fn ns(&self) -> PathBuf {
        self.t.join("ns")
    }

    fn prog(&self, name: &str) -> String {
        self.bin.join(name).to_string_lossy().into_owned()
    }

    /// ramfs posted as `nstest` in `$NAMESPACE`, by the user.
    fn start_ramfs(&mut self) {
        let c = self.cmd(&[&self.prog("ramfs"), "-f", "-s", "nstest"]);
        self.ramfs = Some(spawn_server(c, self.ns().join("nstest")));
    }

    /// The processes, but for ramfs and us, with the test's `$NAMESPACE` in their
    /// environment: what the scripts started, servers included.
    fn leftovers(&self) -> Vec<(i32, String)> {
        let mut key = b"NAMESPACE=".to_vec();
        key.extend(self.ns().as_os_str().as_encoded_bytes());
        key.push(0);
        let ramfs = self.ramfs.as_ref().map(|p| p.pid());
        let me = std::process::id() as i32;
        let mut out = Vec::new();
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if pid == me || Some(pid) == ramfs {
                continue;
            }
            let Ok(env) = std::fs::read(e.path().join("environ")) else {
                continue;
            };
            if env.starts_with(&key)
                || env
                    .windows(key.len() + 1)
                    .any(|w| w[0] == 0 && w[1..] == key[..])
            {
                let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
                // Zombies are their parents' to reap.
                if stat
                    .rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
                {
                    continue;
                }
                out.push((pid, cmd));
            }
        }
        out
    }

    /// Mounts on the host that are the test's: any naming `$T`, and any new one
    /// outside /tmp (where other tests make theirs).
    fn host_leaks(&self) -> Vec<String> {
        let t = self.t.to_string_lossy();
        mountinfo()
            .into_iter()
            .filter(|l| {
                let point = l.split(' ').nth(4).unwrap_or("");
                l.contains(&*t)
                    || l.contains("9p:nstest")
                    || (!point.starts_with("/tmp/") && !self.host_mounts.contains(l))
            })
            .collect()
    }

    /// The host's view of `$T`, at checkpoint `name`: every file with what it holds,
    /// and the test's mounts on the host (none, if nothing leaks). The host's /n must
    /// not change.
    fn host_view(&self, name: &str) -> String {
        let mut s = format!("--- {name}\n");
        for d in ["a", "b", "c", "work", "home"] {
            tree(&self.t, Path::new(d), &mut s);
        }
        for m in self.host_leaks() {
            s.push_str(&format!("host mount: {m}\n"));
        }
        assert_eq!(ls(Path::new("/n")), self.host_n, "the host's /n changed");
        s
    }

    /// Poll until the scripts' processes and mounts are gone; fail if they stay.
    fn check_clean(&self) {
        let start = Instant::now();
        loop {
            let (procs, mounts) = (self.leftovers(), self.host_leaks());
            if procs.is_empty() && mounts.is_empty() {
                return;
            }
            if start.elapsed() > LEFTOVER_TIMEOUT {
                panic!(
                    "left after {LEFTOVER_TIMEOUT:?}: processes {procs:?}, mounts on the host {mounts:?}"
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Compare `actual` (with `$T` put back) with the expected file, or write it.
    fn compare(&self, stem: &str, ext: &str, actual: &str) {
        let actual = actual.replace(&*self.t.to_string_lossy(), "$T");
        let mode_file = Path::new(DIR).join(format!("{stem}.{}.{ext}", self.mode.name()));
        let file = Path::new(DIR).join(format!("{stem}.{ext}"));
        if std::env::var("NINESPACE_NS_BLESS").as_deref() == Ok("1") {
            std::fs::write(&mode_file, &actual).expect("bless");
            return;
        }
        let f = if mode_file.exists() { mode_file } else { file };
        let want = std::fs::read_to_string(&f)
            .unwrap_or_else(|e| panic!("{}: {e}; it gave:\n{actual}", f.display()));
        let want: String = want
            .split_inclusive('\n')
            .filter(|l| !(self.no_suid && l.starts_with("setuid root")))
            .collect();
        if want != actual {
            panic!(
                "{} as {}: differs from {}\n{}",
                stem,
                self.mode.name(),
                f.display(),
                diff(&want, &actual)
            );
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for (pid, _) in self.leftovers() {
            // SAFETY: a process the test started (its $NAMESPACE is the test's own).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        drop(self.ramfs.take());
        let t = self.t.to_string_lossy().into_owned();
        for l in mountinfo().iter().rev() {
            let point = l.split(' ').nth(4).unwrap_or("");
            if point.starts_with(&t) {
                if let Ok(c) = std::ffi::CString::new(point) {
                    // SAFETY: detaching a mount of the test's on the host.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
    }
}

/// A script run by rc, its output read as it comes, killed (its process group, by
/// pid) if it is still running when dropped.
struct Session {
    child: Child,
    lines: mpsc::Receiver<Option<String>>,
    /// Standard output and error, as far as read.
    out: String,
    go: PathBuf,
    deadline: Instant,
    ended: bool,
}

impl Session {
    /// `rc args`, as the user, with the fifo `$T/go_name` as `$GO`.
    fn start(fx: &Fixture, args: &[&str], go_name: &str) -> Session {
        let go = fx.t.join(go_name);
        nix::unistd::mkfifo(&go, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
        fx.give(&go);
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let child = {
            let rc = fx.prog("rc");
            let mut argv = vec![rc.as_str()];
            argv.extend(args);
            let mut c = fx.cmd(&argv);
            c.env("GO", &go)
                .process_group(0)
                .stdout(Stdio::from(w.try_clone().expect("dup")))
                .stderr(Stdio::from(w));
            c.spawn().expect("spawn rc")
            // The command, holding our copies of the pipe's writing end, goes here.
        };
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(std::fs::File::from(r));
            loop {
                let mut l = Vec::new();
                match r.read_until(b'\n', &mut l) {
                    Ok(0) | Err(_) => {
                        let _ = tx.send(None);
                        return;
                    }
                    Ok(_) => {
                        if tx
                            .send(Some(String::from_utf8_lossy(&l).into_owned()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
        });
        Session {
            child,
            lines,
            out: String::new(),
            go,
            deadline: Instant::now() + SCRIPT_TIMEOUT,
            ended: false,
        }
    }

    fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Read on to the next checkpoint (its name), or to the end (None).
    fn next_checkpoint(&mut self) -> Option<String> {
        while !self.ended {
            match self.lines.recv_timeout(self.left()) {
                Ok(Some(l)) => {
                    self.out.push_str(&l);
                    if let Some(name) = l.strip_prefix("--- checkpoint ") {
                        return Some(name.trim_end().to_string());
                    }
                }
                Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => self.ended = true,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!(
                        "the script took over {SCRIPT_TIMEOUT:?}; so far:\n{}",
                        self.out
                    )
                }
            }
        }
        None
    }

    /// Let the script go on from its checkpoint.
    fn release(&mut self) {
        loop {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.go);
            match f {
                Ok(_) => return,
                Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
                Err(e) => panic!("{}: {e}", self.go.display()),
            }
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("the script ended ({st}) at a checkpoint:\n{}", self.out);
            }
            assert!(
                !self.left().is_zero(),
                "the script did not wait at its checkpoint:\n{}",
                self.out
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Read to the end and wait for rc.
    fn finish(&mut self) -> ExitStatus {
        if let Some(cp) = self.next_checkpoint() {
            panic!("an unexpected checkpoint {cp}:\n{}", self.out);
        }
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st;
            }
            assert!(!self.left().is_zero(), "rc did not exit:\n{}", self.out);
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

use std::os::unix::fs::OpenOptionsExt;

impl Drop for Session {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = self.child.id() as i32;
            // SAFETY: killing our own child's process group and it, by pid (not reaped,
            // so the ids are still theirs).
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
    }
}

// ---- helpers ----

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The names in a directory, sorted (none if it cannot be read).
fn ls(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Lines of our /proc/self/mountinfo.
fn mountinfo() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .map(str::to_string)
        .collect()
}

/// `rel` under `base` and everything in it, one line each: `dir/`, `file: contents`.
fn tree(base: &Path, rel: &Path, out: &mut String) {
    let p = base.join(rel);
    let Ok(md) = p.symlink_metadata() else {
        out.push_str(&format!("{}: gone\n", rel.display()));
        return;
    };
    if md.is_dir() {
        out.push_str(&format!("{}/\n", rel.display()));
        for name in ls(&p) {
            tree(base, &rel.join(name), out);
        }
    } else if md.is_file() {
        let text = std::fs::read(&p).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let text = text
            .strip_suffix('\n')
            .unwrap_or(&text)
            .replace('\n', "\\n");
        out.push_str(&format!("{}: {text}\n", rel.display()));
    } else {
        out.push_str(&format!("{}: {:?}\n", rel.display(), md.file_type()));
    }
}

/// Where `got` differs from `want`, line by line (a longest common subsequence).
fn diff(want: &str, got: &str) -> String {
    let (w, g): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
    // lcs[i][j]: the longest common subsequence of w[i..] and g[j..].
    let mut lcs = vec![vec![0usize; g.len() + 1]; w.len() + 1];
    for i in (0..w.len()).rev() {
        for j in (0..g.len()).rev() {
            lcs[i][j] = if w[i] == g[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut s) = (0, 0, String::new());
    while i < w.len() || j < g.len() {
        if i < w.len() && j < g.len() && w[i] == g[j] {
            s.push_str(&format!("   {}\n", w[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < g.len() && (i == w.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            s.push_str(&format!("+  {}\n", g[j]));
            j += 1;
        } else {
            s.push_str(&format!("-  {}\n", w[i]));
            i += 1;
        }
    }
    s
}

//! 9pfuse as an ordinary user, both ways it mounts without privilege: through the
//! setuid `fusermount3` outside any user namespace, and directly as root of a user
//! namespace of its own (`unshare -Urm`). ramfs is served by the same user; files are
//! written and read through the mount; SIGTERM, a busy mount and a server that dies all
//! leave no mount behind.
//!
//! The tests run as root in CI, so they do the work as the system user `ninespace-test`
//! (created if it is missing; `.ci/run` creates it too), through `setpriv`. Only the
//! user who mounted may look into a FUSE mount, root included, so the work itself is
//! done by this test binary run again as that user: `as_the_user` below, which does
//! nothing unless `NINESPACE_FUSE_USER` says which way to mount.
//!
//! FUSE is open to ordinary users only where /dev/fuse is (udev makes it 0666;
//! fusermount3 opens it with the user's rights, not its own). Where it is not, as on a
//! machine without udev, the test (as root) lends the user a 0666 node of the same
//! device, bound over /dev/fuse in a private mount namespace; fusermount3, the kernel
//! and 9pfuse see everything else as usual. As an ordinary user with /dev/fuse closed to
//! you, the tests are skipped.

mod common;

use common::*;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set (to "fusermount" or "userns") in the re-run test binary.
const HELPER: &str = "NINESPACE_FUSE_USER";
/// The ordinary user the tests run as when they are started as root.
const TEST_USER: &str = "ninespace-test";
/// How long one whole run as the user may take before it is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a mount or an unmount may take.
const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Debug)]
enum Way {
    /// An ordinary user outside any user namespace: fuser's mount(2) is refused, and it
    /// asks the setuid fusermount3.
    Fusermount,
    /// Root of a fresh user namespace (with its own mount namespace): mount(2) directly.
    Userns,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Fusermount => "fusermount",
            Way::Userns => "userns",
        }
    }
}

#[test]
fn through_fusermount3_as_an_ordinary_user() {
    run(Way::Fusermount);
}

#[test]
fn in_a_user_namespace_as_an_ordinary_user() {
    run(Way::Userns);
}

// ---- the outside: as whoever runs the tests (root in CI) ----

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

/// Who does the work.
struct User {
    uid: u32,
    gid: u32,
    /// Someone other than us (we are root): commands go through setpriv.
    other: bool,
}

impl User {
    /// We, unless we are root; then `ninespace-test`, created if it is missing.
    fn get() -> User {
        // SAFETY: getters that cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        if uid != 0 {
            return User {
                uid,
                gid,
                other: false,
            };
        }
        // Both tests may get here at once: one useradd.
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
        User {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
            other: true,
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

    /// Does `argv`, run as this user, succeed (quietly, within the time allowed)?
    fn can(&self, argv: &[&str]) -> bool {
        let out = run_with_input(
            self.cmd(argv).stdout(Stdio::null()).stderr(Stdio::null()),
            None,
        );
        out.status.success()
    }
}

/// A run of this binary as the user, with everything it made undone when dropped,
/// whether it passed, failed or hung.
struct Run {
    child: Option<Child>,
    base: tempfile::TempDir,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if matches!(c.try_wait(), Ok(None)) {
                // SAFETY: killing the process group our own child leads (it is not
                // reaped, so the id is still its): everything it started, whatever
                // user or namespace it became. A parent-death signal would not do,
                // as setpriv's change of user clears it.
                unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            }
            let _ = c.wait();
        }
        // A mount left in our own mount namespace (the plain fusermount3 way, killed).
        for m in mounts_under(self.base.path()) {
            let _ = Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(&m)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()) {
                // SAFETY: detaching a mount of ours by path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Mount points at or below `dir` in our mount namespace.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// Run the scenario (`as_the_user`) as an ordinary user, the way given.
fn run(way: Way) {
    if std::env::var_os(HELPER).is_some() {
        return;
    }
    let started = Instant::now();
    let dev = Path::new("/dev/fuse");
    let Ok(devmd) = dev.metadata() else {
        return skip("no /dev/fuse");
    };
    if way == Way::Fusermount && which("fusermount3").is_none() {
        return skip("no fusermount3 (Debian package fuse3)");
    }
    if way == Way::Userns && which("unshare").is_none() {
        return skip("no unshare (util-linux)");
    }
    let user = User::get();
    if user.other && which("setpriv").is_none() {
        return skip("no setpriv (util-linux) to run as an ordinary user");
    }
    if way == Way::Userns && !user.can(&["unshare", "-Urm", "true"]) {
        return skip("ordinary users may not make user namespaces here");
    }
    // Where the user may not open /dev/fuse, lend them a node of it (as root).
    let lend = !user.can(&["sh", "-c", "exec 3<>/dev/fuse"]);
    if lend && !user.other {
        return skip("/dev/fuse is closed to ordinary users here (udev makes it 0666)");
    }

    // A directory the user can reach: /tmp/ninespace-fuse-user.XXXX, 0755, with the
    // user's home and name space directory (0700, theirs) inside.
    let base = tempfile::Builder::new()
        .prefix("ninespace-fuse-user.")
        .tempdir_in("/tmp")
        .expect("tempdir");
    let mut run = Run { child: None, base };
    let base = run.base.path().to_path_buf();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let home = base.join("home");
    let ns = base.join("ns");
    for d in [&home, &ns] {
        std::fs::create_dir(d).expect("mkdir");
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        std::os::unix::fs::chown(d, Some(user.uid), Some(user.gid)).expect("chown");
    }
    let standin = base.join("dev");
    std::fs::create_dir(&standin).expect("mkdir");

    // The binaries, copied where the user can run them if the build is out of reach.
    let me = std::env::current_exe().expect("current_exe");
    let mut bins = [
        ("self", me),
        ("9pfuse", PathBuf::from(env!("CARGO_BIN_EXE_9pfuse"))),
        ("ramfs", PathBuf::from(RAMFS)),
        ("9p", PathBuf::from(NINEP)),
    ];
    for (name, path) in bins.iter_mut() {
        if !user.can(&["test", "-x", &path.to_string_lossy()]) {
            let dir = base.join("bin");
            let _ = std::fs::create_dir(&dir);
            let to = dir.join(*name);
            std::fs::copy(&*path, &to).expect("copy binary");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).expect("chmod");
            *path = to;
        }
    }
    let bin = |name: &str| {
        bins.iter()
            .find(|(n, _)| *n == name)
            .map(|(_, p)| p.to_string_lossy().into_owned())
            .expect("binary")
    };

    // From the inside out: the test binary; in a user namespace of its own; as the
    // user; with /dev/fuse lent.
    let mut argv: Vec<String> = vec![bin("self"), "--exact".into(), "as_the_user".into()];
    argv.extend(["--nocapture".into(), "--test-threads=1".into()]);
    if way == Way::Userns {
        let userns = ["unshare", "-Urm", "--fork", "--pid", "--kill-child", "--"];
        argv.splice(0..0, userns.map(String::from));
    }
    if user.other {
        let pre: Vec<String> = vec![
            "setpriv".into(),
            format!("--reuid={}", user.uid),
            format!("--regid={}", user.gid),
            "--clear-groups".into(),
            "--".into(),
        ];
        argv.splice(0..0, pre);
        if lend {
            let rdev = devmd.rdev();
            let script = "set -e; d=$1 maj=$2 min=$3; shift 3
                mount -t tmpfs -o mode=0755,size=16k ninespace-dev \"$d\"
                mknod -m 0666 \"$d/fuse\" c \"$maj\" \"$min\"
                mount --bind \"$d/fuse\" /dev/fuse
                exec \"$@\"";
            let pre: Vec<String> = vec![
                "unshare".into(),
                "-m".into(),
                "--propagation".into(),
                "private".into(),
                "--fork".into(),
                "--pid".into(),
                "--kill-child".into(),
                "--".into(),
                "sh".into(),
                "-c".into(),
                script.into(),
                "sh".into(),
                standin.to_string_lossy().into_owned(),
                libc::major(rdev).to_string(),
                libc::minor(rdev).to_string(),
            ];
            argv.splice(0..0, pre);
        }
    }
    let mut cmd = Command::new(&argv[0]);
    // Its own process group, to be killed as one if it overstays.
    cmd.args(&argv[1..])
        .process_group(0)
        .env(HELPER, way.name())
        .env("NAMESPACE", &ns)
        .env("HOME", &home)
        .env("TMPDIR", &home)
        .env("NINESPACE_FUSE_USER_9PFUSE", bin("9pfuse"))
        .env("NINESPACE_FUSE_USER_RAMFS", bin("ramfs"))
        .env("NINESPACE_FUSE_USER_9P", bin("9p"))
        .env_remove("FUSERMOUNT_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn the run as the user");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    run.child = Some(child);
    let status = loop {
        if let Ok(Some(st)) = run.child.as_mut().expect("child").try_wait() {
            break Some(st);
        }
        if started.elapsed() > RUN_TIMEOUT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if status.is_none() {
        drop(run); // kills it all, unmounts
    }
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let how = format!(
        "{} as uid {}{}",
        way.name(),
        user.uid,
        if lend { ", /dev/fuse lent" } else { "" }
    );
    eprintln!("--- {how}\n{out}{err}");
    let Some(status) = status else {
        panic!("the run as the user ({how}) took over {RUN_TIMEOUT:?}");
    };
    assert!(
        status.success(),
        "the run as the user ({how}) failed: {status}"
    );
    assert!(
        out.contains("all done"),
        "the run as the user ({how}) did not get to the end"
    );
    assert!(
        mounts_under(&base).is_empty(),
        "mounts left behind: {:?}",
        mounts_under(&base)
    );
    eprintln!("{how}: {:.2}s in all", started.elapsed().as_secs_f64());
}

// ---- the inside: as the ordinary user ----

/// The scenario, run as the user by `run` (a no-op in an ordinary test run).
#[test]
fn as_the_user() {
    let Ok(way) = std::env::var(HELPER) else {
        return;
    };
    let way = if way == Way::Userns.name() {
        Way::Userns
    } else {
        Way::Fusermount
    };
    let t0 = Instant::now();
    let step = |what: &str| println!("{:6.2}s {what}", t0.elapsed().as_secs_f64());
    // SAFETY: getters that cannot fail.
    let (uid, euid) = unsafe { (libc::getuid(), libc::geteuid()) };
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").expect("uid_map");
    let map: Vec<u64> = uid_map
        .split_whitespace()
        .map(|n| n.parse().expect("uid_map"))
        .collect();
    match way {
        Way::Fusermount => {
            assert!(uid != 0 && euid != 0, "not an ordinary user: uid {uid}");
            assert_eq!(map, [0, 0, 4294967295], "in a user namespace: {uid_map}");
        }
        Way::Userns => {
            // Root here, an ordinary user outside.
            assert_eq!(uid, 0);
            assert!(
                map.len() == 3 && map[0] == 0 && map[1] != 0 && map[2] == 1,
                "not an ordinary user's namespace: {uid_map}"
            );
        }
    }
    step(&format!("{} as uid {uid} ({})", way.name(), uid_map.trim()));

    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let ns = PathBuf::from(std::env::var_os("NAMESPACE").expect("NAMESPACE"));
    let srv = start_ramfs(&ns, "ram");
    step("ramfs posted as ram");
    let m = home.join("m");
    std::fs::create_dir(&m).expect("mkdir");
    let fstype = match way {
        Way::Fusermount => "fuse.9pfuse",
        Way::Userns => "fuse",
    };

    if way == Way::Fusermount {
        // Letting others in is for the administrator to allow.
        let conf = std::fs::read_to_string("/etc/fuse.conf").unwrap_or_default();
        if !conf.lines().any(|l| l.trim() == "user_allow_other") {
            let out = run_with_input(
                Command::new(bin("9PFUSE", env!("CARGO_BIN_EXE_9pfuse")))
                    .args(["-o", "allow_other", "ram"])
                    .arg(&m),
                None,
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.starts_with("9pfuse: mount ") && err.contains("user_allow_other"),
                "{err:?}"
            );
            assert!(top_mount(&m).is_none());
            step(&format!("-o allow_other refused: {}", err.trim()));
        }
    }

    // Mounted, used, and gone on SIGTERM.
    let mut f = Fuse::start("ram", &m, &[]);
    let (ty, source, opts) = top_mount(&m).expect("mounted");
    assert_eq!((ty.as_str(), source.as_str()), (fstype, "ram"), "{opts}");
    assert!(opts.contains(&format!("user_id={uid},")), "{opts}");
    step(&format!("mounted: {ty} {source} {opts}"));
    exercise(&m, uid);
    let out = run_with_input(
        Command::new(bin("9P", NINEP))
            .env("NAMESPACE", &ns)
            .args(["read", "ram/kept"]),
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "written through the mount\n",
        "9p read: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    step("files written, read, listed, renamed and removed; the server has them");
    let st = f.term();
    assert!(st.success(), "9pfuse on SIGTERM: {st}: {}", f.stderr());
    assert!(top_mount(&m).is_none(), "the mount stayed after SIGTERM");
    drop(f);
    step("SIGTERM: 9pfuse exited 0, unmounted");

    // Busy (a file held open in it): unmounted lazily all the same.
    let mut f = Fuse::start("ram", &m, &[]);
    std::fs::write(m.join("held"), "held").expect("write");
    let held = std::fs::File::open(m.join("held")).expect("open");
    let st = f.term();
    assert!(
        st.success(),
        "9pfuse on SIGTERM, busy: {st}: {}",
        f.stderr()
    );
    assert!(
        top_mount(&m).is_none(),
        "the busy mount stayed after SIGTERM"
    );
    drop(held);
    drop(f);
    step("SIGTERM with a file open in it: detached");

    if way == Way::Fusermount {
        // fuser's own unmount refused (FUSERMOUNT_PATH mounts, but will not unmount):
        // 9pfuse's lazy_unmount must see the mount is its own and have fusermount3
        // detach it, as umount2 is not for ordinary users.
        let wrapper = home.join("fusermount-no-u");
        let refused = home.join("unmount-refused");
        let script = format!(
            "#!/bin/sh\n\
             for a; do\n\
             \tif [ \"$a\" = -u ]; then : >'{}'; exit 1; fi\n\
             done\n\
             exec fusermount3 \"$@\"\n",
            refused.display()
        );
        std::fs::write(&wrapper, script).expect("write wrapper");
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut f = Fuse::start("ram", &m, &[("FUSERMOUNT_PATH", wrapper.as_os_str())]);
        std::fs::write(m.join("x"), "x").expect("write");
        let st = f.term();
        assert!(st.success(), "9pfuse on SIGTERM: {st}: {}", f.stderr());
        assert!(refused.exists(), "fuser did not try to unmount");
        assert!(top_mount(&m).is_none(), "lazy_unmount did not unmount");
        drop(f);
        step("fuser's unmount refused: lazy_unmount had fusermount3 -u -z detach it");
    }

    // Another mount under ours is not its to unmount: only the topmost, if it is a
    // FUSE mount of the service, is (the check in lazy_unmount). Not through
    // fusermount3, which will not mount on a FUSE mount (it looks at the mount point
    // as root, whom FUSE keeps out).
    if way == Way::Userns {
        let other = start_ramfs(&ns, "other");
        let mut below = Fuse::start("other", &m, &[]);
        let mut f = Fuse::start("ram", &m, &[]);
        let st = f.term();
        assert!(st.success(), "9pfuse on SIGTERM: {st}: {}", f.stderr());
        drop(f);
        let top = top_mount(&m).map(|(ty, src, _)| (ty, src));
        assert_eq!(
            top,
            Some((fstype.to_string(), "other".to_string())),
            "the mount below went too"
        );
        let st = below.term();
        assert!(st.success(), "9pfuse on SIGTERM: {st}: {}", below.stderr());
        assert!(top_mount(&m).is_none(), "the mount stayed after SIGTERM");
        drop(below);
        drop(other);
        step("a mount of another service below ours: left alone, then unmounted in turn");
    }

    // The server killed: 9pfuse says so, unmounts and exits 1.
    let mut f = Fuse::start("ram", &m, &[]);
    std::fs::write(m.join("f"), "x").expect("write");
    // SAFETY: signalling our own child.
    // (Not reaped here: the zombie keeps its pid from being reused until srv drops.)
    unsafe { libc::kill(srv.pid(), libc::SIGKILL) };
    let st = f
        .wait(MOUNT_TIMEOUT)
        .expect("9pfuse did not notice the server going");
    assert_eq!(st.code(), Some(1), "9pfuse exit status {st}");
    assert!(
        f.stderr().contains("9pfuse: ram: server hung up"),
        "{:?}",
        f.stderr()
    );
    assert!(top_mount(&m).is_none(), "the mount outlived the server");
    drop(f);
    drop(srv);
    step("ramfs killed: 9pfuse said so, exited 1, unmounted");
    step("all done");
}

/// A binary, from the environment the outside gave (perhaps a copy) or the build.
fn bin(name: &str, built: &str) -> String {
    std::env::var(format!("NINESPACE_FUSE_USER_{name}")).unwrap_or_else(|_| built.into())
}

/// Have the child get `sig` when we die, so that nothing outlives a killed run.
fn die_with_us(c: &mut Command, sig: i32) {
    // SAFETY: only prctl(2) between fork and exec.
    unsafe {
        c.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn start_ramfs(ns: &Path, name: &str) -> Proc {
    let mut c = Command::new(bin("RAMFS", RAMFS));
    c.env("NAMESPACE", ns).args(["-f", "-s", name]);
    die_with_us(&mut c, libc::SIGKILL);
    spawn_server(c, ns.join(name))
}

/// The topmost mount on `dir` in our mount namespace: type, source, options.
fn top_mount(dir: &Path) -> Option<(String, String, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let d = dir.to_string_lossy();
    let l = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(&*d))?;
    let mut f = l.split(" - ").nth(1)?.split(' ');
    let ty = f.next()?.to_string();
    let source = f.next()?.to_string();
    let opts = format!("{},", f.next().unwrap_or(""));
    Some((ty, source, opts))
}

/// A running 9pfuse on `dir`, stopped and unmounted when dropped.
struct Fuse {
    child: Child,
    service: String,
    dir: PathBuf,
    stderr: tempfile::NamedTempFile,
    status: Option<std::process::ExitStatus>,
}

impl Fuse {
    /// 9pfuse `service` `dir`, with `env` added; returns once the service is mounted.
    fn start(service: &str, dir: &Path, env: &[(&str, &std::ffi::OsStr)]) -> Fuse {
        let (file, stderr) = stderr_file();
        let mut c = Command::new(bin("9PFUSE", env!("CARGO_BIN_EXE_9pfuse")));
        c.arg(service)
            .arg(dir)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stderr(stderr);
        die_with_us(&mut c, libc::SIGTERM);
        let child = c.spawn().expect("spawn 9pfuse");
        let mut f = Fuse {
            child,
            service: service.into(),
            dir: dir.to_path_buf(),
            stderr: file,
            status: None,
        };
        let start = Instant::now();
        while top_mount(dir).is_none_or(|(ty, src, _)| !ty.starts_with("fuse") || src != service) {
            if let Ok(Some(st)) = f.child.try_wait() {
                f.status = Some(st);
                panic!("9pfuse exited before mounting: {st}: {}", f.stderr());
            }
            assert!(
                start.elapsed() < MOUNT_TIMEOUT,
                "9pfuse did not mount: {}",
                f.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        f
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.stderr.path()).unwrap_or_default()
    }

    /// Its exit status, waiting at most `limit`.
    fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while self.status.is_none() && start.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            } else {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.status
    }

    /// SIGTERM, and how it exited.
    fn term(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.wait(MOUNT_TIMEOUT)
            .expect("9pfuse did not exit on SIGTERM")
    }
}

impl Drop for Fuse {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            if self.wait(Duration::from_secs(5)).is_none() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
        if top_mount(&self.dir)
            .is_some_and(|(ty, src, _)| ty.starts_with("fuse") && src == self.service)
        {
            if let Ok(c) = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()) {
                // SAFETY: detaching our own mount (root of a user namespace may).
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            let _ = Command::new("fusermount3")
                .args(["-u", "-z", "--"])
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// What a program does with files, through the mount; all of it as this user.
fn exercise(m: &Path, uid: u32) {
    let p = |n: &str| m.join(n);
    // Create, write at offsets, read back; ours.
    let mut f = std::fs::File::create(p("f")).expect("create");
    f.write_all(b"hello, world\n").expect("write");
    f.seek(SeekFrom::Start(7)).expect("seek");
    f.write_all(b"there").expect("write at offset");
    f.sync_all().expect("fsync");
    drop(f);
    assert_eq!(
        std::fs::read_to_string(p("f")).expect("read"),
        "hello, there\n"
    );
    let md = std::fs::metadata(p("f")).expect("stat");
    assert_eq!((md.uid(), md.len()), (uid, 13));
    // Append, truncate.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(p("f"))
        .expect("open append");
    f.write_all(b"more\n").expect("append");
    drop(f);
    assert_eq!(
        std::fs::read_to_string(p("f")).expect("read"),
        "hello, there\nmore\n"
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(p("f"))
        .expect("open");
    f.set_len(5).expect("truncate");
    drop(f);
    assert_eq!(std::fs::read_to_string(p("f")).expect("read"), "hello");
    // Directories, listing, rename, remove; errors as errnos.
    std::fs::create_dir(p("d")).expect("mkdir");
    for i in 0..20 {
        std::fs::write(p(&format!("d/x{i}")), format!("{i}")).expect("write");
    }
    let mut names: Vec<String> = std::fs::read_dir(p("d"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 20);
    std::fs::rename(p("d/x7"), p("d/y7")).expect("rename");
    assert_eq!(std::fs::read_to_string(p("d/y7")).expect("read"), "7");
    let e = std::fs::read(p("nosuch")).expect_err("missing file");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    for e in std::fs::read_dir(p("d")).expect("readdir") {
        std::fs::remove_file(e.expect("entry").path()).expect("unlink");
    }
    std::fs::remove_dir(p("d")).expect("rmdir");
    std::fs::remove_file(p("f")).expect("unlink");
    // A file bigger than a message, both ways.
    let big: Vec<u8> = (0..(1u32 << 20) + 321)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(p("big"), &big).expect("write big");
    assert!(
        std::fs::read(p("big")).expect("read big") == big,
        "big differs"
    );
    std::fs::remove_file(p("big")).expect("unlink");
    std::fs::write(p("kept"), "written through the mount\n").expect("write");
    assert_eq!(std::fs::read_dir(m).expect("readdir").count(), 1);
}

//! 9P authentication end to end: ramfs `--auth` with its factotum, an authsrv, and
//! clients (9p, 9pfuse, lib9's client) with a factotum of their own, each side in
//! its own $NAMESPACE. The clients are given no flag: they authenticate because the
//! server asks.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod common;
use common::auth::AuthSrv;
use common::fuse_or_skip;

const LIMIT: Duration = Duration::from_secs(20);
const DOM: &str = "auth9p.test";

/// A process killed (by pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + LIMIT;
    while std::os::unix::net::UnixStream::connect(path).is_err() {
        assert!(
            Instant::now() < deadline,
            "{} never answered",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A $NAMESPACE directory with a factotum in it holding `keys`.
fn factotum(ns: &Path, authaddr: &str, keys: &[String]) -> Proc {
    std::fs::create_dir_all(ns).expect("mkdir");
    std::fs::set_permissions(ns, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let p = Proc(
        Command::new(env!("CARGO_BIN_EXE_factotum"))
            .args(["-n", "-f", "-a", authaddr])
            .env("NAMESPACE", ns)
            .stdin(Stdio::null())
            .spawn()
            .expect("start factotum"),
    );
    wait_for(&ns.join("factotum"));
    for k in keys {
        let mut c = Command::new(env!("CARGO_BIN_EXE_9p"))
            .args(["write", "factotum/ctl"])
            .env("NAMESPACE", ns)
            .stdin(Stdio::piped())
            .spawn()
            .expect("9p write ctl");
        if let Some(mut i) = c.stdin.take() {
            // One write: 9p writes each read of its input to ctl as it comes.
            i.write_all(format!("key {k}").as_bytes()).expect("key");
        }
        assert!(c.wait().expect("wait").success(), "key {k} refused");
    }
    p
}

fn key(user: &str, pw: &str) -> String {
    format!("proto=p9sk1 dom={DOM} user={user} !password='{pw}'")
}

fn dp9ik(user: &str, pw: &str) -> String {
    format!("proto=dp9ik dom={DOM} user={user} !password='{pw}'")
}

/// Everything one test needs: an authsrv, the server's factotum and an
/// authenticating ramfs on a unix socket, and a client $NAMESPACE whose factotum
/// holds `client_keys`.
struct World {
    _procs: Vec<Proc>,
    _auth: AuthSrv,
    dir: tempfile::TempDir,
    addr: String,
}

impl World {
    fn new(client_keys: &[String]) -> World {
        World::with(client_keys, &["--auth", "--authdom", DOM])
    }

    fn with(client_keys: &[String], ramfs_flags: &[&str]) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let auth = AuthSrv::start_with(&["--authdom", DOM]);
        let authaddr = auth.addr.clone();
        let sns = dir.path().join("server-ns");
        let f1 = factotum(
            &sns,
            &authaddr,
            &[key("bootes", "bootes pw"), dp9ik("bootes", "bootes pw")],
        );
        let cns = dir.path().join("client-ns");
        let f2 = factotum(&cns, &authaddr, client_keys);
        let sock = dir.path().join("ram.sock");
        let r = Proc(
            Command::new(env!("CARGO_BIN_EXE_ramfs"))
                .args(["-f", "-a"])
                .arg(format!("unix!{}", sock.display()))
                .args(ramfs_flags)
                .env("NAMESPACE", &sns)
                .stdin(Stdio::null())
                .spawn()
                .expect("start ramfs"),
        );
        wait_for(&sock);
        World {
            addr: format!("unix!{}", sock.display()),
            dir,
            _procs: vec![r, f2, f1],
            _auth: auth,
        }
    }

    fn client_ns(&self) -> PathBuf {
        self.dir.path().join("client-ns")
    }

    /// Run `9p -a addr args...` as the client, with `input` on standard input.
    fn nine(&self, args: &[&str], input: &str) -> Output {
        let mut c = Command::new(env!("CARGO_BIN_EXE_9p"))
            .args(["-a", &self.addr])
            .args(args)
            .env("NAMESPACE", self.client_ns())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("9p");
        if let Some(mut i) = c.stdin.take() {
            i.write_all(input.as_bytes()).expect("stdin");
        }
        wait_output(c)
    }
}

fn wait_output(c: Child) -> Output {
    let pid = c.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(c.wait_with_output());
    });
    match rx.recv_timeout(LIMIT) {
        Ok(o) => o.expect("wait"),
        Err(_) => {
            // SAFETY: kill(2) on a pid we started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("pid {pid} hung");
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn client_authenticates_without_being_asked_to() {
    let w = World::new(&[key("glenda", "glenda pw")]);
    let o = w.nine(&["create", "hello"], "");
    assert!(o.status.success(), "create: {}", text(&o.stderr));
    let o = w.nine(&["write", "hello"], "authenticated\n");
    assert!(o.status.success(), "write: {}", text(&o.stderr));
    let o = w.nine(&["read", "hello"], "");
    assert!(o.status.success(), "read: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "authenticated\n");
    // The file belongs to the user the ticket proved, not to the local user name.
    let o = w.nine(&["ls", "-l", "hello"], "");
    assert!(o.status.success(), "ls: {}", text(&o.stderr));
    assert!(text(&o.stdout).contains("glenda"), "{}", text(&o.stdout));
}

#[test]
fn no_key_is_refused() {
    let w = World::new(&[]);
    let o = w.nine(&["ls", "/"], "");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    eprintln!("{err}");
    assert!(err.contains("auth_proxy"), "{err}");
    assert!(err.contains("needkey") || err.contains("key"), "{err}");
}

#[test]
fn wrong_password_is_refused() {
    let w = World::new(&[key("glenda", "not glenda pw")]);
    let o = w.nine(&["ls", "/"], "");
    assert!(!o.status.success());
    let err = text(&o.stderr);
    assert!(err.contains("auth_proxy"), "{err}");
    assert!(err.contains("key mismatch"), "{err}");
}

#[test]
fn unauthenticated_server_still_attaches() {
    // A server that does not ask: Tauth is refused and the attach goes plainly,
    // even with no factotum keys at all.
    let w = World::with(&[], &[]);
    let o = w.nine(&["create", "x"], "");
    assert!(o.status.success(), "{}", text(&o.stderr));
}

#[test]
fn attach_without_auth_fid_is_refused() {
    let w = World::new(&[key("glenda", "glenda pw")]);
    let c = lib9::blocking::Client::dial(&w.addr).expect("dial");
    let (rt, inner) = c.inner();
    let Err(e) = rt.block_on(inner.attach_auth(None, "glenda", "")) else {
        panic!("attach without authentication must fail");
    };
    assert_eq!(e.to_string(), "authentication required");
}

#[test]
fn claimed_user_must_be_the_proved_one() {
    // Authenticate as glenda, then claim to be bootes at attach.
    let w = World::new(&[key("glenda", "glenda pw")]);
    let c = lib9::blocking::Client::dial(&w.addr).expect("dial");
    let (rt, inner) = c.inner();
    let ns = w.client_ns();
    let r: Result<(), String> = rt.block_on(async {
        let afid = inner.auth("glenda", "").await.map_err(|e| e.to_string())?;
        let f = format!("unix!{}", ns.join("factotum").display());
        let ai = lib9::auth::proxy_at(&afid, "proto=p9any role=client", &f).await;
        let ai = ai.map_err(|e| e.to_string())?;
        assert_eq!(ai.cuid, "glenda");
        assert_eq!(ai.suid, "glenda");
        assert_eq!(ai.secret.len(), 8);
        match inner.attach_auth(Some(&afid), "bootes", "").await {
            Ok(_) => Err("attach as another user succeeded".into()),
            Err(e) => {
                assert_eq!(e.to_string(), "auth uname mismatch: glenda vs bootes");
                Ok(())
            }
        }
    });
    r.expect("exchange");
}

/// A 9pfuse mount, taken down (by pid) when dropped.
struct Mount {
    p: Option<Child>,
    dir: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(mut p) = self.p.take() {
            // SAFETY: kill(2) on a pid we started; SIGTERM unmounts.
            unsafe { libc::kill(p.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + LIMIT;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = p.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = p.kill();
            let _ = p.wait();
        }
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.dir)
            .stderr(Stdio::null())
            .status();
    }
}

fn mounted(dir: &Path) -> bool {
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let d = dir.to_string_lossy();
    mi.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| m == d))
}

#[test]
fn ninepfuse_mounts_through_factotum() {
    if !fuse_or_skip() {
        return;
    }
    let w = World::new(&[key("glenda", "glenda pw")]);
    let mnt = w.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let p = Command::new(env!("CARGO_BIN_EXE_9pfuse"))
        .arg(&w.addr)
        .arg(&mnt)
        .env("NAMESPACE", w.client_ns())
        .stdin(Stdio::null())
        .spawn()
        .expect("9pfuse");
    let m = Mount {
        p: Some(p),
        dir: mnt.clone(),
    };
    let deadline = Instant::now() + LIMIT;
    while !mounted(&mnt) {
        assert!(Instant::now() < deadline, "9pfuse did not mount");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(mnt.join("f"), b"through fuse\n").expect("write through the mount");
    let o = w.nine(&["read", "f"], "");
    assert_eq!(text(&o.stdout), "through fuse\n");
    drop(m);
    assert!(!mounted(&mnt));
}

#[test]
fn ninepfuse_without_key_is_refused() {
    if !fuse_or_skip() {
        return;
    }
    let w = World::new(&[]);
    let mnt = w.dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let c = Command::new(env!("CARGO_BIN_EXE_9pfuse"))
        .arg(&w.addr)
        .arg(&mnt)
        .env("NAMESPACE", w.client_ns())
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("9pfuse");
    let o = wait_output(c);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("auth_proxy"),
        "{}",
        text(&o.stderr)
    );
    assert!(!mounted(&mnt));
}

#[test]
fn dp9ik_is_chosen_when_the_client_has_a_key_for_it() {
    let w = World::new(&[dp9ik("glenda", "glenda pw")]);
    let o = w.nine(&["create", "d"], "");
    assert!(o.status.success(), "create: {}", text(&o.stderr));
    let c = lib9::blocking::Client::dial(&w.addr).expect("dial");
    let (rt, inner) = c.inner();
    let f = format!("unix!{}", w.client_ns().join("factotum").display());
    let r: Result<(), String> = rt.block_on(async {
        let afid = inner.auth("glenda", "").await.map_err(|e| e.to_string())?;
        let ai = lib9::auth::proxy_at(&afid, "proto=p9any role=client", &f)
            .await
            .map_err(|e| e.to_string())?;
        assert_eq!(ai.cuid, "glenda");
        // dp9ik's session secret is 256 bytes; p9sk1's 8.
        assert_eq!(ai.secret.len(), 256);
        inner
            .attach_auth(Some(&afid), "glenda", "")
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    });
    r.expect("dp9ik exchange and attach");
}

#[test]
fn rc_mount_authenticates_and_mount_n_does_not() {
    if !fuse_or_skip() {
        return;
    }
    let w = World::new(&[key("glenda", "glenda pw")]);
    assert!(w.nine(&["create", "m"], "").status.success());
    assert!(w.nine(&["write", "m"], "via rc\n").status.success());
    let script = format!(
        "rfork n; mount '{a}' /n || exit mount; cat /n/m; mount -n '{a}' /mnt; echo status $status",
        a = w.addr
    );
    let c = Command::new(env!("CARGO_BIN_EXE_rc"))
        .args(["-c", &script])
        .env("NAMESPACE", w.client_ns())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rc");
    let o = wait_output(c);
    let out = text(&o.stdout);
    // The first mount authenticated; the second, with -n, was refused.
    assert!(
        out.starts_with("via rc\nstatus "),
        "{out}{}",
        text(&o.stderr)
    );
    assert!(out.contains("authentication required"), "{out}");
}

/// srv shares one connection to an authenticating server: each local client's Tauth
/// goes through to the server, so each authenticates with its own factotum.
#[test]
fn clients_of_srv_authenticate_through_it() {
    let w = World::new(&[key("glenda", "glenda pw")]);
    assert!(w.nine(&["create", "s"], "").status.success());
    assert!(w.nine(&["write", "s"], "through srv\n").status.success());
    let srv = Proc(
        Command::new(env!("CARGO_BIN_EXE_srv"))
            .args(["-f", &w.addr, "shared"])
            .env("NAMESPACE", w.client_ns())
            .stdin(Stdio::null())
            .spawn()
            .expect("srv"),
    );
    wait_for(&w.client_ns().join("shared"));
    let o = read_in(&w.client_ns(), "shared/s");
    assert!(o.status.success(), "read: {}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "through srv\n");
    // A client with no key, through the same srv, is refused.
    let empty = w.dir.path().join("empty-ns");
    let _f = factotum(&empty, "tcp!127.0.0.1!1", &[]);
    std::os::unix::fs::symlink(w.client_ns().join("shared"), empty.join("shared"))
        .expect("symlink");
    let o = read_in(&empty, "shared/s");
    assert!(!o.status.success(), "{}", text(&o.stdout));
    assert!(
        text(&o.stderr).contains("auth_proxy: needkey"),
        "{}",
        text(&o.stderr)
    );
    drop(srv);
}

/// `9p read file` with `ns` as $NAMESPACE.
fn read_in(ns: &Path, file: &str) -> Output {
    let c = Command::new(env!("CARGO_BIN_EXE_9p"))
        .args(["read", file])
        .env("NAMESPACE", ns)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("9p");
    wait_output(c)
}

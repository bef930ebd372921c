//! factotum's key file and its questions, end to end: `factotum -w` and `-r` on a key
//! file, factotum started on it (password on a descriptor, or typed on a terminal),
//! conversations that wait on `needkey` and `confirm`, and the prompting done by a
//! program (`-G`), by factotum on its terminal, and by `factotum -g`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lib9::blocking::{Client, Fid};
use lib9::fcall::{ORDWR, OREAD, OWRITE};

mod common;
use common::auth::AuthSrv;

const BIN: &str = env!("CARGO_BIN_EXE_factotum");
const LIMIT: Duration = Duration::from_secs(30);

const KEYS: &str = "# my keys\nkey proto=pass user=glenda service=ssh !password='top secret'\n\nkey proto=pass user=bob !password=bobpw\n";

/// A process killed (by pid) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server, killed (by pid) when dropped, or by a watchdog after 90 seconds, so
/// that a test waiting on it fails instead of hanging.
struct Server {
    p: Proc,
    done: Arc<std::sync::atomic::AtomicBool>,
}

impl Server {
    fn new(p: Proc) -> Server {
        use std::sync::atomic::Ordering;
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (d, pid) = (Arc::clone(&done), p.0.id() as i32);
        std::thread::spawn(move || {
            let deadline = Instant::now() + 3 * LIMIT;
            while !d.load(Ordering::Acquire) {
                if Instant::now() > deadline {
                    // Still our unwaited child (done is set before it is waited
                    // for), so the pid is still its.
                    // SAFETY: kill takes a pid and a signal.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Server { p, done }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Release);
        let _ = self.p.0.kill();
    }
}

/// A directory for one test: $HOME and $NAMESPACE of the factotums it runs.
struct Place {
    dir: tempfile::TempDir,
}

impl Place {
    fn new() -> Place {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("ns")).unwrap();
        std::fs::set_permissions(
            dir.path().join("ns"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("home")).unwrap();
        Place { dir }
    }

    fn ns(&self) -> PathBuf {
        self.dir.path().join("ns")
    }

    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    fn keys(&self) -> PathBuf {
        self.dir
            .path()
            .join("home")
            .join("lib")
            .join("factotum.keys")
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        c.env("HOME", self.home()).env("NAMESPACE", self.ns());
        c
    }

    /// Put `data` on descriptor 3 of the command (from a file made for it).
    fn fd3(&self, c: &mut Command, data: &str) {
        let p = self.dir.path().join("fd3");
        let _ = std::fs::remove_file(&p);
        std::fs::write(&p, data).unwrap();
        let fd = std::fs::File::open(&p).unwrap().into_raw_fd();
        // SAFETY: dup2 and fcntl are async-signal-safe; the descriptor is ours.
        unsafe {
            c.pre_exec(move || {
                let r = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if r < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Run a command to its end: (success, stdout, stderr).
    fn run(&self, mut c: Command, input: &str) -> (bool, String, String) {
        let mut ch = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run factotum");
        if let Some(mut i) = ch.stdin.take() {
            let _ = i.write_all(input.as_bytes());
        }
        let deadline = Instant::now() + LIMIT;
        while ch.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = ch.kill();
                let _ = ch.wait();
                panic!("factotum hung");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = ch.wait_with_output().expect("output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `factotum -w` with the password on descriptor 3.
    fn write_keys(&self, extra: &[&str], keys: &str, pw: &str) -> (bool, String) {
        let mut c = self.cmd();
        c.args(["-w", "-P", "3"]).args(extra);
        self.fd3(&mut c, &format!("{pw}\n"));
        let (ok, _, err) = self.run(c, keys);
        (ok, err)
    }

    fn sock(&self) -> PathBuf {
        self.ns().join("factotum")
    }

    /// Start a server in the foreground; Err(its standard error) if it exited.
    fn serve(&self, mut c: Command) -> Result<Server, String> {
        c.arg("-f").stdin(Stdio::null()).stderr(Stdio::piped());
        let mut p = Proc(c.spawn().expect("start factotum"));
        let deadline = Instant::now() + LIMIT;
        loop {
            if std::os::unix::net::UnixStream::connect(self.sock()).is_ok() {
                return Ok(Server::new(p));
            }
            if let Some(_st) = p.0.try_wait().expect("wait") {
                let mut err = String::new();
                if let Some(mut e) = p.0.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(err);
            }
            assert!(Instant::now() < deadline, "factotum did not post itself");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A server on the key file, its password on descriptor 3.
    fn serve_keys(&self, pw: &str) -> Result<Server, String> {
        let mut c = self.cmd();
        c.args(["-P", "3"]);
        self.fd3(&mut c, &format!("{pw}\n"));
        self.serve(c)
    }

    fn root(&self) -> Fid {
        let c = Client::dial(&format!("unix!{}", self.sock().display())).expect("dial");
        c.attach(&lib9::ns::user(), "").expect("attach")
    }

    fn ctl(&self) -> String {
        let mut f = self.root().walk("ctl").unwrap();
        f.open(OREAD).unwrap();
        String::from_utf8(f.read_all().unwrap()).unwrap()
    }

    fn add_key(&self, k: &str) {
        let mut f = self.root().walk("ctl").unwrap();
        f.open(OWRITE).unwrap();
        f.write(0, Bytes::copy_from_slice(k.as_bytes())).unwrap();
    }
}

fn call(rpc: &Fid, req: &str) -> String {
    rpc.write(0, Bytes::copy_from_slice(req.as_bytes()))
        .expect("write rpc");
    String::from_utf8_lossy(&rpc.read(0, 4096).expect("read rpc")).into_owned()
}

/// A conversation `start`ed and `read` in a thread of its own: the read's reply.
fn conversation(p: &Place, start: &str) -> mpsc::Receiver<String> {
    let root = p.root();
    let start = start.to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rpc = root.walk("rpc").expect("walk rpc");
        rpc.open(ORDWR).expect("open rpc");
        let r = call(&rpc, &start);
        if r != "ok" {
            let _ = tx.send(format!("start: {r}"));
            return;
        }
        let _ = tx.send(call(&rpc, "read"));
    });
    rx
}

fn tag_of(q: &str) -> String {
    q.split_whitespace()
        .find(|w| w.starts_with("tag="))
        .expect("a tag")
        .to_string()
}

/// An open question file.
fn question_file(p: &Place, name: &str) -> Fid {
    let mut f = p.root().walk(name).unwrap();
    f.open(ORDWR).unwrap();
    f
}

fn read_question(f: &Fid) -> String {
    String::from_utf8(f.read(0, 4096).unwrap().to_vec()).unwrap()
}

#[test]
fn key_file_round_trip() {
    let p = Place::new();
    let (ok, err) = p.write_keys(&[], KEYS, "open sesame");
    assert!(ok, "{err}");
    // The default file, made 0600 in a new 0700 directory; no secret in it.
    let md = std::fs::metadata(p.keys()).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    let dmd = std::fs::metadata(p.home().join("lib")).unwrap();
    assert_eq!(dmd.permissions().mode() & 0o777, 0o700);
    let raw = std::fs::read(p.keys()).unwrap();
    assert!(raw.starts_with(b"9fkeys\0\x01"));
    assert!(!raw.windows(6).any(|w| w == b"secret" || w == b"glenda"));

    // -r gives back exactly what was written.
    let mut c = p.cmd();
    c.args(["-r", "-P", "3"]);
    p.fd3(&mut c, "open sesame\n");
    let (ok, out, err) = p.run(c, "");
    assert!(ok, "{err}");
    assert_eq!(out, KEYS);

    // factotum loads it at start.
    let _s = p.serve_keys("open sesame").expect("factotum");
    assert_eq!(
        p.ctl(),
        "key proto=pass service=ssh user=glenda !password?\nkey proto=pass user=bob !password?\n"
    );
    let mut rpc = p.root().walk("rpc").unwrap();
    rpc.open(ORDWR).unwrap();
    assert_eq!(call(&rpc, "start proto=pass role=client service=ssh"), "ok");
    assert_eq!(call(&rpc, "read"), "ok glenda 'top secret'");
    // A second factotum under the same name stops before asking the password.
    let mut c = p.cmd();
    c.arg("-f");
    let (ok, _, err) = p.run(c, "");
    assert!(
        !ok && err.contains("service 'factotum' already posted"),
        "{err}"
    );

    // -k names another file; a named file must exist.
    let other = p.dir.path().join("other.keys");
    let (ok, err) = p.write_keys(&["-k", other.to_str().unwrap()], "", "pw");
    assert!(ok, "{err}");
    let mut c = p.cmd();
    c.args(["-r", "-P", "3", "-k", other.to_str().unwrap()]);
    p.fd3(&mut c, "pw\n");
    let (ok, out, err) = p.run(c, "");
    assert!(ok && out.is_empty(), "{err}");
    let mut c = p.cmd();
    c.args(["-r", "-P", "3", "-k", "/nonexistent/keys"]);
    p.fd3(&mut c, "pw\n");
    let (ok, _, err) = p.run(c, "");
    assert!(!ok);
    assert!(err.contains("/nonexistent/keys: does not exist"), "{err}");
}

#[test]
fn no_key_file_and_n() {
    let p = Place::new();
    // No key file at the default place: factotum starts without asking.
    let s = p.serve(p.cmd()).expect("factotum");
    assert_eq!(p.ctl(), "");
    drop(s);
    // -n does not read the key file, nor the password.
    let (ok, err) = p.write_keys(&[], KEYS, "pw");
    assert!(ok, "{err}");
    let mut c = p.cmd();
    c.arg("-n");
    let _s = p.serve(c).expect("factotum -n");
    assert_eq!(p.ctl(), "");
}

#[test]
fn wrong_password() {
    let p = Place::new();
    let (ok, err) = p.write_keys(&[], KEYS, "right");
    assert!(ok, "{err}");
    let err = p.serve_keys("wrong").err().expect("refused");
    assert!(err.contains("wrong password"), "{err}");
    assert!(!p.sock().exists(), "the socket is taken back");
    let mut c = p.cmd();
    c.args(["-r", "-P", "3"]);
    p.fd3(&mut c, "wrong\n");
    let (ok, out, err) = p.run(c, "");
    assert!(!ok && out.is_empty());
    assert!(err.contains("wrong password"), "{err}");
}

#[test]
fn bad_mode_refused() {
    let p = Place::new();
    let (ok, err) = p.write_keys(&[], KEYS, "pw");
    assert!(ok, "{err}");
    std::fs::set_permissions(p.keys(), std::fs::Permissions::from_mode(0o640)).unwrap();
    let err = p.serve_keys("pw").err().expect("refused");
    assert!(err.contains("mode 0640; a key file must be 0600"), "{err}");
    let mut c = p.cmd();
    c.args(["-r", "-P", "3"]);
    p.fd3(&mut c, "pw\n");
    let (ok, _, err) = p.run(c, "");
    assert!(!ok && err.contains("must be 0600"), "{err}");
    std::fs::set_permissions(p.keys(), std::fs::Permissions::from_mode(0o600)).unwrap();
    // Someone else's file (as root we can give it away).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(p.keys(), Some(1), None).unwrap();
        let err = p.serve_keys("pw").err().expect("refused");
        assert!(err.contains("owned by uid 1, not by you"), "{err}");
    }
}

#[test]
fn tampered_file_refused() {
    let p = Place::new();
    let (ok, err) = p.write_keys(&[], KEYS, "pw");
    assert!(ok, "{err}");
    let good = std::fs::read(p.keys()).unwrap();
    let put = |b: &[u8]| {
        std::fs::write(p.keys(), b).unwrap();
    };
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 20] ^= 0x40;
    put(&bad);
    let err = p.serve_keys("pw").err().expect("refused");
    assert!(err.contains("damaged or altered"), "{err}");
    put(&good[..good.len() - 1]);
    let err = p.serve_keys("pw").err().expect("refused");
    assert!(err.contains("damaged or altered"), "{err}");
    put(b"key proto=pass user=x !password=y\n");
    let err = p.serve_keys("pw").err().expect("refused");
    assert!(err.contains("not a factotum key file"), "{err}");
    put(&good);
    let _s = p.serve_keys("pw").expect("the good file");
}

#[test]
fn write_refuses_bad_lines() {
    let p = Place::new();
    let (ok, err) = p.write_keys(
        &[],
        "key proto=pass user=u !password=p\nkey proto=nosuch\n",
        "pw",
    );
    assert!(!ok);
    assert!(err.contains("line 2: unknown proto nosuch"), "{err}");
    assert!(!p.keys().exists());
    let (ok, err) = p.write_keys(&[], "key proto=pass user=u !password=p\n", "");
    assert!(!ok && err.contains("empty password"), "{err}");
    assert!(!p.keys().exists());
}

#[test]
fn needkey_round_trip() {
    let p = Place::new();
    let mut c = p.cmd();
    c.arg("-n");
    let _s = p.serve(c).expect("factotum");
    // Nobody reading needkey: today's needkey reply.
    let r = conversation(&p, "start proto=pass role=client user=bob");
    assert_eq!(
        r.recv_timeout(LIMIT).unwrap(),
        "needkey proto=pass role=client user=bob"
    );

    let nk = question_file(&p, "needkey");
    let r = conversation(&p, "start proto=pass role=client user=bob");
    let q = read_question(&nk);
    assert!(q.starts_with("needkey tag="), "{q:?}");
    assert!(
        q.ends_with(" proto=pass role=client user=bob !password?\n"),
        "{q:?}"
    );
    // The rpc read waits.
    assert!(r.recv_timeout(Duration::from_millis(300)).is_err());
    p.add_key("key proto=pass user=bob !password=bobpw");
    nk.write(0, Bytes::from(tag_of(&q))).unwrap();
    assert_eq!(r.recv_timeout(LIMIT).unwrap(), "ok bob bobpw");
    let e = nk
        .write(0, Bytes::from(tag_of(&q)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("tag not found"), "{e}");
    let log = {
        let mut f = p.root().walk("log").unwrap();
        f.open(OREAD).unwrap();
        String::from_utf8(f.read(0, 65536).unwrap().to_vec()).unwrap()
    };
    assert!(
        log.contains("needkey proto=pass role=client user=bob !password?"),
        "{log}"
    );
    assert!(!log.contains("bobpw"), "{log}");
}

#[test]
fn confirm_yes_and_no() {
    let p = Place::new();
    let mut c = p.cmd();
    c.arg("-n");
    let _s = p.serve(c).expect("factotum");
    p.add_key("key proto=pass user=c confirm !password=cpw");
    // Nobody reading confirm: the key is not used.
    let r = conversation(&p, "start proto=pass role=client user=c");
    assert_eq!(
        r.recv_timeout(LIMIT).unwrap(),
        "needkey proto=pass role=client user=c"
    );

    let cf = question_file(&p, "confirm");
    let r = conversation(&p, "start proto=pass role=client user=c");
    let q = read_question(&cf);
    assert!(q.starts_with("confirm tag="), "{q:?}");
    assert!(
        q.ends_with(" proto=pass user=c confirm='' !password?\n"),
        "{q:?}"
    );
    assert!(!q.contains("cpw"));
    assert!(r.recv_timeout(Duration::from_millis(300)).is_err());
    cf.write(0, Bytes::from(format!("{} answer=yes", tag_of(&q))))
        .unwrap();
    assert_eq!(r.recv_timeout(LIMIT).unwrap(), "ok c cpw");

    let r = conversation(&p, "start proto=pass role=client user=c");
    let q = read_question(&cf);
    let e = cf
        .write(0, Bytes::from(format!("{} answer=perhaps", tag_of(&q))))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad answer"), "{e}");
    cf.write(0, Bytes::from(format!("{} answer=no", tag_of(&q))))
        .unwrap();
    assert_eq!(
        r.recv_timeout(LIMIT).unwrap(),
        "needkey proto=pass role=client user=c"
    );
}

#[test]
fn prompting_program() {
    let p = Place::new();
    let prog = p.dir.path().join("askpass");
    std::fs::write(
        &prog,
        "#!/bin/sh\n\
         echo \"$1 $2\" >> \"$(dirname \"$0\")/asked\"\n\
         case $1 in\n\
         needkey) echo \"key $2 !password=from-prog\" ;;\n\
         confirm) echo yes ;;\n\
         esac\n",
    )
    .unwrap();
    std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut c = p.cmd();
    c.args(["-n", "-G", prog.to_str().unwrap()]);
    let _s = p.serve(c).expect("factotum");
    let r = conversation(&p, "start proto=pass role=client user=pat");
    assert_eq!(r.recv_timeout(LIMIT).unwrap(), "ok pat from-prog");
    p.add_key("key proto=pass user=q confirm !password=qpw");
    let r = conversation(&p, "start proto=pass role=client user=q");
    assert_eq!(r.recv_timeout(LIMIT).unwrap(), "ok q qpw");
    let asked = std::fs::read_to_string(p.dir.path().join("asked")).unwrap();
    assert_eq!(
        asked,
        "needkey proto=pass role=client user=pat !password?\nconfirm proto=pass user=q confirm='' !password?\n"
    );
}

/// A pseudo-terminal: what the program shows, gathered by a thread.
struct Pty {
    master: std::fs::File,
    shown: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    /// Run `c` with the terminal as its controlling terminal and standard files.
    fn spawn(mut c: Command) -> (Pty, Proc) {
        use nix::fcntl::OFlag;
        use std::os::unix::fs::OpenOptionsExt;
        let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
        nix::pty::grantpt(&m).unwrap();
        nix::pty::unlockpt(&m).unwrap();
        let name = nix::pty::ptsname_r(&m).unwrap();
        // SAFETY: the descriptor was just taken out of the PtyMaster, which owned it.
        let master = unsafe { std::fs::File::from_raw_fd(m.into_raw_fd()) };
        let slave = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .unwrap();
        let stdio = |f: &std::fs::File| Stdio::from(OwnedFd::from(f.try_clone().unwrap()));
        c.stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: setsid and ioctl are async-signal-safe.
        unsafe {
            c.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = Proc(c.spawn().expect("spawn on a pty"));
        drop(slave);
        let shown = Arc::new(Mutex::new(Vec::new()));
        let mut r = master.try_clone().unwrap();
        let s2 = Arc::clone(&shown);
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            // The pty reports EIO once the program has gone.
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s2.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        (Pty { master, shown }, child)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).into_owned()
    }

    /// Wait until the terminal shows `s` after byte `from`; the byte after it.
    fn expect(&self, s: &str, from: usize) -> usize {
        let deadline = Instant::now() + LIMIT;
        loop {
            let t = self.text();
            if let Some(i) = t.get(from..).and_then(|r| r.find(s)) {
                return from + i + s.len();
            }
            assert!(Instant::now() < deadline, "no {s:?} on the terminal: {t:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn send(&mut self, s: &str) {
        self.master.write_all(s.as_bytes()).unwrap();
    }
}

#[test]
fn terminal_password_and_prompts() {
    let p = Place::new();
    let (ok, err) = p.write_keys(&[], KEYS, "right words");
    assert!(ok, "{err}");
    let mut c = p.cmd();
    c.arg("-f");
    let (mut t, proc) = Pty::spawn(c);
    let _s = Server::new(proc);
    // A wrong password is asked again, secstore's way.
    let at = t.expect("key file password: ", 0);
    t.send("wrong words\n");
    let at = t.expect("wrong password", at);
    let at = t.expect("key file password: ", at);
    t.send("right words\n");
    let deadline = Instant::now() + LIMIT;
    while std::os::unix::net::UnixStream::connect(p.sock()).is_err() {
        assert!(Instant::now() < deadline, "factotum did not post itself");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(p.ctl().contains("user=bob"));

    // Started from a terminal, factotum asks there for a key it lacks.
    let r = conversation(&p, "start proto=pass role=client service=imap user?");
    let at = t.expect("!adding key: proto=pass role=client service=imap", at);
    let at = t.expect("user[", at);
    t.send("\n");
    let at = t.expect("password: ", at);
    t.send("imap words\n");
    let me = lib9::ns::user();
    assert_eq!(
        r.recv_timeout(LIMIT).unwrap(),
        format!("ok {me} 'imap words'")
    );
    // And to confirm a key's use.
    p.add_key("key proto=pass user=c confirm !password=cpw");
    let r = conversation(&p, "start proto=pass role=client user=c");
    let at = t.expect(
        "!confirm use of key: proto=pass user=c confirm='' !password?",
        at,
    );
    t.expect("(yes/no) ", at);
    t.send("yes\n");
    assert_eq!(r.recv_timeout(LIMIT).unwrap(), "ok c cpw");
    // Nothing secret was echoed.
    let shown = t.text();
    for s in ["wrong words", "right words", "imap words", "cpw"] {
        assert!(!shown.contains(s), "{s:?} shown: {shown:?}");
    }
}

#[test]
fn getkey_on_a_terminal() {
    let p = Place::new();
    let mut c = p.cmd();
    c.arg("-n");
    let _s = p.serve(c).expect("factotum");
    let mut g = p.cmd();
    g.args(["-g", "proto=pass server=mail user? !password?"]);
    let (mut t, mut proc) = Pty::spawn(g);
    let at = t.expect("!adding key: proto=pass server=mail", 0);
    let at = t.expect("user[", at);
    t.send("zed\n");
    t.expect("password: ", at);
    t.send("zed words\n");
    let deadline = Instant::now() + LIMIT;
    let st = loop {
        if let Some(st) = proc.0.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "factotum -g hung");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{}", t.text());
    assert_eq!(p.ctl(), "key proto=pass server=mail user=zed !password?\n");
    assert!(!t.text().contains("zed words"));
    let _ = t.master.as_raw_fd();
}

fn rpc_bytes(rpc: &Fid, verb: &str, data: &[u8]) -> Vec<u8> {
    let mut req = verb.as_bytes().to_vec();
    if !data.is_empty() {
        req.push(b' ');
        req.extend_from_slice(data);
    }
    rpc.write(0, Bytes::from(req)).expect("write rpc");
    rpc.read(0, 4096).expect("read rpc").to_vec()
}

fn ok_data(r: Vec<u8>) -> Vec<u8> {
    match r.strip_prefix(b"ok ") {
        Some(d) => d.to_vec(),
        None => panic!("not ok: {:?}", String::from_utf8_lossy(&r)),
    }
}

/// p9sk1 with a wrong password: the needkey reader is told `badkey`, replaces the
/// key, and the waiting conversation goes on with the new one.
#[test]
fn badkey_through_needkey() {
    let cp = Place::new();
    let auth = AuthSrv::start();
    let addr = auth.addr.clone();
    let sp = Place::new();
    let mut c = cp.cmd();
    c.args(["-n", "-a", &addr]);
    let _cf = cp.serve(c).expect("client factotum");
    let mut c = sp.cmd();
    c.args(["-n", "-a", &addr]);
    let _sf = sp.serve(c).expect("server factotum");
    cp.add_key("key proto=p9sk1 dom=dom user=glenda !password=wrong");
    sp.add_key("key proto=p9sk1 dom=dom user=bootes role=server !password='bootes pw'");

    let nk = question_file(&cp, "needkey");
    let mut s = sp.root().walk("rpc").unwrap();
    s.open(ORDWR).unwrap();
    assert_eq!(call(&s, "start proto=p9sk1 role=server"), "ok");
    let mut crpc = cp.root().walk("rpc").unwrap();
    crpc.open(ORDWR).unwrap();
    assert_eq!(call(&crpc, "start proto=p9sk1 role=client"), "ok");
    let chal = ok_data(rpc_bytes(&crpc, "read", b""));
    assert_eq!(rpc_bytes(&s, "write", &chal), b"ok");
    let treq = ok_data(rpc_bytes(&s, "read", b""));
    assert_eq!(rpc_bytes(&crpc, "write", &treq), b"ok");
    // The client's read of the tickets waits on the question.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(rpc_bytes(&crpc, "read", b""));
        crpc
    });
    let q = read_question(&nk);
    let lines: Vec<&str> = q.split('\n').collect();
    assert!(
        lines[0].starts_with("badkey tag=")
            && lines[0].ends_with(" proto=p9sk1 dom=dom user=glenda !password?"),
        "{q:?}"
    );
    assert_eq!(lines[1], "key mismatch with auth server");
    assert_eq!(lines[2..], ["proto=p9sk1 user? dom? !password?", ""]);
    assert!(!q.contains("wrong"));
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    cp.add_key("key proto=p9sk1 dom=dom user=glenda !password='glenda pw'");
    nk.write(0, Bytes::from(tag_of(lines[0]))).unwrap();
    let tickets = ok_data(rx.recv_timeout(LIMIT).expect("the client went on"));
    assert_eq!(tickets.len(), 72 + 13);
    assert_eq!(rpc_bytes(&s, "write", &tickets), b"ok");
}

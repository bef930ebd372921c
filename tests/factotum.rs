//! factotum end to end: the binary posted in a private $NAMESPACE, keys written through
//! `9p write factotum/ctl`, conversations over `rpc` with lib9's client.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

/// A factotum started for one test, killed (by pid) when dropped.
struct Factotum {
    child: Child,
    ns: tempfile::TempDir,
}

impl Drop for Factotum {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Factotum {
    fn start() -> Factotum {
        let ns = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(ns.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_factotum"))
            .args(["-n", "-f"])
            .env("NAMESPACE", ns.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("start factotum");
        let f = Factotum { child, ns };
        let deadline = Instant::now() + LIMIT;
        while std::os::unix::net::UnixStream::connect(f.sock()).is_err() {
            assert!(Instant::now() < deadline, "factotum did not post itself");
            std::thread::sleep(Duration::from_millis(20));
        }
        f
    }

    fn sock(&self) -> PathBuf {
        self.ns.path().join("factotum")
    }

    /// Run `9p args...` with `input` on standard input; (status ok, stdout, stderr).
    fn nine_p(&self, args: &[&str], input: &str) -> (bool, String, String) {
        let mut c = Command::new(env!("CARGO_BIN_EXE_9p"))
            .args(args)
            .env("NAMESPACE", self.ns.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run 9p");
        if let Some(mut i) = c.stdin.take() {
            let _ = i.write_all(input.as_bytes());
        }
        let deadline = Instant::now() + LIMIT;
        loop {
            if c.try_wait().expect("wait").is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("9p {args:?} hung");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = c.wait_with_output().expect("output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn client(&self) -> lib9::blocking::Client {
        lib9::blocking::Client::dial(&format!("unix!{}", self.sock().display())).expect("dial")
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn socket_is_private() {
    let f = Factotum::start();
    let md = std::fs::symlink_metadata(f.sock()).unwrap();
    assert!(md.file_type().is_socket());
    assert_eq!(mode(&f.sock()), 0o600);
}

#[test]
fn keys_through_ctl() {
    let f = Factotum::start();
    let (ok, _, err) = f.nine_p(
        &["write", "factotum/ctl"],
        "key proto=pass user=glenda service=ssh !password='top secret'\n",
    );
    assert!(ok, "{err}");
    let (ok, out, _) = f.nine_p(&["read", "factotum/ctl"], "");
    assert!(ok);
    assert_eq!(out, "key proto=pass service=ssh user=glenda !password?\n");
    let (ok, log, _) = f.nine_p(&["read", "factotum/log"], "");
    assert!(ok);
    assert!(log.contains("adding key"), "{log}");
    assert!(!log.contains("top secret"), "{log}");

    let (ok, _, err) = f.nine_p(&["write", "factotum/ctl"], "key proto=pass user=x\n");
    assert!(!ok);
    assert!(
        err.contains("missing attributes -- want user? !password?"),
        "{err}"
    );
    let (ok, _, err) = f.nine_p(&["write", "factotum/ctl"], "key proto=nosuch\n");
    assert!(!ok);
    assert!(err.contains("unknown proto nosuch"), "{err}");

    let (ok, _, err) = f.nine_p(&["write", "factotum/ctl"], "delkey user=glenda\n");
    assert!(ok, "{err}");
    let (_, out, _) = f.nine_p(&["read", "factotum/ctl"], "");
    assert_eq!(out, "");
    let (_, out, _) = f.nine_p(&["read", "factotum/proto"], "");
    assert_eq!(out, "p9any\np9sk1\ndp9ik\npass\n");
}

#[test]
fn pass_conversation_over_rpc() {
    let f = Factotum::start();
    let (ok, _, err) = f.nine_p(
        &["write", "factotum/ctl"],
        "key proto=pass user=glenda !password='top secret'\n",
    );
    assert!(ok, "{err}");
    let c = f.client();
    let root = c.attach("glenda", "").expect("attach");
    let mut rpc = root.walk("rpc").expect("walk rpc");
    rpc.open(lib9::fcall::ORDWR).expect("open rpc");
    let call = |req: &str| -> String {
        rpc.write(0, bytes::Bytes::copy_from_slice(req.as_bytes()))
            .expect("write rpc");
        let r = rpc.read(0, 4096).expect("read rpc");
        String::from_utf8_lossy(&r).into_owned()
    };
    assert_eq!(call("read"), "error protocol not started");
    assert_eq!(call("start proto=pass role=client"), "ok");
    assert_eq!(call("read"), "ok glenda 'top secret'");
    assert_eq!(call("read"), "done");
    // A read with no request pending, and an unknown verb, are 9P errors.
    let e = rpc.read(0, 4096).unwrap_err().to_string();
    assert!(e.contains("no rpc pending"), "{e}");
    let e = rpc
        .write(0, bytes::Bytes::from_static(b"frob"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad rpc verb: frob"), "{e}");
    let e = rpc
        .write(0, bytes::Bytes::from(vec![b'x'; 2048]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("rpc too large"), "{e}");

    // Another open is another conversation; no key for it means needkey, then an error.
    let mut rpc2 = root.walk("rpc").expect("walk rpc");
    rpc2.open(lib9::fcall::ORDWR).expect("open rpc");
    let call2 = |req: &str| -> String {
        rpc2.write(0, bytes::Bytes::copy_from_slice(req.as_bytes()))
            .expect("write rpc");
        String::from_utf8_lossy(&rpc2.read(0, 4096).expect("read rpc")).into_owned()
    };
    assert_eq!(call2("start proto=pass role=client user=bob"), "ok");
    assert_eq!(call2("read"), "needkey proto=pass role=client user=bob");
    assert_eq!(call2("read"), "error pass client nascent: no key found");
}

#[test]
fn exclusive_files() {
    let f = Factotum::start();
    let c = f.client();
    let root = c.attach(&lib9::ns::user(), "").expect("attach");
    let mut a = root.walk("log").unwrap();
    a.open(lib9::fcall::OREAD).expect("first open");
    let mut b = root.walk("log").unwrap();
    let e = b.open(lib9::fcall::OREAD).unwrap_err().to_string();
    assert!(e.contains("file in use"), "{e}");
    a.clunk().unwrap();
    b.open(lib9::fcall::OREAD).expect("open after clunk");
    // Someone else may not open ctl; anyone may use rpc.
    let other = c.attach("nobody-else", "").expect("attach");
    let mut ctl = other.walk("ctl").unwrap();
    assert!(ctl.open(lib9::fcall::OREAD).is_err());
    let mut rpc = other.walk("rpc").unwrap();
    rpc.open(lib9::fcall::ORDWR).expect("rpc is 0666");
}

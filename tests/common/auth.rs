//! Helpers for the authentication tests: an authsrv with users glenda and bootes,
//! factotums each in a $NAMESPACE of its own, and a shuttle that carries messages
//! between two rpc conversations as auth_proxy and a 9P server would.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use factotum::rpc::AuthInfo;
use lib9::blocking::{Client, Fid};

pub const LIMIT: Duration = Duration::from_secs(20);

/// A process killed (by pid) when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An authsrv on an ephemeral port, with users glenda and bootes.
pub struct AuthSrv {
    _p: Killed,
    pub dir: tempfile::TempDir,
    pub addr: String,
}

pub fn adduser(dir: &std::path::Path, name: &str, pw: &str) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_authsrv"))
        .arg("-d")
        .arg(dir)
        .args(["adduser", name])
        .stdin(Stdio::piped())
        .spawn()
        .expect("authsrv adduser");
    if let Some(mut i) = c.stdin.take() {
        writeln!(i, "{pw}").expect("password");
    }
    assert!(c.wait().expect("wait").success());
}

impl AuthSrv {
    pub fn start() -> AuthSrv {
        AuthSrv::start_with(&[])
    }

    /// The same, with more arguments for authsrv (`--authdom dom`, say).
    pub fn start_with(extra: &[&str]) -> AuthSrv {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        adduser(&keys, "glenda", "glenda pw");
        adduser(&keys, "bootes", "bootes pw");
        let mut p = Killed(
            Command::new(env!("CARGO_BIN_EXE_authsrv"))
                .arg("-d")
                .arg(&keys)
                .args(["-a", "tcp!127.0.0.1!0"])
                .args(extra)
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start authsrv"),
        );
        let err = p.0.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(err).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(LIMIT).expect("authsrv did not start");
        let hostport = line.trim().rsplit(' ').next().unwrap_or("").to_string();
        let (host, port) = hostport.rsplit_once(':').expect("address");
        AuthSrv {
            _p: p,
            dir,
            addr: format!("tcp!{host}!{port}"),
        }
    }

    /// The second line of a user's key file: the AES key, in hex.
    pub fn aes_hex(&self, user: &str) -> String {
        let f = self.dir.path().join("keys/users").join(user);
        let text = std::fs::read_to_string(f).expect("key file");
        text.lines().nth(1).expect("aes line").to_string()
    }
}

/// A factotum in its own $NAMESPACE, with the auth server given by -a.
pub struct Factotum {
    _p: Killed,
    _ns: tempfile::TempDir,
    pub client: Client,
}

impl Factotum {
    pub fn start(authaddr: &str, keys: &[&str]) -> Factotum {
        let ns = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(ns.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let p = Killed(
            Command::new(env!("CARGO_BIN_EXE_factotum"))
                .args(["-n", "-f", "-a", authaddr])
                .env("NAMESPACE", ns.path())
                .stdin(Stdio::null())
                .spawn()
                .expect("start factotum"),
        );
        let sock: PathBuf = ns.path().join("factotum");
        let deadline = Instant::now() + LIMIT;
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "factotum did not post itself");
            std::thread::sleep(Duration::from_millis(20));
        }
        let client = Client::dial(&format!("unix!{}", sock.display())).expect("dial");
        let f = Factotum {
            _p: p,
            _ns: ns,
            client,
        };
        for k in keys {
            f.ctl(&format!("key {k}")).expect("add key");
        }
        f
    }

    pub fn ctl(&self, line: &str) -> Result<(), String> {
        let root = self.client.attach(&lib9::ns::user(), "").expect("attach");
        let mut ctl = root.walk("ctl").expect("walk ctl");
        ctl.open(lib9::fcall::OWRITE).expect("open ctl");
        ctl.write(0, Bytes::copy_from_slice(line.as_bytes()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub fn rpc(&self) -> Rpc {
        let root = self.client.attach(&lib9::ns::user(), "").expect("attach");
        let mut fid = root.walk("rpc").expect("walk rpc");
        fid.open(lib9::fcall::ORDWR).expect("open rpc");
        Rpc(fid)
    }

    pub fn log(&self) -> String {
        let root = self.client.attach(&lib9::ns::user(), "").expect("attach");
        let mut log = root.walk("log").expect("walk log");
        log.open(lib9::fcall::OREAD).expect("open log");
        String::from_utf8_lossy(&log.read_all().expect("read log")).into_owned()
    }
}

/// One open of `rpc`.
pub struct Rpc(pub Fid);

impl Rpc {
    pub fn call(&self, verb: &str, data: &[u8]) -> Vec<u8> {
        let mut req = verb.as_bytes().to_vec();
        if !data.is_empty() {
            req.push(b' ');
            req.extend_from_slice(data);
        }
        self.0.write(0, Bytes::from(req)).expect("write rpc");
        self.0.read(0, 8192).expect("read rpc").to_vec()
    }

    pub fn text(&self, verb: &str, data: &[u8]) -> String {
        String::from_utf8_lossy(&self.call(verb, data)).into_owned()
    }

    /// A `read` whose reply must be `ok` and data: the data.
    pub fn msg(&self) -> Vec<u8> {
        let r = self.call("read", b"");
        match r.strip_prefix(b"ok ") {
            Some(d) => d.to_vec(),
            None => panic!("read: {}", String::from_utf8_lossy(&r)),
        }
    }

    pub fn authinfo(&self) -> Result<AuthInfo, String> {
        let r = self.call("authinfo", b"");
        match r.strip_prefix(b"ok ") {
            Some(b) => AuthInfo::from_bytes(b).map_err(|e| e.to_string()),
            None => Err(String::from_utf8_lossy(&r).into_owned()),
        }
    }
}

/// What a shuttle saw.
pub struct Run {
    /// The last reply from each side that was not `ok`/`phase`: (client, server).
    pub last: (String, String),
    /// Every message carried to the server (after any edit).
    pub to_server: Vec<Vec<u8>>,
}

/// Carry messages between the two conversations, server first, until both are
/// done or one says something other than ok or phase. `edit` may change the n-th
/// message to the server on its way.
pub fn shuttle_with(c: &Rpc, s: &Rpc, mut edit: impl FnMut(usize, &mut Vec<u8>)) -> Run {
    let mut run = Run {
        last: (String::new(), String::new()),
        to_server: Vec::new(),
    };
    let deadline = Instant::now() + LIMIT;
    let (mut cdone, mut sdone) = (false, false);
    while !(cdone && sdone) {
        assert!(Instant::now() < deadline, "shuttle did not finish");
        for server_side in [true, false] {
            let (from, to) = if server_side { (s, c) } else { (c, s) };
            let r = from.call("read", b"");
            if let Some(data) = r.strip_prefix(b"ok ") {
                let mut data = data.to_vec();
                if !server_side {
                    edit(run.to_server.len(), &mut data);
                    run.to_server.push(data.clone());
                }
                let w = to.text("write", &data);
                if w != "ok" {
                    if server_side {
                        run.last.0 = w;
                    } else {
                        run.last.1 = w;
                    }
                    return run;
                }
            } else {
                let text = String::from_utf8_lossy(&r).into_owned();
                if r.starts_with(b"done") {
                    if server_side {
                        sdone = true;
                    } else {
                        cdone = true;
                    }
                }
                let stop = !r.starts_with(b"done") && !r.starts_with(b"phase ");
                if server_side {
                    run.last.1 = text;
                } else {
                    run.last.0 = text;
                }
                if stop {
                    return run;
                }
            }
        }
    }
    run
}

pub fn shuttle(c: &Rpc, s: &Rpc) -> Run {
    shuttle_with(c, s, |_, _| {})
}

/// Start the conversations of a client (factotum `cf`) and a server (`sf`) speaking
/// `proto`.
pub fn start(cf: &Factotum, sf: &Factotum, proto: &str) -> (Rpc, Rpc) {
    let (c, s) = (cf.rpc(), sf.rpc());
    assert_eq!(
        c.text("start", format!("proto={proto} role=client").as_bytes()),
        "ok"
    );
    assert_eq!(
        s.text("start", format!("proto={proto} role=server").as_bytes()),
        "ok"
    );
    (c, s)
}

/// Both sides finished with an AuthInfo to give.
pub fn both_done(run: &Run) {
    assert_eq!(
        run.last,
        ("done haveai".to_string(), "done haveai".to_string())
    );
}

impl Rpc {
    /// The conversation failed: it has no AuthInfo to give.
    pub fn assert_failed(&self) {
        assert_eq!(
            self.authinfo().unwrap_err(),
            "error conversation not successful"
        );
    }
}

/// Through p9any, a client of `proto` with a wrong password, or a user the auth server
/// does not know, is told `badkey` (naming the key, never its secret), and the
/// conversation fails.
pub fn wrong_client_keys_get_badkey(proto: &str, server_key: &str) {
    let a = AuthSrv::start();
    let sf = Factotum::start(&a.addr, &[server_key]);
    for key in [
        format!("proto={proto} dom=dom user=glenda !password=wrong"),
        format!("proto={proto} dom=dom user=nobody !password=whatever"),
    ] {
        let cf = Factotum::start(&a.addr, &[&key]);
        let (c, s) = start(&cf, &sf, "p9any");
        let run = shuttle(&c, &s);
        assert!(
            run.last
                .0
                .starts_with(&format!("badkey proto={proto} dom=dom user=")),
            "{:?}",
            run.last
        );
        assert!(run.last.0.contains("\nkey mismatch with auth server\n"));
        assert!(!run.last.0.contains("wrong") && !run.last.0.contains("whatever"));
        assert_eq!(
            c.text("read", b""),
            format!("error p9any client replace key: {proto}: key mismatch with auth server")
        );
        c.assert_failed();
    }
}

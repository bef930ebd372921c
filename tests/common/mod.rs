//! Shared helpers for the end-to-end tests: start the binaries in private name space
//! directories, wait for them to accept, and kill them (by pid) when the test is done.
#![allow(dead_code)]

pub mod auth;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const RAMFS: &str = env!("CARGO_BIN_EXE_ramfs");
pub const EXPORTFS: &str = env!("CARGO_BIN_EXE_exportfs");
pub const SRV: &str = env!("CARGO_BIN_EXE_srv");
pub const NINEP: &str = env!("CARGO_BIN_EXE_9p");

/// How long anything may take to come up before the test fails.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A private $NAMESPACE directory, removed at the end.
pub struct Ns {
    pub dir: tempfile::TempDir,
}

impl Ns {
    pub fn new() -> Ns {
        let dir = tempfile::Builder::new()
            .prefix("ns.test.")
            .tempdir()
            .expect("tempdir");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod ns");
        Ns { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The socket path of a posted service.
    pub fn svc(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A command with NAMESPACE set to this directory.
    pub fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("NAMESPACE", self.path());
        c
    }

    /// Run `9p` with these arguments and optional standard input.
    pub fn ninep(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        run_with_input(self.cmd(NINEP).args(args), input)
    }
}

/// Run a command to completion (at most 60 s) feeding it `input`.
pub fn run_with_input(c: &mut Command, input: Option<&[u8]>) -> Output {
    use std::io::Write;
    c.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    if let Some(i) = input {
        let mut sin = child.stdin.take().expect("stdin");
        let data = i.to_vec();
        std::thread::spawn(move || {
            let _ = sin.write_all(&data);
        });
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            // SAFETY: kill by pid of our own child that overstayed.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    });
    let out = child.wait_with_output().expect("wait");
    let _ = tx.send(());
    out
}

/// A server process, killed when dropped. Its standard error goes to a file that is
/// checked then: a server that panicked (even in a task it survived) fails the test.
pub struct Proc {
    pub child: Child,
    /// How to dial it.
    pub addr: String,
    pub stderr: Option<tempfile::NamedTempFile>,
}

/// Standard error for a server: a temporary file, to be checked for panics.
pub fn stderr_file() -> (tempfile::NamedTempFile, Stdio) {
    let f = tempfile::NamedTempFile::new().expect("stderr file");
    let s = Stdio::from(f.reopen().expect("reopen stderr file"));
    (f, s)
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Proc {
    /// What the server wrote on standard error so far.
    pub fn stderr_text(&self) -> String {
        self.stderr
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f.path()).ok())
            .unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let err = self.stderr_text();
        if err.contains("panicked") && !std::thread::panicking() {
            panic!("server {} panicked:\n{err}", self.addr);
        }
    }
}

/// Wait until something accepts connections at a Unix socket path.
pub fn wait_unix(p: &Path, child: &mut Child) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if std::os::unix::net::UnixStream::connect(p).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("server exited before accepting: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "server did not come up at {}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Wait until something accepts connections at a TCP port of localhost.
pub fn wait_tcp(port: u16, child: &mut Child) {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("server exited before accepting: {st}");
        }
        assert!(
            Instant::now() < deadline,
            "server did not come up on port {port}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A TCP port nobody is listening on right now.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Start a server binary in the foreground posting `name` in `ns`.
pub fn start_posted(ns: &Ns, prog: &str, name: &str, extra: &[&str]) -> Proc {
    let mut c = ns.cmd(prog);
    c.arg("-f").arg("-s").arg(name).args(extra);
    spawn_server(c, ns.svc(name))
}

/// Spawn a server command in the foreground and wait for its Unix socket.
pub fn spawn_server(mut c: Command, sock: PathBuf) -> Proc {
    let (f, s) = stderr_file();
    c.stdin(Stdio::null()).stderr(s);
    let mut child = c.spawn().expect("spawn server");
    wait_unix(&sock, &mut child);
    Proc {
        child,
        addr: format!("unix!{}", sock.display()),
        stderr: Some(f),
    }
}

/// Start a server binary in the foreground on a TCP port of localhost.
pub fn start_tcp(ns: &Ns, prog: &str, extra: &[&str]) -> Proc {
    let port = free_port();
    let mut c = ns.cmd(prog);
    c.arg("-f")
        .arg("-a")
        .arg(format!("tcp!127.0.0.1!{port}"))
        .args(extra);
    let (f, s) = stderr_file();
    c.stdin(Stdio::null()).stderr(s);
    let mut child = c.spawn().expect("spawn server");
    wait_tcp(port, &mut child);
    Proc {
        child,
        addr: format!("tcp!127.0.0.1!{port}"),
        stderr: Some(f),
    }
}

/// A runtime for tests that drive the async client.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Run a future with a deadline, failing the test instead of hanging.
pub fn within<T>(
    rt: &tokio::runtime::Runtime,
    secs: u64,
    f: impl std::future::Future<Output = T>,
) -> T {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .expect("test timed out")
    })
}

/// The pid of the process serving `name` in `ns`, found among this user's processes.
pub fn find_pid(ns: &Ns, name: &str) -> Option<i32> {
    let want = std::fs::canonicalize(ns.svc(name)).ok()?;
    // A listening socket's inode shows in /proc/net/unix; find who holds it.
    let unix = std::fs::read_to_string("/proc/net/unix").ok()?;
    let path = want.to_string_lossy().into_owned();
    // Only the listening socket: a connection the server accepted shows the same
    // path, and may be gone by the time its holder is looked for.
    let sock_ino: String = unix
        .lines()
        .find(|l| l.ends_with(&path) && l.split_whitespace().nth(3) == Some("00010000"))?
        .split_whitespace()
        .nth(6)?
        .to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(t) = std::fs::read_link(fd.path()) {
                if t.to_string_lossy() == format!("socket:[{sock_ino}]") {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// Whether FUSE mounts can be made here (root, with /dev/fuse). When they cannot, the
/// caller skips its test, which this says on standard error; where the peers are
/// required (CI sets NINESPACE_REQUIRE_PEERS) the test fails instead.
pub fn fuse_or_skip() -> bool {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
        && nix::unistd::geteuid().is_root();
    if !usable {
        assert!(
            std::env::var_os("NINESPACE_REQUIRE_PEERS").is_none(),
            "/dev/fuse and root are needed"
        );
        eprintln!("skipped: needs /dev/fuse and root");
    }
    usable
}

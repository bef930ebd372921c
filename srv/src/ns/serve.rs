//! The server processes of the namespace engine: `ns --serve union ...` and
//! `ns --serve 9p ...`, exec'd by [`super::spawn`]. Each makes its FUSE mount
//! detached, hands it back over the socket it was given, leaves the name space, and
//! serves until the kernel ends the FUSE connection (when the last name space holding
//! the mount goes).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use super::mountinfo::{self, Mount};
use super::{Held, Server, errstr, send, sys};

/// Run a server as `args` (what follows `--serve`) describe it; returns the exit status.
pub fn main(args: &[String]) -> i32 {
    let fd = |s: &String| s.parse::<RawFd>().ok().filter(|f| *f > 2);
    let (kind, rest) = match args.split_first() {
        Some(x) => x,
        None => return 2,
    };
    let Some(report) = rest.first().and_then(fd) else {
        return 2;
    };
    // SAFETY: the descriptor was passed to us for this, by number.
    let report = unsafe { UnixStream::from_raw_fd(report) };
    let rest = &rest[1..];
    let server = match kind.as_str() {
        "union" => {
            if rest.len() % 3 != 0 {
                send(&report, "bad arguments", None);
                return 2;
            }
            let mut held = Vec::new();
            for c in rest.chunks(3) {
                let Some(f) = fd(&c[0]) else {
                    send(&report, "bad arguments", None);
                    return 2;
                };
                // SAFETY: passed to us by number, ours alone from now on.
                let dir = unsafe { OwnedFd::from_raw_fd(f) };
                held.push(Held {
                    dir,
                    create: c[1] == "c",
                    label: c[2].clone(),
                });
            }
            Server::Union(held)
        }
        "9p" if rest.len() == 3 => Server::NineP(super::Service {
            addr: rest[0].clone(),
            aname: rest[1].clone(),
            cache: rest[2].contains('C'),
            noauth: rest[2].contains('n'),
        }),
        _ => {
            send(&report, "bad arguments", None);
            return 2;
        }
    };
    let keep: Vec<RawFd> = match &server {
        Server::Union(m) => m.iter().map(|h| h.dir.as_raw_fd()).collect(),
        Server::NineP(_) => Vec::new(),
    };
    serve(server, report, &keep)
}

/// Close every descriptor but `keep`.
fn close_others(keep: &[RawFd]) {
    let fds: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        if !keep.contains(&fd) {
            // SAFETY: closing descriptors this process will not use again.
            unsafe { libc::close(fd) };
        }
    }
}

/// The server process: set up, mount, report, leave the name space, serve.
fn serve(server: Server, report: UnixStream, keep: &[RawFd]) -> i32 {
    let mut k = keep.to_vec();
    k.extend([0, 1, 2, report.as_raw_fd()]);
    close_others(&k);
    // Standard input, output and error on /dev/null: nobody's terminal or pipe.
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            if fd != null.as_raw_fd() {
                // SAFETY: dup2 onto the standard descriptors.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
        if null.as_raw_fd() < 3 {
            std::mem::forget(null);
        }
    }
    // SAFETY: no arguments; a session of our own, away from the terminal's signals.
    unsafe { libc::setsid() };
    let fail = |msg: String| {
        send(&report, &msg, None);
        1
    };
    let devfuse = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        Ok(f) => OwnedFd::from(f),
        Err(e) => return fail(format!("/dev/fuse: {}", errstr(&e))),
    };
    let uid = nix::unistd::getuid().as_raw().to_string();
    let gid = nix::unistd::getgid().as_raw().to_string();
    let fdnum = devfuse.as_raw_fd().to_string();
    let mk = |source: &str, subtype: &str| {
        sys::new_mount(
            "fuse",
            &[
                ("source", Some(source)),
                ("subtype", Some(subtype)),
                ("fd", Some(&fdnum)),
                ("rootmode", Some("40000")),
                ("user_id", Some(&uid)),
                ("group_id", Some(&gid)),
            ],
            libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        )
    };
    match server {
        Server::Union(held) => {
            let members: Vec<crate::union::Member> = held
                .into_iter()
                .map(|h| crate::union::Member {
                    dir: h.dir,
                    create: h.create,
                    label: h.label,
                })
                .collect();
            let source = crate::union::source(std::process::id(), &members);
            let tree = match mk(&source, "union") {
                Ok(t) => t,
                Err(e) => return fail(format!("mount: {}", errstr(&e))),
            };
            send(&report, "ok", Some(&tree));
            drop(tree);
            drop(report);
            leave();
            let config = crate::union::config(&source);
            let fs = crate::union::Union::new(members);
            match fuser::Session::from_fd(fs, devfuse, fuser::SessionACL::Owner, config) {
                Ok(s) => {
                    let _ = s.run();
                    0
                }
                Err(_) => 1,
            }
        }
        Server::NineP(svc) => {
            let super::Service {
                ref addr,
                ref aname,
                cache,
                noauth,
            } = svc;
            // Connect here, where the service's name means something; then leave the
            // name space before any thread is started (a thread would stay in it and
            // keep it alive), and only then speak 9P. factotum too is reached from
            // here, in case the service asks for authentication.
            let stream = match connect(addr) {
                Ok(s) => s,
                Err(e) => return fail(e),
            };
            let factotum = if noauth {
                None
            } else {
                connect(&lib9::auth::factotum_addr()).ok()
            };
            // The user's name too: /etc/passwd goes with the name space.
            let user = lib9::ns::user();
            leave();
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(format!("runtime: {e}")),
            };
            let conn = rt.block_on(async {
                let conn = stream.into_conn().await?;
                let c = lib9::Client::connect(conn, lib9::client::Options::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let root = if noauth {
                    c.attach_auth(None, &user, aname).await
                } else {
                    let f = match factotum {
                        Some(f) => f.into_conn().await.ok(),
                        None => None,
                    };
                    lib9::auth::attach_with(&c, &user, aname, f).await
                }
                .map_err(|e| e.to_string())?;
                Ok::<_, String>((c, root))
            });
            let (client, root) = match conn {
                Ok(c) => c,
                Err(e) => return fail(e),
            };
            let source = format!("9p:{}", svc.text());
            let tree = match mk(&source, "9p") {
                Ok(t) => t,
                Err(e) => return fail(format!("mount: {}", errstr(&e))),
            };
            send(&report, "ok", Some(&tree));
            drop(tree);
            drop(report);
            let b = crate::fuse::Bridge::new(client.clone(), root, rt.handle().clone(), cache);
            let mut config = fuser::Config::default();
            config.n_threads = Some(crate::fuse::THREADS);
            let session =
                match fuser::Session::from_fd(b, devfuse, fuser::SessionACL::Owner, config) {
                    Ok(s) => s,
                    Err(_) => return 1,
                };
            // Until the mount goes, or the server hangs up (then every operation
            // fails at once: the connection to the kernel goes with this process).
            let bg = match session.spawn() {
                Ok(b) => b,
                Err(_) => return 1,
            };
            let done = std::sync::Arc::new(tokio::sync::Notify::new());
            let d2 = done.clone();
            let waiter = std::thread::spawn(move || {
                let _ = bg.join();
                d2.notify_one();
            });
            rt.block_on(async {
                tokio::select! {
                    _ = client.hungup() => {}
                    _ = done.notified() => {}
                }
            });
            drop(waiter);
            0
        }
    }
}

/// A connection made before the runtime exists.
enum Stream {
    Unix(std::os::unix::net::UnixStream, String),
    Tcp(std::net::TcpStream, String),
    /// TCP, with the TLS handshake still to come (what it needs is read).
    Tls(std::net::TcpStream, Box<lib9::tls::Prepared>, String),
}

impl Stream {
    /// As lib9's connection; inside the runtime.
    async fn into_conn(self) -> Result<lib9::dial::Conn, String> {
        let io = |name: &str, e: io::Error| format!("{name}: {}", errstr(&e));
        Ok(match self {
            Stream::Unix(s, name) => {
                s.set_nonblocking(true).map_err(|e| io(&name, e))?;
                let s = tokio::net::UnixStream::from_std(s).map_err(|e| io(&name, e))?;
                lib9::dial::Conn::from_unix(s, name)
            }
            Stream::Tcp(s, name) => {
                s.set_nonblocking(true).map_err(|e| io(&name, e))?;
                let s = tokio::net::TcpStream::from_std(s).map_err(|e| io(&name, e))?;
                lib9::dial::Conn::from_tcp(s, name)
            }
            Stream::Tls(s, tls, name) => {
                s.set_nonblocking(true).map_err(|e| io(&name, e))?;
                let s = tokio::net::TcpStream::from_std(s).map_err(|e| io(&name, e))?;
                tls.handshake(s)
                    .await
                    .map_err(|e| e.to_string())?
                    .into_conn(name)
            }
        })
    }
}

/// How long a TCP connection may take to be made.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Dial `addr` (a dial string, or a name posted in `$NAMESPACE`) without a runtime.
fn connect(addr: &str) -> Result<Stream, String> {
    let a = lib9::dial::parse(addr).map_err(|e| e.to_string())?;
    let name = a.to_string();
    match a {
        lib9::dial::Addr::Unix(p) => std::os::unix::net::UnixStream::connect(&p)
            .map(|s| Stream::Unix(s, name.clone()))
            .map_err(|e| format!("{name}: {}", errstr(&e))),
        lib9::dial::Addr::Tcp { host, port } => {
            connect_tcp(&host, port, &name).map(|s| Stream::Tcp(s, name))
        }
        lib9::dial::Addr::Tls(t) => {
            let tls = t.prepare().map_err(|e| e.to_string())?;
            connect_tcp(&t.host, t.port, &name).map(|s| Stream::Tls(s, Box::new(tls), name))
        }
    }
}

/// Connect to `host`'s `port`, giving up on a host that never answers.
fn connect_tcp(host: &str, port: u16, name: &str) -> Result<std::net::TcpStream, String> {
    lib9::dial::connect_tcp(host, port, CONNECT_TIMEOUT)
        .map_err(|e| format!("{name}: {}", errstr(&e)))
}

/// Leave the caller's name space for one holding only the root file system, /proc
/// and /dev/fuse (fuser opens it again for its threads), so that this process keeps
/// no mount of it alive.
fn leave() {
    if sys::unshare(libc::CLONE_NEWNS).is_err() {
        return;
    }
    let _ = sys::make_private("/");
    let _ = std::env::set_current_dir("/");
    let fuse = sys::clone_tree(libc::AT_FDCWD, "/dev/fuse").ok();
    for _ in 0..8 {
        let Ok(all) = mountinfo::read() else { return };
        let Some(root) = all.iter().find(|m| m.point == "/").map(|m| m.id) else {
            return;
        };
        let kids: Vec<&Mount> = all
            .iter()
            .filter(|m| m.parent == root && m.id != root && m.point != "/proc")
            .collect();
        if kids.is_empty() {
            break;
        }
        for m in kids {
            let _ = sys::detach(&m.point);
        }
    }
    if let (Some(fuse), Ok(dev)) = (
        fuse,
        sys::new_mount(
            "tmpfs",
            &[("source", Some("none")), ("size", Some("4k"))],
            0,
        ),
    ) {
        if sys::attach(&dev, "/dev").is_ok() && std::fs::File::create("/dev/fuse").is_ok() {
            let _ = sys::attach(&fuse, "/dev/fuse");
        }
    }
}

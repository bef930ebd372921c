//! 9pfuse: mount a 9P service through FUSE. See docs/9pfuse.md.

use clap::Parser;
use lib9::client::Client;
use lib9::client_l::{LClient, LFid};

/// Mount a 9P service on a directory, through FUSE, so that every program sees its
/// files (docs/9pfuse.md).
///
/// ADDR is a dial string (tcp!host!port, unix!/path) or the name of a service posted in
/// $NAMESPACE. 9pfuse stays in the foreground and unmounts when it is interrupted or
/// terminated, or when the server hangs up.
#[derive(Parser)]
#[command(name = "9pfuse", version)]
struct Args {
    /// Speak 9P2000.L (Linux servers such as diod); the tree is the attach name
    #[arg(short = 'L')]
    dotl: bool,
    /// Let the kernel cache pages, names and attributes (for disk-like trees)
    #[arg(short = 'c')]
    cache: bool,
    /// Attach to this tree of the service
    #[arg(short = 'A', value_name = "aname", default_value = "")]
    aname: String,
    /// Mount options, separated by commas (ro, rw, default_permissions, ...)
    #[arg(short = 'o', value_name = "opts")]
    opts: Option<String>,
    /// The service
    addr: String,
    /// Where to mount it
    mountpoint: String,
}

fn main() {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fatal(&format!("runtime: {e}")),
    };
    let conn = match rt.block_on(Conn::dial(&args)) {
        Ok(c) => c,
        // Dial errors name the address already.
        Err(e) if e.starts_with(&args.addr) => fatal(&e),
        Err(e) => fatal(&format!("{}: {e}", args.addr)),
    };
    let mut options = vec![
        fuser::MountOption::FSName(args.addr.clone()),
        fuser::MountOption::Subtype("9pfuse".into()),
    ];
    // Who may use the mount: fuser answers only its owner unless told otherwise.
    let mut acl = fuser::SessionACL::Owner;
    for o in args
        .opts
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        options.push(match o {
            "ro" => fuser::MountOption::RO,
            "rw" => fuser::MountOption::RW,
            "default_permissions" => fuser::MountOption::DefaultPermissions,
            "allow_other" => {
                acl = fuser::SessionACL::All;
                continue;
            }
            "allow_root" => {
                acl = fuser::SessionACL::RootAndOwner;
                continue;
            }
            other => fuser::MountOption::CUSTOM(other.to_string()),
        });
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = acl;
    config.n_threads = Some(srv::fuse::THREADS);
    // The signals that unmount are caught from before the mount appears, so that
    // one sent as soon as it is there does not kill 9pfuse with the mount left behind.
    let (mut int, mut term, mut hup) = {
        let _rt = rt.enter();
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
            signal(SignalKind::hangup()).ok(),
        )
    };
    let session = match &conn {
        Conn::P9(client, root) => {
            let b = srv::fuse::Bridge::new(
                client.clone(),
                root.take_root(),
                rt.handle().clone(),
                args.cache,
            );
            fuser::spawn_mount(b, &args.mountpoint, &config)
        }
        Conn::L(client, root) => {
            let b = srv::fuse_l::BridgeL::new(
                client.clone(),
                root.take_root(),
                rt.handle().clone(),
                args.cache,
            );
            fuser::spawn_mount(b, &args.mountpoint, &config)
        }
    };
    let session = match session {
        Ok(s) => s,
        Err(e) => fatal(&format!(
            "mount {}: {}",
            args.mountpoint,
            mount_error(&e, &args.mountpoint)
        )),
    };
    // Until a signal, or the server hangs up.
    let why = rt.block_on(async {
        tokio::select! {
            _ = next(&mut int) => None,
            _ = next(&mut term) => None,
            _ = next(&mut hup) => None,
            _ = conn.hungup() => Some("server hung up"),
        }
    });
    drop(session);
    // If a program still holds something open there, the unmount above failed: let
    // the mount go now and vanish when they let go, rather than stay, dead.
    lazy_unmount(&args.mountpoint, &args.addr);
    if let Some(why) = why {
        eprintln!("9pfuse: {}: {why}", args.addr);
        std::process::exit(1);
    }
}

/// Why a mount failed, in words that point at the cause: an ordinary user needs
/// /dev/fuse open to them and, outside a user namespace, fusermount3.
fn mount_error(e: &std::io::Error, dir: &str) -> String {
    use std::io::ErrorKind;
    let dev = "/dev/fuse";
    let refused = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .is_err_and(|e| e.kind() == ErrorKind::PermissionDenied);
    match e.kind() {
        ErrorKind::PermissionDenied if refused => {
            format!("{dev}: permission denied (FUSE needs it readable and writable by you)")
        }
        ErrorKind::NotFound
            if std::path::Path::new(dir).exists() && std::path::Path::new(dev).exists() =>
        {
            "fusermount3 not found (ordinary users mount through it: install fuse3)".into()
        }
        // fusermount3's own words end in a newline.
        _ => e.to_string().trim_end().to_string(),
    }
}

/// Wait for the next of a signal (forever if it could not be caught).
async fn next(s: &mut Option<tokio::signal::unix::Signal>) {
    match s.as_mut() {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Detach the mount on `dir` if the topmost one there is ours (FUSE, named after the
/// service): `fuse` when mounted directly (as root, or as root in a user namespace),
/// `fuse.9pfuse` when fusermount3 mounted it for an ordinary user.
fn lazy_unmount(dir: &str, source: &str) {
    let Ok(path) = std::fs::canonicalize(dir).map(|p| p.to_string_lossy().into_owned()) else {
        return;
    };
    let all = srv::ns::mountinfo::read().unwrap_or_default();
    let ours = srv::ns::mountinfo::stack(&all, &path)
        .last()
        .is_some_and(|m| {
            (m.fstype == "fuse" || m.fstype.starts_with("fuse.")) && m.source == source
        });
    if !ours {
        return;
    }
    let Ok(c) = std::ffi::CString::new(path.as_str()) else {
        return;
    };
    // SAFETY: detaching a mount by path; harmless if there is none.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        // EPERM: an ordinary user's mount, made by fusermount3, which unmounts it too.
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z", "--", path.as_str()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The connection, in one dialect or the other, and its root until the bridge takes it.
enum Conn {
    P9(Client, Root<lib9::Fid>),
    L(LClient, Root<LFid>),
}

/// A root fid, handed to the bridge once.
struct Root<T>(std::sync::Mutex<Option<T>>);

impl<T> Root<T> {
    fn new(t: T) -> Root<T> {
        Root(std::sync::Mutex::new(Some(t)))
    }

    fn take_root(&self) -> T {
        match self.0.lock().ok().and_then(|mut r| r.take()) {
            Some(t) => t,
            None => fatal("root already taken"),
        }
    }
}

impl Conn {
    async fn dial(args: &Args) -> Result<Conn, String> {
        let user = lib9::ns::user();
        if args.dotl {
            let c = LClient::dial(&args.addr, lib9::fcall::MAX_MSIZE)
                .await
                .map_err(|e| e.to_string())?;
            // SAFETY: getuid cannot fail.
            let uid = unsafe { libc::getuid() };
            let root = c
                .attach(&user, &args.aname, uid)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Conn::L(c, Root::new(root)))
        } else {
            let c = Client::dial(&args.addr).await.map_err(|e| e.to_string())?;
            let root = c
                .attach(&user, &args.aname)
                .await
                .map_err(|e| e.to_string())?;
            Ok(Conn::P9(c, Root::new(root)))
        }
    }

    async fn hungup(&self) {
        match self {
            Conn::P9(c, _) => c.hungup().await,
            Conn::L(c, _) => c.hungup().await,
        }
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("9pfuse: {msg}");
    std::process::exit(1);
}

//! 9pfuse: mount a 9P service through FUSE. See docs/9pfuse.md.

use clap::Parser;
use lib9::client::Client;

/// Mount a 9P service on a directory, through FUSE, so that every program sees its
/// files (docs/9pfuse.md).
///
/// ADDR is a dial string (tcp!host!port, unix!/path) or the name of a service posted in
/// $NAMESPACE. 9pfuse stays in the foreground and unmounts when it is interrupted or
/// terminated, or when the server hangs up.
#[derive(Parser)]
#[command(name = "9pfuse", version)]
struct Args {
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
    let (client, root) = match rt.block_on(async {
        let c = Client::dial(&args.addr).await?;
        let root = c.attach(&lib9::ns::user(), &args.aname).await?;
        Ok::<_, lib9::client::Error>((c, root))
    }) {
        Ok(x) => x,
        Err(e) => fatal(&format!("{}: {e}", args.addr)),
    };
    let mut options = vec![
        fuser::MountOption::FSName(args.addr.clone()),
        fuser::MountOption::Subtype("9pfuse".into()),
    ];
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
            other => fuser::MountOption::CUSTOM(other.to_string()),
        });
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    let bridge = srv::fuse::Bridge::new(client.clone(), root, rt.handle().clone(), args.cache);
    let session = match fuser::spawn_mount(bridge, &args.mountpoint, &config) {
        Ok(s) => s,
        Err(e) => fatal(&format!("mount {}: {e}", args.mountpoint)),
    };
    // Until a signal, or the server hangs up.
    let why = rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => None,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => None,
            _ = async { match hup.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => None,
            _ = client.hungup() => Some("server hung up"),
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

/// Detach the mount on `dir` if the topmost one there is ours (FUSE, named after the
/// service).
fn lazy_unmount(dir: &str, source: &str) {
    let Ok(path) = std::fs::canonicalize(dir).map(|p| p.to_string_lossy().into_owned()) else {
        return;
    };
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // Fields: id parent major:minor root mountpoint options ... - fstype source ...
    let top = info
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(path.as_str()));
    let ours = top.is_some_and(|l| {
        let mut f = l.split(" - ").nth(1).unwrap_or("").split(' ');
        let (ty, src) = (f.next().unwrap_or(""), f.next().unwrap_or(""));
        ty.starts_with("fuse") && src == source
    });
    if !ours {
        return;
    }
    let Ok(c) = std::ffi::CString::new(path.as_str()) else {
        return;
    };
    // SAFETY: detaching a mount by path; harmless if there is none.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let _ = std::process::Command::new("fusermount3")
            .args(["-u", "-z", path.as_str()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

fn fatal(msg: &str) -> ! {
    eprintln!("9pfuse: {msg}");
    std::process::exit(1);
}

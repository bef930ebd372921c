//! factotum: the authentication agent (factotum(4)). See docs/factotum.md.

use clap::Parser;
use factotum::fs::Factotum;
use srv::daemon::{self, Opts, fatal};

/// Hold keys and speak authentication protocols for programs (docs/factotum.md).
///
/// Posts itself as `factotum` (or the -s name) in $NAMESPACE, socket mode 0600, and
/// goes into the background once it accepts connections, unless -f is given.
#[derive(Parser)]
#[command(name = "factotum", version)]
struct Args {
    /// Do not load keys from secstore nor prompt at start (there is no secstore yet)
    #[arg(short = 'n')]
    no_secstore: bool,
    /// Post the service as NAME in $NAMESPACE
    #[arg(short = 's', value_name = "srvname", default_value = "factotum")]
    srvname: String,
    /// Mount point (accepted; mounting comes with the namespace engine)
    #[arg(short = 'm', value_name = "mtpt")]
    mtpt: Option<String>,
    /// The authentication server, tcp!host[!port] (p9sk1 clients get tickets
    /// there when the key has no auth= attribute)
    #[arg(short = 'a', value_name = "authaddr")]
    authaddr: Option<String>,
    /// Print debugging messages on standard error (no secret is ever printed)
    #[arg(short = 'd')]
    debug: bool,
    /// Print every 9P message on standard error
    #[arg(short = 'D')]
    trace: bool,
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
}

/// Keep the process's memory out of core dumps, ptrace by other users and swap.
fn harden(debug: bool) {
    // SAFETY: prctl with PR_SET_DUMPABLE takes an integer argument.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        fatal("factotum", "cannot make the process undumpable");
    }
    // Lock all memory when the limit allows it; with a small RLIMIT_MEMLOCK,
    // MCL_FUTURE would make later allocations fail, so then memory is not locked.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } == 0;
    if ok && (rl.rlim_cur == libc::RLIM_INFINITY || rl.rlim_cur >= 512 << 20) {
        // SAFETY: mlockall takes flags only.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 && debug {
            eprintln!("factotum: mlockall failed; memory not locked");
        }
    } else if debug {
        eprintln!("factotum: RLIMIT_MEMLOCK too small; memory not locked");
    }
}

fn main() {
    let a: Args = daemon::args();
    harden(a.debug);
    let _ = (a.no_secstore, &a.mtpt);
    // The posted socket must be the user's alone: 0600.
    // SAFETY: umask only sets the process's file creation mask.
    unsafe { libc::umask(0o077) };
    let o = Opts {
        addrs: Vec::new(),
        names: vec![a.srvname.clone()],
        stdio: false,
        foreground: a.foreground,
        tls: Default::default(),
    };
    let listeners = daemon::announce_all(&o).unwrap_or_else(|e| fatal("factotum", e));
    let path = lib9::ns::service_path(&a.srvname).unwrap_or_else(|e| fatal("factotum", e));
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            fatal("factotum", format!("chmod {}: {e}", path.display()));
        }
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.permissions().mode() & 0o777 == 0o600 => {}
            _ => fatal("factotum", format!("{} is not mode 0600", path.display())),
        }
    }
    if !o.foreground {
        daemon::background().unwrap_or_else(|e| fatal("factotum", e));
    }
    // dp9ik's table of multiples of the curve's base point, made now rather than
    // in the first exchange.
    std::thread::spawn(factotum::pak::warm_up);
    let fs = Factotum::new(&lib9::ns::user()).with_authaddr(a.authaddr.clone());
    if a.debug {
        let _ = fs.ctl("debug");
    }
    let rt = daemon::runtime().unwrap_or_else(|e| fatal("factotum", e));
    let cfg = lib9::server::Config {
        trace: a.trace,
        ..lib9::server::Config::default()
    };
    let server = lib9::server::Server::with_config(fs, cfg);
    if let Err(e) = rt.block_on(daemon::serve(server, &o, listeners)) {
        fatal("factotum", e);
    }
}

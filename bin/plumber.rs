//! plumber: route plumb messages between programs by rules. See docs/plumber.md.

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use plumber::fs::{Plumber, RcStarter};
use plumber::rules::{HostLibrary, Rules};
use srv::daemon::{self, Opts, fatal};

/// Route messages ("this text was clicked in this directory") to the programs that
/// want them, by the rules of plumb(6) (docs/plumber.md).
///
/// Posts itself as `plumb` in $NAMESPACE and goes into the background once it
/// accepts connections, unless -f is given. The rules are the -p file, else
/// $home/lib/plumbing, else the built-in rules.
#[derive(Parser)]
#[command(name = "plumber", version)]
struct Args {
    /// Read the rules from this file
    #[arg(short = 'p', value_name = "plumbing")]
    plumbing: Option<String>,
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
    /// Post the service under this name instead of plumb
    #[arg(short = 's', value_name = "srvname", default_value = "plumb")]
    srvname: String,
    /// Where to mount the service in a private name space (default /mnt/plumb)
    #[arg(short = 'm', value_name = "mtpt")]
    mtpt: Option<String>,
    /// Print every 9P message on standard error
    #[arg(short = 'D')]
    trace: bool,
}

fn load(a: &Args) -> Rules {
    let (name, text) = match &a.plumbing {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => (p.clone(), t),
            Err(e) => fatal("plumber", format!("can't open rules file {p}: {e}")),
        },
        None => {
            let home = std::env::var("home")
                .or_else(|_| std::env::var("HOME"))
                .unwrap_or_default();
            let p = format!("{home}/lib/plumbing");
            match std::fs::read_to_string(&p) {
                Ok(t) if !home.is_empty() => (p, t),
                _ => (
                    "initial.plumbing".into(),
                    plumber::defaults::INITIAL.to_string(),
                ),
            }
        }
    };
    Rules::parse(&name, &text, &HostLibrary).unwrap_or_else(|e| fatal("plumber", e))
}

fn main() {
    let a: Args = daemon::args();
    let rules = load(&a);
    let o = Opts::posted(&a.srvname, a.foreground);
    let listeners = daemon::announce_all(&o).unwrap_or_else(|e| fatal("plumber", e));
    // In a private name space the service is also mounted, where Plan 9's programs
    // look for it.
    let selfmount = daemon::SelfMount::new(&a.srvname, a.mtpt.as_deref().unwrap_or("/mnt/plumb"));
    if !o.foreground {
        daemon::background_mounted(selfmount.as_ref(), "plumber")
            .unwrap_or_else(|e| fatal("plumber", e));
    } else if let Some(m) = &selfmount {
        m.mount_aside("plumber");
    }
    let fs = Plumber::new(
        &lib9::ns::user(),
        rules,
        Box::new(HostLibrary),
        Box::new(RcStarter::find()),
    );
    // One thread: a message's work is small, and handing requests between worker
    // threads (waking one for each) would cost more than the work.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fatal("plumber", e));
    let cfg = lib9::server::Config {
        trace: a.trace,
        max_msize: 256 * 1024,
        ..lib9::server::Config::default()
    };
    let server = lib9::server::Server::with_config(fs, cfg);
    let served = rt.block_on(daemon::serve_mounted(server, &o, listeners, selfmount));
    if let Err(e) = served {
        fatal("plumber", e);
    }
}

//! exportfs: serve a host directory over 9P. See docs/exportfs.md.

/// Servers and clients churn through message buffers; mimalloc recycles them without
/// returning pages to the kernel after every message.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use lib9::server::{Config, Server};
use srv::daemon::{self, Opts, fatal};
use srv::exportfs::ExportFs;
use std::path::PathBuf;

/// Serve a host directory over 9P, confined beneath it (docs/exportfs.md).
///
/// Without -a, -s or -i, exportfs posts itself as `exportfs` in $NAMESPACE. It goes
/// into the background once its addresses accept connections, unless -f or -i is given.
#[derive(Parser)]
#[command(name = "exportfs", version)]
struct Args {
    /// Serve read-only: no write, create, remove or wstat
    #[arg(short = 'R')]
    readonly: bool,
    /// Announce this dial string (tcp!*!564, unix!/path; a bare name is a host)
    #[arg(short = 'a', value_name = "addr")]
    addr: Vec<String>,
    /// Post the service as NAME in $NAMESPACE
    #[arg(short = 's', value_name = "name")]
    name: Vec<String>,
    /// Serve one client on standard input and output
    #[arg(short = 'i')]
    stdio: bool,
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
    /// Print every 9P message on standard error
    #[arg(short = 'D')]
    debug: bool,
    /// The directory to export
    dir: PathBuf,
}

fn main() {
    let a: Args = daemon::args();
    let fs = ExportFs::new(&a.dir, a.readonly).unwrap_or_else(|e| {
        fatal(
            "exportfs",
            format!("{}: {}", a.dir.display(), lib9::Ename::from(e)),
        )
    });
    let mut o = Opts {
        addrs: a.addr,
        names: a.name,
        stdio: a.stdio,
        foreground: a.foreground || a.stdio,
    };
    if o.addrs.is_empty() && o.names.is_empty() && !o.stdio {
        o.names.push("exportfs".into());
    }
    let listeners = daemon::announce_all(&o).unwrap_or_else(|e| fatal("exportfs", e));
    if !o.foreground {
        daemon::background().unwrap_or_else(|e| fatal("exportfs", e));
    }
    let rt = daemon::runtime().unwrap_or_else(|e| fatal("exportfs", e));
    let cfg = Config {
        trace: a.debug,
        ..Config::default()
    };
    let server = Server::with_config(fs, cfg);
    if let Err(e) = rt.block_on(daemon::serve(server, &o, listeners)) {
        fatal("exportfs", e);
    }
}

//! ramfs: serve an in-memory file tree over 9P. See docs/ramfs.md.

/// Servers and clients churn through message buffers; mimalloc recycles them without
/// returning pages to the kernel after every message.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use lib9::server::{Config, Server};
use srv::daemon::{self, Opts, fatal};
use srv::ramfs::{self, RamFs};

/// Serve an in-memory file tree over 9P (docs/ramfs.md).
///
/// Without -a, -s or -i, ramfs posts itself as `ramfs` in $NAMESPACE. It goes into the
/// background once its addresses accept connections, unless -f or -i is given.
#[derive(Parser)]
#[command(name = "ramfs", version)]
struct Args {
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
    /// Hold at most this many bytes of file data (suffixes k, m, g; default half the memory)
    #[arg(short = 'm', value_name = "size")]
    limit: Option<String>,
}

fn size(s: &str) -> Option<u64> {
    let (num, mul) = match s.char_indices().last() {
        Some((i, 'k' | 'K')) => (&s[..i], 1u64 << 10),
        Some((i, 'm' | 'M')) => (&s[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

fn main() {
    let a: Args = daemon::args();
    let limit = match &a.limit {
        Some(s) => size(s).unwrap_or_else(|| fatal("ramfs", format!("bad size '{s}'"))),
        None => ramfs::default_limit(),
    };
    let mut o = Opts {
        addrs: a.addr,
        names: a.name,
        stdio: a.stdio,
        foreground: a.foreground || a.stdio,
    };
    if o.addrs.is_empty() && o.names.is_empty() && !o.stdio {
        o.names.push("ramfs".into());
    }
    let listeners = daemon::announce_all(&o).unwrap_or_else(|e| fatal("ramfs", e));
    if !o.foreground {
        daemon::background().unwrap_or_else(|e| fatal("ramfs", e));
    }
    let rt = daemon::runtime().unwrap_or_else(|e| fatal("ramfs", e));
    let owner = lib9::ns::user();
    let cfg = Config {
        trace: a.debug,
        ..Config::default()
    };
    let server = Server::with_config(RamFs::new(&owner, limit), cfg);
    if let Err(e) = rt.block_on(daemon::serve(server, &o, listeners)) {
        fatal("ramfs", e);
    }
}

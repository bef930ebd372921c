//! ramfs: serve an in-memory file tree over 9P. See docs/ramfs.md.

/// Servers and clients churn through message buffers; mimalloc recycles them without
/// returning pages to the kernel after every message.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use srv::daemon::{self, ServeArgs, fatal};
use srv::ramfs::{self, RamFs};

/// Serve an in-memory file tree over 9P (docs/ramfs.md).
///
/// Without -a, -s or -i, ramfs posts itself as `ramfs` in $NAMESPACE. It goes into the
/// background once its addresses accept connections, unless -f or -i is given.
#[derive(Parser)]
#[command(name = "ramfs", version)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
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
    let fs = RamFs::new(&lib9::ns::user(), limit);
    daemon::run_server("ramfs", &a.serve, "ramfs", fs);
}

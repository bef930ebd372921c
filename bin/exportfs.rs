//! exportfs: serve a host directory over 9P. See docs/exportfs.md.

/// Servers and clients churn through message buffers; mimalloc recycles them without
/// returning pages to the kernel after every message.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use srv::daemon::{self, ServeArgs, fatal};
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
    #[command(flatten)]
    serve: ServeArgs,
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
    daemon::run_server("exportfs", &a.serve, "exportfs", fs);
}

//! 9p: read and write files on a 9P server, as plan9port's 9p(1). See docs/9p.md.

/// Servers and clients churn through message buffers; mimalloc recycles them without
/// returning pages to the kernel after every message.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use lib9::blocking::{Client, Fid};
use lib9::client::Options;
use lib9::dial;
use lib9::fcall::{DMDIR, ModeString, ORDWR, OREAD, OTRUNC, OWRITE, QTAPPEND, QTDIR, QTEXCL, Stat};
use srv::daemon::{self, fatal};
use std::io::{BufRead, Read, Write};

/// Read and write files on a 9P server (docs/9p.md).
///
/// Without -a, a path is SERVICE/PATH: the service SERVICE posted in $NAMESPACE, and
/// PATH within it. With -a, paths are within the server at ADDR.
#[derive(Parser)]
#[command(name = "9p", version)]
struct Args {
    /// Dial this address (a bare name is a host, at tcp!name!9fs)
    #[arg(short = 'a', value_name = "addr")]
    addr: Option<String>,
    /// Attach to the tree ANAME
    #[arg(short = 'A', value_name = "aname", default_value = "")]
    aname: String,
    /// Propose this msize
    #[arg(short = 'm', value_name = "msize", default_value_t = lib9::client::DEFAULT_MSIZE)]
    msize: u32,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the contents of PATH
    Read { path: String },
    /// Like read (this 9p has no openfd; see docs/9p.md)
    Readfd { path: String },
    /// Write standard input to PATH, truncating it first
    Write {
        /// Write one line at a time
        #[arg(short = 'l')]
        lines: bool,
        path: String,
    },
    /// Like write (this 9p has no openfd; see docs/9p.md)
    Writefd { path: String },
    /// Print the stat of PATH
    Stat { path: String },
    /// Alternate: a line from PATH to standard output, a line from standard input to PATH
    Rdwr { path: String },
    /// List directories, or files, as ls(1) does
    Ls {
        /// List a directory itself, not its contents
        #[arg(short = 'd')]
        dir: bool,
        /// Long listing
        #[arg(short = 'l')]
        long: bool,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Create files (or directories, with -d)
    Create {
        /// Create directories
        #[arg(short = 'd')]
        dir: bool,
        /// Permissions, in octal
        #[arg(short = 'p', value_name = "perm")]
        perm: Option<String>,
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Print the SHA-256 fingerprint of your TLS certificate ($HOME/lib/tls), made if missing
    Tlsid,
    /// Remove files
    Rm {
        #[arg(required = true)]
        paths: Vec<String>,
    },
}

struct Ctx {
    addr: Option<String>,
    aname: String,
    msize: u32,
}

impl Ctx {
    /// Connect for `name` and return the root fid and the path within the server.
    fn mount(&self, name: &str) -> Result<(Fid, String), String> {
        let (addr, path) = match &self.addr {
            Some(a) => (
                dial::parse_host(a, "9fs").map_err(|e| e.to_string())?,
                name.to_string(),
            ),
            None => {
                let (svc, path) = name.split_once('/').unwrap_or((name, ""));
                let p = lib9::ns::service_path(svc).map_err(|e| e.to_string())?;
                (dial::Addr::Unix(p), path.to_string())
            }
        };
        let c = Client::connect(
            &addr,
            Options {
                msize: self.msize,
                ..Options::default()
            },
        )
        .map_err(|e| format!("mount: {e}"))?;
        let root = c
            .attach(&lib9::ns::user(), &self.aname)
            .map_err(|e| format!("mount: {e}"))?;
        Ok((root, path))
    }

    fn walk(&self, name: &str) -> Result<Fid, String> {
        let (root, path) = self.mount(name)?;
        root.walk(&path).map_err(|e| format!("{name}: {e}"))
    }

    fn open(&self, name: &str, mode: u8) -> Result<Fid, String> {
        let mut f = self.walk(name)?;
        f.open(mode).map_err(|e| format!("open {name}: {e}"))?;
        Ok(f)
    }
}

/// Write to standard output; a closed pipe ends the program quietly, as it would a
/// Plan 9 one.
fn out(b: &[u8]) {
    let mut o = std::io::stdout().lock();
    if o.write_all(b).is_err() {
        std::process::exit(1);
    }
}

fn read(ctx: &Ctx, name: &str) -> Result<(), String> {
    let f = ctx.open(name, OREAD)?;
    let st = f.stat().map_err(|e| format!("stat {name}: {e}"))?;
    // Files with a length are read with several requests in flight; synthetic files
    // (length 0, append-only, exclusive) one read at a time, as their servers expect.
    let synthetic = st.length == 0 || st.qid.ty & (QTAPPEND | QTEXCL | QTDIR) != 0;
    let depth = if synthetic { 1 } else { f.depth() };
    // Straight to descriptor 1: std's stdout is line-buffered, and would search every
    // megabyte read for its last newline.
    let _ = std::io::stdout().flush();
    // SAFETY: descriptor 1, borrowed for the writes and never closed here.
    let mut out = std::mem::ManuallyDrop::new(unsafe {
        <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(1)
    });
    let r = f
        .read_stream(0, depth, |b| out.write_all(&b))
        .map_err(|e| format!("read error: {e}"))?;
    if r.is_err() {
        std::process::exit(1);
    }
    Ok(())
}

fn write(ctx: &Ctx, name: &str, lines: bool) -> Result<(), String> {
    let f = ctx.open(name, OWRITE | OTRUNC)?;
    let mut off = 0u64;
    let mut did = false;
    let put = |b: &[u8], off: &mut u64| -> Result<(), String> {
        for piece in b.chunks(f.iounit().max(1) as usize) {
            let n = f
                .write(*off, Bytes::copy_from_slice(piece))
                .map_err(|e| format!("write error: {e}"))?;
            if n as usize != piece.len() {
                return Err(format!("write error: short write ({n} of {})", piece.len()));
            }
            *off += n as u64;
        }
        Ok(())
    };
    let stdin = std::io::stdin();
    if lines {
        for line in stdin.lock().split(b'\n') {
            let mut l = line.map_err(|e| format!("read error: {e}"))?;
            l.push(b'\n');
            did = true;
            put(&l, &mut off)?;
        }
    } else {
        let mut buf = vec![0u8; f.iounit().clamp(4096, 1 << 20) as usize];
        let mut inp = stdin.lock();
        loop {
            let n = match inp.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("read error: {e}")),
            };
            did = true;
            put(&buf[..n], &mut off)?;
        }
    }
    if !did {
        // An empty write, as plan9port sends, so that servers see the request.
        f.write(0, Bytes::new())
            .map_err(|e| format!("write error: {e}"))?;
    }
    Ok(())
}

fn stat(ctx: &Ctx, name: &str) -> Result<(), String> {
    let f = ctx.walk(name)?;
    let st = f.stat().map_err(|e| format!("dirstat: {e}"))?;
    out(format!("{st}\n").as_bytes());
    Ok(())
}

fn rdwr(ctx: &Ctx, name: &str) -> Result<(), String> {
    let f = ctx.open(name, ORDWR)?;
    let mut roff = 0u64;
    let mut woff = 0u64;
    let stdin = std::io::stdin();
    let mut inp = stdin.lock();
    loop {
        match f.read(roff, 4096) {
            Ok(b) => {
                roff += b.len() as u64;
                out(&b);
                out(b"\n");
            }
            Err(e) => eprintln!("read: {e}"),
        }
        let mut line = Vec::new();
        match inp.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(_) => {}
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        match f.write(woff, Bytes::from(line)) {
            Ok(n) => woff += n as u64,
            Err(e) => eprintln!("write: {e}"),
        }
    }
}

/// Quote a name as rc would need it.
fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars().all(|c| {
            !c.is_whitespace() && !"'`^#;&|<>(){}=$*?[]\\\"".contains(c) && !c.is_control()
        });
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// A time as ls -l prints it.
fn lstime(t: u32, now: i64) -> String {
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let tt = t as libc::time_t;
    // SAFETY: localtime_r fills the tm we pass.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: as above; both pointers are valid.
    unsafe { libc::localtime_r(&tt, &mut tm) };
    let mon = MON.get(tm.tm_mon as usize).copied().unwrap_or("???");
    if now - (t as i64) < 6 * 30 * 86400 {
        format!("{mon} {:2} {:02}:{:02}", tm.tm_mday, tm.tm_hour, tm.tm_min)
    } else {
        format!("{mon} {:2} {:5}", tm.tm_mday, tm.tm_year + 1900)
    }
}

fn print_long(list: &[Stat]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let wu = list.iter().map(|d| d.uid.len()).max().unwrap_or(0);
    let wg = list.iter().map(|d| d.gid.len()).max().unwrap_or(0);
    let wl = list
        .iter()
        .map(|d| d.length.to_string().len())
        .max()
        .unwrap_or(0);
    let mut s = String::new();
    for d in list {
        s.push_str(&format!(
            "{} M 0 {:<wu$} {:<wg$} {:>wl$} {} {}\n",
            ModeString(d.mode),
            d.uid,
            d.gid,
            d.length,
            lstime(d.mtime, now),
            quote(&d.name)
        ));
    }
    out(s.as_bytes());
}

fn ls(ctx: &Ctx, names: &[String], dflag: bool, long: bool) -> bool {
    let mut ok = true;
    for name in names {
        let r = (|| -> Result<(), String> {
            let mut f = ctx.walk(name)?;
            let st = f.stat().map_err(|e| format!("dirstat {name}: {e}"))?;
            let mut list = if st.mode & DMDIR != 0 && !dflag {
                f.open(OREAD).map_err(|e| format!("open {name}: {e}"))?;
                f.readdir().map_err(|e| format!("dirreadall {name}: {e}"))?
            } else {
                vec![st]
            };
            list.sort_by(|a, b| a.name.cmp(&b.name));
            if long {
                print_long(&list);
            } else {
                let mut s = String::new();
                for d in &list {
                    s.push_str(&quote(&d.name));
                    s.push('\n');
                }
                out(s.as_bytes());
            }
            Ok(())
        })();
        if let Err(e) = r {
            eprintln!("9p: {e}");
            ok = false;
        }
    }
    ok
}

fn create(ctx: &Ctx, names: &[String], dir: bool, perm: Option<&str>) -> bool {
    let perm = match perm {
        Some(p) => match u32::from_str_radix(p, 8) {
            Ok(p) if p <= 0o777 => p,
            _ => fatal("9p", format!("bad permissions '{p}'")),
        },
        None if dir => 0o777,
        None => 0o666,
    };
    let mut ok = true;
    for name in names {
        let r = (|| -> Result<(), String> {
            let (root, path) = ctx.mount(name)?;
            let (dpath, elem) = match path.trim_end_matches('/').rsplit_once('/') {
                Some((d, e)) => (d.to_string(), e.to_string()),
                None => (String::new(), path.trim_end_matches('/').to_string()),
            };
            if elem.is_empty() {
                return Err(format!("create {name}: no name to create"));
            }
            let mut d = root.walk(&dpath).map_err(|e| format!("{name}: {e}"))?;
            let p = if dir { DMDIR | perm } else { perm };
            d.create(&elem, p, OREAD)
                .map_err(|e| format!("create {name}: {e}"))
        })();
        if let Err(e) = r {
            eprintln!("9p: {e}");
            ok = false;
        }
    }
    ok
}

fn rm(ctx: &Ctx, names: &[String]) -> bool {
    let mut ok = true;
    for name in names {
        let r = ctx
            .walk(name)
            .and_then(|f| f.remove().map_err(|e| format!("remove {name}: {e}")));
        if let Err(e) = r {
            eprintln!("9p: {e}");
            ok = false;
        }
    }
    ok
}

fn main() {
    let a: Args = daemon::args();
    let ctx = Ctx {
        addr: a.addr,
        aname: a.aname,
        msize: a.msize,
    };
    let ok = match &a.cmd {
        Cmd::Read { path } | Cmd::Readfd { path } => read(&ctx, path).map(|_| true),
        Cmd::Write { lines, path } => write(&ctx, path, *lines).map(|_| true),
        Cmd::Writefd { path } => write(&ctx, path, false).map(|_| true),
        Cmd::Stat { path } => stat(&ctx, path).map(|_| true),
        Cmd::Rdwr { path } => rdwr(&ctx, path).map(|_| true),
        Cmd::Ls { dir, long, paths } => Ok(ls(&ctx, paths, *dir, *long)),
        Cmd::Create { dir, perm, paths } => Ok(create(&ctx, paths, *dir, perm.as_deref())),
        Cmd::Rm { paths } => Ok(rm(&ctx, paths)),
        Cmd::Tlsid => lib9::tls::Identity::user_or_generate()
            .map(|id| {
                println!("{}", id.fingerprint());
                true
            })
            .map_err(|e| e.to_string()),
    };
    match ok {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => fatal("9p", e),
    }
}

//! The 9P benchmark: ramfs and exportfs against the physical limits of the same
//! socket, measured in the same run and printed side by side.
//!
//! - sequential read and write of a 256 MiB file at msize 8 KiB, 128 KiB and 1 MiB of
//!   data per message, against a raw copy of the same bytes over a Unix socket in
//!   chunks of the same size;
//! - Tstat round-trip latency against a raw ping-pong of the same sizes on the same
//!   kind of socket;
//! - 64 clients doing walk, stat, clunk for a while: operations per second, errors, and
//!   the server's resident memory, which must stay flat.
//!
//! Run with `cargo bench --bench ninep` (or `bench/run`). Environment: NINESPACE_BENCH_MB
//! (file size, default 256), NINESPACE_BENCH_SECS (length of the 64-client run,
//! default 10), NINESPACE_BENCH_ONLY (a comma-separated choice of `throughput`,
//! `latency`, `clients`), NINESPACE_BENCH_CHUNKS (comma-separated data sizes per
//! message, in bytes), NINESPACE_BENCH_PIN=0 (let the scheduler place the throughput
//! runs too). The servers run as separate processes, as they do in use.

/// Servers and clients churn through message buffers; mimalloc recycles them without
/// returning pages to the kernel after every message.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use bytes::Bytes;
use lib9::client::{Client, Options};
use lib9::dial::Conn;
use lib9::fcall::{IOHDRSZ, ORDWR, OREAD, OTRUNC, OWRITE};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const RAMFS: &str = env!("CARGO_BIN_EXE_ramfs");
const EXPORTFS: &str = env!("CARGO_BIN_EXE_exportfs");
const ROLE: &str = "NINESPACE_BENCH_ROLE";

fn env_num(name: &str, def: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(def)
}

fn main() {
    // The raw peers are this same program started in another role.
    if let Ok(role) = std::env::var(ROLE) {
        raw_peer(&role);
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` and test discovery: nothing to list.
        return;
    }
    cpus();
    let mb = env_num("NINESPACE_BENCH_MB", 256);
    let secs = env_num("NINESPACE_BENCH_SECS", 10);
    let size = (mb as usize) << 20;
    // The exported directory lives in memory (tmpfs) where there is one, so that the
    // figures are the server's and not the disk's write-back; the host columns measure
    // that same file system.
    let shm = std::path::Path::new("/dev/shm");
    let work = if shm.is_dir() {
        tempfile::tempdir_in(shm).or_else(|_| tempfile::tempdir())
    } else {
        tempfile::tempdir()
    }
    .expect("tempdir");
    std::fs::create_dir_all(work.path().join("export")).expect("mkdir export");
    let only = std::env::var("NINESPACE_BENCH_ONLY").unwrap_or_default();
    let want = |part: &str| only.is_empty() || only.split(',').any(|p| p == part);
    println!("ninespace 9P benchmark: {mb} MiB file, Unix socket, servers in their own processes");
    if want("throughput") {
        println!();
        if std::env::var("NINESPACE_BENCH_PIN").is_ok_and(|v| v == "0") {
            layout(-1, -1);
        } else {
            layout(0, 1);
        }
        throughput(work.path(), size);
    }
    if want("latency") {
        println!();
        layout(0, 1);
        latency(work.path(), "server and client on different CPUs");
        layout(0, 0);
        latency(
            work.path(),
            "server and client on one CPU: the software alone",
        );
        layout(-1, -1);
    }
    if want("clients") {
        println!();
        layout(-1, -1);
        many_clients(work.path(), secs);
    }
}

// ---------- servers and raw peers ----------

struct Server {
    child: Child,
    sock: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_sock(p: &Path, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(p).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!("server exited: {st}");
        }
        assert!(Instant::now() < deadline, "server did not start");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Where things run. In the throughput runs (unless NINESPACE_BENCH_PIN=0) servers and
/// raw peers run on CPU 0 and the measuring client on CPU 1; the latency runs are made
/// twice, so, and with everything on CPU 0, which measures the software alone (on this
/// kind of virtual machine a wake-up across CPUs costs tens of microseconds and hides
/// everything else; left to the scheduler, a run is one or the other by chance). The
/// many-client run is placed by the scheduler.
static CHILD_CPU: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
static CLIENT_CPU: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(-1);
static NCPU: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

fn cpus() -> usize {
    *NCPU.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Pin the calling thread to `cpu`, or with a negative one let it run anywhere.
fn pin(cpu: i64) {
    // SAFETY: sched_setaffinity on the calling thread with a set we initialised.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu >= 0 {
            libc::CPU_SET(cpu as usize, &mut set);
        } else {
            for c in 0..cpus() {
                libc::CPU_SET(c, &mut set);
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Set the layout for what follows: the CPU for servers and peers, and for the client
/// (negative: anywhere). Without two CPUs everything runs anywhere.
fn layout(child: i64, client: i64) {
    let two = cpus() >= 2;
    CHILD_CPU.store(if two { child } else { -1 }, Ordering::SeqCst);
    CLIENT_CPU.store(if two { client } else { -1 }, Ordering::SeqCst);
    pin(CLIENT_CPU.load(Ordering::SeqCst));
}

fn pinned(mut c: Command) -> Command {
    use std::os::unix::process::CommandExt;
    let cpu = CHILD_CPU.load(Ordering::SeqCst);
    if cpu >= 0 {
        // SAFETY: only async-signal-safe work (one system call) between fork and exec.
        unsafe {
            c.pre_exec(move || {
                pin(cpu);
                Ok(())
            });
        }
    }
    c
}

fn start(prog: &str, dir: &Path, name: &str, extra: &[&str]) -> Server {
    let sock = dir.join(name);
    let _ = std::fs::remove_file(&sock);
    let mut child = pinned(Command::new(prog))
        .arg("-f")
        .arg("-a")
        .arg(format!("unix!{}", sock.display()))
        .args(extra)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn server");
    wait_sock(&sock, &mut child);
    Server { child, sock }
}

fn start_raw(role: &str, dir: &Path, name: &str, size: usize) -> Server {
    let sock = dir.join(name);
    let _ = std::fs::remove_file(&sock);
    let exe = std::env::current_exe().expect("current exe");
    let mut child = pinned(Command::new(exe))
        .env(ROLE, format!("{role}:{}:{size}", sock.display()))
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn raw peer");
    wait_sock(&sock, &mut child);
    Server { child, sock }
}

/// The raw peers, started as `kind:PATH:SIZE`. A `source` sends each client the
/// bytes of a SIZE-byte buffer, in the chunk size the client asks for; a `sink` reads
/// what a client sends into such a buffer, then answers one byte; an `echo` reads IN
/// bytes and answers OUT bytes until the end. The buffers are the data being copied,
/// made and touched before any client comes, as a file's bytes would be in memory:
/// a raw copy of the same bytes the 9P servers move, not of one small buffer that
/// stays in the processor's cache.
fn raw_peer(role: &str) {
    let mut f = role.split(':');
    let kind = f.next().unwrap_or_default().to_string();
    let path = f.next().unwrap_or_default().to_string();
    let size: usize = f.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let mut data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let l = UnixListener::bind(&path).expect("bind raw peer");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        // Parameters come from the client, first thing on the connection.
        let mut hdr = [0u8; 24];
        if s.read_exact(&mut hdr).is_err() {
            continue;
        }
        let a = u64::from_le_bytes(hdr[0..8].try_into().unwrap_or_default()) as usize;
        let b = u64::from_le_bytes(hdr[8..16].try_into().unwrap_or_default()) as usize;
        let c = u64::from_le_bytes(hdr[16..24].try_into().unwrap_or_default()) as usize;
        match kind.as_str() {
            "source" => {
                let total = b.min(data.len());
                let mut pos = 0;
                while pos < total {
                    let n = (total - pos).min(a);
                    if s.write_all(&data[pos..pos + n]).is_err() {
                        break;
                    }
                    pos += n;
                }
            }
            "sink" => {
                let total = b.min(data.len());
                let mut pos = 0;
                while pos < total {
                    let end = (pos + a).min(total);
                    match s.read(&mut data[pos..end]) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => pos += n,
                    }
                }
                let _ = s.write_all(&[1]);
            }
            "echo" => {
                let mut inb = vec![0u8; a];
                let out = vec![3u8; b];
                let _ = c;
                while s.read_exact(&mut inb).is_ok() {
                    if s.write_all(&out).is_err() {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
}

fn raw_connect(sock: &Path, a: usize, b: usize, c: usize) -> UnixStream {
    let mut s = UnixStream::connect(sock).expect("connect raw");
    let mut hdr = Vec::with_capacity(24);
    for v in [a, b, c] {
        hdr.extend_from_slice(&(v as u64).to_le_bytes());
    }
    s.write_all(&hdr).expect("raw header");
    s
}

/// Raw read throughput: the peer writes `total` bytes in `chunk`s, we read them.
fn raw_read(sock: &Path, chunk: usize, total: usize) -> f64 {
    let mut s = raw_connect(sock, chunk, total, 0);
    let mut buf = vec![0u8; chunk];
    let t = Instant::now();
    let mut got = 0;
    while got < total {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    mbps(got, t.elapsed())
}

/// Raw write throughput: we write the `total` bytes of `data` in `chunk`s, the peer
/// reads them into its buffer.
fn raw_write(sock: &Path, chunk: usize, total: usize, data: &[u8]) -> f64 {
    let mut s = raw_connect(sock, chunk, total, 0);
    let t = Instant::now();
    let mut pos = 0;
    while pos < total {
        let n = (total - pos).min(chunk);
        s.write_all(&data[pos..pos + n]).expect("raw write");
        pos += n;
    }
    let mut ack = [0u8; 1];
    let _ = s.read_exact(&mut ack);
    mbps(total, t.elapsed())
}

/// The host file system's own limit: write then read a file of `data` in the exported
/// directory directly, in the same chunks (what exportfs can at best pass on).
fn host_rw(dir: &Path, chunk: usize, data: &[u8]) -> (f64, f64) {
    let p = dir.join("host-direct");
    let t = Instant::now();
    let mut f = std::fs::File::create(&p).expect("create host file");
    for piece in data.chunks(chunk) {
        f.write_all(piece).expect("host write");
    }
    drop(f);
    let w = mbps(data.len(), t.elapsed());
    let mut f = std::fs::File::open(&p).expect("open host file");
    let mut buf = vec![0u8; chunk];
    let t = Instant::now();
    let mut n = 0;
    loop {
        match f.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let r = mbps(n, t.elapsed());
    let _ = std::fs::remove_file(&p);
    (r, w)
}

fn mbps(bytes: usize, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| pin(CLIENT_CPU.load(Ordering::SeqCst)))
        .enable_all()
        .build()
        .expect("runtime")
}

async fn connect(sock: &Path, msize: u32) -> Client {
    let s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("connect");
    Client::connect(
        Conn::from_unix(s, "bench"),
        Options {
            msize,
            ..Options::default()
        },
    )
    .await
    .expect("version")
}

/// Write then read a `size` file through the server; MB/s both ways.
async fn nine_rw(sock: &Path, msize: u32, size: usize, data: &Bytes) -> (f64, f64) {
    let c = connect(sock, msize).await;
    let root = c.attach("bench", "").await.expect("attach");
    let name = format!("f{msize}");
    let mut f = match root.walk(&name).await {
        Ok(mut f) => {
            f.open(OWRITE | OTRUNC).await.expect("open");
            f
        }
        Err(_) => {
            let mut d = root.walk("").await.expect("clone");
            d.create(&name, 0o644, ORDWR).await.expect("create");
            d
        }
    };
    let t = Instant::now();
    let depth = f.depth();
    f.write_all(0, data.slice(..size), depth)
        .await
        .expect("write");
    let w = mbps(size, t.elapsed());
    drop(f);
    f = root.walk(&name).await.expect("walk");
    f.open(OREAD).await.expect("open");
    let t = Instant::now();
    let n = f
        .read_stream(0, f.depth(), |_b| Ok::<(), ()>(()))
        .await
        .expect("read")
        .unwrap_or(0);
    let r = mbps(n as usize, t.elapsed());
    assert_eq!(n as usize, size, "short read");
    (r, w)
}

fn throughput(dir: &Path, size: usize) {
    let ram = start(RAMFS, dir, "ramfs", &[]);
    let expdir = dir.join("export");
    std::fs::create_dir_all(&expdir).expect("mkdir");
    let exp = start(EXPORTFS, dir, "exportfs", &[expdir.to_str().expect("utf8")]);
    let source = start_raw("source", dir, "source", size);
    let sink = start_raw("sink", dir, "sink", size);
    let data = Bytes::from((0..size).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    let rt = rt();
    println!(
        "Sequential read and write, MB/s (median of {ROUNDS} runs), with the ratio to the limit:"
    );
    println!("the raw socket copy of the same bytes in the same chunks; for exportfs the lower of");
    println!("that and the host file system itself, read and written directly in the exported");
    println!("directory.");
    println!(
        "{:>9} | {:>9} {:>9} | {:>9} {:>10} | {:>15} {:>15} | {:>15} {:>15}",
        "msize",
        "raw read",
        "raw write",
        "host read",
        "host write",
        "ramfs read",
        "ramfs write",
        "exportfs read",
        "exportfs write"
    );
    let chunks: Vec<usize> = match std::env::var("NINESPACE_BENCH_CHUNKS") {
        Ok(v) => v.split(',').filter_map(|c| c.parse().ok()).collect(),
        Err(_) => vec![8 << 10, 128 << 10, 1 << 20],
    };
    for chunk in chunks {
        let msize = chunk as u32 + IOHDRSZ;
        // Each figure is the median of ROUNDS runs, the runs of ours and the raw ones
        // taken in turn: a single run on this kind of machine swings with where the
        // scheduler happens to put the two processes.
        let mut v: [Vec<f64>; 8] = Default::default();
        for _ in 0..ROUNDS {
            v[0].push(raw_read(&source.sock, chunk, size));
            v[1].push(raw_write(&sink.sock, chunk, size, &data));
            let (r, w) = host_rw(&expdir, chunk, &data);
            v[2].push(r);
            v[3].push(w);
            let (r, w) = rt.block_on(nine_rw(&ram.sock, msize, size, &data));
            v[4].push(r);
            v[5].push(w);
            let (r, w) = rt.block_on(nine_rw(&exp.sock, msize, size, &data));
            v[6].push(r);
            v[7].push(w);
        }
        let [rr, rw, hr, hw, ramr, ramw, expr, expw] = v.map(|mut x| percentile(&mut x, 0.5));
        println!(
            "{:>9} | {:>9.0} {:>9.0} | {:>9.0} {:>10.0} | {:>7.0} ({:>4.2}) {:>7.0} ({:>4.2}) | {:>7.0} ({:>4.2}) {:>7.0} ({:>4.2})",
            human(chunk),
            rr,
            rw,
            hr,
            hw,
            ramr,
            ramr / rr,
            ramw,
            ramw / rw,
            expr,
            expr / rr.min(hr),
            expw,
            expw / rw.min(hw)
        );
    }
}

/// Runs of each throughput measurement; the median is printed.
const ROUNDS: usize = 5;

fn human(n: usize) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn latency(dir: &Path, how: &str) {
    const N: usize = 20_000;
    let ram = start(RAMFS, dir, "ramfs-lat", &[]);
    let expdir = dir.join("export");
    let exp = start(
        EXPORTFS,
        dir,
        "exportfs-lat",
        &[expdir.to_str().expect("utf8")],
    );
    // What a Tstat and its Rstat weigh on the wire, for the raw ping-pong. The client
    // needs no timer: a runtime without one parks with one system call less.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let stat_sizes = rt.block_on(async {
        let c = connect(&ram.sock, 8192 + IOHDRSZ).await;
        let root = c.attach("bench", "").await.expect("attach");
        let st = root.stat().await.expect("stat");
        (
            lib9::Fcall::Tstat { fid: 0 }.encoded_len(),
            lib9::Fcall::Rstat { stat: st }.encoded_len(),
        )
    });
    let echo = start_raw("echo", dir, "echo", 0);
    let mut s = raw_connect(&echo.sock, stat_sizes.0, stat_sizes.1, 0);
    let q = vec![1u8; stat_sizes.0];
    let mut r = vec![0u8; stat_sizes.1];
    for _ in 0..1000 {
        s.write_all(&q).expect("ping");
        s.read_exact(&mut r).expect("pong");
    }
    let mut raw = Vec::with_capacity(N);
    for _ in 0..N {
        let t = Instant::now();
        s.write_all(&q).expect("ping");
        s.read_exact(&mut r).expect("pong");
        raw.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let nine = |sock: &Path| -> Vec<f64> {
        rt.block_on(async {
            let c = connect(sock, 8192 + IOHDRSZ).await;
            let root = c.attach("bench", "").await.expect("attach");
            for _ in 0..1000 {
                root.stat().await.expect("stat");
            }
            let mut v = Vec::with_capacity(N);
            for _ in 0..N {
                let t = Instant::now();
                root.stat().await.expect("stat");
                v.push(t.elapsed().as_secs_f64() * 1e6);
            }
            v
        })
    };
    let mut ramv = nine(&ram.sock);
    let mut expv = nine(&exp.sock);
    let rm = percentile(&mut raw, 0.5);
    let ram50 = percentile(&mut ramv, 0.5);
    let exp50 = percentile(&mut expv, 0.5);
    println!(
        "Tstat round trip ({} + {} bytes), {how}: median of {N}, microseconds (ratio to raw)",
        stat_sizes.0, stat_sizes.1
    );
    println!(
        "  raw ping-pong {:.1} | ramfs {:.1} ({:.2}) | exportfs {:.1} ({:.2})",
        rm,
        ram50,
        ram50 / rm,
        exp50,
        exp50 / rm
    );
    println!(
        "  99th percentile: raw {:.1} | ramfs {:.1} | exportfs {:.1}",
        percentile(&mut raw, 0.99),
        percentile(&mut ramv, 0.99),
        percentile(&mut expv, 0.99)
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

fn many_clients(dir: &Path, secs: u64) {
    for (label, prog, extra) in [
        ("ramfs", RAMFS, vec![]),
        (
            "exportfs",
            EXPORTFS,
            vec![dir.join("export").to_string_lossy().into_owned()],
        ),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let srv = start(prog, dir, &format!("{label}-many"), &extra);
        let pid = srv.child.id();
        let rt = rt();
        let ops = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let sock = srv.sock.clone();
        // Something to walk to.
        rt.block_on(async {
            let c = connect(&sock, 8192 + IOHDRSZ).await;
            let root = c.attach("bench", "").await.expect("attach");
            if root.walk("a/b").await.is_err() {
                let mut d = root.walk("").await.expect("clone");
                let _ = d.create("a", lib9::fcall::DMDIR | 0o777, OREAD).await;
                let mut d = root.walk("a").await.expect("walk a");
                let _ = d.create("b", 0o666, OREAD).await;
            }
        });
        let mut handles = Vec::new();
        for _ in 0..64 {
            let (ops, errors, stop, sock) = (
                Arc::clone(&ops),
                Arc::clone(&errors),
                Arc::clone(&stop),
                sock.clone(),
            );
            handles.push(rt.spawn(async move {
                let c = connect(&sock, 8192 + IOHDRSZ).await;
                let root = c.attach("bench", "").await.expect("attach");
                while !stop.load(Ordering::Relaxed) {
                    match root.walk("a/b").await {
                        Ok(f) => {
                            let ok = f.stat().await.is_ok() && f.clunk().await.is_ok();
                            if ok {
                                ops.fetch_add(1, Ordering::Relaxed);
                            } else {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }));
        }
        let mut rss = Vec::new();
        let t0 = Instant::now();
        for s in 1..=secs {
            std::thread::sleep(Duration::from_secs(s).saturating_sub(t0.elapsed()));
            rss.push(rss_kib(pid));
        }
        stop.store(true, Ordering::Relaxed);
        let n = ops.load(Ordering::Relaxed);
        let el = t0.elapsed().as_secs_f64();
        rt.block_on(async {
            for h in handles {
                let _ = h.await;
            }
        });
        let at2 = rss.get(1).copied().unwrap_or(0);
        let last = rss.last().copied().unwrap_or(0);
        let grew = last.saturating_sub(at2);
        println!(
            "64 clients walk+stat+clunk on {label} for {secs} s: {:.0} ops/s, {} errors, RSS {} KiB at 2 s, {} KiB at {secs} s ({})",
            n as f64 / el,
            errors.load(Ordering::Relaxed),
            at2,
            last,
            if grew <= at2 / 20 + 1024 {
                "flat"
            } else {
                "GREW"
            }
        );
        println!("  RSS each second (KiB): {rss:?}");
    }
}

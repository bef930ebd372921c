//! The plumber's benchmark: messages through `send`, matched against the default
//! rules and delivered to a port reader, per second.
//!
//! The plumber runs as its own process with the built-in rules, as it does in use.
//! One client writes N messages (`file:line` of an existing file, which the default
//! rules route to the `edit` port after trying the earlier rule sets) on one open
//! `send`, 16 writes in flight; another reads them from `edit` with the client
//! library's PortReader (8 reads in flight). Time runs from the first send to the last
//! message read. Run with `cargo bench --bench plumber` or `bench/plumber`;
//! NINESPACE_BENCH_MESSAGES sets N (default 10,000).

use plumber::client::Plumb;
use plumber::msg::Message;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Writes to `send` in flight at once.
const SEND_DEPTH: usize = 16;

fn main() {
    let n: usize = std::env::var("NINESPACE_BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000);
    let ns = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(ns.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    let work = tempfile::tempdir().expect("tempdir");
    std::fs::write(work.path().join("main.c"), "int main;\n").expect("write");
    let mut child = Command::new(env!("CARGO_BIN_EXE_plumber"))
        .arg("-f")
        .env("NAMESPACE", ns.path())
        .env("HOME", home.path())
        .env_remove("home")
        .stdin(Stdio::null())
        .spawn()
        .expect("start plumber");
    let sock = ns.path().join("plumb");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("plumber did not start");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let addr = format!("unix!{}", sock.display());
    let rp = Plumb::dial(&addr).expect("dial");
    let mut port = rp.open_port("edit").expect("open edit");
    // The sender keeps SEND_DEPTH writes in flight on one open `send`, as a busy
    // program with several threads would; each write is one whole message.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let send = rt.block_on(async {
        let c = lib9::client::Client::dial(&addr).await.expect("dial");
        let root = c.attach(&lib9::ns::user(), "").await.expect("attach");
        let mut f = root.walk("send").await.expect("walk send");
        f.open(lib9::fcall::OWRITE).await.expect("open send");
        (c, std::sync::Arc::new(f))
    });
    let wdir = work.path().to_string_lossy().into_owned();
    let msgs: Vec<Message> = (0..n)
        .map(|i| Message::text("bench", &wdir, format!("main.c:{}", i + 1).as_bytes()))
        .collect();
    let t0 = Instant::now();
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        while got < n {
            match port.recv() {
                Ok(m) if m.dst == "edit" && m.lookup("addr").is_some() => got += 1,
                Ok(m) => panic!("unexpected message {m:?}"),
                Err(e) => panic!("recv: {e}"),
            }
        }
        drop(rp);
        got
    });
    let packed: Vec<bytes::Bytes> = msgs.iter().map(|m| bytes::Bytes::from(m.pack())).collect();
    rt.block_on(async {
        let (_c, f) = &send;
        type Task = tokio::task::JoinHandle<lib9::client::Result<u32>>;
        let mut inflight: std::collections::VecDeque<Task> = std::collections::VecDeque::new();
        for b in packed {
            if inflight.len() >= SEND_DEPTH {
                let h = inflight.pop_front().expect("task");
                h.await.expect("join").expect("send");
            }
            let f = std::sync::Arc::clone(f);
            inflight.push_back(tokio::spawn(async move { f.write(0, b).await }));
        }
        for h in inflight {
            h.await.expect("join").expect("send");
        }
    });
    let got = reader.join().expect("reader");
    let dt = t0.elapsed();
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "plumber: {got} messages through send, default rules, to a port reader: {:.0} messages/s ({:.1} us each)",
        got as f64 / dt.as_secs_f64(),
        dt.as_secs_f64() * 1e6 / got as f64
    );
}

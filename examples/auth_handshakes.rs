//! The driver of bench/auth: full handshakes between two running factotums, through
//! their rpc files, as auth_proxy and a 9P server would carry them.
//!
//! ```text
//! auth_handshakes CLIENT-SOCKET SERVER-SOCKET PROTO N
//! ```
//!
//! Each handshake opens `rpc` on both factotums, starts `proto=PROTO` in the client
//! and server roles, carries the messages until both say `done`, reads both
//! AuthInfos and checks they agree. Prints one line: the number of handshakes, the
//! median, the fastest and the slowest, in microseconds, after two handshakes not
//! counted (to warm caches and connections).

use std::time::{Duration, Instant};

use bytes::Bytes;
use factotum::rpc::AuthInfo;
use lib9::blocking::{Client, Fid};

fn fail(msg: impl std::fmt::Display) -> ! {
    eprintln!("auth_handshakes: {msg}");
    std::process::exit(1);
}

struct Rpc(Fid);

impl Rpc {
    fn open(root: &Fid) -> Rpc {
        let mut f = root
            .walk("rpc")
            .unwrap_or_else(|e| fail(format!("walk rpc: {e}")));
        f.open(lib9::fcall::ORDWR)
            .unwrap_or_else(|e| fail(format!("open rpc: {e}")));
        Rpc(f)
    }

    fn call(&self, req: &[u8]) -> Bytes {
        self.0
            .write(0, Bytes::copy_from_slice(req))
            .unwrap_or_else(|e| fail(format!("write rpc: {e}")));
        self.0
            .read(0, 8192)
            .unwrap_or_else(|e| fail(format!("read rpc: {e}")))
    }

    fn authinfo(&self) -> AuthInfo {
        let r = self.call(b"authinfo");
        match r.strip_prefix(b"ok ") {
            Some(b) => AuthInfo::from_bytes(b).unwrap_or_else(|e| fail(e)),
            None => fail(format!("authinfo: {}", String::from_utf8_lossy(&r))),
        }
    }
}

/// One full handshake.
fn handshake(croot: &Fid, sroot: &Fid, proto: &str) {
    let (c, s) = (Rpc::open(croot), Rpc::open(sroot));
    for (side, role) in [(&c, "client"), (&s, "server")] {
        let r = side.call(format!("start proto={proto} role={role}").as_bytes());
        if &r[..] != b"ok" {
            fail(format!("start: {}", String::from_utf8_lossy(&r)));
        }
    }
    let (mut cdone, mut sdone) = (false, false);
    let mut rounds = 0;
    while !(cdone && sdone) {
        rounds += 1;
        if rounds > 50 {
            fail("handshake did not finish");
        }
        for (from, to, done) in [(&s, &c, &mut sdone), (&c, &s, &mut cdone)] {
            let r = from.call(b"read");
            if let Some(data) = r.strip_prefix(b"ok ") {
                let mut req = b"write ".to_vec();
                req.extend_from_slice(data);
                let w = to.call(&req);
                if &w[..] != b"ok" {
                    fail(format!("write: {}", String::from_utf8_lossy(&w)));
                }
            } else if r.starts_with(b"done") {
                *done = true;
            } else if !r.starts_with(b"phase ") {
                fail(format!("read: {}", String::from_utf8_lossy(&r)));
            }
        }
    }
    let (ca, sa) = (c.authinfo(), s.authinfo());
    if ca.secret != sa.secret || ca.cuid != sa.cuid || ca.secret.0.is_empty() {
        fail("the two sides do not agree");
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        fail("usage: auth_handshakes client-socket server-socket proto n");
    }
    let n: usize = args[4].parse().unwrap_or_else(|_| fail("bad count"));
    let dial = |p: &str| Client::dial(&format!("unix!{p}")).unwrap_or_else(|e| fail(e));
    let (cc, sc) = (dial(&args[1]), dial(&args[2]));
    let user = lib9::ns::user();
    let croot = cc.attach(&user, "").unwrap_or_else(|e| fail(e));
    let sroot = sc.attach(&user, "").unwrap_or_else(|e| fail(e));
    let mut times: Vec<Duration> = Vec::with_capacity(n);
    for i in 0..n + 2 {
        let t = Instant::now();
        handshake(&croot, &sroot, &args[3]);
        if i >= 2 {
            times.push(t.elapsed());
        }
    }
    times.sort();
    if times.is_empty() {
        fail("no handshakes");
    }
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let m = times.len() / 2;
    let median = if times.len() % 2 == 1 {
        us(times[m])
    } else {
        (us(times[m - 1]) + us(times[m])) / 2.0
    };
    println!(
        "{} {:.0} {:.0} {:.0}",
        times.len(),
        median,
        us(times[0]),
        us(times[times.len() - 1])
    );
}

//! The server framework, client and multiplexer in one process, where their insides can
//! be watched: flushes, fids freed when clients vanish, bounds on what a client may
//! hold, and clients that send garbage.

use bytes::{Bytes, BytesMut};
use lib9::client::{Client, Options};
use lib9::dial::Conn;
use lib9::errstr::{self, Ename};
use lib9::fcall::{self, Fcall, Msg, NOFID, NOTAG, ORDWR, OREAD, QTDIR, QTFILE, Qid, Stat};
use lib9::server::{Caller, Config, Data, Filesystem, FsResult, Opened, Server, Walked};
use srv::mux::Mux;
use srv::ramfs::RamFs;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn within<T>(
    rt: &tokio::runtime::Runtime,
    secs: u64,
    f: impl std::future::Future<Output = T>,
) -> T {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(secs), f)
            .await
            .expect("test timed out")
    })
}

/// A file server with one file, `block`, whose reads never finish until flushed, and
/// `echo`, which answers at once. It counts reads in progress and reads cancelled.
#[derive(Default)]
struct Blocky {
    active: Arc<AtomicUsize>,
    cancelled: Arc<AtomicUsize>,
}

struct Guard(Arc<AtomicUsize>, Arc<AtomicUsize>);
impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        self.1.fetch_add(1, Ordering::SeqCst);
    }
}

fn q(path: u64, dir: bool) -> Qid {
    Qid {
        ty: if dir { QTDIR } else { QTFILE },
        vers: 0,
        path,
    }
}

impl Filesystem for Blocky {
    type Fid = u64;
    async fn attach(&self, _c: &Caller, _a: &str, _af: Option<&u64>) -> FsResult<(u64, Qid)> {
        Ok((0, q(0, true)))
    }
    async fn walk(&self, _c: &Caller, fid: &u64, names: &[String]) -> FsResult<Walked<u64>> {
        match names {
            [] => Ok(Walked {
                qids: vec![],
                fid: Some(*fid),
            }),
            [n] if *fid == 0 && n == "block" => Ok(Walked {
                qids: vec![q(1, false)],
                fid: Some(1),
            }),
            [n] if *fid == 0 && n == "echo" => Ok(Walked {
                qids: vec![q(2, false)],
                fid: Some(2),
            }),
            _ => Err(Ename::from(errstr::ENONEXIST)),
        }
    }
    async fn open(&self, _c: &Caller, fid: &u64, _m: u8) -> FsResult<Opened<u64>> {
        Ok(Opened {
            fid: *fid,
            qid: q(*fid, *fid == 0),
            iounit: 0,
        })
    }
    async fn read(&self, _c: &Caller, fid: &u64, _o: u64, _n: u32) -> FsResult<Data> {
        if *fid == 2 {
            return Ok(Bytes::from_static(b"echo").into());
        }
        self.active.fetch_add(1, Ordering::SeqCst);
        let _g = Guard(Arc::clone(&self.active), Arc::clone(&self.cancelled));
        std::future::pending::<()>().await;
        Ok(Bytes::new().into())
    }
    async fn stat(&self, _c: &Caller, fid: &u64) -> FsResult<Stat> {
        Ok(Stat {
            qid: q(*fid, *fid == 0),
            name: "x".into(),
            ..Stat::default()
        })
    }
}

/// Serve `server` on one end of a socket pair; the other end is returned.
fn pair<F: Filesystem>(server: &Arc<Server<F>>) -> tokio::net::UnixStream {
    let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
    let s = Arc::clone(server);
    tokio::spawn(async move { s.serve_conn(Conn::from_unix(a, "test")).await });
    b
}

async fn client<F: Filesystem>(server: &Arc<Server<F>>) -> Client {
    Client::connect(Conn::from_unix(pair(server), "test"), Options::default())
        .await
        .expect("connect")
}

/// Raw protocol access: write messages and read replies on a bare socket.
struct Raw {
    s: tokio::net::UnixStream,
}

impl Raw {
    async fn send(&mut self, tag: u16, body: Fcall) {
        let b = Msg::new(tag, body).to_bytes().expect("encode");
        self.s.write_all(&b).await.expect("write");
    }
    async fn recv(&mut self) -> Msg {
        let mut h = [0u8; 4];
        self.s.read_exact(&mut h).await.expect("read size");
        let n = u32::from_le_bytes(h) as usize;
        let mut b = BytesMut::zeroed(n);
        b[..4].copy_from_slice(&h);
        self.s.read_exact(&mut b[4..]).await.expect("read body");
        fcall::decode(b.freeze(), fcall::MAX_MSIZE).expect("decode reply")
    }
    async fn rpc(&mut self, tag: u16, body: Fcall) -> Fcall {
        self.send(tag, body).await;
        let m = self.recv().await;
        assert_eq!(m.tag, tag);
        m.body
    }
    async fn setup(&mut self) {
        let r = self
            .rpc(
                NOTAG,
                Fcall::Tversion {
                    msize: 8192,
                    version: "9P2000".into(),
                },
            )
            .await;
        assert!(matches!(r, Fcall::Rversion { .. }), "{r:?}");
        let r = self
            .rpc(
                1,
                Fcall::Tattach {
                    fid: 0,
                    afid: NOFID,
                    uname: "glenda".into(),
                    aname: String::new(),
                },
            )
            .await;
        assert!(matches!(r, Fcall::Rattach { .. }), "{r:?}");
    }
    async fn open(&mut self, fid: u32, name: &str) {
        let r = self
            .rpc(
                2,
                Fcall::Twalk {
                    fid: 0,
                    newfid: fid,
                    wnames: vec![name.into()],
                },
            )
            .await;
        assert!(matches!(r, Fcall::Rwalk { .. }), "{r:?}");
        let r = self.rpc(3, Fcall::Topen { fid, mode: OREAD }).await;
        assert!(matches!(r, Fcall::Ropen { .. }), "{r:?}");
    }
}

#[test]
fn flush_of_a_blocked_request_on_the_wire() {
    let rt = rt();
    within(&rt, 30, async {
        let fs = Blocky::default();
        let (active, cancelled) = (Arc::clone(&fs.active), Arc::clone(&fs.cancelled));
        let server = Server::new(fs);
        let mut raw = Raw { s: pair(&server) };
        raw.setup().await;
        raw.open(5, "block").await;
        raw.open(6, "echo").await;
        raw.send(
            10,
            Fcall::Tread {
                fid: 5,
                offset: 0,
                count: 100,
            },
        )
        .await;
        while active.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        raw.send(11, Fcall::Tflush { oldtag: 10 }).await;
        let m = raw.recv().await;
        assert_eq!(m, Msg::new(11, Fcall::Rflush));
        // The flushed read is cancelled, never answered; the connection goes on.
        let r = raw
            .rpc(
                12,
                Fcall::Tread {
                    fid: 6,
                    offset: 0,
                    count: 100,
                },
            )
            .await;
        assert_eq!(
            r,
            Fcall::Rread {
                data: Bytes::from_static(b"echo")
            }
        );
        assert_eq!(cancelled.load(Ordering::SeqCst), 1);
        assert_eq!(active.load(Ordering::SeqCst), 0);
        // Its tag can be used again.
        let r = raw.rpc(10, Fcall::Tstat { fid: 6 }).await;
        assert!(matches!(r, Fcall::Rstat { .. }), "{r:?}");
        // Flushing a tag nobody uses is answered too.
        let r = raw.rpc(13, Fcall::Tflush { oldtag: 999 }).await;
        assert_eq!(r, Fcall::Rflush);
    });
}

#[test]
fn dropping_a_call_flushes_it() {
    let rt = rt();
    within(&rt, 30, async {
        let fs = Blocky::default();
        let cancelled = Arc::clone(&fs.cancelled);
        let active = Arc::clone(&fs.active);
        let server = Server::new(fs);
        let c = client(&server).await;
        let root = c.attach("glenda", "").await.expect("attach");
        let mut f = root.walk("block").await.expect("walk");
        f.open(OREAD).await.expect("open");
        // A read that will never be answered, abandoned after a moment.
        let r = tokio::time::timeout(Duration::from_millis(100), f.read(0, 10)).await;
        assert!(r.is_err(), "the blocked read answered");
        while cancelled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(active.load(Ordering::SeqCst), 0);
        // Call::flush reports that no reply came first.
        let call = c
            .start(
                Fcall::Tread {
                    fid: f.raw(),
                    offset: 0,
                    count: 10,
                },
                None,
            )
            .await
            .expect("start");
        while active.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert_eq!(call.flush().await.expect("flush"), None);
        assert_eq!(cancelled.load(Ordering::SeqCst), 2);
        // And the connection is fine.
        let e = root.walk("echo").await.expect("walk");
        assert_eq!(e.stat().await.expect("stat").name, "x");
    });
}

#[test]
fn a_flush_is_not_stuck_behind_requests_waiting_for_room() {
    let rt = rt();
    within(&rt, 30, async {
        let fs = Blocky::default();
        let active = Arc::clone(&fs.active);
        let cfg = Config {
            max_outstanding: 4,
            ..Config::default()
        };
        let server = Server::with_config(fs, cfg);
        let mut raw = Raw { s: pair(&server) };
        raw.setup().await;
        raw.open(5, "block").await;
        // Ten blocked reads: four run, six wait for room.
        for t in 100..110 {
            raw.send(
                t,
                Fcall::Tread {
                    fid: 5,
                    offset: 0,
                    count: 10,
                },
            )
            .await;
        }
        while active.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            active.load(Ordering::SeqCst),
            4,
            "the bound on requests in progress"
        );
        // Flush them all, the running and the waiting alike.
        for t in 100..110 {
            raw.send(200 + t, Fcall::Tflush { oldtag: t }).await;
        }
        let mut flushed = Vec::new();
        for _ in 100..110 {
            let m = raw.recv().await;
            assert_eq!(
                m.body,
                Fcall::Rflush,
                "a flushed request was answered: {m:?}"
            );
            flushed.push(m.tag);
        }
        flushed.sort();
        assert_eq!(flushed, (300..310).collect::<Vec<u16>>());
        while active.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let r = raw.rpc(7, Fcall::Tstat { fid: 5 }).await;
        assert!(matches!(r, Fcall::Rstat { .. }), "{r:?}");
    });
}

#[test]
fn fids_are_freed_when_a_client_vanishes() {
    let rt = rt();
    within(&rt, 30, async {
        let server = Server::new(RamFs::new("glenda", 1 << 30));
        let stats = Arc::clone(server.stats());
        {
            // A client makes 100 fids and disappears without clunking any.
            let mut raw = Raw { s: pair(&server) };
            raw.setup().await;
            for i in 1..=100u32 {
                let r = raw
                    .rpc(
                        7,
                        Fcall::Twalk {
                            fid: 0,
                            newfid: i,
                            wnames: vec![],
                        },
                    )
                    .await;
                assert!(matches!(r, Fcall::Rwalk { .. }), "{r:?}");
                let r = raw
                    .rpc(
                        8,
                        Fcall::Tcreate {
                            fid: i,
                            name: format!("f{i}"),
                            perm: 0o644,
                            mode: ORDWR,
                        },
                    )
                    .await;
                assert!(matches!(r, Fcall::Rcreate { .. }), "{r:?}");
            }
            assert_eq!(stats.fids.load(Ordering::SeqCst), 101);
        }
        // A raw client that vanishes half-way through a message.
        let mut raw = Raw { s: pair(&server) };
        raw.setup().await;
        raw.open(9, "f1").await;
        let half = Msg::new(
            20,
            Fcall::Twrite {
                fid: 9,
                offset: 0,
                data: Bytes::from(vec![7u8; 1000]),
            },
        )
        .to_bytes()
        .expect("encode");
        raw.s.write_all(&half[..500]).await.expect("write");
        drop(raw);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let n = stats.fids.load(Ordering::SeqCst);
            let conns = stats.connections.load(Ordering::SeqCst);
            if n == 0 && conns == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} fids, {conns} connections left"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Nothing was written by the half message.
        let c = client(&server).await;
        let root = c.attach("glenda", "").await.expect("attach");
        assert_eq!(
            root.walk("f1")
                .await
                .expect("walk")
                .stat()
                .await
                .expect("stat")
                .length,
            0
        );
    });
}

#[test]
fn client_fids_clunk_themselves() {
    let rt = rt();
    within(&rt, 30, async {
        let server = Server::new(RamFs::new("glenda", 1 << 30));
        let stats = Arc::clone(server.stats());
        let c = client(&server).await;
        let root = c.attach("glenda", "").await.expect("attach");
        let mut fids = Vec::new();
        for _ in 0..10 {
            fids.push(root.walk("").await.expect("clone"));
        }
        assert_eq!(stats.fids.load(Ordering::SeqCst), 11);
        drop(fids);
        // Dropping sends the clunks without waiting; the next request is answered
        // after them.
        root.stat().await.expect("stat");
        assert_eq!(stats.fids.load(Ordering::SeqCst), 1);
        // Numbers are reused: a thousand walks and drops use a handful of fids.
        for _ in 0..1000 {
            let f = root.walk("").await.expect("clone");
            assert!(f.raw() < 16, "fid numbers not reused: {}", f.raw());
        }
        // The last handle closes the connection.
        drop(root);
        drop(c);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stats.connections.load(Ordering::SeqCst) != 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "connection left open"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
}

#[test]
fn garbage_gets_errors_and_the_server_lives_on() {
    let rt = rt();
    within(&rt, 30, async {
        let server = Server::new(RamFs::new("glenda", 1 << 30));
        // A well-framed message of an unknown type gets an Rerror with its tag.
        let mut raw = Raw { s: pair(&server) };
        raw.setup().await;
        let mut b = BytesMut::new();
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&[106, 42, 0, 1, 2]);
        raw.s.write_all(&b).await.expect("write");
        let m = raw.recv().await;
        assert_eq!(m.tag, 42);
        assert!(
            matches!(&m.body, Fcall::Rerror { ename } if ename.contains("unknown message type")),
            "{m:?}"
        );
        // A reply message from a client is refused.
        let r = raw.rpc(43, Fcall::Rclunk).await;
        assert!(matches!(r, Fcall::Rerror { .. }));
        // A string that is not UTF-8.
        let mut b = BytesMut::new();
        let body = [1u8, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 2, 0, 0xc3, 0x28, 0, 0];
        b.extend_from_slice(&((7 + body.len()) as u32).to_le_bytes());
        b.extend_from_slice(&[104, 44, 0]);
        b.extend_from_slice(&body);
        raw.s.write_all(&b).await.expect("write");
        let m = raw.recv().await;
        assert!(
            matches!(&m.body, Fcall::Rerror { ename } if ename.contains("UTF-8")),
            "{m:?}"
        );
        // Still working.
        let r = raw.rpc(45, Fcall::Tstat { fid: 0 }).await;
        assert!(matches!(r, Fcall::Rstat { .. }));
        // A size beyond msize ends that connection.
        raw.s
            .write_all(&u32::MAX.to_le_bytes())
            .await
            .expect("write");
        // The server may already have hung up.
        let _ = raw.s.write_all(&[100, 0, 0]).await;
        let mut buf = [0u8; 16];
        let n = raw.s.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "connection not closed");
        // Random bytes on fresh connections.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..50 {
            let mut s = pair(&server);
            let mut junk = vec![0u8; 300];
            for b in junk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let _ = s.write_all(&junk).await;
            let _ = s.shutdown().await;
            let mut sink = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut sink)).await;
        }
        // The server is still there for a proper client.
        let c = client(&server).await;
        let root = c.attach("glenda", "").await.expect("attach");
        assert!(root.qid().is_dir());
        assert!(server.stats().protocol_errors.load(Ordering::SeqCst) >= 3);
    });
}

#[test]
fn a_client_pipelining_past_its_budget_completes() {
    let rt = rt();
    within(&rt, 60, async {
        // A client pipelining far more big writes than the budget allows: the server
        // stops reading rather than buffer them, yet everything completes.
        let cfg = Config {
            max_bytes: 4 << 20,
            ..Config::default()
        };
        let server = Server::with_config(RamFs::new("glenda", 1 << 30), cfg);
        let c = Client::connect(
            Conn::from_unix(pair(&server), "test"),
            Options {
                msize: (1 << 20) + 24,
                max_inflight: 256,
            },
        )
        .await
        .expect("connect");
        let root = c.attach("glenda", "").await.expect("attach");
        let mut f = root.walk("").await.expect("clone");
        f.create("big", 0o644, ORDWR).await.expect("create");
        let data = Bytes::from(vec![5u8; 64 << 20]);
        f.write_all(0, data, 64).await.expect("write");
        assert_eq!(f.stat().await.expect("stat").length, 64 << 20);
    });
}

#[test]
fn mux_translates_fids_and_cleans_up_after_clients() {
    let rt = rt();
    within(&rt, 60, async {
        let fs = Blocky::default();
        let cancelled = Arc::clone(&fs.cancelled);
        let active = Arc::clone(&fs.active);
        let server = Server::new(fs);
        let stats = Arc::clone(server.stats());
        let up = client(&server).await;
        let mux = Mux::new(up, false);
        let local = |mux: &Arc<Mux>| {
            let (a, b) = tokio::net::UnixStream::pair().expect("pair");
            let m = Arc::clone(mux);
            tokio::spawn(async move { m.serve_conn(Conn::from_unix(a, "local")).await });
            b
        };
        // Two local clients using the very same fid numbers.
        let mut r1 = Raw { s: local(&mux) };
        let mut r2 = Raw { s: local(&mux) };
        r1.setup().await;
        r2.setup().await;
        r1.open(5, "echo").await;
        r2.open(5, "block").await;
        assert_eq!(stats.fids.load(Ordering::SeqCst), 4);
        let r = r1
            .rpc(
                20,
                Fcall::Tread {
                    fid: 5,
                    offset: 0,
                    count: 10,
                },
            )
            .await;
        assert_eq!(
            r,
            Fcall::Rread {
                data: Bytes::from_static(b"echo")
            }
        );
        // A blocked read through the mux, flushed: the flush reaches the server.
        r2.send(
            20,
            Fcall::Tread {
                fid: 5,
                offset: 0,
                count: 10,
            },
        )
        .await;
        while active.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let r = r2.rpc(21, Fcall::Tflush { oldtag: 20 }).await;
        assert_eq!(r, Fcall::Rflush);
        while cancelled.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Another blocked read, then the client hangs up: flushed, and its fids clunked.
        r2.send(
            22,
            Fcall::Tread {
                fid: 5,
                offset: 0,
                count: 10,
            },
        )
        .await;
        while active.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        drop(r2);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while stats.fids.load(Ordering::SeqCst) != 2 || cancelled.load(Ordering::SeqCst) != 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fids {} cancelled {}",
                stats.fids.load(Ordering::SeqCst),
                cancelled.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Errors pass through, and fids unknown to the mux are refused by it.
        let r = r1
            .rpc(
                30,
                Fcall::Twalk {
                    fid: 0,
                    newfid: 8,
                    wnames: vec!["nope".into()],
                },
            )
            .await;
        assert!(
            matches!(&r, Fcall::Rerror { ename } if ename.contains("does not exist")),
            "{r:?}"
        );
        let r = r1.rpc(31, Fcall::Tstat { fid: 77 }).await;
        assert!(
            matches!(&r, Fcall::Rerror { ename } if ename == errstr::EBADFID),
            "{r:?}"
        );
        let r = r1.rpc(32, Fcall::Tclunk { fid: 5 }).await;
        assert_eq!(r, Fcall::Rclunk);
        assert_eq!(stats.fids.load(Ordering::SeqCst), 1);
    });
}

/// Reads whose futures are dropped while in flight (each sends a Tflush) leave the
/// fid and the connection fit for the reads after them.
#[test]
fn reads_dropped_in_flight_do_not_spoil_later_reads() {
    let rt = rt();
    within(&rt, 60, async {
        let server = Server::new(RamFs::new("glenda", 1 << 30));
        let c = client(&server).await;
        let root = c.attach("glenda", "").await.expect("attach");
        let mut f = root.walk_names(&[]).await.expect("clone");
        f.create("data", 0o644, ORDWR).await.expect("create");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(0, Bytes::from(body.clone()), 4)
            .await
            .expect("write");
        let f = Arc::new(f);
        for round in 0..500u64 {
            let g = Arc::clone(&f);
            let off = (round * 997) % 150_000;
            let h = tokio::spawn(async move { g.read(off, 8192).await });
            // Let it get onto the wire (or not), then give it up.
            if round % 3 != 0 {
                tokio::task::yield_now().await;
            }
            h.abort();
            let _ = h.await;
            let got = f
                .read(off, 100)
                .await
                .unwrap_or_else(|e| panic!("round {round}: read after a dropped read: {e}"));
            assert_eq!(
                &got[..],
                &body[off as usize..off as usize + 100],
                "round {round}"
            );
        }
    });
}

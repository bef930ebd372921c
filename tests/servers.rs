//! Our client against the ramfs and exportfs binaries, over Unix sockets and TCP:
//! every operation, the errors, directory reads split over many Treads, and many
//! clients at once.

mod common;
use bytes::Bytes;
use common::*;
use lib9::client::{Client, Error, Fid, Options};
use lib9::dial;
use lib9::fcall::{DMAPPEND, DMDIR, DMEXCL, ORCLOSE, ORDWR, OREAD, OTRUNC, OWRITE, QTDIR, Stat};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Ram,
    Export,
}

struct Setup {
    _ns: Ns,
    _proc: Proc,
    addr: String,
    dir: Option<tempfile::TempDir>,
    kind: Kind,
}

fn setup(kind: Kind, tcp: bool) -> Setup {
    let ns = Ns::new();
    let dir = match kind {
        Kind::Ram => None,
        Kind::Export => Some(tempfile::tempdir().expect("tempdir")),
    };
    let prog = match kind {
        Kind::Ram => RAMFS,
        Kind::Export => EXPORTFS,
    };
    let extra: Vec<&str> = dir
        .as_ref()
        .map(|d| vec![d.path().to_str().expect("utf8 path")])
        .unwrap_or_default();
    let p = if tcp {
        start_tcp(&ns, prog, &extra)
    } else {
        start_posted(&ns, prog, "svc", &extra)
    };
    Setup {
        addr: p.addr.clone(),
        _proc: p,
        _ns: ns,
        dir,
        kind,
    }
}

async fn connect(addr: &str, msize: u32) -> Client {
    let a = dial::parse(addr).expect("dial string");
    let conn = dial::dial_addr(&a).await.expect("dial");
    Client::connect(
        conn,
        Options {
            msize,
            ..Options::default()
        },
    )
    .await
    .expect("version")
}

fn rerror(e: Error) -> String {
    match e {
        Error::Rerror(s) => s,
        other => panic!("expected Rerror, got {other:?}"),
    }
}

async fn create(root: &Fid, path: &str, name: &str, perm: u32, mode: u8) -> Fid {
    let mut d = root.walk(path).await.expect("walk to dir");
    d.create(name, perm, mode).await.expect("create");
    d
}

async fn every_operation(s: &Setup) {
    let c = connect(&s.addr, 8192 + 24).await;
    let root = c.attach("glenda", "").await.expect("attach");
    assert!(root.qid().is_dir());

    // Create, write, read back.
    let f = create(&root, "", "hello", 0o644, ORDWR).await;
    assert_eq!(
        f.write(0, Bytes::from_static(b"hello, world\n"))
            .await
            .expect("write"),
        13
    );
    assert_eq!(&f.read(0, 100).await.expect("read")[..], b"hello, world\n");
    assert_eq!(&f.read(7, 5).await.expect("read")[..], b"world");
    assert_eq!(f.read(100, 10).await.expect("read past end").len(), 0);
    // A write larger than the iounit, split by write_all.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    f.write_all(0, Bytes::from(big.clone()), 4)
        .await
        .expect("write_all");
    let mut back = Vec::new();
    f.read_stream(0, 4, |b| {
        back.extend_from_slice(&b);
        Ok::<(), ()>(())
    })
    .await
    .expect("read_stream")
    .expect("sink");
    assert_eq!(back, big);
    drop(f);

    // Stat and walk.
    let g = root.walk("hello").await.expect("walk");
    let st = g.stat().await.expect("stat");
    assert_eq!(st.name, "hello");
    assert_eq!(st.length, 100_000);
    assert_eq!(st.mode & 0o777, 0o644);
    assert!(st.qid.ty & QTDIR == 0);

    // wstat: truncate, chmod, rename, mtime.
    let mut w = Stat::dont_touch();
    w.length = 5;
    g.wstat(&w).await.expect("truncate");
    assert_eq!(g.stat().await.expect("stat").length, 5);
    let mut w = Stat::dont_touch();
    w.mode = 0o600;
    g.wstat(&w).await.expect("chmod");
    assert_eq!(g.stat().await.expect("stat").mode & 0o777, 0o600);
    let mut w = Stat::dont_touch();
    w.mtime = 1_000_000_000;
    g.wstat(&w).await.expect("mtime");
    assert_eq!(g.stat().await.expect("stat").mtime, 1_000_000_000);
    let mut w = Stat::dont_touch();
    w.name = "renamed".into();
    g.wstat(&w).await.expect("rename");
    assert!(root.walk("hello").await.is_err());
    let r = root.walk("renamed").await.expect("walk renamed");
    assert_eq!(r.stat().await.expect("stat").name, "renamed");
    // A sync (all don't-touch) is accepted.
    r.wstat(&Stat::dont_touch()).await.expect("sync");
    // uid cannot change.
    let mut w = Stat::dont_touch();
    w.uid = "someoneelse".into();
    assert!(r.wstat(&w).await.is_err());
    drop((g, r));

    // OTRUNC.
    let mut t = root.walk("renamed").await.expect("walk");
    t.open(OWRITE | OTRUNC).await.expect("open trunc");
    assert_eq!(t.stat().await.expect("stat").length, 0);
    drop(t);

    // Directories: create, list many entries with a small msize so the listing takes
    // many reads, and compare.
    let d = create(&root, "", "dir", DMDIR | 0o755, OREAD).await;
    assert!(d.qid().is_dir());
    drop(d);
    let mut want = Vec::new();
    for i in 0..300 {
        let name = format!("file-with-a-longish-name-{i:04}");
        create(&root, "dir", &name, 0o644, OWRITE).await;
        want.push(name);
    }
    let mut dd = root.walk("dir").await.expect("walk dir");
    dd.open(OREAD).await.expect("open dir");
    let mut reads = 0;
    let mut off = 0;
    let mut got = Vec::new();
    loop {
        let b = dd.read(off, 8192).await.expect("dir read");
        if b.is_empty() {
            break;
        }
        reads += 1;
        off += b.len() as u64;
        got.extend(lib9::fcall::decode_dir(&b).expect("stat entries"));
    }
    assert!(reads > 3, "listing took only {reads} reads");
    let mut names: Vec<String> = got.iter().map(|s| s.name.clone()).collect();
    names.sort();
    assert_eq!(names, want);
    // A directory read at a stray offset is refused.
    let e = rerror(dd.read(off + 1, 8192).await.expect_err("stray offset"));
    assert!(e.contains("offset"), "{e}");
    // Rewinding to 0 lists again.
    assert!(!dd.read(0, 8192).await.expect("reread").is_empty());
    drop(dd);

    // Errors.
    let e = rerror(root.walk("nonexistent").await.expect_err("walk missing"));
    assert!(e.contains("does not exist"), "{e}");
    let mut x = root.walk("").await.expect("clone");
    let e = rerror(
        x.create("renamed", 0o644, OWRITE)
            .await
            .expect_err("create existing"),
    );
    assert!(e.contains("exists"), "{e}");
    let mut dir = root.walk("dir").await.expect("walk dir");
    let e = rerror(dir.open(OWRITE).await.expect_err("open dir for write"));
    assert!(e.contains("directory"), "{e}");
    let f = root.walk("renamed").await.expect("walk");
    let e = rerror(f.read(0, 10).await.expect_err("read unopened"));
    assert!(e.contains("not open"), "{e}");
    let e = rerror(
        c.rpc(lib9::Fcall::Tclunk { fid: 999_999 })
            .await
            .expect_err("clunk unknown"),
    );
    assert!(e.contains("fid"), "{e}");
    let e = rerror(
        root.walk("renamed/x")
            .await
            .expect_err("walk through a file"),
    );
    assert!(
        e.contains("does not exist") || e.contains("directory"),
        "{e}"
    );
    // A directory that is not empty cannot be removed.
    let dir = root.walk("dir").await.expect("walk dir");
    let e = rerror(dir.remove().await.expect_err("remove non-empty"));
    assert!(e.contains("not empty"), "{e}");

    // Remove.
    for n in &want {
        root.walk(&format!("dir/{n}"))
            .await
            .expect("walk")
            .remove()
            .await
            .expect("remove");
    }
    root.walk("dir")
        .await
        .expect("walk")
        .remove()
        .await
        .expect("rmdir");
    root.walk("renamed")
        .await
        .expect("walk")
        .remove()
        .await
        .expect("rm");
    assert!(root.walk("dir").await.is_err());

    // ORCLOSE removes on clunk.
    let f = create(&root, "", "tmp", 0o644, ORDWR | ORCLOSE).await;
    f.clunk().await.expect("clunk");
    assert!(root.walk("tmp").await.is_err());

    // The walk of .. from the root stays at the root.
    let up = root.walk("../..").await.expect("walk ..");
    assert_eq!(up.qid().path, root.qid().path);

    if let (Kind::Export, Some(dir)) = (s.kind, &s.dir) {
        // What the server did is what the host sees.
        let f = create(&root, "", "onhost", 0o640, OWRITE).await;
        f.write(0, Bytes::from_static(b"visible"))
            .await
            .expect("write");
        drop(f);
        let p = dir.path().join("onhost");
        assert_eq!(std::fs::read(&p).expect("host read"), b"visible");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777,
            0o640
        );
        std::fs::write(dir.path().join("fromhost"), b"abc").expect("host write");
        let h = root.walk("fromhost").await.expect("walk");
        let q1 = h.stat().await.expect("stat").qid;
        std::fs::write(dir.path().join("fromhost"), b"abcdef").expect("host write");
        let q2 = h.stat().await.expect("stat").qid;
        assert_eq!(q1.path, q2.path);
        assert_ne!(q1.vers, q2.vers, "qid.vers must change when the file does");
    }
}

#[test]
fn every_operation_ramfs_unix() {
    let s = setup(Kind::Ram, false);
    within(&rt(), 120, every_operation(&s));
}

#[test]
fn every_operation_ramfs_tcp() {
    let s = setup(Kind::Ram, true);
    within(&rt(), 120, every_operation(&s));
}

#[test]
fn every_operation_exportfs_unix() {
    let s = setup(Kind::Export, false);
    within(&rt(), 120, every_operation(&s));
}

#[test]
fn every_operation_exportfs_tcp() {
    let s = setup(Kind::Export, true);
    within(&rt(), 120, every_operation(&s));
}

/// ramfs's Plan 9 permission checks, by attach name.
#[test]
fn ramfs_permissions_by_user() {
    let s = setup(Kind::Ram, false);
    within(&rt(), 60, async {
        let c = connect(&s.addr, 65536).await;
        let glenda = c.attach("glenda", "").await.expect("attach");
        let other = c.attach("bob", "").await.expect("attach");
        let f = create(&glenda, "", "private", 0o600, OWRITE).await;
        f.write(0, Bytes::from_static(b"secret"))
            .await
            .expect("write");
        drop(f);
        let st = glenda
            .walk("private")
            .await
            .expect("walk")
            .stat()
            .await
            .expect("stat");
        assert_eq!(st.uid, "glenda");
        let mut b = other.walk("private").await.expect("walk");
        let e = rerror(b.open(OREAD).await.expect_err("bob reads"));
        assert!(e.contains("permission"), "{e}");
        // bob cannot chmod it, glenda can.
        let mut w = Stat::dont_touch();
        w.mode = 0o644;
        assert!(b.wstat(&w).await.is_err());
        glenda
            .walk("private")
            .await
            .expect("walk")
            .wstat(&w)
            .await
            .expect("chmod");
        b.open(OREAD).await.expect("bob reads now");
        assert_eq!(&b.read(0, 10).await.expect("read")[..], b"secret");
        // A directory glenda keeps to herself: bob cannot create in it or walk it.
        let d = create(&glenda, "", "mine", DMDIR | 0o700, OREAD).await;
        drop(d);
        let mut bd = other.walk("mine").await.expect("walk");
        let e = rerror(
            bd.create("x", 0o644, OWRITE)
                .await
                .expect_err("bob creates"),
        );
        assert!(e.contains("permission"), "{e}");
        let e = rerror(other.walk("mine/anything").await.expect_err("bob walks"));
        assert!(
            e.contains("permission") || e.contains("does not exist"),
            "{e}"
        );
        // Exclusive-use files open once at a time.
        let mut ex = create(&glenda, "", "lock", DMEXCL | 0o666, OWRITE).await;
        let mut ex2 = glenda.walk("lock").await.expect("walk");
        let e = rerror(ex2.open(OREAD).await.expect_err("second open"));
        assert!(e.contains("exclusive") || e.contains("in use"), "{e}");
        ex.clunk().await.expect("clunk");
        ex = glenda.walk("lock").await.expect("walk");
        ex.open(OREAD).await.expect("open after clunk");
        // Append-only files write at the end whatever the offset.
        let ap = create(&glenda, "", "log", DMAPPEND | 0o666, OWRITE).await;
        ap.write(0, Bytes::from_static(b"one "))
            .await
            .expect("write");
        ap.write(0, Bytes::from_static(b"two"))
            .await
            .expect("write");
        let mut rd = glenda.walk("log").await.expect("walk");
        rd.open(OREAD).await.expect("open");
        assert_eq!(&rd.read(0, 100).await.expect("read")[..], b"one two");
    });
}

/// 64 clients at once, each on its own connection, each with its own files.
#[test]
fn sixty_four_concurrent_clients() {
    for kind in [Kind::Ram, Kind::Export] {
        let s = setup(kind, false);
        let rt = rt();
        within(&rt, 120, async {
            let mut tasks = Vec::new();
            for i in 0..64 {
                let addr = s.addr.clone();
                tasks.push(tokio::spawn(async move {
                    let c = connect(&addr, 65536 + 24).await;
                    let root = c.attach("glenda", "").await.expect("attach");
                    let name = format!("c{i}");
                    let data: Vec<u8> = (0..200_000u32)
                        .map(|j| (j as u8).wrapping_mul(i as u8 + 1))
                        .collect();
                    let f = create(&root, "", &name, 0o644, ORDWR).await;
                    f.write_all(0, Bytes::from(data.clone()), 4)
                        .await
                        .expect("write_all");
                    for _ in 0..20 {
                        let st = root
                            .walk(&name)
                            .await
                            .expect("walk")
                            .stat()
                            .await
                            .expect("stat");
                        assert_eq!(st.length, 200_000);
                    }
                    let mut back = Vec::new();
                    f.read_stream(0, 4, |b| {
                        back.extend_from_slice(&b);
                        Ok::<(), ()>(())
                    })
                    .await
                    .expect("read")
                    .expect("sink");
                    assert_eq!(back, data, "client {i} read back other data");
                    drop(f);
                    root.walk(&name)
                        .await
                        .expect("walk")
                        .remove()
                        .await
                        .expect("remove");
                }));
            }
            for t in tasks {
                t.await.expect("client task");
            }
        });
    }
}

/// Many clients multiplexed by srv onto one connection to ramfs, with overlapping fid
/// numbers and tags.
#[test]
fn srv_multiplexes_clients() {
    let ns = Ns::new();
    let _ram = start_posted(&ns, RAMFS, "ram", &[]);
    let mut c = ns.cmd(SRV);
    c.arg("-f")
        .arg(format!("unix!{}", ns.svc("ram").display()))
        .arg("muxed");
    let _srv = spawn_server(c, ns.svc("muxed"));
    let addr = format!("unix!{}", ns.svc("muxed").display());
    let rt = rt();
    within(&rt, 120, async {
        let mut tasks = Vec::new();
        for i in 0..32 {
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                // Every client numbers its fids from 0: srv must keep them apart.
                let c = connect(&addr, 16384).await;
                let root = c.attach("glenda", "").await.expect("attach");
                let name = format!("m{i}");
                let f = create(&root, "", &name, 0o644, ORDWR).await;
                let data = format!("client {i} data").repeat(1000);
                f.write_all(0, Bytes::from(data.clone()), 4)
                    .await
                    .expect("write");
                let mut back = Vec::new();
                f.read_stream(0, 4, |b| {
                    back.extend_from_slice(&b);
                    Ok::<(), ()>(())
                })
                .await
                .expect("read")
                .expect("sink");
                assert_eq!(back, data.as_bytes());
                let e = root.walk("nonexistent").await.expect_err("walk");
                assert!(e.to_string().contains("does not exist"));
            }));
        }
        for t in tasks {
            t.await.expect("client");
        }
        // And what they wrote is really in ramfs, seen directly.
        let direct = connect(&format!("unix!{}", ns.svc("ram").display()), 8192).await;
        let root = direct.attach("glenda", "").await.expect("attach");
        let mut d = root.walk("").await.expect("clone");
        d.open(OREAD).await.expect("open");
        assert_eq!(d.readdir().await.expect("readdir").len(), 32);
    });
    // The 9p command works through srv too.
    let o = ns.ninep(&["read", "muxed/m3"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.starts_with(b"client 3 data"));
}

/// srv exits, and unposts its name, when the server goes away.
#[test]
fn srv_exits_when_server_hangs_up() {
    let ns = Ns::new();
    let ram = start_posted(&ns, RAMFS, "ram", &[]);
    let mut c = ns.cmd(SRV);
    c.arg("-f")
        .arg(format!("unix!{}", ns.svc("ram").display()))
        .arg("muxed");
    let mut srv = spawn_server(c, ns.svc("muxed"));
    drop(ram);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while srv.alive() {
        assert!(
            std::time::Instant::now() < deadline,
            "srv outlived its server"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!ns.svc("muxed").exists(), "srv left its socket behind");
}

/// Big writes whose data the server moves from the socket straight into the file
/// (exportfs) or reads as usual (ramfs): every byte lands where it should, errors are
/// still answered, and the connection stays in frame for what follows.
#[test]
fn big_writes_land_intact() {
    for kind in [Kind::Export, Kind::Ram] {
        for tcp in [false, true] {
            let s = setup(kind, tcp);
            within(&rt(), 120, async {
                let c = connect(&s.addr, (1 << 20) + 24).await;
                let root = c.attach("glenda", "").await.expect("attach");
                let f = create(&root, "", "big", 0o644, ORDWR).await;
                let data: Vec<u8> = (0..9_000_001u32).map(|i| (i % 249) as u8).collect();
                // Odd offsets and sizes, several in flight.
                f.write_all(3, Bytes::from(data.clone()), 4)
                    .await
                    .expect("write_all");
                let mut back = Vec::new();
                f.read_stream(3, 4, |b| {
                    back.extend_from_slice(&b);
                    Ok::<(), ()>(())
                })
                .await
                .expect("read")
                .expect("sink");
                assert!(back == data, "{kind:?} tcp={tcp}: data corrupted");
                if let (Kind::Export, Some(dir)) = (kind, &s.dir) {
                    let host = std::fs::read(dir.path().join("big")).expect("host");
                    assert_eq!(&host[..3], &[0, 0, 0]);
                    assert!(host[3..] == data[..], "host file differs");
                }
                // A big write to a file open only for reading is refused, and the
                // connection goes on.
                let mut r = root.walk("big").await.expect("walk");
                r.open(OREAD).await.expect("open");
                let e = r
                    .write(0, Bytes::from(vec![1u8; 1 << 20]))
                    .await
                    .expect_err("write to a read-only fid");
                assert!(e.to_string().contains("fid"), "{e}");
                assert_eq!(&r.read(3, 4).await.expect("read")[..], &data[..4]);
                // And one to an unknown fid.
                let e = c
                    .rpc(lib9::Fcall::Twrite {
                        fid: 4242,
                        offset: 0,
                        data: Bytes::from(vec![2u8; 1 << 20]),
                    })
                    .await
                    .expect_err("unknown fid");
                assert!(e.to_string().contains("unknown fid"), "{e}");
                assert_eq!(r.stat().await.expect("stat").length, 9_000_004);
            });
        }
    }
}

/// Reads dropped in flight (Tflush) against a real ramfs process leave later reads
/// on the same fid working.
#[test]
fn dropped_reads_then_reads_over_a_socket() {
    let ns = Ns::new();
    let srv = start_posted(&ns, RAMFS, "ram", &[]);
    let rt = rt();
    within(&rt, 60, async {
        let c = lib9::Client::dial(&srv.addr).await.expect("dial");
        let root = c.attach("glenda", "").await.expect("attach");
        let mut f = root.walk_names(&[]).await.expect("clone");
        f.create("data", 0o644, lib9::fcall::ORDWR)
            .await
            .expect("create");
        let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(0, bytes::Bytes::from(body.clone()), 4)
            .await
            .expect("write");
        let f = std::sync::Arc::new(f);
        for round in 0..500u64 {
            let g = std::sync::Arc::clone(&f);
            let off = (round * 997) % 150_000;
            let h = tokio::spawn(async move { g.read(off, 8192).await });
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

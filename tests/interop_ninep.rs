//! Interoperability with a 9P2000 implementation nobody here wrote, the `ninep` crate
//! (0.6): its client against our ramfs and exportfs, and its two servers (the
//! synchronous one and the tokio one, serving ninep's RAM tree) read and written by our
//! client library and by `9p`.
//!
//! The ninep client keeps one fid per path and opens that same fid again for every
//! read or write. Plan 9 servers, ours among them, refuse to open a fid that is already
//! open or to walk from one, so here every use of a path that opens it is followed by a
//! clunk of the path, and the root (fid 0, which ninep never clunks) is listed last.
//! Errors are provoked on a second connection: ninep keeps a fid in its cache after a
//! failed remove (which clunks it on the server) or a partial walk (which never made it),
//! and later uses of those paths on that connection would go to fids the server no
//! longer has.

mod common;
use common::*;

use lib9::fcall::{DMDIR, ORDWR, OREAD, OWRITE, QTDIR, QTFILE};
use ninep::fs::{FileTree, FileType, Mode, Perm, Qid, Stat as NStat, WStat};
use ninep::sync::client::{Client as NClient, Error as NError};
use ninep::sync::server::{ClientId, ReadOutcome, Serve9p};
use ninep::util::ram::RamFs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long one whole conversation may take before the test fails instead of hanging.
const SESSION_TIMEOUT: Duration = Duration::from_secs(90);

/// Run `f` on its own thread and wait for it at most [`SESSION_TIMEOUT`]: neither the
/// ninep client nor our blocking client has a timeout of its own, and a server that
/// stops answering must fail the test, not hang it. A panic in `f` fails the test with
/// its own message.
fn within_deadline<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(SESSION_TIMEOUT) {
        Ok(v) => {
            let _ = h.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer within {SESSION_TIMEOUT:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => panic!("{what}: finished without a result"),
        },
    }
}

/// `9p` with these arguments, which must succeed; its standard output.
fn ok_9p(ns: &Ns, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
    let o = ns.ninep(args, input);
    assert!(
        o.status.success(),
        "9p {args:?} failed ({}): {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

/// `9p` with these arguments, which must fail with a message.
fn fail_9p(ns: &Ns, args: &[&str]) -> String {
    let o = ns.ninep(args, None);
    assert!(
        !o.status.success(),
        "9p {args:?} succeeded: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!err.trim().is_empty(), "9p {args:?} failed silently");
    err
}

fn sorted_names(list: &[NStat]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
    v.sort();
    v
}

/// The text of an `Rerror`, failing the test on any other outcome.
fn rerror<T: std::fmt::Debug>(what: &str, r: Result<T, NError>) -> String {
    match r {
        Err(NError::Rerror { ename }) => ename,
        Err(e) => panic!("{what}: expected an Rerror, got {e}"),
        Ok(v) => panic!("{what}: expected an Rerror, got success: {v:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The ninep client against our servers.

const HELLO: &str = "hello from ninep\n";
const LINES: &str = "one\ntwo\nthree\n";
const INNER: &str = "inside\n";

fn big_data(len: u32, salt: u32) -> Vec<u8> {
    (0..len).map(|i| ((i * 7 + salt) % 251) as u8).collect()
}

/// Clunk the fid ninep keeps for `path`, so that the next use walks afresh.
fn done(c: &NClient, path: &str) {
    c.clunk_path(path)
        .unwrap_or_else(|e| panic!("ninep clunk of {path}: {e}"));
}

/// Everything the ninep client can do, against one of our servers posted at `sock`.
/// `owner` is who new files must belong to, if the server decides that from the attach
/// name; `midway` runs once the tree is at its fullest, to check it from elsewhere.
fn ninep_client_session(sock: &Path, owner: Option<&str>, midway: impl FnOnce()) {
    let c = NClient::new_unix_with_explicit_path("glenda", sock, "")
        .unwrap_or_else(|e| panic!("ninep cannot attach to {}: {e}", sock.display()));

    // The root.
    let root = c.stat("").expect("ninep stats the root");
    assert_eq!(root.qid.ty, FileType::DIRECTORY, "root qid type");
    assert!(root.perms.contains(Perm::OWNER_EXEC), "root mode {root}");

    // A file: create, walk, write, read, partial reads and writes, stat.
    c.create("", "hello", Perm::new(0o644), Mode::READ_WRITE)
        .expect("ninep creates hello");
    done(&c, "hello");
    let fid = c.walk("hello").expect("ninep walks to hello");
    assert_ne!(fid, 0, "walk gave the root fid");
    c.clunk(fid).expect("ninep clunks the walked fid");
    let n = c.write_str("hello", 0, HELLO).expect("ninep writes hello");
    assert_eq!(n, HELLO.len());
    done(&c, "hello");
    assert_eq!(c.read_str("hello").expect("ninep reads hello"), HELLO);
    done(&c, "hello");
    assert_eq!(c.read_from("hello", 6, 4).expect("read_from"), b"from");
    done(&c, "hello");
    assert_eq!(c.write("hello", 6, b"FROM").expect("write at 6"), 4);
    done(&c, "hello");
    assert_eq!(c.read_str("hello").expect("reread"), "hello FROM ninep\n");
    done(&c, "hello");
    c.write("hello", 6, b"from").expect("write back");
    done(&c, "hello");
    let st = c.stat("hello").expect("ninep stats hello");
    assert_eq!(st.name, "hello");
    assert_eq!(st.n_bytes, HELLO.len() as u64);
    assert_eq!(st.qid.ty, FileType::FILE);
    assert_eq!(st.perms.bits() & 0o777, 0o644, "mode of hello: {st}");
    if let Some(o) = owner {
        assert_eq!(st.owner, o, "owner of hello");
    }
    done(&c, "hello");

    // Line by line.
    c.create("", "lines", Perm::new(0o644), Mode::WRITE)
        .expect("create lines");
    done(&c, "lines");
    c.write_str("lines", 0, LINES).expect("write lines");
    done(&c, "lines");
    let got: Vec<String> = c.iter_lines("lines").expect("iter_lines").collect();
    assert_eq!(got, ["one", "two", "three"]);
    // (iter_lines clunked its fid at the end.)

    // wstat: rename, truncate, chmod.
    let st = c.stat("lines").expect("stat lines");
    done(&c, "lines");
    c.write_stat(
        "lines",
        WStat {
            qid: st.qid,
            name: Some("renamed".into()),
            ..Default::default()
        },
    )
    .expect("ninep renames lines");
    assert!(c.stat("lines").is_err(), "lines still there after rename");
    let st = c.stat("renamed").expect("stat renamed");
    assert_eq!(st.n_bytes, LINES.len() as u64);
    done(&c, "renamed");
    c.write_stat(
        "renamed",
        WStat {
            qid: st.qid,
            n_bytes: Some(4),
            ..Default::default()
        },
    )
    .expect("ninep truncates renamed");
    assert_eq!(c.read_str("renamed").expect("read renamed"), "one\n");
    done(&c, "renamed");
    c.write_stat(
        "renamed",
        WStat {
            qid: st.qid,
            perms: Some(Perm::new(0o600)),
            ..Default::default()
        },
    )
    .expect("ninep chmods renamed");
    let st = c.stat("renamed").expect("stat renamed");
    assert_eq!(st.perms.bits() & 0o777, 0o600, "mode of renamed: {st}");
    assert_eq!(st.n_bytes, 4);
    done(&c, "renamed");

    // A file bigger than a message, each way; read whole, then chunk by chunk (ninep
    // asks for a whole msize per read, more than fits in a reply: the server must cut
    // the count down, as Plan 9's do).
    let big = big_data(200_000, 0);
    c.create("", "big", Perm::new(0o644), Mode::READ_WRITE)
        .expect("create big");
    done(&c, "big");
    assert_eq!(c.write("big", 0, &big).expect("write big"), big.len());
    done(&c, "big");
    assert!(
        c.read("big").expect("read big") == big,
        "big read back wrong"
    );
    done(&c, "big");
    let chunks: Vec<Vec<u8>> = c.iter_chunks("big").expect("iter_chunks").collect();
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    assert!(chunks.concat() == big, "big read in chunks wrong");

    // Directories, two deep.
    c.create("", "dir", Perm::DIRECTORY | Perm::new(0o755), Mode::READ)
        .expect("ninep makes dir");
    done(&c, "dir");
    c.create("dir", "inner", Perm::new(0o644), Mode::WRITE)
        .expect("create dir/inner");
    done(&c, "dir/inner");
    c.write_str("dir/inner", 0, INNER).expect("write dir/inner");
    done(&c, "dir/inner");
    c.create("dir", "sub", Perm::DIRECTORY | Perm::new(0o755), Mode::READ)
        .expect("mkdir dir/sub");
    done(&c, "dir/sub");
    c.create("dir/sub", "deep", Perm::new(0o644), Mode::WRITE)
        .expect("create dir/sub/deep");
    done(&c, "dir/sub/deep");
    let list = c.read_dir("dir").expect("ninep lists dir");
    done(&c, "dir");
    assert_eq!(sorted_names(&list), ["inner", "sub"]);
    for e in &list {
        match e.name.as_str() {
            "inner" => {
                assert_eq!(e.qid.ty, FileType::FILE);
                assert_eq!(e.n_bytes, INNER.len() as u64);
            }
            _ => assert_eq!(e.qid.ty, FileType::DIRECTORY, "{e}"),
        }
    }
    assert_eq!(c.read_str("dir/inner").expect("read dir/inner"), INNER);
    done(&c, "dir/inner");
    assert_eq!(
        c.stat("dir/sub").expect("stat dir/sub").qid.ty,
        FileType::DIRECTORY
    );
    assert_eq!(
        sorted_names(&c.read_dir("dir/sub").expect("list dir/sub")),
        ["deep"]
    );
    done(&c, "dir/sub");

    // A path deeper than one walk message carries: ninep walks the rest of the way
    // with a second Twalk whose newfid is its fid.
    let mut parent = String::new();
    for i in 0..DEPTH {
        let name = format!("d{i:02}");
        c.create(
            parent.as_str(),
            name.as_str(),
            Perm::DIRECTORY | Perm::new(0o755),
            Mode::READ,
        )
        .unwrap_or_else(|e| panic!("ninep mkdir {parent}/{name}: {e}"));
        parent = if parent.is_empty() {
            name
        } else {
            format!("{parent}/{name}")
        };
        done(&c, &parent);
    }
    let deep = deep_path();
    c.create(parent.as_str(), "leaf", Perm::new(0o644), Mode::WRITE)
        .expect("ninep creates the deep leaf");
    done(&c, &deep);
    assert_eq!(
        c.write(deep.as_str(), 0, LEAF)
            .expect("write the deep leaf"),
        LEAF.len()
    );
    done(&c, &deep);
    // An empty write is a write of nothing.
    assert_eq!(c.write(deep.as_str(), 0, b"").expect("empty write"), 0);
    done(&c, &deep);
    {
        // Afresh, so that nothing of the path is in ninep's cache.
        let d = NClient::new_unix_with_explicit_path("glenda", sock, "")
            .expect("another ninep connection");
        assert_eq!(
            d.read(deep.as_str()).expect("ninep reads the deep leaf"),
            LEAF
        );
        assert_eq!(
            d.stat(deep.as_str()).expect("stat the deep leaf").name,
            "leaf"
        );
    }

    midway();

    // Errors, on a connection of their own.
    {
        let e = NClient::new_unix_with_explicit_path("glenda", sock, "")
            .expect("second ninep connection");
        let msg = rerror("read of a missing file", e.read("nonexistent"));
        assert_eq!(msg, lib9::errstr::ENONEXIST);
        assert!(
            e.read("dir/nonexistent").is_err(),
            "read of dir/nonexistent"
        );
        let msg = rerror(
            "create over an existing file",
            e.create("", "hello", Perm::new(0o644), Mode::WRITE),
        );
        assert_eq!(msg, lib9::errstr::EEXIST);
        let msg = rerror("remove of a full directory", e.remove("dir"));
        assert_eq!(msg, lib9::errstr::ENOTEMPTY);
        assert!(
            e.write("dir/sub", 0, b"x").is_err(),
            "wrote into a directory"
        );
    }

    // Removal, innermost first.
    let mut p = deep_path();
    loop {
        c.remove(p.as_str())
            .unwrap_or_else(|e| panic!("ninep removes {p}: {e}"));
        match p.rsplit_once('/') {
            Some((up, _)) => p = up.to_string(),
            None => break,
        }
    }
    for p in [
        "dir/sub/deep",
        "dir/sub",
        "dir/inner",
        "dir",
        "big",
        "renamed",
    ] {
        c.remove(p)
            .unwrap_or_else(|e| panic!("ninep removes {p}: {e}"));
    }
    let msg = rerror("stat of a removed directory", c.stat("dir"));
    assert_eq!(msg, lib9::errstr::ENONEXIST);

    // Last: listing the root opens ninep's root fid, from which nothing walks again.
    let list = c.read_dir("").expect("ninep lists the root");
    assert_eq!(sorted_names(&list), ["hello"]);
}

#[test]
fn ninep_client_against_ramfs() {
    let ns = Arc::new(Ns::new());
    let _s = start_posted(&ns, RAMFS, "ram", &[]);
    let sock = ns.svc("ram");
    let ns2 = Arc::clone(&ns);
    within_deadline("ninep client against ramfs", move || {
        ninep_client_session(&sock, Some("glenda"), || {
            // Our own client sees what ninep made.
            assert_eq!(ok_9p(&ns2, &["ls", "ram/dir"], None), b"inner\nsub\n");
            assert_eq!(
                ok_9p(&ns2, &["read", "ram/dir/inner"], None),
                INNER.as_bytes()
            );
            // (renamed is glenda's now, mode 0600: not for whoever runs 9p to read.)
            let st = ok_9p(&ns2, &["stat", "ram/renamed"], None);
            let st = String::from_utf8_lossy(&st);
            assert!(st.starts_with("'renamed' 'glenda' "), "{st}");
            assert!(st.contains(" m 0600 ") && st.contains(" l 4 "), "{st}");
            if lib9::ns::user() != "glenda" {
                let o = ns2.ninep(&["read", "ram/renamed"], None);
                assert!(!o.status.success(), "read glenda's 0600 file");
            }
            assert!(ok_9p(&ns2, &["read", "ram/big"], None) == big_data(200_000, 0));
            let deep = format!("ram/{}", deep_path());
            assert_eq!(ok_9p(&ns2, &["read", &deep], None), LEAF);
        })
    });
    // And what is left.
    assert_eq!(ok_9p(&ns, &["read", "ram/hello"], None), HELLO.as_bytes());
    assert_eq!(ok_9p(&ns, &["ls", "ram/"], None), b"hello\n");
}

#[test]
fn ninep_client_against_exportfs() {
    let ns = Arc::new(Ns::new());
    let dir = tempfile::tempdir().expect("tempdir");
    // Plan 9's create rule takes the permissions of new files from their directory:
    // make them what the session expects, whatever the umask.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod export dir");
    let host = dir.path().to_path_buf();
    let _s = start_posted(
        &ns,
        EXPORTFS,
        "exp",
        &[host.to_str().expect("temp dir path is UTF-8")],
    );
    let sock = ns.svc("exp");
    let h = host.clone();
    within_deadline("ninep client against exportfs", move || {
        ninep_client_session(&sock, None, || {
            let mode = |p: &str| {
                std::fs::metadata(h.join(p))
                    .unwrap_or_else(|e| panic!("host {p}: {e}"))
                    .permissions()
                    .mode()
                    & 0o777
            };
            assert_eq!(
                std::fs::read(h.join("hello")).expect("host hello"),
                HELLO.as_bytes()
            );
            assert_eq!(mode("hello"), 0o644);
            assert_eq!(
                std::fs::read(h.join("renamed")).expect("host renamed"),
                b"one\n"
            );
            assert_eq!(mode("renamed"), 0o600);
            assert!(!h.join("lines").exists(), "lines survived its rename");
            assert!(std::fs::read(h.join("big")).expect("host big") == big_data(200_000, 0));
            assert!(h.join("dir").is_dir());
            assert_eq!(mode("dir"), 0o755);
            assert_eq!(
                std::fs::read(h.join("dir/inner")).expect("host inner"),
                INNER.as_bytes()
            );
            assert!(h.join("dir/sub").is_dir());
            assert_eq!(std::fs::read(h.join(deep_path())).expect("host leaf"), LEAF);
            assert_eq!(
                std::fs::metadata(h.join("dir/sub/deep"))
                    .expect("host deep")
                    .len(),
                0
            );
        })
    });
    // The host sees what was done, and nothing more.
    assert_eq!(
        std::fs::read(host.join("hello")).expect("host file"),
        HELLO.as_bytes()
    );
    let mut left: Vec<String> = std::fs::read_dir(&host)
        .expect("read export dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    left.sort();
    assert_eq!(left, ["hello"]);
}

// ---------------------------------------------------------------------------------------
// The ninep servers, read and written by us.

const MOTD: &[u8] = b"served by ninep\n";
const NESTED: &[u8] = b"nested\n";
const LEAF: &[u8] = b"twenty down\n";
/// Directories above the leaf of the deep path: more than one walk message's worth.
const DEPTH: usize = 20;
/// Entries of the directory `many`: more than one read of a directory's worth.
const MANY: usize = 300;

fn deep_path() -> String {
    let mut p: Vec<String> = (0..DEPTH).map(|i| format!("d{i:02}")).collect();
    p.push("leaf".into());
    p.join("/")
}

fn add_file(ft: &FileTree<Vec<u8>>, parent: u64, name: &str, perm: u32, data: &[u8]) -> Qid {
    let q = ft
        .try_add_node(parent, name, Perm::new(perm), FileType::FILE, data.to_vec())
        .unwrap_or_else(|e| panic!("ninep tree: add {name}: {e}"));
    // The RAM tree keeps a file's length apart from its data.
    ft.with_file_mut(q.path, |f| f.stat.n_bytes = data.len() as u64)
        .expect("ninep tree: set length");
    q
}

fn add_dir(ft: &FileTree<Vec<u8>>, parent: u64, name: &str) -> Qid {
    ft.try_add_node(
        parent,
        name,
        Perm::DIRECTORY | Perm::new(0o777),
        FileType::DIRECTORY,
        Vec::new(),
    )
    .unwrap_or_else(|e| panic!("ninep tree: mkdir {name}: {e}"))
}

/// The tree the ninep servers serve, all owned by glenda.
fn ninep_tree(big: &[u8]) -> RamFs {
    let fs = RamFs::new("glenda", "glenda");
    let ft = fs.file_tree();
    add_file(&ft, 0, "motd", 0o644, MOTD);
    add_file(&ft, 0, "big", 0o644, big);
    add_file(&ft, 0, "rw", 0o666, b"");
    let sub = add_dir(&ft, 0, "sub");
    add_file(&ft, sub.path, "inner", 0o644, NESTED);
    let many = add_dir(&ft, 0, "many");
    for i in 0..MANY {
        add_file(&ft, many.path, &format!("f{i:03}"), 0o644, b"");
    }
    let mut d = 0;
    for i in 0..DEPTH {
        d = add_dir(&ft, d, &format!("d{i:02}")).path;
    }
    add_file(&ft, d, "leaf", 0o644, LEAF);
    fs
}

/// What a file of the ninep tree holds, straight from the tree.
fn tree_data(ft: &FileTree<Vec<u8>>, path: &str) -> Option<Vec<u8>> {
    let q = ft.qid_for_path(path)?;
    ft.with_file(q, |f| f.aux.clone()).ok()
}

/// ninep's RAM tree for ninep's tokio server, which serves `AsyncServe9p`: the crate
/// derives that from `Serve9p` for types that opt in, and only a type of ours may.
#[derive(Clone)]
struct AsyncRam(RamFs);

impl Serve9p for AsyncRam {
    fn walk_one(&self, parent: u64, child: &str, cid: ClientId) -> ninep::Result<Qid> {
        self.0.walk_one(parent, child, cid)
    }
    fn open(&self, qid: u64, mode: Mode, cid: ClientId) -> ninep::Result<u32> {
        self.0.open(qid, mode, cid)
    }
    fn create(
        &self,
        parent: u64,
        name: &str,
        perm: Perm,
        mode: Mode,
        cid: ClientId,
    ) -> ninep::Result<(Qid, u32)> {
        self.0.create(parent, name, perm, mode, cid)
    }
    fn read(
        &self,
        qid: u64,
        offset: usize,
        count: usize,
        cid: ClientId,
    ) -> ninep::Result<ReadOutcome> {
        self.0.read(qid, offset, count, cid)
    }
    fn read_dir(&self, qid: u64, cid: ClientId) -> ninep::Result<Vec<NStat>> {
        self.0.read_dir(qid, cid)
    }
    fn write(&self, qid: u64, offset: usize, data: Vec<u8>, cid: ClientId) -> ninep::Result<usize> {
        self.0.write(qid, offset, data, cid)
    }
    fn remove(&self, qid: u64, cid: ClientId) -> ninep::Result<()> {
        self.0.remove(qid, cid)
    }
    fn stat(&self, qid: u64, cid: ClientId) -> ninep::Result<NStat> {
        self.0.stat(qid, cid)
    }
    fn write_stat(&self, qid: u64, wstat: WStat, cid: ClientId) -> ninep::Result<()> {
        self.0.write_stat(qid, wstat, cid)
    }
}

impl ninep::tokio::server::AsyncServe9pFromSync for AsyncRam {}

#[derive(Clone, Copy, Debug)]
enum Flavour {
    /// ninep's synchronous server: a thread per connection.
    Sync,
    /// ninep's tokio server, with its own accept loop.
    Tokio,
}

/// A ninep server on a Unix socket. Dropping it stops it: the listener goes, every
/// connection is shut down, and the socket file is removed.
struct NinepServer {
    stop: Option<Box<dyn FnOnce()>>,
}

impl Drop for NinepServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop();
        }
    }
}

fn start_ninep(flavour: Flavour, sock: &Path, fs: RamFs) -> NinepServer {
    let server = match flavour {
        Flavour::Sync => start_sync(sock, fs),
        Flavour::Tokio => start_tokio(sock, fs),
    };
    let deadline = Instant::now() + START_TIMEOUT;
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(
            Instant::now() < deadline,
            "ninep {flavour:?} server did not come up at {}",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    server
}

/// ninep's synchronous session loop, one thread per connection, behind an accept loop of
/// ours (ninep's own blocks in accept for good, with no way to stop it). Every session
/// shares the one tree.
fn start_sync(sock: &Path, fs: RamFs) -> NinepServer {
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener =
        UnixListener::bind(sock).unwrap_or_else(|e| panic!("bind {}: {e}", sock.display()));
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let accept = std::thread::spawn(move || {
        let mut conns: Vec<(UnixStream, std::thread::JoinHandle<()>)> = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(false).expect("blocking connection");
                    let mine = s.try_clone().expect("clone connection");
                    let fs = fs.clone();
                    let h = std::thread::spawn(move || {
                        ninep::sync::server::Server::new(fs).handle_single_client_stream(s)
                    });
                    conns.push((mine, h));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("ninep accept: {e}"),
            }
        }
        for (s, _) in &conns {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
        for (_, h) in conns {
            let _ = h.join();
        }
    });
    let path = sock.to_path_buf();
    NinepServer {
        stop: Some(Box::new(move || {
            stop.store(true, Ordering::Relaxed);
            // Bounded: every session's reads were just cut off.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(accept.join());
            });
            let joined = rx.recv_timeout(Duration::from_secs(10));
            let _ = std::fs::remove_file(&path);
            if !std::thread::panicking() {
                match joined {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => panic!("the ninep accept loop panicked"),
                    Err(_) => panic!("ninep sessions did not end within 10 s"),
                }
            }
        })),
    }
}

/// ninep's tokio server on a runtime of its own; shutting the runtime down drops the
/// accept loop (whose socket file goes with it) and every session.
fn start_tokio(sock: &Path, fs: RamFs) -> NinepServer {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime for the ninep server");
    {
        let _in = rt.enter();
        let _accept = ninep::sync::server::Server::new(AsyncRam(fs))
            .serve_socket_with_custom_path_async(sock.to_path_buf());
    }
    let path = sock.to_path_buf();
    NinepServer {
        stop: Some(Box::new(move || {
            rt.shutdown_timeout(Duration::from_secs(5));
            let _ = std::fs::remove_file(&path);
        })),
    }
}

/// Our client library against a ninep server: attach, walk, open, read, readdir, stat,
/// then create, write, wstat and remove.
fn our_client_against_ninep(sock: PathBuf, ft: FileTree<Vec<u8>>, big: Vec<u8>) {
    use bytes::Bytes;
    use lib9::blocking::Client;
    use lib9::client::{DEFAULT_MSIZE, Error, Options};

    let addr = lib9::dial::Addr::Unix(sock);
    let c = Client::connect(&addr, Options::default()).expect("our client connects to ninep");
    // ninep agrees to any msize up to 32 MiB.
    assert_eq!(c.msize(), DEFAULT_MSIZE);
    let root = c.attach("glenda", "").expect("attach to ninep");
    assert!(root.qid().is_dir(), "root qid {}", root.qid());
    let rst = root.stat().expect("stat the root");
    assert!(rst.mode & DMDIR != 0, "root mode {:o}", rst.mode);

    // A file: walk, stat, open, read whole and in part.
    let mut f = root.walk("motd").expect("walk motd");
    assert_eq!(f.qid().ty, QTFILE);
    let st = f.stat().expect("stat motd");
    assert_eq!(st.name, "motd");
    assert_eq!(st.uid, "glenda");
    assert_eq!(st.gid, "glenda");
    assert_eq!(st.mode, 0o644);
    assert_eq!(st.length, MOTD.len() as u64);
    assert_eq!(st.qid, f.qid());
    assert_eq!(Some(st.qid.path), ft.qid_for_path("/motd"), "qid of motd");
    f.open(OREAD).expect("open motd");
    assert_eq!(f.read_all().expect("read motd"), MOTD);
    assert_eq!(&f.read(7, 2).expect("read motd at 7")[..], b"by");
    assert!(f.read(100, 10).expect("read past the end").is_empty());
    drop(f);

    // A big file, with many reads in flight, each cut to ninep's iounit.
    let mut f = root.walk("big").expect("walk big");
    f.open(OREAD).expect("open big");
    assert!(
        f.iounit() < DEFAULT_MSIZE,
        "iounit {} is not ninep's",
        f.iounit()
    );
    let mut got = Vec::new();
    let n = f
        .read_stream(0, f.depth(), |b| {
            got.extend_from_slice(&b);
            Ok::<(), ()>(())
        })
        .expect("pipelined read of big")
        .expect("sink");
    assert_eq!(n, big.len() as u64);
    assert!(got == big, "big read back wrong");
    drop(f);

    // Directories: the root, one that takes several reads, and a path deeper than
    // one walk message carries.
    let mut d = root.walk("").expect("clone the root");
    d.open(OREAD).expect("open the root");
    let list = d.readdir().expect("readdir of the root");
    let mut names: Vec<&str> = list.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["big", "d00", "many", "motd", "rw", "sub"]);
    for s in &list {
        let is_dir = matches!(s.name.as_str(), "d00" | "many" | "sub");
        assert_eq!(s.mode & DMDIR != 0, is_dir, "mode of {}", s.name);
        assert_eq!(s.qid.ty & QTDIR != 0, is_dir, "qid of {}", s.name);
    }
    drop(d);
    let mut d = root.walk("many").expect("walk many");
    d.open(OREAD).expect("open many");
    let list = d.readdir().expect("readdir of many");
    let names: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
    let want: Vec<String> = (0..MANY).map(|i| format!("f{i:03}")).collect();
    assert_eq!(names, want, "listing of many");
    drop(d);
    let mut f = root.walk("sub/inner").expect("walk sub/inner");
    f.open(OREAD).expect("open sub/inner");
    assert_eq!(f.read_all().expect("read sub/inner"), NESTED);
    drop(f);
    let mut f = root.walk(&deep_path()).expect("walk the deep path");
    f.open(OREAD).expect("open leaf");
    assert_eq!(f.read_all().expect("read leaf"), LEAF);
    drop(f);

    // Flushed reads: whether a read's reply or the Rflush comes first, the connection
    // goes on, and a reply that came first is the read's. (On a connection of its own:
    // ninep allows one attach per connection.)
    {
        use lib9::fcall::Fcall;
        let c2 = Client::connect(&addr, Options::default()).expect("another connection");
        let (rt, ac) = c2.inner();
        rt.block_on(async {
            let r = ac.attach("glenda", "").await.expect("second attach");
            let mut f = r.walk("motd").await.expect("walk motd");
            f.open(OREAD).await.expect("open motd");
            for _ in 0..20 {
                let read = Fcall::Tread {
                    fid: f.raw(),
                    offset: 0,
                    count: 64,
                };
                let call = ac.start(read, None).await.expect("start a read");
                match call.flush().await.expect("flush the read") {
                    None => {}
                    Some(Fcall::Rread { data }) => assert_eq!(&data[..], MOTD),
                    Some(other) => panic!("flushed read answered {other:?}"),
                }
            }
            assert_eq!(f.read_all().await.expect("read after flushes"), MOTD);
        });
    }

    // Errors.
    let c2 = Client::connect(&addr, Options::default()).expect("another connection");
    match c2.attach("glenda", "nosuchtree") {
        Err(Error::Rerror(e)) => assert!(!e.contains("already attached"), "{e}"),
        Err(e) => panic!("attach to a tree ninep does not serve: {e}"),
        Ok(_) => panic!("attached to a tree ninep does not serve"),
    }
    drop(c2);
    match root.walk("nonexistent") {
        Err(Error::Rerror(e)) => assert!(!e.is_empty()),
        Err(e) => panic!("walk to nonexistent: {e}"),
        Ok(f) => panic!("walked to nonexistent: {}", f.qid()),
    }
    match root.walk("sub/nonexistent") {
        Err(Error::Rerror(e)) => assert!(e.contains("nonexistent"), "{e}"),
        Err(e) => panic!("walk to sub/nonexistent: {e}"),
        Ok(f) => panic!("walked to sub/nonexistent: {}", f.qid()),
    }
    let f = root.walk("motd").expect("walk motd");
    assert!(f.read(0, 10).is_err(), "read of an unopened fid");
    let mut f = root.walk("sub").expect("walk sub");
    assert!(f.open(OWRITE).is_err(), "opened a directory for writing");

    // Writes: a new file, read back through the same fid and seen in the tree.
    let mut f = root.walk("sub").expect("walk sub");
    f.create("fromus", 0o644, ORDWR).expect("create sub/fromus");
    assert_eq!(f.qid().ty, QTFILE);
    let n = f
        .write(0, Bytes::from_static(b"written by lib9\n"))
        .expect("write sub/fromus");
    assert_eq!(n, 16);
    assert_eq!(
        &f.read(0, 100).expect("read back sub/fromus")[..],
        b"written by lib9\n"
    );
    drop(f);
    assert_eq!(
        tree_data(&ft, "/sub/fromus").as_deref(),
        Some(&b"written by lib9\n"[..])
    );
    // A big one, with many writes in flight.
    let big2 = big_data(150_000, 3);
    let mut f = root.walk("sub").expect("walk sub");
    f.create("bigcopy", 0o644, OWRITE)
        .expect("create sub/bigcopy");
    f.write_all(0, Bytes::from(big2.clone()), f.depth())
        .expect("pipelined write of sub/bigcopy");
    drop(f);
    assert!(
        tree_data(&ft, "/sub/bigcopy").as_deref() == Some(&big2[..]),
        "sub/bigcopy in the tree wrong"
    );

    // wstat: a rename (ninep insists on the file's own qid where 9P allows "don't
    // touch", so it is sent).
    let f = root.walk("sub/fromus").expect("walk sub/fromus");
    let mut w = lib9::Stat::dont_touch();
    w.qid = f.stat().expect("stat sub/fromus").qid;
    w.name = "renamed".into();
    f.wstat(&w).expect("rename sub/fromus");
    drop(f);
    assert!(root.walk("sub/fromus").is_err(), "sub/fromus still there");
    let f = root.walk("sub/renamed").expect("walk sub/renamed");
    assert_eq!(f.stat().expect("stat sub/renamed").name, "renamed");

    // remove.
    f.remove().expect("remove sub/renamed");
    assert!(
        ft.qid_for_path("/sub/renamed").is_none(),
        "removed file in the tree"
    );
    assert!(
        root.walk("sub/renamed").is_err(),
        "removed file still walks"
    );
}

/// `9p` against a ninep server posted as `ninep`.
fn nine_p_against_ninep(ns: &Ns, ft: &FileTree<Vec<u8>>, big: &[u8]) {
    assert_eq!(ok_9p(ns, &["read", "ninep/motd"], None), MOTD);
    assert!(
        ok_9p(ns, &["read", "ninep/big"], None) == big,
        "9p read of big wrong"
    );
    let deep = format!("ninep/{}", deep_path());
    assert_eq!(ok_9p(ns, &["read", &deep], None), LEAF);
    assert_eq!(
        String::from_utf8_lossy(&ok_9p(ns, &["ls", "ninep/"], None)),
        "big\nd00\nmany\nmotd\nrw\nsub\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&ok_9p(ns, &["ls", "ninep/sub"], None)),
        "bigcopy\ninner\n"
    );
    let many = ok_9p(ns, &["ls", "ninep/many"], None);
    assert_eq!(
        many.split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        MANY
    );
    let long = String::from_utf8_lossy(&ok_9p(ns, &["ls", "-l", "ninep/motd"], None)).into_owned();
    assert!(
        long.starts_with("--rw-r--r-- M 0 glenda glenda 16 ") && long.ends_with(" motd\n"),
        "ls -l: {long:?}"
    );
    let st = String::from_utf8_lossy(&ok_9p(ns, &["stat", "ninep/motd"], None)).into_owned();
    let qpath = ft.qid_for_path("/motd").expect("motd in the tree");
    let want = format!("'motd' 'glenda' 'glenda' 'glenda' q ({qpath:016x} 0 ) m 0644 at ");
    assert!(st.starts_with(&want), "stat: {st:?}, want {want:?}...");
    assert!(st.contains(" l 16 "), "stat: {st:?}");

    // Writes, as whoever runs the test: rw and sub are writable by anyone.
    ok_9p(ns, &["write", "ninep/rw"], Some(b"via 9p\n"));
    assert_eq!(tree_data(ft, "/rw").as_deref(), Some(&b"via 9p\n"[..]));
    assert_eq!(ok_9p(ns, &["read", "ninep/rw"], None), b"via 9p\n");
    ok_9p(ns, &["create", "ninep/sub/made"], None);
    assert_eq!(tree_data(ft, "/sub/made").as_deref(), Some(&b""[..]));
    ok_9p(ns, &["rm", "ninep/sub/made"], None);
    assert!(
        ft.qid_for_path("/sub/made").is_none(),
        "9p rm left sub/made"
    );

    // Small messages: many reads, and directory reads that each carry a few entries.
    assert!(
        ok_9p(ns, &["-m", "4096", "read", "ninep/big"], None) == big,
        "9p -m 4096 read of big wrong"
    );
    let many_small = ok_9p(ns, &["-m", "300", "ls", "ninep/many"], None);
    assert!(many_small == many, "9p -m 300 ls differs");

    // Errors.
    fail_9p(ns, &["read", "ninep/nonexistent"]);
    fail_9p(ns, &["ls", "ninep/sub/nonexistent"]);
    fail_9p(ns, &["rm", "ninep/nonexistent"]);
}

fn ninep_server_read_by_us(flavour: Flavour) {
    let ns = Arc::new(Ns::new());
    let sock = ns.svc("ninep");
    let big = big_data(100_000, 1);
    let fs = ninep_tree(&big);
    let ft = fs.file_tree();
    let _server = start_ninep(flavour, &sock, fs);
    let (ft2, big2) = (ft.clone(), big.clone());
    within_deadline("our client against ninep", move || {
        our_client_against_ninep(sock, ft2, big2)
    });
    nine_p_against_ninep(&ns, &ft, &big);
}

#[test]
fn ninep_sync_server_read_by_our_client_and_9p() {
    ninep_server_read_by_us(Flavour::Sync);
}

#[test]
fn ninep_tokio_server_read_by_our_client_and_9p() {
    ninep_server_read_by_us(Flavour::Tokio);
}

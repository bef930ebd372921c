//! Interoperability with a 9P2000 implementation nobody here wrote: the `ninep` crate,
//! as a client of our ramfs and exportfs, and as a server read by our client library
//! and by `9p`.

mod common;
use common::*;
use ninep::fs::{Mode, Perm};
use ninep::sync::client::Client as NClient;

fn names(list: &[ninep::fs::Stat]) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| s.name.clone()).collect();
    v.sort();
    v
}

/// Everything the ninep client can do, against one of our servers. The ninep client
/// keeps a fid per path and opens it on every read or write, so each use of a path is
/// followed by a clunk of it (our servers, as Plan 9's, refuse to open an open fid).
fn ninep_client_session(c: &NClient) {
    c.create("", "hello", Perm::new(0o644), Mode::READ_WRITE)
        .expect("ninep create");
    c.clunk_path("hello").expect("clunk");
    let n = c
        .write_str("hello", 0, "hello from ninep\n")
        .expect("ninep write");
    assert_eq!(n, 17);
    c.clunk_path("hello").expect("clunk");
    assert_eq!(
        c.read_str("hello").expect("ninep read"),
        "hello from ninep\n"
    );
    c.clunk_path("hello").expect("clunk");
    let st = c.stat("hello").expect("ninep stat");
    assert_eq!(st.name, "hello");
    assert_eq!(st.n_bytes, 17);
    assert_eq!(st.perms.bits() & 0o777, 0o644);
    c.clunk_path("hello").expect("clunk");

    // A bigger file, many messages each way.
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 241) as u8).collect();
    c.create("", "big", Perm::new(0o600), Mode::READ_WRITE)
        .expect("create big");
    c.clunk_path("big").expect("clunk");
    assert_eq!(c.write("big", 0, &big).expect("write big"), big.len());
    c.clunk_path("big").expect("clunk");
    assert!(
        c.read("big").expect("read big") == big,
        "big file corrupted"
    );
    c.clunk_path("big").expect("clunk");

    // Directories.
    c.create("", "dir", Perm::DIRECTORY | Perm::new(0o755), Mode::READ)
        .expect("mkdir");
    c.clunk_path("dir").expect("clunk");
    c.create("dir", "inner", Perm::new(0o644), Mode::WRITE)
        .expect("create in dir");
    c.clunk_path("dir/inner").expect("clunk");
    assert_eq!(names(&c.read_dir("dir").expect("read dir")), ["inner"]);
    c.clunk_path("dir").expect("clunk");

    // Errors come back as errors.
    assert!(c.read("nonexistent").is_err());
    assert!(c.stat("dir/nonexistent").is_err());
    assert!(
        c.create("", "hello", Perm::new(0o644), Mode::WRITE)
            .is_err(),
        "created over an existing file"
    );

    // Removal.
    c.remove("dir/inner").expect("remove inner");
    c.remove("dir").expect("remove dir");
    c.remove("big").expect("remove big");
    // Last: listing the root opens ninep's root fid, which it never clunks, and no walk
    // may start from an open fid.
    assert_eq!(names(&c.read_dir("").expect("read root")), ["hello"]);
}

#[test]
fn ninep_client_against_ramfs() {
    let ns = Ns::new();
    let _s = start_posted(&ns, RAMFS, "ram", &[]);
    let c = NClient::new_unix_with_explicit_path("glenda", ns.svc("ram"), "")
        .expect("ninep connects to ramfs");
    ninep_client_session(&c);
    // What ninep wrote, our 9p reads.
    let o = ns.ninep(&["read", "ram/hello"], None);
    assert_eq!(o.stdout, b"hello from ninep\n");
}

#[test]
fn ninep_client_against_exportfs() {
    let ns = Ns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let _s = start_posted(&ns, EXPORTFS, "exp", &[dir.path().to_str().expect("utf8")]);
    let c = NClient::new_unix_with_explicit_path("glenda", ns.svc("exp"), "")
        .expect("ninep connects to exportfs");
    ninep_client_session(&c);
    // And the host sees what was done.
    assert_eq!(
        std::fs::read(dir.path().join("hello")).expect("host file"),
        b"hello from ninep\n"
    );
    assert!(!dir.path().join("dir").exists());
    assert!(!dir.path().join("big").exists());
}

#[test]
fn ninep_server_read_by_our_client_and_9p() {
    let ns = Ns::new();
    let sock = ns.svc("ninep");
    let server = ninep::sync::server::Server::new(ninep::util::ram::RamFs::new("glenda", "glenda"));
    // The ninep server runs on its own threads for the rest of the test process; its
    // socket lives in the test's name space directory, which goes with the test.
    let _h = server.serve_socket_with_custom_path(sock.clone());
    let deadline = std::time::Instant::now() + START_TIMEOUT;
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "ninep server did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // Put some files there with the ninep client.
    let nc = NClient::new_unix_with_explicit_path("glenda", &sock, "").expect("ninep client");
    nc.create("", "motd", Perm::new(0o644), Mode::READ_WRITE)
        .expect("create");
    nc.clunk_path("motd").expect("clunk");
    nc.write_str("motd", 0, "served by ninep\n").expect("write");
    nc.clunk_path("motd").expect("clunk");
    nc.create("", "sub", Perm::DIRECTORY | Perm::new(0o755), Mode::READ)
        .expect("mkdir");
    nc.clunk_path("sub").expect("clunk");

    // Our client library: attach, walk, open, read, readdir, stat, write, create.
    let addr = lib9::dial::Addr::Unix(sock.clone());
    let c = lib9::blocking::Client::connect(&addr, lib9::client::Options::default())
        .expect("our client connects to ninep");
    let root = c.attach("glenda", "").expect("attach");
    let mut f = root.walk("motd").expect("walk");
    assert_eq!(f.stat().expect("stat").name, "motd");
    f.open(lib9::fcall::OREAD).expect("open");
    assert_eq!(f.read_all().expect("read"), b"served by ninep\n");
    drop(f);
    let mut d = root.walk("").expect("clone");
    d.open(lib9::fcall::OREAD).expect("open root");
    let mut listed: Vec<String> = d
        .readdir()
        .expect("readdir")
        .into_iter()
        .map(|s| s.name)
        .collect();
    listed.sort();
    assert_eq!(listed, ["motd", "sub"]);
    drop(d);
    let mut s = root.walk("sub").expect("walk sub");
    s.create("fromus", 0o644, lib9::fcall::ORDWR)
        .expect("create");
    let n = s
        .write(0, bytes::Bytes::from_static(b"written by lib9\n"))
        .expect("write");
    assert_eq!(n, 16);
    drop(s);
    assert!(root.walk("nonexistent").is_err());
    nc.clunk_path("sub/fromus").ok();
    assert_eq!(
        nc.read_str("sub/fromus").expect("ninep reads ours"),
        "written by lib9\n"
    );

    // The 9p command.
    let o = ns.ninep(&["read", "ninep/motd"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.stdout, b"served by ninep\n");
    let o = ns.ninep(&["ls", "ninep/"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "motd\nsub\n");
    let o = ns.ninep(&["stat", "ninep/motd"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("'motd' 'glenda' 'glenda'"));
}

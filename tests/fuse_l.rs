//! `9pfuse -L`: a directory exported by Debian's diod (a 9P2000.L server, started here
//! on loopback) mounted through FUSE and used with ordinary file calls, including
//! what only the Linux dialect has (symbolic and hard links, renames across
//! directories, FIFOs, nanosecond times); a server that goes takes the mount with it.

mod common;

use common::*;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const NINEPFUSE: &str = env!("CARGO_BIN_EXE_9pfuse");
const DIOD: &str = "/usr/sbin/diod";

fn mounted(dir: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let d = dir.to_string_lossy();
    m.lines()
        .any(|l| l.split(' ').nth(4) == Some(&*d) && l.contains("fuse"))
}

/// Whether the peers this needs are here (diod, /dev/fuse, root); a missing one
/// fails the test when NINESPACE_REQUIRE_PEERS=1.
fn peers_here() -> bool {
    let required = std::env::var("NINESPACE_REQUIRE_PEERS").as_deref() == Ok("1");
    let missing = if !Path::new("/dev/fuse").exists() {
        Some("/dev/fuse")
    } else if !Path::new(DIOD).exists() {
        Some("diod (Debian package diod)")
    // SAFETY: geteuid cannot fail.
    } else if unsafe { libc::geteuid() } != 0 {
        Some("root (diod serves as the attaching user)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(what) if required => panic!("missing peer: {what}"),
        Some(what) => {
            eprintln!("skipped: no {what}");
            false
        }
    }
}

/// diod exporting a fresh directory, killed when dropped.
struct Diod {
    child: Child,
    addr: String,
    export: tempfile::TempDir,
    /// Holds the Unix socket and the log.
    _aside: tempfile::TempDir,
}

impl Diod {
    /// diod on a loopback TCP port. Only one test of this file listens on TCP: tests
    /// run at once could otherwise be given the same free port.
    fn start_tcp() -> Diod {
        let port = free_port();
        Diod::start(
            &format!("127.0.0.1:{port}"),
            format!("tcp!127.0.0.1!{port}"),
        )
    }

    /// diod on a Unix socket of its own.
    fn start_unix() -> Diod {
        let aside = tempfile::tempdir().expect("tempdir");
        let sock = aside.path().join("diod.sock");
        Diod::start_in(
            aside,
            &sock.to_string_lossy(),
            format!("unix!{}", sock.display()),
        )
    }

    fn start(listen: &str, addr: String) -> Diod {
        Diod::start_in(tempfile::tempdir().expect("tempdir"), listen, addr)
    }

    fn start_in(aside: tempfile::TempDir, listen: &str, addr: String) -> Diod {
        let export = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(DIOD)
            .args(["-f", "-n", "-l", listen, "-e"])
            .arg(export.path())
            .arg("-L")
            .arg(aside.path().join("diod.log"))
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn diod");
        match listen.split_once(':') {
            Some((_, port)) if !listen.starts_with('/') => {
                wait_tcp(port.parse().expect("port"), &mut child)
            }
            _ => wait_unix(Path::new(listen), &mut child),
        }
        Diod {
            child,
            addr,
            export,
            _aside: aside,
        }
    }

    fn addr(&self) -> String {
        self.addr.clone()
    }

    fn host(&self, name: &str) -> PathBuf {
        self.export.path().join(name)
    }
}

impl Drop for Diod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `9pfuse -L`, stopped and unmounted when dropped.
struct Mount {
    child: Child,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mount {
    fn new(d: &Diod, extra: &[&str]) -> Mount {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("m");
        std::fs::create_dir(&dir).expect("mkdir");
        let child = Command::new(NINEPFUSE)
            .arg("-L")
            .arg("-A")
            .arg(d.export.path())
            .args(extra)
            .arg(d.addr())
            .arg(&dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn 9pfuse");
        let mut m = Mount {
            child,
            dir,
            _tmp: tmp,
        };
        let start = Instant::now();
        while !mounted(&m.dir) {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("9pfuse -L exited: {st}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "9pfuse -L did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if mounted(&self.dir) {
            if let Ok(c) = std::ffi::CString::new(self.dir.to_string_lossy().as_bytes()) {
                // SAFETY: detaching a mount of ours by path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn exercise(d: &Diod, m: &Mount) {
    // Create, write at offsets, fsync, append, truncate.
    let mut f = std::fs::File::create(m.p("f")).expect("create");
    f.write_all(b"hello, world\n").expect("write");
    f.seek(SeekFrom::Start(7)).expect("seek");
    f.write_all(b"there").expect("write at offset");
    f.sync_all().expect("fsync");
    drop(f);
    assert_eq!(
        std::fs::read_to_string(d.host("f")).expect("host read"),
        "hello, there\n"
    );
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(m.p("f"))
        .expect("open append");
    f.write_all(b"more\n").expect("append");
    drop(f);
    assert_eq!(
        std::fs::read_to_string(m.p("f")).expect("read"),
        "hello, there\nmore\n"
    );
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("f"))
        .expect("open");
    f.set_len(5).expect("truncate");
    drop(f);
    assert_eq!(std::fs::read_to_string(m.p("f")).expect("read"), "hello");
    // A hole past the end reads as zeros.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(m.p("f"))
        .expect("open");
    f.seek(SeekFrom::Start(10)).expect("seek");
    f.write_all(b"!").expect("write past the end");
    drop(f);
    assert_eq!(
        std::fs::read(m.p("f")).expect("read"),
        b"hello\0\0\0\0\0!".to_vec()
    );
    // Modes, owners and times as the host has them, to the nanosecond.
    std::fs::set_permissions(m.p("f"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let hm = std::fs::metadata(d.host("f")).expect("host stat");
    assert_eq!(hm.mode() & 0o7777, 0o640);
    let when = SystemTime::UNIX_EPOCH + Duration::new(1_600_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(m.p("f"))
        .expect("open")
        .set_modified(when)
        .expect("utimens");
    let mm = std::fs::metadata(m.p("f")).expect("stat");
    let hm = std::fs::metadata(d.host("f")).expect("host stat");
    assert_eq!(hm.modified().expect("mtime"), when);
    assert_eq!(mm.modified().expect("mtime"), when);
    assert_eq!(
        (mm.uid(), mm.gid(), mm.len()),
        (hm.uid(), hm.gid(), hm.len())
    );
    assert_eq!(mm.ino(), hm.ino() + 2, "inode numbers follow qid.path");
    // Symbolic and hard links.
    std::os::unix::fs::symlink("f", m.p("sym")).expect("symlink");
    assert_eq!(
        std::fs::read_link(m.p("sym")).expect("readlink"),
        PathBuf::from("f")
    );
    assert_eq!(
        std::fs::read_link(d.host("sym")).expect("host readlink"),
        PathBuf::from("f")
    );
    assert_eq!(
        std::fs::read(m.p("sym")).expect("through the link").len(),
        11
    );
    assert!(
        std::fs::symlink_metadata(m.p("sym"))
            .expect("lstat")
            .file_type()
            .is_symlink()
    );
    std::fs::hard_link(m.p("f"), m.p("hard")).expect("link");
    assert_eq!(std::fs::metadata(m.p("f")).expect("stat").nlink(), 2);
    assert_eq!(std::fs::metadata(d.host("hard")).expect("stat").nlink(), 2);
    // A FIFO.
    let fifo = std::ffi::CString::new(m.p("fifo").to_string_lossy().as_bytes()).expect("path");
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &std::fs::metadata(d.host("fifo"))
            .expect("host stat")
            .file_type()
    ));
    // Directories; renames in one directory and across directories.
    std::fs::create_dir_all(m.p("a/b")).expect("mkdir -p");
    std::fs::write(m.p("a/b/x"), "x").expect("write");
    std::fs::rename(m.p("a/b/x"), m.p("a/y")).expect("rename across directories");
    assert_eq!(
        std::fs::read_to_string(d.host("a/y")).expect("host read"),
        "x"
    );
    std::fs::write(m.p("a/z"), "z").expect("write");
    std::fs::rename(m.p("a/z"), m.p("a/y")).expect("rename onto a file");
    assert_eq!(std::fs::read_to_string(m.p("a/y")).expect("read"), "z");
    std::fs::rename(m.p("a"), m.p("c")).expect("rename a directory");
    assert_eq!(std::fs::read_to_string(m.p("c/y")).expect("read"), "z");
    assert_eq!(names(&m.dir), names(d.export.path()));
    // Errors are the server's errnos.
    let e = std::fs::read(m.p("nosuch")).expect_err("missing file");
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    let e = std::fs::remove_dir(m.p("c")).expect_err("non-empty directory");
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    let e = std::fs::remove_file(m.p("c")).expect_err("unlink of a directory");
    assert_eq!(e.raw_os_error(), Some(libc::EISDIR));
    let e = std::fs::create_dir(m.p("c")).expect_err("mkdir of an existing name");
    assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    std::fs::remove_dir_all(m.p("c")).expect("rm -r");
    assert!(!d.host("c").exists());
    // statfs is the host file system's.
    let mut sf: libc::statvfs = unsafe { std::mem::zeroed() };
    let dir = std::ffi::CString::new(m.dir.to_string_lossy().as_bytes()).expect("path");
    // SAFETY: a valid path and a statvfs to fill.
    assert_eq!(
        unsafe { libc::statvfs(dir.as_ptr(), &mut sf) },
        0,
        "statvfs"
    );
    assert!(sf.f_blocks > 0 && sf.f_bsize > 0);
    // 10,000 entries (made on the host, to keep the test short), listed the same
    // through the mount.
    std::fs::create_dir(m.p("many")).expect("mkdir");
    for i in 0..10_000 {
        std::fs::File::create(d.host(&format!("many/e{i:05}"))).expect("create");
    }
    let listed = names(&m.p("many"));
    assert_eq!(listed.len(), 10_000);
    assert_eq!(listed, names(&d.host("many")));
    // Many files open at once, and writers at once into one file.
    let mut open = Vec::new();
    for i in 0..200 {
        open.push(std::fs::File::create(m.p(&format!("o{i}"))).expect("create"));
    }
    for (i, f) in open.iter_mut().enumerate() {
        f.write_all(format!("{i}").as_bytes()).expect("write");
    }
    drop(open);
    for i in 0..200 {
        assert_eq!(
            std::fs::read_to_string(m.p(&format!("o{i}"))).expect("read"),
            format!("{i}")
        );
    }
    let shared = std::fs::File::create(m.p("shared")).expect("create");
    shared.set_len(8 * 65536).expect("size");
    let writers: Vec<_> = (0..8u8)
        .map(|w| {
            let path = m.p("shared");
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .expect("open");
                for k in 0..16u64 {
                    f.seek(SeekFrom::Start(w as u64 * 65536 + k * 4096))
                        .expect("seek");
                    f.write_all(&[w + 1; 4096]).expect("write");
                }
            })
        })
        .collect();
    for w in writers {
        w.join().expect("writer");
    }
    let got = std::fs::read(d.host("shared")).expect("host read");
    for w in 0..8usize {
        assert!(
            got[w * 65536..w * 65536 + 65536]
                .iter()
                .all(|&b| b == w as u8 + 1)
        );
    }
    // A bigger file, read through in pieces.
    let big: Vec<u8> = (0..(3 << 20) + 1234)
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(m.p("big"), &big).expect("write big");
    let mut got = Vec::new();
    std::fs::File::open(m.p("big"))
        .expect("open")
        .read_to_end(&mut got)
        .expect("read big");
    assert!(got == big, "the big file read back differs");
    assert!(std::fs::read(d.host("big")).expect("host read") == big);
}

#[test]
fn diod_through_fuse_l() {
    if !peers_here() {
        return;
    }
    let d = Diod::start_tcp();
    let m = Mount::new(&d, &[]);
    exercise(&d, &m);
}

/// With `-c` the kernel keeps attributes, and listings carry them (readdirplus): a
/// listing with every file's attributes matches the host's.
#[test]
fn diod_cached_listing() {
    if !peers_here() {
        return;
    }
    let d = Diod::start_unix();
    for i in 0..2_000 {
        std::fs::write(d.host(&format!("f{i}")), vec![b'x'; i % 97]).expect("write");
    }
    let m = Mount::new(&d, &["-c"]);
    let mut seen = 0;
    for e in std::fs::read_dir(&m.dir).expect("readdir") {
        let e = e.expect("entry");
        let md = e.metadata().expect("stat");
        let hm = std::fs::metadata(d.host(&e.file_name().to_string_lossy())).expect("host stat");
        assert_eq!(
            (md.len(), md.mode(), md.ino()),
            (hm.len(), hm.mode(), hm.ino() + 2)
        );
        seen += 1;
    }
    assert_eq!(seen, 2_000);
    // A directory renamed under files listed and used: found under the new name.
    std::fs::create_dir(m.p("d")).expect("mkdir");
    std::fs::write(m.p("d/x"), "x").expect("write");
    assert_eq!(std::fs::read_dir(m.p("d")).expect("readdir").count(), 1);
    assert_eq!(std::fs::metadata(m.p("d/x")).expect("stat").len(), 1);
    std::fs::rename(m.p("d"), m.p("e")).expect("rename directory");
    assert_eq!(
        std::fs::read_to_string(m.p("e/x")).expect("read moved"),
        "x"
    );
    std::fs::write(m.p("e/x"), "xy").expect("write moved");
    assert_eq!(std::fs::metadata(m.p("e/x")).expect("stat moved").len(), 2);
    assert_eq!(
        std::fs::read_to_string(d.host("e/x")).expect("host read"),
        "xy"
    );
    // Changed through the mount, seen through it at once.
    std::fs::write(m.p("f5"), "changed").expect("write");
    assert_eq!(std::fs::metadata(m.p("f5")).expect("stat").len(), 7);
    assert_eq!(std::fs::read_to_string(m.p("f5")).expect("read"), "changed");
}

/// When diod goes, 9pfuse says so, unmounts and exits; nothing hangs.
#[test]
fn diod_gone_takes_the_mount_down() {
    if !peers_here() {
        return;
    }
    let mut d = Diod::start_unix();
    let mut m = Mount::new(&d, &[]);
    std::fs::write(m.p("f"), "x").expect("write");
    let _ = d.child.kill();
    let _ = d.child.wait();
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = m.child.try_wait() {
            assert!(!st.success(), "9pfuse exit status {st:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "9pfuse -L did not notice the server going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!mounted(&m.dir), "the mount stayed");
}

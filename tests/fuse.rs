//! 9pfuse: ramfs and exportfs mounted through FUSE, used with ordinary file calls; a
//! server that goes away takes the mount with it.

mod common;

use common::*;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NINEPFUSE: &str = env!("CARGO_BIN_EXE_9pfuse");

/// Is `dir` a mount point (a FUSE one)?
fn mounted(dir: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let d = dir.to_string_lossy();
    m.lines()
        .any(|l| l.split(' ').nth(4) == Some(&*d) && l.contains("fuse"))
}

/// A running 9pfuse, stopped and unmounted when dropped.
struct Mount {
    child: Child,
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Mount {
    fn new(ns: &Ns, addr: &str, extra: &[&str]) -> Option<Mount> {
        if !Path::new("/dev/fuse").exists() {
            if std::env::var("NINESPACE_REQUIRE_PEERS").as_deref() == Ok("1") {
                panic!("/dev/fuse is missing");
            }
            eprintln!("skipped: no /dev/fuse");
            return None;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("m");
        std::fs::create_dir(&dir).expect("mkdir");
        let child = ns
            .cmd(NINEPFUSE)
            .args(extra)
            .arg(addr)
            .arg(&dir)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn 9pfuse");
        let m = Mount {
            child,
            dir,
            _tmp: tmp,
        };
        let start = Instant::now();
        while !mounted(&m.dir) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "9pfuse did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
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
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.dir)
                .status();
            if let Ok(c) = std::ffi::CString::new(self.dir.to_string_lossy().as_bytes()) {
                // SAFETY: detaching a mount of ours by path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
    }
}

/// Everything a program does with files, through the mount.
fn exercise(m: &Mount) {
    // Create, write at offsets, read back.
    let mut f = std::fs::File::create(m.p("f")).expect("create");
    f.write_all(b"hello, world\n").expect("write");
    f.seek(SeekFrom::Start(7)).expect("seek");
    f.write_all(b"there").expect("write at offset");
    f.sync_all().expect("fsync");
    drop(f);
    assert_eq!(
        std::fs::read_to_string(m.p("f")).expect("read"),
        "hello, there\n"
    );
    // Append, truncate.
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
    assert_eq!(std::fs::metadata(m.p("f")).expect("stat").len(), 5);
    // Directories, listing, rename, remove.
    std::fs::create_dir(m.p("d")).expect("mkdir");
    for i in 0..50 {
        std::fs::write(m.p(&format!("d/x{i}")), format!("{i}")).expect("write");
    }
    let mut names: Vec<String> = std::fs::read_dir(m.p("d"))
        .expect("readdir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 50);
    assert!(names.contains(&"x7".to_string()));
    std::fs::rename(m.p("d/x7"), m.p("d/y7")).expect("rename");
    assert_eq!(
        std::fs::read_to_string(m.p("d/y7")).expect("read renamed"),
        "7"
    );
    assert!(!m.p("d/x7").exists());
    // Across directories: not 9P's, EXDEV (mv copies instead).
    let e = std::fs::rename(m.p("d/y7"), m.p("y7")).expect_err("cross-directory rename");
    assert_eq!(e.raw_os_error(), Some(libc::EXDEV));
    // Errors map to errnos.
    let e = std::fs::read(m.p("nosuch")).expect_err("missing file");
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    let e = std::fs::remove_dir(m.p("d")).expect_err("non-empty directory");
    assert!(e.raw_os_error().is_some());
    for i in 0..50 {
        let n = if i == 7 {
            "d/y7".to_string()
        } else {
            format!("d/x{i}")
        };
        std::fs::remove_file(m.p(&n)).expect("unlink");
    }
    std::fs::remove_dir(m.p("d")).expect("rmdir");
    std::fs::remove_file(m.p("f")).expect("unlink");
    assert_eq!(std::fs::read_dir(&m.dir).expect("readdir").count(), 0);
    // A bigger file read straight through in pieces (reads are started early) and
    // then changed in the middle through the same handle.
    let big: Vec<u8> = (0..(3 << 20) + 1234)
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    std::fs::write(m.p("big"), &big).expect("write big");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("big"))
        .expect("open big");
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        let n = f.read(&mut buf).expect("read big");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.len() == 1 << 20 {
            // Change what the next reads will see.
            f.write_all(&[0xaa; 100]).expect("write in the middle");
            f.seek(SeekFrom::Start(1 << 20)).expect("seek back");
        }
    }
    let mut want = big.clone();
    want[1 << 20..(1 << 20) + 100].fill(0xaa);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "the file read back differs");
    drop(f);
    std::fs::remove_file(m.p("big")).expect("unlink big");
    // Many files open at once.
    let mut open = Vec::new();
    for i in 0..100 {
        let mut f = std::fs::File::create(m.p(&format!("o{i}"))).expect("create");
        f.write_all(format!("{i}").as_bytes()).expect("write");
        open.push(f);
    }
    drop(open);
    for i in 0..100 {
        let mut s = String::new();
        std::fs::File::open(m.p(&format!("o{i}")))
            .expect("open")
            .read_to_string(&mut s)
            .expect("read");
        assert_eq!(s, format!("{i}"));
    }
}

#[test]
fn ramfs_through_fuse() {
    let ns = Ns::new();
    let _srv = start_posted(&ns, RAMFS, "ram", &[]);
    let Some(m) = Mount::new(&ns, "ram", &[]) else {
        return;
    };
    exercise(&m);
}

#[test]
fn exportfs_through_fuse() {
    let ns = Ns::new();
    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path().to_string_lossy().into_owned();
    let _srv = start_posted(&ns, EXPORTFS, "exp", &[&root]);
    let Some(m) = Mount::new(&ns, "exp", &[]) else {
        return;
    };
    exercise(&m);
    // What went through the mount is on the disk.
    std::fs::write(m.p("ondisk"), "via fuse").expect("write");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("ondisk")).expect("read"),
        "via fuse"
    );
}

/// When the server goes, 9pfuse says so, unmounts and exits; nothing hangs.
#[test]
fn server_gone_takes_the_mount_down() {
    let ns = Ns::new();
    let mut srv = start_posted(&ns, RAMFS, "ram", &[]);
    let Some(mut m) = Mount::new(&ns, "ram", &[]) else {
        return;
    };
    std::fs::write(m.p("f"), "x").expect("write");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(srv.pid(), libc::SIGKILL) };
    let _ = srv.child.wait();
    // What a program asks of the mount now fails (EIO from the bridge, or ENOTCONN or
    // ENOENT once it is gone, or ECONNABORTED as it goes), and at once: a thread asks, and must hear back within
    // a second.
    let (tx, rx) = std::sync::mpsc::channel();
    let f = m.p("f");
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(&f).map(|_| ()));
    });
    match rx.recv_timeout(Duration::from_secs(1)) {
        Ok(r) => {
            let e = r.expect_err("a read of a mount whose server is gone");
            assert!(
                matches!(
                    e.raw_os_error(),
                    Some(libc::EIO | libc::ENOTCONN | libc::ENOENT | libc::ECONNABORTED)
                ),
                "{e}"
            );
        }
        Err(_) => panic!("a read through the mount hung after the server went"),
    }
    let start = Instant::now();
    loop {
        if let Ok(Some(st)) = m.child.try_wait() {
            assert!(!st.success(), "9pfuse exit status {st:?}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "9pfuse did not notice the server going"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!mounted(&m.dir), "the mount stayed");
}

/// A server that answers the version and attach properly, then sends garbage: 9pfuse
/// reports it and unmounts (or never mounts); nothing hangs.
#[test]
fn garbage_from_the_server() {
    use lib9::fcall::{self, Fcall, Msg, QTDIR, Qid, Stat};
    let ns = Ns::new();
    let sock = ns.svc("junk");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let server = std::thread::spawn(move || {
        let Ok((mut s, _)) = listener.accept() else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut answered = 0;
        loop {
            let mut len = [0u8; 4];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let n = u32::from_le_bytes(len) as usize;
            let mut rest = vec![0u8; n.saturating_sub(4)];
            if s.read_exact(&mut rest).is_err() {
                return;
            }
            let mut frame = len.to_vec();
            frame.extend(rest);
            let Ok(m) = fcall::decode(bytes::Bytes::from(frame), fcall::MAX_MSIZE) else {
                return;
            };
            let root = Qid {
                ty: QTDIR,
                vers: 0,
                path: 1,
            };
            let reply = match (&m.body, answered) {
                (Fcall::Tversion { msize, .. }, _) => Fcall::Rversion {
                    msize: *msize,
                    version: "9P2000".into(),
                },
                (Fcall::Tattach { .. }, _) => Fcall::Rattach { qid: root },
                (Fcall::Tstat { .. }, 0) => {
                    answered += 1;
                    Fcall::Rstat {
                        stat: Stat {
                            ty: 0,
                            dev: 0,
                            qid: root,
                            mode: fcall::DMDIR | 0o755,
                            atime: 0,
                            mtime: 0,
                            length: 0,
                            name: "/".into(),
                            uid: "u".into(),
                            gid: "u".into(),
                            muid: "u".into(),
                        },
                    }
                }
                _ => {
                    // A reply of a made-up type, and then more nonsense.
                    let _ = s.write_all(&[9, 0, 0, 0, 0xee, 0, 0, 1, 2]);
                    let _ = s.write_all(b"\xff\xff\xff\x7fjunk");
                    return;
                }
            };
            let Ok(b) = Msg::new(m.tag, reply).to_bytes() else {
                return;
            };
            if s.write_all(&b).is_err() {
                return;
            }
        }
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("m");
    std::fs::create_dir(&dir).expect("mkdir");
    let mut child = ns
        .cmd(NINEPFUSE)
        .arg("junk")
        .arg(&dir)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Whatever the kernel asks first gets garbage back; then 9pfuse must end.
    let start = Instant::now();
    let status = loop {
        // Touch the mount (if it is there) so that requests reach the server.
        let d = dir.clone();
        std::thread::spawn(move || {
            let _ = std::fs::read_dir(&d).map(|r| r.count());
        });
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if start.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            if let Ok(c) = std::ffi::CString::new(dir.to_string_lossy().as_bytes()) {
                // SAFETY: detaching our own mount.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            panic!("9pfuse did not end after garbage from the server");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    assert!(err.starts_with("9pfuse: junk:"), "{err:?}");
    assert!(!mounted(&dir), "the mount stayed");
    let _ = server.join();
}

/// With `-c` a listing carries every entry's attributes (readdirplus, from the stats a
/// 9P directory read returns) and the files are walked only when used: attributes,
/// reads, renames and removals of listed files all reach the right file.
#[test]
fn cached_listing_then_use() {
    use std::os::unix::fs::MetadataExt;
    let ns = Ns::new();
    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path().to_string_lossy().into_owned();
    std::fs::create_dir(tree.path().join("d")).expect("mkdir");
    for i in 0..1_000 {
        std::fs::write(tree.path().join(format!("d/f{i}")), vec![b'x'; i % 53]).expect("write");
    }
    let _srv = start_posted(&ns, EXPORTFS, "exp", &[&root]);
    let Some(m) = Mount::new(&ns, "exp", &["-c"]) else {
        return;
    };
    let mut seen = 0;
    for e in std::fs::read_dir(m.p("d")).expect("readdir") {
        let e = e.expect("entry");
        let name = e.file_name().to_string_lossy().into_owned();
        let md = e.metadata().expect("stat");
        let host = std::fs::metadata(tree.path().join("d").join(&name)).expect("host stat");
        assert_eq!(md.len(), host.len(), "{name}");
        assert_eq!(md.mode() & 0o777, host.mode() & 0o777, "{name}");
        seen += 1;
    }
    assert_eq!(seen, 1_000);
    // Listed, not yet walked: read, renamed, then read by the new name, removed.
    assert_eq!(std::fs::read(m.p("d/f52")).expect("read").len(), 52);
    std::fs::rename(m.p("d/f7"), m.p("d/g7")).expect("rename");
    assert_eq!(std::fs::read(m.p("d/g7")).expect("read renamed").len(), 7);
    std::fs::write(m.p("d/g7"), "new").expect("write renamed");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("d/g7")).expect("host read"),
        "new"
    );
    std::fs::remove_file(m.p("d/f9")).expect("unlink");
    assert!(!tree.path().join("d/f9").exists());
    // A second listing sees the changes.
    let n = std::fs::read_dir(m.p("d")).expect("readdir").count();
    assert_eq!(n, 999);
    // Rename a listed file that was never used, then use it by its new name.
    let _ = std::fs::read_dir(m.p("d")).expect("readdir").count();
    std::fs::rename(m.p("d/f11"), m.p("d/h11")).expect("rename");
    assert_eq!(
        std::fs::metadata(m.p("d/h11")).expect("stat renamed").len(),
        11
    );
    assert_eq!(std::fs::read(m.p("d/h11")).expect("read renamed").len(), 11);
    // The directory renamed under files already used and listed: they are found
    // under the new name.
    std::fs::rename(m.p("d"), m.p("e")).expect("rename directory");
    assert_eq!(std::fs::read(m.p("e/f52")).expect("read moved").len(), 52);
    assert_eq!(
        std::fs::read_to_string(m.p("e/g7")).expect("read moved"),
        "new"
    );
    assert_eq!(
        std::fs::metadata(m.p("e/f40")).expect("stat moved").len(),
        40
    );
    std::fs::write(m.p("e/f41"), "41").expect("write moved");
    assert_eq!(
        std::fs::read_to_string(tree.path().join("e/f41")).expect("host read"),
        "41"
    );
}

/// Files of length 0 whose contents are made when read (here /proc's, through
/// exportfs) are read from the server even with `-c`.
#[test]
fn cached_mount_reads_synthetic_files() {
    let ns = Ns::new();
    let _srv = start_posted(&ns, EXPORTFS, "proc", &["/proc/sys/kernel"]);
    let Some(m) = Mount::new(&ns, "proc", &["-c"]) else {
        return;
    };
    assert_eq!(std::fs::metadata(m.p("ostype")).expect("stat").len(), 0);
    assert_eq!(
        std::fs::read_to_string(m.p("ostype")).expect("read"),
        std::fs::read_to_string("/proc/sys/kernel/ostype").expect("host read")
    );
}

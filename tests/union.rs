//! The union directory server (srv::union), mounted in this process over a temporary
//! directory and used with ordinary file calls: lookup order, merged listings, where
//! creation goes, no merging below the top, pass-through of everything else.
//!
//! Every mount has a watchdog: a test that hangs is detached and the process exits,
//! rather than hanging the run.

use fuser::BackgroundSession;
use proptest::prelude::*;
use srv::union::{self, Member, Union};
use std::collections::HashSet;
use std::ffi::CString;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long one mounted test may take before it is torn down.
const WATCHDOG: Duration = Duration::from_secs(180);

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL")
}

fn detach(dir: &Path) {
    let c = cstr(dir);
    // SAFETY: detaching a mount of ours by path.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Our mount at `dir`, if any: its mount source and type.
fn mount_entry(dir: &Path) -> Option<(String, String)> {
    let m = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want = dir.to_string_lossy();
    m.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        let dash = f.iter().position(|&x| x == "-")?;
        if unescape_mountinfo(f.get(4)?) != want {
            return None;
        }
        Some((
            unescape_mountinfo(f.get(dash + 2)?),
            f.get(dash + 1)?.to_string(),
        ))
    })
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn dirfd(p: &Path) -> OwnedFd {
    OwnedFd::from(std::fs::File::open(p).expect("open member"))
}

fn member(p: &Path, create: bool) -> Member {
    Member {
        dir: dirfd(p),
        create,
        label: p.to_string_lossy().into_owned(),
    }
}

/// A union mounted at `dir`, unmounted when dropped.
struct Mounted {
    dir: PathBuf,
    session: Option<BackgroundSession>,
    done: Option<mpsc::Sender<()>>,
}

impl Mounted {
    fn p(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

fn fuse_available() -> bool {
    if Path::new("/dev/fuse").exists() {
        return true;
    }
    if std::env::var("NINESPACE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("/dev/fuse is missing");
    }
    eprintln!("skipped: no /dev/fuse");
    false
}

fn mount(members: Vec<Member>, dir: &Path) -> Mounted {
    let src = union::source(std::process::id(), &members);
    let cfg = union::config(&src);
    let u = Union::new(members);
    let session = fuser::Session::new(u, dir, &cfg)
        .and_then(|s| s.spawn())
        .expect("mount union");
    let (tx, rx) = mpsc::channel::<()>();
    let d = dir.to_path_buf();
    std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(WATCHDOG) {
            eprintln!("watchdog: union test at {} hung; detaching", d.display());
            detach(&d);
            std::process::exit(3);
        }
    });
    let start = Instant::now();
    while mount_entry(dir).is_none_or(|(_, t)| t != "fuse.union") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "union did not mount"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Mounted {
        dir: dir.to_path_buf(),
        session: Some(session),
        done: Some(tx),
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        detach(&self.dir);
        if let Some(s) = self.session.take() {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let _ = s.join();
                let _ = tx.send(());
            });
            if rx.recv_timeout(Duration::from_secs(10)).is_err() {
                eprintln!("union session did not end within 10 s");
            }
        }
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

/// A temporary tree: member directories `m0`, `m1`, ... and the mount point `u`.
struct Tree {
    tmp: tempfile::TempDir,
}

impl Tree {
    fn new(n: usize) -> Tree {
        let tmp = tempfile::tempdir().expect("tempdir");
        for i in 0..n {
            std::fs::create_dir(tmp.path().join(format!("m{i}"))).expect("mkdir member");
        }
        std::fs::create_dir(tmp.path().join("u")).expect("mkdir u");
        Tree { tmp }
    }
    fn m(&self, i: usize) -> PathBuf {
        self.tmp.path().join(format!("m{i}"))
    }
    fn u(&self) -> PathBuf {
        self.tmp.path().join("u")
    }
}

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .expect("read_dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

fn mkfifo(p: &Path) -> std::io::Result<()> {
    let c = cstr(p);
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[test]
fn lookup_goes_through_members_in_order() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    write(&t.m(0).join("x"), "zero");
    write(&t.m(1).join("x"), "one");
    write(&t.m(1).join("only1"), "only one");
    {
        let u = mount(vec![member(&t.m(0), false), member(&t.m(1), false)], &t.u());
        assert_eq!(read(&u.p("x")), "zero");
        assert_eq!(read(&u.p("only1")), "only one");
        assert_eq!(
            std::fs::metadata(u.p("nothing"))
                .map_err(|e| e.kind())
                .err(),
            Some(ErrorKind::NotFound)
        );
        // The mount table names us and our members.
        let (src, ty) = mount_entry(&u.dir).expect("in mountinfo");
        assert_eq!(ty, "fuse.union");
        let (pid, ms) = union::parse_source(&src).expect("our source");
        assert_eq!(pid, std::process::id());
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[1].2, t.m(1).to_string_lossy());
    }
    // bind -b is the other order: the same server, members the other way.
    let u = mount(vec![member(&t.m(1), false), member(&t.m(0), false)], &t.u());
    assert_eq!(read(&u.p("x")), "one");
}

#[test]
fn listing_merges_members_first_wins() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(3);
    write(&t.m(0).join("x"), "file");
    std::fs::create_dir(t.m(0).join("d")).expect("mkdir");
    std::fs::create_dir(t.m(1).join("x")).expect("mkdir");
    write(&t.m(1).join("y"), "y");
    std::os::unix::fs::symlink("y", t.m(2).join("s")).expect("symlink");
    write(&t.m(2).join("d"), "hidden");
    let u = mount(
        vec![
            member(&t.m(0), false),
            member(&t.m(1), false),
            member(&t.m(2), false),
        ],
        &t.u(),
    );
    assert_eq!(names(&u.dir), ["d", "s", "x", "y"]);
    for e in std::fs::read_dir(&u.dir).expect("read_dir") {
        let e = e.expect("entry");
        let ft = e.file_type().expect("type");
        match e.file_name().to_str() {
            Some("x") => assert!(ft.is_file(), "x is member 0's file"),
            Some("d") => assert!(ft.is_dir(), "d is member 0's directory"),
            Some("s") => assert!(ft.is_symlink()),
            _ => {}
        }
    }
    assert!(std::fs::metadata(u.p("x")).expect("stat").is_file());
    assert_eq!(read(&u.p("s")), "y");
    assert_eq!(
        std::fs::read_link(u.p("s")).expect("readlink"),
        Path::new("y")
    );
    // The top's attributes are the first member's.
    let top = std::fs::metadata(&u.dir).expect("stat top");
    let m0 = std::fs::metadata(t.m(0)).expect("stat m0");
    assert_eq!(top.mode(), m0.mode());
    assert_eq!(top.mtime(), m0.mtime());
    // `ls -l` (readdirplus) agrees.
    let out = Command::new("ls")
        .arg("-la")
        .arg(&u.dir)
        .output()
        .expect("ls");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with('-') && l.ends_with(" x")),
        "{text}"
    );
}

#[test]
fn creation_goes_to_first_create_member() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(3);
    let u = mount(
        vec![
            member(&t.m(0), false),
            member(&t.m(1), true),
            member(&t.m(2), true),
        ],
        &t.u(),
    );
    write(&u.p("f"), "new");
    std::fs::create_dir(u.p("dir")).expect("mkdir");
    std::os::unix::fs::symlink("f", u.p("sl")).expect("symlink");
    mkfifo(&u.p("fifo")).expect("mkfifo");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(u.p("excl"))
        .expect("O_EXCL create");
    f.write_all(b"x").expect("write");
    drop(f);
    for n in ["f", "dir", "sl", "fifo", "excl"] {
        assert!(
            t.m(1).join(n).symlink_metadata().is_ok(),
            "{n} in the create member"
        );
        assert!(
            t.m(0).join(n).symlink_metadata().is_err(),
            "{n} not in member 0"
        );
        assert!(
            t.m(2).join(n).symlink_metadata().is_err(),
            "{n} not in member 2"
        );
    }
    assert_eq!(read(&t.m(1).join("f")), "new");
    assert!(
        t.m(1)
            .join("fifo")
            .symlink_metadata()
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert!(t.m(1).join("dir").is_dir());
    assert_eq!(read(&u.p("sl")), "new");
    // A new name below the top is in that directory, wherever it is.
    write(&u.p("dir/inner"), "in");
    assert_eq!(read(&t.m(1).join("dir/inner")), "in");
    // Modes asked for are the modes made (our own umask takes nothing away).
    std::fs::create_dir(u.p("m")).expect("mkdir");
    std::fs::set_permissions(u.p("m"), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    assert_eq!(
        std::fs::metadata(t.m(1).join("m")).expect("stat").mode() & 0o777,
        0o777
    );
    // O_CREAT of an existing name opens it where it is, as Plan 9 does.
    write(&t.m(0).join("old"), "before");
    write(&u.p("old"), "after");
    assert_eq!(read(&t.m(0).join("old")), "after");
    assert!(t.m(1).join("old").symlink_metadata().is_err());
}

#[test]
fn no_create_member_forbids_creation() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    write(&t.m(0).join("a"), "a");
    std::fs::create_dir(t.m(1).join("sub")).expect("mkdir");
    let u = mount(vec![member(&t.m(0), false), member(&t.m(1), false)], &t.u());
    let e = std::fs::write(u.p("f"), "x").expect_err("create");
    assert_eq!(errno(&e), libc::EPERM, "create: {e}");
    let e = std::fs::create_dir(u.p("d")).expect_err("mkdir");
    assert_eq!(errno(&e), libc::EPERM, "mkdir: {e}");
    let e = std::os::unix::fs::symlink("a", u.p("s")).expect_err("symlink");
    assert_eq!(errno(&e), libc::EPERM, "symlink: {e}");
    let e = mkfifo(&u.p("p")).expect_err("mkfifo");
    assert_eq!(errno(&e), libc::EPERM, "mkfifo: {e}");
    let e = std::fs::hard_link(u.p("a"), u.p("h")).expect_err("link");
    assert_eq!(errno(&e), libc::EPERM, "link: {e}");
    assert_eq!(names(&t.m(0)), ["a"]);
    assert_eq!(names(&t.m(1)), ["sub"]);
    // Existing files still change, and subdirectories are ordinary directories.
    write(&u.p("a"), "changed");
    assert_eq!(read(&t.m(0).join("a")), "changed");
    write(&u.p("sub/new"), "ok");
    assert_eq!(read(&t.m(1).join("sub/new")), "ok");
}

/// Can this process write into a directory that forbids it (root, or CAP_DAC_OVERRIDE)?
fn overrides_permissions(dir: &Path) -> bool {
    let p = dir.join("probe");
    let r = std::fs::write(&p, "");
    let _ = std::fs::remove_file(&p);
    r.is_ok()
}

#[test]
fn create_in_unwritable_member_fails_without_falling_through() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(3);
    // Mode 0555: EACCES, for those the permission bits bind.
    std::fs::set_permissions(t.m(1), std::fs::Permissions::from_mode(0o555)).expect("chmod");
    if overrides_permissions(&t.m(1)) {
        eprintln!("note: privileged, mode 0555 does not stop us; checking EROFS only");
    } else {
        let u = mount(
            vec![
                member(&t.m(0), false),
                member(&t.m(1), true),
                member(&t.m(2), true),
            ],
            &t.u(),
        );
        let e = std::fs::write(u.p("f"), "x").expect_err("create");
        assert_eq!(errno(&e), libc::EACCES, "{e}");
        let e = std::fs::create_dir(u.p("d")).expect_err("mkdir");
        assert_eq!(errno(&e), libc::EACCES, "{e}");
        drop(u);
        assert!(names(&t.m(2)).is_empty(), "fell through to member 2");
    }
    std::fs::set_permissions(t.m(1), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A read-only bind mount: EROFS, whoever we are.
    let ro = t.tmp.path().join("ro");
    std::fs::create_dir(&ro).expect("mkdir");
    let (src, dst) = (cstr(&t.m(1)), cstr(&ro));
    // SAFETY: NUL-terminated paths; a bind mount of our own temporary directory.
    let bound = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) == 0
            && libc::mount(
                std::ptr::null(),
                dst.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                std::ptr::null(),
            ) == 0
    };
    if !bound {
        eprintln!("note: no read-only bind mount here; EROFS not checked");
        detach(&ro);
        return;
    }
    {
        let u = mount(
            vec![
                member(&t.m(0), false),
                member(&ro, true),
                member(&t.m(2), true),
            ],
            &t.u(),
        );
        let e = std::fs::write(u.p("f"), "x").expect_err("create");
        assert_eq!(errno(&e), libc::EROFS, "{e}");
        let e = std::fs::create_dir(u.p("d")).expect_err("mkdir");
        assert_eq!(errno(&e), libc::EROFS, "{e}");
    }
    detach(&ro);
    assert!(names(&t.m(2)).is_empty(), "fell through to member 2");
    assert!(names(&t.m(1)).is_empty());
}

#[test]
fn subdirectories_are_not_merged() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    std::fs::create_dir(t.m(0).join("sub")).expect("mkdir");
    std::fs::create_dir(t.m(1).join("sub")).expect("mkdir");
    write(&t.m(0).join("sub/a"), "a");
    write(&t.m(1).join("sub/b"), "b");
    let u = mount(vec![member(&t.m(0), false), member(&t.m(1), true)], &t.u());
    assert_eq!(names(&u.p("sub")), ["a"]);
    assert!(u.p("sub/b").symlink_metadata().is_err());
    // Creating in a subdirectory goes to that subdirectory, in member 0.
    write(&u.p("sub/c"), "c");
    assert!(t.m(0).join("sub/c").exists());
    assert!(!t.m(1).join("sub/c").exists());
    // `..` of a subdirectory is the union again, not the member's parent.
    let up = u.p("sub/..");
    assert_eq!(
        std::fs::metadata(&up).expect("stat ..").ino(),
        std::fs::metadata(&u.dir).expect("stat top").ino()
    );
    assert_eq!(names(&up), ["sub"]);
}

#[test]
fn member_can_be_the_covered_directory() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(1);
    let covered = t.u();
    write(&covered.join("old"), "old contents");
    let fd = dirfd(&covered);
    let u = mount(
        vec![
            Member {
                dir: fd,
                create: false,
                label: covered.to_string_lossy().into_owned(),
            },
            member(&t.m(0), true),
        ],
        &covered,
    );
    assert_eq!(read(&u.p("old")), "old contents");
    write(&u.p("new"), "new");
    assert_eq!(names(&u.dir), ["new", "old"]);
    write(&u.p("old"), "changed");
    drop(u);
    assert_eq!(read(&covered.join("old")), "changed");
    assert_eq!(read(&t.m(0).join("new")), "new");
}

fn stat_times(p: &Path) -> (i64, i64) {
    let m = std::fs::symlink_metadata(p).expect("stat");
    (m.atime(), m.mtime())
}

#[test]
fn files_behave_as_in_the_member() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    std::fs::create_dir(t.m(1).join("d")).expect("mkdir");
    let u = mount(vec![member(&t.m(0), true), member(&t.m(1), false)], &t.u());
    // Write, write at an offset, append, truncate.
    let mut f = std::fs::File::create(u.p("f")).expect("create");
    f.write_all(b"hello, world\n").expect("write");
    f.seek(SeekFrom::Start(7)).expect("seek");
    f.write_all(b"there").expect("write at");
    f.sync_all().expect("fsync");
    drop(f);
    assert_eq!(read(&u.p("f")), "hello, there\n");
    assert_eq!(read(&t.m(0).join("f")), "hello, there\n");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(u.p("f"))
        .expect("open append");
    f.write_all(b"more\n").expect("append");
    drop(f);
    assert_eq!(read(&t.m(0).join("f")), "hello, there\nmore\n");
    std::fs::OpenOptions::new()
        .write(true)
        .open(u.p("f"))
        .expect("open")
        .set_len(5)
        .expect("ftruncate");
    assert_eq!(read(&u.p("f")), "hello");
    let c = cstr(&u.p("f"));
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 2) }, 0, "truncate");
    assert_eq!(read(&t.m(0).join("f")), "he");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(u.p("f"))
        .expect("O_TRUNC");
    assert_eq!(std::fs::metadata(t.m(0).join("f")).expect("stat").len(), 0);
    f.write_all(b"abc").expect("write");
    drop(f);
    // Read and write on one descriptor.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(u.p("f"))
        .expect("open rw");
    let mut s = String::new();
    f.read_to_string(&mut s).expect("read");
    assert_eq!(s, "abc");
    f.write_all(b"def").expect("write");
    drop(f);
    assert_eq!(read(&t.m(0).join("f")), "abcdef");
    // chmod, utimens (a time, now, and omit).
    std::fs::set_permissions(u.p("f"), std::fs::Permissions::from_mode(0o640)).expect("chmod");
    assert_eq!(
        std::fs::metadata(t.m(0).join("f")).expect("stat").mode() & 0o7777,
        0o640
    );
    assert_eq!(
        std::fs::metadata(u.p("f")).expect("stat").mode() & 0o7777,
        0o640
    );
    let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let ft = std::fs::FileTimes::new()
        .set_modified(when)
        .set_accessed(when);
    std::fs::File::options()
        .write(true)
        .open(u.p("f"))
        .expect("open")
        .set_times(ft)
        .expect("futimens");
    assert_eq!(
        stat_times(&t.m(0).join("f")),
        (1_000_000_000, 1_000_000_000)
    );
    assert_eq!(stat_times(&u.p("f")), (1_000_000_000, 1_000_000_000));
    let c = cstr(&u.p("f"));
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs.
    assert_eq!(
        unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), 0) },
        0
    );
    let (a, m) = stat_times(&t.m(0).join("f"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    assert!((now - a).abs() < 5, "atime now");
    assert_eq!(m, 1_000_000_000, "mtime omitted");
    // Hard links share an inode; rename, unlink, rmdir.
    std::fs::hard_link(u.p("f"), u.p("g")).expect("link");
    let (fi, gi) = (
        std::fs::metadata(u.p("f")).expect("stat"),
        std::fs::metadata(u.p("g")).expect("stat"),
    );
    assert_eq!(fi.ino(), gi.ino());
    assert_eq!(fi.nlink(), 2);
    assert_eq!(
        std::fs::metadata(t.m(0).join("g")).expect("stat").ino(),
        std::fs::metadata(t.m(0).join("f")).expect("stat").ino()
    );
    std::fs::rename(u.p("g"), u.p("h")).expect("rename");
    assert!(t.m(0).join("h").exists() && !t.m(0).join("g").exists());
    std::fs::remove_file(u.p("h")).expect("unlink");
    assert!(!t.m(0).join("h").exists());
    assert_eq!(std::fs::metadata(u.p("f")).expect("stat").nlink(), 1);
    std::fs::create_dir(u.p("e")).expect("mkdir");
    std::fs::remove_dir(u.p("e")).expect("rmdir");
    assert!(!t.m(0).join("e").exists());
    // A file of member 1 is renamed and removed in member 1.
    write(&t.m(1).join("d/x"), "x");
    std::fs::rename(u.p("d/x"), u.p("d/y")).expect("rename below");
    assert_eq!(read(&t.m(1).join("d/y")), "x");
    write(&t.m(1).join("top1"), "t");
    std::fs::rename(u.p("top1"), u.p("top2")).expect("rename at top");
    assert_eq!(
        read(&t.m(1).join("top2")),
        "t",
        "lands in the source's member"
    );
    std::fs::remove_file(u.p("top2")).expect("unlink member 1");
    assert!(!t.m(1).join("top2").exists());
    std::fs::remove_file(u.p("d/y")).expect("unlink");
    std::fs::remove_dir(u.p("d")).expect("rmdir member 1");
    assert!(!t.m(1).join("d").exists());
    // Removing a name reveals the same name in a later member at once.
    write(&t.m(1).join("both"), "one");
    write(&t.m(0).join("both"), "zero");
    assert_eq!(read(&u.p("both")), "zero");
    std::fs::remove_file(u.p("both")).expect("unlink");
    assert_eq!(read(&u.p("both")), "one");
    // statfs is the first member's.
    let out = Command::new("df").arg(&u.dir).output().expect("df");
    assert!(out.status.success(), "df");
}

#[test]
fn across_members_is_exdev() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    write(&t.m(0).join("a"), "a");
    std::fs::create_dir(t.m(1).join("d1")).expect("mkdir");
    write(&t.m(1).join("b"), "b");
    write(&t.m(0).join("shadow"), "zero");
    let u = mount(vec![member(&t.m(0), true), member(&t.m(1), false)], &t.u());
    let e = std::fs::rename(u.p("a"), u.p("d1/a")).expect_err("rename across");
    assert_eq!(errno(&e), libc::EXDEV);
    let e = std::fs::rename(u.p("d1"), u.p("d1x")).map(|_| ());
    assert!(e.is_ok(), "rename within member 1 at the top: {e:?}");
    let e = std::fs::hard_link(u.p("a"), u.p("d1x/a")).expect_err("link across");
    assert_eq!(errno(&e), libc::EXDEV);
    // A link at the top goes to the create member: from member 1, that is a crossing.
    let e = std::fs::hard_link(u.p("b"), u.p("b2")).expect_err("link to the top");
    assert_eq!(errno(&e), libc::EXDEV);
    // Renaming onto a name an earlier member shows would hide the file: EXDEV (mv copies).
    let e = std::fs::rename(u.p("b"), u.p("shadow")).expect_err("rename under a shadow");
    assert_eq!(errno(&e), libc::EXDEV);
    assert_eq!(read(&u.p("b")), "b");
    // mv copes: it removes member 0's name and copies into the create member. (Were
    // the name in member 1 too, removing it would reveal that one and mv's exclusive
    // create would fail: a Plan 9 union shows every member's names.)
    let st = Command::new("mv")
        .arg(u.p("b"))
        .arg(u.p("shadow"))
        .status()
        .expect("mv");
    assert!(st.success());
    assert_eq!(read(&u.p("shadow")), "b");
    assert!(u.p("b").symlink_metadata().is_err());
    let e = std::fs::rename(u.p("a"), u.p("d1x/z")).expect_err("rename to member 1 dir");
    assert_eq!(errno(&e), libc::EXDEV);
}

#[test]
fn find_and_du_walk_the_union() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    for i in 0..2 {
        for d in 0..5 {
            let dir = t.m(i).join(format!("d{i}{d}"));
            std::fs::create_dir(&dir).expect("mkdir");
            for f in 0..20 {
                write(&dir.join(format!("f{f}")), &"x".repeat(100));
            }
        }
    }
    std::fs::create_dir(t.m(1).join("d00")).expect("mkdir hidden");
    write(&t.m(1).join("d00/hidden"), "h");
    let u = mount(vec![member(&t.m(0), false), member(&t.m(1), false)], &t.u());
    let out = Command::new("find").arg(&u.dir).output().expect("find");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, 1 + 10 + 200, "find output");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hidden"));
    let out = Command::new("du")
        .arg("-s")
        .arg(&u.dir)
        .output()
        .expect("du");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("ls")
        .arg("-lR")
        .arg(&u.dir)
        .output()
        .expect("ls -lR");
    assert!(out.status.success());
}

#[test]
fn big_listing_is_unique() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(3);
    let mut want = HashSet::new();
    for i in 0..3 {
        for n in 0..1000 {
            // Members overlap: 0..999, 999..1998, 1997..2996.
            let name = format!("n{:05}", i * 999 + n);
            std::fs::File::create(t.m(i).join(&name)).expect("create");
            want.insert(name);
        }
    }
    assert_eq!(want.len(), 2998);
    let u = mount(
        vec![
            member(&t.m(0), false),
            member(&t.m(1), false),
            member(&t.m(2), false),
        ],
        &t.u(),
    );
    let got = names(&u.dir);
    let set: HashSet<String> = got.iter().cloned().collect();
    assert_eq!(got.len(), set.len(), "duplicates in the listing");
    assert_eq!(set, want);
    let out = Command::new("ls")
        .arg("-l")
        .arg(&u.dir)
        .output()
        .expect("ls -l");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2998 + 1
    );
}

#[test]
fn many_open_files() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    for i in 0..400 {
        write(&t.m(i % 2).join(format!("f{i}")), &format!("file {i}"));
    }
    let u = mount(vec![member(&t.m(0), false), member(&t.m(1), false)], &t.u());
    let mut open = Vec::new();
    for i in 0..400 {
        open.push(std::fs::File::open(u.p(&format!("f{i}"))).expect("open"));
    }
    for (i, f) in open.iter_mut().enumerate() {
        let mut s = String::new();
        f.read_to_string(&mut s).expect("read");
        assert_eq!(s, format!("file {i}"));
    }
    drop(open);
    // Parallel readers of one file.
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let p = u.p("f3");
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert_eq!(read(&p), "file 3");
                }
            })
        })
        .collect();
    for h in hs {
        h.join().expect("reader");
    }
}

#[test]
fn large_file_reads_back() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(1);
    let u = mount(vec![member(&t.m(0), true)], &t.u());
    let mut data = vec![0u8; 64 << 20];
    let mut x: u32 = 12345;
    for b in data.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    std::fs::write(u.p("big"), &data).expect("write big");
    let direct = std::fs::read(t.m(0).join("big")).expect("read direct");
    assert!(direct == data, "member's copy differs");
    let back = std::fs::read(u.p("big")).expect("read big");
    assert!(back == data, "read back differs");
    // Random reads at odd offsets.
    let mut f = std::fs::File::open(u.p("big")).expect("open");
    for off in [0u64, 1, 4095, 4097, (32 << 20) + 7, (64 << 20) - 3] {
        f.seek(SeekFrom::Start(off)).expect("seek");
        let mut b = [0u8; 10];
        let n = f.read(&mut b).expect("read");
        let o = off as usize;
        assert_eq!(&b[..n], &data[o..(o + 10).min(data.len())]);
    }
    // mmap'd (cp uses read; `cmp` is enough).
    let st = Command::new("cmp")
        .arg(u.p("big"))
        .arg(t.m(0).join("big"))
        .status()
        .expect("cmp");
    assert!(st.success());
}

#[test]
fn removed_member_gives_errors_not_panics() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(2);
    write(&t.m(1).join("keep"), "k");
    write(&t.m(0).join("gone"), "g");
    let u = mount(vec![member(&t.m(0), true), member(&t.m(1), false)], &t.u());
    assert_eq!(read(&u.p("gone")), "g");
    std::fs::remove_file(t.m(0).join("gone")).expect("rm");
    std::fs::remove_dir(t.m(0)).expect("rmdir member");
    std::thread::sleep(Duration::from_millis(1100));
    assert!(u.p("gone").symlink_metadata().is_err());
    assert_eq!(read(&u.p("keep")), "k");
    assert_eq!(names(&u.dir), ["keep"]);
    let e = std::fs::write(u.p("new"), "x").expect_err("create in removed member");
    assert_eq!(errno(&e), libc::ENOENT, "{e}");
    assert!(std::fs::create_dir(u.p("nd")).is_err());
    let _ = std::fs::metadata(&u.dir);
    // Still serving.
    assert_eq!(read(&u.p("keep")), "k");
}

#[test]
fn a_union_of_nothing_is_empty() {
    if !fuse_available() {
        return;
    }
    let t = Tree::new(0);
    let u = mount(vec![], &t.u());
    assert!(names(&u.dir).is_empty());
    assert!(std::fs::metadata(&u.dir).expect("stat").is_dir());
    let e = std::fs::write(u.p("f"), "x").expect_err("create");
    assert_eq!(errno(&e), libc::EPERM);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn source_round_trips(
        pid in any::<u32>(),
        ms in proptest::collection::vec(
            (any::<bool>(), prop_oneof![
                "\\PC*",
                "[ !=%:,\\\\a-z/\t\n]{0,20}",
                any::<String>(),
            ]),
            0..5,
        ),
    ) {
        let members: Vec<Member> = ms
            .iter()
            .map(|(c, l)| Member { dir: dirfd(Path::new("/")), create: *c, label: l.clone() })
            .collect();
        let s = union::source(pid, &members);
        prop_assert!(s.starts_with("union@"));
        prop_assert!(!s.contains([' ', '\t', '\n', ',', '\\']), "{}", s);
        let (p, got) = union::parse_source(&s).expect("parses");
        prop_assert_eq!(p, pid);
        prop_assert_eq!(got.len(), members.len());
        for (g, m) in got.iter().zip(&members) {
            prop_assert_eq!(g, &(m.dir.as_raw_fd(), m.create, m.label.clone()));
        }
    }

    #[test]
    fn parse_source_never_panics(s in "\\PC*") {
        let _ = union::parse_source(&s);
        let _ = union::parse_source(&format!("union@1:{s}"));
    }
}

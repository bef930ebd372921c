//! A file-system exerciser for 9pfuse: one deterministic sequence of operations (a
//! seeded generator, the same every run; NINESPACE_FUSE_SEED and NINESPACE_FUSE_STEPS
//! to explore) is applied to a 9pfuse mount — of ramfs, of exportfs exporting a
//! directory, and of ramfs with the kernel's cache (-c) — and to a plain directory on
//! tmpfs. Every operation's result (its value, or its errno) must be the same on both;
//! after each phase the whole trees (names, file or directory, sizes, contents) must
//! be, and for exportfs so must the exported directory on the disk.
//!
//! What is exercised:
//! - a random phase of path operations (create, create exclusive, write at offsets
//!   including past the end (holes) and across ramfs's 1 MiB chunks, read at offsets,
//!   append, open with O_TRUNC, truncate up and down by path and through a descriptor,
//!   stat, mkdir, rmdir (non-empty too), unlink, rename within a directory (onto free and
//!   existing names, files and directories), rename across directories, sorted listings)
//!   mixed with operations through a few descriptors held open across them (read and
//!   write at the file position and at offsets, seek, ftruncate, fstat, fsync; the file
//!   or a directory above it renamed, or the file replaced or removed, meanwhile), with
//!   errors compared too (ENOENT, EEXIST, EISDIR, ENOTDIR, ENOTEMPTY, EBADF, ...);
//! - the cases that phase found, as fixed sequences (`found`);
//! - names: 255 bytes long, of many bytes a character, odd ones; names that are not
//!   UTF-8; a listing read again (rewinddir) after a change;
//! - a directory of 10,000 entries, listed with std::fs::read_dir (count and names),
//!   then thinned and renamed in and listed again (8,000 of the entries are made on the
//!   server directly and 2,000 through the mount: see `big_directory`);
//! - 200 files open at once, written, truncated and read interleaved;
//! - concurrent writers: threads writing disjoint ranges of one file, and threads each
//!   working in their own directory (each thread's results compared too).
//!
//! Left out, or checked as a difference, because they are Plan 9 / 9P limits rather than
//! bugs (docs/9pfuse.md):
//! - permission bits and owners: ramfs applies Plan 9's rules (a new file's bits are
//!   and-ed with its directory's, owners are names), and the tests run as root, for whom
//!   Unix checks nothing; no chmod or chown, and modes are not compared;
//! - nlink (always 1 for a file, 2 for a directory), inode numbers, st_blocks, the size
//!   of a directory (0 in 9P) and times (9P has seconds, and no ctime): not compared;
//! - hard links, symbolic links, devices, FIFOs, sockets, xattrs and locks: 9P2000 has
//!   none of them;
//! - rename across directories: 9P renames only within a directory (a wstat of the
//!   name), so the bridge answers EXDEV. Chosen here: the mount must answer EXDEV where
//!   tmpfs renames (or where tmpfs refuses with ENOTEMPTY, which the file system decides
//!   after the bridge has already refused; errors the kernel finds before asking the file
//!   system, like ENOENT or EINVAL, must be equal), and then the exerciser does on the
//!   mount what mv(1) does on EXDEV — copy, then remove the source — so that the trees
//!   stay comparable. Descriptors open on either name then refer to different files on
//!   the two sides, and are closed;
//! - a file removed, or replaced by a rename onto its name, while it is open: reads and
//!   writes through the open descriptor work on both, but fstat, ftruncate and fsync of
//!   it fail on the mount (a 9P remove takes the file away, and those are a stat or
//!   wstat of it), so they are not done on such descriptors; with -c not even reads and
//!   writes are (the kernel asks for the attributes first), so they are only closed;
//! - names: 9P names are UTF-8, so the mount refuses to make a name of other bytes
//!   (EINVAL; a lookup of one is ENOENT) where tmpfs takes any bytes — checked as such;
//!   names longer than 255 bytes are refused by tmpfs (and by exportfs on most disks)
//!   but taken by ramfs: not exercised;
//! - replacing an existing name by a rename is a remove and then a wstat on the mount,
//!   not one atomic step; a single-threaded sequence cannot see that, so it is not
//!   checked;
//! - shared writable mmap (the mount is direct I/O without -c) and statfs are not
//!   exercised.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const NINEPFUSE: &str = env!("CARGO_BIN_EXE_9pfuse");

/// How long one test may run before its mount is torn down (so that a hung request
/// fails the test rather than hanging it).
const DEADLINE: Duration = Duration::from_secs(150);

/// Operations in the random phase (NINESPACE_FUSE_STEPS to change, and
/// NINESPACE_FUSE_SEED to change the sequence).
const STEPS: usize = 2500;

// ---------------------------------------------------------------------------------------
// Mounts (as tests/fuse.rs), the reference tmpfs, and a watchdog.

/// Is `dir` a mount point (a FUSE one)?
fn mounted(dir: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let d = dir.to_string_lossy();
    m.lines()
        .any(|l| l.split(' ').nth(4) == Some(&*d) && l.contains("fuse"))
}

/// Detach whatever is mounted on `dir`.
fn detach(dir: &Path) {
    if let Ok(c) = std::ffi::CString::new(dir.to_string_lossy().as_bytes()) {
        // SAFETY: detaching a mount of ours by path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
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
        let mut m = Mount {
            child,
            dir,
            _tmp: tmp,
        };
        let start = Instant::now();
        while !mounted(&m.dir) {
            if let Ok(Some(st)) = m.child.try_wait() {
                panic!("9pfuse exited before mounting: {st}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "9pfuse did not mount"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(m)
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
            detach(&self.dir);
        }
    }
}

/// Kills 9pfuse and detaches its mount if the test overstays `DEADLINE`: requests
/// waiting on it then fail (ENOTCONN) and so does the test. Dropped before the mount.
struct Watchdog {
    done: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchdog {
    fn new(m: &Mount) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let pid = m.child.id() as i32;
        let dir = m.dir.clone();
        let thread = std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(DEADLINE) {
                eprintln!("fuse_exercise: over {DEADLINE:?}: killing 9pfuse {pid}");
                // SAFETY: killing our own child by pid (it is still ours: the mount that
                // reaps it is dropped after this watchdog).
                unsafe { libc::kill(pid, libc::SIGKILL) };
                detach(&dir);
            }
        });
        Watchdog {
            done: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

fn is_tmpfs(p: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(p.to_string_lossy().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the struct we pass.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above, with a NUL-terminated path.
    unsafe { libc::statfs(c.as_ptr(), &mut sf) == 0 && sf.f_type as i64 == TMPFS_MAGIC }
}

/// The reference tree: a fresh directory under /dev/shm, or (where that is not tmpfs) a
/// tmpfs of our own, unmounted when dropped.
struct Reference {
    dir: PathBuf,
    own: bool,
    _tmp: tempfile::TempDir,
}

impl Reference {
    fn new() -> Reference {
        let shm = Path::new("/dev/shm");
        if is_tmpfs(shm) {
            let t = tempfile::Builder::new()
                .prefix("fuse-exercise.")
                .tempdir_in(shm)
                .expect("tempdir in /dev/shm");
            return Reference {
                dir: t.path().to_path_buf(),
                own: false,
                _tmp: t,
            };
        }
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("ref");
        std::fs::create_dir(&dir).expect("mkdir ref");
        let d = std::ffi::CString::new(dir.to_string_lossy().as_bytes()).expect("path");
        // SAFETY: mounting a tmpfs on a directory of ours, with NUL-terminated strings.
        let r = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                d.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"size=1g".as_ptr().cast(),
            )
        };
        assert_eq!(
            r,
            0,
            "/dev/shm is not tmpfs and mounting one failed: {}",
            io::Error::last_os_error()
        );
        Reference {
            dir,
            own: true,
            _tmp: t,
        }
    }
}

impl Drop for Reference {
    fn drop(&mut self) {
        if self.own {
            detach(&self.dir);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The generator.

/// splitmix64: small, deterministic, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn pick<'a, T>(&mut self, s: &'a [T]) -> &'a T {
        &s[self.below(s.len() as u64) as usize]
    }
    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
    /// An offset: mostly small, sometimes far (holes), sometimes across 1 MiB.
    fn offset(&mut self) -> u64 {
        match self.below(100) {
            0..15 => 0,
            15..45 => self.below(4096),
            45..85 => self.below(200_000),
            85..95 => (1 << 20) - 64 + self.below(128),
            _ => self.below(3 << 20),
        }
    }
    /// A length of data to write or read.
    fn len(&mut self) -> usize {
        (match self.below(100) {
            0..5 => 0,
            5..15 => 1,
            15..50 => 1 + self.below(512),
            50..70 => 4096,
            70..95 => 1 + self.below(70_000),
            _ => 100_000 + self.below(200_000),
        }) as usize
    }
    fn data(&mut self) -> Data {
        Data {
            len: self.len(),
            seed: self.next(),
        }
    }
}

/// Bytes to write, made from a seed (so that operations print short).
#[derive(Clone, Copy, Debug)]
struct Data {
    len: usize,
    seed: u64,
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        let mut r = Rng(self.seed);
        let mut v = Vec::with_capacity(self.len + 8);
        while v.len() < self.len {
            v.extend_from_slice(&r.next().to_le_bytes());
        }
        v.truncate(self.len);
        v
    }
}

/// How a descriptor is opened.
#[derive(Clone, Copy, Debug)]
enum How {
    Read,
    Write,
    ReadWrite,
    CreateReadWrite,
    Append,
}

fn open_as(how: How, p: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    match how {
        How::Read => o.read(true),
        How::Write => o.write(true),
        How::ReadWrite => o.read(true).write(true),
        How::CreateReadWrite => o.read(true).write(true).create(true),
        How::Append => o.read(true).append(true),
    };
    o.open(p)
}

/// One operation, applied to both trees. Paths are relative to the tree's root.
#[derive(Clone, Debug)]
enum Op {
    /// `File::create`: O_CREAT|O_TRUNC|O_WRONLY, then close.
    Create(String),
    /// O_CREAT|O_EXCL.
    CreateNew(String),
    WriteAt(String, u64, Data),
    ReadAt(String, u64, usize),
    Append(String, Data),
    /// Open an existing file with O_TRUNC.
    OpenTrunc(String),
    /// truncate(2), by path.
    Truncate(String, u64),
    /// Open for writing and ftruncate.
    SetLen(String, u64),
    Stat(String),
    Mkdir(String),
    Rmdir(String),
    Unlink(String),
    Rename(String, String),
    ReadDir(String),
    /// Descriptors held across other operations, by slot.
    Open(usize, String, How),
    Close(usize),
    Write(usize, Data),
    Pwrite(usize, u64, Data),
    Read(usize, usize),
    Pread(usize, u64, usize),
    Seek(usize, u64),
    Ftruncate(usize, u64),
    Fstat(usize),
    Fsync(usize),
}

// ---------------------------------------------------------------------------------------
// Running operations and comparing their outcomes.

/// What an operation gave: a value, or the error (by errno where there is one).
#[derive(Debug, PartialEq, Eq)]
enum Val {
    Done,
    Bytes(Vec<u8>),
    Pos(u64),
    Stat { dir: bool, len: u64 },
    Names(Vec<(String, bool)>),
}

type Out = Result<Val, String>;

fn fail(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => io::Error::from_raw_os_error(n).to_string(),
        None => format!("{:?}", e.kind()),
    }
}

fn out<T>(r: io::Result<T>, f: impl FnOnce(T) -> Val) -> Out {
    r.map(f).map_err(|e| fail(&e))
}

fn errno_of(o: &Out) -> Option<i32> {
    let e = o.as_ref().err()?;
    [
        libc::EXDEV,
        libc::ENOTEMPTY,
        libc::ENOENT,
        libc::EINVAL,
        libc::EISDIR,
        libc::ENOTDIR,
    ]
    .into_iter()
    .find(|&n| *e == io::Error::from_raw_os_error(n).to_string())
}

/// Read up to `n` bytes at the file position (fewer only at the end).
fn read_up_to(f: &mut File, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// Read up to `n` bytes at `off` (fewer only at the end).
fn pread_up_to(f: &File, off: u64, n: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match f.read_at(&mut buf[got..], off + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

fn stat_val(m: std::fs::Metadata) -> Val {
    let dir = m.is_dir();
    Val::Stat {
        dir,
        len: if dir { 0 } else { m.len() },
    }
}

fn listing(p: &Path) -> io::Result<Vec<(String, bool)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(p)? {
        let e = e?;
        v.push((
            e.file_name().to_string_lossy().into_owned(),
            e.file_type()?.is_dir(),
        ));
    }
    v.sort();
    Ok(v)
}

fn truncate_path(p: &Path, len: u64) -> io::Result<()> {
    let c = std::ffi::CString::new(p.to_string_lossy().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: truncate(2) with a NUL-terminated path.
    if unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One of the two trees, with its descriptors held open.
struct Side {
    root: PathBuf,
    slots: Vec<Option<File>>,
}

const SLOTS: usize = 6;

impl Side {
    fn new(root: &Path) -> Side {
        Side {
            root: root.to_path_buf(),
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    fn slot(&mut self, i: usize) -> io::Result<&mut File> {
        self.slots[i]
            .as_mut()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EBADF))
    }

    fn run(&mut self, op: &Op) -> Out {
        match op {
            Op::Create(p) => out(File::create(self.p(p)), |_| Val::Done),
            Op::CreateNew(p) => out(File::create_new(self.p(p)), |_| Val::Done),
            Op::WriteAt(p, off, d) => out(
                OpenOptions::new()
                    .write(true)
                    .open(self.p(p))
                    .and_then(|f| f.write_all_at(&d.bytes(), *off)),
                |_| Val::Done,
            ),
            Op::ReadAt(p, off, n) => out(
                File::open(self.p(p)).and_then(|f| pread_up_to(&f, *off, *n)),
                Val::Bytes,
            ),
            Op::Append(p, d) => out(
                OpenOptions::new()
                    .append(true)
                    .open(self.p(p))
                    .and_then(|mut f| f.write_all(&d.bytes())),
                |_| Val::Done,
            ),
            Op::OpenTrunc(p) => out(
                OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(self.p(p)),
                |_| Val::Done,
            ),
            Op::Truncate(p, n) => out(truncate_path(&self.p(p), *n), |_| Val::Done),
            Op::SetLen(p, n) => out(
                OpenOptions::new()
                    .write(true)
                    .open(self.p(p))
                    .and_then(|f| f.set_len(*n)),
                |_| Val::Done,
            ),
            Op::Stat(p) => out(std::fs::metadata(self.p(p)), stat_val),
            Op::Mkdir(p) => out(std::fs::create_dir(self.p(p)), |_| Val::Done),
            Op::Rmdir(p) => out(std::fs::remove_dir(self.p(p)), |_| Val::Done),
            Op::Unlink(p) => out(std::fs::remove_file(self.p(p)), |_| Val::Done),
            Op::Rename(a, b) => out(std::fs::rename(self.p(a), self.p(b)), |_| Val::Done),
            Op::ReadDir(p) => out(listing(&self.p(p)), Val::Names),
            Op::Open(i, p, how) => {
                self.slots[*i] = None;
                match open_as(*how, &self.p(p)) {
                    Ok(f) => {
                        self.slots[*i] = Some(f);
                        Ok(Val::Done)
                    }
                    Err(e) => Err(fail(&e)),
                }
            }
            Op::Close(i) => {
                self.slots[*i] = None;
                Ok(Val::Done)
            }
            Op::Write(i, d) => out(self.slot(*i).and_then(|f| f.write_all(&d.bytes())), |_| {
                Val::Done
            }),
            Op::Pwrite(i, off, d) => out(
                self.slot(*i).and_then(|f| f.write_all_at(&d.bytes(), *off)),
                |_| Val::Done,
            ),
            Op::Read(i, n) => out(self.slot(*i).and_then(|f| read_up_to(f, *n)), Val::Bytes),
            Op::Pread(i, off, n) => out(
                self.slot(*i).and_then(|f| pread_up_to(f, *off, *n)),
                Val::Bytes,
            ),
            Op::Seek(i, off) => out(
                self.slot(*i).and_then(|f| f.seek(SeekFrom::Start(*off))),
                Val::Pos,
            ),
            Op::Ftruncate(i, n) => out(self.slot(*i).and_then(|f| f.set_len(*n)), |_| Val::Done),
            Op::Fstat(i) => out(self.slot(*i).and_then(|f| f.metadata()), stat_val),
            Op::Fsync(i) => out(self.slot(*i).and_then(|f| f.sync_all()), |_| Val::Done),
        }
    }
}

fn parent_of(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// Is `p` `base` or beneath it?
fn beneath(p: &str, base: &str) -> bool {
    p == base || p.strip_prefix(base).is_some_and(|r| r.starts_with('/'))
}

/// What mv(1) does when rename says EXDEV: copy, then remove the source.
fn mv(root: &Path, from: &str, to: &str) -> io::Result<()> {
    fn copy(s: &Path, d: &Path) -> io::Result<()> {
        if std::fs::symlink_metadata(s)?.is_dir() {
            std::fs::create_dir(d)?;
            for e in std::fs::read_dir(s)? {
                let n = e?.file_name();
                copy(&s.join(&n), &d.join(&n))?;
            }
            Ok(())
        } else {
            std::fs::write(d, std::fs::read(s)?)
        }
    }
    let (s, d) = (root.join(from), root.join(to));
    if std::fs::symlink_metadata(&s)?.is_dir() {
        if d.exists() {
            // Empty, or rename would have refused.
            std::fs::remove_dir(&d)?;
        }
        copy(&s, &d)?;
        std::fs::remove_dir_all(&s)
    } else {
        copy(&s, &d)?;
        std::fs::remove_file(&s)
    }
}

/// What a held descriptor refers to, as the generator sees it.
#[derive(Clone, Debug)]
struct SlotInfo {
    path: String,
    /// The file was removed or replaced since: only read and write through it.
    orphan: bool,
    dir: bool,
}

/// Both trees, the generator, and what happened so far.
struct Exerciser {
    mount: Side,
    reference: Side,
    rng: Rng,
    slots: Vec<Option<SlotInfo>>,
    /// The operations so far, for the report of a difference.
    recent: Vec<String>,
    step: usize,
    what: &'static str,
    /// The mount caches (-c): reads and writes of a file removed while open need its
    /// attributes, which the server no longer has: such descriptors are only closed.
    cached: bool,
}

const PARENTS: &[&str] = &["", "", "d0", "d0", "d1", "d0/e0", "d1/e1", "x"];
const NAMES: &[&str] = &["a", "b", "c", "d0", "d1", "e0", "e1", "x"];

impl Exerciser {
    fn new(what: &'static str, mount: &Path, reference: &Path, seed: u64) -> Exerciser {
        Exerciser {
            mount: Side::new(mount),
            reference: Side::new(reference),
            rng: Rng(seed),
            slots: vec![None; SLOTS],
            recent: Vec::new(),
            step: 0,
            what,
            cached: false,
        }
    }

    fn differ(&self, op: &Op, m: &Out, r: &Out) -> ! {
        let short = |o: &Out| match o {
            Ok(Val::Bytes(b)) if b.len() > 64 => format!("Ok({} bytes)", b.len()),
            o => format!("{o:?}"),
        };
        let mut extra = String::new();
        if let (Ok(Val::Bytes(a)), Ok(Val::Bytes(b))) = (m, r) {
            let at = a.iter().zip(b.iter()).position(|(x, y)| x != y);
            extra = format!(
                "\n  lengths {} (mount) and {} (tmpfs), first difference at {at:?}",
                a.len(),
                b.len()
            );
        }
        // All of them go to a file; the last ones, and those on the descriptors' files
        // or by them, into the message.
        let log = std::env::temp_dir().join(format!(
            "fuse_exercise.{}.log",
            self.what.replace([' ', '-'], "")
        ));
        let _ = std::fs::write(&log, self.recent.join("\n"));
        let paths: Vec<&str> = self
            .slots
            .iter()
            .flatten()
            .map(|s| s.path.as_str())
            .collect();
        let relevant: Vec<&String> = self
            .recent
            .iter()
            .enumerate()
            .filter(|(k, l)| {
                k + 20 >= self.recent.len()
                    || paths.iter().any(|p| l.contains(&format!("\"{p}\"")))
                    || l.contains(": Open(")
            })
            .map(|(_, l)| l)
            .collect();
        panic!(
            "{}: step {}: {op:?}\n  mount: {}\n  tmpfs: {}{extra}\n  descriptors: {:?}\n  \
             operations before it (all of them in {}):\n    {}",
            self.what,
            self.step,
            short(m),
            short(r),
            self.slots,
            log.display(),
            relevant
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n    ")
        );
    }

    /// Apply `op` to both trees and compare; whether it succeeded.
    fn apply(&mut self, op: Op) -> bool {
        self.step += 1;
        let m = self.mount.run(&op);
        let r = self.reference.run(&op);
        match &op {
            Op::Rename(a, b) if parent_of(a) != parent_of(b) => {
                // Across directories: see the top of the file.
                if m != r {
                    if errno_of(&m) != Some(libc::EXDEV) {
                        self.differ(&op, &m, &r);
                    }
                    match &r {
                        Ok(_) => {
                            if let Err(e) = mv(&self.mount.root, a, b) {
                                panic!(
                                    "{}: step {}: {op:?}: mv after EXDEV on the mount: {e}",
                                    self.what, self.step
                                );
                            }
                        }
                        Err(_) if errno_of(&r) == Some(libc::ENOTEMPTY) => {}
                        Err(_) => self.differ(&op, &m, &r),
                    }
                }
            }
            _ => {
                if m != r {
                    self.differ(&op, &m, &r);
                }
            }
        }
        self.recent
            .push(format!("{}: {op:?} -> {}", self.step, short_out(&r)));
        self.track(&op, r.is_ok());
        r.is_ok()
    }

    /// Follow names into the slots' records after `op` (which succeeded if `ok`).
    fn track(&mut self, op: &Op, ok: bool) {
        if !ok {
            if let Op::Open(i, ..) = op {
                self.slots[*i] = None;
            }
            return;
        }
        match op {
            Op::Open(i, p, _) => {
                let dir = self.reference.p(p).is_dir();
                self.slots[*i] = Some(SlotInfo {
                    path: p.clone(),
                    orphan: false,
                    dir,
                });
            }
            Op::Close(i) => self.slots[*i] = None,
            Op::Unlink(p) | Op::Rmdir(p) => {
                for s in self.slots.iter_mut().flatten() {
                    if s.path == *p {
                        s.orphan = true;
                    }
                }
            }
            Op::Rename(a, b) if a != b && parent_of(a) != parent_of(b) => {
                // The mount copied (onto the target, in place) and removed the source:
                // descriptors of either now name different files on the two sides, and
                // are closed.
                let gone: Vec<usize> = (0..SLOTS)
                    .filter(|&i| {
                        self.slots[i]
                            .as_ref()
                            .is_some_and(|s| beneath(&s.path, a) || beneath(&s.path, b))
                    })
                    .collect();
                for i in gone {
                    self.apply(Op::Close(i));
                }
            }
            Op::Rename(a, b) if a != b => {
                for s in self.slots.iter_mut().flatten() {
                    if beneath(&s.path, b) {
                        s.orphan = true;
                    } else if beneath(&s.path, a) {
                        s.path = format!("{b}{}", &s.path[a.len()..]);
                    }
                }
            }
            _ => {}
        }
    }

    /// Every entry of the reference tree (relative paths), directories and files.
    fn existing(&self) -> (Vec<String>, Vec<String>) {
        fn walk(root: &Path, rel: &str, dirs: &mut Vec<String>, files: &mut Vec<String>) {
            let Ok(rd) = std::fs::read_dir(root.join(rel)) else {
                return;
            };
            let mut names: Vec<(String, bool)> = rd
                .flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy().into_owned(),
                        e.file_type().is_ok_and(|t| t.is_dir()),
                    )
                })
                .collect();
            names.sort();
            for (n, d) in names {
                let p = join(rel, &n);
                if d {
                    dirs.push(p.clone());
                    walk(root, &p, dirs, files);
                } else {
                    files.push(p);
                }
            }
        }
        let (mut dirs, mut files) = (Vec::new(), Vec::new());
        walk(&self.reference.root, "", &mut dirs, &mut files);
        (dirs, files)
    }

    /// A path: mostly one that exists (of the kind wanted), else one made up.
    fn path(&mut self, want_dir: bool) -> String {
        let (dirs, files) = self.existing();
        let pool = if want_dir { dirs } else { files };
        if !pool.is_empty() && self.rng.chance(75) {
            return self.rng.pick(&pool).clone();
        }
        self.fresh()
    }

    fn fresh(&mut self) -> String {
        let parent = *self.rng.pick(PARENTS);
        let name = *self.rng.pick(NAMES);
        join(parent, name)
    }

    fn any_path(&mut self) -> String {
        let d = self.rng.chance(25);
        self.path(d)
    }

    /// The next operation.
    fn gen_op(&mut self) -> Op {
        let i = self.rng.below(SLOTS as u64) as usize;
        let slot = self.slots[i].clone();
        match self.rng.below(100) {
            0..6 => Op::Create(self.fresh()),
            6..8 => Op::CreateNew(self.any_path()),
            8..16 => {
                let p = self.path(false);
                Op::WriteAt(p, self.rng.offset(), self.rng.data())
            }
            16..22 => {
                let p = self.any_path();
                Op::ReadAt(p, self.rng.offset(), self.rng.len())
            }
            22..25 => {
                let p = self.path(false);
                Op::Append(p, self.rng.data())
            }
            25..26 => Op::OpenTrunc(self.path(false)),
            26..29 => {
                let p = self.any_path();
                Op::Truncate(p, self.rng.offset())
            }
            29..32 => {
                let p = self.path(false);
                Op::SetLen(p, self.rng.offset())
            }
            32..35 => Op::Stat(self.any_path()),
            35..40 => {
                let p = if self.rng.chance(80) {
                    let parent = self.rng.pick::<&str>(PARENTS);
                    join(parent, self.rng.pick::<&str>(NAMES))
                } else {
                    self.any_path()
                };
                Op::Mkdir(p)
            }
            40..43 => Op::Rmdir(self.path(true)),
            43..46 => Op::Unlink(self.any_path()),
            46..53 => {
                // Within a directory, onto a free or an existing name.
                let a = self.any_path();
                let name = self.rng.pick::<&str>(NAMES);
                let b = join(parent_of(&a), name);
                Op::Rename(a, b)
            }
            53..56 => {
                let a = self.any_path();
                let b = if self.rng.chance(50) {
                    self.any_path()
                } else {
                    self.fresh()
                };
                Op::Rename(a, b)
            }
            56..60 => Op::ReadDir(self.path(true)),
            _ => match slot {
                None => {
                    let how = *self.rng.pick(&[
                        How::Read,
                        How::Write,
                        How::ReadWrite,
                        How::ReadWrite,
                        How::CreateReadWrite,
                        How::Append,
                    ]);
                    let p = if self.rng.chance(90) {
                        self.path(false)
                    } else {
                        self.any_path()
                    };
                    Op::Open(i, p, how)
                }
                Some(s) if s.orphan && self.cached => Op::Close(i),
                Some(s) => {
                    let stat_ok = !s.orphan;
                    match self.rng.below(100) {
                        0..5 => Op::Close(i),
                        5..25 => Op::Write(i, self.rng.data()),
                        25..35 => Op::Pwrite(i, self.rng.offset(), self.rng.data()),
                        // Straight through, in pieces of one size: reads started early.
                        35..60 => Op::Read(i, *self.rng.pick(&[4096, 4096, 65536, 1, 300])),
                        60..68 => Op::Pread(i, self.rng.offset(), self.rng.len()),
                        68..78 => Op::Seek(
                            i,
                            if self.rng.chance(50) {
                                0
                            } else {
                                self.rng.offset()
                            },
                        ),
                        78..86 if stat_ok => Op::Ftruncate(i, self.rng.offset()),
                        86..94 if stat_ok => Op::Fstat(i),
                        94..100 if stat_ok && !s.dir => Op::Fsync(i),
                        _ => Op::Read(i, 4096),
                    }
                }
            },
        }
    }

    /// The random phase.
    fn random(&mut self, steps: usize) {
        for op in [
            Op::Mkdir("d0".into()),
            Op::Mkdir("d1".into()),
            Op::Mkdir("d0/e0".into()),
            Op::Mkdir("d1/e1".into()),
            Op::WriteAt("d0/a".into(), 0, Data { len: 10, seed: 1 }),
            Op::Create("d0/a".into()),
            Op::WriteAt("d0/a".into(), 100, Data { len: 10, seed: 1 }),
            Op::Create("d1/b".into()),
        ] {
            self.apply(op);
        }
        for _ in 0..steps {
            let op = self.gen_op();
            self.apply(op);
        }
        for i in 0..SLOTS {
            self.apply(Op::Close(i));
        }
    }
}

fn short_out(o: &Out) -> String {
    match o {
        Ok(Val::Bytes(b)) => format!("Ok({} bytes)", b.len()),
        Ok(Val::Names(n)) => format!("Ok({} names)", n.len()),
        o => format!("{o:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Whole trees.

#[derive(PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    /// A file of the big directory, whose contents were compared when it was made:
    /// only its name and kind are (reading 10,000 files through the mount is slow).
    Listed,
}

fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    fn walk(root: &Path, rel: &str, out: &mut BTreeMap<String, Node>) {
        let dir = root.join(rel);
        let rd = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
        for e in rd {
            let e = e.unwrap_or_else(|e| panic!("list {}: {e}", dir.display()));
            let name = e.file_name().to_string_lossy().into_owned();
            let p = join(rel, &name);
            let full = root.join(&p);
            if rel == "big" && e.file_type().is_ok_and(|t| t.is_file()) {
                out.insert(p, Node::Listed);
                continue;
            }
            let md = std::fs::symlink_metadata(&full)
                .unwrap_or_else(|e| panic!("stat {}: {e}", full.display()));
            if md.is_dir() {
                out.insert(p.clone(), Node::Dir);
                walk(root, &p, out);
            } else {
                let data =
                    std::fs::read(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()));
                assert_eq!(
                    data.len() as u64,
                    md.len(),
                    "{}: size and bytes read differ",
                    full.display()
                );
                out.insert(p, Node::File(data));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, "", &mut out);
    out
}

/// The two trees must hold the same names, kinds, sizes and bytes.
fn same_trees(what: &str, a: &Path, b: &Path) {
    let (x, y) = (snapshot(a), snapshot(b));
    let mut diffs = Vec::new();
    for (p, n) in &x {
        match (n, y.get(p)) {
            (_, None) => diffs.push(format!("{p}: only in {}", a.display())),
            (Node::Dir, Some(Node::Dir)) | (Node::Listed, Some(Node::Listed)) => {}
            (Node::File(d), Some(Node::File(e))) => {
                if d != e {
                    let at = d.iter().zip(e.iter()).position(|(u, v)| u != v);
                    diffs.push(format!(
                        "{p}: {} and {} bytes, first difference at {at:?}",
                        d.len(),
                        e.len()
                    ));
                }
            }
            _ => diffs.push(format!("{p}: a file in one, a directory in the other")),
        }
    }
    for p in y.keys() {
        if !x.contains_key(p) {
            diffs.push(format!("{p}: only in {}", b.display()));
        }
    }
    diffs.truncate(20);
    assert!(
        diffs.is_empty(),
        "{what}: the trees differ:\n  {}",
        diffs.join("\n  ")
    );
}

// ---------------------------------------------------------------------------------------
// The fixed phases.

/// The cases the random phase found, kept as they were fixed (in srv/src/fuse.rs and
/// srv/src/exportfs.rs), so that each is met on every run.
fn found(x: &mut Exerciser) {
    let d = |len: usize, seed: u64| Data { len, seed };
    for op in [
        Op::Mkdir("found".into()),
        // A read started early (reading straight through) was kept when the file was
        // changed through another descriptor or by name, and a stale piece read.
        Op::Create("found/ahead".into()),
        Op::WriteAt("found/ahead".into(), 0, d(5 * 4096, 7)),
        Op::Open(0, "found/ahead".into(), How::Read),
        Op::Open(1, "found/ahead".into(), How::ReadWrite),
        Op::Read(0, 4096),
        Op::Pwrite(1, 4096, d(100, 8)),
        Op::Read(0, 4096),
        Op::Read(0, 4096),
        Op::Truncate("found/ahead".into(), 9000),
        Op::Read(0, 4096),
        Op::Seek(0, 0),
        Op::Read(0, 4096),
        Op::Read(0, 4096),
        Op::Ftruncate(1, 100),
        Op::Read(0, 4096),
        Op::Seek(0, 0),
        Op::Read(0, 4096),
        Op::WriteAt("found/ahead".into(), 0, d(3 * 4096, 9)),
        Op::Seek(0, 0),
        Op::Read(0, 4096),
        Op::OpenTrunc("found/ahead".into()),
        Op::Read(0, 4096),
        Op::Close(0),
        Op::Close(1),
        // A descriptor whose file was renamed: exportfs looked for it by its old name
        // (fsync, ftruncate).
        Op::Create("found/r".into()),
        Op::WriteAt("found/r".into(), 0, d(1000, 10)),
        Op::Open(2, "found/r".into(), How::ReadWrite),
        Op::Rename("found/r".into(), "found/s".into()),
        Op::Fsync(2),
        Op::Ftruncate(2, 10),
        Op::Fstat(2),
        // ... and one whose directory was renamed.
        Op::Mkdir("found/dir".into()),
        Op::Create("found/dir/f".into()),
        Op::Open(3, "found/dir/f".into(), How::ReadWrite),
        Op::Rename("found/dir".into(), "found/dir2".into()),
        Op::Ftruncate(3, 5000),
        Op::Fstat(3),
        Op::Fsync(3),
        Op::Pwrite(3, 10, d(10, 11)),
        Op::Create("found/dir".into()),
        Op::Ftruncate(3, 20),
        Op::Close(2),
        Op::Close(3),
        Op::ReadDir("found".into()),
        Op::Stat("found/dir".into()),
        Op::ReadAt("found/dir2/f".into(), 0, 100),
    ] {
        let what = format!("{op:?}");
        assert!(x.apply(op), "{}: {what} failed on tmpfs", x.what);
    }
}

/// Apply `op` to both sides; the outcomes must be the same.
fn same(what: &str, ms: &mut Side, rs: &mut Side, op: Op) {
    let (a, b) = (ms.run(&op), rs.run(&op));
    assert!(
        a == b,
        "{what}: {op:?}\n  mount: {}\n  tmpfs: {}",
        short_out(&a),
        short_out(&b)
    );
}

/// Names: long ones, ones of many bytes a character, odd ones, compared; and names
/// that are not UTF-8, which 9P cannot carry: the mount refuses to make them (tmpfs
/// takes any bytes), rather than make two such names one. A listing taken again after
/// a change (rewinddir) sees the change.
fn names(what: &str, m: &Path, r: &Path) {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let (mut ms, mut rs) = (Side::new(m), Side::new(r));
    let long = "L".repeat(255);
    let long2 = format!("{}2", "L".repeat(254));
    let odd = [
        "é 日本語",
        " lead",
        "trail ",
        "-dash",
        "...",
        "a.b.c",
        "#%&'()+,;=@[]^`{}~",
        long.as_str(),
    ];
    same(what, &mut ms, &mut rs, Op::Mkdir("names".into()));
    for (i, n) in odd.iter().enumerate() {
        let p = format!("names/{n}");
        let d = Data {
            len: 100 * i,
            seed: i as u64,
        };
        same(what, &mut ms, &mut rs, Op::Create(p.clone()));
        same(what, &mut ms, &mut rs, Op::WriteAt(p.clone(), 3, d));
        same(what, &mut ms, &mut rs, Op::ReadAt(p.clone(), 0, 1000));
        same(what, &mut ms, &mut rs, Op::Stat(p));
    }
    same(
        what,
        &mut ms,
        &mut rs,
        Op::Rename(format!("names/{long}"), format!("names/{long2}")),
    );
    same(
        what,
        &mut ms,
        &mut rs,
        Op::Rename("names/a.b.c".into(), "names/é 日本語".into()),
    );
    same(what, &mut ms, &mut rs, Op::ReadDir("names".into()));
    let before = listing(&m.join("names")).expect("list names");
    let bad = |b: &[u8]| m.join("names").join(OsStr::from_bytes(b));
    let errno = |r: io::Result<()>| r.err().and_then(|e| e.raw_os_error());
    assert_eq!(
        errno(File::create(bad(b"bad\xff")).map(drop)),
        Some(libc::EINVAL),
        "{what}: create of a name not UTF-8"
    );
    assert_eq!(
        errno(std::fs::create_dir(bad(b"bad\xfe"))),
        Some(libc::EINVAL),
        "{what}: mkdir of a name not UTF-8"
    );
    assert_eq!(
        errno(std::fs::rename(m.join("names/-dash"), bad(b"bad\xfd"))),
        Some(libc::EINVAL),
        "{what}: rename to a name not UTF-8"
    );
    assert_eq!(
        errno(std::fs::metadata(bad(b"bad\xff")).map(drop)),
        Some(libc::ENOENT),
        "{what}: stat of a name not UTF-8"
    );
    assert_eq!(
        listing(&m.join("names")).expect("list names"),
        before,
        "{what}: names not UTF-8 changed the directory"
    );
    // Listed, changed, listed again from the start through the same descriptor.
    let mut dirs: Vec<nix::dir::Dir> = [m, r]
        .iter()
        .map(|root| {
            nix::dir::Dir::open(
                &root.join("names"),
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
                nix::sys::stat::Mode::empty(),
            )
            .expect("opendir names")
        })
        .collect();
    let mut list = |d: &mut nix::dir::Dir| {
        let mut v: Vec<Vec<u8>> = d
            .iter()
            .map(|e| e.expect("readdir").file_name().to_bytes().to_vec())
            .collect();
        v.sort();
        v
    };
    let first: Vec<_> = dirs.iter_mut().map(&mut list).collect();
    assert_eq!(first[0], first[1], "{what}: names listed");
    same(what, &mut ms, &mut rs, Op::Create("names/new".into()));
    same(what, &mut ms, &mut rs, Op::Unlink("names/...".into()));
    let again: Vec<_> = dirs.iter_mut().map(&mut list).collect();
    assert_eq!(again[0], again[1], "{what}: names listed again");
    assert!(
        again[0].contains(&b"new".to_vec()) && !again[0].contains(&b"...".to_vec()),
        "{what}: listing again through the same descriptor"
    );
}

/// Where entries can be made without going through the mount: the server itself.
enum Direct<'a> {
    /// ramfs, over 9P at this address.
    Ramfs(&'a str),
    /// exportfs, on the disk beneath this directory.
    Disk(&'a Path),
}

/// The `i`th entry of the big directory: its name, and whether it is a directory or a
/// file (and then what it holds).
fn big_entry(i: usize) -> (String, Option<String>) {
    let name = format!("n{i:05}");
    if i % 1000 == 0 {
        (name, None)
    } else if i % 97 == 0 {
        (name, Some(format!("{i}")))
    } else {
        (name, Some(String::new()))
    }
}

fn make_entry(p: &Path, e: &Option<String>) -> io::Result<()> {
    match e {
        None => std::fs::create_dir(p),
        Some(c) if c.is_empty() => File::create(p).map(drop),
        Some(c) => std::fs::write(p, c),
    }
}

/// Make these entries of "big" on the server, past the mount.
fn make_directly(direct: &Direct, entries: &[(String, Option<String>)]) {
    match direct {
        Direct::Disk(d) => {
            for (n, e) in entries {
                make_entry(&d.join("big").join(n), e).expect("make on the disk");
            }
        }
        Direct::Ramfs(addr) => {
            let rt = rt();
            within(&rt, 60, async {
                let c = lib9::Client::dial(addr).await.expect("dial ramfs");
                let root = c.attach(&lib9::ns::user(), "").await.expect("attach ramfs");
                let big = std::sync::Arc::new(
                    root.walk_names(&["big".to_string()])
                        .await
                        .expect("walk to big"),
                );
                let mut set = tokio::task::JoinSet::new();
                for chunk in entries.chunks(entries.len().div_ceil(8).max(1)) {
                    let (big, chunk) = (std::sync::Arc::clone(&big), chunk.to_vec());
                    set.spawn(async move {
                        for (n, e) in chunk {
                            let mut f = big.walk_names(&[]).await?;
                            let perm = if e.is_none() {
                                lib9::fcall::DMDIR | 0o777
                            } else {
                                0o666
                            };
                            let mode = if e.is_none() {
                                lib9::fcall::OREAD
                            } else {
                                lib9::fcall::OWRITE
                            };
                            f.create(&n, perm, mode).await?;
                            if let Some(c) = e.filter(|c| !c.is_empty()) {
                                f.write_all(0, bytes::Bytes::from(c), 1).await?;
                            }
                        }
                        Ok::<_, lib9::client::Error>(())
                    });
                }
                while let Some(r) = set.join_next().await {
                    r.expect("creating task").expect("create over 9P");
                }
            });
        }
    }
}

/// 10,000 entries in one directory, listed; then a seventh removed and some renamed
/// onto their neighbours, and listed again. Through the mount, 8,000 of them are made
/// on the server directly and the last 2,000 through the mount (all 10,000 through it
/// would take most of the time allowed, the debug build being slow per request); all
/// are listed and removed or renamed through it.
fn big_directory(m: &Path, r: &Path, direct: &Direct) {
    const N: usize = 10_000;
    const PAST: usize = 8_000;
    let entries: Vec<_> = (0..N).map(big_entry).collect();
    for root in [m, r] {
        std::fs::create_dir(root.join("big")).expect("mkdir big");
    }
    for (n, e) in &entries {
        make_entry(&r.join("big").join(n), e).expect("make in big (tmpfs)");
    }
    make_directly(direct, &entries[..PAST]);
    for (n, e) in &entries[PAST..] {
        make_entry(&m.join("big").join(n), e).expect("make in big (mount)");
    }
    let list = |root: &Path| {
        let v = listing(&root.join("big")).expect("list big");
        let count = std::fs::read_dir(root.join("big"))
            .expect("read_dir big")
            .count();
        assert_eq!(count, v.len(), "{}: two listings differ", root.display());
        v
    };
    let (a, b) = (list(m), list(r));
    assert_eq!(a.len(), N, "entries listed through the mount");
    assert!(a == b, "the 10,000-entry listings differ");
    for (i, (n, e)) in entries.iter().enumerate().step_by(97 * 3) {
        if let Some(c) = e {
            let got = std::fs::read_to_string(m.join("big").join(n)).expect("read in big");
            assert_eq!(&got, c, "big/{n} (entry {i})");
        }
    }
    for root in [m, r] {
        let d = root.join("big");
        for i in (1..N).filter(|i| i % 1000 != 0) {
            let p = d.join(format!("n{i:05}"));
            if i % 7 == 3 {
                std::fs::remove_file(&p).expect("unlink in big");
            } else if i % 50 == 1 {
                // Onto the next name (gone, if that was removed): replace it.
                let q = d.join(format!("n{:05}", i + 1));
                std::fs::rename(&p, &q).expect("rename in big");
            }
        }
    }
    let (a, b) = (list(m), list(r));
    assert!(a == b, "the thinned big listings differ");
    assert!(a.len() > 8000, "{} entries left", a.len());
}

/// 200 files open at once, written and read interleaved.
fn many_open(m: &Path, r: &Path, rng: &mut Rng) {
    const N: usize = 200;
    let open_all = |root: &Path| -> Vec<File> {
        let d = root.join("many");
        std::fs::create_dir(&d).expect("mkdir many");
        (0..N)
            .map(|i| {
                open_as(How::CreateReadWrite, &d.join(format!("f{i}")))
                    .expect("create and open in many")
            })
            .collect()
    };
    let (fm, fr) = (open_all(m), open_all(r));
    for round in 0..4u64 {
        let mut order: Vec<usize> = (0..N).collect();
        rng.shuffle(&mut order);
        for &i in &order {
            let d = Data {
                len: 1 + rng.below(6000) as usize,
                seed: rng.next(),
            };
            let off = round * 4000 + rng.below(3000);
            let bytes = d.bytes();
            fm[i].write_all_at(&bytes, off).expect("write many (mount)");
            fr[i].write_all_at(&bytes, off).expect("write many (tmpfs)");
            // Read another file back, at another place.
            let j = *rng.pick(&order);
            let (o, n) = (rng.below(16_000), 1 + rng.below(8000) as usize);
            let a = pread_up_to(&fm[j], o, n).expect("read many (mount)");
            let b = pread_up_to(&fr[j], o, n).expect("read many (tmpfs)");
            assert!(
                a == b,
                "many/f{j}: read of {n} at {o} differs ({} and {} bytes)",
                a.len(),
                b.len()
            );
        }
        if round == 2 {
            // Shrink every other file through its descriptor, all still open.
            for i in (0..N).step_by(2) {
                let l = rng.below(9000);
                fm[i].set_len(l).expect("ftruncate many (mount)");
                fr[i].set_len(l).expect("ftruncate many (tmpfs)");
            }
        }
    }
    for i in 0..N {
        let a = fm[i].metadata().expect("fstat many (mount)").len();
        let b = fr[i].metadata().expect("fstat many (tmpfs)").len();
        assert_eq!(a, b, "many/f{i}: sizes");
    }
    drop(fm);
    drop(fr);
}

/// Writers at once: threads writing disjoint ranges of one file, and threads each working
/// in a directory of its own (their results compared too).
fn concurrent(m: &Path, r: &Path, seed: u64) {
    const THREADS: usize = 4;
    const BLOCK: usize = 12_345;
    const BLOCKS: usize = 160;
    const OWN: usize = 6;
    let shared = |root: &Path| {
        let d = root.join("conc");
        std::fs::create_dir(&d).expect("mkdir conc");
        let p = d.join("shared");
        File::create(&p).expect("create shared");
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let p = &p;
                s.spawn(move || {
                    let f = OpenOptions::new().write(true).open(p).expect("open shared");
                    let mut rng = Rng(seed ^ (t as u64 + 1));
                    let mut mine: Vec<usize> = (0..BLOCKS).filter(|k| k % THREADS == t).collect();
                    rng.shuffle(&mut mine);
                    for k in mine {
                        let d = Data {
                            len: BLOCK,
                            seed: (k as u64) << 8 | 0x5a,
                        };
                        f.write_all_at(&d.bytes(), (k * BLOCK) as u64)
                            .expect("write shared");
                    }
                });
            }
        });
    };
    // Each thread: a deterministic sequence in its own directory; the outcomes.
    let own = |root: &Path| -> Vec<Vec<String>> {
        let d = root.join("conc");
        std::thread::scope(|s| {
            let hs: Vec<_> = (0..OWN)
                .map(|t| {
                    let dir = d.join(format!("t{t}"));
                    s.spawn(move || {
                        std::fs::create_dir(&dir).expect("mkdir own");
                        let mut side = Side::new(&dir);
                        let mut rng = Rng(seed.wrapping_mul(31) ^ t as u64);
                        let names = ["a", "b", "c", "d", "e"];
                        let mut log = Vec::new();
                        for _ in 0..60 {
                            let n = rng.pick(&names).to_string();
                            let op = match rng.below(10) {
                                0 | 1 => Op::Create(n),
                                2..=4 => Op::WriteAt(n, rng.offset(), rng.data()),
                                5 => Op::SetLen(n, rng.below(100_000)),
                                6 => Op::Rename(n, rng.pick(&names).to_string()),
                                7 => Op::Unlink(n),
                                8 => Op::ReadAt(n, rng.below(50_000), rng.len()),
                                _ => Op::ReadDir(String::new()),
                            };
                            let o = side.run(&op);
                            log.push(format!("{op:?} -> {o:?}"));
                        }
                        log
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("own-directory thread"))
                .collect()
        })
    };
    // The mount and the reference each at once, both with the same threads.
    std::thread::scope(|s| {
        s.spawn(|| shared(m));
        s.spawn(|| shared(r));
    });
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| own(m));
        let b = s.spawn(|| own(r));
        (
            a.join().expect("own (mount)"),
            b.join().expect("own (tmpfs)"),
        )
    });
    for (t, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        for (k, (p, q)) in x.iter().zip(y.iter()).enumerate() {
            assert!(
                p == q,
                "thread {t}, operation {k}:\n  mount: {p:.300}\n  tmpfs: {q:.300}"
            );
        }
    }
    let len = std::fs::metadata(m.join("conc/shared"))
        .expect("stat shared")
        .len();
    assert_eq!(len, (BLOCK * BLOCKS) as u64, "conc/shared: size");
}

/// Everything, against one mount (`cached` if it is mounted with -c).
fn exercise(what: &'static str, m: &Path, r: &Path, direct: &Direct, cached: bool, seed: u64) {
    let t = Instant::now();
    let steps = match std::env::var("NINESPACE_FUSE_STEPS") {
        Ok(s) => s.parse().expect("NINESPACE_FUSE_STEPS: a number"),
        Err(_) => STEPS,
    };
    let mut x = Exerciser::new(what, m, r, seed);
    x.cached = cached;
    found(&mut x);
    x.random(steps);
    same_trees(what, m, r);
    names(what, m, r);
    let t_random = t.elapsed();
    big_directory(m, r, direct);
    let t_big = t.elapsed();
    many_open(m, r, &mut x.rng);
    let t_many = t.elapsed();
    concurrent(m, r, seed);
    let t_conc = t.elapsed();
    same_trees(what, m, r);
    eprintln!(
        "{what}: random {steps} steps {t_random:.1?}, 10,000 entries {:.1?}, 200 open {:.1?}, \
         concurrent {:.1?}, final comparison {:.1?}",
        t_big - t_random,
        t_many - t_big,
        t_conc - t_many,
        t.elapsed() - t_conc
    );
}

/// The seed: NINESPACE_FUSE_SEED if set (to replay or explore), else a fixed one.
fn seed(fixed: u64) -> u64 {
    match std::env::var("NINESPACE_FUSE_SEED") {
        Ok(s) => s.parse().expect("NINESPACE_FUSE_SEED: a number"),
        Err(_) => fixed,
    }
}

/// ramfs through 9pfuse against tmpfs.
#[test]
fn ramfs_against_tmpfs() {
    let ns = Ns::new();
    let srv = start_posted(&ns, RAMFS, "ram", &[]);
    let Some(m) = Mount::new(&ns, "ram", &[]) else {
        return;
    };
    let reference = Reference::new();
    let _dog = Watchdog::new(&m);
    exercise(
        "ramfs",
        &m.dir,
        &reference.dir,
        &Direct::Ramfs(&srv.addr),
        false,
        seed(0x9f5e_0001),
    );
}

/// exportfs (of a directory under the temporary directory) through 9pfuse against
/// tmpfs; and then the exported directory itself against tmpfs.
#[test]
fn exportfs_against_tmpfs() {
    let ns = Ns::new();
    let tree = tempfile::tempdir().expect("tempdir");
    let root = tree.path().to_string_lossy().into_owned();
    let _srv = start_posted(&ns, EXPORTFS, "exp", &[&root]);
    let Some(m) = Mount::new(&ns, "exp", &[]) else {
        return;
    };
    let reference = Reference::new();
    let _dog = Watchdog::new(&m);
    exercise(
        "exportfs",
        &m.dir,
        &reference.dir,
        &Direct::Disk(tree.path()),
        false,
        seed(0x9f5e_0002),
    );
    // And what went through the mount is on the disk.
    same_trees("exportfs (the disk)", tree.path(), &reference.dir);
}

/// ramfs through 9pfuse -c (pages, names and attributes cached by the kernel) against
/// tmpfs: what the program sees must not change with the cache.
#[test]
fn ramfs_cached_against_tmpfs() {
    let ns = Ns::new();
    let srv = start_posted(&ns, RAMFS, "ram", &[]);
    let Some(m) = Mount::new(&ns, "ram", &["-c"]) else {
        return;
    };
    let reference = Reference::new();
    let _dog = Watchdog::new(&m);
    exercise(
        "ramfs -c",
        &m.dir,
        &reference.dir,
        &Direct::Ramfs(&srv.addr),
        true,
        seed(0x9f5e_0003),
    );
}

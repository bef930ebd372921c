//! The union directory server: Plan 9's `bind -a`/`bind -b`/`mount -a` unions on Linux,
//! as a FUSE file system (see docs/union.md).
//!
//! The members are open directory descriptors, in order. At the top of the union a
//! name is looked up in each member in turn and the first that has it wins; a listing
//! is every member's entries with the first member's entry winning a name found in
//! several; a new name (create, mkdir, mknod, symlink, link) goes to the first member
//! bound with the create flag, and without one the union creates nothing (`EPERM`).
//! Below the top there is no merging: a directory found in member k is member k's
//! directory, served as a plain pass-through of that subtree, as in Plan 9.
//!
//! Every file the kernel knows is held as an `O_PATH` descriptor, reached from a
//! member's descriptor with `*at` calls (never a path from the mount point, which the
//! union may cover); calls that take no directory descriptor go through
//! `/proc/self/fd/N`. Inode numbers come from the member, the device and the inode
//! (`(index of (member, st_dev) + 1) << 48 | st_ino`), so they are stable and hard
//! links share one; a node is dropped when the kernel forgets it.
//!
//! Reads and writes go straight from the kernel to the member's file (FUSE
//! passthrough) where the kernel allows it (root in the initial user namespace);
//! elsewhere they are `pread`/`pwrite` on a descriptor of our own, with the page cache
//! kept between opens, from several threads.

use fuser::{
    AccessFlags, BackingId, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags,
    Generation, INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow, WriteFlags,
};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One directory of a union.
pub struct Member {
    /// An open directory (`O_RDONLY|O_DIRECTORY` or `O_PATH|O_DIRECTORY`).
    pub dir: OwnedFd,
    /// Bound with `-c`: new names may be made here.
    pub create: bool,
    /// What was bound, for `ns` and the mount table (`/home/u/bin`, `mount unix!/srv/x aname`).
    pub label: String,
}

/// How long the kernel may keep names and attributes: members are local trees.
const TTL: Duration = Duration::from_secs(1);

/// The biggest read or write the kernel is asked to send at once.
const MAX_IO: u32 = 1 << 20;

/// Inode numbers at or above this were allocated (the file's own did not fit).
const OVERFLOW: u64 = 1 << 63;

/// Threads reading requests from the kernel.
const THREADS: usize = 4;

// ---------------------------------------------------------------------------------------
// The mount source string.

/// Bytes written as `%XX` in a label: what would split the source string, what the
/// mount table escapes, and what fusermount treats specially.
fn must_escape(b: u8) -> bool {
    b <= b' ' || b == 0x7f || matches!(b, b'%' | b':' | b',' | b'\\')
}

fn escape(s: &str, out: &mut String) {
    for &b in s.as_bytes() {
        if must_escape(b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            // Not escaped: ASCII, or part of a UTF-8 sequence copied whole below.
            out.push(b as char);
        }
    }
}

/// The mount source recorded in `/proc/self/mountinfo` for a union served by process
/// `pid`: `union@PID:FD=LABEL:FDc=LABEL...`, one `:FD[c]=LABEL` per member in order,
/// `c` marking the create flag, the label with `%`, `:`, `,`, `\`, spaces and control
/// characters written as `%XX`. Example:
/// `union@4242:5c=/home/u/bin:6=mount%20unix!/tmp/ns.u/ramfs%20aname`.
pub fn source(pid: u32, members: &[Member]) -> String {
    let mut s = format!("union@{pid}");
    for m in members {
        s.push_str(&format!(
            ":{}{}=",
            m.dir.as_raw_fd(),
            if m.create { "c" } else { "" }
        ));
        // Non-ASCII is copied as it is (UTF-8); only ASCII bytes are ever escaped.
        let mut esc = String::with_capacity(m.label.len());
        for ch in m.label.chars() {
            if ch.is_ascii() {
                escape(ch.encode_utf8(&mut [0; 4]), &mut esc);
            } else {
                esc.push(ch);
            }
        }
        s.push_str(&esc);
    }
    s
}

/// A member as the mount source names it: its descriptor in the serving process, its
/// create flag, its label.
pub type SourceMember = (i32, bool, String);

/// Parse a mount source made by [`source`] (the mount table's field with its own
/// escapes undone): the daemon's pid and, per member in order, its descriptor in that
/// process, its create flag and its label. `None` if it is not one of ours.
pub fn parse_source(s: &str) -> Option<(u32, Vec<SourceMember>)> {
    let rest = s.strip_prefix("union@")?;
    let mut parts = rest.split(':');
    let pid = parts.next()?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pid: u32 = pid.parse().ok()?;
    let mut members = Vec::new();
    for p in parts {
        let (head, label) = p.split_once('=')?;
        let (fd, create) = match head.strip_suffix('c') {
            Some(fd) => (fd, true),
            None => (head, false),
        };
        if fd.is_empty() || !fd.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let fd: i32 = fd.parse().ok()?;
        members.push((fd, create, unescape(label)?));
    }
    Some((pid, members))
}

fn unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            if !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The session configuration to mount a [`Union`] with: `source` as the file system's
/// name, subtype `union` (type `fuse.union`), device files allowed (a union over
/// `/dev`), only the owner may enter, several threads.
pub fn config(source: &str) -> Config {
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName(source.to_string()),
        // fusermount takes the subtype from this one; a mount(2) by fuser itself
        // passes only the kernel's options, so the subtype goes there as well.
        MountOption::Subtype("union".to_string()),
        MountOption::CUSTOM("subtype=union".to_string()),
        MountOption::Dev,
    ];
    c.acl = SessionACL::Owner;
    c.n_threads = Some(THREADS);
    c.clone_fd = true;
    c
}

// ---------------------------------------------------------------------------------------
// System calls.

fn errno_now() -> Errno {
    Errno::from_i32(
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn cvt(r: libc::c_int) -> Result<libc::c_int, Errno> {
    if r < 0 { Err(errno_now()) } else { Ok(r) }
}

fn cvt_size(r: libc::ssize_t) -> Result<usize, Errno> {
    if r < 0 {
        Err(errno_now())
    } else {
        Ok(r as usize)
    }
}

fn openat(
    dir: RawFd,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, Errno> {
    loop {
        // SAFETY: a NUL-terminated name; the result is a new descriptor we own.
        let fd = unsafe { libc::openat(dir, name.as_ptr(), flags | libc::O_CLOEXEC, mode) };
        if fd >= 0 {
            // SAFETY: just opened, owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let e = errno_now();
        if e.code() != libc::EINTR {
            return Err(e);
        }
    }
}

fn fstat(fd: RawFd) -> Result<libc::stat, Errno> {
    // SAFETY: stat is plain data; the kernel fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: an empty name with AT_EMPTY_PATH stats the descriptor itself.
    cvt(unsafe {
        libc::fstatat(
            fd,
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

fn fstatat(dir: RawFd, name: &CStr) -> Result<libc::stat, Errno> {
    // SAFETY: as above.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated name relative to a directory descriptor.
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// `/proc/self/fd/N`, for the calls that take no directory descriptor.
fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).unwrap_or_default()
}

fn kind_of(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn kind_of_dtype(t: u8) -> Option<FileType> {
    Some(match t {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_SOCK => FileType::Socket,
        libc::DT_REG => FileType::RegularFile,
        _ => return None,
    })
}

fn time(s: i64, ns: i64) -> SystemTime {
    let ns = Duration::from_nanos(ns.clamp(0, 999_999_999) as u64);
    if s >= 0 {
        UNIX_EPOCH
            .checked_add(Duration::from_secs(s as u64) + ns)
            .unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH
            .checked_sub(Duration::from_secs(s.unsigned_abs()))
            .and_then(|t| t.checked_add(ns))
            .unwrap_or(UNIX_EPOCH)
    }
}

fn attr(ino: u64, st: &libc::stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: st.st_size.max(0) as u64,
        blocks: st.st_blocks.max(0) as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind_of(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        // The kernel's encoding of a device number is the low 32 bits of glibc's for
        // majors below 4096 and minors below 2^20.
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// A name the kernel hands us, checked to stay in its directory.
fn cname(name: &OsStr) -> Result<CString, Errno> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') {
        return Err(Errno::EINVAL);
    }
    CString::new(b).map_err(|_| Errno::EINVAL)
}

/// The process's umask, read without changing it (other threads may be creating).
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// May this process hand the kernel backing files (FUSE passthrough)? The kernel asks
/// for CAP_SYS_ADMIN in the initial user namespace. `NINESPACE_UNION_PASSTHROUGH=0`
/// turns it off (to compare, or to work around a kernel's bug).
fn may_passthrough() -> bool {
    if std::env::var_os("NINESPACE_UNION_PASSTHROUGH").is_some_and(|v| v == "0") {
        return false;
    }
    // SAFETY: no arguments.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => {
            let f: Vec<&str> = m.split_whitespace().collect();
            f == ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

fn raise_nofile() {
    // SAFETY: plain data filled and read by the kernel.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// One directory entry as read from a member.
struct Ent {
    name: CString,
    kind: FileType,
    member: usize,
    /// The inode number to show in a plain listing.
    ino: u64,
}

/// Every entry of directory `dir` but `.` and `..`: `(name, type, d_ino)`.
fn read_dir(dir: RawFd) -> Result<Vec<(CString, FileType, u64)>, Errno> {
    let d = openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = Vec::new();
    loop {
        // SAFETY: the kernel writes at most buf.len() bytes into buf.
        let n = unsafe {
            libc::syscall(
                libc::SYS_getdents64,
                d.as_raw_fd(),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        if n < 0 {
            let e = errno_now();
            if e.code() == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        let n = n as usize;
        if n == 0 {
            break;
        }
        let mut off = 0;
        // struct linux_dirent64 { u64 d_ino; i64 d_off; u16 d_reclen; u8 d_type; char d_name[]; }
        while off + 19 <= n {
            let ino = u64::from_ne_bytes(buf[off..off + 8].try_into().unwrap_or([0; 8]));
            let reclen =
                u16::from_ne_bytes(buf[off + 16..off + 18].try_into().unwrap_or([0; 2])) as usize;
            let dtype = buf[off + 18];
            if reclen < 19 || off + reclen > n {
                return Err(Errno::EIO);
            }
            let name_bytes = &buf[off + 19..off + reclen];
            let len = name_bytes
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(name_bytes.len());
            let name = &name_bytes[..len];
            off += reclen;
            if name.is_empty() || name == b"." || name == b".." {
                continue;
            }
            let Ok(name) = CString::new(name) else {
                continue;
            };
            let kind = match kind_of_dtype(dtype) {
                Some(k) => k,
                None => match fstatat(d.as_raw_fd(), &name) {
                    Ok(st) => kind_of(st.st_mode),
                    Err(_) => continue,
                },
            };
            out.push((name, kind, ino));
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------
// The server's state.

struct Node {
    member: usize,
    /// `O_PATH` descriptor of the file.
    fd: Arc<OwnedFd>,
    key: (usize, u64, u64),
    kind: FileType,
    nlookup: u64,
    /// The backing file registered for passthrough while some open holds it.
    backing: Weak<BackingId>,
    /// Opens answered without passthrough (the kernel refuses to mix the two).
    cached: u32,
}

#[derive(Default)]
struct Tables {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(usize, u64, u64), u64>,
    /// `(member, st_dev)` pairs seen, their index giving the top bits of inode numbers.
    devs: Vec<(usize, u64)>,
    next_overflow: u64,
}

impl Tables {
    fn dev_index(&mut self, member: usize, dev: u64) -> usize {
        match self.devs.iter().position(|&d| d == (member, dev)) {
            Some(i) => i,
            None => {
                self.devs.push((member, dev));
                self.devs.len() - 1
            }
        }
    }

    /// The inode number of `(member, dev, ino)`, computed when it fits.
    fn number(&mut self, member: usize, dev: u64, ino: u64, allocate: bool) -> u64 {
        if let Some(&n) = self.by_key.get(&(member, dev, ino)) {
            return n;
        }
        let i = self.dev_index(member, dev) as u64 + 1;
        if ino < (1 << 48) && i < (1 << 15) {
            (i << 48) | ino
        } else if allocate {
            self.next_overflow += 1;
            OVERFLOW | self.next_overflow
        } else {
            // Only shown in a listing; a lookup will give the real one.
            OVERFLOW - 1 - (ino & ((1 << 48) - 1))
        }
    }
}

struct MemberFd {
    fd: Arc<OwnedFd>,
}

/// An open file.
struct FileH {
    fd: OwnedFd,
    ino: u64,
    cached: bool,
    _backing: Option<Arc<BackingId>>,
}

/// An open directory.
struct DirH {
    ino: u64,
    /// The directory, opened for reading (`None` for the union's top).
    fd: Option<OwnedFd>,
    entries: Mutex<Option<Arc<Vec<Ent>>>>,
}

/// A union directory, served over FUSE.
pub struct Union {
    members: Vec<MemberFd>,
    /// The member new names go to.
    create: Option<usize>,
    tables: Mutex<Tables>,
    files: RwLock<HashMap<u64, Arc<FileH>>>,
    dirs: Mutex<HashMap<u64, Arc<DirH>>>,
    next_fh: AtomicU64,
    passthrough: AtomicBool,
    umask: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

impl Union {
    /// A union of `members`, looked through in order.
    pub fn new(members: Vec<Member>) -> Union {
        raise_nofile();
        let create = members.iter().position(|m| m.create);
        Union {
            members: members
                .into_iter()
                .map(|m| MemberFd {
                    fd: Arc::new(m.dir),
                })
                .collect(),
            create,
            tables: Mutex::new(Tables::default()),
            files: RwLock::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            passthrough: AtomicBool::new(false),
            umask: process_umask(),
        }
    }

    fn fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    /// The descriptor, member and type of inode `ino` (the top: the first member).
    fn node(&self, ino: INodeNo) -> Result<(Arc<OwnedFd>, usize, FileType), Errno> {
        if ino.0 == 1 {
            let m = self.members.first().ok_or(Errno::ENOENT)?;
            return Ok((Arc::clone(&m.fd), 0, FileType::Directory));
        }
        let t = lock(&self.tables);
        let n = t.nodes.get(&ino.0).ok_or(Errno::ESTALE)?;
        Ok((Arc::clone(&n.fd), n.member, n.kind))
    }

    /// A directory inode's descriptor and member (not the top).
    fn dir_node(&self, ino: INodeNo) -> Result<(Arc<OwnedFd>, usize), Errno> {
        let (fd, m, kind) = self.node(ino)?;
        if kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        Ok((fd, m))
    }

    /// Where a new name in directory `parent` goes.
    fn create_dir(&self, parent: INodeNo) -> Result<(Arc<OwnedFd>, usize), Errno> {
        if parent.0 == 1 {
            let c = self.create.ok_or(Errno::EPERM)?;
            return Ok((Arc::clone(&self.members[c].fd), c));
        }
        self.dir_node(parent)
    }

    /// The first member holding `name` at the top, with the file's `O_PATH` descriptor.
    fn find_top(&self, name: &CStr) -> Result<(usize, OwnedFd), Errno> {
        let mut first_err = None;
        for (i, m) in self.members.iter().enumerate() {
            match openat(m.fd.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0) {
                Ok(fd) => return Ok((i, fd)),
                Err(e) if e.code() == libc::ENOENT => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        Err(first_err.unwrap_or(Errno::ENOENT))
    }

    /// The directory holding `name` in `parent`, for calls on an existing name.
    fn holder(&self, parent: INodeNo, name: &CStr) -> Result<(Arc<OwnedFd>, usize), Errno> {
        if parent.0 == 1 {
            let (m, _) = self.find_top(name)?;
            return Ok((Arc::clone(&self.members[m].fd), m));
        }
        self.dir_node(parent)
    }

    /// Count a lookup of the file open as `fd` (an `O_PATH` descriptor), found in `member`.
    fn remember(&self, member: usize, fd: OwnedFd) -> Result<FileAttr, Errno> {
        let st = fstat(fd.as_raw_fd())?;
        let key = (member, st.st_dev, st.st_ino);
        let mut t = lock(&self.tables);
        if let Some(&ino) = t.by_key.get(&key) {
            if let Some(n) = t.nodes.get_mut(&ino) {
                n.nlookup += 1;
                // The newest descriptor is the one surely still linked.
                n.fd = Arc::new(fd);
                return Ok(attr(ino, &st));
            }
        }
        let ino = t.number(member, st.st_dev, st.st_ino, true);
        t.by_key.insert(key, ino);
        t.nodes.insert(
            ino,
            Node {
                member,
                fd: Arc::new(fd),
                key,
                kind: kind_of(st.st_mode),
                nlookup: 1,
                backing: Weak::new(),
                cached: 0,
            },
        );
        Ok(attr(ino, &st))
    }

    fn forget_n(&self, ino: u64, n: u64) {
        if ino == 1 {
            return;
        }
        let mut t = lock(&self.tables);
        let gone = match t.nodes.get_mut(&ino) {
            Some(node) => {
                node.nlookup = node.nlookup.saturating_sub(n);
                (node.nlookup == 0).then_some(node.key)
            }
            None => None,
        };
        if let Some(key) = gone {
            t.nodes.remove(&ino);
            t.by_key.remove(&key);
        }
    }

    /// Look `name` up in `dir` of `member`, counting it.
    fn lookup_in(&self, member: usize, dir: RawFd, name: &CStr) -> Result<FileAttr, Errno> {
        let fd = openat(dir, name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        self.remember(member, fd)
    }

    fn lookup_name(&self, parent: INodeNo, name: &CStr) -> Result<FileAttr, Errno> {
        if parent.0 == 1 {
            let (m, fd) = self.find_top(name)?;
            return self.remember(m, fd);
        }
        let (dir, m) = self.dir_node(parent)?;
        self.lookup_in(m, dir.as_raw_fd(), name)
    }

    fn getattr_of(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        if let Some(fh) = fh {
            let f = self.files.read().ok().and_then(|m| m.get(&fh.0).cloned());
            if let Some(f) = f {
                return Ok(attr(ino.0, &fstat(f.fd.as_raw_fd())?));
            }
        }
        if ino.0 == 1 && self.members.is_empty() {
            return Ok(self.empty_root());
        }
        let (fd, _, _) = self.node(ino)?;
        Ok(attr(ino.0, &fstat(fd.as_raw_fd())?))
    }

    /// The top of a union of nothing: an empty directory.
    fn empty_root(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(1),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 2,
            // SAFETY: no arguments.
            uid: unsafe { libc::geteuid() },
            // SAFETY: no arguments.
            gid: unsafe { libc::getegid() },
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }

    /// Give a new file the permissions asked for where our own umask took some away.
    fn fix_mode(&self, dir: RawFd, name: &CStr, mode: u32) {
        let perm = mode & 0o7777;
        if perm & self.umask != 0 {
            // SAFETY: a NUL-terminated name relative to a directory descriptor.
            unsafe { libc::fchmodat(dir, name.as_ptr(), perm, 0) };
        }
    }

    fn file(&self, fh: FileHandle) -> Result<Arc<FileH>, Errno> {
        self.files
            .read()
            .map_err(|_| Errno::EIO)?
            .get(&fh.0)
            .cloned()
            .ok_or(Errno::EBADF)
    }

    /// Register an open of node `ino` as `fd`: try passthrough, else count a cached open.
    fn open_file(
        &self,
        ino: u64,
        fd: OwnedFd,
        open_backing: impl FnOnce(&OwnedFd) -> std::io::Result<BackingId>,
    ) -> (u64, Option<Arc<BackingId>>) {
        let mut backing = None;
        let mut cached = false;
        {
            let mut t = lock(&self.tables);
            if let Some(n) = t.nodes.get_mut(&ino) {
                if n.kind == FileType::RegularFile && self.passthrough.load(Ordering::Relaxed) {
                    if let Some(b) = n.backing.upgrade() {
                        backing = Some(b);
                    } else if n.cached == 0 {
                        match open_backing(&fd) {
                            Ok(b) => {
                                let b = Arc::new(b);
                                n.backing = Arc::downgrade(&b);
                                backing = Some(b);
                            }
                            Err(e) => {
                                if e.raw_os_error() == Some(libc::EPERM) {
                                    // Not privileged after all: stop asking.
                                    self.passthrough.store(false, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
                if backing.is_none() {
                    n.cached += 1;
                    cached = true;
                }
            }
        }
        let fh = self.fh();
        let f = Arc::new(FileH {
            fd,
            ino,
            cached,
            _backing: backing.clone(),
        });
        if let Ok(mut m) = self.files.write() {
            m.insert(fh, f);
        }
        (fh, backing)
    }

    /// The entries of directory `ino`, with `.` and `..` first.
    fn listing(&self, d: &DirH) -> Result<Arc<Vec<Ent>>, Errno> {
        let mut out = vec![
            Ent {
                name: c".".to_owned(),
                kind: FileType::Directory,
                member: 0,
                ino: d.ino,
            },
            Ent {
                name: c"..".to_owned(),
                kind: FileType::Directory,
                member: 0,
                ino: 1,
            },
        ];
        if d.ino == 1 {
            let mut seen: HashSet<CString> = HashSet::new();
            let mut first_err = None;
            let mut any = false;
            for (i, m) in self.members.iter().enumerate() {
                let dev = fstat(m.fd.as_raw_fd()).map(|s| s.st_dev).unwrap_or(0);
                let ents = match read_dir(m.fd.as_raw_fd()) {
                    Ok(e) => e,
                    Err(e) => {
                        first_err.get_or_insert(e);
                        continue;
                    }
                };
                any = true;
                let mut t = lock(&self.tables);
                for (name, kind, dino) in ents {
                    if seen.contains(&name) {
                        continue;
                    }
                    seen.insert(name.clone());
                    let ino = t.number(i, dev, dino, false);
                    out.push(Ent {
                        name,
                        kind,
                        member: i,
                        ino,
                    });
                }
            }
            if let (false, Some(e)) = (any, first_err) {
                return Err(e);
            }
        } else {
            let (member, dev) = {
                let t = lock(&self.tables);
                let n = t.nodes.get(&d.ino).ok_or(Errno::ESTALE)?;
                (n.member, n.key.1)
            };
            let fd = d.fd.as_ref().ok_or(Errno::EBADF)?;
            let ents = read_dir(fd.as_raw_fd())?;
            let mut t = lock(&self.tables);
            for (name, kind, dino) in ents {
                let ino = t.number(member, dev, dino, false);
                out.push(Ent {
                    name,
                    kind,
                    member,
                    ino,
                });
            }
        }
        Ok(Arc::new(out))
    }

    fn dir_entries(
        &self,
        fh: FileHandle,
        offset: u64,
    ) -> Result<(Arc<DirH>, Arc<Vec<Ent>>), Errno> {
        let d = lock(&self.dirs).get(&fh.0).cloned().ok_or(Errno::EBADF)?;
        let mut cur = lock(&d.entries);
        let ents = match (&*cur, offset) {
            (Some(e), o) if o != 0 => Arc::clone(e),
            _ => {
                let e = self.listing(&d)?;
                *cur = Some(Arc::clone(&e));
                e
            }
        };
        drop(cur);
        Ok((d, ents))
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr_of(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let (fd, _, kind) = self.node(ino)?;
        let raw = fd.as_raw_fd();
        let open = fh.and_then(|fh| self.file(fh).ok());
        if let Some(m) = mode {
            if kind == FileType::Symlink {
                return Err(Errno::EOPNOTSUPP);
            }
            let p = proc_path(raw);
            // SAFETY: a NUL-terminated path.
            cvt(unsafe { libc::chmod(p.as_ptr(), m & 0o7777) })?;
        }
        if uid.is_some() || gid.is_some() {
            // SAFETY: an empty name with AT_EMPTY_PATH acts on the descriptor itself.
            cvt(unsafe {
                libc::fchownat(
                    raw,
                    c"".as_ptr(),
                    uid.unwrap_or(u32::MAX),
                    gid.unwrap_or(u32::MAX),
                    libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                )
            })?;
        }
        if let Some(s) = size {
            let s = libc::off_t::try_from(s).map_err(|_| Errno::EFBIG)?;
            // SAFETY: our descriptor.
            let by_fd = open
                .as_ref()
                .map(|f| unsafe { libc::ftruncate(f.fd.as_raw_fd(), s) } == 0)
                .unwrap_or(false);
            if !by_fd {
                let p = proc_path(raw);
                // SAFETY: a NUL-terminated path.
                cvt(unsafe { libc::truncate(p.as_ptr(), s) })?;
            }
        }
        if atime.is_some() || mtime.is_some() {
            let ts = |t: Option<TimeOrNow>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(TimeOrNow::Now) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(TimeOrNow::SpecificTime(t)) => match t.duration_since(UNIX_EPOCH) {
                    Ok(d) => libc::timespec {
                        tv_sec: d.as_secs() as libc::time_t,
                        tv_nsec: d.subsec_nanos() as libc::c_long,
                    },
                    Err(e) => {
                        let d = e.duration();
                        let mut sec = -(d.as_secs() as libc::time_t);
                        let mut nsec = d.subsec_nanos() as libc::c_long;
                        if nsec > 0 {
                            sec -= 1;
                            nsec = 1_000_000_000 - nsec;
                        }
                        libc::timespec {
                            tv_sec: sec,
                            tv_nsec: nsec,
                        }
                    }
                },
            };
            let times = [ts(atime), ts(mtime)];
            if kind == FileType::Symlink {
                // SAFETY: an empty name with AT_EMPTY_PATH acts on the descriptor itself.
                cvt(unsafe {
                    libc::utimensat(raw, c"".as_ptr(), times.as_ptr(), libc::AT_EMPTY_PATH)
                })?;
            } else {
                let p = proc_path(raw);
                // SAFETY: a NUL-terminated path and two timespecs.
                cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })?;
            }
        }
        let st = match &open {
            Some(f) => fstat(f.fd.as_raw_fd())?,
            None => fstat(raw)?,
        };
        Ok(attr(ino.0, &st))
    }

    fn rename_in(
        &self,
        parent: INodeNo,
        name: &CStr,
        newparent: INodeNo,
        newname: &CStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        let (from, m) = self.holder(parent, name)?;
        let to = if newparent.0 == 1 {
            // The new name lands in the source's member; one an earlier member shows
            // instead would leave the renamed file hidden, so that is a copy's job.
            match self.find_top(newname) {
                Ok((j, _)) if j < m => return Err(Errno::EXDEV),
                _ => {}
            }
            Arc::clone(&self.members[m].fd)
        } else {
            let (to, j) = self.dir_node(newparent)?;
            if j != m {
                return Err(Errno::EXDEV);
            }
            to
        };
        // SAFETY: NUL-terminated names relative to directory descriptors.
        let r = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                from.as_raw_fd(),
                name.as_ptr(),
                to.as_raw_fd(),
                newname.as_ptr(),
                flags.bits(),
            )
        };
        if r < 0 { Err(errno_now()) } else { Ok(()) }
    }
}

fn reply_entry(reply: ReplyEntry, r: Result<FileAttr, Errno>) {
    match r {
        Ok(a) => reply.entry(&TTL, &a, Generation(0)),
        Err(e) => reply.error(e),
    }
}

fn reply_empty(reply: ReplyEmpty, r: Result<(), Errno>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// Flags for our own descriptor of a file the kernel opens.
fn own_flags(flags: i32) -> i32 {
    flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW | libc::O_DIRECT)
}

impl Filesystem for Union {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config
            .set_max_write(MAX_IO)
            .or_else(|m| config.set_max_write(m));
        let _ = config
            .set_max_readahead(MAX_IO)
            .or_else(|m| config.set_max_readahead(m));
        let _ = config.set_max_background(64);
        for f in [
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            InitFlags::FUSE_AUTO_INVAL_DATA,
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_ATOMIC_O_TRUNC,
            InitFlags::FUSE_CACHE_SYMLINKS,
        ] {
            let _ = config.add_capabilities(f);
        }
        // Depth 2: members on overlayfs (depth 1) can still back our files.
        if may_passthrough()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(2).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Ok(name) = cname(name) else {
            return reply.error(Errno::ENOENT);
        };
        reply_entry(reply, self.lookup_name(parent, &name));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.forget_n(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_of(ino, mode, uid, gid, size, atime, mtime, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let r = (|| {
            let (fd, _, _) = self.node(ino)?;
            let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
            // SAFETY: the kernel writes at most buf.len() bytes.
            let n = cvt_size(unsafe {
                libc::readlinkat(
                    fd.as_raw_fd(),
                    c"".as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            })?;
            buf.truncate(n);
            Ok(buf)
        })();
        match r {
            Ok(b) => reply.data(&b),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let name = cname(name)?;
            let (dir, m) = self.create_dir(parent)?;
            // SAFETY: a NUL-terminated name relative to a directory descriptor.
            cvt(unsafe {
                libc::mknodat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    mode,
                    libc::dev_t::from(rdev),
                )
            })?;
            self.fix_mode(dir.as_raw_fd(), &name, mode);
            self.lookup_in(m, dir.as_raw_fd(), &name)
        })();
        reply_entry(reply, r);
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let name = cname(name)?;
            let (dir, m) = self.create_dir(parent)?;
            // SAFETY: as above.
            cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode & 0o7777) })?;
            self.fix_mode(dir.as_raw_fd(), &name, mode);
            self.lookup_in(m, dir.as_raw_fd(), &name)
        })();
        reply_entry(reply, r);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            let name = cname(name)?;
            let (dir, _) = self.holder(parent, &name)?;
            // SAFETY: as above.
            cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) }).map(|_| ())
        })();
        reply_empty(reply, r);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let r = (|| {
            let name = cname(name)?;
            let (dir, _) = self.holder(parent, &name)?;
            // SAFETY: as above.
            cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), libc::AT_REMOVEDIR) })
                .map(|_| ())
        })();
        reply_empty(reply, r);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let name = cname(link_name)?;
            let target = CString::new(target.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
            let (dir, m) = self.create_dir(parent)?;
            // SAFETY: NUL-terminated strings.
            cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
            self.lookup_in(m, dir.as_raw_fd(), &name)
        })();
        reply_entry(reply, r);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let r = (|| {
            let name = cname(name)?;
            let newname = cname(newname)?;
            self.rename_in(parent, &name, newparent, &newname, flags)
        })();
        reply_empty(reply, r);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let r = (|| {
            let name = cname(newname)?;
            if ino.0 == 1 {
                return Err(Errno::EPERM);
            }
            let (fd, m, _) = self.node(ino)?;
            // A new name at the top is a creation: it goes to the create member.
            let (dir, j) = self.create_dir(newparent)?;
            if j != m {
                return Err(Errno::EXDEV);
            }
            let p = proc_path(fd.as_raw_fd());
            // SAFETY: NUL-terminated names; following /proc/self/fd/N reaches the file
            // itself (it needs no privilege, unlike AT_EMPTY_PATH).
            cvt(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    p.as_ptr(),
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })?;
            self.lookup_in(m, dir.as_raw_fd(), &name)
        })();
        reply_entry(reply, r);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let (fd, _, kind) = self.node(ino)?;
            if kind == FileType::Directory {
                return Err(Errno::EISDIR);
            }
            let p = proc_path(fd.as_raw_fd());
            openat(libc::AT_FDCWD, &p, own_flags(flags.0), 0)
        })();
        let fd = match r {
            Ok(fd) => fd,
            Err(e) => return reply.error(e),
        };
        let (fh, backing) = self.open_file(ino.0, fd, |fd| reply.open_backing(fd));
        match backing {
            Some(b) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &b),
            None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        READ_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            let size = size.min(16 << 20) as usize;
            if buf.len() < size {
                buf.resize(size, 0);
            }
            let mut got = 0;
            while got < size {
                let Ok(off) = libc::off_t::try_from(offset + got as u64) else {
                    break;
                };
                // SAFETY: the kernel writes at most size - got bytes past got.
                let n = unsafe {
                    libc::pread(
                        f.fd.as_raw_fd(),
                        buf[got..].as_mut_ptr().cast(),
                        size - got,
                        off,
                    )
                };
                if n < 0 {
                    let e = errno_now();
                    if e.code() == libc::EINTR {
                        continue;
                    }
                    if got == 0 {
                        return reply.error(e);
                    }
                    break;
                }
                if n == 0 {
                    break;
                }
                got += n as usize;
            }
            reply.data(&buf[..got]);
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let f = match self.file(fh) {
            Ok(f) => f,
            Err(e) => return reply.error(e),
        };
        let mut done = 0;
        while done < data.len() {
            let Ok(off) = libc::off_t::try_from(offset + done as u64) else {
                return reply.error(Errno::EFBIG);
            };
            // SAFETY: reading data.len() - done bytes from data.
            let n = unsafe {
                libc::pwrite(
                    f.fd.as_raw_fd(),
                    data[done..].as_ptr().cast(),
                    data.len() - done,
                    off,
                )
            };
            if n < 0 {
                let e = errno_now();
                if e.code() == libc::EINTR {
                    continue;
                }
                if done == 0 {
                    return reply.error(e);
                }
                break;
            }
            if n == 0 {
                break;
            }
            done += n as usize;
        }
        reply.written(done as u32);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // A close of a copy of our descriptor: what a close means to the member's file
        // system (NFS writes back) happens now, as the program's close returns.
        let r = self.file(fh).and_then(|f| {
            let d = f.fd.try_clone().map_err(|_| errno_now())?;
            // SAFETY: closing the copy we own.
            cvt(unsafe { libc::close(std::os::fd::IntoRawFd::into_raw_fd(d)) }).map(|_| ())
        });
        reply_empty(reply, r);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let f = self.files.write().ok().and_then(|mut m| m.remove(&fh.0));
        if let Some(f) = f {
            if f.cached {
                let mut t = lock(&self.tables);
                if let Some(n) = t.nodes.get_mut(&f.ino) {
                    n.cached = n.cached.saturating_sub(1);
                }
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|f| {
            let fd = f.fd.as_raw_fd();
            // SAFETY: our descriptor.
            cvt(unsafe {
                if datasync {
                    libc::fdatasync(fd)
                } else {
                    libc::fsync(fd)
                }
            })
            .map(|_| ())
        });
        reply_empty(reply, r);
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let r = (|| {
            let fd = if ino.0 == 1 {
                None
            } else {
                let (fd, _) = self.dir_node(ino)?;
                Some(openat(
                    fd.as_raw_fd(),
                    c".",
                    libc::O_RDONLY | libc::O_DIRECTORY,
                    0,
                )?)
            };
            let fh = self.fh();
            lock(&self.dirs).insert(
                fh,
                Arc::new(DirH {
                    ino: ino.0,
                    fd,
                    entries: Mutex::new(None),
                }),
            );
            Ok(fh)
        })();
        match r {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let (_, ents) = match self.dir_entries(fh, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        for (i, e) in ents.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(e.ino),
                i as u64 + 1,
                e.kind,
                OsStr::from_bytes(e.name.as_bytes()),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let (d, ents) = match self.dir_entries(fh, offset) {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let sub = if d.ino == 1 {
            None
        } else {
            match self.dir_node(INodeNo(d.ino)) {
                Ok((fd, m)) => Some((fd, m)),
                Err(e) => return reply.error(e),
            }
        };
        for (i, e) in ents.iter().enumerate().skip(offset as usize) {
            let name = OsStr::from_bytes(e.name.as_bytes());
            let off = i as u64 + 1;
            if i < 2 {
                // `.` and `..` are not counted lookups.
                let a = match self.getattr_of(INodeNo(d.ino), None) {
                    Ok(a) => a,
                    Err(_) => continue,
                };
                if reply.add(INodeNo(e.ino), off, name, &TTL, &a, Generation(0)) {
                    break;
                }
                continue;
            }
            let (dir, m) = match &sub {
                Some((fd, m)) => (fd.as_raw_fd(), *m),
                None => match self.members.get(e.member) {
                    Some(mm) => (mm.fd.as_raw_fd(), e.member),
                    None => continue,
                },
            };
            let a = match self.lookup_in(m, dir, &e.name) {
                Ok(a) => a,
                // Gone since the listing was read.
                Err(_) => continue,
            };
            if reply.add(a.ino, off, name, &TTL, &a, Generation(0)) {
                self.forget_n(a.ino.0, 1);
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.dirs).remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let d = lock(&self.dirs).get(&fh.0).cloned();
        let r = match d.as_ref().and_then(|d| d.fd.as_ref()) {
            // SAFETY: our descriptor.
            Some(fd) => cvt(unsafe {
                if datasync {
                    libc::fdatasync(fd.as_raw_fd())
                } else {
                    libc::fsync(fd.as_raw_fd())
                }
            })
            .map(|_| ()),
            None => Ok(()),
        };
        reply_empty(reply, r);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let Some(m) = self.members.first() else {
            return reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        };
        // SAFETY: plain data filled by the kernel.
        let mut s: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: our descriptor and a statfs to fill.
        match cvt(unsafe { libc::fstatfs(m.fd.as_raw_fd(), &mut s) }) {
            Ok(_) => reply.statfs(
                s.f_blocks,
                s.f_bfree,
                s.f_bavail,
                s.f_files,
                s.f_ffree,
                s.f_bsize as u32,
                s.f_namelen as u32,
                s.f_frsize as u32,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let r = (|| {
            let mask = mask.bits();
            if ino.0 == 1 {
                if self.members.is_empty() {
                    return if mask & libc::W_OK != 0 {
                        Err(Errno::EACCES)
                    } else {
                        Ok(())
                    };
                }
                // Writing the top means making names: the create member decides.
                if mask & libc::W_OK != 0 {
                    let c = self.create.ok_or(Errno::EACCES)?;
                    let p = proc_path(self.members[c].fd.as_raw_fd());
                    // SAFETY: a NUL-terminated path.
                    cvt(unsafe { libc::access(p.as_ptr(), libc::W_OK) })?;
                }
                let rest = mask & !libc::W_OK;
                if rest == 0 && mask != 0 {
                    return Ok(());
                }
                let p = proc_path(self.members[0].fd.as_raw_fd());
                // SAFETY: a NUL-terminated path.
                return cvt(unsafe { libc::access(p.as_ptr(), rest) }).map(|_| ());
            }
            let (fd, _, kind) = self.node(ino)?;
            if kind == FileType::Symlink {
                return Ok(());
            }
            let p = proc_path(fd.as_raw_fd());
            // SAFETY: a NUL-terminated path.
            cvt(unsafe { libc::access(p.as_ptr(), mask) }).map(|_| ())
        })();
        reply_empty(reply, r);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let r = (|| {
            let name = cname(name)?;
            let (dir, m) = self.create_dir(parent)?;
            let fd = openat(
                dir.as_raw_fd(),
                &name,
                own_flags(flags) | libc::O_CREAT | (flags & libc::O_EXCL),
                mode & 0o7777,
            )?;
            if mode & 0o7777 & self.umask != 0 {
                // SAFETY: our descriptor.
                unsafe { libc::fchmod(fd.as_raw_fd(), mode & 0o7777) };
            }
            let a = self.lookup_in(m, dir.as_raw_fd(), &name)?;
            Ok((fd, a))
        })();
        let (fd, a) = match r {
            Ok(x) => x,
            Err(e) => return reply.error(e),
        };
        let (fh, backing) = self.open_file(a.ino.0, fd, |fd| reply.open_backing(fd));
        match backing {
            Some(b) => reply.created_passthrough(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::empty(),
                &b,
            ),
            None => reply.created(
                &TTL,
                &a,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_KEEP_CACHE,
            ),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.file(fh).and_then(|f| {
            let off = libc::off_t::try_from(offset).map_err(|_| Errno::EFBIG)?;
            let len = libc::off_t::try_from(length).map_err(|_| Errno::EFBIG)?;
            // SAFETY: our descriptor.
            cvt(unsafe { libc::fallocate(f.fd.as_raw_fd(), mode, off, len) }).map(|_| ())
        });
        reply_empty(reply, r);
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let r = self.file(fh).and_then(|f| {
            // SAFETY: our descriptor (its own offset is never used for I/O).
            let o = unsafe { libc::lseek(f.fd.as_raw_fd(), offset, whence) };
            if o < 0 { Err(errno_now()) } else { Ok(o) }
        });
        match r {
            Ok(o) => reply.offset(o),
            Err(e) => reply.error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_round_trip() {
        let dir = |p: &str| -> OwnedFd { std::fs::File::open(p).map(OwnedFd::from).expect("open") };
        let ms = vec![
            Member {
                dir: dir("/"),
                create: true,
                label: "/home/u/bin".into(),
            },
            Member {
                dir: dir("/"),
                create: false,
                label: "mount unix!/tmp/ns.u/ramfs aname=x%41:y,z\\ é".into(),
            },
        ];
        let s = source(42, &ms);
        assert!(s.starts_with("union@42:"), "{s}");
        assert!(!s.contains(' ') && !s.contains(','), "{s}");
        let (pid, got) = parse_source(&s).expect("parse");
        assert_eq!(pid, 42);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], (ms[0].dir.as_raw_fd(), true, ms[0].label.clone()));
        assert_eq!(got[1], (ms[1].dir.as_raw_fd(), false, ms[1].label.clone()));
        assert_eq!(parse_source("/dev/sda1"), None);
        assert_eq!(parse_source("union@x:3=a"), None);
        assert_eq!(parse_source("union@1:3=%4"), None);
        assert_eq!(parse_source("union@1:q=a"), None);
        assert_eq!(parse_source("union@7"), Some((7, vec![])));
    }

    #[test]
    fn names_stay_in_their_directory() {
        for bad in ["", ".", "..", "a/b", "/"] {
            assert!(cname(OsStr::new(bad)).is_err(), "{bad:?}");
        }
        assert!(cname(OsStr::new("...")).is_ok());
    }
}

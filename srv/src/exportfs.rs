//! exportfs: a host directory served over 9P (the role u9fs plays on Unix).
//!
//! Every path is resolved beneath the exported directory with `openat2` and
//! `RESOLVE_BENEATH`, so neither `..` nor a symbolic link, relative or absolute, can
//! lead outside it; `..` itself is handled by name, as Plan 9 does (at the root it
//! stays at the root). Unix stat maps to 9P: owner and group names from the password
//! and group files, qid.path from the device and inode, a qid.vers that changes when
//! the file's modification time or size does. Unix errors map to Plan 9's strings.
//! The server acts with its own credentials, whatever name the client attaches with.
//!
//! Regular files and directories are read and written in place (they are in the page
//! cache or close to it); pipes, devices and sockets, which may block for ever, are
//! opened, read and written on the blocking thread pool, where a flush abandons them.

use bytes::Bytes;
use lib9::errstr::{self, Ename};
use lib9::fcall::{DMDIR, OEXEC, ORCLOSE, ORDWR, OTRUNC, OWRITE, QTDIR, QTFILE, Qid, Stat};
use lib9::server::{Caller, Data, Filesystem, FsResult, Opened, Walked, check_wstat_fixed};
use lib9::wire::{Pool, pooled};
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Reads at least this large are sent with sendfile rather than copied.
const SENDFILE_MIN: u32 = 32 * 1024;

/// The exported tree.
pub struct ExportFs {
    root: OwnedFd,
    /// O_PATH descriptors held by fids, and how many may be.
    held: Arc<std::sync::atomic::AtomicUsize>,
    max_held: usize,
    /// Buffers for reads.
    pool: Arc<Pool>,
    readonly: bool,
    devs: Mutex<HashMap<u64, u64>>,
    users: Mutex<HashMap<u32, String>>,
    groups: Mutex<HashMap<u32, String>>,
}

/// A fid: a path beneath the root, by names, and the open file once opened.
pub struct ExpFid {
    names: Vec<String>,
    open: Option<OpenFile>,
    /// The file the fid was walked to, held (as an O_PATH descriptor) so that a stat
    /// needs one system call, not a resolution of the path; absent when too many are
    /// held already.
    node: Option<Arc<Held>>,
}

/// A held O_PATH descriptor, counted against the server's budget of them.
struct Held {
    fd: OwnedFd,
    count: Arc<std::sync::atomic::AtomicUsize>,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.count
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

struct OpenFile {
    file: Arc<File>,
    /// Not a regular file or directory: I/O may block.
    slow: bool,
    /// A regular file of a storage file system, whose size can be trusted: large reads
    /// are mapped (or sent with sendfile), large writes spliced.
    direct: bool,
    rclose: bool,
}

/// Whether a file is on a file system that stores data, where the size stat gives is
/// the size of the data. Pseudo file systems (proc, sys, FUSE, ...) make files up as
/// they are read, so they are read with plain reads.
fn on_storage(f: &File) -> bool {
    // SAFETY: fstatfs fills the struct we pass.
    let mut sf: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above, on a descriptor we hold.
    if unsafe { libc::fstatfs(f.as_raw_fd(), &mut sf) } != 0 {
        return false;
    }
    const PSEUDO: &[i64] = &[
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0x7363_6673, // securityfs
        0x6165_676c, // pstore
        0x6265_6570, // configfs
        0xcafe_4a11, // bpf
        0x6573_5543, // fusectl
        0x6573_5546, // fuse
        0xde5e_81e4, // efivarfs
        0xf97c_ff8c, // selinuxfs
    ];
    !PSEUDO.contains(&(sf.f_type as i64))
}

/// How to open beneath the root. openat2 is strict: O_PATH takes no other access
/// flags, and a mode only goes with O_CREAT.
fn open_how(flags: OFlag, mode: u32) -> OpenHow {
    let mut f = flags | OFlag::O_CLOEXEC;
    if !flags.contains(OFlag::O_PATH) {
        f |= OFlag::O_NOCTTY;
    }
    let mut how = OpenHow::new().flags(f).resolve(resolve());
    if flags.contains(OFlag::O_CREAT) {
        how = how.mode(Mode::from_bits_truncate(mode));
    }
    how
}

fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS
}

fn ename_errno(e: nix::Error) -> Ename {
    match e {
        nix::Error::EXDEV => Ename::from(errstr::EOUTSIDE),
        e => Ename::from(e),
    }
}

fn rel(names: &[String]) -> String {
    if names.is_empty() {
        ".".into()
    } else {
        names.join("/")
    }
}

fn readonly() -> Ename {
    Ename::from(errstr::EREADONLY)
}

impl ExportFs {
    /// Export `dir`; with `readonly` nothing can be changed through the server.
    pub fn new(dir: &Path, readonly: bool) -> std::io::Result<ExportFs> {
        let root = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(std::io::Error::from)?;
        // Fids hold descriptors: use what the system allows, and keep half of it for
        // open files and connections.
        let lim = raise_nofile();
        Ok(ExportFs {
            root,
            held: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
            max_held: (lim / 2).saturating_sub(64),
            pool: Arc::new(Pool::new(64)),
            readonly,
            devs: Mutex::new(HashMap::new()),
            users: Mutex::new(HashMap::new()),
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// Open a path beneath the root.
    fn openat(&self, path: &str, flags: OFlag, mode: u32) -> FsResult<OwnedFd> {
        let how = open_how(flags, mode);
        loop {
            match nix::fcntl::openat2(self.root.as_fd(), path, how) {
                Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => continue,
                r => return r.map_err(ename_errno),
            }
        }
    }

    fn opath(&self, names: &[String]) -> FsResult<OwnedFd> {
        self.openat(&rel(names), OFlag::O_PATH, 0)
    }

    fn qid_of(&self, st: &FileStat) -> Qid {
        let dev = st.st_dev;
        let idx = {
            let mut d = self.devs.lock().unwrap_or_else(|p| p.into_inner());
            let n = d.len() as u64;
            *d.entry(dev).or_insert(n)
        };
        let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
        let v = (st.st_mtime as u64)
            .wrapping_mul(1_000_000_007)
            .wrapping_add(st.st_mtime_nsec as u64)
            ^ (st.st_size as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ (st.st_ctime_nsec as u64).rotate_left(17);
        Qid {
            ty: if is_dir { QTDIR } else { QTFILE },
            vers: (v ^ (v >> 32)) as u32,
            path: (st.st_ino & ((1 << 48) - 1)) ^ (idx << 48),
        }
    }

    fn user(&self, uid: u32) -> String {
        let mut m = self.users.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(uid)
            .or_insert_with(|| match nix::unistd::User::from_uid(uid.into()) {
                Ok(Some(u)) => u.name,
                _ => uid.to_string(),
            })
            .clone()
    }

    fn group(&self, gid: u32) -> String {
        let mut m = self.groups.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(gid)
            .or_insert_with(|| match nix::unistd::Group::from_gid(gid.into()) {
                Ok(Some(g)) => g.name,
                _ => gid.to_string(),
            })
            .clone()
    }

    fn to_stat(&self, name: &str, st: &FileStat) -> Stat {
        let qid = self.qid_of(st);
        let mut mode = st.st_mode & 0o777;
        if qid.ty & QTDIR != 0 {
            mode |= DMDIR;
        }
        let user = self.user(st.st_uid);
        Stat {
            ty: 0,
            dev: 0,
            qid,
            mode,
            atime: st.st_atime as u32,
            mtime: st.st_mtime as u32,
            length: if qid.ty & QTDIR != 0 {
                0
            } else {
                st.st_size as u64
            },
            name: name.into(),
            uid: user.clone(),
            gid: self.group(st.st_gid),
            muid: user,
        }
    }

    fn stat_names(&self, names: &[String]) -> FsResult<Stat> {
        let fd = self.opath(names)?;
        let st = nix::sys::stat::fstat(&fd).map_err(ename_errno)?;
        Ok(self.to_stat(names.last().map_or("/", String::as_str), &st))
    }

    /// Keep `fd` for a fid, if the budget allows.
    fn hold(&self, fd: OwnedFd) -> Option<Arc<Held>> {
        use std::sync::atomic::Ordering;
        if self.held.fetch_add(1, Ordering::Relaxed) >= self.max_held {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Arc::new(Held {
            fd,
            count: Arc::clone(&self.held),
        }))
    }

    fn check_writable(&self) -> FsResult<()> {
        if self.readonly {
            return Err(readonly());
        }
        Ok(())
    }

    /// The parent directory (opened as a path) and the last name.
    fn parent<'a>(&self, names: &'a [String]) -> FsResult<(OwnedFd, &'a str)> {
        let Some((last, dir)) = names.split_last() else {
            return Err(Ename::from(errstr::EPERM));
        };
        Ok((self.opath(dir)?, last.as_str()))
    }
}

/// Raise the soft limit on open files to the hard one; returns the limit in force.
fn raise_nofile() -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard as usize
            } else {
                soft as usize
            }
        }
        Err(_) => 1024,
    }
}

fn is_slow(st: &FileStat) -> bool {
    let t = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    t != SFlag::S_IFREG && t != SFlag::S_IFDIR
}

fn cstr(s: &str) -> FsResult<CString> {
    CString::new(s).map_err(|_| Ename::from(errstr::EBADCHAR))
}

fn errno_result(r: libc::c_int) -> FsResult<()> {
    if r < 0 {
        Err(Ename::from(std::io::Error::last_os_error()))
    } else {
        Ok(())
    }
}

/// chmod through an O_PATH descriptor.
fn chmod_fd(fd: &OwnedFd, mode: u32) -> FsResult<()> {
    let empty = c"";
    // fchmodat2 takes AT_EMPTY_PATH (Linux 6.6); older kernels go through /proc.
    // SAFETY: a syscall on a descriptor we hold and a NUL-terminated empty path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            fd.as_raw_fd(),
            empty.as_ptr(),
            mode as libc::mode_t,
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let p = cstr(&format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
    // SAFETY: chmod with a NUL-terminated path.
    errno_result(unsafe { libc::chmod(p.as_ptr(), mode as libc::mode_t) })
}

fn utime_fd(fd: &OwnedFd, mtime: u32) -> FsResult<()> {
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime as libc::time_t,
            tv_nsec: 0,
        },
    ];
    // SAFETY: utimensat on a descriptor we hold, an empty path and two timespecs.
    errno_result(unsafe {
        libc::utimensat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            times.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    })
}

fn chgrp_fd(fd: &OwnedFd, gid: u32) -> FsResult<()> {
    // SAFETY: fchownat on a descriptor we hold with an empty path.
    errno_result(unsafe {
        libc::fchownat(
            fd.as_raw_fd(),
            c"".as_ptr(),
            u32::MAX,
            gid,
            libc::AT_EMPTY_PATH,
        )
    })
}

/// Whether the server's user may execute the file.
fn may_exec(fd: &OwnedFd) -> bool {
    // SAFETY: faccessat2 on a descriptor we hold with an empty path.
    let r = unsafe {
        libc::syscall(
            libc::SYS_faccessat2,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::X_OK,
            libc::AT_EMPTY_PATH | libc::AT_EACCESS,
        )
    };
    r == 0
}

/// A read-only shared mapping of part of a file, unmapped when dropped.
struct Mapping {
    base: *mut libc::c_void,
    maplen: usize,
    skip: usize,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value alone.
unsafe impl Send for Mapping {}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: [base+skip, base+skip+len) lies inside the live mapping. The bytes are
        // only ever handed to the kernel (a socket write), never read in this process: if
        // the file shrinks meanwhile, the kernel reports EFAULT (the writer then sends
        // zeros in their place) rather than raising SIGBUS here.
        unsafe { std::slice::from_raw_parts(self.base.cast::<u8>().add(self.skip), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what mmap gave us.
        unsafe { libc::munmap(self.base, self.maplen) };
    }
}

/// Map `len` bytes of `f` at `offset`, populated, as bytes that go to the socket without
/// a copy in this process; `None` if the file cannot be mapped.
fn mapped(f: &File, offset: u64, len: usize) -> Option<Bytes> {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    let start = offset - offset % page;
    let skip = (offset - start) as usize;
    let maplen = skip + len;
    // SAFETY: a fresh read-only shared mapping of a file we hold open.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            maplen,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_POPULATE,
            f.as_raw_fd(),
            start as libc::off_t,
        )
    };
    if base == libc::MAP_FAILED {
        return None;
    }
    Some(Bytes::from_owner(Mapping {
        base,
        maplen,
        skip,
        len,
    }))
}

/// pread (read, for what cannot seek) of at most `count` bytes into a buffer from
/// `pool`, which gets it back when the reply has been sent.
fn pread(f: &File, offset: u64, count: usize, seekable: bool, pool: &Arc<Pool>) -> FsResult<Bytes> {
    let mut b = pool.get(count);
    loop {
        let spare = b.spare_capacity_mut();
        // SAFETY: reading into the buffer's spare capacity, at most `count` bytes (the
        // buffer has room for them); the kernel initialises the bytes it reports.
        let n = unsafe {
            if seekable {
                libc::pread(
                    f.as_raw_fd(),
                    spare.as_mut_ptr().cast(),
                    count,
                    offset as libc::off_t,
                )
            } else {
                libc::read(f.as_raw_fd(), spare.as_mut_ptr().cast(), count)
            }
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Ename::from(e));
        }
        // SAFETY: the kernel wrote n bytes.
        unsafe { b.set_len(n as usize) };
        return Ok(pooled(b, pool));
    }
}

impl Filesystem for ExportFs {
    type Fid = ExpFid;

    async fn attach(
        &self,
        _c: &Caller,
        aname: &str,
        _afid: Option<&ExpFid>,
    ) -> FsResult<(ExpFid, Qid)> {
        // An aname names a subtree (as exportfs -r and u9fs take it); "" and "/" the
        // whole export.
        let names: Vec<String> = aname
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(str::to_owned)
            .collect();
        if names.iter().any(|n| n == "..") {
            return Err(Ename::from(errstr::EOUTSIDE));
        }
        let fd = self.opath(&names)?;
        let raw = nix::sys::stat::fstat(&fd).map_err(ename_errno)?;
        let qid = self.qid_of(&raw);
        if qid.ty & QTDIR == 0 {
            return Err(Ename::from(errstr::ENOTDIR));
        }
        let node = self.hold(fd);
        Ok((
            ExpFid {
                names,
                open: None,
                node,
            },
            qid,
        ))
    }

    async fn walk(&self, _c: &Caller, fid: &ExpFid, wnames: &[String]) -> FsResult<Walked<ExpFid>> {
        let mut names = fid.names.clone();
        let mut qids = Vec::with_capacity(wnames.len());
        let mut node = fid.node.clone();
        for (i, w) in wnames.iter().enumerate() {
            let mut next = names.clone();
            if w == ".." {
                next.pop();
            } else {
                next.push(w.clone());
            }
            let r = self.opath(&next).and_then(|fd| {
                let st = nix::sys::stat::fstat(&fd).map_err(ename_errno)?;
                Ok((fd, st))
            });
            match r {
                Ok((fd, st)) => {
                    if i + 1 == wnames.len() {
                        node = self.hold(fd);
                    }
                    let q = self.qid_of(&st);
                    if i + 1 < wnames.len() && q.ty & QTDIR == 0 {
                        // The next name would be looked up in a file.
                        qids.push(q);
                        return Ok(Walked { qids, fid: None });
                    }
                    qids.push(q);
                    names = next;
                }
                Err(e) if i == 0 => return Err(e),
                Err(_) => return Ok(Walked { qids, fid: None }),
            }
        }
        Ok(Walked {
            qids,
            fid: Some(ExpFid {
                names,
                open: None,
                node,
            }),
        })
    }

    async fn open(&self, _c: &Caller, fid: &ExpFid, mode: u8) -> FsResult<Opened<ExpFid>> {
        let path = self.opath(&fid.names)?;
        let st = nix::sys::stat::fstat(&path).map_err(ename_errno)?;
        let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
        let write = mode & 3 == OWRITE || mode & 3 == ORDWR || mode & OTRUNC != 0;
        if (write || mode & ORCLOSE != 0) && self.readonly {
            return Err(readonly());
        }
        if mode & 3 == OEXEC && !may_exec(&path) {
            return Err(Ename::from(errstr::EPERM));
        }
        let mut flags = match mode & 3 {
            OWRITE => OFlag::O_WRONLY,
            ORDWR => OFlag::O_RDWR,
            _ => OFlag::O_RDONLY,
        };
        if mode & OTRUNC != 0 {
            flags |= OFlag::O_TRUNC;
        }
        if is_dir {
            flags |= OFlag::O_DIRECTORY;
        }
        let slow = is_slow(&st);
        let p = rel(&fid.names);
        let fd = if slow {
            // Opening a FIFO waits for the other end.
            let me = self.root.try_clone().map_err(Ename::from)?;
            tokio::task::spawn_blocking(move || {
                let how = open_how(flags, 0);
                nix::fcntl::openat2(me.as_fd(), p.as_str(), how).map_err(ename_errno)
            })
            .await
            .map_err(|_| Ename::from(errstr::EINTR))??
        } else {
            self.openat(&p, flags, 0)?
        };
        let st2 = nix::sys::stat::fstat(&fd).map_err(ename_errno)?;
        let file = File::from(fd);
        let direct = !slow && !is_dir && on_storage(&file);
        Ok(Opened {
            fid: ExpFid {
                names: fid.names.clone(),
                node: None,
                open: Some(OpenFile {
                    file: Arc::new(file),
                    slow,
                    direct,
                    rclose: mode & ORCLOSE != 0,
                }),
            },
            qid: self.qid_of(&st2),
            iounit: 0,
        })
    }

    async fn create(
        &self,
        _c: &Caller,
        fid: &ExpFid,
        name: &str,
        perm: u32,
        mode: u8,
    ) -> FsResult<Opened<ExpFid>> {
        self.check_writable()?;
        let dir = self.opath(&fid.names)?;
        let dst = nix::sys::stat::fstat(&dir).map_err(ename_errno)?;
        let is_dir = perm & DMDIR != 0;
        let bits = if is_dir {
            perm & (!0o777 | (dst.st_mode & 0o777)) & 0o777
        } else {
            perm & (!0o666 | (dst.st_mode & 0o666)) & 0o777
        };
        let mut names = fid.names.clone();
        names.push(name.to_string());
        let fd = if is_dir {
            nix::sys::stat::mkdirat(dir.as_fd(), name, Mode::from_bits_truncate(0o700))
                .map_err(ename_errno)?;
            self.openat(&rel(&names), OFlag::O_RDONLY | OFlag::O_DIRECTORY, 0)?
        } else {
            let mut flags = match mode & 3 {
                OWRITE => OFlag::O_WRONLY,
                ORDWR => OFlag::O_RDWR,
                _ => OFlag::O_RDONLY,
            };
            flags |= OFlag::O_CREAT | OFlag::O_EXCL;
            self.openat(&rel(&names), flags, 0o600)?
        };
        // The umask must not take bits Plan 9's rule grants.
        // SAFETY: fchmod on a descriptor we own.
        errno_result(unsafe { libc::fchmod(fd.as_raw_fd(), bits as libc::mode_t) })?;
        let st = nix::sys::stat::fstat(&fd).map_err(ename_errno)?;
        let file = File::from(fd);
        let direct = !is_dir && on_storage(&file);
        Ok(Opened {
            fid: ExpFid {
                names,
                node: None,
                open: Some(OpenFile {
                    file: Arc::new(file),
                    slow: false,
                    direct,
                    rclose: mode & ORCLOSE != 0,
                }),
            },
            qid: self.qid_of(&st),
            iounit: 0,
        })
    }

    async fn read(&self, _c: &Caller, fid: &ExpFid, offset: u64, count: u32) -> FsResult<Data> {
        let Some(o) = &fid.open else {
            return Err(Ename::from(errstr::ENOTOPEN));
        };
        if o.slow {
            let f = Arc::clone(&o.file);
            let pool = Arc::clone(&self.pool);
            return tokio::task::spawn_blocking(move || {
                pread(&f, offset, count as usize, false, &pool)
            })
            .await
            .map_err(|_| Ename::from(errstr::EINTR))?
            .map(Data::from);
        }
        if count < SENDFILE_MIN || !o.direct {
            return pread(&o.file, offset, count as usize, true, &self.pool).map(Data::from);
        }
        // Large reads of a regular file go from the page cache to the socket.
        let size = nix::sys::stat::fstat(o.file.as_fd())
            .map_err(ename_errno)?
            .st_size as u64;
        let len = size.saturating_sub(offset).min(count as u64) as usize;
        if len == 0 {
            // At or past the end, as far as the size says: a plain read is the truth.
            return pread(&o.file, offset, count as usize, true, &self.pool).map(Data::from);
        }
        // Mapped, the data is copied once, by the kernel, from the page cache into the
        // socket, as a write from memory would be; sendfile, the fallback, makes the
        // reader copy from page-cache pages one by one, which measured half as fast.
        Ok(Data::File {
            file: Arc::clone(&o.file),
            offset,
            len: len as u32,
            map: mapped(&o.file, offset, len),
        })
    }

    async fn readdir(&self, _c: &Caller, fid: &ExpFid) -> FsResult<Vec<Stat>> {
        let Some(o) = &fid.open else {
            return Err(Ename::from(errstr::ENOTOPEN));
        };
        let fd = o.file.as_fd().try_clone_to_owned().map_err(Ename::from)?;
        // SAFETY: rewinding a directory descriptor we own a duplicate of.
        unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_SET) };
        let mut d = nix::dir::Dir::from_fd(fd).map_err(ename_errno)?;
        let mut out = Vec::new();
        let mut names = fid.names.clone();
        for ent in d.iter() {
            let ent = ent.map_err(ename_errno)?;
            let Ok(name) = ent.file_name().to_str() else {
                continue; // not UTF-8: 9P cannot name it
            };
            if name == "." || name == ".." {
                continue;
            }
            names.push(name.to_string());
            let st = match self.opath(&names) {
                Ok(fd) => nix::sys::stat::fstat(&fd).ok(),
                Err(_) => None,
            };
            // A link that dangles or leads outside shows as itself.
            let st = st.or_else(|| {
                nix::sys::stat::fstatat(
                    o.file.as_fd(),
                    name,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .ok()
            });
            if let Some(st) = st {
                out.push(self.to_stat(name, &st));
            }
            names.pop();
        }
        Ok(out)
    }

    async fn write(&self, _c: &Caller, fid: &ExpFid, offset: u64, data: Bytes) -> FsResult<u32> {
        let Some(o) = &fid.open else {
            return Err(Ename::from(errstr::ENOTOPEN));
        };
        if o.slow {
            let f = Arc::clone(&o.file);
            return tokio::task::spawn_blocking(move || {
                use std::io::Write;
                (&*f).write(&data).map(|n| n as u32).map_err(Ename::from)
            })
            .await
            .map_err(|_| Ename::from(errstr::EINTR))?;
        }
        let mut done = 0;
        while done < data.len() {
            match o.file.write_at(&data[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if done > 0 => {
                    let _ = e;
                    break;
                }
                Err(e) => return Err(Ename::from(e)),
            }
        }
        Ok(done as u32)
    }

    async fn stat(&self, _c: &Caller, fid: &ExpFid) -> FsResult<Stat> {
        let name = fid.names.last().map_or("/", String::as_str);
        if let Some(o) = &fid.open {
            let st = nix::sys::stat::fstat(o.file.as_fd()).map_err(ename_errno)?;
            return Ok(self.to_stat(name, &st));
        }
        if let Some(h) = &fid.node {
            let st = nix::sys::stat::fstat(&h.fd).map_err(ename_errno)?;
            return Ok(self.to_stat(name, &st));
        }
        self.stat_names(&fid.names)
    }

    async fn wstat(&self, _c: &Caller, fid: &ExpFid, st: &Stat) -> FsResult<()> {
        if st.is_dont_touch() {
            if let Some(o) = &fid.open {
                // Commit the open file to stable storage, whatever its name is by now.
                return o.file.sync_all().map_err(Ename::from);
            }
        }
        // The file itself, whatever it is called by now: a fid follows its file through
        // renames (of it, or of a directory above it, by other fids) as in Plan 9. So
        // the descriptor held for the fid, or the open file, and the names only when
        // neither is there.
        let fd = match (&fid.node, &fid.open) {
            (Some(h), _) => h.fd.try_clone().map_err(Ename::from)?,
            (None, Some(o)) => o.file.as_fd().try_clone_to_owned().map_err(Ename::from)?,
            (None, None) => self.opath(&fid.names)?,
        };
        let cur_raw = nix::sys::stat::fstat(&fd).map_err(ename_errno)?;
        let cur = self.to_stat(fid.names.last().map_or("/", String::as_str), &cur_raw);
        if st.is_dont_touch() {
            // Nothing to commit for a file not open; it exists.
            return Ok(());
        }
        self.check_writable()?;
        check_wstat_fixed(st, &cur)?;
        if st.mode != !0 && st.mode & !(DMDIR | 0o777) != 0 {
            return Err(Ename::from(errstr::EBADWSTAT));
        }
        let gid = if !st.gid.is_empty() && st.gid != cur.gid {
            match nix::unistd::Group::from_name(&st.gid) {
                Ok(Some(g)) => Some(g.gid.as_raw()),
                _ => match st.gid.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) => return Err(Ename::from("unknown group")),
                },
            }
        } else {
            None
        };
        let is_dir = cur.mode & DMDIR != 0;
        if st.length != !0 && st.length != cur.length && is_dir {
            return Err(Ename::from(errstr::EBADLENGTH));
        }
        let rename = !st.name.is_empty() && st.name != cur.name;
        if rename && fid.names.is_empty() {
            return Err(Ename::from(errstr::EPERM));
        }
        // Apply, in the order least likely to leave a half-done change.
        if st.length != !0 && st.length != cur.length {
            // Opened for writing again through /proc (the same file, and the same
            // permission check as an open by name).
            let f = nix::fcntl::open(
                format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
                OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
                Mode::empty(),
            )
            .map_err(ename_errno)?;
            nix::unistd::ftruncate(&f, st.length as libc::off_t).map_err(ename_errno)?;
        }
        if st.mode != !0 && st.mode & 0o777 != cur.mode & 0o777 {
            chmod_fd(&fd, st.mode & 0o777)?;
        }
        if st.mtime != !0 && st.mtime != cur.mtime {
            utime_fd(&fd, st.mtime)?;
        }
        if let Some(g) = gid {
            chgrp_fd(&fd, g)?;
        }
        if rename {
            let (parent, old) = self.parent(&fid.names)?;
            nix::fcntl::renameat2(
                parent.as_fd(),
                old,
                parent.as_fd(),
                st.name.as_str(),
                nix::fcntl::RenameFlags::RENAME_NOREPLACE,
            )
            .map_err(ename_errno)?;
        }
        Ok(())
    }

    async fn remove(&self, _c: &Caller, fid: &ExpFid) -> FsResult<()> {
        self.check_writable()?;
        let (parent, name) = self.parent(&fid.names)?;
        let st = nix::sys::stat::fstatat(
            parent.as_fd(),
            name,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(ename_errno)?;
        let flag = if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR
        {
            nix::unistd::UnlinkatFlags::RemoveDir
        } else {
            nix::unistd::UnlinkatFlags::NoRemoveDir
        };
        nix::unistd::unlinkat(parent.as_fd(), name, flag).map_err(ename_errno)
    }

    fn write_file(&self, fid: &ExpFid) -> Option<Arc<File>> {
        match &fid.open {
            Some(o) if o.direct && !self.readonly => Some(Arc::clone(&o.file)),
            _ => None,
        }
    }

    async fn clunk(&self, c: &Caller, fid: &ExpFid) {
        if fid.open.as_ref().is_some_and(|o| o.rclose) {
            let _ = self.remove(c, fid).await;
        }
    }
}

//! The 9P2000.L-to-FUSE bridge (`9pfuse -L`): a Linux 9P server, such as diod, as an
//! ordinary directory (see docs/9pfuse.md).
//!
//! The dialect is Linux's own file calls over 9P, so most requests map one to one:
//! lookup is a walk and a getattr, setattr, mknod, mkdir, symlink, readlink, link,
//! renameat (across directories too), unlinkat, lopen, lcreate, readdir (whose
//! offsets FUSE uses as they are), fsync and statfs. As in [`crate::fuse`], each inode
//! the kernel holds is a walked fid, numbered by qid.path, clunked on `forget`; each
//! open file is a fid of its own; requests are answered from tasks.

use crate::fuse::utf8;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use lib9::client_l::{LClient, LFid};
use lib9::fcall_l::{
    Attr, GETATTR_BASIC, SETATTR_ATIME, SETATTR_ATIME_SET, SETATTR_CTIME, SETATTR_GID,
    SETATTR_MODE, SETATTR_MTIME, SETATTR_MTIME_SET, SETATTR_SIZE, SETATTR_UID, SetAttr,
};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Open flags passed on to the server (the rest are the kernel's business).
const OPEN_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_TRUNC
    | libc::O_APPEND
    | libc::O_NONBLOCK
    | libc::O_DIRECTORY
    | libc::O_NOFOLLOW
    | libc::O_DSYNC;

/// How many bytes of entries one directory read asks for (a FUSE reply holds a page).
const DIRBUF: u32 = 4096;

fn ttl(cache: bool) -> Duration {
    if cache {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    }
}

fn ino_of(path: u64) -> u64 {
    path.wrapping_add(2)
}

/// Whether the server's `qid` is the file the kernel calls `ino`.
fn ours(ino: INodeNo, qid: &lib9::fcall::Qid) -> bool {
    ino.0 == 1 || ino_of(qid.path) == ino.0
}

fn errno(e: &lib9::client_l::Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// The errno for a file the kernel holds, asked for by the path its fid was walked
/// by: a path that is gone (the file removed or renamed by another of its names, or
/// from outside) is a stale handle, on which the kernel looks the name up again and
/// retries (a descriptor's file no longer named anywhere stays stale).
fn held(e: Errno) -> Errno {
    if e == Errno::ENOENT { Errno::ESTALE } else { e }
}

struct Inode {
    /// The walked fid; `None` once a rename above it may have made the path it was
    /// walked by wrong (diod knows fids by path): walked again from `parent` by
    /// `name` when next used.
    fid: Option<Arc<LFid>>,
    parent: u64,
    name: String,
    nlookup: u64,
    /// Other names the file was known by, newest last (hard links; names since
    /// renamed or removed fail the check in `verified`): tried when the one above no
    /// longer names it.
    others: Vec<(u64, String)>,
}

/// How many other names an inode keeps.
const OTHERS: usize = 8;

struct Inner {
    client: LClient,
    rt: tokio::runtime::Handle,
    inodes: Mutex<HashMap<u64, Inode>>,
    /// Open files: by handle, the inode and the opened fid.
    handles: Mutex<HashMap<u64, (u64, Arc<LFid>)>>,
    next_fh: Mutex<u64>,
    cache: bool,
}

/// The FUSE file system serving one 9P2000.L attach.
pub struct BridgeL {
    inner: Arc<Inner>,
}

impl BridgeL {
    /// A bridge to `root` (an attached fid) of `client`; requests run on `rt`.
    pub fn new(client: LClient, root: LFid, rt: tokio::runtime::Handle, cache: bool) -> BridgeL {
        let mut inodes = HashMap::new();
        inodes.insert(
            1,
            Inode {
                fid: Some(Arc::new(root)),
                parent: 1,
                name: String::new(),
                nlookup: 1,
                others: Vec::new(),
            },
        );
        BridgeL {
            inner: Arc::new(Inner {
                client,
                rt,
                inodes: Mutex::new(inodes),
                handles: Mutex::new(HashMap::new()),
                next_fh: Mutex::new(1),
                cache,
            }),
        }
    }
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn time(t: (u64, u64)) -> SystemTime {
    UNIX_EPOCH + Duration::new(t.0, (t.1 as u32).min(999_999_999))
}

fn attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.blocks,
        atime: time(a.atime),
        mtime: time(a.mtime),
        ctime: time(a.ctime),
        crtime: time(a.btime),
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink.min(u32::MAX as u64) as u32,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: a.blksize.clamp(512, 1 << 20) as u32,
        flags: 0,
    }
}

fn since_epoch(t: SystemTime) -> (u64, u64) {
    t.duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos() as u64))
}

impl Inner {
    /// The fid of an inode, walked again if a rename made it stale.
    async fn fid(&self, ino: INodeNo) -> Option<Arc<LFid>> {
        let (parent, name) = {
            let m = self.inodes.lock().ok()?;
            let i = m.get(&ino.0)?;
            if let Some(f) = &i.fid {
                return Some(Arc::clone(f));
            }
            (i.parent, i.name.clone())
        };
        let pfid = Box::pin(self.fid(INodeNo(parent))).await?;
        let f = Arc::new(pfid.walk1(&name).await.ok()?);
        let mut m = self.inodes.lock().ok()?;
        let i = m.get_mut(&ino.0)?;
        Some(Arc::clone(i.fid.get_or_insert(f)))
    }

    fn handle(&self, fh: FileHandle) -> Option<Arc<LFid>> {
        self.handles
            .lock()
            .ok()?
            .get(&fh.0)
            .map(|(_, f)| Arc::clone(f))
    }

    /// A walked (not opened) fid that names the file `ino` now, with its
    /// attributes: the inode's, or one walked by another name the file was known by
    /// (see `verified`). Else `ESTALE`, or the error asking gave.
    async fn walked(&self, ino: INodeNo) -> Result<(Arc<LFid>, Attr), Errno> {
        let mut err = Errno::ESTALE;
        if let Some(f) = self.fid(ino).await {
            match f.getattr(GETATTR_BASIC).await {
                Ok(a) if ours(ino, &a.qid) => return Ok((f, a)),
                Ok(_) => {}
                Err(e) => err = held(errno(&e)),
            }
        }
        // Another name it was known by (a hard link) may still name it.
        let others = match self.inodes.lock() {
            Ok(m) => m.get(&ino.0).map(|i| i.others.clone()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        for (p, n) in others.into_iter().rev() {
            let Some(pfid) = self.fid(INodeNo(p)).await else {
                continue;
            };
            let Ok(f) = pfid.walk1(&n).await else {
                continue;
            };
            if let Ok(a) = f.getattr(GETATTR_BASIC).await {
                if ours(ino, &a.qid) {
                    let f = Arc::new(f);
                    if let Ok(mut m) = self.inodes.lock() {
                        if let Some(i) = m.get_mut(&ino.0) {
                            i.others.retain(|o| (o.0, o.1.as_str()) != (p, n.as_str()));
                            i.fid = Some(Arc::clone(&f));
                            i.parent = p;
                            i.name = n;
                        }
                    }
                    return Ok((f, a));
                }
            }
        }
        Err(err)
    }

    /// A fid that names the file `ino` now, with its attributes: the walked one, or
    /// else one open on the file (the kernel's `fh`, or any). Servers such as diod
    /// know every fid by its path, even an open one, and a path may be gone or name
    /// another file since (the file removed, or replaced by a rename, while open, or
    /// the name it was last looked up by removed): that other file must not be taken
    /// for this one, stated or changed. Neither: `ESTALE` (see `held`).
    async fn verified(
        &self,
        ino: INodeNo,
        fh: Option<FileHandle>,
    ) -> Result<(Arc<LFid>, Attr), Errno> {
        let err = match self.walked(ino).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let open = self.handles.lock().ok().and_then(|h| {
            fh.and_then(|fh| h.get(&fh.0))
                .filter(|(i, _)| *i == ino.0)
                .or_else(|| h.values().find(|(i, _)| *i == ino.0))
                .map(|(_, f)| Arc::clone(f))
        });
        if let Some(f) = open {
            if let Ok(a) = f.getattr(GETATTR_BASIC).await {
                if ours(ino, &a.qid) {
                    return Ok((f, a));
                }
            }
        }
        Err(err)
    }

    fn new_handle(&self, fid: LFid, ino: u64) -> u64 {
        let fh = match self.next_fh.lock() {
            Ok(mut n) => {
                *n += 1;
                *n
            }
            Err(_) => 0,
        };
        if let Ok(mut h) = self.handles.lock() {
            h.insert(fh, (ino, Arc::new(fid)));
        }
        fh
    }

    /// Remember `fid` as the inode for its file: one more lookup, or a new inode. The
    /// newest walk replaces an older fid, which may name the file by an old path.
    fn remember(&self, fid: LFid, a: &Attr, count: bool, parent: INodeNo, name: &str) -> FileAttr {
        let ino = ino_of(a.qid.path);
        if let Ok(mut m) = self.inodes.lock() {
            match m.get_mut(&ino) {
                Some(i) => {
                    if count {
                        i.nlookup += 1;
                    }
                    if (i.parent, i.name.as_str()) != (parent.0, name) {
                        let old = (i.parent, std::mem::take(&mut i.name));
                        i.others
                            .retain(|o| *o != old && (o.0, o.1.as_str()) != (parent.0, name));
                        i.others.push(old);
                        if i.others.len() > OTHERS {
                            i.others.remove(0);
                        }
                    }
                    i.fid = Some(Arc::new(fid));
                    i.parent = parent.0;
                    i.name = name.to_string();
                }
                None if count => {
                    m.insert(
                        ino,
                        Inode {
                            fid: Some(Arc::new(fid)),
                            parent: parent.0,
                            name: name.to_string(),
                            nlookup: 1,
                            others: Vec::new(),
                        },
                    );
                }
                None => {}
            }
        }
        attr(ino, a)
    }

    /// Walk `name` from `parent` and remember it.
    async fn lookup(&self, parent: INodeNo, name: &str) -> Result<FileAttr, Errno> {
        let pfid = self.fid(parent).await.ok_or(Errno::ENOENT)?;
        let fid = pfid.walk1(name).await.map_err(|e| errno(&e))?;
        let a = fid.getattr(GETATTR_BASIC).await.map_err(|e| errno(&e))?;
        Ok(self.remember(fid, &a, true, parent, name))
    }

    async fn getattr(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        let (_, a) = self.verified(ino, fh).await?;
        Ok(attr(ino.0, &a))
    }
}

/// Read `size` bytes at `offset` (fewer only at the end of the file).
async fn read_full(fid: &LFid, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
    let mut out: Vec<u8> = Vec::with_capacity(size as usize);
    while (out.len() as u32) < size {
        match fid
            .read(offset + out.len() as u64, size - out.len() as u32)
            .await
        {
            Ok(b) if b.is_empty() => break,
            Ok(b) => out.extend_from_slice(&b),
            Err(e) => return Err(errno(&e)),
        }
    }
    Ok(out)
}

macro_rules! spawn {
    ($self:ident, |$inner:ident| $body:expr) => {{
        let $inner = Arc::clone(&$self.inner);
        let rt = $inner.rt.clone();
        rt.spawn(async move { $body });
    }};
}

/// Answer an entry request: look `name` up in `parent` after `made` succeeded.
macro_rules! entry_after {
    ($inner:ident, $reply:ident, $parent:expr, $name:expr, $made:expr) => {{
        if let Err(e) = $made {
            return $reply.error(errno(&e));
        }
        match $inner.lookup($parent, &$name).await {
            Ok(a) => $reply.entry(&ttl($inner.cache), &a, Generation(0)),
            Err(e) => $reply.error(e),
        }
    }};
}

impl Filesystem for BridgeL {
    fn init(&mut self, _req: &Request, config: &mut fuser::KernelConfig) -> std::io::Result<()> {
        let iounit = self.inner.client.iounit();
        let _ = config
            .set_max_write(iounit)
            .or_else(|max| config.set_max_write(max));
        let _ = config
            .set_max_readahead(iounit)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config.set_max_background(64);
        // O_TRUNC comes with the open, to go in the open message (Plan 9's OTRUNC),
        // rather than as a truncation before it: a synthetic file such as factotum's
        // ctl may be opened with OTRUNC but refuses to have its length set.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        // Listings that carry attributes pay only when the kernel may keep them.
        if self.inner.cache {
            let _ = config.add_capabilities(
                fuser::InitFlags::FUSE_DO_READDIRPLUS | fuser::InitFlags::FUSE_READDIRPLUS_AUTO,
            );
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::ENOENT);
        };
        spawn!(self, |inner| match inner.lookup(parent, &name).await {
            Ok(a) => reply.entry(&ttl(inner.cache), &a, Generation(0)),
            Err(e) => reply.error(e),
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        if ino.0 == 1 {
            return;
        }
        if let Ok(mut m) = self.inner.inodes.lock() {
            if let Some(i) = m.get_mut(&ino.0) {
                i.nlookup = i.nlookup.saturating_sub(nlookup);
                if i.nlookup == 0 {
                    m.remove(&ino.0);
                }
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        spawn!(self, |inner| match inner.getattr(ino, fh).await {
            Ok(a) => reply.attr(&ttl(inner.cache), &a),
            Err(e) => reply.error(e),
        });
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
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut s = SetAttr::default();
        if let Some(m) = mode {
            s.valid |= SETATTR_MODE;
            s.mode = m;
        }
        if let Some(u) = uid {
            s.valid |= SETATTR_UID;
            s.uid = u;
        }
        if let Some(g) = gid {
            s.valid |= SETATTR_GID;
            s.gid = g;
        }
        if let Some(n) = size {
            s.valid |= SETATTR_SIZE;
            s.size = n;
        }
        match atime {
            Some(TimeOrNow::Now) => s.valid |= SETATTR_ATIME,
            Some(TimeOrNow::SpecificTime(t)) => {
                s.valid |= SETATTR_ATIME | SETATTR_ATIME_SET;
                s.atime = since_epoch(t);
            }
            None => {}
        }
        match mtime {
            Some(TimeOrNow::Now) => s.valid |= SETATTR_MTIME,
            Some(TimeOrNow::SpecificTime(t)) => {
                s.valid |= SETATTR_MTIME | SETATTR_MTIME_SET;
                s.mtime = since_epoch(t);
            }
            None => {}
        }
        if ctime.is_some() {
            s.valid |= SETATTR_CTIME;
        }
        spawn!(self, |inner| {
            let fid = match inner.verified(ino, fh).await {
                Ok((f, _)) => f,
                Err(e) => return reply.error(e),
            };
            if s.valid != 0 {
                if let Err(e) = fid.setattr(s).await {
                    return reply.error(errno(&e));
                }
            }
            match inner.getattr(ino, fh).await {
                Ok(a) => reply.attr(&ttl(inner.cache), &a),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        spawn!(self, |inner| {
            let Some(fid) = inner.fid(ino).await else {
                return reply.error(Errno::ESTALE);
            };
            // Whether the path still names this link, asked at the same time.
            match tokio::join!(fid.getattr(GETATTR_BASIC), fid.readlink()) {
                (Ok(a), _) if !ours(ino, &a.qid) => reply.error(Errno::ESTALE),
                (Ok(_), Ok(t)) => reply.data(t.as_bytes()),
                (Err(e), _) | (_, Err(e)) => reply.error(held(errno(&e))),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::EINVAL);
        };
        let gid = req.gid();
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let made = pfid.mknod(&name, mode & !umask, rdev, gid).await;
            entry_after!(inner, reply, parent, name, made)
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::EINVAL);
        };
        let gid = req.gid();
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let made = pfid.mkdir(&name, mode & !umask & 0o7777, gid).await;
            entry_after!(inner, reply, parent, name, made)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, 0, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, libc::AT_REMOVEDIR as u32, reply);
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let (Some(name), Some(target)) = (utf8(link_name), utf8(target.as_os_str())) else {
            return reply.error(Errno::EINVAL);
        };
        let gid = req.gid();
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let made = pfid.symlink(&name, &target, gid).await;
            entry_after!(inner, reply, parent, name, made)
        });
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
        // 9P2000.L has no RENAME_NOREPLACE or RENAME_EXCHANGE.
        if flags.bits() != 0 {
            return reply.error(Errno::EINVAL);
        }
        let (Some(name), Some(newname)) = (utf8(name), utf8(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        spawn!(self, |inner| {
            let (Some(pfid), Some(npfid)) = (inner.fid(parent).await, inner.fid(newparent).await)
            else {
                return reply.error(Errno::ENOENT);
            };
            let mut done = pfid.renameat(&name, &npfid, &newname).await;
            // Servers such as diod have only the older Trename of a walked fid.
            if unsupported(&done) {
                done = match pfid.walk1(&name).await {
                    Ok(f) => f.rename(&npfid, &newname).await,
                    Err(e) => Err(e),
                };
            }
            if let Err(e) = done {
                return reply.error(errno(&e));
            }
            // The inode's fid may know the file by its old name: walk the new one; the
            // fids beneath a renamed directory are walked again when next used.
            if let Ok(f) = npfid.walk1(&newname).await {
                if let Ok(a) = f.getattr(GETATTR_BASIC).await {
                    let ino = ino_of(a.qid.path);
                    inner.remember(f, &a, false, newparent, &newname);
                    if let Ok(mut m) = inner.inodes.lock() {
                        for b in crate::fuse::beneath(&m, ino, |i| i.parent) {
                            if let Some(i) = m.get_mut(&b) {
                                i.fid = None;
                            }
                        }
                    }
                }
            }
            reply.ok();
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let Some(newname) = utf8(newname) else {
            return reply.error(Errno::EINVAL);
        };
        spawn!(self, |inner| {
            let (fid, npfid) = match (inner.verified(ino, None).await, inner.fid(newparent).await) {
                (Ok((f, _)), Some(n)) => (f, n),
                (Err(e), _) => return reply.error(e),
                (_, None) => return reply.error(Errno::ESTALE),
            };
            let made = npfid.link(&fid, &newname).await;
            entry_after!(inner, reply, newparent, newname, made)
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let lflags = (flags.0 & OPEN_FLAGS) as u32;
        spawn!(self, |inner| {
            // Checked first: the path walked may name another file now (see
            // `verified`), and opening that one could even block the server (a FIFO
            // renamed onto the name waits for a writer).
            let fid = match inner.walked(ino).await {
                Ok((f, _)) => f,
                Err(e) => return reply.error(e),
            };
            let mut f = match fid.clone_fid().await {
                Ok(f) => f,
                Err(e) => return reply.error(held(errno(&e))),
            };
            if let Err(e) = f.lopen(lflags).await {
                // The path may have changed meanwhile, as above: then its error is no
                // answer.
                return reply.error(match fid.getattr(GETATTR_BASIC).await {
                    Ok(a) if ours(ino, &a.qid) => errno(&e),
                    Ok(_) => Errno::ESTALE,
                    Err(g) => held(errno(&g)),
                });
            }
            // Likewise.
            if !ours(ino, &f.qid()) {
                return reply.error(Errno::ESTALE);
            }
            let fh = inner.new_handle(f, ino.0);
            reply.opened(
                FileHandle(fh),
                if inner.cache {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_DIRECT_IO
                },
            );
        });
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
        spawn!(self, |inner| {
            let Some(fid) = inner.handle(fh) else {
                return reply.error(Errno::EBADF);
            };
            match read_full(&fid, offset, size).await {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(e),
            }
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
        // Lent to the connection uncopied, as in the 9P2000 bridge.
        let (data, back) = crate::fuse::Lent::lend(data);
        let n = data.len();
        spawn!(self, |inner| {
            let r = match inner.handle(fh) {
                Some(fid) => fid.write_all(offset, data).await.map_err(|e| errno(&e)),
                None => {
                    drop(data);
                    Err(Errno::EBADF)
                }
            };
            match r {
                Ok(()) => reply.written(n as u32),
                Err(e) => reply.error(e),
            }
        });
        back.wait();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, fh, datasync, reply);
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.sync(ino, fh, datasync, reply);
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
        if let Ok(mut h) = self.inner.handles.lock() {
            h.remove(&fh.0);
        }
        reply.ok();
    }

    fn opendir(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.open(req, ino, OpenFlags(libc::O_RDONLY), reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        spawn!(self, |inner| {
            let Some(fid) = inner.handle(fh) else {
                return reply.error(Errno::EBADF);
            };
            match fid.readdir(offset, DIRBUF).await {
                Ok(ents) => {
                    for e in ents {
                        if reply.add(
                            INodeNo(ino_of(e.qid.path)),
                            e.offset,
                            kind((e.ty as u32) << 12),
                            &e.name,
                        ) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    /// A listing with each entry's attributes, so that `ls -l` and `find` need no
    /// lookup per name.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        spawn!(self, |inner| {
            let (Some(fid), Some(dir)) = (inner.handle(fh), inner.fid(ino).await) else {
                return reply.error(Errno::EBADF);
            };
            let ents = match fid.readdir(offset, DIRBUF).await {
                Ok(v) => v,
                Err(e) => return reply.error(errno(&e)),
            };
            // Walk and getattr every entry at once; `.` and `..` are not looked up.
            let looked = ents.iter().map(|e| {
                let dir = Arc::clone(&dir);
                let name = e.name.clone();
                async move {
                    if name == "." || name == ".." {
                        return None;
                    }
                    let f = dir.walk1(&name).await.ok()?;
                    let a = f.getattr(GETATTR_BASIC).await.ok()?;
                    Some((f, a))
                }
            });
            let looked: Vec<_> = join_all(looked.collect()).await;
            for (e, got) in ents.iter().zip(looked) {
                let full = match got {
                    Some((f, a)) => {
                        let fa = attr(ino_of(a.qid.path), &a);
                        let full = reply.add(
                            fa.ino,
                            e.offset,
                            &e.name,
                            &ttl(inner.cache),
                            &fa,
                            Generation(0),
                        );
                        if !full {
                            inner.remember(f, &a, true, ino, &e.name);
                        }
                        full
                    }
                    // `.` and `..` (which the kernel does not look up from a
                    // listing): only their names.
                    None if e.name == "." || e.name == ".." => {
                        let a = FileAttr {
                            ino: INodeNo(ino_of(e.qid.path)),
                            size: 0,
                            blocks: 0,
                            atime: UNIX_EPOCH,
                            mtime: UNIX_EPOCH,
                            ctime: UNIX_EPOCH,
                            crtime: UNIX_EPOCH,
                            kind: FileType::Directory,
                            perm: 0,
                            nlink: 0,
                            uid: 0,
                            gid: 0,
                            rdev: 0,
                            blksize: 512,
                            flags: 0,
                        };
                        reply.add(a.ino, e.offset, &e.name, &Duration::ZERO, &a, Generation(0))
                    }
                    // Gone since the listing was read.
                    None => false,
                };
                if full {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        if let Ok(mut h) = self.inner.handles.lock() {
            h.remove(&fh.0);
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        spawn!(self, |inner| {
            let fid = match inner.fid(ino).await {
                Some(f) => Some(f),
                None => inner.fid(INodeNo(1)).await,
            };
            let Some(fid) = fid else {
                return reply.error(Errno::ENOENT);
            };
            match fid.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.bsize,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::EINVAL);
        };
        let lflags = ((flags & OPEN_FLAGS) | (flags & libc::O_EXCL)) as u32;
        let gid = req.gid();
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let mut f = match pfid.clone_fid().await {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            };
            if let Err(e) = f.lcreate(&name, lflags, mode & !umask & 0o7777, gid).await {
                return reply.error(errno(&e));
            }
            // The inode's own fid, walked while the new file's attributes come back.
            let (walked, got) = tokio::join!(pfid.walk1(&name), f.getattr(GETATTR_BASIC));
            let a = match (walked, got) {
                (Ok(w), Ok(a)) => inner.remember(w, &a, true, parent, &name),
                (Err(e), _) | (_, Err(e)) => return reply.error(errno(&e)),
            };
            let fh = inner.new_handle(f, a.ino.0);
            reply.created(
                &ttl(inner.cache),
                &a,
                Generation(0),
                FileHandle(fh),
                if inner.cache {
                    FopenFlags::empty()
                } else {
                    FopenFlags::FOPEN_DIRECT_IO
                },
            );
        });
    }
}

impl BridgeL {
    fn remove(&self, parent: INodeNo, name: &OsStr, flags: u32, reply: ReplyEmpty) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::ENOENT);
        };
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let mut done = pfid.unlinkat(&name, flags).await;
            if unsupported(&done) {
                done = match pfid.walk1(&name).await {
                    Ok(f) => {
                        let is_dir = f.qid().ty & lib9::fcall::QTDIR != 0;
                        // Tremove does not say which kind it expects: check first.
                        if flags == 0 && is_dir {
                            Err(lib9::client_l::Error::Lerror(libc::EISDIR))
                        } else if flags != 0 && !is_dir {
                            Err(lib9::client_l::Error::Lerror(libc::ENOTDIR))
                        } else {
                            f.remove().await
                        }
                    }
                    Err(e) => Err(e),
                };
            }
            match done {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn sync(&self, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        spawn!(self, |inner| {
            let fid = match inner.handle(fh) {
                Some(f) => Some(f),
                None => inner.fid(ino).await,
            };
            let Some(fid) = fid else {
                return reply.error(Errno::EBADF);
            };
            match fid.fsync(datasync).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

/// Whether the server does not know the request (older servers such as diod lack
/// `Trenameat` and `Tunlinkat`).
fn unsupported<T>(r: &Result<T, lib9::client_l::Error>) -> bool {
    matches!(r, Err(lib9::client_l::Error::Lerror(e)) if *e == libc::EOPNOTSUPP || *e == libc::ENOSYS)
}

/// Wait for all of `futs` together.
async fn join_all<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut handles = handles;
    let mut done: Vec<Option<F::Output>> = (0..handles.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in handles.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}

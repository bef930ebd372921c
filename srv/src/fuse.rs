//! The 9P-to-FUSE bridge: a 9P service as an ordinary directory (see docs/9pfuse.md).
//!
//! Each inode the kernel knows is a walked fid on the server, its number the file's
//! qid.path (shifted by 2, so that the root is FUSE's inode 1); `forget` clunks it.
//! Each open file is a fid of its own, opened with the access asked for. Requests are
//! answered from tasks on a tokio runtime, so many are in flight at once; a 9P error
//! becomes the errno lib9 maps it to.

use bytes::Bytes;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use lib9::fcall::{DMDIR, ORDWR, OREAD, OTRUNC, OWRITE, QTAPPEND, QTDIR, QTEXCL, Stat};
use lib9::{Client, Fid};
use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the kernel may keep names and attributes (none without `-c`).
fn ttl(cache: bool) -> Duration {
    if cache {
        Duration::from_secs(1)
    } else {
        Duration::ZERO
    }
}

struct Inode {
    /// The walked fid; `None` for a file the kernel learnt of from a listing
    /// (readdirplus), walked from `parent` by `name` when first used.
    fid: Option<Arc<Fid>>,
    parent: u64,
    name: String,
    nlookup: u64,
}

/// A directory's entries, read when the listing starts.
type Listing = Arc<Vec<Stat>>;

/// How much of a file read straight through is asked for ahead of the program: up to
/// this many bytes, in pieces of up to `READ_PIECE` bytes (a whole number of the
/// program's reads, and no more than one 9P message carries).
const READ_AHEAD_BYTES: u64 = 4 << 20;
const READ_PIECE: u32 = 1 << 20;

/// What a read started early brings: nothing yet, then its result.
type Brought = Option<Result<Bytes, Errno>>;

/// A read started before it was asked for: where, how much, and what it brought.
/// The program's reads are answered from slices of it, without a copy.
struct Ahead {
    at: u64,
    len: u32,
    got: tokio::sync::watch::Receiver<Brought>,
}

struct Handle {
    fid: Arc<Fid>,
    /// The inode it is a handle of: a change through any handle of it, or by its
    /// inode, drops the read started early.
    ino: u64,
    entries: Option<Listing>,
    /// Whether the file is disk-like (not empty, not append-only or exclusive when
    /// opened): only then is the next read started early.
    disk: bool,
    /// Reads started early, in order of offset.
    ahead: std::collections::VecDeque<Ahead>,
}

struct Inner {
    client: Client,
    rt: tokio::runtime::Handle,
    inodes: Mutex<HashMap<u64, Inode>>,
    handles: Mutex<HashMap<u64, Handle>>,
    next_fh: Mutex<u64>,
    cache: bool,
    uid: u32,
    gid: u32,
}

/// The FUSE file system serving one 9P attach.
pub struct Bridge {
    inner: Arc<Inner>,
}

fn ino_of(path: u64) -> u64 {
    path.wrapping_add(2)
}

fn errno(e: &lib9::client::Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// A name as 9P carries it: UTF-8. A name of other bytes cannot be one on the server;
/// it is refused (`EINVAL`, or `ENOENT` to a lookup) rather than made into U+FFFD,
/// which would make distinct names one.
pub(crate) fn utf8(name: &OsStr) -> Option<String> {
    name.to_str().map(str::to_owned)
}

impl Bridge {
    /// A bridge to `root` (an attached fid) of `client`; requests run on `rt`.
    pub fn new(client: Client, root: Fid, rt: tokio::runtime::Handle, cache: bool) -> Bridge {
        let mut inodes = HashMap::new();
        inodes.insert(
            1,
            Inode {
                fid: Some(Arc::new(root)),
                parent: 1,
                name: String::new(),
                nlookup: 1,
            },
        );
        Bridge {
            inner: Arc::new(Inner {
                client,
                rt,
                inodes: Mutex::new(inodes),
                handles: Mutex::new(HashMap::new()),
                next_fh: Mutex::new(1),
                cache,
                // SAFETY: getuid and getgid cannot fail.
                uid: unsafe { libc::getuid() },
                // SAFETY: as above.
                gid: unsafe { libc::getgid() },
            }),
        }
    }
}

/// Read `size` bytes at `offset` (fewer only at the end of the file).
async fn read_full(fid: &Fid, offset: u64, size: u32) -> Result<Bytes, Errno> {
    // Usually one message brings it all: then it is passed on without a copy.
    let first = fid.read(offset, size).await.map_err(|e| errno(&e))?;
    if first.len() as u32 >= size || first.is_empty() {
        return Ok(first);
    }
    let mut out: Vec<u8> = Vec::with_capacity(size as usize);
    out.extend_from_slice(&first);
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
    Ok(Bytes::from(out))
}

/// The `size` bytes at `offset` of `data`, read at `at`, and whether that reaches the
/// end of what was read (a short piece is the end of the file).
fn cut(data: &Bytes, at: u64, offset: u64, size: u32) -> Option<(Bytes, bool)> {
    let s = usize::try_from(offset.checked_sub(at)?).ok()?;
    if s > data.len() {
        return None;
    }
    let e = (s + size as usize).min(data.len());
    Some((data.slice(s..e), e == data.len()))
}

impl Inner {
    /// Forget the reads started early by the handles of `ino` (the file is being
    /// changed, through one of them or another). They are left to finish: aborting one
    /// mid-flight (a Tflush) was seen to make a later request fail.
    fn drop_ahead(&self, ino: INodeNo) {
        if let Ok(mut h) = self.handles.lock() {
            for h in h.values_mut().filter(|h| h.ino == ino.0) {
                h.ahead.clear();
            }
        }
    }

    /// The fid of an inode, walked now if it came from a listing.
    async fn fid(&self, ino: INodeNo) -> Option<Arc<Fid>> {
        let (parent, name) = {
            let m = self.inodes.lock().ok()?;
            let i = m.get(&ino.0)?;
            if let Some(f) = &i.fid {
                return Some(Arc::clone(f));
            }
            (i.parent, i.name.clone())
        };
        // The parent is a directory that was listed, so it has its fid (or is walked
        // the same way).
        let pfid = Box::pin(self.fid(INodeNo(parent))).await?;
        let f = Arc::new(pfid.walk_names(&[name]).await.ok()?);
        let mut m = self.inodes.lock().ok()?;
        let i = m.get_mut(&ino.0)?;
        Some(Arc::clone(i.fid.get_or_insert(f)))
    }

    /// The part of the piece read ahead that holds `size` bytes at `offset`, if it has
    /// come (read without error); the piece goes once a read reaches its end.
    fn ready_ahead(&self, fh: FileHandle, offset: u64, size: u32) -> Option<(Arc<Fid>, Bytes)> {
        let mut hs = self.handles.lock().ok()?;
        let h = hs.get_mut(&fh.0)?;
        let p = h.ahead.front()?;
        if offset < p.at || offset + size as u64 > p.at + p.len as u64 {
            return None;
        }
        let data = match &*p.got.borrow() {
            Some(Ok(d)) => d.clone(),
            _ => return None,
        };
        let (out, done) = cut(&data, p.at, offset, size)?;
        if done {
            h.ahead.pop_front();
        }
        Some((Arc::clone(&h.fid), out))
    }

    /// The piece read ahead that holds `size` bytes at `offset`, to wait for; any
    /// pieces before it are forgotten, and all of them if none holds it.
    fn pending_ahead(
        &self,
        fh: FileHandle,
        offset: u64,
        size: u32,
    ) -> Option<(u64, tokio::sync::watch::Receiver<Brought>)> {
        let mut hs = self.handles.lock().ok()?;
        let h = hs.get_mut(&fh.0)?;
        while let Some(p) = h.ahead.front() {
            if offset >= p.at + p.len as u64 {
                h.ahead.pop_front();
                continue;
            }
            if offset >= p.at && offset + size as u64 <= p.at + p.len as u64 {
                return Some((p.at, p.got.clone()));
            }
            break;
        }
        h.ahead.clear();
        None
    }

    /// Forget the piece at `at` of handle `fh` once a read has reached its end.
    fn used_ahead(&self, fh: FileHandle, at: u64) {
        if let Ok(mut hs) = self.handles.lock() {
            if let Some(h) = hs.get_mut(&fh.0) {
                if h.ahead.front().is_some_and(|p| p.at == at) {
                    h.ahead.pop_front();
                }
            }
        }
    }

    /// Keep the pieces after `offset` of a file read straight through in `size`
    /// reads coming, up to the read-ahead depth.
    fn top_up(&self, fh: FileHandle, fid: &Arc<Fid>, offset: u64, size: u32) {
        let size = size.max(1);
        let most = READ_PIECE.min(fid.iounit()).max(size);
        let len = most / size * size;
        let Ok(mut hs) = self.handles.lock() else {
            return;
        };
        let Some(h) = hs.get_mut(&fh.0) else { return };
        if !h.disk {
            return;
        }
        let mut next = h
            .ahead
            .back()
            .map_or(offset + size as u64, |p| p.at + p.len as u64);
        let end = offset + size as u64 + READ_AHEAD_BYTES;
        while next < end {
            let f = Arc::clone(fid);
            let at = next;
            let (tx, rx) = tokio::sync::watch::channel(None);
            self.rt.spawn(async move {
                let r = read_full(&f, at, len).await;
                let _ = tx.send(Some(r));
            });
            h.ahead.push_back(Ahead { at, len, got: rx });
            next += len as u64;
        }
    }

    /// The entries of an open directory: read when the listing starts (offset 0),
    /// kept for the rest of it.
    async fn listing(&self, fh: FileHandle, offset: u64) -> Result<Listing, Errno> {
        let (fid, entries) = self.handle(fh).ok_or(Errno::EBADF)?;
        if let Some(e) = entries {
            if offset > 0 {
                return Ok(e);
            }
        }
        let v = Arc::new(fid.readdir().await.map_err(|e| errno(&e))?);
        if let Ok(mut h) = self.handles.lock() {
            if let Some(h) = h.get_mut(&fh.0) {
                h.entries = Some(Arc::clone(&v));
            }
        }
        Ok(v)
    }

    /// Count a lookup of `ino` that a listing made, remembering where it is.
    fn listed(&self, ino: u64, parent: u64, name: &str) {
        if let Ok(mut m) = self.inodes.lock() {
            m.entry(ino)
                .and_modify(|i| i.nlookup += 1)
                .or_insert_with(|| Inode {
                    fid: None,
                    parent,
                    name: name.to_string(),
                    nlookup: 1,
                });
        }
    }

    fn handle(&self, fh: FileHandle) -> Option<(Arc<Fid>, Option<Listing>)> {
        let h = self.handles.lock().ok()?;
        h.get(&fh.0)
            .map(|h| (Arc::clone(&h.fid), h.entries.clone()))
    }

    fn new_handle(&self, fid: Fid, ino: u64) -> u64 {
        self.new_handle_disk(fid, ino, false)
    }

    fn new_handle_disk(&self, fid: Fid, ino: u64, disk: bool) -> u64 {
        let fh = match self.next_fh.lock() {
            Ok(mut n) => {
                *n += 1;
                *n
            }
            Err(_) => 0,
        };
        if let Ok(mut h) = self.handles.lock() {
            h.insert(
                fh,
                Handle {
                    fid: Arc::new(fid),
                    ino,
                    entries: None,
                    disk,
                    ahead: std::collections::VecDeque::new(),
                },
            );
        }
        fh
    }

    fn attr(&self, ino: u64, st: &Stat) -> FileAttr {
        let t = |s: u32| UNIX_EPOCH + Duration::from_secs(s as u64);
        let dir = st.qid.ty & QTDIR != 0;
        FileAttr {
            ino: INodeNo(ino),
            size: st.length,
            blocks: st.length.div_ceil(512),
            atime: t(st.atime),
            mtime: t(st.mtime),
            ctime: t(st.mtime),
            crtime: t(st.mtime),
            kind: if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            },
            perm: (st.mode & 0o777) as u16,
            nlink: if dir { 2 } else { 1 },
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            // The preferred I/O size: programs (cat, cp) size their reads by it, and
            // one read of a whole message's worth is one FUSE request and one 9P read
            // instead of eight.
            blksize: io_size(self.client.iounit()),
            flags: 0,
        }
    }

    /// Walk `name` from `parent` and remember the result as an inode (or count one
    /// more lookup of an inode already known).
    async fn lookup(&self, parent: INodeNo, name: &str) -> Result<FileAttr, Errno> {
        let pfid = self.fid(parent).await.ok_or(Errno::ENOENT)?;
        let fid = pfid
            .walk_names(&[name.to_string()])
            .await
            .map_err(|e| errno(&e))?;
        let st = fid.stat().await.map_err(|e| errno(&e))?;
        let ino = ino_of(st.qid.path);
        if let Ok(mut m) = self.inodes.lock() {
            match m.get_mut(&ino) {
                // The newest walk is kept: an older fid may name the file by a name it
                // no longer has (after a rename).
                Some(i) => {
                    i.nlookup += 1;
                    i.fid = Some(Arc::new(fid));
                    i.parent = parent.0;
                    i.name = name.to_string();
                }
                None => {
                    m.insert(
                        ino,
                        Inode {
                            fid: Some(Arc::new(fid)),
                            parent: parent.0,
                            name: name.to_string(),
                            nlookup: 1,
                        },
                    );
                }
            }
        }
        Ok(self.attr(ino, &st))
    }
}

/// The inodes beneath directory `dir`, by the parents `parent` gives.
pub(crate) fn beneath<V>(m: &HashMap<u64, V>, dir: u64, parent: impl Fn(&V) -> u64) -> Vec<u64> {
    m.iter()
        .filter(|&(&ino, _)| ino != dir && ino != 1)
        .filter(|(_, i)| {
            let mut p = parent(i);
            for _ in 0..4096 {
                if p == dir {
                    return true;
                }
                if p == 1 {
                    return false;
                }
                match m.get(&p) {
                    Some(pi) => p = parent(pi),
                    None => return false,
                }
            }
            false
        })
        .map(|(&ino, _)| ino)
        .collect()
}

/// Drop the fids of every inode beneath directory `dir` (they are walked again, by
/// name from their parents, when next used).
fn forget_fids_beneath(m: &mut HashMap<u64, Inode>, dir: u64) {
    for ino in beneath(m, dir, |i| i.parent) {
        if let Some(i) = m.get_mut(&ino) {
            i.fid = None;
        }
    }
}

/// Fill a directory reply from `offset`: `.` and `..` (offsets 1 and 2), then the
/// server's entries.
fn fill_dir(ino: INodeNo, entries: &[Stat], offset: u64, reply: &mut ReplyDirectory) {
    for (i, name) in [".", ".."].into_iter().enumerate().skip(offset as usize) {
        if reply.add(ino, (i + 1) as u64, FileType::Directory, name) {
            return;
        }
    }
    let skip = (offset as usize).saturating_sub(2);
    for (i, st) in entries.iter().enumerate().skip(skip) {
        let kind = if st.qid.ty & QTDIR != 0 {
            FileType::Directory
        } else {
            FileType::RegularFile
        };
        if reply.add(INodeNo(ino_of(st.qid.path)), (i + 3) as u64, kind, &st.name) {
            return;
        }
    }
}

/// fuser threads reading requests: a write holds its thread until the server has
/// the data (it is sent from fuser's buffer, uncopied), so others go on meanwhile.
pub const THREADS: usize = 4;

/// Run a request's work on the runtime and answer from there.
macro_rules! spawn {
    ($self:ident, |$inner:ident| $body:expr) => {{
        let $inner = Arc::clone(&$self.inner);
        let rt = $inner.rt.clone();
        rt.spawn(async move { $body });
    }};
}

impl Filesystem for Bridge {
    /// Writes as big as one 9P message carries, reads ahead as much, and many
    /// requests outstanding at once.
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
            let _ = config.add_capabilities(fuser::InitFlags::FUSE_DO_READDIRPLUS);
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
                    // Dropping the last reference clunks the fid.
                    m.remove(&ino.0);
                }
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        spawn!(self, |inner| {
            let Some(fid) = inner.fid(ino).await else {
                return reply.error(Errno::ENOENT);
            };
            match fid.stat().await {
                Ok(st) => reply.attr(&ttl(inner.cache), &inner.attr(ino.0, &st)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        if size.is_some() {
            self.inner.drop_ahead(ino);
        }
        spawn!(self, |inner| {
            let Some(fid) = inner.fid(ino).await else {
                return reply.error(Errno::ENOENT);
            };
            let mut st = Stat::dont_touch();
            if let Some(m) = mode {
                let old = match fid.stat().await {
                    Ok(s) => s.mode,
                    Err(e) => return reply.error(errno(&e)),
                };
                st.mode = (old & !0o777) | (m & 0o777);
            }
            if let Some(s) = size {
                st.length = s;
            }
            if let Some(t) = mtime {
                let when = match t {
                    TimeOrNow::SpecificTime(t) => t,
                    TimeOrNow::Now => SystemTime::now(),
                };
                st.mtime = when
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as u32);
            }
            if let Err(e) = fid.wstat(&st).await {
                return reply.error(errno(&e));
            }
            match fid.stat().await {
                Ok(st) => reply.attr(&ttl(inner.cache), &inner.attr(ino.0, &st)),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::EINVAL);
        };
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let mut f = match pfid.walk_names(&[]).await {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            };
            if let Err(e) = f
                .create(&name, DMDIR | (mode & !umask & 0o777), OREAD)
                .await
            {
                return reply.error(errno(&e));
            }
            drop(f);
            match inner.lookup(parent, &name).await {
                Ok(a) => reply.entry(&ttl(inner.cache), &a, Generation(0)),
                Err(e) => reply.error(e),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        // 9P renames only within a directory (wstat of the name).
        if parent != newparent {
            return reply.error(Errno::EXDEV);
        }
        let (Some(name), Some(newname)) = (utf8(name), utf8(newname)) else {
            return reply.error(Errno::EINVAL);
        };
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            // Plan 9 refuses to rename onto an existing name; Linux replaces it.
            if let Ok(old) = pfid.walk_names(std::slice::from_ref(&newname)).await {
                if let Err(e) = old.remove().await {
                    return reply.error(errno(&e));
                }
            }
            let f = match pfid.walk_names(&[name]).await {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            };
            let mut st = Stat::dont_touch();
            st.name = newname.clone();
            if let Err(e) = f.wstat(&st).await {
                return reply.error(errno(&e));
            }
            // A server may know a fid by the path it was walked by (exportfs does):
            // the inode gets a fid walked by its new name, and the fids of everything
            // beneath a renamed directory are walked again when next used.
            let ino = ino_of(f.qid().path);
            let is_dir = f.qid().ty & QTDIR != 0;
            let fresh = pfid.walk_names(std::slice::from_ref(&newname)).await.ok();
            if let Ok(mut m) = inner.inodes.lock() {
                if let Some(i) = m.get_mut(&ino) {
                    i.name = newname;
                    i.parent = parent.0;
                    i.fid = fresh.map(Arc::new);
                }
                if is_dir {
                    forget_fids_beneath(&mut m, ino);
                }
            }
            reply.ok();
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut mode = match flags.acc_mode() {
            OpenAccMode::O_RDONLY => OREAD,
            OpenAccMode::O_WRONLY => OWRITE,
            OpenAccMode::O_RDWR => ORDWR,
        };
        if flags.0 & libc::O_TRUNC != 0 {
            mode |= OTRUNC;
            self.inner.drop_ahead(ino);
        }
        spawn!(self, |inner| {
            let Some(fid) = inner.fid(ino).await else {
                return reply.error(Errno::ENOENT);
            };
            let mut f = match fid.walk_names(&[]).await {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            };
            if let Err(e) = f.open(mode).await {
                return reply.error(errno(&e));
            }
            // Files that are not disk-like (no length, append-only, exclusive) are
            // read and written through to the server, never from the page cache.
            // A file of length 0 may be synthetic (its contents made when read, as in
            // /proc or a Plan 9 device), so it is not cached even with -c.
            let q = f.qid();
            let synthetic = q.ty & (QTAPPEND | QTEXCL) != 0;
            let dir = q.ty & QTDIR != 0;
            let disk = !synthetic && !dir && fid.stat().await.is_ok_and(|st| st.length > 0);
            let direct = !inner.cache || (!dir && !disk);
            // Through the page cache the kernel reads ahead itself.
            let fh = inner.new_handle_disk(f, ino.0, disk && direct);
            reply.opened(
                FileHandle(fh),
                if direct {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::empty()
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
        // A piece read ahead that has come already is answered here and now, with no
        // hand-over to a task (a wake-up of another thread costs more than the copy).
        if let Some((fid, data)) = self.inner.ready_ahead(fh, offset, size) {
            if data.len() == size as usize {
                self.inner.top_up(fh, &fid, offset, size);
            }
            return reply.data(&data);
        }
        spawn!(self, |inner| {
            let Some((fid, _)) = inner.handle(fh) else {
                return reply.error(Errno::EBADF);
            };
            let disk = inner
                .handles
                .lock()
                .ok()
                .and_then(|h| h.get(&fh.0).map(|h| h.disk))
                .unwrap_or(false);
            // A piece started early that holds this read is waited for and cut;
            // pieces started for anything else are forgotten.
            let mut got = None;
            if let Some((at, mut rx)) = inner.pending_ahead(fh, offset, size) {
                if let Ok(v) = rx.wait_for(|v| v.is_some()).await {
                    if let Some(Ok(d)) = &*v {
                        if let Some((out, done)) = cut(d, at, offset, size) {
                            got = Some(Ok(out));
                            if done {
                                inner.used_ahead(fh, at);
                            }
                        }
                    }
                }
            }
            let got = match got {
                Some(r) => r,
                None => read_full(&fid, offset, size).await,
            };
            let data = match got {
                Ok(d) => d,
                Err(e) => return reply.error(e),
            };
            // Reading straight through a disk-like file: keep the next pieces coming,
            // so that the server works while the program takes this one. They are
            // noted before the reply goes, so that a change the program makes after
            // this read finds them to drop.
            if disk && data.len() == size as usize {
                inner.top_up(fh, &fid, offset, size);
            }
            reply.data(&data);
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.inner.drop_ahead(ino);
        // The data goes out straight from fuser's buffer, uncopied: it is lent to
        // the connection as `Bytes` whose last clone, dropped once the Twrites are
        // written and answered, lets this thread go on.
        let (data, back) = Lent::lend(data);
        let n = data.len();
        spawn!(self, |inner| {
            let r = match inner.handle(fh) {
                Some((fid, _)) => fid.write_all(offset, data, 4).await.map_err(|e| errno(&e)),
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

    /// A close: nothing to send (writes are not buffered here).
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

    /// `fsync`: a wstat that changes nothing, which asks a Plan 9 server to commit
    /// the file to stable storage.
    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        spawn!(self, |inner| {
            let fid = match inner.handle(fh) {
                Some((f, _)) => f,
                None => match inner.fid(ino).await {
                    Some(f) => f,
                    None => return reply.error(Errno::EBADF),
                },
            };
            match fid.wstat(&Stat::dont_touch()).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
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
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        // Past the start the listing is at hand: answered here, with no task.
        if offset > 0 {
            if let Some((_, Some(entries))) = self.inner.handle(fh) {
                fill_dir(ino, &entries, offset, &mut reply);
                return reply.ok();
            }
        }
        spawn!(self, |inner| {
            let entries = match inner.listing(fh, offset).await {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            fill_dir(ino, &entries, offset, &mut reply);
            reply.ok();
        });
    }

    /// A listing with each entry's attributes (only with `-c`, when the kernel may
    /// keep them): a 9P directory read carries every entry's stat already, so this
    /// costs no more messages than a plain listing, and `ls -l` or `find` then needs
    /// no lookup per name. The files' fids are walked when first used.
    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        spawn!(self, |inner| {
            let entries = match inner.listing(fh, offset).await {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            let ttl = ttl(inner.cache);
            // `.` and `..` first (the kernel does not look them up from a listing).
            let dot = FileAttr {
                kind: FileType::Directory,
                ..inner.attr(ino.0, &Stat::dont_touch())
            };
            for (i, name) in [".", ".."].into_iter().enumerate().skip(offset as usize) {
                if reply.add(
                    ino,
                    (i + 1) as u64,
                    name,
                    &Duration::ZERO,
                    &dot,
                    Generation(0),
                ) {
                    return reply.ok();
                }
            }
            let skip = (offset as usize).saturating_sub(2);
            for (i, st) in entries.iter().enumerate().skip(skip) {
                let n = ino_of(st.qid.path);
                let a = inner.attr(n, st);
                if reply.add(
                    INodeNo(n),
                    (i + 3) as u64,
                    &st.name,
                    &ttl,
                    &a,
                    Generation(0),
                ) {
                    break;
                }
                inner.listed(n, ino.0, &st.name);
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

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let bsize = self.inner.client.iounit().max(512);
        reply.statfs(0, 0, 0, 0, 0, bsize, 255, bsize);
    }

    fn create(
        &self,
        _req: &Request,
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
        let omode = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => OWRITE,
            libc::O_RDWR => ORDWR,
            _ => OREAD,
        };
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let mut f = match pfid.walk_names(&[]).await {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            };
            if let Err(e) = f.create(&name, mode & !umask & 0o777, omode).await {
                return reply.error(errno(&e));
            }
            let attr = match inner.lookup(parent, &name).await {
                Ok(a) => a,
                Err(e) => return reply.error(e),
            };
            let fh = inner.new_handle(f, attr.ino.0);
            let direct = if inner.cache {
                FopenFlags::empty()
            } else {
                FopenFlags::FOPEN_DIRECT_IO
            };
            reply.created(
                &ttl(inner.cache),
                &attr,
                Generation(0),
                FileHandle(fh),
                direct,
            );
        });
    }
}

impl Bridge {
    fn remove(&self, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let Some(name) = utf8(name) else {
            return reply.error(Errno::ENOENT);
        };
        spawn!(self, |inner| {
            let Some(pfid) = inner.fid(parent).await else {
                return reply.error(Errno::ENOENT);
            };
            let f = match pfid.walk_names(&[name]).await {
                Ok(f) => f,
                Err(e) => return reply.error(errno(&e)),
            };
            match f.remove().await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}

/// The largest power of two no more than the connection's I/O unit, between
/// 8 KiB and `READ_PIECE`: the block size the mount reports.
fn io_size(iounit: u32) -> u32 {
    let n = iounit.clamp(8192, READ_PIECE);
    1 << (31 - n.leading_zeros())
}

/// Memory borrowed from the caller and handed to the connection as [`Bytes`]
/// without a copy. Sound because [`Returned::wait`] does not return until every
/// clone of the `Bytes` is gone: the memory is read only through them.
pub(crate) struct Lent {
    ptr: *const u8,
    len: usize,
    _back: std::sync::mpsc::Sender<()>,
}

// SAFETY: `Lent` only reads the memory, which outlives it (see `Returned`).
unsafe impl Send for Lent {}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the lender waits in `Returned::wait` while any `Lent` lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The lender's side: dropping or waiting on it blocks until the loan is over.
pub(crate) struct Returned(std::sync::mpsc::Receiver<()>);

impl Lent {
    pub(crate) fn lend(data: &[u8]) -> (Bytes, Returned) {
        let (tx, rx) = std::sync::mpsc::channel();
        let lent = Lent {
            ptr: data.as_ptr(),
            len: data.len(),
            _back: tx,
        };
        (Bytes::from_owner(lent), Returned(rx))
    }
}

impl Returned {
    pub(crate) fn wait(self) {}
}

impl Drop for Returned {
    fn drop(&mut self) {
        // Every sender gone (the last `Bytes` clone dropped) ends the wait.
        while self.0.recv().is_ok() {}
    }
}

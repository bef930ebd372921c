//! ramfs: an in-memory file tree served over 9P, as Plan 9's ramfs(4).
//!
//! Files belong to the user who created them (the attach name), their group is the
//! directory's, and every operation is checked against the owner, group and other
//! bits as Plan 9 checks them. `DMEXCL` files open once at a time, `DMAPPEND` files
//! write at the end, `ORCLOSE` removes on clunk; `wstat` renames, truncates, changes
//! mode, mtime and group. File data is kept in chunks, so sparse files cost only what
//! is written, and the whole tree is held to a size limit ("file system full").

use bytes::{Bytes, BytesMut};
use lib9::errstr::{self, Ename};
use lib9::fcall::{
    DMAPPEND, DMDIR, DMEXCL, DMEXEC, DMWRITE, ORCLOSE, OTRUNC, QTAPPEND, QTDIR, QTEXCL, QTFILE,
    Qid, Stat,
};
use lib9::server::{
    Caller, Data, Filesystem, FsResult, Opened, Walked, check_wstat_fixed, has_perm, open_perm,
};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Bytes per chunk of file data.
const CHUNK: usize = 1024 * 1024;

/// The data of one file: chunks, any of which may be missing (a hole reads as zeros)
/// or shorter than `CHUNK` (the rest reads as zeros up to the file's length).
///
/// Chunks are shared buffers: a read within one chunk hands out a slice of it, which
/// goes to the socket uncopied, and a write of a whole aligned chunk keeps the
/// written message's own buffer. A write into a chunk that a reply still holds copies
/// the chunk first.
struct Content {
    chunks: BTreeMap<u64, Bytes>,
    len: u64,
    /// The tree's count of bytes held, given back when the content goes.
    used: Arc<AtomicU64>,
}

impl Drop for Content {
    fn drop(&mut self) {
        self.used.fetch_sub(self.mem() as u64, Ordering::Relaxed);
    }
}

impl Content {
    fn new(used: &Arc<AtomicU64>) -> Content {
        Content {
            chunks: BTreeMap::new(),
            len: 0,
            used: Arc::clone(used),
        }
    }

    fn read(&self, offset: u64, count: usize) -> Bytes {
        if offset >= self.len {
            return Bytes::new();
        }
        let n = (count as u64).min(self.len - offset) as usize;
        let ci = offset / CHUNK as u64;
        let co = (offset % CHUNK as u64) as usize;
        if co + n <= CHUNK {
            if let Some(c) = self.chunks.get(&ci) {
                if co + n <= c.len() {
                    return c.slice(co..co + n);
                }
            }
        }
        let mut out = BytesMut::with_capacity(n);
        let mut pos = offset;
        let end = offset + n as u64;
        while pos < end {
            let ci = pos / CHUNK as u64;
            let co = (pos % CHUNK as u64) as usize;
            let take = ((CHUNK - co) as u64).min(end - pos) as usize;
            match self.chunks.get(&ci) {
                Some(c) if co < c.len() => {
                    let have = (c.len() - co).min(take);
                    out.extend_from_slice(&c[co..co + have]);
                    out.resize(out.len() + (take - have), 0);
                }
                _ => out.resize(out.len() + take, 0),
            }
            pos += take as u64;
        }
        out.freeze()
    }

    /// Write `data` at `offset`; returns how many bytes of memory it added.
    fn write(&mut self, offset: u64, data: &Bytes) -> usize {
        let mut added = 0;
        let mut pos = offset;
        let mut done = 0;
        while done < data.len() {
            let ci = pos / CHUNK as u64;
            let co = (pos % CHUNK as u64) as usize;
            let take = (CHUNK - co).min(data.len() - done);
            let old = self.chunks.remove(&ci).unwrap_or_default();
            let oldlen = old.len();
            let new = if co == 0 && take == CHUNK {
                // A whole chunk: keep the message's buffer.
                data.slice(done..done + take)
            } else {
                let mut m = match old.try_into_mut() {
                    Ok(m) => m,
                    Err(shared) => BytesMut::from(&shared[..]),
                };
                if m.len() < co + take {
                    if ci > 0 && m.capacity() < CHUNK {
                        // Past the first chunk files are big: no growing by steps.
                        m.reserve(CHUNK - m.len());
                    }
                    m.resize(co + take, 0);
                }
                m[co..co + take].copy_from_slice(&data[done..done + take]);
                m.freeze()
            };
            added += new.len().saturating_sub(oldlen);
            self.chunks.insert(ci, new);
            done += take;
            pos += take as u64;
        }
        self.len = self.len.max(offset + data.len() as u64);
        added
    }

    /// Bytes of memory `write(offset, len)` could add at most.
    fn growth(&self, offset: u64, len: usize) -> usize {
        let end = offset.saturating_add(len as u64);
        let mut add = 0usize;
        let mut pos = offset;
        while pos < end {
            let ci = pos / CHUNK as u64;
            let co = (pos % CHUNK as u64) as usize;
            let take = ((CHUNK - co) as u64).min(end - pos) as usize;
            let have = self.chunks.get(&ci).map_or(0, Bytes::len);
            add += (co + take).saturating_sub(have);
            pos += take as u64;
        }
        add
    }

    /// Set the length; returns the bytes of memory freed.
    fn truncate(&mut self, len: u64) -> usize {
        let mut freed = 0;
        let keep = len.div_ceil(CHUNK as u64);
        let gone: Vec<u64> = self.chunks.range(keep..).map(|(k, _)| *k).collect();
        for k in gone {
            if let Some(c) = self.chunks.remove(&k) {
                freed += c.len();
            }
        }
        if len % CHUNK as u64 != 0 {
            let last = len / CHUNK as u64;
            let within = (len % CHUNK as u64) as usize;
            if let Some(c) = self.chunks.get_mut(&last) {
                if c.len() > within {
                    freed += c.len() - within;
                    c.truncate(within);
                }
            }
        }
        self.len = len;
        freed
    }

    fn mem(&self) -> usize {
        self.chunks.values().map(Bytes::len).sum()
    }
}

struct Node {
    name: String,
    mode: u32,
    uid: String,
    gid: String,
    muid: String,
    atime: u32,
    mtime: u32,
    vers: u32,
    parent: u64,
    kind: Kind,
    /// A DMEXCL file is open.
    excl_open: bool,
}

enum Kind {
    Dir(BTreeMap<String, u64>),
    File(Arc<RwLock<Content>>),
}

impl Node {
    fn qid(&self, path: u64) -> Qid {
        let mut ty = QTFILE;
        if self.mode & DMDIR != 0 {
            ty |= QTDIR;
        }
        if self.mode & DMAPPEND != 0 {
            ty |= QTAPPEND;
        }
        if self.mode & DMEXCL != 0 {
            ty |= QTEXCL;
        }
        Qid {
            ty,
            vers: self.vers,
            path,
        }
    }

    fn allows(&self, who: &str, want: u32) -> bool {
        has_perm(who, &self.uid, &self.gid, self.mode, want)
    }
}

struct Tree {
    nodes: HashMap<u64, Node>,
    next: u64,
}

const ROOT: u64 = 0;

/// The in-memory file server.
pub struct RamFs {
    tree: Mutex<Tree>,
    used: Arc<AtomicU64>,
    limit: u64,
}

/// A ramfs fid: the file it names and, once open, how.
pub struct RamFid {
    path: u64,
    open: Option<OpenState>,
}

struct OpenState {
    content: Option<Arc<RwLock<Content>>>,
    excl: bool,
    rclose: bool,
    append: bool,
}

fn now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn enoent() -> Ename {
    Ename::from(errstr::ENONEXIST)
}

fn eperm() -> Ename {
    Ename::from(errstr::EPERM)
}

impl RamFs {
    /// A new tree whose root belongs to `owner`, holding at most `limit` bytes of data.
    pub fn new(owner: &str, limit: u64) -> RamFs {
        let t = now();
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                name: "/".into(),
                mode: DMDIR | 0o777,
                uid: owner.into(),
                gid: owner.into(),
                muid: owner.into(),
                atime: t,
                mtime: t,
                vers: 0,
                parent: ROOT,
                kind: Kind::Dir(BTreeMap::new()),
                excl_open: false,
            },
        );
        RamFs {
            tree: Mutex::new(Tree { nodes, next: 1 }),
            used: Arc::new(AtomicU64::new(0)),
            limit,
        }
    }

    /// Bytes of file data held.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn tree(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn reserve(&self, n: usize) -> FsResult<()> {
        let n = n as u64;
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            if cur.saturating_add(n) > self.limit {
                return Err(Ename::from(errstr::ENOSPACE));
            }
            match self.used.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok(()),
                Err(c) => cur = c,
            }
        }
    }

    fn release(&self, n: usize) {
        self.used.fetch_sub(n as u64, Ordering::Relaxed);
    }

    fn stat_of(path: u64, n: &Node) -> Stat {
        let length = match &n.kind {
            Kind::File(c) => c.read().map_or(0, |c| c.len),
            Kind::Dir(_) => 0,
        };
        Stat {
            ty: 0,
            dev: 0,
            qid: n.qid(path),
            mode: n.mode,
            atime: n.atime,
            mtime: n.mtime,
            length,
            name: n.name.clone(),
            uid: n.uid.clone(),
            gid: n.gid.clone(),
            muid: n.muid.clone(),
        }
    }

    /// Remove `path` from the tree (its parent's write permission already checked).
    fn unlink(&self, t: &mut Tree, path: u64) -> FsResult<()> {
        if path == ROOT {
            return Err(eperm());
        }
        let n = t.nodes.get(&path).ok_or_else(enoent)?;
        if let Kind::Dir(d) = &n.kind {
            if !d.is_empty() {
                return Err(Ename::from(errstr::ENOTEMPTY));
            }
        }
        let (parent, name) = (n.parent, n.name.clone());
        // The data goes (and its memory is counted free) when the last fid that has
        // the file open lets go of it.
        t.nodes.remove(&path);
        if let Some(p) = t.nodes.get_mut(&parent) {
            if let Kind::Dir(d) = &mut p.kind {
                d.remove(&name);
            }
            p.mtime = now();
            p.vers = p.vers.wrapping_add(1);
        }
        Ok(())
    }

    fn may_remove(t: &Tree, who: &str, path: u64) -> FsResult<()> {
        let n = t.nodes.get(&path).ok_or_else(enoent)?;
        let p = t.nodes.get(&n.parent).ok_or_else(enoent)?;
        if path == ROOT || !p.allows(who, DMWRITE) {
            return Err(eperm());
        }
        Ok(())
    }
}

impl Filesystem for RamFs {
    type Fid = RamFid;

    async fn attach(
        &self,
        _c: &Caller,
        _aname: &str,
        _afid: Option<&RamFid>,
    ) -> FsResult<(RamFid, Qid)> {
        let t = self.tree();
        let root = t.nodes.get(&ROOT).ok_or_else(enoent)?;
        Ok((
            RamFid {
                path: ROOT,
                open: None,
            },
            root.qid(ROOT),
        ))
    }

    async fn walk(&self, c: &Caller, fid: &RamFid, names: &[String]) -> FsResult<Walked<RamFid>> {
        let t = self.tree();
        let mut cur = fid.path;
        let mut qids = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let step = (|| {
                let n = t.nodes.get(&cur).ok_or_else(enoent)?;
                let Kind::Dir(d) = &n.kind else {
                    return Err(Ename::from(errstr::EWALKNODIR));
                };
                if !n.allows(&c.uname, DMEXEC) {
                    return Err(eperm());
                }
                let next = if name == ".." {
                    n.parent
                } else {
                    *d.get(name.as_str()).ok_or_else(enoent)?
                };
                let q = t.nodes.get(&next).ok_or_else(enoent)?.qid(next);
                Ok((next, q))
            })();
            match step {
                Ok((next, q)) => {
                    cur = next;
                    qids.push(q);
                }
                Err(e) if i == 0 => return Err(e),
                Err(_) => return Ok(Walked { qids, fid: None }),
            }
        }
        if names.is_empty() && !t.nodes.contains_key(&cur) {
            return Err(enoent());
        }
        Ok(Walked {
            qids,
            fid: Some(RamFid {
                path: cur,
                open: None,
            }),
        })
    }

    async fn open(&self, c: &Caller, fid: &RamFid, mode: u8) -> FsResult<Opened<RamFid>> {
        let mut t = self.tree();
        let n = t.nodes.get(&fid.path).ok_or_else(enoent)?;
        if !n.allows(&c.uname, open_perm(mode)) {
            return Err(eperm());
        }
        if mode & ORCLOSE != 0 {
            RamFs::may_remove(&t, &c.uname, fid.path)?;
        }
        let n = t.nodes.get_mut(&fid.path).ok_or_else(enoent)?;
        let excl = n.mode & DMEXCL != 0;
        if excl {
            if n.excl_open {
                return Err(Ename::from(errstr::EEXCL));
            }
            n.excl_open = true;
        }
        let content = match &n.kind {
            Kind::File(ct) => Some(Arc::clone(ct)),
            Kind::Dir(_) => None,
        };
        if mode & OTRUNC != 0 {
            if let Some(ct) = &content {
                let freed = ct
                    .write()
                    .map_err(|_| Ename::from(errstr::EIO))?
                    .truncate(0);
                self.release(freed);
                n.mtime = now();
                n.vers = n.vers.wrapping_add(1);
                n.muid = c.uname.to_string();
            }
        }
        Ok(opened(fid.path, n, content, mode))
    }

    async fn create(
        &self,
        c: &Caller,
        fid: &RamFid,
        name: &str,
        perm: u32,
        mode: u8,
    ) -> FsResult<Opened<RamFid>> {
        let mut t = self.tree();
        let dir = t.nodes.get(&fid.path).ok_or_else(enoent)?;
        let Kind::Dir(entries) = &dir.kind else {
            return Err(Ename::from(errstr::ECREATENONDIR));
        };
        if !dir.allows(&c.uname, DMWRITE) {
            return Err(eperm());
        }
        if entries.contains_key(name) {
            return Err(Ename::from(errstr::EEXIST));
        }
        let is_dir = perm & DMDIR != 0;
        let mode_bits = if is_dir {
            perm & (!0o777 | (dir.mode & 0o777))
        } else {
            perm & (!0o666 | (dir.mode & 0o666))
        };
        let gid = dir.gid.clone();
        let path = t.next;
        t.next += 1;
        let tm = now();
        let content = if is_dir {
            None
        } else {
            Some(Arc::new(RwLock::new(Content::new(&self.used))))
        };
        let node = Node {
            name: name.into(),
            mode: mode_bits & (DMDIR | DMAPPEND | DMEXCL | 0o777),
            uid: c.uname.to_string(),
            gid,
            muid: c.uname.to_string(),
            atime: tm,
            mtime: tm,
            vers: 0,
            parent: fid.path,
            kind: match &content {
                Some(ct) => Kind::File(Arc::clone(ct)),
                None => Kind::Dir(BTreeMap::new()),
            },
            excl_open: false,
        };
        let mut node = node;
        node.excl_open = node.mode & DMEXCL != 0;
        let o = opened(path, &node, content, mode);
        t.nodes.insert(path, node);
        if let Some(d) = t.nodes.get_mut(&fid.path) {
            if let Kind::Dir(e) = &mut d.kind {
                e.insert(name.into(), path);
            }
            d.mtime = tm;
            d.vers = d.vers.wrapping_add(1);
        }
        Ok(o)
    }

    async fn read(&self, _c: &Caller, fid: &RamFid, offset: u64, count: u32) -> FsResult<Data> {
        let Some(ct) = fid.open.as_ref().and_then(|o| o.content.as_ref()) else {
            return Err(Ename::from(errstr::EBADUSE));
        };
        let data = ct
            .read()
            .map_err(|_| Ename::from(errstr::EIO))?
            .read(offset, count as usize);
        Ok(data.into())
    }

    async fn readdir(&self, _c: &Caller, fid: &RamFid) -> FsResult<Vec<Stat>> {
        let mut t = self.tree();
        let n = t.nodes.get(&fid.path).ok_or_else(enoent)?;
        let Kind::Dir(d) = &n.kind else {
            return Err(Ename::from(errstr::ENOTDIR));
        };
        let out = d
            .values()
            .filter_map(|p| t.nodes.get(p).map(|n| RamFs::stat_of(*p, n)))
            .collect();
        if let Some(n) = t.nodes.get_mut(&fid.path) {
            n.atime = now();
        }
        Ok(out)
    }

    async fn write(&self, c: &Caller, fid: &RamFid, offset: u64, data: Bytes) -> FsResult<u32> {
        let Some(o) = fid.open.as_ref() else {
            return Err(Ename::from(errstr::EBADUSE));
        };
        let Some(ct) = o.content.as_ref() else {
            return Err(Ename::from(errstr::EISDIR));
        };
        {
            let mut w = ct.write().map_err(|_| Ename::from(errstr::EIO))?;
            let off = if o.append { w.len } else { offset };
            if off.checked_add(data.len() as u64).is_none() {
                return Err(Ename::from("offset out of range"));
            }
            let grow = w.growth(off, data.len());
            self.reserve(grow)?;
            let added = w.write(off, &data);
            if added < grow {
                self.release(grow - added);
            }
        }
        let mut t = self.tree();
        if let Some(n) = t.nodes.get_mut(&fid.path) {
            n.mtime = now();
            n.vers = n.vers.wrapping_add(1);
            if *n.muid != *c.uname {
                n.muid = c.uname.to_string();
            }
        }
        Ok(data.len() as u32)
    }

    async fn stat(&self, _c: &Caller, fid: &RamFid) -> FsResult<Stat> {
        let t = self.tree();
        let n = t.nodes.get(&fid.path).ok_or_else(enoent)?;
        Ok(RamFs::stat_of(fid.path, n))
    }

    async fn wstat(&self, c: &Caller, fid: &RamFid, st: &Stat) -> FsResult<()> {
        let mut t = self.tree();
        let who: &str = &c.uname;
        let n = t.nodes.get(&fid.path).ok_or_else(enoent)?;
        let cur = RamFs::stat_of(fid.path, n);
        let owner = who == n.uid;
        let leader = who == n.gid;
        check_wstat_fixed(st, &cur)?;
        let rename = !st.name.is_empty() && st.name != cur.name;
        if rename {
            if fid.path == ROOT {
                return Err(eperm());
            }
            let p = t.nodes.get(&n.parent).ok_or_else(enoent)?;
            if !p.allows(who, DMWRITE) {
                return Err(eperm());
            }
            if let Kind::Dir(d) = &p.kind {
                if d.contains_key(&st.name) {
                    return Err(Ename::from(errstr::EEXIST));
                }
            }
        }
        let newlen = if st.length != !0 && st.length != cur.length {
            if n.mode & DMDIR != 0 {
                return Err(Ename::from(errstr::EBADLENGTH));
            }
            if !n.allows(who, DMWRITE) {
                return Err(eperm());
            }
            Some(st.length)
        } else {
            None
        };
        let newmode = if st.mode != !0 && st.mode != cur.mode {
            if !owner && !leader {
                return Err(Ename::from("permission denied: not owner"));
            }
            if st.mode & !(DMDIR | DMAPPEND | DMEXCL | 0o777) != 0 {
                return Err(Ename::from(errstr::EBADWSTAT));
            }
            Some(st.mode)
        } else {
            None
        };
        let newmtime = if st.mtime != !0 && st.mtime != cur.mtime {
            if !owner && !leader {
                return Err(Ename::from("permission denied: not owner"));
            }
            Some(st.mtime)
        } else {
            None
        };
        let newgid = if !st.gid.is_empty() && st.gid != cur.gid {
            // The owner may give the file to a group it belongs to; a leader of the
            // old group may give it to a group it leads. Groups here are users.
            if st.gid != who || !(owner || leader) {
                return Err(Ename::from("permission denied: not in group"));
            }
            Some(st.gid.clone())
        } else {
            None
        };
        // Everything checked: apply.
        if let Some(len) = newlen {
            if let Kind::File(ct) = &n.kind {
                let mut w = ct.write().map_err(|_| Ename::from(errstr::EIO))?;
                if len > w.len {
                    // Extending is a hole: no memory until written.
                    w.len = len;
                } else {
                    let freed = w.truncate(len);
                    self.release(freed);
                }
            }
        }
        let parent = n.parent;
        let oldname = n.name.clone();
        let n = t.nodes.get_mut(&fid.path).ok_or_else(enoent)?;
        if let Some(m) = newmode {
            n.mode = m;
        }
        if let Some(m) = newmtime {
            n.mtime = m;
        }
        if let Some(g) = newgid {
            n.gid = g;
        }
        if newlen.is_some() {
            n.vers = n.vers.wrapping_add(1);
            n.mtime = newmtime.unwrap_or_else(now);
            n.muid = who.to_string();
        }
        if rename {
            n.name = st.name.clone();
            if let Some(p) = t.nodes.get_mut(&parent) {
                if let Kind::Dir(d) = &mut p.kind {
                    d.remove(&oldname);
                    d.insert(st.name.clone(), fid.path);
                }
                p.vers = p.vers.wrapping_add(1);
                p.mtime = now();
            }
        }
        Ok(())
    }

    async fn remove(&self, c: &Caller, fid: &RamFid) -> FsResult<()> {
        let mut t = self.tree();
        RamFs::may_remove(&t, &c.uname, fid.path)?;
        self.unlink(&mut t, fid.path)
    }

    async fn clunk(&self, _c: &Caller, fid: &RamFid) {
        let Some(o) = &fid.open else { return };
        let mut t = self.tree();
        if o.excl {
            if let Some(n) = t.nodes.get_mut(&fid.path) {
                n.excl_open = false;
            }
        }
        if o.rclose {
            // Permission was checked at open.
            let _ = self.unlink(&mut t, fid.path);
        }
    }
}

/// A fid of `path` (node `n`) open in `mode`.
fn opened(path: u64, n: &Node, content: Option<Arc<RwLock<Content>>>, mode: u8) -> Opened<RamFid> {
    Opened {
        fid: RamFid {
            path,
            open: Some(OpenState {
                content,
                excl: n.mode & DMEXCL != 0,
                rclose: mode & ORCLOSE != 0,
                append: n.mode & DMAPPEND != 0,
            }),
        },
        qid: n.qid(path),
        iounit: 0,
    }
}

/// The default size limit: half the machine's memory.
pub fn default_limit() -> u64 {
    // SAFETY: sysinfo fills the struct we pass.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sysinfo(&mut si) } == 0 {
        (si.totalram as u64).saturating_mul(si.mem_unit as u64) / 2
    } else {
        1 << 30
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_sparse_and_truncate() {
        let used = Arc::new(AtomicU64::new(1 << 30));
        let mut c = Content::new(&used);
        assert_eq!(c.write(10, &Bytes::from_static(b"abc")), 13);
        assert_eq!(&c.read(0, 100)[..], b"\0\0\0\0\0\0\0\0\0\0abc");
        let far = 5 * CHUNK as u64 + 7;
        c.write(far, &Bytes::from_static(b"xyz"));
        assert_eq!(c.len, far + 3);
        assert_eq!(c.mem(), 13 + 7 + 3);
        let r = c.read(far - 2, 10);
        assert_eq!(&r[..], b"\0\0xyz");
        // A read across a chunk boundary.
        let mut d = Content::new(&used);
        let big: Vec<u8> = (0..CHUNK + 100).map(|i| (i % 251) as u8).collect();
        d.write(0, &Bytes::from(big.clone()));
        assert_eq!(
            &d.read(CHUNK as u64 - 50, 100)[..],
            &big[CHUNK - 50..CHUNK + 50]
        );
        assert_eq!(d.truncate(10), CHUNK + 90);
        assert_eq!(&d.read(0, 100)[..], &big[..10]);
        assert_eq!(d.growth(0, 20), 10);
    }
}

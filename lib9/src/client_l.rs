//! An async 9P2000.L client: what `9pfuse -L` speaks to Linux servers such as diod.
//!
//! Like [`crate::client`], requests are routed by tag so that many are in flight at
//! once, and a [`LFid`] is clunked when dropped. A request whose future is dropped
//! keeps its tag until its reply comes (no `Tflush`: the Linux servers answer
//! promptly), and a fid that an abandoned walk made is clunked then.

use crate::dial::{self, Conn, DialError};
use crate::fcall::{NOFID, NOTAG, ProtoError, Qid};
use crate::fcall_l::{self, Attr, DirEnt, LFcall, LMsg, SetAttr, StatFs};
use crate::wire::FrameReader;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// The dialect's name in `Tversion`.
pub const VERSION9PL: &str = "9P2000.L";

/// Bytes of a `Tread`/`Twrite` header, taken off msize for the data.
const IOHDRSZ: u32 = 24;

/// What can go wrong talking to a 9P2000.L server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered `Rlerror` with this errno.
    #[error("{}", std::io::Error::from_raw_os_error(*.0))]
    Lerror(i32),
    #[error("i/o on hungup channel")]
    Hungup,
    #[error("protocol botch: {0}")]
    Proto(#[from] ProtoError),
    #[error("protocol botch: unexpected {0}")]
    Unexpected(&'static str),
    #[error("{0}")]
    Version(String),
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The errno a Linux program should see.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Lerror(e) if *e > 0 => *e,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

struct Waiter {
    tx: oneshot::Sender<LFcall>,
    /// A fid the request makes (walk: with the number of names), clunked if the
    /// caller is gone when the server made it.
    newfid: Option<(u32, usize)>,
}

struct State {
    waiters: HashMap<u16, Waiter>,
    free_tags: Vec<u16>,
    next_tag: u32,
    free_fids: Vec<u32>,
    next_fid: u32,
    dead: bool,
}

impl State {
    fn alloc_tag(&mut self) -> Option<u16> {
        if let Some(t) = self.free_tags.pop() {
            return Some(t);
        }
        if self.next_tag < NOTAG as u32 {
            self.next_tag += 1;
            return Some((self.next_tag - 1) as u16);
        }
        None
    }
    fn alloc_fid(&mut self) -> u32 {
        if let Some(f) = self.free_fids.pop() {
            return f;
        }
        self.next_fid += 1;
        self.next_fid - 1
    }
}

struct Inner {
    out: mpsc::UnboundedSender<Bytes>,
    state: Mutex<State>,
    msize: u32,
    slots: Arc<Semaphore>,
    hungup: tokio::sync::watch::Sender<bool>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    fn hang_up(&self) {
        let mut st = lock(&self.state);
        st.dead = true;
        st.waiters.clear();
        drop(st);
        self.slots.close();
        self.hungup.send_replace(true);
    }

    /// Send a request nobody waits for (a clunk), freeing `fid` when it is answered.
    fn clunk_raw(&self, st: &mut State, fid: u32) {
        if st.dead {
            return;
        }
        let Some(tag) = st.alloc_tag() else { return };
        let Ok(b) = LMsg::new(tag, LFcall::Tclunk { fid }).to_bytes() else {
            return;
        };
        let (tx, _rx) = oneshot::channel();
        st.waiters.insert(
            tag,
            Waiter {
                tx,
                newfid: Some((fid, usize::MAX)),
            },
        );
        let _ = self.out.send(b);
    }
}

/// A connection to a 9P2000.L server; clones share it. It ends when the last clone
/// and the last [`LFid`] go.
#[derive(Clone)]
pub struct LClient {
    inner: Arc<Inner>,
    _life: Arc<Life>,
}

struct Life {
    tasks: [tokio::task::AbortHandle; 2],
    inner: Arc<Inner>,
}

impl Drop for Life {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.inner.hang_up();
    }
}

impl LClient {
    /// Negotiate 9P2000.L on `conn` with at most `msize` bytes a message.
    pub async fn connect(conn: Conn, msize: u32) -> Result<LClient> {
        let msize = msize.clamp(crate::fcall::MIN_MSIZE, crate::fcall::MAX_MSIZE);
        let mut w = conn.write;
        let mut rd = FrameReader::new(conn.read, crate::fcall::MAX_MSIZE);
        let v = LMsg::new(
            NOTAG,
            LFcall::Tversion {
                msize,
                version: VERSION9PL.into(),
            },
        )
        .to_bytes()?;
        w.write_all(&v).await?;
        let frame = rd.next().await?.ok_or(Error::Hungup)?;
        let agreed = match fcall_l::decode(frame, crate::fcall::MAX_MSIZE)?.body {
            LFcall::Rversion { msize: m, version } => {
                if version != VERSION9PL {
                    return Err(Error::Version(format!(
                        "server speaks version '{version}', not {VERSION9PL}"
                    )));
                }
                if m > msize || m < crate::fcall::MIN_MSIZE {
                    return Err(Error::Version(format!("server chose bad msize {m}")));
                }
                m
            }
            LFcall::Rlerror { ecode } => return Err(Error::Lerror(ecode as i32)),
            _ => return Err(Error::Unexpected("reply to Tversion")),
        };
        rd.set_max(agreed);
        let (out, mut out_rx) = mpsc::unbounded_channel::<Bytes>();
        let inner = Arc::new(Inner {
            out,
            state: Mutex::new(State {
                waiters: HashMap::new(),
                free_tags: Vec::new(),
                next_tag: 0,
                free_fids: Vec::new(),
                next_fid: 0,
                dead: false,
            }),
            msize: agreed,
            slots: Arc::new(Semaphore::new(512)),
            hungup: tokio::sync::watch::channel(false).0,
        });
        let wi = Arc::clone(&inner);
        let writer = tokio::spawn(async move {
            while let Some(b) = out_rx.recv().await {
                if w.write_all(&b).await.is_err() {
                    break;
                }
            }
            wi.hang_up();
        })
        .abort_handle();
        let reader = tokio::spawn(reader_loop(Arc::clone(&inner), rd)).abort_handle();
        let life = Arc::new(Life {
            tasks: [writer, reader],
            inner: Arc::clone(&inner),
        });
        Ok(LClient { inner, _life: life })
    }

    /// Dial a dial string and negotiate.
    pub async fn dial(addr: &str, msize: u32) -> Result<LClient> {
        let conn = dial::dial(addr).await?;
        LClient::connect(conn, msize).await
    }

    pub fn msize(&self) -> u32 {
        self.inner.msize
    }

    /// The most data one read or write carries.
    pub fn iounit(&self) -> u32 {
        self.inner.msize - IOHDRSZ
    }

    pub fn is_hungup(&self) -> bool {
        lock(&self.inner.state).dead
    }

    /// Wait until the connection ends.
    pub async fn hungup(&self) {
        let mut rx = self.inner.hungup.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }

    /// Send `body` and wait for the reply; `Rlerror` becomes `Err`.
    async fn rpc(&self, body: LFcall, newfid: Option<(u32, usize)>) -> Result<LFcall> {
        let _permit = self
            .inner
            .slots
            .acquire()
            .await
            .map_err(|_| Error::Hungup)?;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = lock(&self.inner.state);
            if st.dead {
                return Err(Error::Hungup);
            }
            let tag = st
                .alloc_tag()
                .ok_or(Error::Unexpected("tag space exhausted"))?;
            let b = match LMsg::new(tag, body).to_bytes() {
                Ok(b) => b,
                Err(e) => {
                    st.free_tags.push(tag);
                    return Err(e.into());
                }
            };
            st.waiters.insert(tag, Waiter { tx, newfid });
            if self.inner.out.send(b).is_err() {
                st.waiters.remove(&tag);
                return Err(Error::Hungup);
            }
        }
        match rx.await {
            Ok(LFcall::Rlerror { ecode }) => Err(Error::Lerror(ecode as i32)),
            Ok(r) => Ok(r),
            Err(_) => Err(Error::Hungup),
        }
    }

    fn new_fid(&self) -> u32 {
        lock(&self.inner.state).alloc_fid()
    }

    /// Attach to `aname` as `uname` (numerically `uid`), with no authentication.
    pub async fn attach(&self, uname: &str, aname: &str, uid: u32) -> Result<LFid> {
        let fid = self.new_fid();
        let r = self
            .rpc(
                LFcall::Tattach {
                    fid,
                    afid: NOFID,
                    uname: uname.into(),
                    aname: aname.into(),
                    n_uname: uid,
                },
                Some((fid, 0)),
            )
            .await;
        match r {
            Ok(LFcall::Rattach { qid }) => Ok(LFid {
                client: self.clone(),
                fid,
                qid,
            }),
            Ok(_) => {
                self.drop_fid(fid);
                Err(Error::Unexpected("reply to Tattach"))
            }
            Err(e) => {
                lock(&self.inner.state).free_fids.push(fid);
                Err(e)
            }
        }
    }

    fn drop_fid(&self, fid: u32) {
        let mut st = lock(&self.inner.state);
        self.inner.clunk_raw(&mut st, fid);
    }
}

async fn reader_loop(inner: Arc<Inner>, mut rd: FrameReader) {
    while let Ok(Some(frame)) = rd.next().await {
        let Ok(m) = fcall_l::decode(frame, inner.msize) else {
            break;
        };
        let mut st = lock(&inner.state);
        let Some(w) = st.waiters.remove(&m.tag) else {
            // A reply to nothing asked: the server is confused.
            break;
        };
        st.free_tags.push(m.tag);
        match w.newfid {
            // A clunk's reply (or error) frees the number either way.
            Some((fid, usize::MAX)) => st.free_fids.push(fid),
            Some((fid, n)) => {
                let made = match &m.body {
                    LFcall::Rattach { .. } => true,
                    LFcall::Rwalk { qids } => qids.len() == n,
                    _ => false,
                };
                if let Err(body) = w.tx.send(m.body) {
                    // The caller is gone: undo what the server made for it.
                    let _ = body;
                    if made {
                        inner.clunk_raw(&mut st, fid);
                    } else {
                        st.free_fids.push(fid);
                    }
                }
            }
            None => {
                let _ = w.tx.send(m.body);
            }
        }
    }
    inner.hang_up();
}

/// A fid on a 9P2000.L server, clunked when dropped.
pub struct LFid {
    client: LClient,
    fid: u32,
    qid: Qid,
}

impl std::fmt::Debug for LFid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LFid({} {:?})", self.fid, self.qid)
    }
}

impl Drop for LFid {
    fn drop(&mut self) {
        self.client.drop_fid(self.fid);
    }
}

impl LFid {
    pub fn qid(&self) -> Qid {
        self.qid
    }

    pub fn raw(&self) -> u32 {
        self.fid
    }

    pub fn client(&self) -> &LClient {
        &self.client
    }

    /// Walk `names` (any number; more than 16 go in several messages) to a new fid.
    pub async fn walk(&self, names: &[String]) -> Result<LFid> {
        let mut cur: Option<LFid> = None;
        let mut chunks: Vec<&[String]> = names.chunks(fcall_l::MAXWELEM).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let from = cur.as_ref().map_or(self.fid, |f| f.fid);
            let newfid = self.client.new_fid();
            let r = self
                .client
                .rpc(
                    LFcall::Twalk {
                        fid: from,
                        newfid,
                        names: chunk.to_vec(),
                    },
                    Some((newfid, chunk.len())),
                )
                .await;
            let qid = match r {
                Ok(LFcall::Rwalk { qids }) if qids.len() == chunk.len() => qids
                    .last()
                    .copied()
                    .unwrap_or(cur.as_ref().map_or(self.qid, |f| f.qid)),
                Ok(LFcall::Rwalk { .. }) => {
                    lock(&self.client.inner.state).free_fids.push(newfid);
                    return Err(Error::Lerror(libc::ENOENT));
                }
                Ok(_) => {
                    self.client.drop_fid(newfid);
                    return Err(Error::Unexpected("reply to Twalk"));
                }
                Err(e) => {
                    lock(&self.client.inner.state).free_fids.push(newfid);
                    return Err(e);
                }
            };
            cur = Some(LFid {
                client: self.client.clone(),
                fid: newfid,
                qid,
            });
        }
        cur.ok_or(Error::Unexpected("empty walk"))
    }

    /// Walk one name.
    pub async fn walk1(&self, name: &str) -> Result<LFid> {
        self.walk(&[name.to_string()]).await
    }

    /// A second fid for the same file.
    pub async fn clone_fid(&self) -> Result<LFid> {
        self.walk(&[]).await
    }

    pub async fn getattr(&self, mask: u64) -> Result<Attr> {
        match self
            .client
            .rpc(
                LFcall::Tgetattr {
                    fid: self.fid,
                    mask,
                },
                None,
            )
            .await?
        {
            LFcall::Rgetattr(a) => Ok(a),
            _ => Err(Error::Unexpected("reply to Tgetattr")),
        }
    }

    pub async fn setattr(&self, attr: SetAttr) -> Result<()> {
        match self
            .client
            .rpc(
                LFcall::Tsetattr {
                    fid: self.fid,
                    attr,
                },
                None,
            )
            .await?
        {
            LFcall::Rsetattr => Ok(()),
            _ => Err(Error::Unexpected("reply to Tsetattr")),
        }
    }

    /// Open with Linux open flags; returns the iounit.
    pub async fn lopen(&mut self, flags: u32) -> Result<u32> {
        match self
            .client
            .rpc(
                LFcall::Tlopen {
                    fid: self.fid,
                    flags,
                },
                None,
            )
            .await?
        {
            LFcall::Rlopen { qid, iounit } => {
                self.qid = qid;
                Ok(iounit)
            }
            _ => Err(Error::Unexpected("reply to Tlopen")),
        }
    }

    /// Create `name` in this directory and open it; the fid becomes the new file.
    pub async fn lcreate(&mut self, name: &str, flags: u32, mode: u32, gid: u32) -> Result<u32> {
        match self
            .client
            .rpc(
                LFcall::Tlcreate {
                    fid: self.fid,
                    name: name.into(),
                    flags,
                    mode,
                    gid,
                },
                None,
            )
            .await?
        {
            LFcall::Rlcreate { qid, iounit } => {
                self.qid = qid;
                Ok(iounit)
            }
            _ => Err(Error::Unexpected("reply to Tlcreate")),
        }
    }

    pub async fn read(&self, offset: u64, count: u32) -> Result<Bytes> {
        let count = count.min(self.client.iounit());
        match self
            .client
            .rpc(
                LFcall::Tread {
                    fid: self.fid,
                    offset,
                    count,
                },
                None,
            )
            .await?
        {
            LFcall::Rread { data } if data.len() <= count as usize => Ok(data),
            _ => Err(Error::Unexpected("reply to Tread")),
        }
    }

    /// Write `data` at `offset`, in as many messages as it takes, sent together.
    pub async fn write_all(&self, offset: u64, data: Bytes) -> Result<()> {
        let iou = self.client.iounit() as usize;
        let mut calls = Vec::new();
        let mut at = 0usize;
        while at < data.len() || (data.is_empty() && at == 0) {
            let n = (data.len() - at).min(iou);
            let piece = data.slice(at..at + n);
            let off = offset + at as u64;
            calls.push(async move {
                match self
                    .client
                    .rpc(
                        LFcall::Twrite {
                            fid: self.fid,
                            offset: off,
                            data: piece,
                        },
                        None,
                    )
                    .await?
                {
                    LFcall::Rwrite { count } if count as usize == n => Ok(()),
                    LFcall::Rwrite { .. } => Err(Error::Lerror(libc::EIO)),
                    _ => Err(Error::Unexpected("reply to Twrite")),
                }
            });
            at += n;
            if n == 0 {
                break;
            }
        }
        for r in futures_join(calls).await {
            r?;
        }
        Ok(())
    }

    /// Directory entries from `offset` (0, or an entry's offset), up to `count` bytes.
    pub async fn readdir(&self, offset: u64, count: u32) -> Result<Vec<DirEnt>> {
        let count = count.min(self.client.iounit());
        match self
            .client
            .rpc(
                LFcall::Treaddir {
                    fid: self.fid,
                    offset,
                    count,
                },
                None,
            )
            .await?
        {
            LFcall::Rreaddir { data } => Ok(fcall_l::decode_dirents(&data)?),
            _ => Err(Error::Unexpected("reply to Treaddir")),
        }
    }

    pub async fn mkdir(&self, name: &str, mode: u32, gid: u32) -> Result<Qid> {
        match self
            .client
            .rpc(
                LFcall::Tmkdir {
                    dfid: self.fid,
                    name: name.into(),
                    mode,
                    gid,
                },
                None,
            )
            .await?
        {
            LFcall::Rmkdir { qid } => Ok(qid),
            _ => Err(Error::Unexpected("reply to Tmkdir")),
        }
    }

    pub async fn symlink(&self, name: &str, target: &str, gid: u32) -> Result<Qid> {
        match self
            .client
            .rpc(
                LFcall::Tsymlink {
                    fid: self.fid,
                    name: name.into(),
                    target: target.into(),
                    gid,
                },
                None,
            )
            .await?
        {
            LFcall::Rsymlink { qid } => Ok(qid),
            _ => Err(Error::Unexpected("reply to Tsymlink")),
        }
    }

    pub async fn mknod(&self, name: &str, mode: u32, rdev: u32, gid: u32) -> Result<Qid> {
        match self
            .client
            .rpc(
                LFcall::Tmknod {
                    dfid: self.fid,
                    name: name.into(),
                    mode,
                    major: libc::major(rdev as libc::dev_t),
                    minor: libc::minor(rdev as libc::dev_t),
                    gid,
                },
                None,
            )
            .await?
        {
            LFcall::Rmknod { qid } => Ok(qid),
            _ => Err(Error::Unexpected("reply to Tmknod")),
        }
    }

    pub async fn readlink(&self) -> Result<String> {
        match self
            .client
            .rpc(LFcall::Treadlink { fid: self.fid }, None)
            .await?
        {
            LFcall::Rreadlink { target } => Ok(target),
            _ => Err(Error::Unexpected("reply to Treadlink")),
        }
    }

    /// Make `name` in this directory a hard link to `file`.
    pub async fn link(&self, file: &LFid, name: &str) -> Result<()> {
        match self
            .client
            .rpc(
                LFcall::Tlink {
                    dfid: self.fid,
                    fid: file.fid,
                    name: name.into(),
                },
                None,
            )
            .await?
        {
            LFcall::Rlink => Ok(()),
            _ => Err(Error::Unexpected("reply to Tlink")),
        }
    }

    /// Rename `oldname` in this directory to `newname` in `newdir`.
    pub async fn renameat(&self, oldname: &str, newdir: &LFid, newname: &str) -> Result<()> {
        match self
            .client
            .rpc(
                LFcall::Trenameat {
                    olddfid: self.fid,
                    oldname: oldname.into(),
                    newdfid: newdir.fid,
                    newname: newname.into(),
                },
                None,
            )
            .await?
        {
            LFcall::Rrenameat => Ok(()),
            _ => Err(Error::Unexpected("reply to Trenameat")),
        }
    }

    /// Move this file to `name` in `newdir` (`Trename`, for servers without
    /// `Trenameat`).
    pub async fn rename(&self, newdir: &LFid, name: &str) -> Result<()> {
        match self
            .client
            .rpc(
                LFcall::Trename {
                    fid: self.fid,
                    dfid: newdir.fid,
                    name: name.into(),
                },
                None,
            )
            .await?
        {
            LFcall::Rrename => Ok(()),
            _ => Err(Error::Unexpected("reply to Trename")),
        }
    }

    /// Remove `name` from this directory (`flags`: `AT_REMOVEDIR` for a directory).
    pub async fn unlinkat(&self, name: &str, flags: u32) -> Result<()> {
        match self
            .client
            .rpc(
                LFcall::Tunlinkat {
                    dfid: self.fid,
                    name: name.into(),
                    flags,
                },
                None,
            )
            .await?
        {
            LFcall::Runlinkat => Ok(()),
            _ => Err(Error::Unexpected("reply to Tunlinkat")),
        }
    }

    /// Remove the file (`Tremove`, for servers without `Tunlinkat`); the fid is gone
    /// either way.
    pub async fn remove(self) -> Result<()> {
        let fid = self.fid;
        let client = self.client.clone();
        std::mem::forget(self);
        let r = client.rpc(LFcall::Tremove { fid }, None).await;
        lock(&client.inner.state).free_fids.push(fid);
        match r? {
            LFcall::Rremove => Ok(()),
            _ => Err(Error::Unexpected("reply to Tremove")),
        }
    }

    pub async fn fsync(&self, datasync: bool) -> Result<()> {
        match self
            .client
            .rpc(
                LFcall::Tfsync {
                    fid: self.fid,
                    datasync: datasync as u32,
                },
                None,
            )
            .await?
        {
            LFcall::Rfsync => Ok(()),
            _ => Err(Error::Unexpected("reply to Tfsync")),
        }
    }

    pub async fn statfs(&self) -> Result<StatFs> {
        match self
            .client
            .rpc(LFcall::Tstatfs { fid: self.fid }, None)
            .await?
        {
            LFcall::Rstatfs(s) => Ok(s),
            _ => Err(Error::Unexpected("reply to Tstatfs")),
        }
    }
}

/// Wait for all of `futs`, in order.
async fn futures_join<F: std::future::Future>(futs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futs.into_iter().map(Box::pin).collect();
    let mut out = Vec::with_capacity(pinned.len());
    // The requests are already on their way once polled; poll them all first so that
    // every message is sent before we wait for the first reply.
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
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
    out.extend(done.into_iter().flatten());
    out
}

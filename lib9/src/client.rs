//! The 9P client: one connection carries many requests at once.
//!
//! A reader task routes replies by tag to the requests waiting for them; a writer task
//! sends requests, batching what is queued. Tags and fids come from free lists. A
//! request whose future is dropped before its reply is flushed (`Tflush`, and the tag
//! stays reserved until the `Rflush`), and a walk or attach abandoned that way has its
//! new fid clunked if the server made it after all. A [`Fid`] clunks itself when
//! dropped. Reads and writes larger than the negotiated msize allows are split, and
//! [`Fid::read_all`] and [`Fid::write_all`] keep several requests in flight.

use crate::dial::{self, Conn, DialError};
use crate::errstr;
use crate::fcall::{
    self, Fcall, IOHDRSZ, MAXWELEM, Msg, NOFID, NOTAG, ProtoError, Qid, Stat, VERSION9P,
};
use crate::wire::{FrameReader, Outbox, Outgoing, spawn_writer};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// The msize a client proposes unless told otherwise: 1 MiB of data per message.
pub const DEFAULT_MSIZE: u32 = 1024 * 1024 + IOHDRSZ;
/// Requests a client keeps in flight on one connection before new ones wait.
pub const DEFAULT_MAX_INFLIGHT: usize = 256;
/// Bytes that pipelined reads and writes keep in flight (see [`Fid::depth`]).
pub const PIPELINE_BYTES: usize = 4 << 20;

/// What can go wrong talking to a 9P server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered `Rerror`.
    #[error("{0}")]
    Rerror(String),
    #[error("{}", errstr::EHUNGUP)]
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
    /// The Unix errno closest to this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Rerror(s) => errstr::to_errno(s),
            Error::Hungup => libc::EIO,
            Error::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EIO,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

enum Waiter {
    /// A request in progress. `tx` is `None` once its future was dropped; `flushing`
    /// once a `Tflush` names it (the tag is then kept until the `Rflush`).
    Call {
        tx: Option<oneshot::Sender<(Fcall, u64)>>,
        flushing: bool,
        replied: bool,
        /// A fid the request would create, and for a walk how many names it walks.
        newfid: Option<(u32, usize)>,
    },
    Flush {
        oldtag: u16,
        done: Option<oneshot::Sender<()>>,
    },
    Clunk {
        fid: u32,
    },
}

struct State {
    waiters: HashMap<u16, Waiter>,
    free_tags: Vec<u16>,
    next_tag: u32,
    free_fids: Vec<u32>,
    next_fid: u32,
    dead: bool,
    /// Replies to calls received so far: each reply is numbered with the count, so
    /// calls in flight together can be put in the order their replies came.
    replies: u64,
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
    fn free_tag(&mut self, t: u16) {
        self.free_tags.push(t);
    }
    fn alloc_fid(&mut self) -> u32 {
        if let Some(f) = self.free_fids.pop() {
            return f;
        }
        self.next_fid += 1;
        self.next_fid - 1
    }
    fn free_fid(&mut self, f: u32) {
        self.free_fids.push(f);
    }
}

struct Inner {
    outbox: Outbox,
    state: Mutex<State>,
    msize: u32,
    slots: Arc<Semaphore>,
    hungup: tokio::sync::watch::Sender<bool>,
}

fn lock(m: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection to a 9P server. Cloning is cheap and shares the connection, which is
/// closed when the last clone (and the last [`Fid`] made through it) is dropped.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    _life: Arc<Life>,
}

/// Ends the connection when the last handle goes.
struct Life {
    reader: tokio::task::AbortHandle,
    inner: Arc<Inner>,
}

impl Drop for Life {
    fn drop(&mut self) {
        self.reader.abort();
        let mut st = lock(&self.inner.state);
        st.dead = true;
        st.waiters.clear();
        self.inner.slots.close();
        drop(st);
        self.inner.hungup.send_replace(true);
    }
}

/// Options of a connection.
#[derive(Clone, Debug)]
pub struct Options {
    pub msize: u32,
    pub max_inflight: usize,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            msize: DEFAULT_MSIZE,
            max_inflight: DEFAULT_MAX_INFLIGHT,
        }
    }
}

impl Client {
    /// Negotiate the version on `conn` and start serving requests over it.
    pub async fn connect(conn: Conn, opts: Options) -> Result<Client> {
        let msize = opts.msize.clamp(fcall::MIN_MSIZE, fcall::MAX_MSIZE);
        let (outbox, _writer) = spawn_writer(conn.write);
        let mut rd = FrameReader::new(conn.read, fcall::MAX_MSIZE);
        outbox.send_msg(&Msg::new(
            NOTAG,
            Fcall::Tversion {
                msize,
                version: VERSION9P.into(),
            },
        ));
        let frame = rd.next().await?.ok_or(Error::Hungup)?;
        let m = fcall::decode(frame, fcall::MAX_MSIZE)?;
        let agreed = match m.body {
            Fcall::Rversion { msize: m2, version } => {
                if version != VERSION9P {
                    return Err(Error::Version(format!(
                        "server speaks version '{version}', not {VERSION9P}"
                    )));
                }
                if m2 > msize || m2 < fcall::MIN_MSIZE {
                    return Err(Error::Version(format!("server chose bad msize {m2}")));
                }
                m2
            }
            Fcall::Rerror { ename } => return Err(Error::Version(ename)),
            _ => return Err(Error::Unexpected("reply to Tversion")),
        };
        rd.set_max(agreed);
        let inner = Arc::new(Inner {
            outbox,
            state: Mutex::new(State {
                waiters: HashMap::new(),
                free_tags: Vec::new(),
                next_tag: 0,
                free_fids: Vec::new(),
                next_fid: 0,
                dead: false,
                replies: 0,
            }),
            msize: agreed,
            slots: Arc::new(Semaphore::new(opts.max_inflight.max(1))),
            hungup: tokio::sync::watch::channel(false).0,
        });
        let reader = tokio::spawn(reader_loop(Arc::clone(&inner), rd)).abort_handle();
        let life = Arc::new(Life {
            reader,
            inner: Arc::clone(&inner),
        });
        Ok(Client { inner, _life: life })
    }

    /// Dial a dial string and negotiate the version.
    pub async fn dial(addr: &str) -> Result<Client> {
        let conn = dial::dial(addr).await?;
        Client::connect(conn, Options::default()).await
    }

    /// The negotiated msize.
    pub fn msize(&self) -> u32 {
        self.inner.msize
    }

    /// The most data one read or write carries.
    pub fn iounit(&self) -> u32 {
        self.inner.msize - IOHDRSZ
    }

    /// How many replies to calls have come so far. A call whose reply is numbered
    /// (see [`Call::poll_numbered`]) at most this has its reply waiting already: of
    /// several calls in flight, those polled after this was read and found ready,
    /// and numbered at most this, are every one that came by then, so their order
    /// is the order the server sent them in.
    pub fn replies(&self) -> u64 {
        lock(&self.inner.state).replies
    }

    /// Whether the connection has ended.
    pub fn is_hungup(&self) -> bool {
        lock(&self.inner.state).dead
    }

    /// Wait until the connection ends.
    pub async fn hungup(&self) {
        let mut rx = self.inner.hungup.subscribe();
        let _ = rx.wait_for(|h| *h).await;
    }

    /// A fid number for the caller to use with [`Client::call`]; give it back with
    /// [`Client::free_fid`] once the server has forgotten it.
    pub fn alloc_fid(&self) -> u32 {
        lock(&self.inner.state).alloc_fid()
    }

    pub fn free_fid(&self, fid: u32) {
        lock(&self.inner.state).free_fid(fid)
    }

    /// Start a request; the returned [`Call`] resolves to the reply (an `Rerror` is a
    /// reply here, not an error). `newfid` names a fid the request would create (of a
    /// `Twalk`, `Tattach` or `Tauth`): if the call is abandoned and the server made it
    /// anyway, the client clunks it and frees the number.
    pub async fn start(&self, body: Fcall, newfid: Option<u32>) -> Result<Call> {
        let permit = match Arc::clone(&self.inner.slots).try_acquire_owned() {
            Ok(p) => p,
            Err(_) => Arc::clone(&self.inner.slots)
                .acquire_owned()
                .await
                .map_err(|_| Error::Hungup)?,
        };
        let (tx, rx) = oneshot::channel();
        let newfid = newfid.map(|f| match &body {
            Fcall::Twalk { wnames, .. } => (f, wnames.len()),
            _ => (f, 0),
        });
        let mut st = lock(&self.inner.state);
        if st.dead {
            return Err(Error::Hungup);
        }
        let tag = st
            .alloc_tag()
            .ok_or(Error::Unexpected("tag space exhausted"))?;
        let m = Msg::new(tag, body);
        let out = match Outgoing::encode(&m) {
            Ok(o) => o,
            Err(e) => {
                st.free_tag(tag);
                return Err(e.into());
            }
        };
        st.waiters.insert(
            tag,
            Waiter::Call {
                tx: Some(tx),
                flushing: false,
                replied: false,
                newfid,
            },
        );
        self.inner.outbox.send(out);
        drop(st);
        Ok(Call {
            inner: Arc::clone(&self.inner),
            tag,
            rx,
            done: false,
            _permit: permit,
        })
    }

    /// Send a request and wait for its reply; an `Rerror` becomes `Err`.
    pub async fn rpc(&self, body: Fcall) -> Result<Fcall> {
        self.rpc_newfid(body, None).await
    }

    async fn rpc_newfid(&self, body: Fcall, newfid: Option<u32>) -> Result<Fcall> {
        let r = self.start(body, newfid).await?.await?;
        match r {
            Fcall::Rerror { ename } => Err(Error::Rerror(ename)),
            r => Ok(r),
        }
    }

    /// Attach to the tree `aname` as `uname`, authenticating through factotum first
    /// if the server asks for it (see [`crate::auth::attach`]).
    pub async fn attach(&self, uname: &str, aname: &str) -> Result<Fid> {
        crate::auth::attach(self, uname, aname).await
    }

    /// Attach through an authenticated afid.
    pub async fn attach_auth(&self, afid: Option<&Fid>, uname: &str, aname: &str) -> Result<Fid> {
        let fid = self.alloc_fid();
        let r = self
            .rpc_newfid(
                Fcall::Tattach {
                    fid,
                    afid: afid.map_or(NOFID, |a| a.fid),
                    uname: uname.into(),
                    aname: aname.into(),
                },
                Some(fid),
            )
            .await;
        match r {
            Ok(Fcall::Rattach { qid }) => Ok(Fid::new(self.clone(), fid, qid)),
            Ok(_) => {
                self.free_fid(fid);
                Err(Error::Unexpected("reply to Tattach"))
            }
            Err(e) => {
                self.free_fid(fid);
                Err(e)
            }
        }
    }

    /// Start authentication: the auth fid to read and write the protocol on.
    pub async fn auth(&self, uname: &str, aname: &str) -> Result<Fid> {
        let fid = self.alloc_fid();
        let r = self
            .rpc_newfid(
                Fcall::Tauth {
                    afid: fid,
                    uname: uname.into(),
                    aname: aname.into(),
                },
                Some(fid),
            )
            .await;
        match r {
            Ok(Fcall::Rauth { aqid }) => {
                let mut f = Fid::new(self.clone(), fid, aqid);
                f.open_mode = Some(fcall::ORDWR);
                Ok(f)
            }
            Ok(_) => {
                self.free_fid(fid);
                Err(Error::Unexpected("reply to Tauth"))
            }
            Err(e) => {
                self.free_fid(fid);
                Err(e)
            }
        }
    }

    /// Clunk a raw fid number without waiting; the number is freed on the reply.
    pub fn clunk_raw(&self, fid: u32) {
        clunk_nowait(&self.inner, fid);
    }
}

fn clunk_nowait(inner: &Inner, fid: u32) {
    let mut st = lock(&inner.state);
    clunk_locked(&inner.outbox, &mut st, fid);
}

fn clunk_locked(outbox: &Outbox, st: &mut State, fid: u32) {
    if st.dead {
        st.free_fid(fid);
        return;
    }
    let Some(tag) = st.alloc_tag() else {
        return; // leaked until the connection ends; cannot happen below 65535 in flight
    };
    st.waiters.insert(tag, Waiter::Clunk { fid });
    outbox.send_msg(&Msg::new(tag, Fcall::Tclunk { fid }));
}

/// A request in flight. Await it for the reply; drop it to abandon the request (a
/// `Tflush` is sent); or [`Call::flush`] it to abandon it and learn whether the reply
/// came first.
pub struct Call {
    inner: Arc<Inner>,
    tag: u16,
    rx: oneshot::Receiver<(Fcall, u64)>,
    done: bool,
    _permit: OwnedSemaphorePermit,
}

impl Call {
    /// The tag this request went out with.
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// Flush the request: send `Tflush`, wait for `Rflush`, and return the request's own
    /// reply if the server sent it first (which must then be honoured).
    pub async fn flush(mut self) -> Result<Option<Fcall>> {
        self.done = true;
        let (dtx, drx) = oneshot::channel();
        {
            let mut st = lock(&self.inner.state);
            match st.waiters.get_mut(&self.tag) {
                Some(Waiter::Call { flushing, .. }) => *flushing = true,
                _ => {
                    // Already answered and forgotten.
                    drop(st);
                    return Ok(self.rx.try_recv().ok().map(|(r, _)| r));
                }
            }
            if st.dead {
                return Ok(None);
            }
            let Some(ftag) = st.alloc_tag() else {
                return Err(Error::Unexpected("tag space exhausted"));
            };
            st.waiters.insert(
                ftag,
                Waiter::Flush {
                    oldtag: self.tag,
                    done: Some(dtx),
                },
            );
            self.inner
                .outbox
                .send_msg(&Msg::new(ftag, Fcall::Tflush { oldtag: self.tag }));
        }
        let _ = drx.await;
        Ok(self.rx.try_recv().ok().map(|(r, _)| r))
    }
}

impl Call {
    /// Poll for the reply and its number: the count of replies the connection had
    /// received when it came (see [`Client::replies`]).
    pub fn poll_numbered(&mut self, cx: &mut Context<'_>) -> Poll<Result<(Fcall, u64)>> {
        match Pin::new(&mut self.rx).poll(cx) {
            Poll::Ready(Ok(r)) => {
                self.done = true;
                Poll::Ready(Ok(r))
            }
            Poll::Ready(Err(_)) => {
                self.done = true;
                Poll::Ready(Err(Error::Hungup))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Future for Call {
    type Output = Result<Fcall>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_numbered(cx).map_ok(|(r, _)| r)
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = lock(&self.inner.state);
        let dead = st.dead;
        let Some(Waiter::Call { tx, flushing, .. }) = st.waiters.get_mut(&self.tag) else {
            return;
        };
        *tx = None;
        if *flushing || dead {
            return;
        }
        *flushing = true;
        let Some(ftag) = st.alloc_tag() else { return };
        st.waiters.insert(
            ftag,
            Waiter::Flush {
                oldtag: self.tag,
                done: None,
            },
        );
        self.inner
            .outbox
            .send_msg(&Msg::new(ftag, Fcall::Tflush { oldtag: self.tag }));
    }
}

async fn reader_loop(inner: Arc<Inner>, mut rd: FrameReader) {
    loop {
        let frame = match rd.next().await {
            Ok(Some(f)) => f,
            _ => break,
        };
        let m = match fcall::decode(frame, inner.msize) {
            Ok(m) => m,
            Err(_) => break,
        };
        let mut st = lock(&inner.state);
        let Some(w) = st.waiters.remove(&m.tag) else {
            continue; // a reply nobody asked for: ignore it
        };
        match w {
            Waiter::Call {
                tx,
                flushing,
                replied: _,
                newfid,
            } => {
                // Deliver the reply; if nobody waits for it any more, undo a fid the
                // server made after all.
                st.replies += 1;
                let unclaimed = match tx {
                    Some(tx) => tx.send((m.body, st.replies)).err().map(|(b, _)| b),
                    None => Some(m.body),
                };
                if let (Some(body), Some((nf, nwname))) = (unclaimed, newfid) {
                    let made = match &body {
                        Fcall::Rattach { .. } | Fcall::Rauth { .. } => true,
                        Fcall::Rwalk { wqids } => wqids.len() == nwname,
                        _ => false,
                    };
                    if made {
                        clunk_locked(&inner.outbox, &mut st, nf);
                    } else {
                        st.free_fid(nf);
                    }
                }
                if flushing {
                    // Keep the tag until the Rflush.
                    st.waiters.insert(
                        m.tag,
                        Waiter::Call {
                            tx: None,
                            flushing: true,
                            replied: true,
                            newfid: None,
                        },
                    );
                } else {
                    st.free_tag(m.tag);
                }
            }
            Waiter::Flush { oldtag, done } => {
                st.free_tag(m.tag);
                if let Some(Waiter::Call {
                    replied, newfid, ..
                }) = st.waiters.remove(&oldtag)
                {
                    if !replied {
                        if let Some((nf, _)) = newfid {
                            st.free_fid(nf);
                        }
                    }
                    st.free_tag(oldtag);
                } else if let Some(other) = st.waiters.remove(&oldtag) {
                    // Not ours to forget (cannot happen: the tag was reserved).
                    st.waiters.insert(oldtag, other);
                }
                if let Some(d) = done {
                    let _ = d.send(());
                }
            }
            Waiter::Clunk { fid } => {
                st.free_tag(m.tag);
                st.free_fid(fid);
            }
        }
    }
    // Hung up: fail everything in flight and everything to come.
    let mut st = lock(&inner.state);
    st.dead = true;
    st.waiters.clear();
    inner.slots.close();
    drop(st);
    inner.hungup.send_replace(true);
}

/// The qid a walk of `names` ended at, or why it did not get there.
fn walked(r: Result<Fcall>, names: &[String]) -> Result<Option<Qid>> {
    match r? {
        Fcall::Rwalk { wqids } if wqids.len() == names.len() => Ok(wqids.last().copied()),
        Fcall::Rwalk { wqids } => {
            let bad = names.get(wqids.len()).map_or("", String::as_str);
            Err(Error::Rerror(format!("'{bad}' {}", errstr::ENONEXIST)))
        }
        _ => Err(Error::Unexpected("reply to Twalk")),
    }
}

/// A fid on the server, clunked when dropped.
pub struct Fid {
    client: Client,
    fid: u32,
    qid: Qid,
    open_mode: Option<u8>,
    iounit: u32,
    clunked: bool,
}

impl Fid {
    fn new(client: Client, fid: u32, qid: Qid) -> Fid {
        Fid {
            client,
            fid,
            qid,
            open_mode: None,
            iounit: 0,
            clunked: false,
        }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The fid's number on the wire.
    pub fn raw(&self) -> u32 {
        self.fid
    }

    pub fn qid(&self) -> Qid {
        self.qid
    }

    /// The most data one read or write on this fid carries.
    pub fn iounit(&self) -> u32 {
        let max = self.client.iounit();
        if self.iounit == 0 || self.iounit > max {
            max
        } else {
            self.iounit
        }
    }

    /// How many reads or writes of an iounit to keep in flight for a sequential
    /// transfer: enough to keep [`PIPELINE_BYTES`] moving (so that small msizes are not
    /// held to one round trip per message), at least 2 and at most 64.
    pub fn depth(&self) -> usize {
        (PIPELINE_BYTES / self.iounit().max(1) as usize).clamp(2, 64)
    }

    /// Walk a slash-separated path (empty elements and `.` are skipped) to a new fid.
    /// An empty path clones this fid.
    pub async fn walk(&self, path: &str) -> Result<Fid> {
        let names: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .map(str::to_owned)
            .collect();
        self.walk_names(&names).await
    }

    /// Walk a list of names to a new fid.
    pub async fn walk_names(&self, names: &[String]) -> Result<Fid> {
        let c = &self.client;
        let mut chunks = names.chunks(MAXWELEM);
        let first = chunks.next().unwrap_or(&[]);
        // The first walk makes the new fid (undone by the client if abandoned); later
        // ones move it along, and the Fid made here clunks it if they fail or are
        // abandoned.
        let newfid = c.alloc_fid();
        let r = c
            .rpc_newfid(
                Fcall::Twalk {
                    fid: self.fid,
                    newfid,
                    wnames: first.to_vec(),
                },
                Some(newfid),
            )
            .await;
        let qid = match walked(r, first) {
            Ok(q) => q.unwrap_or(self.qid),
            Err(e) => {
                c.free_fid(newfid);
                return Err(e);
            }
        };
        let mut f = Fid::new(c.clone(), newfid, qid);
        for chunk in chunks {
            let r = c
                .rpc(Fcall::Twalk {
                    fid: newfid,
                    newfid,
                    wnames: chunk.to_vec(),
                })
                .await;
            if let Some(q) = walked(r, chunk)? {
                f.qid = q;
            }
        }
        Ok(f)
    }

    /// Open this fid.
    pub async fn open(&mut self, mode: u8) -> Result<()> {
        match self
            .client
            .rpc(Fcall::Topen {
                fid: self.fid,
                mode,
            })
            .await?
        {
            Fcall::Ropen { qid, iounit } => {
                self.qid = qid;
                self.iounit = iounit;
                self.open_mode = Some(mode);
                Ok(())
            }
            _ => Err(Error::Unexpected("reply to Topen")),
        }
    }

    /// Create `name` in this directory; the fid becomes the new file, open.
    pub async fn create(&mut self, name: &str, perm: u32, mode: u8) -> Result<()> {
        match self
            .client
            .rpc(Fcall::Tcreate {
                fid: self.fid,
                name: name.into(),
                perm,
                mode,
            })
            .await?
        {
            Fcall::Rcreate { qid, iounit } => {
                self.qid = qid;
                self.iounit = iounit;
                self.open_mode = Some(mode);
                Ok(())
            }
            _ => Err(Error::Unexpected("reply to Tcreate")),
        }
    }

    /// One read of at most `count` bytes (clamped to the iounit).
    pub async fn read(&self, offset: u64, count: u32) -> Result<Bytes> {
        let count = count.min(self.iounit());
        match self
            .client
            .rpc(Fcall::Tread {
                fid: self.fid,
                offset,
                count,
            })
            .await?
        {
            Fcall::Rread { data } if data.len() <= count as usize => Ok(data),
            Fcall::Rread { .. } => Err(Error::Unexpected("Rread longer than asked")),
            _ => Err(Error::Unexpected("reply to Tread")),
        }
    }

    /// Read from `offset` to the end of the file, handing each piece to `sink` in order.
    /// With `depth` > 1, that many reads are kept in flight; use it only on files whose
    /// offsets mean something (not on synthetic files that ignore them).
    pub async fn read_stream<E>(
        &self,
        mut offset: u64,
        depth: usize,
        mut sink: impl FnMut(Bytes) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<u64, E>> {
        let unit = self.iounit();
        let depth = depth.max(1);
        let mut inflight = std::collections::VecDeque::with_capacity(depth);
        let mut next = offset;
        let mut total = 0u64;
        loop {
            while inflight.len() < depth {
                let call = self
                    .client
                    .start(
                        Fcall::Tread {
                            fid: self.fid,
                            offset: next,
                            count: unit,
                        },
                        None,
                    )
                    .await?;
                inflight.push_back((next, call));
                next += unit as u64;
            }
            let Some((off, call)) = inflight.pop_front() else {
                break;
            };
            let data = match call.await? {
                Fcall::Rread { data } => data,
                Fcall::Rerror { ename } => return Err(Error::Rerror(ename)),
                _ => return Err(Error::Unexpected("reply to Tread")),
            };
            debug_assert_eq!(off, offset);
            let n = data.len() as u64;
            if n == 0 {
                return Ok(Ok(total));
            }
            total += n;
            offset += n;
            if let Err(e) = sink(data) {
                return Ok(Err(e));
            }
            if n < unit as u64 {
                if depth == 1 {
                    // A short read need not be the end of a file; only 0 is.
                    next = offset;
                    continue;
                }
                // Reads in flight assumed full pieces: drop them and go on from here.
                inflight.clear();
                next = offset;
            }
        }
        Ok(Ok(total))
    }

    /// Read the whole file from offset 0 into memory, one read at a time (safe on
    /// synthetic files).
    pub async fn read_all(&self) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_stream(0, 1, |b| {
            out.extend_from_slice(&b);
            Ok::<(), ()>(())
        })
        .await?
        .ok();
        Ok(out)
    }

    /// One write of at most one iounit; returns the count the server took.
    pub async fn write(&self, offset: u64, data: Bytes) -> Result<u32> {
        if data.len() > self.iounit() as usize {
            return Err(Error::Proto(ProtoError::DataTooLong(data.len())));
        }
        match self
            .client
            .rpc(Fcall::Twrite {
                fid: self.fid,
                offset,
                data,
            })
            .await?
        {
            Fcall::Rwrite { count } => Ok(count),
            _ => Err(Error::Unexpected("reply to Twrite")),
        }
    }

    /// Write all of `data` at `offset`, split into iounit pieces with up to `depth` in
    /// flight. A short write is an error, as in Plan 9.
    pub async fn write_all(&self, offset: u64, data: Bytes, depth: usize) -> Result<()> {
        let unit = self.iounit() as usize;
        let depth = depth.max(1);
        let mut inflight = std::collections::VecDeque::with_capacity(depth);
        let mut pos = 0usize;
        loop {
            while inflight.len() < depth && pos < data.len() {
                let end = (pos + unit).min(data.len());
                let piece = data.slice(pos..end);
                let call = self
                    .client
                    .start(
                        Fcall::Twrite {
                            fid: self.fid,
                            offset: offset + pos as u64,
                            data: piece,
                        },
                        None,
                    )
                    .await?;
                inflight.push_back((end - pos, call));
                pos = end;
            }
            let Some((want, call)) = inflight.pop_front() else {
                return Ok(());
            };
            match call.await? {
                Fcall::Rwrite { count } if count as usize == want => {}
                Fcall::Rwrite { count } => {
                    return Err(Error::Rerror(format!("short write: {count} of {want}")));
                }
                Fcall::Rerror { ename } => return Err(Error::Rerror(ename)),
                _ => return Err(Error::Unexpected("reply to Twrite")),
            }
        }
    }

    pub async fn stat(&self) -> Result<Stat> {
        match self.client.rpc(Fcall::Tstat { fid: self.fid }).await? {
            Fcall::Rstat { stat } => Ok(stat),
            _ => Err(Error::Unexpected("reply to Tstat")),
        }
    }

    pub async fn wstat(&self, stat: &Stat) -> Result<()> {
        match self
            .client
            .rpc(Fcall::Twstat {
                fid: self.fid,
                stat: stat.clone(),
            })
            .await?
        {
            Fcall::Rwstat => Ok(()),
            _ => Err(Error::Unexpected("reply to Twstat")),
        }
    }

    /// Read a whole directory.
    pub async fn readdir(&self) -> Result<Vec<Stat>> {
        let mut out = Vec::new();
        let mut off = 0u64;
        loop {
            let b = self.read(off, self.iounit()).await?;
            if b.is_empty() {
                return Ok(out);
            }
            off += b.len() as u64;
            out.extend(fcall::decode_dir(&b)?);
        }
    }

    /// Remove the file; the fid is gone whatever the outcome.
    pub async fn remove(mut self) -> Result<()> {
        self.clunked = true;
        let fid = self.fid;
        let r = self.client.rpc(Fcall::Tremove { fid }).await;
        self.client.free_fid(fid);
        match r? {
            Fcall::Rremove => Ok(()),
            _ => Err(Error::Unexpected("reply to Tremove")),
        }
    }

    /// Clunk now and wait for the reply.
    pub async fn clunk(mut self) -> Result<()> {
        self.clunked = true;
        let fid = self.fid;
        let r = self.client.rpc(Fcall::Tclunk { fid }).await;
        self.client.free_fid(fid);
        r.map(|_| ())
    }
}

impl std::fmt::Debug for Fid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Fid({} {})", self.fid, self.qid)
    }
}

impl Drop for Fid {
    fn drop(&mut self) {
        if !self.clunked {
            clunk_nowait(&self.client.inner, self.fid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn read_msg(s: &mut tokio::net::UnixStream) -> Msg {
        let mut h = [0u8; 4];
        s.read_exact(&mut h).await.unwrap();
        let mut b = vec![0u8; u32::from_le_bytes(h) as usize];
        b[..4].copy_from_slice(&h);
        s.read_exact(&mut b[4..]).await.unwrap();
        fcall::decode(b.into(), fcall::MAX_MSIZE).unwrap()
    }

    async fn write_msg(s: &mut tokio::net::UnixStream, tag: u16, body: Fcall) {
        let b = Msg::new(tag, body).to_bytes().unwrap();
        s.write_all(&b).await.unwrap();
    }

    /// Two calls in flight answered in the other order: each reply is numbered in the
    /// order it came, and `replies` counts them.
    #[tokio::test]
    async fn replies_are_numbered_in_the_order_they_come() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let server = tokio::spawn(async move {
            let v = read_msg(&mut b).await;
            let version = fcall::VERSION9P.to_string();
            write_msg(
                &mut b,
                v.tag,
                Fcall::Rversion {
                    msize: 8192,
                    version,
                },
            )
            .await;
            let t1 = read_msg(&mut b).await;
            let t2 = read_msg(&mut b).await;
            let second = Bytes::from_static(b"second");
            write_msg(&mut b, t2.tag, Fcall::Rread { data: second }).await;
            let first = Bytes::from_static(b"first");
            write_msg(&mut b, t1.tag, Fcall::Rread { data: first }).await;
            b
        });
        let conn = crate::dial::Conn::from_unix(a, "test");
        let c = Client::connect(conn, Options::default()).await.unwrap();
        let before = c.replies();
        let read = || Fcall::Tread {
            fid: 1,
            offset: 0,
            count: 10,
        };
        let mut c1 = c.start(read(), None).await.unwrap();
        let mut c2 = c.start(read(), None).await.unwrap();
        let (_, n1) = std::future::poll_fn(|cx| c1.poll_numbered(cx))
            .await
            .unwrap();
        let (r2, n2) = std::future::poll_fn(|cx| c2.poll_numbered(cx))
            .await
            .unwrap();
        assert!(matches!(r2, Fcall::Rread { data } if &data[..] == b"second"));
        assert_eq!((n2, n1), (before + 1, before + 2));
        assert_eq!(c.replies(), before + 2);
        let _keep = server.await.unwrap();
    }
}

//! The 9P server framework.
//!
//! A file server implements [`Filesystem`]: async methods that work on the server's own
//! per-fid state (`Filesystem::Fid`). The framework owns everything protocol: version
//! and msize, the fid table, tags, the rules of intro(5) (a walk from an open fid, a
//! write to a file opened for reading, a directory read at a stray offset, ... are all
//! answered before the file server sees them), directory reads (the file server lists
//! a directory once, the framework packs the entries into reads), `Tflush` (the flushed
//! request's task is cancelled and its reply is never sent after the `Rflush`), and the
//! bounds that keep one client from taking all the memory: a cap on outstanding
//! requests, on the bytes they hold, and on fids.
//!
//! Each request runs as its own task, so a slow read does not hold up a stat.

use crate::dial::{AsyncListener, Conn};
use crate::errstr::{self, Ename};
use crate::fcall::{
    self, Fcall, IOHDRSZ, MAXWELEM, MIN_MSIZE, Msg, NOFID, NOTAG, OEXEC, ORCLOSE, ORDWR, OTRUNC,
    OWRITE, QTAUTH, QTDIR, Qid, Stat, VERSION9P,
};
use crate::wire::{
    Admission, Bulk, FrameReader, Incoming, Outbox, Outgoing, Pipe, TWRITE_HEAD, Ticket,
    spawn_writer,
};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::task::AbortHandle;

/// What a file server's methods return.
pub type FsResult<T> = Result<T, Ename>;

/// The result of a walk: the qids of the names walked, and if every name was walked,
/// the state of the fid that now stands for the last one.
pub struct Walked<F> {
    pub qids: Vec<Qid>,
    pub fid: Option<F>,
}

/// The result of an open or create: the fid's new state, its qid and the iounit
/// (0: any count up to msize - IOHDRSZ).
pub struct Opened<F> {
    pub fid: F,
    pub qid: Qid,
    pub iounit: u32,
}

/// What a read returns: bytes, or a range of an open host file, which the connection
/// sends straight from the page cache (sendfile) without copying it through the server.
pub enum Data {
    Bytes(Bytes),
    /// A range of a host file; `map`, if given, is that range mapped into memory.
    /// The kernel copies from it to a socket (a file that shrank under the mapping
    /// makes that write fail with EFAULT, which is handled); where the connection
    /// must touch the bytes itself (TLS) the mapping is not used and the file is
    /// read, since touching a page past a shrunk file's end would be SIGBUS.
    File {
        file: Arc<std::fs::File>,
        offset: u64,
        len: u32,
        map: Option<Bytes>,
    },
}

impl From<Bytes> for Data {
    fn from(b: Bytes) -> Data {
        Data::Bytes(b)
    }
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Data::Bytes(b) => b.len(),
            Data::File { len, .. } => *len as usize,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Who is asking: the user named at attach, carried by every fid made from it.
#[derive(Clone, Debug)]
pub struct Caller {
    pub uname: Arc<str>,
}

/// A 9P file server. Every method has a default that answers Plan 9's error for an
/// operation the server does not provide.
///
/// Requests run concurrently, possibly several on the same fid, so the fid state is
/// shared (`&Self::Fid`); `open` and `create` return the fid's new state rather than
/// changing it. `clunk` is called once when a fid goes away, by `Tclunk`, `Tremove`
/// (after `remove`, whatever its outcome) or the end of the connection; the state
/// itself is dropped when the last request using it is done.
pub trait Filesystem: Send + Sync + 'static {
    type Fid: Send + Sync + 'static;

    /// Begin authentication: the state of the new auth fid and its qid (of type
    /// `QTAUTH`).
    fn auth(
        &self,
        _caller: &Caller,
        _aname: &str,
    ) -> impl Future<Output = FsResult<(Self::Fid, Qid)>> + Send {
        async { Err(Ename::from(errstr::ENOAUTH)) }
    }

    /// Attach to the tree `aname`, authenticated by `afid` if the client gave one.
    fn attach(
        &self,
        caller: &Caller,
        aname: &str,
        afid: Option<&Self::Fid>,
    ) -> impl Future<Output = FsResult<(Self::Fid, Qid)>> + Send;

    /// Walk `names` (at most 16, none `.`, perhaps `..`) from `fid`, which is a
    /// directory unless `names` is empty (a clone). Failing on the first name is an
    /// error; failing later returns the qids walked so far and no fid.
    fn walk(
        &self,
        caller: &Caller,
        fid: &Self::Fid,
        names: &[String],
    ) -> impl Future<Output = FsResult<Walked<Self::Fid>>> + Send;

    /// Open a fid that was walked to; `mode` has been checked for legal bits.
    fn open(
        &self,
        caller: &Caller,
        fid: &Self::Fid,
        mode: u8,
    ) -> impl Future<Output = FsResult<Opened<Self::Fid>>> + Send;

    /// Create `name` in the directory `fid` and open it; the fid becomes the new file.
    fn create(
        &self,
        _caller: &Caller,
        _fid: &Self::Fid,
        _name: &str,
        _perm: u32,
        _mode: u8,
    ) -> impl Future<Output = FsResult<Opened<Self::Fid>>> + Send {
        async { Err(Ename::from(errstr::ENOCREATE)) }
    }

    /// Read at most `count` bytes of an open file (not a directory) at `offset`.
    fn read(
        &self,
        _caller: &Caller,
        _fid: &Self::Fid,
        _offset: u64,
        _count: u32,
    ) -> impl Future<Output = FsResult<Data>> + Send {
        async { Err(Ename::from(errstr::ENOREAD)) }
    }

    /// List an open directory: every entry, in order. Called when a read at offset 0
    /// starts a listing; the framework serves the later reads from it.
    fn readdir(
        &self,
        _caller: &Caller,
        _fid: &Self::Fid,
    ) -> impl Future<Output = FsResult<Vec<Stat>>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Write to an open file; returns the count written.
    fn write(
        &self,
        _caller: &Caller,
        _fid: &Self::Fid,
        _offset: u64,
        _data: Bytes,
    ) -> impl Future<Output = FsResult<u32>> + Send {
        async { Err(Ename::from(errstr::ENOWRITE)) }
    }

    fn stat(&self, caller: &Caller, fid: &Self::Fid)
    -> impl Future<Output = FsResult<Stat>> + Send;

    fn wstat(
        &self,
        _caller: &Caller,
        _fid: &Self::Fid,
        _stat: &Stat,
    ) -> impl Future<Output = FsResult<()>> + Send {
        async { Err(Ename::from(errstr::ENOWSTAT)) }
    }

    /// Remove the file; `clunk` follows whatever the outcome.
    fn remove(
        &self,
        _caller: &Caller,
        _fid: &Self::Fid,
    ) -> impl Future<Output = FsResult<()>> + Send {
        async { Err(Ename::from(errstr::ENOREMOVE)) }
    }

    /// The host file behind a fid open for writing, if writes to it may go straight into
    /// that file: the framework then moves the data of large writes from the socket into
    /// it with splice(2), uncopied, instead of calling [`Filesystem::write`].
    fn write_file(&self, _fid: &Self::Fid) -> Option<Arc<std::fs::File>> {
        None
    }

    /// The fid is gone (clunked, removed, or its connection ended).
    fn clunk(&self, _caller: &Caller, _fid: &Self::Fid) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// Limits and options of a server.
#[derive(Clone, Debug)]
pub struct Config {
    /// The largest msize agreed to.
    pub max_msize: u32,
    /// Requests in progress per connection before the server stops reading.
    pub max_outstanding: usize,
    /// Bytes held by requests in progress per connection (requests, and the replies
    /// to reads) before the server stops reading.
    pub max_bytes: usize,
    /// Fids per connection.
    pub max_fids: usize,
    /// Print every message to standard error, as lib9p's chatty9p does.
    pub trace: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_msize: 4 * 1024 * 1024 + IOHDRSZ,
            max_outstanding: 1024,
            max_bytes: 64 * 1024 * 1024,
            max_fids: 1 << 16,
            trace: false,
        }
    }
}

/// Counters for tests and monitoring.
#[derive(Default, Debug)]
pub struct Stats {
    pub connections: AtomicUsize,
    pub fids: AtomicUsize,
    pub requests: AtomicU64,
    pub protocol_errors: AtomicU64,
}

/// A server: a file system and its limits, serving any number of connections.
pub struct Server<F: Filesystem> {
    fs: Arc<F>,
    cfg: Config,
    stats: Arc<Stats>,
    next_conn: AtomicU64,
}

impl<F: Filesystem> Server<F> {
    pub fn new(fs: F) -> Arc<Server<F>> {
        Server::with_config(fs, Config::default())
    }

    pub fn with_config(fs: F, cfg: Config) -> Arc<Server<F>> {
        Arc::new(Server {
            fs: Arc::new(fs),
            cfg,
            stats: Arc::new(Stats::default()),
            next_conn: AtomicU64::new(1),
        })
    }

    pub fn fs(&self) -> &Arc<F> {
        &self.fs
    }

    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// Accept connections forever, serving each in its own task.
    pub async fn serve(self: &Arc<Self>, listener: AsyncListener) -> std::io::Result<()> {
        loop {
            match listener.accept_pending().await {
                Ok(pending) => {
                    let me = Arc::clone(self);
                    tokio::spawn(async move {
                        // A failed TLS handshake ends only that connection.
                        match pending.finish().await {
                            Ok(conn) => me.serve_conn(conn).await,
                            Err(e) if me.cfg.trace => eprintln!("accept: {e}"),
                            Err(_) => {}
                        }
                    });
                }
                Err(e) if is_transient_accept_error(&e) => {
                    // Out of descriptors or a connection reset before accept: wait a
                    // moment rather than spin or die.
                    pause(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Serve one connection until the client hangs up or breaks the protocol.
    pub async fn serve_conn(self: &Arc<Self>, conn: Conn) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        self.stats.connections.fetch_add(1, Ordering::Relaxed);
        let (outbox, writer) = spawn_writer(conn.write);
        let st = Arc::new(ConnState {
            srv: Arc::clone(self),
            id,
            outbox,
            msize: AtomicUsize::new(0),
            fids: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_req: AtomicU64::new(1),
        });
        let mut rd = FrameReader::new(conn.read, self.cfg.max_msize);
        let mut pipe: Option<Pipe> = None;
        let mut adm = Admission::new(
            self.cfg.max_outstanding,
            self.cfg.max_bytes,
            4 * self.cfg.max_outstanding + 64,
            (self.cfg.max_bytes / 4).max(2 * self.cfg.max_msize as usize),
        );
        loop {
            // While requests wait for room, keep reading (a Tflush may free some), up
            // to a bound; past it, only wait.
            let ev = if !adm.has_waiting() {
                Ev::Frame(rd.next_incoming(SPLIT_WRITE).await)
            } else if adm.is_full() {
                Ev::Ready(adm.next_ready().await)
            } else {
                tokio::select! {
                    f = rd.next_incoming(SPLIT_WRITE) => Ev::Frame(f),
                    r = adm.next_ready() => Ev::Ready(r),
                }
            };
            match ev {
                Ev::Frame(Ok(Some(Incoming::Frame(frame)))) => {
                    st.incoming(frame, &mut rd, &mut adm).await
                }
                Ev::Frame(Ok(Some(Incoming::Write { head, have, .. }))) => {
                    if let Err(e) = st
                        .split_write(head, have, &mut rd, &mut adm, &mut pipe)
                        .await
                    {
                        if self.cfg.trace {
                            eprintln!("-{id}-> hangup: {e}");
                        }
                        break;
                    }
                }
                Ev::Frame(Ok(None)) => break,
                Ev::Frame(Err(e)) => {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        self.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        if self.cfg.trace {
                            eprintln!("-{id}-> hangup: {e}");
                        }
                    }
                    break;
                }
                Ev::Ready(Some((tag, body, ticket))) => st.start(tag, body, ticket),
                Ev::Ready(None) => break,
            }
        }
        st.teardown().await;
        drop(st);
        let _ = writer.await;
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Writes at least this big always run in a task of their own.
const HEAVY_WRITE: usize = 64 * 1024;

/// A request's answer: a message, or an Rread whose data comes from a file.
enum Reply {
    Msg(Fcall),
    File {
        file: Arc<std::fs::File>,
        offset: u64,
        len: u32,
        map: Option<Bytes>,
    },
}

/// A `Twrite` at least this big whose data is not all read yet is handed to the file
/// server's host file with splice(2), if it has one (see [`Filesystem::write_file`]).
const SPLIT_WRITE: usize = 128 * 1024;

enum Ev {
    Frame(std::io::Result<Option<Incoming>>),
    Ready(Option<(u16, Fcall, Ticket)>),
}

/// Wait a while without needing the runtime's timer (servers run without one: it costs
/// a clock reading and a timer-wheel turn every time a worker parks).
pub async fn pause(d: std::time::Duration) {
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
}

fn is_transient_accept_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::ECONNABORTED
                | libc::EINTR
        )
    ) || e.kind() == std::io::ErrorKind::ConnectionReset
}

struct FidEntry<A> {
    aux: A,
    qid: Qid,
    caller: Caller,
    /// The open mode, once opened.
    mode: Option<u8>,
    /// A directory listing being read.
    dir: Mutex<Option<DirSnap>>,
}

struct DirSnap {
    data: Bytes,
    /// Byte offset the next read must ask for.
    next: u64,
}

struct Pending {
    id: u64,
    abort: Option<AbortHandle>,
}

struct ConnState<F: Filesystem> {
    srv: Arc<Server<F>>,
    id: u64,
    outbox: Outbox,
    /// 0 until Tversion.
    msize: AtomicUsize,
    fids: Mutex<HashMap<u32, Arc<FidEntry<F::Fid>>>>,
    pending: Mutex<HashMap<u16, Pending>>,
    next_req: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks is a bug elsewhere; the data is still
    // consistent enough to tear the connection down, so do not poison everything.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rerror(e: &'static str) -> Fcall {
    Fcall::Rerror { ename: e.into() }
}

fn err(e: &'static str) -> Ename {
    Ename::from(e)
}

impl<F: Filesystem> ConnState<F> {
    fn trace_out(&self, m: &Msg) {
        if self.srv.cfg.trace {
            eprintln!("-{}-> {}", self.id, m);
        }
    }

    /// Send a reply now (used for replies made by the reader itself).
    fn reply_now(&self, tag: u16, body: Fcall) {
        let m = Msg::new(tag, body);
        self.trace_out(&m);
        self.send_encoded(&m, None);
    }

    fn send_encoded(&self, m: &Msg, guard: Option<Box<dyn Send>>) {
        match Outgoing::encode(m) {
            Ok(mut o) => {
                o.guard = guard;
                self.outbox.send(o);
            }
            Err(e) => {
                // Only a reply we built badly gets here (an error string over 64K,
                // say): answer with something that fits.
                let m2 = Msg::new(
                    m.tag,
                    Fcall::Rerror {
                        ename: format!("server botch: {e}"),
                    },
                );
                if let Ok(o) = Outgoing::encode(&m2) {
                    self.outbox.send(o);
                }
            }
        }
    }

    /// Handle one frame: answer it, start it, or leave it waiting for room.
    async fn incoming(
        self: &Arc<Self>,
        frame: Bytes,
        rd: &mut FrameReader,
        adm: &mut Admission<Fcall>,
    ) {
        let srv = &self.srv;
        srv.stats.requests.fetch_add(1, Ordering::Relaxed);
        let tag = fcall::frame_tag(&frame).unwrap_or(NOTAG);
        let flen = frame.len();
        let msg = match fcall::decode(frame, srv.cfg.max_msize) {
            Ok(m) => m,
            Err(e) => {
                srv.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                if srv.cfg.trace {
                    eprintln!("<-{}- bad message: {e}", self.id);
                }
                // The framing is intact, so the stream can go on.
                self.reply_now(
                    tag,
                    Fcall::Rerror {
                        ename: format!("bad 9P message: {e}"),
                    },
                );
                return;
            }
        };
        self.request(msg, flen, rd, adm).await;
    }

    /// Handle one decoded message of `flen` bytes on the wire.
    async fn request(
        self: &Arc<Self>,
        msg: Msg,
        flen: usize,
        rd: &mut FrameReader,
        adm: &mut Admission<Fcall>,
    ) {
        let srv = &self.srv;
        let tag = msg.tag;
        if srv.cfg.trace {
            eprintln!("<-{}- {}", self.id, msg);
        }
        if !msg.body.is_request() {
            self.reply_now(tag, rerror("unexpected reply message"));
            return;
        }
        match msg.body {
            Fcall::Tversion { msize, version } => {
                adm.clear();
                self.version(tag, msize, &version, rd).await;
                return;
            }
            Fcall::Tflush { oldtag } => {
                if adm.cancel(oldtag) {
                    // It never started: it gets no reply, only this Rflush.
                    self.reply_now(tag, Fcall::Rflush);
                } else {
                    self.flush(tag, oldtag);
                }
                return;
            }
            _ => {}
        }
        let msize = self.msize.load(Ordering::Relaxed);
        if msize == 0 {
            self.reply_now(tag, rerror("version not negotiated"));
            return;
        }
        if adm.holds(tag) || lock(&self.pending).contains_key(&tag) {
            self.reply_now(tag, rerror(errstr::EDUPTAG));
            return;
        }
        // A read holds room for its reply too.
        let mut cost = flen + 512;
        if let Fcall::Tread { count, .. } = &msg.body {
            cost += (*count as usize).min(msize);
        }
        if let Some((body, ticket)) = adm.offer(tag, msg.body, cost.min(u32::MAX as usize) as u32) {
            self.start(tag, body, ticket);
        }
    }

    /// A big `Twrite` whose data is still in the socket: splice it into the file
    /// server's host file if it has one, else read it and go on as with any request.
    /// Errors are only those of the connection.
    async fn split_write(
        self: &Arc<Self>,
        head: Bytes,
        have: Bytes,
        rd: &mut FrameReader,
        adm: &mut Admission<Fcall>,
        pipe: &mut Option<Pipe>,
    ) -> std::io::Result<()> {
        let u32at = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let tag = u16::from_le_bytes([head[5], head[6]]);
        let fid = u32at(7);
        let offset = u64::from(u32at(11)) | (u64::from(u32at(15)) << 32);
        let count = u32at(19) as usize;
        let size = u32at(0) as usize;
        self.srv.stats.requests.fetch_add(1, Ordering::Relaxed);
        if size < TWRITE_HEAD {
            return Err(std::io::Error::other("impossible Twrite size"));
        }
        if count != size - TWRITE_HEAD {
            rd.skip_payload().await?;
            self.srv
                .stats
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            self.reply_now(
                tag,
                Fcall::Rerror {
                    ename: format!(
                        "bad 9P message: {}",
                        fcall::ProtoError::SizeMismatch {
                            declared: size as u32,
                            actual: TWRITE_HEAD + count
                        }
                    ),
                },
            );
            return Ok(());
        }
        let target = self.splice_target(tag, fid, adm);
        let file = match target {
            Ok(Some(f)) => f,
            Ok(None) => {
                // No host file: read the data and handle it as any other request.
                let data = rd.read_payload(&have).await?;
                let m = Msg::new(tag, Fcall::Twrite { fid, offset, data });
                self.request(m, size, rd, adm).await;
                return Ok(());
            }
            Err(e) => {
                rd.skip_payload().await?;
                self.reply_now(
                    tag,
                    Fcall::Rerror {
                        ename: e.0.into_owned(),
                    },
                );
                return Ok(());
            }
        };
        if self.srv.cfg.trace {
            eprintln!(
                "<-{}- Twrite tag {tag} fid {fid} offset {offset} count {count} (spliced)",
                self.id
            );
        }
        // What came with the head is written as usual; the rest goes through the pipe.
        use std::os::unix::fs::FileExt;
        let mut res: std::io::Result<()> = file.write_all_at(&have, offset);
        if pipe.is_none() {
            *pipe = Some(Pipe::new()?);
        }
        let p = pipe
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no pipe"))?;
        match rd
            .splice_payload(p, &file, offset + have.len() as u64)
            .await
        {
            Some(Ok(r)) => {
                if res.is_ok() {
                    res = r;
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                // Not a socket after all: read the data and write it.
                let data = rd.read_payload(&[]).await?;
                if res.is_ok() {
                    res = file.write_all_at(&data, offset + have.len() as u64);
                }
            }
        }
        let body = match res {
            Ok(()) => Fcall::Rwrite {
                count: count as u32,
            },
            Err(e) => Fcall::Rerror {
                ename: Ename::from(e).0.into_owned(),
            },
        };
        self.reply_now(tag, body);
        Ok(())
    }

    /// Where a big write's data may go directly, after the checks any Twrite gets.
    fn splice_target(
        &self,
        tag: u16,
        fid: u32,
        adm: &Admission<Fcall>,
    ) -> Result<Option<Arc<std::fs::File>>, Ename> {
        if self.msize.load(Ordering::Relaxed) == 0 {
            return Err(err("version not negotiated"));
        }
        if adm.holds(tag) || lock(&self.pending).contains_key(&tag) {
            return Err(err(errstr::EDUPTAG));
        }
        let e = self.get(fid)?;
        match e.mode {
            Some(m) if m & 3 == OWRITE || m & 3 == ORDWR => {}
            Some(_) => return Err(err(errstr::EBADUSE)),
            None => return Err(err(errstr::ENOTOPEN)),
        }
        Ok(self.srv.fs.write_file(&e.aux))
    }

    /// Run a request: at once, if it finishes without waiting (most do, and handing it
    /// to a task of its own would cost more than the work), else in its own task.
    fn start(self: &Arc<Self>, tag: u16, body: Fcall, ticket: Ticket) {
        // A big write is work (a copy into a file, say) better done on another thread
        // while this one reads the next message.
        let heavy = matches!(&body, Fcall::Twrite { data, .. } if data.len() >= HEAVY_WRITE);
        let me = Arc::clone(self);
        let mut fut = Box::pin(async move { me.dispatch(body).await });
        let mut cx = Context::from_waker(std::task::Waker::noop());
        if !heavy {
            if let Poll::Ready(reply) = fut.as_mut().poll(&mut cx) {
                // Nothing can have flushed it: a Tflush for it is still unread.
                self.send_reply(tag, reply, ticket);
                return;
            }
        }
        // It waits for something: from now on the task's own waker is the one that
        // counts (the first poll in the task registers it).
        let id = self.next_req.fetch_add(1, Ordering::Relaxed);
        lock(&self.pending).insert(tag, Pending { id, abort: None });
        let me = Arc::clone(self);
        let h = tokio::spawn(async move {
            let reply = fut.await;
            me.finish(tag, id, reply, ticket);
        });
        if let Some(p) = lock(&self.pending).get_mut(&tag) {
            if p.id == id {
                p.abort = Some(h.abort_handle());
            }
        }
    }

    /// Send a request's reply, unless it was flushed.
    fn finish(&self, tag: u16, id: u64, reply: Reply, ticket: Ticket) {
        let mut p = lock(&self.pending);
        if p.get(&tag).is_some_and(|e| e.id == id) {
            p.remove(&tag);
            // Queued under the lock, so a Tflush handled after this sees the tag gone
            // and its Rflush goes out after this reply.
            self.send_reply(tag, reply, ticket);
        }
    }

    fn send_reply(&self, tag: u16, reply: Reply, ticket: Ticket) {
        match reply {
            Reply::Msg(body) => {
                let m = Msg::new(tag, body);
                self.trace_out(&m);
                self.send_encoded(&m, Some(Box::new(ticket)));
            }
            Reply::File {
                file,
                offset,
                len,
                map,
            } => {
                if self.srv.cfg.trace {
                    eprintln!("-{}-> Rread tag {tag} count {len} (from file)", self.id);
                }
                let mut head = BytesMut::with_capacity(11);
                head.extend_from_slice(&(11 + len).to_le_bytes());
                head.extend_from_slice(&[fcall::mtype::RREAD]);
                head.extend_from_slice(&tag.to_le_bytes());
                head.extend_from_slice(&len.to_le_bytes());
                self.outbox.send(Outgoing {
                    head: head.freeze(),
                    bulk: Bulk::File {
                        file,
                        offset,
                        len: len as usize,
                        map,
                    },
                    guard: Some(Box::new(ticket)),
                });
            }
        }
    }

    fn flush(&self, tag: u16, oldtag: u16) {
        let mut p = lock(&self.pending);
        if let Some(e) = p.remove(&oldtag) {
            if let Some(a) = e.abort {
                a.abort();
            }
        }
        let m = Msg::new(tag, Fcall::Rflush);
        self.trace_out(&m);
        self.send_encoded(&m, None);
        drop(p);
    }

    async fn version(self: &Arc<Self>, tag: u16, msize: u32, version: &str, rd: &mut FrameReader) {
        // A new session: everything in progress is abandoned, every fid clunked.
        self.abort_all();
        self.clunk_all().await;
        if msize < MIN_MSIZE {
            self.reply_now(tag, rerror("msize too small"));
            return;
        }
        let msize = msize.min(self.srv.cfg.max_msize);
        let v = if version == VERSION9P || version.starts_with("9P2000.") {
            self.msize.store(msize as usize, Ordering::Relaxed);
            rd.set_max(msize);
            VERSION9P
        } else {
            self.msize.store(0, Ordering::Relaxed);
            "unknown"
        };
        self.reply_now(
            tag,
            Fcall::Rversion {
                msize,
                version: v.into(),
            },
        );
    }

    fn abort_all(&self) {
        let mut p = lock(&self.pending);
        for (_, e) in p.drain() {
            if let Some(a) = e.abort {
                a.abort();
            }
        }
    }

    async fn clunk_all(&self) {
        let all: Vec<_> = lock(&self.fids).drain().map(|(_, e)| e).collect();
        self.srv.stats.fids.fetch_sub(all.len(), Ordering::Relaxed);
        for e in all {
            self.srv.fs.clunk(&e.caller, &e.aux).await;
        }
    }

    async fn teardown(&self) {
        self.abort_all();
        self.clunk_all().await;
    }

    fn get(&self, fid: u32) -> Result<Arc<FidEntry<F::Fid>>, Ename> {
        lock(&self.fids)
            .get(&fid)
            .cloned()
            .ok_or_else(|| err(errstr::EBADFID))
    }

    /// Install a new fid; fails if the number is taken or there are too many.
    fn install(
        &self,
        fid: u32,
        e: FidEntry<F::Fid>,
    ) -> Result<(), (FidEntry<F::Fid>, &'static str)> {
        let mut t = lock(&self.fids);
        if t.contains_key(&fid) {
            return Err((e, errstr::EDUPFID));
        }
        if t.len() >= self.srv.cfg.max_fids {
            return Err((e, errstr::ETOOMANYFIDS));
        }
        t.insert(fid, Arc::new(e));
        self.srv.stats.fids.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Replace `old` (still installed at `fid`) by `new`; fails if it was clunked or
    /// replaced in the meantime.
    fn replace(
        &self,
        fid: u32,
        old: &Arc<FidEntry<F::Fid>>,
        new: FidEntry<F::Fid>,
    ) -> Result<(), FidEntry<F::Fid>> {
        let mut t = lock(&self.fids);
        match t.get_mut(&fid) {
            Some(cur) if Arc::ptr_eq(cur, old) => {
                *cur = Arc::new(new);
                Ok(())
            }
            _ => Err(new),
        }
    }

    fn take(&self, fid: u32) -> Option<Arc<FidEntry<F::Fid>>> {
        let e = lock(&self.fids).remove(&fid);
        if e.is_some() {
            self.srv.stats.fids.fetch_sub(1, Ordering::Relaxed);
        }
        e
    }

    fn iounit(&self) -> u32 {
        (self.msize.load(Ordering::Relaxed) as u32).saturating_sub(IOHDRSZ)
    }

    async fn dispatch(self: &Arc<Self>, body: Fcall) -> Reply {
        match self.dispatch_inner(body).await {
            Ok(r) => r,
            Err(e) => Reply::Msg(Fcall::Rerror {
                ename: e.0.into_owned(),
            }),
        }
    }

    async fn dispatch_inner(self: &Arc<Self>, body: Fcall) -> Result<Reply, Ename> {
        match body {
            Fcall::Tread { fid, offset, count } => self.tread(fid, offset, count).await,
            body => self.dispatch_msg(body).await.map(Reply::Msg),
        }
    }

    async fn tread(&self, fid: u32, offset: u64, count: u32) -> Result<Reply, Ename> {
        let e = self.get(fid)?;
        let readable = match e.mode {
            Some(m) => m & 3 != OWRITE,
            None => false,
        };
        if !readable {
            return Err(err(if e.mode.is_none() {
                errstr::ENOTOPEN
            } else {
                errstr::EBADUSE
            }));
        }
        let count = count.min(self.iounit());
        if e.qid.ty & QTDIR != 0 {
            return self.dirread(&e, offset, count).await.map(Reply::Msg);
        }
        match self.srv.fs.read(&e.caller, &e.aux, offset, count).await? {
            Data::Bytes(data) => {
                let data = if data.len() > count as usize {
                    data.slice(..count as usize)
                } else {
                    data
                };
                Ok(Reply::Msg(Fcall::Rread { data }))
            }
            Data::File {
                file,
                offset,
                len,
                map,
            } => {
                let len = len.min(count);
                Ok(Reply::File {
                    file,
                    offset,
                    len,
                    map: map.map(|m| m.slice(..(len as usize).min(m.len()))),
                })
            }
        }
    }

    async fn dispatch_msg(self: &Arc<Self>, body: Fcall) -> Result<Fcall, Ename> {
        let fs = &self.srv.fs;
        match body {
            Fcall::Tauth { afid, uname, aname } => {
                if afid == NOFID {
                    return Err(err(errstr::EBADFID));
                }
                let caller = Caller {
                    uname: uname.into(),
                };
                let (aux, mut qid) = fs.auth(&caller, &aname).await?;
                qid.ty |= QTAUTH;
                self.install(
                    afid,
                    FidEntry {
                        aux,
                        qid,
                        caller,
                        mode: Some(ORDWR),
                        dir: Mutex::new(None),
                    },
                )
                .map_err(|(e, s)| {
                    self.late_clunk(e);
                    err(s)
                })?;
                Ok(Fcall::Rauth { aqid: qid })
            }
            Fcall::Tattach {
                fid,
                afid,
                uname,
                aname,
            } => {
                let caller = Caller {
                    uname: uname.into(),
                };
                let a = if afid == NOFID {
                    None
                } else {
                    let a = self.get(afid)?;
                    if a.qid.ty & QTAUTH == 0 {
                        return Err(err("not an authentication fid"));
                    }
                    Some(a)
                };
                if lock(&self.fids).contains_key(&fid) {
                    return Err(err(errstr::EDUPFID));
                }
                let (aux, qid) = fs
                    .attach(&caller, &aname, a.as_ref().map(|a| &a.aux))
                    .await?;
                self.install(
                    fid,
                    FidEntry {
                        aux,
                        qid,
                        caller,
                        mode: None,
                        dir: Mutex::new(None),
                    },
                )
                .map_err(|(e, s)| {
                    self.late_clunk(e);
                    err(s)
                })?;
                Ok(Fcall::Rattach { qid })
            }
            Fcall::Twalk {
                fid,
                newfid,
                wnames,
            } => self.walk(fid, newfid, wnames).await,
            Fcall::Topen { fid, mode } => {
                let e = self.get(fid)?;
                if e.mode.is_some() {
                    return Err(err(errstr::EISOPEN));
                }
                if mode & !(3 | OTRUNC | ORCLOSE) != 0 {
                    return Err(err(errstr::EBADMODE));
                }
                if e.qid.ty & QTDIR != 0
                    && (mode & 3 == OWRITE || mode & 3 == ORDWR || mode & (OTRUNC | ORCLOSE) != 0)
                {
                    return Err(err(errstr::EISDIR));
                }
                let o = fs.open(&e.caller, &e.aux, mode).await?;
                self.opened(fid, &e, o, mode)
            }
            Fcall::Tcreate {
                fid,
                name,
                perm,
                mode,
            } => {
                let e = self.get(fid)?;
                if e.mode.is_some() {
                    return Err(err(errstr::EISOPEN));
                }
                if e.qid.ty & QTDIR == 0 {
                    return Err(err(errstr::ECREATENONDIR));
                }
                if mode & !(3 | OTRUNC | ORCLOSE) != 0 {
                    return Err(err(errstr::EBADMODE));
                }
                check_name(&name)?;
                if perm & fcall::DMDIR != 0
                    && (mode & 3 == OWRITE || mode & 3 == ORDWR || mode & (OTRUNC | ORCLOSE) != 0)
                {
                    return Err(err(errstr::EISDIR));
                }
                let o = fs.create(&e.caller, &e.aux, &name, perm, mode).await?;
                let Opened { qid, iounit, .. } = &o;
                let (qid, iounit) = (*qid, *iounit);
                self.opened(fid, &e, o, mode)?;
                Ok(Fcall::Rcreate { qid, iounit })
            }
            Fcall::Twrite { fid, offset, data } => {
                let e = self.get(fid)?;
                let writable = match e.mode {
                    Some(m) => m & 3 == OWRITE || m & 3 == ORDWR,
                    None => false,
                };
                if !writable {
                    return Err(err(if e.mode.is_none() {
                        errstr::ENOTOPEN
                    } else {
                        errstr::EBADUSE
                    }));
                }
                let count = fs.write(&e.caller, &e.aux, offset, data).await?;
                Ok(Fcall::Rwrite { count })
            }
            Fcall::Tclunk { fid } => {
                let e = self.take(fid).ok_or_else(|| err(errstr::EBADFID))?;
                fs.clunk(&e.caller, &e.aux).await;
                Ok(Fcall::Rclunk)
            }
            Fcall::Tremove { fid } => {
                let e = self.take(fid).ok_or_else(|| err(errstr::EBADFID))?;
                let r = fs.remove(&e.caller, &e.aux).await;
                fs.clunk(&e.caller, &e.aux).await;
                r?;
                Ok(Fcall::Rremove)
            }
            Fcall::Tstat { fid } => {
                let e = self.get(fid)?;
                let stat = fs.stat(&e.caller, &e.aux).await?;
                Ok(Fcall::Rstat { stat })
            }
            Fcall::Twstat { fid, stat } => {
                let e = self.get(fid)?;
                if !stat.name.is_empty() {
                    check_name(&stat.name)?;
                }
                fs.wstat(&e.caller, &e.aux, &stat).await?;
                Ok(Fcall::Rwstat)
            }
            _ => Err(err(errstr::EBOTCH)),
        }
    }

    fn opened(
        &self,
        fid: u32,
        old: &Arc<FidEntry<F::Fid>>,
        o: Opened<F::Fid>,
        mode: u8,
    ) -> Result<Fcall, Ename> {
        let iounit = if o.iounit == 0 || o.iounit > self.iounit() {
            0
        } else {
            o.iounit
        };
        let qid = o.qid;
        let new = FidEntry {
            aux: o.fid,
            qid,
            caller: old.caller.clone(),
            mode: Some(mode),
            dir: Mutex::new(None),
        };
        match self.replace(fid, old, new) {
            Ok(()) => Ok(Fcall::Ropen { qid, iounit }),
            Err(new) => {
                self.late_clunk(new);
                Err(err(errstr::EISOPEN))
            }
        }
    }

    /// A fid state that lost a race (its number was clunked or taken meanwhile) still
    /// gets its clunk.
    fn late_clunk(&self, e: FidEntry<F::Fid>) {
        let fs = Arc::clone(&self.srv.fs);
        tokio::spawn(async move { fs.clunk(&e.caller, &e.aux).await });
    }

    async fn walk(&self, fid: u32, newfid: u32, wnames: Vec<String>) -> Result<Fcall, Ename> {
        let fs = &self.srv.fs;
        let e = self.get(fid)?;
        if e.mode.is_some() {
            return Err(err("cannot walk from an open fid"));
        }
        if wnames.len() > MAXWELEM {
            return Err(err(errstr::ETOOMANYWALK));
        }
        if newfid != fid && lock(&self.fids).contains_key(&newfid) {
            return Err(err(errstr::EDUPFID));
        }
        if !wnames.is_empty() && e.qid.ty & QTDIR == 0 {
            return Err(err(errstr::EWALKNODIR));
        }
        for w in &wnames {
            if w.is_empty() || w == "." || w.contains('/') {
                return Err(err(errstr::EBADNAME));
            }
        }
        let w = fs.walk(&e.caller, &e.aux, &wnames).await?;
        if w.qids.len() > wnames.len() || (w.qids.is_empty() && !wnames.is_empty()) {
            return Err(err(errstr::EBOTCH));
        }
        let Some(aux) = w.fid else {
            if w.qids.len() == wnames.len() {
                return Err(err(errstr::EBOTCH));
            }
            return Ok(Fcall::Rwalk { wqids: w.qids });
        };
        if w.qids.len() < wnames.len() {
            self.late_clunk(FidEntry {
                aux,
                qid: e.qid,
                caller: e.caller.clone(),
                mode: None,
                dir: Mutex::new(None),
            });
            return Ok(Fcall::Rwalk { wqids: w.qids });
        }
        let qid = w.qids.last().copied().unwrap_or(e.qid);
        let new = FidEntry {
            aux,
            qid,
            caller: e.caller.clone(),
            mode: None,
            dir: Mutex::new(None),
        };
        if newfid == fid {
            if let Err(new) = self.replace(fid, &e, new) {
                self.late_clunk(new);
                return Err(err(errstr::EBADFID));
            }
            // The old state is gone from the table; it has been walked away from.
            fs.clunk(&e.caller, &e.aux).await;
        } else if let Err((new, s)) = self.install(newfid, new) {
            self.late_clunk(new);
            return Err(err(s));
        }
        Ok(Fcall::Rwalk { wqids: w.qids })
    }

    async fn dirread(
        &self,
        e: &Arc<FidEntry<F::Fid>>,
        offset: u64,
        count: u32,
    ) -> Result<Fcall, Ename> {
        let fresh = if offset == 0 {
            let list = self.srv.fs.readdir(&e.caller, &e.aux).await?;
            let mut b = BytesMut::new();
            for st in &list {
                st.encode(&mut b).map_err(|_| err(errstr::EBOTCH))?;
            }
            Some(b.freeze())
        } else {
            None
        };
        let mut d = lock(&e.dir);
        if let Some(data) = fresh {
            *d = Some(DirSnap { data, next: 0 });
        }
        let Some(snap) = d.as_mut() else {
            return Err(err(errstr::EBADOFFSET));
        };
        if offset != snap.next {
            return Err(err(errstr::EBADOFFSET));
        }
        let start = offset as usize;
        let mut end = start;
        while end < snap.data.len() {
            let n = u16::from_le_bytes([snap.data[end], snap.data[end + 1]]) as usize + 2;
            if end + n - start > count as usize {
                break;
            }
            end += n;
        }
        if end == start && end < snap.data.len() {
            return Err(err("directory read count too small"));
        }
        snap.next = end as u64;
        Ok(Fcall::Rread {
            data: snap.data.slice(start..end),
        })
    }
}

fn check_name(name: &str) -> Result<(), Ename> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(err(errstr::EBADNAME));
    }
    if name.contains('/') {
        return Err(err(errstr::EBADCHAR));
    }
    Ok(())
}

/// Whether `caller` may access a file with the given owner, group and mode for `want`
/// (a combination of `DMREAD`, `DMWRITE`, `DMEXEC`), by Plan 9's rule: the owner
/// checks the owner bits, a group member the group bits, everyone the other bits.
/// Group membership here is the simple one of lib9p's servers: the group named like
/// the user.
pub fn has_perm(uname: &str, uid: &str, gid: &str, mode: u32, want: u32) -> bool {
    let mut m = mode & 7;
    if uname == uid {
        m |= (mode >> 6) & 7;
    }
    if uname == gid {
        m |= (mode >> 3) & 7;
    }
    m & want == want
}

/// Check the fields of a `Twstat` that can never change: each must be its "don't
/// touch" value or the value it already has (some clients send a whole stat back with
/// one field changed). `qid.vers` is not checked: it may have moved on meanwhile.
pub fn check_wstat_fixed(req: &Stat, cur: &Stat) -> FsResult<()> {
    if (req.ty != !0 && req.ty != cur.ty)
        || (req.dev != !0 && req.dev != cur.dev)
        || (req.qid.path != !0 && req.qid.path != cur.qid.path)
        || (req.qid.ty != !0 && req.qid.ty != cur.qid.ty)
        || (req.atime != !0 && req.atime != cur.atime)
        || (!req.muid.is_empty() && req.muid != cur.muid)
    {
        return Err(Ename::from(errstr::EBADWSTAT));
    }
    if !req.uid.is_empty() && req.uid != cur.uid {
        return Err(Ename::from(errstr::EWSTATUID));
    }
    if req.mode != !0 && (req.mode & fcall::DMDIR) != (cur.mode & fcall::DMDIR) {
        return Err(Ename::from(errstr::EWSTATDIR));
    }
    Ok(())
}

/// The permission bits an open mode needs.
pub fn open_perm(mode: u8) -> u32 {
    let mut want = match mode & 3 {
        fcall::OREAD => fcall::DMREAD,
        OWRITE => fcall::DMWRITE,
        ORDWR => fcall::DMREAD | fcall::DMWRITE,
        OEXEC => fcall::DMEXEC,
        _ => 0,
    };
    if mode & OTRUNC != 0 {
        want |= fcall::DMWRITE;
    }
    want
}

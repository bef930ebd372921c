//! The 9P multiplexer behind `srv`: many local clients share one connection to a
//! server, as plan9port's 9pserve arranges.
//!
//! Each local client negotiates its own version with the multiplexer (msize at most the
//! server's); its fids and tags are translated to ones unique on the shared
//! connection. A local `Tflush` becomes a `Tflush` upstream, and the local `Rflush` is
//! sent only after the request's own reply, if the server sent one first. When a local
//! client hangs up, its requests in progress are flushed and its fids clunked. When the
//! server hangs up, the multiplexer ends.

use lib9::client::{Call, Client};
use lib9::dial::{AsyncListener, Conn};
use lib9::errstr::{self, Ename};
use lib9::fcall::{self, Fcall, MIN_MSIZE, Msg, NOFID, NOTAG, VERSION9P};
use lib9::wire::{Admission, FrameReader, Outbox, Ticket, spawn_writer};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

/// Requests in progress per local client, and the bytes they may hold, before the
/// multiplexer makes the client's further requests wait.
const MAX_OUTSTANDING: usize = 256;
const MAX_BYTES: usize = 32 * 1024 * 1024;

/// A multiplexer over one upstream connection.
pub struct Mux {
    up: Client,
    trace: bool,
}

impl Mux {
    pub fn new(up: Client, trace: bool) -> Arc<Mux> {
        Arc::new(Mux { up, trace })
    }

    /// Serve local clients until the server hangs up.
    pub async fn serve(self: &Arc<Self>, listener: AsyncListener) -> std::io::Result<()> {
        loop {
            tokio::select! {
                r = listener.accept_pending() => match r {
                    Ok(pending) => {
                        let me = Arc::clone(self);
                        tokio::spawn(async move {
                            if let Ok(conn) = pending.finish().await {
                                me.serve_conn(conn).await
                            }
                        });
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EMFILE) || e.raw_os_error() == Some(libc::ENFILE) => {
                        lib9::server::pause(std::time::Duration::from_millis(20)).await;
                    }
                    Err(e) => return Err(e),
                },
                _ = self.up.hungup() => return Ok(()),
            }
        }
    }

    /// Serve one local client.
    pub async fn serve_conn(self: &Arc<Self>, conn: Conn) {
        let (outbox, writer) = spawn_writer(conn.write);
        let lc = Arc::new(Local {
            mux: Arc::clone(self),
            outbox,
            msize: AtomicU32::new(0),
            fids: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
        });
        let mut rd = FrameReader::new(conn.read, self.up.msize());
        let mut adm = Admission::new(MAX_OUTSTANDING, MAX_BYTES, MAX_OUTSTANDING, MAX_BYTES / 4);
        loop {
            // As in the server framework: while requests wait for room, keep reading,
            // so that a Tflush behind them is seen.
            let ev = tokio::select! {
                f = rd.next(), if !adm.is_full() || !adm.has_waiting() => match f {
                    Ok(Some(f)) => Ev::Frame(f),
                    _ => break,
                },
                r = adm.next_ready(), if adm.has_waiting() => match r {
                    Some(r) => Ev::Ready(r),
                    None => break,
                },
                _ = self.up.hungup() => break,
            };
            match ev {
                Ev::Ready((tag, body, ticket)) => lc.start(tag, body, ticket),
                Ev::Frame(frame) => {
                    let tag = fcall::frame_tag(&frame).unwrap_or(NOTAG);
                    match fcall::decode(frame, self.up.msize()) {
                        Ok(m) => {
                            if self.trace {
                                eprintln!("<- {m}");
                            }
                            lc.incoming(m, &mut rd, &mut adm);
                        }
                        Err(e) => lc.reply(
                            tag,
                            Fcall::Rerror {
                                ename: format!("bad 9P message: {e}"),
                            },
                        ),
                    }
                }
            }
        }
        lc.hangup();
        drop(lc);
        let _ = writer.await;
    }
}

/// Tells a request's task to flush it. A signal whose sender went away without
/// sending (the request is not to be flushed) never fires.
struct FlushSignal(Option<oneshot::Receiver<()>>);

impl FlushSignal {
    async fn wait(&mut self) {
        if let Some(rx) = self.0.as_mut() {
            let r = rx.await;
            self.0 = None;
            if r.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await
    }
}

enum Ev {
    Frame(bytes::Bytes),
    Ready((u16, Fcall, Ticket)),
}

/// A local fid: its upstream number, or `None` while a request is creating it.
type FidMap = HashMap<u32, Option<u32>>;

struct Pending {
    id: u64,
    abortable: bool,
    abort: Option<AbortHandle>,
    flush: Option<oneshot::Sender<()>>,
    done: watch::Receiver<bool>,
}

struct Local {
    mux: Arc<Mux>,
    outbox: Outbox,
    msize: AtomicU32,
    fids: Mutex<FidMap>,
    pending: Mutex<HashMap<u16, Pending>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn rerr(s: &str) -> Fcall {
    Fcall::Rerror { ename: s.into() }
}

/// How a local request maps onto the server, and what its reply does to the fid table.
enum Effect {
    None,
    /// Create local fid `local` as upstream `up` on success (`nwname` for walks).
    Make {
        local: u32,
        up: u32,
        nwname: Option<usize>,
    },
    /// The upstream fid is forgotten whatever the reply.
    Forget {
        up: u32,
    },
}

static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl Local {
    fn reply(&self, tag: u16, body: Fcall) {
        let m = Msg::new(tag, body);
        if self.mux.trace {
            eprintln!("-> {m}");
        }
        self.outbox.send_msg(&m);
    }

    fn up_fid(&self, fid: u32) -> Result<u32, Ename> {
        match lock(&self.fids).get(&fid) {
            Some(Some(u)) => Ok(*u),
            _ => Err(Ename::from(errstr::EBADFID)),
        }
    }

    /// Reserve local fid `fid` and a fresh upstream number for it.
    fn reserve(&self, fid: u32) -> Result<u32, Ename> {
        let mut f = lock(&self.fids);
        if f.contains_key(&fid) {
            return Err(Ename::from(errstr::EDUPFID));
        }
        f.insert(fid, None);
        Ok(self.mux.up.alloc_fid())
    }

    fn translate(&self, body: Fcall) -> Result<(Fcall, Effect), Ename> {
        let iounit = self.mux.up.iounit();
        Ok(match body {
            Fcall::Tauth { afid, uname, aname } => {
                let up = self.reserve(afid)?;
                (
                    Fcall::Tauth {
                        afid: up,
                        uname,
                        aname,
                    },
                    Effect::Make {
                        local: afid,
                        up,
                        nwname: None,
                    },
                )
            }
            Fcall::Tattach {
                fid,
                afid,
                uname,
                aname,
            } => {
                let uafid = if afid == NOFID {
                    NOFID
                } else {
                    self.up_fid(afid)?
                };
                let up = self.reserve(fid)?;
                (
                    Fcall::Tattach {
                        fid: up,
                        afid: uafid,
                        uname,
                        aname,
                    },
                    Effect::Make {
                        local: fid,
                        up,
                        nwname: None,
                    },
                )
            }
            Fcall::Twalk {
                fid,
                newfid,
                wnames,
            } => {
                let ufid = self.up_fid(fid)?;
                if newfid == fid {
                    (
                        Fcall::Twalk {
                            fid: ufid,
                            newfid: ufid,
                            wnames,
                        },
                        Effect::None,
                    )
                } else {
                    let up = self.reserve(newfid)?;
                    let n = wnames.len();
                    (
                        Fcall::Twalk {
                            fid: ufid,
                            newfid: up,
                            wnames,
                        },
                        Effect::Make {
                            local: newfid,
                            up,
                            nwname: Some(n),
                        },
                    )
                }
            }
            Fcall::Topen { fid, mode } => (
                Fcall::Topen {
                    fid: self.up_fid(fid)?,
                    mode,
                },
                Effect::None,
            ),
            Fcall::Tcreate {
                fid,
                name,
                perm,
                mode,
            } => (
                Fcall::Tcreate {
                    fid: self.up_fid(fid)?,
                    name,
                    perm,
                    mode,
                },
                Effect::None,
            ),
            Fcall::Tread { fid, offset, count } => (
                Fcall::Tread {
                    fid: self.up_fid(fid)?,
                    offset,
                    count: count.min(iounit),
                },
                Effect::None,
            ),
            Fcall::Twrite { fid, offset, data } => (
                Fcall::Twrite {
                    fid: self.up_fid(fid)?,
                    offset,
                    data,
                },
                Effect::None,
            ),
            Fcall::Tstat { fid } => (
                Fcall::Tstat {
                    fid: self.up_fid(fid)?,
                },
                Effect::None,
            ),
            Fcall::Twstat { fid, stat } => (
                Fcall::Twstat {
                    fid: self.up_fid(fid)?,
                    stat,
                },
                Effect::None,
            ),
            Fcall::Tclunk { fid } | Fcall::Tremove { fid } => {
                let up = match lock(&self.fids).remove(&fid) {
                    Some(Some(u)) => u,
                    Some(None) => return Err(Ename::from(errstr::EBADUSE)),
                    None => return Err(Ename::from(errstr::EBADFID)),
                };
                let b = if matches!(body, Fcall::Tclunk { .. }) {
                    Fcall::Tclunk { fid: up }
                } else {
                    Fcall::Tremove { fid: up }
                };
                (b, Effect::Forget { up })
            }
            _ => return Err(Ename::from(errstr::EBOTCH)),
        })
    }

    /// Apply a reply's effect on the fid table.
    fn settle(&self, eff: &Effect, reply: Option<&Fcall>) {
        match *eff {
            Effect::None => {}
            Effect::Make { local, up, nwname } => {
                let made = match (reply, nwname) {
                    (Some(Fcall::Rattach { .. } | Fcall::Rauth { .. }), None) => true,
                    (Some(Fcall::Rwalk { wqids }), Some(n)) => wqids.len() == n,
                    _ => false,
                };
                let mut f = lock(&self.fids);
                if made {
                    f.insert(local, Some(up));
                } else {
                    f.remove(&local);
                    if reply.is_some() {
                        // The server answered and made nothing; with no reply (flushed)
                        // the client library has already taken the number back.
                        self.mux.up.free_fid(up);
                    }
                }
            }
            Effect::Forget { up } => {
                if reply.is_some() {
                    self.mux.up.free_fid(up);
                }
            }
        }
    }

    fn incoming(self: &Arc<Self>, m: Msg, rd: &mut FrameReader, adm: &mut Admission<Fcall>) {
        let tag = m.tag;
        match m.body {
            Fcall::Tversion { msize, version } => {
                adm.clear();
                self.hangup();
                if msize < MIN_MSIZE {
                    self.reply(tag, rerr("msize too small"));
                    return;
                }
                let ms = msize.min(self.mux.up.msize());
                let v = if version == VERSION9P || version.starts_with("9P2000.") {
                    self.msize.store(ms, Ordering::Relaxed);
                    rd.set_max(ms);
                    VERSION9P
                } else {
                    "unknown"
                };
                self.reply(
                    tag,
                    Fcall::Rversion {
                        msize: ms,
                        version: v.into(),
                    },
                );
            }
            Fcall::Tflush { oldtag } => {
                if adm.cancel(oldtag) {
                    self.reply(tag, Fcall::Rflush);
                } else {
                    self.flush(tag, oldtag);
                }
            }
            body if body.is_request() => {
                if self.msize.load(Ordering::Relaxed) == 0 {
                    self.reply(tag, rerr("version not negotiated"));
                    return;
                }
                if adm.holds(tag) || lock(&self.pending).contains_key(&tag) {
                    self.reply(tag, rerr(errstr::EDUPTAG));
                    return;
                }
                let cost = body.encoded_len()
                    + 512
                    + match &body {
                        Fcall::Tread { count, .. } => *count as usize,
                        _ => 0,
                    };
                if let Some((body, ticket)) = adm.offer(tag, body, cost.min(MAX_BYTES) as u32) {
                    self.start(tag, body, ticket);
                }
            }
            _ => self.reply(tag, rerr("unexpected reply message")),
        }
    }

    /// Send a request upstream from its own task, and its reply back.
    fn start(self: &Arc<Self>, tag: u16, body: Fcall, ticket: Ticket) {
        let (up_body, eff) = match self.translate(body) {
            Ok(x) => x,
            Err(e) => {
                self.reply(
                    tag,
                    Fcall::Rerror {
                        ename: e.0.into_owned(),
                    },
                );
                return;
            }
        };
        let newfid = match &eff {
            Effect::Make { up, .. } => Some(*up),
            _ => None,
        };
        // A clunk or remove always runs to the end: abandoning it half-way would leave
        // the server's fid in doubt.
        let abortable = !matches!(eff, Effect::Forget { .. });
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (ftx, frx) = oneshot::channel::<()>();
        let mut frx = FlushSignal(Some(frx));
        let (dtx, drx) = watch::channel(false);
        lock(&self.pending).insert(
            tag,
            Pending {
                id,
                abortable,
                abort: None,
                flush: Some(ftx),
                done: drx,
            },
        );
        let me = Arc::clone(self);
        let h = tokio::spawn(async move {
            let _ticket = ticket;
            let reply = tokio::select! {
                c = me.mux.up.start(up_body, newfid) => match c {
                    Ok(call) => me.await_call(call, frx).await,
                    Err(_) => Some(rerr(errstr::EHUNGUP)),
                },
                // Flushed while waiting for room upstream: it never went out, so a
                // fid number it reserved was never seen by the server either.
                _ = frx.wait() => {
                    if let Effect::Make { up, .. } = eff {
                        me.mux.up.free_fid(up);
                    }
                    None
                }
            };
            me.settle(&eff, reply.as_ref());
            let mut p = lock(&me.pending);
            if p.get(&tag).is_some_and(|e| e.id == id) {
                p.remove(&tag);
            }
            if let Some(r) = reply {
                me.reply(tag, r);
            }
            drop(p);
            let _ = dtx.send(true);
        });
        if let Some(p) = lock(&self.pending).get_mut(&tag) {
            if p.id == id && abortable {
                p.abort = Some(h.abort_handle());
            }
        }
    }

    /// Wait for the server's reply, or flush the request when told to.
    async fn await_call(&self, mut call: Call, mut flush: FlushSignal) -> Option<Fcall> {
        tokio::select! {
            r = &mut call => Some(r.unwrap_or_else(|_| rerr(errstr::EHUNGUP))),
            _ = flush.wait() => call.flush().await.unwrap_or_default(),
        }
    }

    fn flush(self: &Arc<Self>, tag: u16, oldtag: u16) {
        let mut p = lock(&self.pending);
        let Some(e) = p.get_mut(&oldtag) else {
            // Nothing in progress: any reply is already queued, so Rflush follows it.
            drop(p);
            self.reply(tag, Fcall::Rflush);
            return;
        };
        if e.abortable {
            if let Some(f) = e.flush.take() {
                let _ = f.send(());
            }
        }
        let mut done = e.done.clone();
        drop(p);
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let _ = done.wait_for(|d| *d).await;
            me.reply(tag, Fcall::Rflush);
        });
    }

    /// The local client is gone (or starts a new session): abandon its requests, which
    /// flushes them upstream, and clunk its fids.
    fn hangup(&self) {
        for (_, e) in lock(&self.pending).drain() {
            if let Some(a) = e.abort {
                a.abort();
            }
        }
        for (_, up) in lock(&self.fids).drain() {
            if let Some(u) = up {
                self.mux.up.clunk_raw(u);
            }
        }
        self.msize.store(0, Ordering::Relaxed);
    }
}

//! 9P authentication through factotum, as Plan 9 does it: no program here sees a
//! key. A client that gets `Rauth` relays the conversation between the auth fid and
//! its factotum's `rpc` file ([`proxy`], plan9port's `auth_proxy`); a server that
//! requires authentication ([`Authed`]) relays each auth fid's reads and writes to a
//! conversation of its own factotum, and lets an attach through only once that
//! conversation is done and proved the user named.
//!
//! The factotum is the service `factotum` in `$NAMESPACE` (plan9port's place for it),
//! or the one `$factotum` names (a dial string or another service name).

use crate::client::{self, Client, Fid};
use crate::errstr::Ename;
use crate::fcall::{ORDWR, QTAUTH, Qid, Stat};
use crate::server::{Caller, Data, Filesystem, FsResult, Opened, Walked};
use bytes::Bytes;
use std::sync::Arc;

/// The largest rpc request or reply (factotum(4)'s AuthRpcMax, with room for a verb).
pub const RPC_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// factotum could not be reached.
    #[error("cannot reach factotum: {0}")]
    Factotum(String),
    /// factotum or the peer ended the conversation with this message.
    #[error("{0}")]
    Failed(String),
    /// The 9P side of the exchange failed.
    #[error(transparent)]
    Client(#[from] client::Error),
}

pub type Result<T> = std::result::Result<T, Error>;

/// One reply on the rpc file.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Ok(Vec<u8>),
    Done,
    Error(String),
    Phase(String),
    NeedKey(String),
    BadKey(String),
    TooSmall(usize),
}

impl Reply {
    /// Parse a reply as factotum writes it: a verb, and after a blank its argument.
    pub fn parse(b: &[u8]) -> Option<Reply> {
        let (verb, arg) = match b.iter().position(|&c| c == b' ') {
            Some(i) => (&b[..i], &b[i + 1..]),
            None => (b, &b[b.len()..]),
        };
        let text = || String::from_utf8_lossy(arg).into_owned();
        Some(match verb {
            b"ok" => Reply::Ok(arg.to_vec()),
            b"done" => Reply::Done,
            b"error" => Reply::Error(text()),
            b"phase" => Reply::Phase(text()),
            b"needkey" => Reply::NeedKey(text()),
            b"badkey" => Reply::BadKey(text()),
            b"toosmall" => Reply::TooSmall(std::str::from_utf8(arg).ok()?.trim().parse().ok()?),
            _ => return None,
        })
    }
}

/// What a finished conversation proved: the client's and server's user names, a
/// capability (unused here) and the session secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AuthInfo {
    pub cuid: String,
    pub suid: String,
    pub cap: String,
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for AuthInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthInfo")
            .field("cuid", &self.cuid)
            .field("suid", &self.suid)
            .field("cap", &self.cap)
            .field("secret", &format_args!("[{} bytes]", self.secret.len()))
            .finish()
    }
}

impl Drop for AuthInfo {
    fn drop(&mut self) {
        for b in self.secret.iter_mut() {
            // SAFETY: a valid, aligned pointer to a byte we own; volatile so the
            // zeroing is not optimised away.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl AuthInfo {
    /// Unmarshal factotum's `authinfo` reply: four fields, each a 2-byte
    /// little-endian count and that many bytes (plan9port's convM2AI).
    pub fn parse(b: &[u8]) -> Option<AuthInfo> {
        let mut p = b;
        let mut field = || {
            if p.len() < 2 {
                return None;
            }
            let n = u16::from_le_bytes([p[0], p[1]]) as usize;
            let v = p.get(2..2 + n)?.to_vec();
            p = &p[2 + n..];
            Some(v)
        };
        let cuid = String::from_utf8(field()?).ok()?;
        let suid = String::from_utf8(field()?).ok()?;
        let cap = String::from_utf8(field()?).ok()?;
        let secret = field()?;
        Some(AuthInfo {
            cuid,
            suid,
            cap,
            secret,
        })
    }
}

/// Where the user's factotum is: `$factotum` if set (a dial string or a service
/// name), else the service `factotum` in `$NAMESPACE`.
pub fn factotum_addr() -> String {
    std::env::var("factotum")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "factotum".into())
}

/// A conversation with factotum: its `rpc` file, open.
pub struct Rpc {
    fid: Fid,
}

impl Rpc {
    /// Open a new conversation with the user's factotum (see [`factotum_addr`]).
    pub async fn open() -> Result<Rpc> {
        Rpc::open_at(&factotum_addr()).await
    }

    /// Open a new conversation with the factotum at `addr`.
    pub async fn open_at(addr: &str) -> Result<Rpc> {
        let conn = crate::dial::dial(addr)
            .await
            .map_err(|e| Error::Factotum(format!("{addr}: {e}")))?;
        Rpc::open_conn(conn, addr, &crate::ns::user()).await
    }

    /// Open a conversation on a connection already made to a factotum (`addr`
    /// names it in errors), attaching as the local user `me` (factotum lets its
    /// owner use any key, others only keys that speak for them).
    pub async fn open_conn(conn: crate::dial::Conn, addr: &str, me: &str) -> Result<Rpc> {
        let c = Client::connect(conn, client::Options::default())
            .await
            .map_err(|e| Error::Factotum(format!("{addr}: {e}")))?;
        let root = c
            .attach_auth(None, me, "")
            .await
            .map_err(|e| Error::Factotum(format!("{addr}: {e}")))?;
        let mut fid = root
            .walk("rpc")
            .await
            .map_err(|e| Error::Factotum(format!("{addr}: rpc: {e}")))?;
        fid.open(ORDWR)
            .await
            .map_err(|e| Error::Factotum(format!("{addr}: rpc: {e}")))?;
        Ok(Rpc { fid })
    }

    /// One request and its reply.
    pub async fn call(&self, verb: &str, arg: &[u8]) -> Result<Reply> {
        let mut req = Vec::with_capacity(verb.len() + 1 + arg.len());
        req.extend_from_slice(verb.as_bytes());
        if !arg.is_empty() {
            req.push(b' ');
            req.extend_from_slice(arg);
        }
        self.fid.write(0, Bytes::from(req)).await?;
        let r = self.fid.read(0, (RPC_MAX + 64) as u32).await?;
        Reply::parse(&r).ok_or_else(|| {
            Error::Failed(format!(
                "factotum: bad rpc reply '{}'",
                String::from_utf8_lossy(&r[..r.len().min(40)])
            ))
        })
    }

    /// The AuthInfo of a finished conversation.
    pub async fn authinfo(&self) -> Result<AuthInfo> {
        match self.call("authinfo", b"").await? {
            Reply::Ok(b) => {
                AuthInfo::parse(&b).ok_or_else(|| Error::Failed("factotum: bad authinfo".into()))
            }
            other => Err(unexpected(other)),
        }
    }
}

/// The error for a reply that is not what the step wanted.
fn unexpected(r: Reply) -> Error {
    Error::Failed(match r {
        Reply::Error(s) => s,
        Reply::Phase(s) => format!("phase error: {s}"),
        Reply::NeedKey(s) => format!("needkey {s}"),
        // badkey: the key, then factotum's reason, then a template for another.
        Reply::BadKey(s) => {
            let mut l = s.lines();
            let key = l.next().unwrap_or("");
            match l.next() {
                Some(why) => format!("{why}: {key}"),
                None => format!("bad key: {key}"),
            }
        }
        Reply::TooSmall(n) => format!("toosmall {n}"),
        Reply::Ok(_) => "unexpected ok".into(),
        Reply::Done => "unexpected done".into(),
    })
}

/// Authenticate on an auth fid as a client: factotum speaks `params` (for example
/// `proto=p9any role=client`), this relays between the two. plan9port's
/// auth_proxy, without a key-asking callback: a key factotum lacks ends the
/// exchange with `needkey attrs` (factotum may prompt for it itself).
pub async fn proxy(afid: &Fid, params: &str) -> Result<AuthInfo> {
    proxy_rpc(afid, params, Rpc::open().await?).await
}

/// [`proxy`] through the factotum at `addr`.
pub async fn proxy_at(afid: &Fid, params: &str, addr: &str) -> Result<AuthInfo> {
    proxy_rpc(afid, params, Rpc::open_at(addr).await?).await
}

async fn proxy_rpc(afid: &Fid, params: &str, rpc: Rpc) -> Result<AuthInfo> {
    match rpc.call("start", params.as_bytes()).await? {
        Reply::Ok(_) => {}
        other => return Err(unexpected(other)),
    }
    // A conversation needs a handful of messages; a peer that keeps it going
    // forever is cut off.
    for _ in 0..64 {
        match rpc.call("read", b"").await? {
            Reply::Done => return rpc.authinfo().await,
            Reply::Ok(data) => {
                let n = afid.write(0, Bytes::from(data.clone())).await?;
                if n as usize != data.len() {
                    return Err(Error::Failed("auth_proxy: short write".into()));
                }
            }
            Reply::Phase(_) => {
                // factotum wants to be written to: ask it how much, read that much
                // from the peer, and go on while it asks for more.
                let mut buf = Vec::new();
                loop {
                    match rpc.call("write", &buf).await? {
                        Reply::Ok(_) => break,
                        Reply::TooSmall(want) if want <= RPC_MAX && want > buf.len() => {
                            let got = afid.read(0, (want - buf.len()) as u32).await?;
                            if got.is_empty() {
                                return Err(Error::Failed(
                                    "auth_proxy: peer hung up during authentication".into(),
                                ));
                            }
                            buf.extend_from_slice(&got);
                        }
                        other => return Err(unexpected(other)),
                    }
                }
            }
            other => return Err(unexpected(other)),
        }
    }
    Err(Error::Failed("auth_proxy: too many messages".into()))
}

/// Attach to `aname`, authenticating first if the server asks for it. The server's
/// `Rerror` to `Tauth` means it wants none, and the attach goes as `uname`; an
/// `Rauth` starts a p9any conversation through factotum, and the attach then goes
/// as the user it proved (its `cuid`). If authentication fails, an attach without
/// it is tried, as Plan 9's mount does: servers that allow both take it.
pub async fn attach(c: &Client, uname: &str, aname: &str) -> client::Result<Fid> {
    attach_with(c, uname, aname, None).await
}

/// [`attach`], reaching factotum through `factotum`, a connection made to it
/// beforehand (for a process that can no longer dial it), if given; factotum is
/// then told the local user is `uname`.
pub async fn attach_with(
    c: &Client,
    uname: &str,
    aname: &str,
    factotum: Option<crate::dial::Conn>,
) -> client::Result<Fid> {
    let afid = match c.auth(uname, aname).await {
        Ok(a) => a,
        Err(client::Error::Rerror(_)) => return c.attach_auth(None, uname, aname).await,
        Err(e) => return Err(e),
    };
    let params = "proto=p9any role=client";
    let r = match factotum {
        Some(conn) => match Rpc::open_conn(conn, &factotum_addr(), uname).await {
            Ok(rpc) => proxy_rpc(&afid, params, rpc).await,
            Err(e) => Err(e),
        },
        None => proxy(&afid, params).await,
    };
    match r {
        Ok(ai) => {
            let r = c.attach_auth(Some(&afid), &ai.cuid, aname).await;
            let _ = afid.clunk().await;
            r
        }
        Err(Error::Client(e)) if !matches!(e, client::Error::Rerror(_)) => Err(e),
        Err(e) => {
            let _ = afid.clunk().await;
            c.attach_auth(None, uname, aname)
                .await
                .map_err(|_| client::Error::Rerror(format!("auth_proxy: {e}")))
        }
    }
}

/// A file server that requires authentication: wraps another, answering `Tauth`
/// with a factotum conversation (`proto=p9any role=server`, and `dom=` if given)
/// and refusing any attach not made through a finished one.
pub struct Authed<F> {
    inner: F,
    keyspec: String,
}

impl<F> Authed<F> {
    pub fn new(inner: F, authdom: Option<&str>) -> Authed<F> {
        let mut keyspec = "proto=p9any role=server".to_string();
        if let Some(d) = authdom.filter(|d| !d.is_empty()) {
            keyspec.push_str(" dom=");
            keyspec.push_str(&quote(d));
        }
        Authed { inner, keyspec }
    }

    pub fn inner(&self) -> &F {
        &self.inner
    }
}

/// A word quoted as factotum reads attributes (rc's quoting).
fn quote(s: &str) -> String {
    if !s.is_empty()
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '=')
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "''"))
}

/// A conversation behind an auth fid.
pub struct Conv {
    rpc: Rpc,
    aname: String,
    done: Option<AuthInfo>,
}

/// A fid of an [`Authed`] server: an auth fid, or one of the wrapped server's.
pub enum AFid<T> {
    Auth(Box<tokio::sync::Mutex<Conv>>),
    File(T),
}

const ENOTAUTHFID: &str = "not an auth fid";
const EAUTHFID: &str = "operation on an auth fid";

fn file<T>(f: &AFid<T>) -> FsResult<&T> {
    match f {
        AFid::File(t) => Ok(t),
        AFid::Auth(_) => Err(Ename::from(EAUTHFID)),
    }
}

fn failed(e: Error) -> Ename {
    Ename::from(e.to_string())
}

impl Conv {
    /// Ask factotum whether the conversation has finished, and remember what it
    /// proved if so.
    async fn read(&mut self, count: u32) -> FsResult<Bytes> {
        if self.done.is_some() {
            return Ok(Bytes::new());
        }
        match self.rpc.call("read", b"").await.map_err(failed)? {
            Reply::Done => {
                self.done = Some(self.rpc.authinfo().await.map_err(failed)?);
                Ok(Bytes::new())
            }
            Reply::Ok(d) if d.len() <= count as usize => Ok(Bytes::from(d)),
            Reply::Ok(d) => Err(Ename::from(format!(
                "auth read too small: want {} got {count}",
                d.len()
            ))),
            other => Err(failed(unexpected(other))),
        }
    }

    async fn write(&mut self, data: &[u8]) -> FsResult<u32> {
        if self.done.is_some() {
            return Err(Ename::from("authentication already done"));
        }
        match self.rpc.call("write", data).await.map_err(failed)? {
            Reply::Ok(_) => Ok(data.len() as u32),
            other => Err(failed(unexpected(other))),
        }
    }
}

impl<F: Filesystem> Filesystem for Authed<F> {
    type Fid = AFid<F::Fid>;

    async fn auth(&self, caller: &Caller, aname: &str) -> FsResult<(Self::Fid, Qid)> {
        if caller.uname.is_empty() {
            return Err(Ename::from("empty user name"));
        }
        let rpc = Rpc::open().await.map_err(failed)?;
        match rpc
            .call("start", self.keyspec.as_bytes())
            .await
            .map_err(failed)?
        {
            Reply::Ok(_) => {}
            other => return Err(failed(unexpected(other))),
        }
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let qid = Qid {
            ty: QTAUTH,
            vers: 0,
            path: (1 << 63) | NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let conv = Conv {
            rpc,
            aname: aname.to_string(),
            done: None,
        };
        Ok((AFid::Auth(Box::new(tokio::sync::Mutex::new(conv))), qid))
    }

    async fn attach(
        &self,
        caller: &Caller,
        aname: &str,
        afid: Option<&Self::Fid>,
    ) -> FsResult<(Self::Fid, Qid)> {
        let conv = match afid {
            None => return Err(Ename::from("authentication required")),
            Some(AFid::File(_)) => return Err(Ename::from(ENOTAUTHFID)),
            Some(AFid::Auth(c)) => c,
        };
        let mut conv = conv.lock().await;
        if conv.done.is_none() {
            // The client may attach straight after its last write: the server's
            // side may have finished without a read to say so.
            conv.read(0).await?;
        }
        let Some(ai) = &conv.done else {
            return Err(Ename::from("authentication not complete"));
        };
        if ai.cuid != *caller.uname {
            return Err(Ename::from(format!(
                "auth uname mismatch: {} vs {}",
                ai.cuid, caller.uname
            )));
        }
        if conv.aname != aname {
            return Err(Ename::from(format!(
                "auth aname mismatch: {} vs {aname}",
                conv.aname
            )));
        }
        drop(conv);
        let (f, q) = self.inner.attach(caller, aname, None).await?;
        Ok((AFid::File(f), q))
    }

    async fn walk(
        &self,
        caller: &Caller,
        fid: &Self::Fid,
        names: &[String],
    ) -> FsResult<Walked<Self::Fid>> {
        let w = self.inner.walk(caller, file(fid)?, names).await?;
        Ok(Walked {
            qids: w.qids,
            fid: w.fid.map(AFid::File),
        })
    }

    async fn open(
        &self,
        caller: &Caller,
        fid: &Self::Fid,
        mode: u8,
    ) -> FsResult<Opened<Self::Fid>> {
        let o = self.inner.open(caller, file(fid)?, mode).await?;
        Ok(Opened {
            fid: AFid::File(o.fid),
            qid: o.qid,
            iounit: o.iounit,
        })
    }

    async fn create(
        &self,
        caller: &Caller,
        fid: &Self::Fid,
        name: &str,
        perm: u32,
        mode: u8,
    ) -> FsResult<Opened<Self::Fid>> {
        let o = self
            .inner
            .create(caller, file(fid)?, name, perm, mode)
            .await?;
        Ok(Opened {
            fid: AFid::File(o.fid),
            qid: o.qid,
            iounit: o.iounit,
        })
    }

    async fn read(
        &self,
        caller: &Caller,
        fid: &Self::Fid,
        offset: u64,
        count: u32,
    ) -> FsResult<Data> {
        match fid {
            AFid::File(f) => self.inner.read(caller, f, offset, count).await,
            AFid::Auth(c) => Ok(Data::Bytes(c.lock().await.read(count).await?)),
        }
    }

    async fn readdir(&self, caller: &Caller, fid: &Self::Fid) -> FsResult<Vec<Stat>> {
        self.inner.readdir(caller, file(fid)?).await
    }

    async fn write(
        &self,
        caller: &Caller,
        fid: &Self::Fid,
        offset: u64,
        data: Bytes,
    ) -> FsResult<u32> {
        match fid {
            AFid::File(f) => self.inner.write(caller, f, offset, data).await,
            AFid::Auth(c) => c.lock().await.write(&data).await,
        }
    }

    async fn stat(&self, caller: &Caller, fid: &Self::Fid) -> FsResult<Stat> {
        self.inner.stat(caller, file(fid)?).await
    }

    async fn wstat(&self, caller: &Caller, fid: &Self::Fid, stat: &Stat) -> FsResult<()> {
        self.inner.wstat(caller, file(fid)?, stat).await
    }

    async fn remove(&self, caller: &Caller, fid: &Self::Fid) -> FsResult<()> {
        self.inner.remove(caller, file(fid)?).await
    }

    fn write_file(&self, fid: &Self::Fid) -> Option<Arc<std::fs::File>> {
        match fid {
            AFid::File(f) => self.inner.write_file(f),
            AFid::Auth(_) => None,
        }
    }

    async fn clunk(&self, caller: &Caller, fid: &Self::Fid) {
        if let AFid::File(f) = fid {
            self.inner.clunk(caller, f).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies() {
        assert_eq!(Reply::parse(b"ok"), Some(Reply::Ok(vec![])));
        assert_eq!(Reply::parse(b"ok \x00\x01"), Some(Reply::Ok(vec![0, 1])));
        assert_eq!(Reply::parse(b"done haveai"), Some(Reply::Done));
        assert_eq!(Reply::parse(b"toosmall 141"), Some(Reply::TooSmall(141)));
        assert_eq!(
            Reply::parse(b"error no key found"),
            Some(Reply::Error("no key found".into()))
        );
        assert_eq!(Reply::parse(b"toosmall x"), None);
        assert_eq!(Reply::parse(b"what"), None);
    }

    #[test]
    fn authinfo() {
        let mut b = Vec::new();
        for f in [&b"glenda"[..], b"bootes", b"", &[1, 2, 3, 4, 5, 6, 7, 8]] {
            b.extend_from_slice(&(f.len() as u16).to_le_bytes());
            b.extend_from_slice(f);
        }
        let ai = AuthInfo::parse(&b).expect("parses");
        assert_eq!(ai.cuid, "glenda");
        assert_eq!(ai.suid, "bootes");
        assert_eq!(ai.secret, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(!format!("{ai:?}").contains("1, 2"));
        for n in 0..b.len() {
            assert_eq!(AuthInfo::parse(&b[..n]), None, "truncated at {n}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_reply(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = Reply::parse(&b);
            let _ = AuthInfo::parse(&b);
        }
    }
}

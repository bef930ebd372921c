//! Plan 9 dial strings and the connections they make.
//!
//! | string | means |
//! |---|---|
//! | `tcp!host!port`, `net!host!port` | TCP; port may be a service name (`9fs` is 564) |
//! | `tcp!host` | TCP to the `9fs` port |
//! | `unix!/path` | a Unix-domain socket |
//! | `name` (no `!`, no `/`) | the service `name` posted in `$NAMESPACE` |
//! | `/path`, `./path` | a Unix-domain socket (a convenience) |
//! | `tls!host!port` | TLS over TCP (see [`crate::tls`]); `tls!host` is port 564 |
//! | `tls!host!port!fp=HEX` | the same, accepting only the server whose certificate has this SHA-256 fingerprint |
//! | `tls!host!port!tofu` | the same, trusting an unknown server on first use and remembering it |
//!
//! For announcing, the host `*` means every local address.

use crate::ns;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a dial string cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("bad dial string '{0}'")]
    Syntax(String),
    #[error("unknown network '{0}'")]
    Network(String),
    #[error("unknown service '{0}'")]
    Service(String),
    #[error(transparent)]
    Ns(#[from] ns::NsError),
    #[error("{addr}: {}", io_ename(err))]
    Io { addr: String, err: io::Error },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// A host error in Plan 9's words.
fn io_ename(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => crate::errstr::from_errno(n).to_string(),
        None => e.to_string(),
    }
}

/// A parsed address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addr {
    Unix(PathBuf),
    Tcp { host: String, port: u16 },
    Tls(crate::tls::Target),
}

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Addr::Unix(p) => write!(f, "unix!{}", p.display()),
            Addr::Tcp { host, port } => write!(f, "tcp!{host}!{port}"),
            Addr::Tls(t) => write!(f, "tls!{}!{}", t.host, t.port),
        }
    }
}

/// Plan 9 service names this library knows (from /lib/ndb/common).
pub fn service_port(s: &str) -> Option<u16> {
    if let Ok(n) = s.parse::<u16>() {
        return Some(n);
    }
    Some(match s {
        "9fs" | "9pfs" => 564,
        "ticket" => 567,
        "secstore" => 5356,
        "styx" => 6666,
        "exportfs" => 17007,
        "rexexec" => 17009,
        "ncpu" => 17010,
        "cpu" => 17013,
        "rcpu" => 17019,
        "venti" => 17034,
        "ssh" => 22,
        "http" => 80,
        "https" => 443,
        _ => return None,
    })
}

/// Parse a dial string; a bare name is a service in `$NAMESPACE`.
pub fn parse(s: &str) -> Result<Addr, DialError> {
    if !s.contains('!') {
        if s.starts_with('/') || s.starts_with("./") {
            return Ok(Addr::Unix(PathBuf::from(s)));
        }
        return Ok(Addr::Unix(ns::service_path(s)?));
    }
    parse_net(s, "9fs")
}

/// Parse a dial string the way plan9port's netmkaddr completes one: a bare name is a
/// host, reached over TCP at `defsrv`. This is what `srv` and `9p -a` take.
pub fn parse_host(s: &str, defsrv: &str) -> Result<Addr, DialError> {
    if !s.contains('!') {
        if s.starts_with('/') || s.starts_with("./") {
            return Ok(Addr::Unix(PathBuf::from(s)));
        }
        return parse_net(&format!("tcp!{s}"), defsrv);
    }
    parse_net(s, defsrv)
}

fn parse_net(s: &str, defsrv: &str) -> Result<Addr, DialError> {
    let mut f = s.splitn(3, '!');
    let net = f.next().unwrap_or_default();
    let host = f.next().unwrap_or_default();
    let svc = f.next();
    match net {
        "unix" => {
            if host.is_empty() || svc.is_some() {
                return Err(DialError::Syntax(s.into()));
            }
            Ok(Addr::Unix(PathBuf::from(host)))
        }
        "tcp" | "net" | "tcp4" | "tcp6" => {
            if host.is_empty() {
                return Err(DialError::Syntax(s.into()));
            }
            let svc = svc.unwrap_or(defsrv);
            let port = service_port(svc).ok_or_else(|| DialError::Service(svc.into()))?;
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            Ok(Addr::Tcp { host, port })
        }
        "tls" => parse_tls(s),
        "" => Err(DialError::Syntax(s.into())),
        other => Err(DialError::Network(other.into())),
    }
}

/// `tls!host[!port][!fp=HEX]...[!tofu]`.
fn parse_tls(s: &str) -> Result<Addr, DialError> {
    let mut f = s.split('!').skip(1);
    let host = f.next().unwrap_or_default();
    if host.is_empty() {
        return Err(DialError::Syntax(s.into()));
    }
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let mut t = crate::tls::Target {
        host,
        port: crate::tls::DEFAULT_PORT,
        pins: Vec::new(),
        tofu: false,
    };
    for (i, attr) in f.enumerate() {
        if let Some(fp) = attr.strip_prefix("fp=") {
            let fp = crate::tls::normalize_fingerprint(fp).ok_or_else(|| {
                DialError::Syntax(format!("{s}: fp= wants 64 hex digits of sha256"))
            })?;
            t.pins.push(fp);
        } else if attr == "tofu" {
            t.tofu = true;
        } else if i == 0 {
            t.port = service_port(attr).ok_or_else(|| DialError::Service(attr.into()))?;
        } else {
            return Err(DialError::Syntax(s.into()));
        }
    }
    Ok(Addr::Tls(t))
}

/// A boxed reading half of a connection.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// A boxed writing half of a connection.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// The writing half of a connection. Sockets can also send a range of a file
/// straight from the page cache ([`WriteHalf::send_file`]).
pub enum WriteHalf {
    Unix(tokio::net::unix::OwnedWriteHalf),
    Tcp(tokio::net::tcp::OwnedWriteHalf),
    Other(BoxWrite),
}

impl WriteHalf {
    /// Send up to `len` bytes of `file` from `offset`; returns how many went (0 at the
    /// end of the file). Sockets use sendfile(2); anything else, or a file sendfile
    /// cannot take, is read and written.
    pub async fn send_file(
        &mut self,
        file: &std::fs::File,
        offset: u64,
        len: usize,
    ) -> io::Result<usize> {
        // Wait until the socket can take more, then send; again if it filled up.
        macro_rules! on_socket {
            ($s:expr) => {{
                let s = $s;
                loop {
                    s.writable().await?;
                    match s.try_io(tokio::io::Interest::WRITABLE, || {
                        sendfile(s.as_raw_fd(), file, offset, len)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => break r,
                    }
                }
            }};
        }
        let sent = match self {
            WriteHalf::Unix(w) => on_socket!(AsRef::<tokio::net::UnixStream>::as_ref(w)),
            WriteHalf::Tcp(w) => on_socket!(AsRef::<tokio::net::TcpStream>::as_ref(w)),
            WriteHalf::Other(_) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        };
        match sent {
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                ) => {}
            r => return r,
        }
        use std::os::unix::fs::FileExt;
        use tokio::io::AsyncWriteExt;
        let mut buf = vec![0u8; len.min(1 << 20)];
        let n = loop {
            match file.read_at(&mut buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.write_all(&buf[..n]).await?;
        Ok(n)
    }
}

fn sendfile(out: i32, file: &std::fs::File, offset: u64, len: usize) -> io::Result<usize> {
    let mut off = offset as libc::off_t;
    // SAFETY: sendfile between two descriptors we hold, with a valid offset pointer.
    let n = unsafe { libc::sendfile(out, file.as_raw_fd(), &mut off, len) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

macro_rules! delegate_write {
    ($self:ident, $w:ident => $e:expr) => {
        match $self.get_mut() {
            WriteHalf::Unix($w) => $e,
            WriteHalf::Tcp($w) => $e,
            WriteHalf::Other($w) => $e,
        }
    };
}

impl AsyncWrite for WriteHalf {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        delegate_write!(self, w => Pin::new(w).poll_write(cx, b))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate_write!(self, w => Pin::new(w).poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        match self {
            WriteHalf::Unix(w) => w.is_write_vectored(),
            WriteHalf::Tcp(w) => w.is_write_vectored(),
            WriteHalf::Other(w) => w.is_write_vectored(),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_write!(self, w => Pin::new(w).poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate_write!(self, w => Pin::new(w).poll_shutdown(cx))
    }
}

/// The reading half of a connection. Sockets can also move bytes straight into a pipe
/// ([`ReadHalf::splice_to_pipe`]), on their way to a file.
pub enum ReadHalf {
    Unix(tokio::net::unix::OwnedReadHalf),
    Tcp(tokio::net::tcp::OwnedReadHalf),
    Other(BoxRead),
}

impl ReadHalf {
    /// Move up to `len` bytes from the socket into the pipe `pipe_w` with splice(2),
    /// waiting for them if none are there; `None` if this is not a socket. Returns 0 at
    /// the end of the stream.
    pub async fn splice_to_pipe(&mut self, pipe_w: i32, len: usize) -> Option<io::Result<usize>> {
        macro_rules! on_socket {
            ($s:expr) => {{
                let s = $s;
                loop {
                    if let Err(e) = s.readable().await {
                        return Some(Err(e));
                    }
                    match s.try_io(tokio::io::Interest::READABLE, || {
                        splice(s.as_raw_fd(), pipe_w, len)
                    }) {
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        r => return Some(r),
                    }
                }
            }};
        }
        match self {
            ReadHalf::Unix(r) => on_socket!(AsRef::<tokio::net::UnixStream>::as_ref(r)),
            ReadHalf::Tcp(r) => on_socket!(AsRef::<tokio::net::TcpStream>::as_ref(r)),
            ReadHalf::Other(_) => None,
        }
    }
}

/// splice(2) without offsets, non-blocking on the pipe.
pub fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    // SAFETY: splice between descriptors the caller holds, with no offset pointers.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Unix(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tcp(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Other(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

/// A byte stream to a 9P peer, split into its two directions.
pub struct Conn {
    pub read: ReadHalf,
    pub write: WriteHalf,
    /// Who is on the other end, for messages.
    pub peer: String,
}

impl Conn {
    pub fn from_unix(s: tokio::net::UnixStream, peer: impl Into<String>) -> Conn {
        let (r, w) = s.into_split();
        Conn {
            read: ReadHalf::Unix(r),
            write: WriteHalf::Unix(w),
            peer: peer.into(),
        }
    }

    pub fn from_tcp(s: tokio::net::TcpStream, peer: impl Into<String>) -> Conn {
        let _ = s.set_nodelay(true);
        let (r, w) = s.into_split();
        Conn {
            read: ReadHalf::Tcp(r),
            write: WriteHalf::Tcp(w),
            peer: peer.into(),
        }
    }

    /// A connection over any byte stream (TLS, say); its halves share it.
    pub fn from_stream<S>(s: S, peer: impl Into<String>) -> Conn
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(s);
        Conn {
            read: ReadHalf::Other(Box::new(r)),
            write: WriteHalf::Other(Box::new(w)),
            peer: peer.into(),
        }
    }

    /// A connection over two file descriptors (standard input and output, say): each
    /// may be a socket or a pipe. Must be called inside a tokio runtime.
    pub fn from_fds(rfd: OwnedFd, wfd: OwnedFd, peer: impl Into<String>) -> io::Result<Conn> {
        Ok(Conn {
            read: ReadHalf::Other(Box::new(FdStream::new(rfd)?)),
            write: WriteHalf::Other(Box::new(FdStream::new(wfd)?)),
            peer: peer.into(),
        })
    }
}

/// Connect to `host`'s `port` without a runtime: each of the host's addresses in
/// turn, each given up on after `timeout` (a host that never answers is not waited
/// for), with no Nagle delay (9P and the auth protocols are small messages each way).
pub fn connect_tcp(host: &str, port: u16, timeout: Duration) -> io::Result<std::net::TcpStream> {
    use std::net::ToSocketAddrs;
    let mut last = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
    for a in (host, port).to_socket_addrs()? {
        match std::net::TcpStream::connect_timeout(&a, timeout) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Dial a parsed address. Must be called inside a tokio runtime.
pub async fn dial_addr(a: &Addr) -> Result<Conn, DialError> {
    let name = a.to_string();
    match a {
        Addr::Unix(p) => {
            let s = tokio::net::UnixStream::connect(p)
                .await
                .map_err(|err| DialError::Io {
                    addr: name.clone(),
                    err,
                })?;
            Ok(Conn::from_unix(s, name))
        }
        Addr::Tcp { host, port } => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|err| DialError::Io {
                    addr: name.clone(),
                    err,
                })?;
            Ok(Conn::from_tcp(s, name))
        }
        Addr::Tls(t) => {
            let s = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
                .await
                .map_err(|err| DialError::Io {
                    addr: name.clone(),
                    err,
                })?;
            let _ = s.set_nodelay(true);
            Ok(crate::tls::connect(s, t).await?.into_conn(name))
        }
    }
}

/// Dial a dial string (a bare name is a service in `$NAMESPACE`).
pub async fn dial(s: &str) -> Result<Conn, DialError> {
    dial_addr(&parse(s)?).await
}

/// A listening endpoint, bound before any runtime exists so that a server can post it
/// and then go into the background.
pub enum Listener {
    Unix(std::os::unix::net::UnixListener, Option<ns::Posted>),
    Tcp(std::net::TcpListener),
    Tls(std::net::TcpListener, crate::tls::ServerTls),
}

impl Listener {
    /// The SHA-256 fingerprint of the certificate a TLS listener presents.
    pub fn fingerprint(&self) -> Option<&str> {
        match self {
            Listener::Tls(_, t) => Some(&t.fingerprint),
            _ => None,
        }
    }

    /// Where this listener is, as a dial string.
    pub fn addr(&self) -> String {
        match self {
            Listener::Unix(l, _) => match l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.to_path_buf()))
            {
                Some(p) => format!("unix!{}", p.display()),
                None => "unix!?".into(),
            },
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("tcp!{}!{}", a.ip(), a.port()),
                Err(_) => "tcp!?".into(),
            },
            Listener::Tls(l, _) => match l.local_addr() {
                Ok(a) => format!("tls!{}!{}", a.ip(), a.port()),
                Err(_) => "tls!?".into(),
            },
        }
    }

    /// Turn into an accepting tokio listener. Must be called inside a runtime.
    pub fn into_async(self) -> io::Result<AsyncListener> {
        match self {
            Listener::Unix(l, posted) => {
                l.set_nonblocking(true)?;
                Ok(AsyncListener::Unix(
                    tokio::net::UnixListener::from_std(l)?,
                    posted,
                ))
            }
            Listener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Ok(AsyncListener::Tcp(tokio::net::TcpListener::from_std(l)?))
            }
            Listener::Tls(l, t) => {
                l.set_nonblocking(true)?;
                Ok(AsyncListener::Tls(
                    tokio::net::TcpListener::from_std(l)?,
                    crate::tls::Acceptor::new(t.config),
                ))
            }
        }
    }
}

/// A listener inside a runtime.
pub enum AsyncListener {
    Unix(tokio::net::UnixListener, Option<ns::Posted>),
    Tcp(tokio::net::TcpListener),
    Tls(tokio::net::TcpListener, crate::tls::Acceptor),
}

/// A connection accepted but perhaps not ready: a TLS one still has its handshake to
/// do, which [`Accepted::finish`] does (in the connection's own task, so that a slow
/// client holds up nobody else).
pub enum Accepted {
    Ready(Conn),
    Tls(crate::tls::Accepting, String),
}

impl Accepted {
    pub async fn finish(self) -> io::Result<Conn> {
        match self {
            Accepted::Ready(c) => Ok(c),
            Accepted::Tls(hs, peer) => Ok(hs.await?.into_conn(peer)),
        }
    }
}

impl AsyncListener {
    /// Accept a connection, handshake and all.
    pub async fn accept(&self) -> io::Result<Conn> {
        self.accept_pending().await?.finish().await
    }

    /// Accept a connection, leaving a TLS handshake to [`Accepted::finish`].
    pub async fn accept_pending(&self) -> io::Result<Accepted> {
        match self {
            AsyncListener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                Ok(Accepted::Ready(Conn::from_unix(s, "unix")))
            }
            AsyncListener::Tcp(l) => {
                let (s, a) = l.accept().await?;
                Ok(Accepted::Ready(Conn::from_tcp(
                    s,
                    format!("tcp!{}!{}", a.ip(), a.port()),
                )))
            }
            AsyncListener::Tls(l, acceptor) => {
                let (s, a) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok(Accepted::Tls(
                    acceptor.accept(s),
                    format!("tls!{}!{}", a.ip(), a.port()),
                ))
            }
        }
    }
}

/// Announce (bind and listen on) a dial string. A bare name posts the service in
/// `$NAMESPACE`; `tcp!*!port` listens on every address.
pub fn announce(s: &str) -> Result<Listener, DialError> {
    if !s.contains('!') && !s.starts_with('/') && !s.starts_with("./") {
        let posted = ns::post(s)?;
        let l = posted.try_clone_listener().map_err(|err| DialError::Io {
            addr: s.into(),
            err,
        })?;
        return Ok(Listener::Unix(l, Some(posted)));
    }
    announce_addr(s, parse_host(s, "9fs")?)
}

/// Announce a dial string in which a bare name is a host (`-a` of the servers), as
/// plan9port's netmkaddr completes it: `name` is `tcp!name!9fs`. A `tls!` address
/// presents the user's own certificate (made if need be) and asks for no client's.
pub fn announce_host(s: &str) -> Result<Listener, DialError> {
    announce_host_tls(s, &crate::tls::ServerOpts::default())
}

/// [`announce_host`], with the certificate, key and allowed clients for `tls!`.
pub fn announce_host_tls(s: &str, tls: &crate::tls::ServerOpts) -> Result<Listener, DialError> {
    match parse_host(s, "9fs")? {
        Addr::Tls(t) => {
            if !t.pins.is_empty() || t.tofu {
                return Err(DialError::Syntax(format!(
                    "{s}: fp= and tofu are for dialing"
                )));
            }
            // The certificate first: once the port accepts, it is there to be read.
            let cfg = crate::tls::ServerTls::new(tls)?;
            Ok(Listener::Tls(bind_tcp(s, t.host, t.port)?, cfg))
        }
        a => announce_addr(s, a),
    }
}

fn bind_tcp(s: &str, host: String, port: u16) -> Result<std::net::TcpListener, DialError> {
    let host = if host == "*" { "::".to_string() } else { host };
    std::net::TcpListener::bind((host.as_str(), port))
        .or_else(|e| {
            if host == "::" {
                std::net::TcpListener::bind(("0.0.0.0", port))
            } else {
                Err(e)
            }
        })
        .map_err(|err| DialError::Io {
            addr: s.into(),
            err,
        })
}

fn announce_addr(s: &str, a: Addr) -> Result<Listener, DialError> {
    match a {
        Addr::Unix(p) => {
            let posted = ns::post_at(&p, s)?;
            let l = posted.try_clone_listener().map_err(|err| DialError::Io {
                addr: s.into(),
                err,
            })?;
            Ok(Listener::Unix(l, Some(posted)))
        }
        Addr::Tcp { host, port } => Ok(Listener::Tcp(bind_tcp(s, host, port)?)),
        Addr::Tls(_) => announce_host_tls(s, &crate::tls::ServerOpts::default()),
    }
}

/// A nonblocking byte stream over a pipe, socket or terminal descriptor.
struct FdStream {
    fd: tokio::io::unix::AsyncFd<OwnedFd>,
}

impl FdStream {
    fn new(fd: OwnedFd) -> io::Result<FdStream> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        let fl = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if fl < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(raw, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: an OwnedFd stays open, and the same descriptor, for as long as the
        // AsyncFd that owns it.
        let fd = unsafe { tokio::io::unix::AsyncFd::register(fd)? };
        Ok(FdStream { fd })
    }
}

impl AsyncRead for FdStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut guard = match self.fd.poll_read_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            let unfilled = buf.initialize_unfilled();
            let res = guard.try_io(|fd| {
                // SAFETY: reading into an initialised buffer we hold exclusively.
                let n = unsafe {
                    libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), unfilled.len())
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for FdStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = match self.fd.poll_write_ready(cx) {
                Poll::Ready(g) => g?,
                Poll::Pending => return Poll::Pending,
            };
            let res = guard.try_io(|fd| {
                // SAFETY: writing from a slice we borrow.
                let n = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), b.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match res {
                Ok(r) => return Poll::Ready(r),
                Err(_would_block) => continue,
            }
        }
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Duplicate a raw descriptor into an owned one (for serving on stdin and stdout).
pub fn dup_fd(fd: i32) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor we then own.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: n is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_strings() {
        assert_eq!(
            parse("tcp!example.org!9fs").unwrap(),
            Addr::Tcp {
                host: "example.org".into(),
                port: 564
            }
        );
        assert_eq!(
            parse("net!h!1234").unwrap(),
            Addr::Tcp {
                host: "h".into(),
                port: 1234
            }
        );
        assert_eq!(
            parse("tcp!h").unwrap(),
            Addr::Tcp {
                host: "h".into(),
                port: 564
            }
        );
        assert_eq!(
            parse("tcp!::1!564").unwrap(),
            Addr::Tcp {
                host: "::1".into(),
                port: 564
            }
        );
        assert_eq!(parse("unix!/tmp/s").unwrap(), Addr::Unix("/tmp/s".into()));
        assert!(matches!(parse("tcp!h!nosuch"), Err(DialError::Service(_))));
        assert!(matches!(parse("il!h!564"), Err(DialError::Network(_))));
        assert!(matches!(parse("unix!"), Err(DialError::Syntax(_))));
        let fp = "ab".repeat(32);
        assert_eq!(
            parse(&format!("tls!h!5640!fp={}", fp.to_uppercase())).unwrap(),
            Addr::Tls(crate::tls::Target {
                host: "h".into(),
                port: 5640,
                pins: vec![fp.clone()],
                tofu: false
            })
        );
        assert_eq!(
            parse("tls!h!tofu").unwrap(),
            Addr::Tls(crate::tls::Target {
                host: "h".into(),
                port: 564,
                pins: vec![],
                tofu: true
            })
        );
        assert!(matches!(parse("tls!h!1!fp=12"), Err(DialError::Syntax(_))));
        assert!(matches!(parse("tls!h!1!what"), Err(DialError::Syntax(_))));
        assert!(matches!(parse("tls!"), Err(DialError::Syntax(_))));
        assert_eq!(
            parse_host("somehost", "9fs").unwrap(),
            Addr::Tcp {
                host: "somehost".into(),
                port: 564
            }
        );
    }
}

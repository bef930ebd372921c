//! srv: dial a 9P server and post it in $NAMESPACE for any number of local clients.
//! See docs/srv.md.

/// Servers and clients churn through message buffers; mimalloc recycles them without
/// returning pages to the kernel after every message.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use lib9::client::{Client, Options};
use lib9::dial::{self, Addr, Conn};
use lib9::fcall::{self, Fcall, Msg, NOTAG};
use srv::daemon::{self, fatal};
use srv::mux::Mux;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;

/// Dial a 9P server and post it in $NAMESPACE, sharing the one connection among any
/// number of local clients (docs/srv.md).
///
/// ADDR is a dial string; a bare name is a host reached at tcp!name!9fs. The service is
/// posted as NAME, by default ADDR itself. srv goes into the background once the
/// service is posted, unless -f is given, and exits when the server hangs up.
#[derive(Parser)]
#[command(name = "srv", version)]
struct Args {
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
    /// Print every message from local clients on standard error
    #[arg(short = 'D')]
    debug: bool,
    /// Propose this msize to the server
    #[arg(short = 'm', value_name = "msize", default_value_t = lib9::client::DEFAULT_MSIZE)]
    msize: u32,
    /// The server's address
    addr: String,
    /// The name to post
    name: Option<String>,
}

/// Connect without a runtime (so that the process can still fork) and check that a 9P
/// server answers, so that a wrong address is reported here and not in the background.
fn connect_sync(a: &Addr, msize: u32) -> Result<OwnedFd, String> {
    let mut s: Box<dyn ReadWrite> = match a {
        Addr::Unix(p) => Box::new(
            std::os::unix::net::UnixStream::connect(p).map_err(|e| format!("dial {a}: {e}"))?,
        ),
        Addr::Tcp { host, port } => Box::new(
            std::net::TcpStream::connect((host.as_str(), *port))
                .map_err(|e| format!("dial {a}: {e}"))?,
        ),
        Addr::Tls(_) => return Err(format!("dial {a}: tls needs a runtime")),
    };
    let m = Msg::new(
        NOTAG,
        Fcall::Tversion {
            msize,
            version: fcall::VERSION9P.into(),
        },
    );
    let b = m.to_bytes().map_err(|e| e.to_string())?;
    s.write_all(&b).map_err(|e| format!("{a}: {e}"))?;
    let mut hdr = [0u8; 4];
    s.read_exact(&mut hdr)
        .map_err(|e| format!("{a}: no 9P server there: {e}"))?;
    let n = u32::from_le_bytes(hdr);
    if !(7..=fcall::MAX_MSIZE).contains(&n) {
        return Err(format!("{a}: no 9P server there"));
    }
    let mut rest = vec![0u8; n as usize - 4];
    s.read_exact(&mut rest)
        .map_err(|e| format!("{a}: no 9P server there: {e}"))?;
    let mut frame = hdr.to_vec();
    frame.extend_from_slice(&rest);
    match fcall::decode(frame.into(), fcall::MAX_MSIZE) {
        Ok(Msg {
            body: Fcall::Rversion { version, .. },
            ..
        }) if version == fcall::VERSION9P => Ok(s.into_fd()),
        Ok(Msg {
            body: Fcall::Rversion { version, .. },
            ..
        }) => Err(format!("{a}: server speaks '{version}', not 9P2000")),
        Ok(Msg {
            body: Fcall::Rerror { ename },
            ..
        }) => Err(format!("{a}: version: {ename}")),
        _ => Err(format!("{a}: no 9P server there")),
    }
}

/// Dial a TLS address and speak version to it, on a runtime that is gone on return.
fn check_tls(a: &Addr, msize: u32) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let conn = dial::dial_addr(a).await.map_err(|e| e.to_string())?;
        Client::connect(
            conn,
            Options {
                msize,
                ..Options::default()
            },
        )
        .await
        .map(drop)
        .map_err(|e| format!("{a}: {e}"))
    })
}

trait ReadWrite: Read + Write {
    fn into_fd(self: Box<Self>) -> OwnedFd;
}
impl ReadWrite for std::os::unix::net::UnixStream {
    fn into_fd(self: Box<Self>) -> OwnedFd {
        (*self).into()
    }
}
impl ReadWrite for std::net::TcpStream {
    fn into_fd(self: Box<Self>) -> OwnedFd {
        (*self).into()
    }
}

fn main() {
    let a: Args = daemon::args();
    let addr = dial::parse_host(&a.addr, "9fs").unwrap_or_else(|e| fatal("srv", e));
    let fd = match addr {
        // TLS needs a runtime, which must be gone before the fork: check the server
        // (certificate and 9P) on a connection of its own now, and dial again later.
        Addr::Tls(_) => {
            check_tls(&addr, a.msize).unwrap_or_else(|e| fatal("srv", e));
            None
        }
        _ => Some(connect_sync(&addr, a.msize).unwrap_or_else(|e| fatal("srv", e))),
    };
    let name = a.name.clone().unwrap_or_else(|| a.addr.clone());
    let listener = dial::announce(&name).unwrap_or_else(|e| fatal("srv", e));
    if !a.foreground {
        daemon::background().unwrap_or_else(|e| fatal("srv", e));
    }
    let rt = daemon::runtime().unwrap_or_else(|e| fatal("srv", e));
    let res: Result<(), String> = rt.block_on(async move {
        let tcp = matches!(addr, Addr::Tcp { .. });
        let conn = if let Some(fd) = fd {
            if tcp {
                let s = std::net::TcpStream::from(fd);
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                Conn::from_tcp(
                    tokio::net::TcpStream::from_std(s).map_err(|e| e.to_string())?,
                    addr.to_string(),
                )
            } else {
                let s = std::os::unix::net::UnixStream::from(fd);
                s.set_nonblocking(true).map_err(|e| e.to_string())?;
                Conn::from_unix(
                    tokio::net::UnixStream::from_std(s).map_err(|e| e.to_string())?,
                    addr.to_string(),
                )
            }
        } else {
            dial::dial_addr(&addr).await.map_err(|e| e.to_string())?
        };
        let up = Client::connect(
            conn,
            Options {
                msize: a.msize,
                ..Options::default()
            },
        )
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
        let mux = Mux::new(up, a.debug);
        let l = listener.into_async().map_err(|e| e.to_string())?;
        tokio::select! {
            r = mux.serve(l) => r.map_err(|e| e.to_string()),
            _ = daemon::stop_signal() => Ok(()),
        }
    });
    if let Err(e) = res {
        fatal("srv", e);
    }
}

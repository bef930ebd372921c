//! A client of the plumber (libplumb's part): send messages, open a port and read
//! the messages sent to it. The plumber is the service `plumb` in `$NAMESPACE`
//! (another dial string may be given).

use crate::msg::{MAX_MESSAGE, Message, MsgError, Unpacked, unpack_partial};
use bytes::Bytes;
use lib9::blocking::{Client, Fid};
use lib9::fcall::{OREAD, OWRITE};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("{0}")]
    Nine(#[from] lib9::client::Error),
    #[error("{0}")]
    Msg(#[from] MsgError),
    #[error("port closed")]
    Eof,
}

pub type Result<T> = std::result::Result<T, Error>;

/// The service name the plumber posts.
pub const SERVICE: &str = "plumb";

/// A connection to the plumber.
pub struct Plumb {
    root: Fid,
    msize: u32,
    // Dropped after the fids made from it.
    _c: Client,
}

impl Plumb {
    /// Dial the plumber (`plumb` in $NAMESPACE).
    pub fn connect() -> Result<Plumb> {
        Plumb::dial(SERVICE)
    }

    /// Dial the plumber at a dial string.
    pub fn dial(addr: &str) -> Result<Plumb> {
        let c = Client::dial(addr)?;
        let root = c.attach(&lib9::ns::user(), "")?;
        let msize = c.msize();
        Ok(Plumb { root, msize, _c: c })
    }

    /// Open `file` (usually `send`) for sending messages.
    pub fn sender(&self, file: &str) -> Result<Sender> {
        let mut f = self.root.walk(file)?;
        f.open(OWRITE)?;
        let chunk = match f.iounit() {
            0 => self.msize.saturating_sub(lib9::fcall::IOHDRSZ),
            n => n,
        }
        .max(1) as usize;
        Ok(Sender { f, chunk })
    }

    /// Send one message to `send`.
    pub fn send(&self, m: &Message) -> Result<()> {
        self.sender("send")?.send(m)
    }

    /// Open a port for reading.
    pub fn open_port(&self, port: &str) -> Result<PortReader> {
        let mut f = self.root.walk(port)?;
        f.open(OREAD)?;
        Ok(PortReader { f })
    }
}

/// An open `send` file.
pub struct Sender {
    f: Fid,
    chunk: usize,
}

impl Sender {
    /// Send one message; the plumber's refusal is the error.
    pub fn send(&self, m: &Message) -> Result<()> {
        self.send_packed(Bytes::from(m.pack()))
    }

    /// Send a message already packed (as many writes as it takes).
    pub fn send_packed(&self, b: Bytes) -> Result<()> {
        let mut off = 0;
        while off < b.len() || b.is_empty() {
            let end = (off + self.chunk).min(b.len());
            let n = self.f.write(off as u64, b.slice(off..end))? as usize;
            if n == 0 {
                break;
            }
            off += n;
        }
        Ok(())
    }
}

/// An open port.
pub struct PortReader {
    f: Fid,
}

impl PortReader {
    /// The next message, waiting for one.
    pub fn recv(&self) -> Result<Message> {
        let mut buf: Vec<u8> = self.f.read(0, 8192)?.to_vec();
        if buf.is_empty() {
            return Err(Error::Eof);
        }
        loop {
            match unpack_partial(&buf)? {
                Unpacked::Message(m) => return Ok(m),
                Unpacked::More(n) => {
                    if buf.len() + n > MAX_MESSAGE + 4096 {
                        return Err(MsgError::TooLarge.into());
                    }
                    let b = self.f.read(0, n.min(1 << 20) as u32)?;
                    if b.is_empty() {
                        return Err(Error::Eof);
                    }
                    buf.extend_from_slice(&b);
                }
            }
        }
    }
}

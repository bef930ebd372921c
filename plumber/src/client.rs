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
        Ok(PortReader::new(f))
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

/// Reads of a port kept in flight by a [`PortReader`]: while the program handles one
/// message the next ones are already on their way, so a busy port costs a read's
/// round trip per batch of messages rather than per message.
pub const READ_AHEAD: usize = 8;

/// The most a read of a port asks for: plan9port's readers' size.
const READ_SIZE: u32 = 8192;

/// An open port.
///
/// Messages come in the order the plumber sent them, whichever of the reads in
/// flight each came in: a reply of the plumber's holds part of one message only, and
/// the replies are taken in the order they arrived (see [`lib9::client::Client::replies`]).
/// That relies on the plumber answering reads in the order it takes messages from
/// the port's queue, as ours does (one thread) and plan9port's does (one process
/// serves the files). Messages the plumber had already sent in answer to reads in
/// flight when the reader is dropped are lost with it.
pub struct PortReader {
    f: Fid,
    inflight: Vec<lib9::client::Call>,
    /// Replies in hand, by number, not yet known to be next.
    arrived: std::collections::BTreeMap<u64, lib9::client::Result<lib9::fcall::Fcall>>,
}

impl PortReader {
    fn new(f: Fid) -> PortReader {
        PortReader {
            f,
            inflight: Vec::new(),
            arrived: std::collections::BTreeMap::new(),
        }
    }

    /// The next message, waiting for one.
    pub fn recv(&mut self) -> Result<Message> {
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let b = self.next_reply()?;
            if b.is_empty() {
                return Err(Error::Eof);
            }
            buf.extend_from_slice(&b);
            match unpack_partial(&buf)? {
                Unpacked::Message(m) => return Ok(m),
                Unpacked::More(_) if buf.len() > MAX_MESSAGE + 4096 => {
                    return Err(MsgError::TooLarge.into());
                }
                Unpacked::More(_) => {}
            }
        }
    }

    /// The data of the next reply to come, keeping [`READ_AHEAD`] reads in flight.
    fn next_reply(&mut self) -> Result<Bytes> {
        let (rt, f) = self.f.inner()?;
        let client = f.client().clone();
        let (fid, count) = (f.raw(), READ_SIZE.min(f.iounit().max(1)));
        let (inflight, arrived) = (&mut self.inflight, &mut self.arrived);
        let reply = rt.block_on(async {
            while inflight.len() < READ_AHEAD {
                let t = lib9::fcall::Fcall::Tread {
                    fid,
                    offset: 0,
                    count,
                };
                inflight.push(client.start(t, None).await?);
            }
            std::future::poll_fn(|cx| {
                // Every reply numbered up to `upto` has come, so is found below: the
                // first of them is the next in the order they came.
                let upto = client.replies();
                inflight.retain_mut(|c| match c.poll_numbered(cx) {
                    std::task::Poll::Ready(Ok((r, n))) => {
                        arrived.insert(n, Ok(r));
                        false
                    }
                    std::task::Poll::Ready(Err(e)) => {
                        arrived.insert(0, Err(e));
                        false
                    }
                    std::task::Poll::Pending => true,
                });
                match arrived.first_entry() {
                    Some(e) if *e.key() <= upto => std::task::Poll::Ready(Ok(e.remove())),
                    _ => std::task::Poll::Pending,
                }
            })
            .await
        });
        match reply {
            Ok(Ok(lib9::fcall::Fcall::Rread { data })) if data.len() <= count as usize => Ok(data),
            Ok(Ok(lib9::fcall::Fcall::Rerror { ename })) => {
                Err(lib9::client::Error::Rerror(ename).into())
            }
            Ok(Ok(_)) => Err(lib9::client::Error::Unexpected("reply to Tread").into()),
            Ok(Err(e)) | Err(e) => Err(e.into()),
        }
    }
}

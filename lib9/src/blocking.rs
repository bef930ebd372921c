//! A blocking facade over [`crate::client`] for simple command-line tools: each call
//! runs the async client on a private single-threaded runtime until it is done.

use crate::client::{self, Error, Options, Result};
use crate::dial::{self, Addr};
use crate::fcall::{Qid, Stat};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Runtime;

/// How long dropping a [`Fid`] waits for its clunk to be answered.
const CLUNK_WAIT: Duration = Duration::from_secs(5);

/// A connection to a 9P server.
pub struct Client {
    rt: Arc<Runtime>,
    c: client::Client,
}

fn runtime() -> Result<Arc<Runtime>> {
    Ok(Arc::new(
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    ))
}

impl Client {
    /// Dial a parsed address and negotiate the version.
    pub fn connect(addr: &Addr, opts: Options) -> Result<Client> {
        let rt = runtime()?;
        let c = rt.block_on(async {
            let conn = dial::dial_addr(addr).await?;
            client::Client::connect(conn, opts).await
        })?;
        Ok(Client { rt, c })
    }

    /// Dial a dial string (a bare name is a service in `$NAMESPACE`).
    pub fn dial(addr: &str) -> Result<Client> {
        Client::connect(&dial::parse(addr)?, Options::default())
    }

    pub fn msize(&self) -> u32 {
        self.c.msize()
    }

    /// The async client underneath, and the runtime that drives it.
    pub fn inner(&self) -> (&Arc<Runtime>, &client::Client) {
        (&self.rt, &self.c)
    }

    pub fn attach(&self, uname: &str, aname: &str) -> Result<Fid> {
        let f = self.rt.block_on(self.c.attach(uname, aname))?;
        Ok(Fid {
            rt: Arc::clone(&self.rt),
            f: Some(f),
        })
    }
}

/// A fid, clunked when dropped.
pub struct Fid {
    rt: Arc<Runtime>,
    f: Option<client::Fid>,
}

impl Fid {
    fn f(&self) -> Result<&client::Fid> {
        self.f.as_ref().ok_or(Error::Hungup)
    }

    fn wrap(&self, f: client::Fid) -> Fid {
        Fid {
            rt: Arc::clone(&self.rt),
            f: Some(f),
        }
    }

    /// The async fid underneath, and the runtime that drives it.
    pub fn inner(&self) -> Result<(&Arc<Runtime>, &client::Fid)> {
        Ok((&self.rt, self.f()?))
    }

    pub fn qid(&self) -> Qid {
        self.f.as_ref().map(client::Fid::qid).unwrap_or_default()
    }

    pub fn iounit(&self) -> u32 {
        self.f.as_ref().map_or(0, client::Fid::iounit)
    }

    /// See [`client::Fid::depth`].
    pub fn depth(&self) -> usize {
        self.f.as_ref().map_or(1, client::Fid::depth)
    }

    pub fn walk(&self, path: &str) -> Result<Fid> {
        let f = self.rt.block_on(self.f()?.walk(path))?;
        Ok(self.wrap(f))
    }

    pub fn open(&mut self, mode: u8) -> Result<()> {
        let f = self.f.as_mut().ok_or(Error::Hungup)?;
        self.rt.block_on(f.open(mode))
    }

    pub fn create(&mut self, name: &str, perm: u32, mode: u8) -> Result<()> {
        let f = self.f.as_mut().ok_or(Error::Hungup)?;
        self.rt.block_on(f.create(name, perm, mode))
    }

    pub fn read(&self, offset: u64, count: u32) -> Result<Bytes> {
        self.rt.block_on(self.f()?.read(offset, count))
    }

    /// Read from `offset` to the end, handing the pieces to `sink`; see
    /// [`client::Fid::read_stream`] for `depth`.
    pub fn read_stream<E>(
        &self,
        offset: u64,
        depth: usize,
        sink: impl FnMut(Bytes) -> std::result::Result<(), E>,
    ) -> Result<std::result::Result<u64, E>> {
        self.rt.block_on(self.f()?.read_stream(offset, depth, sink))
    }

    pub fn read_all(&self) -> Result<Vec<u8>> {
        self.rt.block_on(self.f()?.read_all())
    }

    pub fn write(&self, offset: u64, data: Bytes) -> Result<u32> {
        self.rt.block_on(self.f()?.write(offset, data))
    }

    pub fn write_all(&self, offset: u64, data: Bytes, depth: usize) -> Result<()> {
        self.rt.block_on(self.f()?.write_all(offset, data, depth))
    }

    pub fn stat(&self) -> Result<Stat> {
        self.rt.block_on(self.f()?.stat())
    }

    pub fn wstat(&self, st: &Stat) -> Result<()> {
        self.rt.block_on(self.f()?.wstat(st))
    }

    pub fn readdir(&self) -> Result<Vec<Stat>> {
        self.rt.block_on(self.f()?.readdir())
    }

    pub fn remove(mut self) -> Result<()> {
        let f = self.f.take().ok_or(Error::Hungup)?;
        self.rt.block_on(f.remove())
    }

    pub fn clunk(mut self) -> Result<()> {
        let f = self.f.take().ok_or(Error::Hungup)?;
        self.rt.block_on(f.clunk())
    }
}

impl std::fmt::Debug for Fid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.f {
            Some(fid) => fid.fmt(f),
            None => f.write_str("Fid(clunked)"),
        }
    }
}

impl Drop for Fid {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            let _ = self
                .rt
                .block_on(async { tokio::time::timeout(CLUNK_WAIT, f.clunk()).await });
        }
    }
}

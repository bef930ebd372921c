//! Moving 9P frames over a connection: a reader that cuts the byte stream into frames
//! without copying them, and a writer task that sends queued messages with vectored
//! writes, batching whatever is queued into one system call.

use crate::dial::{ReadHalf, WriteHalf};
use crate::fcall::{self, Msg, ProtoError};
use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Reads whole frames from a connection.
///
/// Small frames are cut from one shared read buffer, many per read. A large frame (a
/// big `Rread` or `Twrite`) is read into a buffer of its own, taken from a small pool
/// that gets the buffer back when the last piece of the frame is dropped, so that a
/// steady stream of large messages does not ask the kernel for fresh pages each time.
pub struct FrameReader {
    rd: ReadHalf,
    buf: BytesMut,
    max: u32,
    pool: std::sync::Arc<Pool>,
    /// A large frame being read into its own buffer, and its size. Kept here, not in
    /// the future, so that `next` is cancel-safe: servers select between reading and
    /// other work, and a dropped read must not lose half a message.
    big: Option<(Vec<u8>, usize)>,
    /// Bytes of a big `Twrite`'s data still in the socket (see [`Incoming::Write`]).
    left: usize,
}

/// The head of a `Twrite`: size, type, tag, fid, offset, count.
pub const TWRITE_HEAD: usize = 23;

/// What a server reads next: a whole frame, or the start of a big `Twrite` whose data
/// is still (mostly) in the socket, to be moved straight into a file
/// ([`FrameReader::splice_payload`]), read ([`FrameReader::read_payload`]) or skipped
/// ([`FrameReader::skip_payload`]) before anything else is read.
pub enum Incoming {
    Frame(Bytes),
    Write {
        /// The 23 bytes of the head.
        head: Bytes,
        /// The data already read.
        have: Bytes,
        /// How much data is still to come.
        left: usize,
    },
}

/// How much to read at a time when no large frame is pending.
const READ_CHUNK: usize = 64 * 1024;
/// Frames at least this large get a pooled buffer of their own.
const LARGE_FRAME: usize = 32 * 1024;

/// Recycled buffers for large frames.
pub struct Pool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    max_bufs: usize,
}

impl Pool {
    pub fn new(max_bufs: usize) -> Pool {
        Pool {
            free: std::sync::Mutex::new(Vec::new()),
            max_bufs,
        }
    }

    /// An empty buffer with room for at least `n` bytes.
    pub fn get(&self, n: usize) -> Vec<u8> {
        let mut f = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = f
            .iter()
            .position(|b| b.capacity() >= n && b.capacity() <= 2 * n)
        {
            let mut b = f.swap_remove(i);
            b.clear();
            return b;
        }
        drop(f);
        // Round up so that messages of nearby sizes share buffers.
        Vec::with_capacity(n.next_multiple_of(64 * 1024))
    }

    fn put(&self, b: Vec<u8>) {
        let mut f = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if f.len() < self.max_bufs {
            f.push(b);
        }
    }
}

/// Hand out `b` as `Bytes` that go back to `pool` when the last of them is dropped.
pub fn pooled(b: Vec<u8>, pool: &std::sync::Arc<Pool>) -> Bytes {
    Bytes::from_owner(Pooled {
        buf: b,
        pool: std::sync::Arc::clone(pool),
    })
}

/// A frame's own buffer, returned to its pool when the frame's last `Bytes` goes.
struct Pooled {
    buf: Vec<u8>,
    pool: std::sync::Arc<Pool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

impl FrameReader {
    pub fn new(rd: ReadHalf, max: u32) -> FrameReader {
        FrameReader {
            rd,
            buf: BytesMut::with_capacity(READ_CHUNK),
            max,
            pool: std::sync::Arc::new(Pool::new(16)),
            big: None,
            left: 0,
        }
    }

    /// Change the largest acceptable frame (after version negotiation).
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    /// The next frame, or `None` at a clean end of the stream. A frame whose size field
    /// is impossible or above the limit is an `InvalidData` error: the stream cannot be
    /// resynchronised after it. Cancel-safe: dropping the future loses nothing.
    pub async fn next(&mut self) -> io::Result<Option<Bytes>> {
        match self.next_incoming(usize::MAX).await? {
            Some(Incoming::Frame(b)) => Ok(Some(b)),
            Some(Incoming::Write { .. }) => Err(io::Error::other("unexpected split write")),
            None => Ok(None),
        }
    }

    /// The next frame, except that a `Twrite` of at least `split_min` bytes whose data
    /// is not all here yet comes as [`Incoming::Write`]. Cancel-safe.
    pub async fn next_incoming(&mut self, split_min: usize) -> io::Result<Option<Incoming>> {
        if self.left > 0 {
            return Err(io::Error::other("the data of a write is still unread"));
        }
        loop {
            if self.big.is_some() {
                return self.large().await.map(|b| Some(Incoming::Frame(b)));
            }
            if let Some(size) = fcall::frame_len(&self.buf) {
                fcall::check_frame_len(size, self.max)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let size = size as usize;
                if size >= split_min
                    && self.buf.len() >= TWRITE_HEAD
                    && self.buf.len() < size
                    && self.buf[4] == fcall::mtype::TWRITE
                {
                    let head = self.buf.split_to(TWRITE_HEAD).freeze();
                    let have = self.buf.split().freeze();
                    self.left = size - TWRITE_HEAD - have.len();
                    return Ok(Some(Incoming::Write {
                        head,
                        have,
                        left: self.left,
                    }));
                }
                if self.buf.len() >= size {
                    return Ok(Some(Incoming::Frame(self.buf.split_to(size).freeze())));
                }
                if size >= LARGE_FRAME {
                    let mut b = self.pool.get(size);
                    b.extend_from_slice(&self.buf);
                    self.buf.clear();
                    self.big = Some((b, size));
                    continue;
                }
                // Make room for the rest of this frame, and a little more.
                self.buf.reserve((size - self.buf.len()).max(READ_CHUNK));
            } else if self.buf.capacity() - self.buf.len() < 64 {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self.rd.read_buf(&mut self.buf).await?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a message",
                ));
            }
        }
    }

    /// Read the rest of a split write's data into one buffer with what came before.
    pub async fn read_payload(&mut self, have: &[u8]) -> io::Result<Bytes> {
        let mut b = self.pool.get(have.len() + self.left);
        b.extend_from_slice(have);
        let size = have.len() + self.left;
        self.big = Some((b, size));
        self.left = 0;
        self.large().await
    }

    /// Read and drop the rest of a split write's data.
    pub async fn skip_payload(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 16384];
        while self.left > 0 {
            let want = self.left.min(sink.len());
            let n = self.rd.read(&mut sink[..want]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a message",
                ));
            }
            self.left -= n;
        }
        Ok(())
    }

    /// Move the rest of a split write's data from the socket into `file` at `offset`
    /// through `pipe`, without copying it through memory. On a failure to write the
    /// file, the rest of the data is still consumed (the stream stays in frame) and the
    /// error returned in the inner result; an error of the connection is the outer one.
    /// `None` if the connection cannot splice (it is not a socket).
    pub async fn splice_payload(
        &mut self,
        pipe: &Pipe,
        file: &std::fs::File,
        mut offset: u64,
    ) -> Option<io::Result<io::Result<()>>> {
        use std::os::fd::AsRawFd;
        let mut failed: Option<io::Error> = None;
        while self.left > 0 {
            let want = self.left.min(pipe.capacity);
            let n = match self.rd.splice_to_pipe(pipe.w.as_raw_fd(), want).await? {
                Ok(0) => {
                    return Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed in the middle of a message",
                    )));
                }
                Ok(n) => n,
                Err(e) => return Some(Err(e)),
            };
            self.left -= n;
            // Empty the pipe into the file (or, after a failure, into nothing).
            let mut inpipe = n;
            while inpipe > 0 {
                let moved = if failed.is_none() {
                    let mut off = offset as libc::off_t;
                    // SAFETY: splice from our pipe into the caller's file at an offset.
                    let r = unsafe {
                        libc::splice(
                            pipe.r.as_raw_fd(),
                            std::ptr::null_mut(),
                            file.as_raw_fd(),
                            &mut off,
                            inpipe,
                            libc::SPLICE_F_MOVE,
                        )
                    };
                    if r <= 0 {
                        let e = if r == 0 {
                            io::Error::new(io::ErrorKind::WriteZero, "short write")
                        } else {
                            io::Error::last_os_error()
                        };
                        if e.kind() == io::ErrorKind::Interrupted {
                            continue;
                        }
                        failed = Some(e);
                        continue;
                    }
                    offset += r as u64;
                    r as usize
                } else {
                    let mut sink = [0u8; 16384];
                    // SAFETY: reading from our own pipe into a local buffer.
                    let r = unsafe {
                        libc::read(
                            pipe.r.as_raw_fd(),
                            sink.as_mut_ptr().cast(),
                            sink.len().min(inpipe),
                        )
                    };
                    if r <= 0 {
                        return Some(Err(io::Error::other("pipe lost data")));
                    }
                    r as usize
                };
                inpipe -= moved;
            }
        }
        Some(Ok(match failed {
            Some(e) => Err(e),
            None => Ok(()),
        }))
    }

    /// Read the rest of a large frame straight into its pooled buffer.
    async fn large(&mut self) -> io::Result<Bytes> {
        use bytes::BufMut;
        loop {
            let Some((b, size)) = self.big.as_mut() else {
                return Err(io::Error::other("no large frame pending"));
            };
            let want = *size - b.len();
            if want == 0 {
                break;
            }
            // read_buf is cancel-safe: bytes it reads are in `b` before it returns.
            let n = self.rd.read_buf(&mut b.limit(want)).await?;
            if n == 0 {
                self.big = None;
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed in the middle of a message",
                ));
            }
        }
        let Some((b, _)) = self.big.take() else {
            return Err(io::Error::other("no large frame pending"));
        };
        Ok(Bytes::from_owner(Pooled {
            buf: b,
            pool: std::sync::Arc::clone(&self.pool),
        }))
    }
}

/// A pipe for moving data from a socket into a file.
pub struct Pipe {
    r: std::os::fd::OwnedFd,
    w: std::os::fd::OwnedFd,
    capacity: usize,
}

impl Pipe {
    /// A pipe as large as the system allows us, up to 1 MiB.
    pub fn new() -> io::Result<Pipe> {
        use std::os::fd::AsRawFd;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        // SAFETY: fcntl on our own pipe.
        let got = unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        // SAFETY: as above.
        let cap = if got > 0 {
            got
        } else {
            unsafe { libc::fcntl(w.as_raw_fd(), libc::F_GETPIPE_SZ) }
        };
        Ok(Pipe {
            r,
            w,
            capacity: if cap > 0 { cap as usize } else { 65536 },
        })
    }
}

/// The data that follows a message's head: bytes in memory, or a range of a file that
/// the writer sends straight from the page cache (padded with zeros should the file
/// have shrunk meanwhile, so that the message keeps the length its head announced).
pub enum Bulk {
    None,
    Bytes(Bytes),
    /// A range of a file, and perhaps that range mapped (see `server::Data::File`):
    /// to a socket the mapping is written, else sent with sendfile; over TLS the
    /// file is read.
    File {
        file: std::sync::Arc<std::fs::File>,
        offset: u64,
        len: usize,
        map: Option<Bytes>,
    },
}

impl Bulk {
    pub fn len(&self) -> usize {
        match self {
            Bulk::None => 0,
            Bulk::Bytes(b) => b.len(),
            Bulk::File { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One message ready to send: its encoded head and, for `Rread` and `Twrite`, the data
/// that follows it uncopied. `guard` is dropped once the bytes are written: servers
/// hang their memory budget on it.
pub struct Outgoing {
    pub head: Bytes,
    pub bulk: Bulk,
    pub guard: Option<Box<dyn Send>>,
}

impl Outgoing {
    pub fn encode(m: &Msg) -> Result<Outgoing, ProtoError> {
        let mut b = BytesMut::with_capacity(m.body.encoded_len().min(256));
        let bulk = match m.encode_head(&mut b)? {
            Some(d) => Bulk::Bytes(d),
            None => Bulk::None,
        };
        Ok(Outgoing {
            head: b.freeze(),
            bulk,
            guard: None,
        })
    }
    pub fn len(&self) -> usize {
        self.head.len() + self.bulk.len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sending side of a writer task. Sending never blocks, so it may be done while
/// holding a lock, which is how replies are ordered against `Rflush`.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
}

impl Outbox {
    /// Queue a message; false if the connection's writer has gone.
    pub fn send(&self, o: Outgoing) -> bool {
        self.tx.send(o).is_ok()
    }
    /// Encode and queue a message.
    pub fn send_msg(&self, m: &Msg) -> bool {
        match Outgoing::encode(m) {
            Ok(o) => self.send(o),
            Err(_) => false,
        }
    }
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Start the writer task. It ends when every [`Outbox`] is dropped (after writing what
/// was queued) or when a write fails; the returned handle yields the error, if any.
pub fn spawn_writer(w: WriteHalf) -> (Outbox, tokio::task::JoinHandle<io::Result<()>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let h = tokio::spawn(writer_loop(w, rx));
    (Outbox { tx }, h)
}

/// The most messages gathered into one vectored write.
const MAX_BATCH: usize = 128;

enum Piece {
    Mem(Bytes),
    File {
        file: std::sync::Arc<std::fs::File>,
        offset: u64,
        len: usize,
    },
}

async fn writer_loop(
    mut w: WriteHalf,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
) -> io::Result<()> {
    let mut batch: Vec<Outgoing> = Vec::with_capacity(MAX_BATCH);
    let mut pieces: VecDeque<Piece> = VecDeque::with_capacity(MAX_BATCH * 2);
    // Not a socket (TLS): file data cannot go by sendfile, so it is read here, into
    // recycled buffers, and goes with the rest of the batch (over TLS, in the same
    // records as its message's head).
    let read_files = matches!(w, WriteHalf::Other(_));
    let pool = std::sync::Arc::new(Pool::new(4));
    loop {
        if rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
            let _ = w.shutdown().await;
            return Ok(());
        }
        for o in batch.iter_mut() {
            pieces.push_back(Piece::Mem(std::mem::take(&mut o.head)));
            match std::mem::replace(&mut o.bulk, Bulk::None) {
                Bulk::None => {}
                Bulk::Bytes(b) => {
                    if !b.is_empty() {
                        pieces.push_back(Piece::Mem(b));
                    }
                }
                Bulk::File {
                    file,
                    offset,
                    len,
                    map,
                } => {
                    if len > 0 && read_files {
                        match read_range(&file, offset, len, &pool) {
                            Ok(b) => pieces.push_back(Piece::Mem(b)),
                            Err(e) => {
                                rx.close();
                                return Err(e);
                            }
                        }
                    } else if let Some(m) = map.filter(|m| m.len() == len) {
                        pieces.push_back(Piece::Mem(m));
                    } else if len > 0 {
                        pieces.push_back(Piece::File { file, offset, len });
                    }
                }
            }
        }
        let res = write_all_pieces(&mut w, &mut pieces).await;
        batch.clear(); // releases the guards
        if let Err(e) = res {
            rx.close();
            return Err(e);
        }
    }
}

static ZEROS: [u8; 8192] = [0; 8192];

/// `len` bytes of `file` at `offset`, read into a buffer from `pool` (which gets it back
/// when the bytes are dropped); padded with zeros should the file have shrunk, as
/// sendfile's data is.
fn read_range(
    file: &std::fs::File,
    offset: u64,
    len: usize,
    pool: &std::sync::Arc<Pool>,
) -> io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let mut b = pool.get(len);
    while b.len() < len {
        let have = b.len();
        let spare = b.spare_capacity_mut();
        let want = (len - have).min(spare.len());
        // SAFETY: reading into the buffer's spare capacity, at most `want` bytes, which
        // fit; the kernel initialises the bytes it reports.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                want,
                (offset + have as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            b.resize(len, 0);
            break;
        }
        // SAFETY: the kernel has initialised these `n` bytes.
        unsafe { b.set_len(have + n as usize) };
    }
    Ok(pooled(b, pool))
}

async fn write_all_pieces(w: &mut WriteHalf, pieces: &mut VecDeque<Piece>) -> io::Result<()> {
    // After an EFAULT, write one piece at a time to find the one that cannot be read.
    let mut one_by_one = false;
    while let Some(front) = pieces.front_mut() {
        if let Piece::File { file, offset, len } = front {
            let n = w.send_file(file, *offset, *len).await?;
            if n == 0 {
                // The file is shorter than it was: keep the framing with zeros.
                let z = (*len).min(ZEROS.len());
                w.write_all(&ZEROS[..z]).await?;
                *len -= z;
            } else {
                *offset += n as u64;
                *len -= n;
            }
            if *len == 0 {
                pieces.pop_front();
            }
            continue;
        }
        let r = {
            let mut slices = [IoSlice::new(&[]); 64];
            let mut k = 0;
            for p in pieces.iter().take(if one_by_one { 1 } else { 64 }) {
                match p {
                    Piece::Mem(b) => slices[k] = IoSlice::new(b),
                    Piece::File { .. } => break,
                }
                k += 1;
            }
            w.write_vectored(&slices[..k]).await
        };
        let n = match r {
            Ok(n) => n,
            Err(e) if e.raw_os_error() == Some(libc::EFAULT) => {
                // Some piece is memory that can no longer be read: a mapped file that
                // shrank. Found, it goes as zeros, so that its message keeps the length
                // its head announced.
                if one_by_one {
                    if let Some(Piece::Mem(b)) = pieces.front_mut() {
                        *b = Bytes::from(vec![0u8; b.len()]);
                    }
                }
                one_by_one = true;
                continue;
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "connection closed",
            ));
        }
        let mut left = n;
        while left > 0 {
            let Some(Piece::Mem(front)) = pieces.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                pieces.pop_front();
            } else {
                let _ = front.split_to(left);
                left = 0;
            }
        }
    }
    w.flush().await
}

/// What a request in progress holds of its connection's budgets; dropping it gives
/// them back (servers drop it once the reply is written).
pub struct Ticket {
    _slot: tokio::sync::OwnedSemaphorePermit,
    _bytes: tokio::sync::OwnedSemaphorePermit,
}

struct Held<T> {
    tag: u16,
    item: T,
    cost: u32,
}

/// Admission of a connection's requests under its budgets (requests in progress, and
/// the bytes they hold), in arrival order.
///
/// A request that does not fit waits here, and the connection keeps reading while it
/// waits, so that a `Tflush` behind it is still seen: one that names a waiting request
/// simply cancels it, one that names a running request frees its room. Only when the
/// waiting requests themselves pass a bound does the connection stop reading.
pub struct Admission<T> {
    slots: std::sync::Arc<tokio::sync::Semaphore>,
    bytes: std::sync::Arc<tokio::sync::Semaphore>,
    max_bytes: u32,
    held: VecDeque<Held<T>>,
    held_bytes: usize,
    max_held: usize,
    max_held_bytes: usize,
}

impl<T> Admission<T> {
    /// `max_outstanding` requests in progress holding at most `max_bytes`; at most
    /// `max_held` more (of `max_held_bytes`) waiting before reading stops.
    pub fn new(
        max_outstanding: usize,
        max_bytes: usize,
        max_held: usize,
        max_held_bytes: usize,
    ) -> Admission<T> {
        let max_bytes = max_bytes.clamp(
            1,
            tokio::sync::Semaphore::MAX_PERMITS.min(u32::MAX as usize),
        );
        Admission {
            slots: std::sync::Arc::new(tokio::sync::Semaphore::new(max_outstanding.max(1))),
            bytes: std::sync::Arc::new(tokio::sync::Semaphore::new(max_bytes)),
            max_bytes: max_bytes as u32,
            held: VecDeque::new(),
            held_bytes: 0,
            max_held: max_held.max(1),
            max_held_bytes,
        }
    }

    fn try_ticket(&self, cost: u32) -> Option<Ticket> {
        let slot = std::sync::Arc::clone(&self.slots)
            .try_acquire_owned()
            .ok()?;
        let bytes = std::sync::Arc::clone(&self.bytes)
            .try_acquire_many_owned(cost.min(self.max_bytes))
            .ok()?;
        Some(Ticket {
            _slot: slot,
            _bytes: bytes,
        })
    }

    /// Offer a request costing `cost` bytes: it comes back with its ticket if it can
    /// run now (nothing is waiting before it and there is room), else it waits here.
    pub fn offer(&mut self, tag: u16, item: T, cost: u32) -> Option<(T, Ticket)> {
        if self.held.is_empty() {
            if let Some(t) = self.try_ticket(cost) {
                return Some((item, t));
            }
        }
        self.held_bytes += cost as usize;
        self.held.push_back(Held { tag, item, cost });
        None
    }

    /// Whether a request with this tag is waiting.
    pub fn holds(&self, tag: u16) -> bool {
        self.held.iter().any(|h| h.tag == tag)
    }

    /// Withdraw a waiting request (it was flushed before it ran); false if none waits.
    pub fn cancel(&mut self, tag: u16) -> bool {
        if let Some(i) = self.held.iter().position(|h| h.tag == tag) {
            if let Some(h) = self.held.remove(i) {
                self.held_bytes -= h.cost as usize;
            }
            return true;
        }
        false
    }

    /// Forget every waiting request.
    pub fn clear(&mut self) {
        self.held.clear();
        self.held_bytes = 0;
    }

    pub fn has_waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// Whether so much is waiting that the connection should stop reading.
    pub fn is_full(&self) -> bool {
        self.held.len() >= self.max_held || self.held_bytes >= self.max_held_bytes
    }

    /// Wait until the first waiting request can run, and take it. Cancel-safe: if the
    /// future is dropped, nothing is taken.
    pub async fn next_ready(&mut self) -> Option<(u16, T, Ticket)> {
        let cost = self.held.front()?.cost.min(self.max_bytes);
        let slot = std::sync::Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .ok()?;
        let bytes = std::sync::Arc::clone(&self.bytes)
            .acquire_many_owned(cost)
            .await
            .ok()?;
        let h = self.held.pop_front()?;
        self.held_bytes -= h.cost as usize;
        Some((
            h.tag,
            h.item,
            Ticket {
                _slot: slot,
                _bytes: bytes,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fcall::{Fcall, Msg};
    use tokio::io::AsyncWriteExt;

    /// Memory the kernel cannot read (as a mapped file that shrank becomes) is sent as
    /// zeros of the same length, and the stream stays in frame.
    #[test]
    fn unreadable_data_goes_as_zeros() {
        struct Unreadable {
            base: *mut libc::c_void,
            len: usize,
        }
        // SAFETY: owned by this value alone.
        unsafe impl Send for Unreadable {}
        impl AsRef<[u8]> for Unreadable {
            fn as_ref(&self) -> &[u8] {
                // SAFETY: a live mapping, only ever handed to the kernel, as the
                // exportfs mappings are.
                unsafe { std::slice::from_raw_parts(self.base.cast(), self.len) }
            }
        }
        impl Drop for Unreadable {
            fn drop(&mut self) {
                // SAFETY: unmapping what mmap gave.
                unsafe { libc::munmap(self.base, self.len) };
            }
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let len = 3 * 4096;
            // SAFETY: a fresh anonymous mapping nobody may read.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(base, libc::MAP_FAILED);
            let bad = Bytes::from_owner(Unreadable { base, len });
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            let (_r, w) = a.into_split();
            let (br, _bw) = b.into_split();
            let (out, _h) = spawn_writer(WriteHalf::Unix(w));
            let m = Msg::new(9, Fcall::Rread { data: bad });
            out.send(Outgoing::encode(&m).unwrap());
            let after = Msg::new(10, Fcall::Rclunk);
            out.send(Outgoing::encode(&after).unwrap());
            let mut fr = FrameReader::new(ReadHalf::Unix(br), crate::fcall::MAX_MSIZE);
            let got =
                crate::fcall::decode(fr.next().await.unwrap().unwrap(), crate::fcall::MAX_MSIZE)
                    .unwrap();
            assert_eq!(
                got,
                Msg::new(
                    9,
                    Fcall::Rread {
                        data: Bytes::from(vec![0u8; len])
                    }
                )
            );
            let got =
                crate::fcall::decode(fr.next().await.unwrap().unwrap(), crate::fcall::MAX_MSIZE)
                    .unwrap();
            assert_eq!(got, after);
        });
    }

    #[test]
    fn next_is_cancel_safe_in_the_middle_of_a_large_frame() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
            let (r, _w) = a.into_split();
            let mut fr = FrameReader::new(ReadHalf::Unix(r), crate::fcall::MAX_MSIZE);
            let data: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
            let m = Msg::new(
                7,
                Fcall::Rread {
                    data: Bytes::from(data.clone()),
                },
            );
            let frame = m.to_bytes().unwrap();
            let small = Msg::new(8, Fcall::Rclunk).to_bytes().unwrap();
            // Half of the big frame, then give up waiting, several times over.
            let mut sent = 0;
            for piece in frame.chunks(70_000) {
                b.write_all(piece).await.unwrap();
                sent += piece.len();
                if sent < frame.len() {
                    let r =
                        tokio::time::timeout(std::time::Duration::from_millis(20), fr.next()).await;
                    assert!(r.is_err(), "a partial frame came out");
                }
            }
            b.write_all(&small).await.unwrap();
            let got = fr.next().await.unwrap().unwrap();
            assert_eq!(
                crate::fcall::decode(got, crate::fcall::MAX_MSIZE).unwrap(),
                m
            );
            let got = fr.next().await.unwrap().unwrap();
            assert_eq!(got, small);
        });
    }

    /// A file mapped shared, read-only, unmapped when the last `Bytes` goes.
    struct Map(*mut libc::c_void, usize);
    // SAFETY: the mapping is only read, and unmapped once.
    unsafe impl Send for Map {}
    impl AsRef<[u8]> for Map {
        fn as_ref(&self) -> &[u8] {
            // SAFETY: a live mapping of that many bytes.
            unsafe { std::slice::from_raw_parts(self.0.cast(), self.1) }
        }
    }
    impl Drop for Map {
        fn drop(&mut self) {
            // SAFETY: exactly what mmap gave.
            unsafe { libc::munmap(self.0, self.1) };
        }
    }
    impl Map {
        fn bytes(f: &std::fs::File, len: usize) -> Bytes {
            use std::os::fd::AsRawFd;
            // SAFETY: a new read-only shared mapping of an open file.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            Bytes::from_owner(Map(p, len))
        }
    }

    /// File data for a writer that is not a socket (TLS) is read and sent with the rest:
    /// whole, in frame, and padded with zeros where the file has shrunk.
    #[test]
    fn file_data_to_a_stream_that_is_not_a_socket() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 991) as u8).collect();
            let mut f = tempfile::tempfile().unwrap();
            std::io::Write::write_all(&mut f, &content).unwrap();
            // Each range comes with a mapping too, as exportfs gives it; the file is
            // longer when mapped and shrinks before the writer runs, so touching the
            // mapping past the new end would be SIGBUS: over TLS it must be left alone.
            f.set_len(3_200_000).unwrap();
            let map = Map::bytes(&f, 3_200_000);
            let file = std::sync::Arc::new(f);
            let (a, b) = tokio::io::duplex(64 * 1024);
            let (out, _h) = spawn_writer(WriteHalf::Other(Box::new(a)));
            // Reads of the file as exportfs answers them: whole, in the middle, and
            // running past the end (the file shrank after the reply was made).
            let reads = [
                (0u64, 1_048_576usize),
                (123_457, 300_001),
                (2_900_000, 250_000),
            ];
            for (i, &(offset, len)) in reads.iter().enumerate() {
                let mut head = BytesMut::new();
                head.extend_from_slice(&(11 + len as u32).to_le_bytes());
                head.extend_from_slice(&[fcall::mtype::RREAD]);
                head.extend_from_slice(&(i as u16).to_le_bytes());
                head.extend_from_slice(&(len as u32).to_le_bytes());
                out.send(Outgoing {
                    head: head.freeze(),
                    bulk: Bulk::File {
                        file: std::sync::Arc::clone(&file),
                        offset,
                        len,
                        map: Some(map.slice(offset as usize..offset as usize + len)),
                    },
                    guard: None,
                });
            }
            file.set_len(content.len() as u64).unwrap();
            let after = Msg::new(10, Fcall::Rclunk);
            out.send(Outgoing::encode(&after).unwrap());
            let mut fr = FrameReader::new(ReadHalf::Other(Box::new(b)), crate::fcall::MAX_MSIZE);
            for (i, &(offset, len)) in reads.iter().enumerate() {
                let got = crate::fcall::decode(
                    fr.next().await.unwrap().unwrap(),
                    crate::fcall::MAX_MSIZE,
                )
                .unwrap();
                let start = offset as usize;
                let end = (start + len).min(content.len());
                let mut want = content[start..end].to_vec();
                want.resize(len, 0);
                assert_eq!(
                    got,
                    Msg::new(
                        i as u16,
                        Fcall::Rread {
                            data: Bytes::from(want)
                        }
                    )
                );
            }
            let got =
                crate::fcall::decode(fr.next().await.unwrap().unwrap(), crate::fcall::MAX_MSIZE)
                    .unwrap();
            assert_eq!(got, after);
        });
    }
}

//! The plumber's 9P file tree (plumber(4)):
//!
//! | file | mode | |
//! |---|---|---|
//! | `rules` | 0600 | reading gives the rules; writing after an open with OTRUNC replaces them, otherwise adds to them |
//! | `send` | 0200 | each message written is routed by the rules |
//! | *port* | 0400 | one per port named in the rules; every reader gets each message sent there |
//!
//! Messages for a port nobody has open start the matching set's `plumb start`
//! command and are dropped, or start its `plumb client` command and are held until
//! someone opens the port; with neither, the write to `send` fails.

use crate::exec::{self, Matched};
use crate::msg::{MAX_MESSAGE, Message, MsgError, Unpacked, unpack_partial};
use crate::rules::{Library, MAX_PORTS, Rules};
use bytes::Bytes;
use lib9::errstr::{self, Ename};
use lib9::fcall::{DMDIR, ORDWR, OREAD, OTRUNC, OWRITE, QTDIR, QTFILE, Qid, Stat};
use lib9::server::{Caller, Data, Filesystem, FsResult, Opened, Walked};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::Notify;

/// Messages queued for one reader before the oldest are dropped.
pub const MAX_QUEUE: usize = 4096;
/// The length a full queue is read down to before the senders it held back go on.
const ROOM_AGAIN: usize = MAX_QUEUE / 4 * 3;
/// How long a send waits for room in a reader's queue.
const QUEUE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Messages held for a `plumb client` port until it is opened.
pub const MAX_HELD: usize = 256;
/// The largest rules text.
pub const MAX_RULES: usize = 1 << 20;

const QROOT: u64 = 0;
const QRULES: u64 = 1;
const QSEND: u64 = 2;
const QPORT: u64 = 3;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Something that runs the commands of `plumb start` and `plumb client`.
pub trait Starter: Send + Sync + 'static {
    fn start(&self, argv: &[String]) -> Result<(), String>;
}

/// Runs each command with rc: `rc -c 'word' 'word' ...`, its words quoted so the
/// message's text can never be taken for rc syntax.
pub struct RcStarter {
    pub rc: std::path::PathBuf,
}

/// Quote a word for rc.
pub fn rc_quote(w: &str) -> String {
    format!("'{}'", w.replace('\'', "''"))
}

impl RcStarter {
    /// rc beside the running program if it is there, else rc from $PATH.
    pub fn find() -> RcStarter {
        let beside = std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("rc")))
            .filter(|p| p.is_file());
        RcStarter {
            rc: beside.unwrap_or_else(|| "rc".into()),
        }
    }
}

impl Starter for RcStarter {
    fn start(&self, argv: &[String]) -> Result<(), String> {
        let cmd: Vec<String> = argv.iter().map(|w| rc_quote(w)).collect();
        let mut c = std::process::Command::new(&self.rc);
        c.arg("-c")
            .arg(cmd.join(" "))
            .stdin(std::process::Stdio::null());
        // The programs beside rc (plumb, for one) come first in the command's $PATH.
        if let Some(dir) = self.rc.parent().filter(|d| !d.as_os_str().is_empty()) {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![dir.to_path_buf()];
            dirs.extend(std::env::split_paths(&path));
            if let Ok(p) = std::env::join_paths(dirs) {
                c.env("PATH", p);
            }
        }
        let mut child = c.spawn().map_err(|e| format!("can't start rc: {e}"))?;
        // Reap it when it ends.
        std::thread::spawn(move || {
            let _ = child.wait();
        });
        Ok(())
    }
}

struct Reader {
    port: usize,
    q: VecDeque<Bytes>,
    /// How much of the first message has been read.
    off: usize,
    notify: Arc<Notify>,
}

struct Port {
    name: String,
    readers: Vec<u64>,
    held: VecDeque<Bytes>,
}

struct State {
    rules: Arc<Rules>,
    ports: Vec<Port>,
    readers: HashMap<u64, Reader>,
    next_reader: u64,
    rules_writer: bool,
    dropped: u64,
}

impl State {
    fn add_ports(&mut self, names: &[String]) {
        for n in names {
            if self.ports.len() >= MAX_PORTS {
                break;
            }
            if !self.ports.iter().any(|p| p.name == *n) {
                self.ports.push(Port {
                    name: n.clone(),
                    readers: Vec::new(),
                    held: VecDeque::new(),
                });
            }
        }
    }

    /// Whether some reader of the port has a full queue.
    fn full(&self, port: usize) -> bool {
        self.ports[port]
            .readers
            .iter()
            .any(|id| self.readers.get(id).is_some_and(|r| r.q.len() >= MAX_QUEUE))
    }

    fn deliver(&mut self, port: usize, b: Bytes) {
        let mut dropped = 0;
        for id in &self.ports[port].readers {
            if let Some(r) = self.readers.get_mut(id) {
                if r.q.len() >= MAX_QUEUE {
                    r.q.pop_front();
                    r.off = 0;
                    dropped += 1;
                }
                r.q.push_back(b.clone());
                r.notify.notify_one();
            }
        }
        self.dropped += dropped;
    }
}

/// The plumber.
///
/// It must run on a tokio runtime with its timer enabled (a send waiting for room in
/// a reader's queue gives up after a while).
pub struct Plumber {
    owner: String,
    state: Mutex<State>,
    /// Told when a reader takes a message from a queue that was full.
    room: Notify,
    lib: Box<dyn Library + Send + Sync>,
    starter: Box<dyn Starter>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Node {
    Root,
    Rules,
    Send,
    Port(usize),
}

impl Node {
    fn qid(self) -> Qid {
        let (ty, path) = match self {
            Node::Root => (QTDIR, QROOT),
            Node::Rules => (QTFILE, QRULES),
            Node::Send => (QTFILE, QSEND),
            Node::Port(i) => (QTFILE, QPORT + i as u64),
        };
        Qid { ty, vers: 0, path }
    }
}

enum Open {
    None,
    Send(Mutex<Vec<u8>>),
    Rules(Mutex<RulesWrite>),
    Reader(u64),
    Plain,
}

struct RulesWrite {
    /// The rules text this write starts from: empty after OTRUNC.
    base: String,
    /// What has been written.
    text: String,
    writing: bool,
    /// Text written that has not yet been put in force.
    pending: bool,
    /// Whether anything was written, accepted or not.
    tried: bool,
}

/// A fid's state.
pub struct Fid {
    node: Node,
    open: Open,
}

/// The name `rules` writes are reported under.
pub const RULES_INPUT: &str = "<rules input>";

impl Plumber {
    pub fn new(
        owner: &str,
        rules: Rules,
        lib: Box<dyn Library + Send + Sync>,
        starter: Box<dyn Starter>,
    ) -> Plumber {
        let mut st = State {
            rules: Arc::new(Rules::default()),
            ports: Vec::new(),
            readers: HashMap::new(),
            next_reader: 1,
            rules_writer: false,
            dropped: 0,
        };
        st.add_ports(&rules.ports);
        st.rules = Arc::new(rules);
        Plumber {
            owner: owner.into(),
            state: Mutex::new(st),
            room: Notify::new(),
            lib,
            starter,
        }
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        Arc::clone(&lock(&self.state).rules)
    }

    /// Messages dropped from full reader queues so far.
    pub fn dropped(&self) -> u64 {
        lock(&self.state).dropped
    }

    /// Replace the rules with `text`, or refuse it with the first error.
    pub fn set_rules(&self, text: &str) -> Result<(), crate::rules::ParseError> {
        let r = Rules::parse(RULES_INPUT, text, &*self.lib)?;
        let mut st = lock(&self.state);
        st.add_ports(&r.ports);
        st.rules = Arc::new(r);
        Ok(())
    }

    fn port_full(&self, name: &str) -> bool {
        let st = lock(&self.state);
        st.ports
            .iter()
            .position(|p| p.name == name)
            .is_some_and(|pi| st.full(pi))
    }

    /// Route one message, as a write to `send` does.
    pub async fn send(&self, mut m: Message) -> Result<(), Ename> {
        let rules = self.rules();
        let matched: Option<Matched<'_>> = exec::apply(&mut m, &rules);
        if m.dst.is_empty() {
            if matched.is_none() {
                return Err(Ename::new("no matching plumb rule"));
            }
            let (argv, _) = exec::startup(&m, &rules, matched.as_ref()).map_err(Ename::new)?;
            return self.starter.start(&argv).map_err(Ename::new);
        }
        // A reader that has fallen MAX_QUEUE messages behind holds the sender back
        // (the write waits until it reads); past QUEUE_WAIT its oldest message is
        // dropped instead.
        // The usual case, a queue with room, costs no clock reading and no listening.
        if self.port_full(&m.dst) {
            let deadline = tokio::time::Instant::now() + QUEUE_WAIT;
            loop {
                let room = self.room.notified();
                tokio::pin!(room);
                // Listening before looking, so a read in between is not missed.
                room.as_mut().enable();
                if !self.port_full(&m.dst) || tokio::time::timeout_at(deadline, room).await.is_err()
                {
                    break;
                }
            }
        }
        let mut st = lock(&self.state);
        let Some(pi) = st.ports.iter().position(|p| p.name == m.dst) else {
            return Err(Ename::new("no such plumb port"));
        };
        if !st.ports[pi].readers.is_empty() {
            let b = Bytes::from(m.pack());
            st.deliver(pi, b);
            return Ok(());
        }
        let (argv, hold) = exec::startup(&m, &rules, matched.as_ref()).map_err(Ename::new)?;
        if hold {
            let held = &mut st.ports[pi].held;
            if held.len() >= MAX_HELD {
                held.pop_front();
            }
            held.push_back(Bytes::from(m.pack()));
        }
        drop(st);
        self.starter.start(&argv).map_err(Ename::new)
    }

    fn node_stat(&self, n: Node) -> Stat {
        let (name, mode) = match n {
            Node::Root => ("/".to_string(), DMDIR | 0o500),
            Node::Rules => ("rules".into(), 0o600),
            Node::Send => ("send".into(), 0o200),
            Node::Port(i) => (
                lock(&self.state)
                    .ports
                    .get(i)
                    .map(|p| p.name.clone())
                    .unwrap_or_default(),
                0o400,
            ),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        Stat {
            qid: n.qid(),
            mode,
            atime: now,
            mtime: now,
            length: 0,
            name,
            uid: self.owner.clone(),
            gid: self.owner.clone(),
            muid: self.owner.clone(),
            ..Stat::default()
        }
    }

    fn lookup(&self, name: &str) -> Option<Node> {
        match name {
            "rules" => Some(Node::Rules),
            "send" => Some(Node::Send),
            _ => lock(&self.state)
                .ports
                .iter()
                .position(|p| p.name == name)
                .map(Node::Port),
        }
    }

    /// Take a write to `rules`: put complete text in force as soon as it parses;
    /// refuse text with an error in a finished rule set.
    fn write_rules(&self, w: &mut RulesWrite, data: &[u8]) -> FsResult<u32> {
        let s = std::str::from_utf8(data).map_err(|_| Ename::new("rules are not UTF-8"))?;
        if w.base.len() + w.text.len() + s.len() > MAX_RULES {
            return Err(Ename::new("rules too long"));
        }
        let mut text = w.text.clone();
        text.push_str(s);
        let whole = format!("{}{}", w.base, text);
        match self.set_rules(&whole) {
            Ok(()) => {
                w.text = text;
                w.pending = false;
                Ok(data.len() as u32)
            }
            Err(e) => {
                // Text cut in the middle of a line, or a rule set not yet ended by a
                // blank line that lacks its actions, may be mended by the next write;
                // only then, or at the close, is the error final.
                let lines = whole.matches('\n').count();
                let partial_line = !whole.ends_with('\n') && e.line > lines;
                let open_set = !whole.ends_with("\n\n")
                    && e.line >= lines
                    && e.msg.starts_with("ruleset must have");
                if e.file == RULES_INPUT && (partial_line || open_set) {
                    w.text = text;
                    w.pending = true;
                    return Ok(data.len() as u32);
                }
                Err(Ename::new(e.to_string()))
            }
        }
    }

    fn take_from_queue(&self, id: u64, count: u32) -> Result<Option<Bytes>, Arc<Notify>> {
        let mut st = lock(&self.state);
        let Some(r) = st.readers.get_mut(&id) else {
            return Ok(None);
        };
        let Some(head) = r.q.front() else {
            return Err(Arc::clone(&r.notify));
        };
        let n = (head.len() - r.off).min(count as usize);
        let b = head.slice(r.off..r.off + n);
        r.off += n;
        if r.off >= head.len() {
            r.q.pop_front();
            r.off = 0;
            // Senders held back by a full queue go on once a quarter of it is read,
            // rather than each time one message is.
            if r.q.len() == ROOM_AGAIN {
                self.room.notify_waiters();
            }
        }
        Ok(Some(b))
    }
}

impl Filesystem for Plumber {
    type Fid = Fid;

    async fn auth(&self, _c: &Caller, _aname: &str) -> FsResult<(Fid, Qid)> {
        Err(Ename::new("plumber: authentication not required"))
    }

    async fn attach(&self, c: &Caller, _aname: &str, _afid: Option<&Fid>) -> FsResult<(Fid, Qid)> {
        if *c.uname != *self.owner {
            return Err(Ename::from(errstr::EPERM));
        }
        Ok((
            Fid {
                node: Node::Root,
                open: Open::None,
            },
            Node::Root.qid(),
        ))
    }

    async fn walk(&self, _c: &Caller, fid: &Fid, names: &[String]) -> FsResult<Walked<Fid>> {
        let mut n = fid.node;
        let mut qids = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let next = if n != Node::Root {
                None
            } else if name == ".." {
                Some(Node::Root)
            } else {
                self.lookup(name)
            };
            match next {
                Some(x) => {
                    n = x;
                    qids.push(x.qid());
                }
                None if i == 0 => {
                    return Err(Ename::new(if n == Node::Root {
                        "plumb file does not exist"
                    } else {
                        errstr::ENOTDIR
                    }));
                }
                None => return Ok(Walked { qids, fid: None }),
            }
        }
        Ok(Walked {
            qids,
            fid: Some(Fid {
                node: n,
                open: Open::None,
            }),
        })
    }

    async fn open(&self, _c: &Caller, fid: &Fid, mode: u8) -> FsResult<Opened<Fid>> {
        let acc = mode & 3;
        let want = match acc {
            OREAD => 0o400,
            OWRITE => 0o200,
            ORDWR => 0o600,
            _ => return Err(Ename::from(errstr::EPERM)),
        };
        let perm = self.node_stat(fid.node).mode & 0o777;
        // OTRUNC means something only to rules; on send it is ignored, so that
        // `9p write` and the shell's > work.
        if perm & want != want
            || (mode & OTRUNC != 0 && !matches!(fid.node, Node::Rules | Node::Send))
        {
            return Err(Ename::from(errstr::EPERM));
        }
        let open = match fid.node {
            Node::Root => Open::Plain,
            Node::Send => Open::Send(Mutex::new(Vec::new())),
            Node::Rules => {
                let writing = acc == OWRITE || acc == ORDWR;
                let mut st = lock(&self.state);
                if writing {
                    if st.rules_writer {
                        return Err(Ename::new("file already open"));
                    }
                    st.rules_writer = true;
                }
                let base = if mode & OTRUNC != 0 {
                    String::new()
                } else {
                    let t = st.rules.text.clone();
                    if t.is_empty() || t.ends_with("\n\n") {
                        t
                    } else if t.ends_with('\n') {
                        t + "\n"
                    } else {
                        t + "\n\n"
                    }
                };
                Open::Rules(Mutex::new(RulesWrite {
                    base,
                    text: String::new(),
                    writing,
                    pending: false,
                    tried: false,
                }))
            }
            Node::Port(i) => {
                let mut st = lock(&self.state);
                let id = st.next_reader;
                st.next_reader += 1;
                let held: VecDeque<Bytes> = std::mem::take(&mut st.ports[i].held);
                st.ports[i].readers.push(id);
                st.readers.insert(
                    id,
                    Reader {
                        port: i,
                        q: held,
                        off: 0,
                        notify: Arc::new(Notify::new()),
                    },
                );
                Open::Reader(id)
            }
        };
        Ok(Opened {
            fid: Fid {
                node: fid.node,
                open,
            },
            qid: fid.node.qid(),
            iounit: 0,
        })
    }

    async fn create(
        &self,
        _c: &Caller,
        _fid: &Fid,
        _name: &str,
        _perm: u32,
        _mode: u8,
    ) -> FsResult<Opened<Fid>> {
        Err(Ename::from(errstr::EPERM))
    }

    async fn read(&self, _c: &Caller, fid: &Fid, offset: u64, count: u32) -> FsResult<Data> {
        match &fid.open {
            Open::Rules(_) => {
                let t = self.rules().text.clone();
                let b = t.as_bytes();
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(b.len());
                let end = start.saturating_add(count as usize).min(b.len());
                Ok(Data::Bytes(Bytes::copy_from_slice(&b[start..end])))
            }
            Open::Reader(id) => loop {
                match self.take_from_queue(*id, count) {
                    Ok(Some(b)) => return Ok(Data::Bytes(b)),
                    Ok(None) => return Err(Ename::new("port closed")),
                    Err(n) => n.notified().await,
                }
            },
            _ => Err(Ename::from(errstr::ENOREAD)),
        }
    }

    async fn write(&self, _c: &Caller, fid: &Fid, _offset: u64, data: Bytes) -> FsResult<u32> {
        match &fid.open {
            Open::Send(buf) => {
                let n = data.len() as u32;
                let m = {
                    let mut b = lock(buf);
                    let whole: Vec<u8> = if b.is_empty() {
                        data.to_vec()
                    } else {
                        b.extend_from_slice(&data);
                        std::mem::take(&mut *b)
                    };
                    match unpack_partial(&whole) {
                        Ok(Unpacked::Message(m)) => {
                            b.clear();
                            m
                        }
                        Ok(Unpacked::More(_)) if whole.len() <= MAX_MESSAGE + 4096 => {
                            *b = whole;
                            return Ok(n);
                        }
                        Ok(Unpacked::More(_)) => {
                            b.clear();
                            return Err(Ename::new(MsgError::TooLarge.to_string()));
                        }
                        Err(e) => {
                            b.clear();
                            return Err(Ename::new(e.to_string()));
                        }
                    }
                };
                self.send(m).await?;
                Ok(n)
            }
            Open::Rules(w) => {
                let mut w = lock(w);
                if !w.writing {
                    return Err(Ename::from(errstr::EBADUSE));
                }
                w.tried = true;
                self.write_rules(&mut w, &data)
            }
            _ => Err(Ename::from(errstr::EPERM)),
        }
    }

    async fn stat(&self, _c: &Caller, fid: &Fid) -> FsResult<Stat> {
        Ok(self.node_stat(fid.node))
    }

    async fn readdir(&self, _c: &Caller, _fid: &Fid) -> FsResult<Vec<Stat>> {
        let n = lock(&self.state).ports.len();
        let mut v = vec![self.node_stat(Node::Rules), self.node_stat(Node::Send)];
        v.extend((0..n).map(|i| self.node_stat(Node::Port(i))));
        Ok(v)
    }

    async fn clunk(&self, _c: &Caller, fid: &Fid) {
        match &fid.open {
            Open::Reader(id) => {
                let mut st = lock(&self.state);
                if let Some(r) = st.readers.remove(id)
                    && let Some(p) = st.ports.get_mut(r.port)
                {
                    p.readers.retain(|x| x != id);
                }
                drop(st);
                // A sender may have been waiting for this reader.
                self.room.notify_waiters();
            }
            Open::Rules(w) => {
                let w = lock(w);
                if w.writing {
                    if w.pending {
                        let whole = format!("{}{}", w.base, w.text);
                        if let Err(e) = self.set_rules(&whole) {
                            eprintln!("plumber: {e}");
                        }
                    } else if !w.tried && w.base.is_empty() {
                        // Opened with OTRUNC and nothing written: no rules.
                        if let Err(e) = self.set_rules("") {
                            eprintln!("plumber: {e}");
                        }
                    }
                    lock(&self.state).rules_writer = false;
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::HostLibrary;

    struct NoStart;
    impl Starter for NoStart {
        fn start(&self, argv: &[String]) -> Result<(), String> {
            Err(format!("would start {argv:?}"))
        }
    }

    fn plumber() -> Plumber {
        let rules = Rules::parse("test", "type is text\nplumb to p\n", &HostLibrary).unwrap();
        Plumber::new("glenda", rules, Box::new(HostLibrary), Box::new(NoStart))
    }

    fn caller() -> Caller {
        Caller {
            uname: Arc::from("glenda"),
        }
    }

    async fn open_port(p: &Plumber) -> Fid {
        let c = caller();
        let (root, _) = p.attach(&c, "", None).await.unwrap();
        let w = p.walk(&c, &root, &["p".to_string()]).await.unwrap();
        p.open(&c, &w.fid.unwrap(), OREAD).await.unwrap().fid
    }

    /// A plumber whose port `p` is open and holds MAX_QUEUE messages, 0 onwards.
    async fn full_port() -> (Arc<Plumber>, Fid) {
        let p = Arc::new(plumber());
        let f = open_port(&p).await;
        for i in 0..MAX_QUEUE {
            p.send(msg(i)).await.unwrap();
        }
        (p, f)
    }

    fn msg(i: usize) -> Message {
        Message::text("test", "/", i.to_string().as_bytes())
    }

    async fn recv(p: &Plumber, f: &Fid) -> Message {
        let Data::Bytes(b) = p.read(&caller(), f, 0, 8192).await.unwrap() else {
            panic!("not bytes");
        };
        match unpack_partial(&b).unwrap() {
            Unpacked::Message(m) => m,
            Unpacked::More(_) => panic!("partial"),
        }
    }

    fn rt(paused: bool) -> tokio::runtime::Runtime {
        let mut b = tokio::runtime::Builder::new_current_thread();
        b.enable_all();
        if paused {
            b.start_paused(true);
        }
        b.build().unwrap()
    }

    /// A reader MAX_QUEUE messages behind holds the sender back until it has read a
    /// quarter of its queue; nothing is lost and the order is kept.
    #[test]
    fn a_full_queue_holds_the_sender_back() {
        rt(false).block_on(async {
            let (p, f) = full_port().await;
            let p2 = Arc::clone(&p);
            let last = tokio::spawn(async move { p2.send(msg(MAX_QUEUE)).await });
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            assert!(!last.is_finished(), "the send did not wait");
            for i in 0..MAX_QUEUE - ROOM_AGAIN - 1 {
                assert_eq!(recv(&p, &f).await.data, i.to_string().as_bytes());
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            assert!(!last.is_finished(), "the send went on too soon");
            // One more read: the queue is down to ROOM_AGAIN.
            let _ = recv(&p, &f).await;
            tokio::time::timeout(std::time::Duration::from_secs(5), last)
                .await
                .expect("the send was not let go")
                .unwrap()
                .unwrap();
            for i in MAX_QUEUE - ROOM_AGAIN..=MAX_QUEUE {
                assert_eq!(recv(&p, &f).await.data, i.to_string().as_bytes());
            }
            assert_eq!(p.dropped(), 0);
        });
    }

    /// A reader that does not read for QUEUE_WAIT loses its oldest message, and the
    /// sender goes on; a reader that goes away lets waiting senders go at once.
    #[test]
    fn a_stuck_reader_loses_its_oldest_message() {
        rt(true).block_on(async {
            let (p, f) = full_port().await;
            let t0 = tokio::time::Instant::now();
            p.send(msg(MAX_QUEUE)).await.unwrap();
            assert!(t0.elapsed() >= QUEUE_WAIT);
            assert_eq!(p.dropped(), 1);
            assert_eq!(recv(&p, &f).await.data, b"1");

            // Full again; a waiting sender is let go when the reader clunks.
            p.send(msg(0)).await.unwrap();
            let p2 = Arc::clone(&p);
            let t0 = tokio::time::Instant::now();
            let waiting = tokio::spawn(async move { p2.send(msg(1)).await });
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            assert!(!waiting.is_finished());
            p.clunk(&caller(), &f).await;
            // With the port unread, the message would start a program.
            let r = waiting.await.unwrap();
            assert!(t0.elapsed() < QUEUE_WAIT);
            assert!(r.is_err());
        });
    }
}

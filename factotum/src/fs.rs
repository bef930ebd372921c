//! factotum's 9P file tree, as plan9port serves it (files at the root of the service):
//!
//! | file | mode | |
//! |---|---|---|
//! | `confirm` | 0600 DMEXCL | key-use confirmations: read `confirm tag=N attrs`, write `tag=N answer=yes` |
//! | `needkey` | 0600 DMEXCL | key prompts: read `needkey tag=N attrs`, add the key, write `tag=N` |
//! | `ctl` | 0600 | `key ...`, `delkey ...`, `debug`; reading lists keys, secrets hidden |
//! | `rpc` | 0666 | each open is a private conversation ([`crate::rpc::Conv`]) |
//! | `proto` | 0444 | the protocols, one a line |
//! | `log` | 0600 DMEXCL | what factotum did, never with a secret value |
//!
//! Opens are checked as plan9port checks them: the owner bits for the user who
//! started factotum, the other bits for anyone else.
//!
//! A conversation that needs a key, or wants a key with `confirm` confirmed, asks the
//! reader of `needkey` or `confirm` (or, when nobody has the file open, factotum's own
//! prompter: [`Factotum::prompt_with`]) and its rpc read waits for the answer, at most
//! [`WAIT`]. The file server must run on a tokio runtime with timers.

use crate::attr::{Attrs, Key, Ring};
use crate::rpc::{Conv, Env, Outcome, RpcError, SecretBytes, proto_lookup, protocols};
use bytes::Bytes;
use lib9::errstr::{self, Ename};
use lib9::fcall::{DMDIR, DMEXCL, OTRUNC, QTDIR, QTFILE, Qid, Stat};
use lib9::server::{Caller, Data, Filesystem, FsResult, Opened, Walked};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};
use zeroize::Zeroizing;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    Root,
    Confirm,
    Needkey,
    Ctl,
    Rpc,
    Proto,
    Log,
}

const FILES: &[(Node, &str, u32)] = &[
    (Node::Confirm, "confirm", 0o600 | DMEXCL),
    (Node::Needkey, "needkey", 0o600 | DMEXCL),
    (Node::Ctl, "ctl", 0o600),
    (Node::Rpc, "rpc", 0o666),
    (Node::Proto, "proto", 0o444),
    (Node::Log, "log", 0o600 | DMEXCL),
];

impl Node {
    fn path(self) -> u64 {
        self as u64
    }
    fn qid(self) -> Qid {
        Qid {
            ty: if self == Node::Root { QTDIR } else { QTFILE },
            vers: 0,
            path: self.path(),
        }
    }
    fn entry(self) -> (&'static str, u32) {
        FILES
            .iter()
            .find(|f| f.0 == self)
            .map(|f| (f.1, f.2))
            .unwrap_or(("/", DMDIR | 0o555))
    }
    fn excl_index(self) -> Option<usize> {
        match self {
            Node::Confirm => Some(0),
            Node::Needkey => Some(1),
            Node::Log => Some(2),
            _ => None,
        }
    }
}

/// The per-fid state.
pub struct Fid {
    node: Node,
    /// Set once opened.
    open: Option<Open>,
}

enum Open {
    /// A conversation, and its tag in `needkey` and `confirm` questions.
    Rpc(Box<Mutex<Conv>>, u64),
    Plain,
}

/// The most log lines kept.
const LOG_LINES: usize = 1000;

/// How long a conversation waits for an answer on `needkey` or `confirm`.
pub const WAIT: Duration = Duration::from_secs(120);

/// The two files that put questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    /// `confirm`: may this key be used?
    Confirm = 0,
    /// `needkey`: a key is missing (or bad).
    NeedKey = 1,
}

/// A question for factotum's own prompter.
#[derive(Debug)]
pub struct Question {
    pub kind: Ask,
    /// The conversation's tag.
    pub tag: u64,
    /// For [`Ask::NeedKey`], what `factotum -g` takes: a key template, or for a bad
    /// key three lines (the key, why it is bad, a template for its replacement); for
    /// [`Ask::Confirm`], the key (public attributes, then secret names as `!name?`).
    pub text: String,
}

/// What answers the questions when nobody has `needkey` or `confirm` open: the
/// user at a terminal, or a program (see keyfile.rs).
pub trait Prompter: Send {
    /// Ask for the key a [`Question`] of kind [`Ask::NeedKey`] describes: the new
    /// key's attributes, or None if the user gave none.
    fn key(&mut self, text: &str) -> Option<Zeroizing<String>>;
    /// Ask whether the key may be used.
    fn confirm(&mut self, key: &str) -> bool;
    /// The key given was refused (`msg` says why).
    fn refused(&mut self, _msg: &str) {}
}

/// The questions of one file.
#[derive(Default)]
struct Asker {
    q: Mutex<Questions>,
    /// Woken when a question is queued for the file's reader.
    ready: Notify,
    /// factotum's own prompter, asked when nobody has the file open.
    prompter: Mutex<Option<std::sync::mpsc::Sender<Question>>>,
}

#[derive(Default)]
struct Questions {
    /// Questions the reader has not read yet: (tag, line).
    unread: VecDeque<(u64, String)>,
    /// Conversations waiting for an answer (true: key added, or yes).
    waiting: HashMap<u64, oneshot::Sender<bool>>,
}

/// The shared state: the key ring, the log, the exclusive-use flags.
pub struct Factotum {
    owner: String,
    ring: Mutex<Ring>,
    log: Mutex<Log>,
    debug: AtomicBool,
    inuse: [AtomicBool; 3],
    /// `-a authaddr`: where protocols get tickets when the key names no `auth=`.
    authaddr: Option<String>,
    /// Questions on `confirm` and `needkey`, indexed by [`Ask`].
    asks: [Asker; 2],
    /// The next conversation's tag.
    tags: AtomicU64,
    /// How long a question waits for its answer.
    wait: Duration,
}

/// Takes a question back when its conversation stops waiting (answered, timed out,
/// or its rpc read flushed).
struct Withdraw<'a> {
    a: &'a Asker,
    tag: u64,
}

impl Drop for Withdraw<'_> {
    fn drop(&mut self) {
        let mut q = lock(&self.a.q);
        q.waiting.remove(&self.tag);
        q.unread.retain(|(t, _)| *t != self.tag);
    }
}

#[derive(Default)]
struct Log {
    lines: VecDeque<String>,
    /// Bytes dropped off the front, so offsets stay meaningful.
    base: u64,
}

/// A needkey template with the attributes its protocol's keys need (its
/// `keyprompt`) asked for where it lacks them, as plan9port's questions have them.
fn with_keyprompt(t: &Attrs) -> Attrs {
    let mut a = t.clone();
    if let Some(kp) = t
        .find("proto")
        .and_then(proto_lookup)
        .and_then(|d| Attrs::parse(d.keyprompt).ok())
    {
        for q in kp.0 {
            if !a.0.iter().any(|x| x.name == q.name) {
                a.0.push(q);
            }
        }
    }
    a
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn slice(text: &[u8], offset: u64, count: u32) -> Bytes {
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    let end = start.saturating_add(count as usize).min(text.len());
    Bytes::copy_from_slice(&text[start..end])
}

impl Factotum {
    /// A factotum owned by `owner` (the user who may use confirm, needkey, ctl, log).
    pub fn new(owner: &str) -> Factotum {
        Factotum {
            owner: owner.into(),
            ring: Mutex::new(Ring::new()),
            log: Mutex::new(Log::default()),
            debug: AtomicBool::new(false),
            inuse: Default::default(),
            authaddr: None,
            asks: Default::default(),
            tags: AtomicU64::new(1),
            wait: WAIT,
        }
    }

    /// Use `addr` as the authentication server (factotum's `-a`).
    pub fn with_authaddr(mut self, addr: Option<String>) -> Factotum {
        self.authaddr = addr;
        self
    }

    /// Wait at most `d` for answers on `needkey` and `confirm` (default [`WAIT`]).
    pub fn with_wait(mut self, d: Duration) -> Factotum {
        self.wait = d;
        self
    }

    /// Answer questions with `p` when nobody has `needkey` or `confirm` open: a thread
    /// that asks one question at a time, adds the keys given and answers.
    pub fn prompt_with(self: &Arc<Self>, mut p: Box<dyn Prompter>) -> std::thread::JoinHandle<()> {
        let (tx, rx) = std::sync::mpsc::channel::<Question>();
        for a in &self.asks {
            *lock(&a.prompter) = Some(tx.clone());
        }
        let me = Arc::clone(self);
        std::thread::spawn(move || {
            for q in rx {
                // A question whose conversation gave up is not put.
                if !lock(&me.asks[q.kind as usize].q)
                    .waiting
                    .contains_key(&q.tag)
                {
                    continue;
                }
                match q.kind {
                    Ask::NeedKey => match p.key(&q.text) {
                        Some(k) => {
                            if let Err(e) = me.add_key(&k) {
                                p.refused(&e);
                            }
                            let _ = me.answer_tag(Ask::NeedKey, q.tag, true);
                        }
                        // No key given: the conversation is answered as if nobody
                        // could have been asked.
                        None => {
                            lock(&me.asks[Ask::NeedKey as usize].q)
                                .waiting
                                .remove(&q.tag);
                        }
                    },
                    Ask::Confirm => {
                        let yes = p.confirm(&q.text);
                        let _ = me.answer_tag(Ask::Confirm, q.tag, yes);
                    }
                }
            }
        })
    }

    /// Whether a question of this kind can be put (and answered).
    fn can_ask(&self, kind: Ask) -> bool {
        self.inuse[kind as usize].load(Ordering::Acquire)
            || lock(&self.asks[kind as usize].prompter).is_some()
    }

    /// Put a question for the conversation `tag` and wait for its answer: None if
    /// nobody can answer, or nobody did in time. `line` is for the file's reader,
    /// `text` for the prompter.
    async fn ask(&self, kind: Ask, tag: u64, line: String, text: String) -> Option<bool> {
        let a = &self.asks[kind as usize];
        let (tx, rx) = oneshot::channel();
        {
            let mut q = lock(&a.q);
            if self.inuse[kind as usize].load(Ordering::Acquire) {
                q.unread.push_back((tag, line));
                a.ready.notify_one();
            } else {
                let p = lock(&a.prompter);
                let sent = p
                    .as_ref()
                    .is_some_and(|p| p.send(Question { kind, tag, text }).is_ok());
                if !sent {
                    return None;
                }
            }
            q.waiting.insert(tag, tx);
        }
        let _withdraw = Withdraw { a, tag };
        match tokio::time::timeout(self.wait, rx).await {
            Ok(Ok(v)) => Some(v),
            _ => None,
        }
    }

    /// Answer the question of conversation `tag`.
    fn answer_tag(&self, kind: Ask, tag: u64, v: bool) -> Result<(), String> {
        let tx = lock(&self.asks[kind as usize].q).waiting.remove(&tag);
        match tx {
            Some(tx) => {
                let _ = tx.send(v);
                Ok(())
            }
            None => Err("tag not found".into()),
        }
    }

    /// A write to `needkey` (`tag=N`) or `confirm` (`tag=N answer=yes|no`).
    pub fn answer(&self, kind: Ask, text: &str) -> Result<(), String> {
        let a = Attrs::parse(text).map_err(|_| "bad attr".to_string())?;
        if a.is_empty() {
            return Err(match kind {
                Ask::NeedKey => "empty write",
                Ask::Confirm => "bad attr",
            }
            .into());
        }
        let Some(t) = a.find("tag") else {
            if kind == Ask::Confirm {
                self.flog("bad confirm write: no tag".into());
            }
            return Err("no tag".into());
        };
        let v = match kind {
            Ask::NeedKey => true,
            Ask::Confirm => match a.find("answer") {
                Some("yes") => true,
                Some("no") => false,
                Some(_) => {
                    self.flog("bad confirm write: bad answer".into());
                    return Err("bad answer".into());
                }
                None => {
                    self.flog("bad confirm write: no answer".into());
                    return Err("no answer".into());
                }
            },
        };
        let tag = t.parse::<u64>().map_err(|_| "tag not found".to_string())?;
        self.answer_tag(kind, tag, v)
    }

    /// A read of `needkey` or `confirm`: the next question, waiting for one.
    async fn question(&self, kind: Ask, count: u32) -> Bytes {
        let a = &self.asks[kind as usize];
        loop {
            if let Some((_, line)) = lock(&a.q).unread.pop_front() {
                let n = count as usize;
                let mut b = line.into_bytes();
                if b.len() + 1 > n {
                    // Cut short, at a character's start, and marked, as plan9port.
                    let mut cut = n.saturating_sub(5);
                    while cut > 0 && b[cut] & 0xC0 == 0x80 {
                        cut -= 1;
                    }
                    b.truncate(cut);
                    b.extend_from_slice(b"...");
                }
                b.push(b'\n');
                return Bytes::from(b);
            }
            a.ready.notified().await;
        }
    }

    /// A read of `rpc`: run the conversation's request, putting its questions and
    /// waiting for their answers.
    async fn rpc_read(
        &self,
        c: &Caller,
        conv: &Mutex<Conv>,
        tag: u64,
    ) -> Result<SecretBytes, RpcError> {
        let mut first = true;
        loop {
            let out = {
                // A copy of the ring (secrets in it are zeroed when dropped), so a
                // protocol waiting on the auth server holds up no other conversation.
                let ring = lock(&self.ring).clone();
                let env = Env {
                    ring: &ring,
                    sysuser: &c.uname,
                    owner: &self.owner,
                    authaddr: self.authaddr.as_deref(),
                    needkey: self.can_ask(Ask::NeedKey),
                    confirm: self.can_ask(Ask::Confirm),
                };
                let mut cv = lock(conv);
                if std::mem::take(&mut first) {
                    cv.run(env)?
                } else {
                    cv.resume(env)?
                }
            };
            match out {
                Outcome::Reply(r) => return Ok(r),
                Outcome::NeedKey(t) => {
                    let text = with_keyprompt(&t).public();
                    self.flog(format!("needkey {text}"));
                    let line = format!("needkey tag={tag} {text}");
                    if self.ask(Ask::NeedKey, tag, line, text).await.is_none() {
                        lock(conv).abandon();
                        return Ok(Outcome::NeedKey(t).unanswered());
                    }
                }
                Outcome::BadKey(m) => {
                    self.flog("badkey".into());
                    let line = format!("badkey tag={tag} {m}");
                    if self.ask(Ask::NeedKey, tag, line, m.clone()).await.is_none() {
                        lock(conv).abandon();
                        return Ok(Outcome::BadKey(m).unanswered());
                    }
                }
                Outcome::Confirm(k) => {
                    let text = format!("{} {}", k.public, k.secret.names())
                        .trim_end()
                        .to_string();
                    self.flog(format!("confirm {text}"));
                    let line = format!("confirm tag={tag} {text}");
                    let yes = self.ask(Ask::Confirm, tag, line, text.clone()).await == Some(true);
                    self.flog(format!("confirm={} {text}", yes as u8));
                    lock(conv).confirmed(k, yes);
                }
            }
        }
    }

    /// Note something in the log. Callers pass only public text.
    pub fn flog(&self, s: String) {
        if self.debug.load(Ordering::Relaxed) {
            eprintln!("factotum: {s}");
        }
        let mut l = lock(&self.log);
        l.lines.push_back(s + "\n");
        while l.lines.len() > LOG_LINES {
            if let Some(old) = l.lines.pop_front() {
                l.base += old.len() as u64;
            }
        }
    }

    /// Log the outcome of a conversation (its verb and, for errors, the message;
    /// never protocol data).
    fn log_reply(&self, rep: &[u8]) {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        if rep.starts_with(b"error ") || rep.starts_with(b"done") {
            self.flog(format!("rpc: {}", text(rep)));
        } else if rep.starts_with(b"needkey ") {
            self.flog("rpc: needkey".into());
        } else if rep.starts_with(b"badkey ") {
            self.flog("rpc: badkey".into());
        }
    }

    /// Carry out one line written to `ctl` (plan9port's `ctlwrite`).
    pub fn ctl(&self, text: &str) -> Result<(), String> {
        let a = text.trim_start_matches([' ', '\t', '\n']);
        if a.is_empty() || a.starts_with('#') {
            return Ok(());
        }
        let a = match a.find('\n') {
            Some(i) if i + 1 != a.len() => return Err("multiline write not allowed".into()),
            Some(i) => &a[..i],
            None => a,
        };
        let (verb, rest) = a.split_once(' ').unwrap_or((a, ""));
        match verb {
            "key" => self.add_key(rest),
            "delkey" => {
                let pat = Attrs::parse(rest).map_err(|e| e.to_string())?;
                if pat
                    .0
                    .iter()
                    .any(|x| x.is_secret() && x.kind != crate::attr::Kind::Query)
                {
                    return Err("only !private? patterns are allowed for private fields".into());
                }
                self.flog(format!("delkey {}", pat.public()));
                let n = lock(&self.ring).delete(&pat);
                if n == 0 {
                    return Err("found no keys to delete".into());
                }
                Ok(())
            }
            "debug" => {
                let d = !self.debug.fetch_xor(true, Ordering::Relaxed);
                self.flog(format!("debug = {}", d as u8));
                Ok(())
            }
            _ => Err(format!("unknown verb {verb}")),
        }
    }

    fn add_key(&self, text: &str) -> Result<(), String> {
        let attrs = Attrs::parse(text).map_err(|e| e.to_string())?;
        let protos: Vec<String> = attrs
            .0
            .iter()
            .filter(|x| x.name == "proto")
            .map(|x| x.value.as_str().to_string())
            .collect();
        if protos.is_empty() {
            return Err("key without protos".into());
        }
        let mut rest = attrs;
        rest.remove("proto");
        let mut err = None;
        for p in protos {
            let Some(desc) = proto_lookup(&p) else {
                let e = format!("unknown proto {p}");
                self.flog(format!("addkey: {e}"));
                err = Some(e);
                continue;
            };
            let mut key = {
                let mut a = Attrs::new();
                a.set("proto", desc.name);
                a.0.extend(rest.0.iter().cloned());
                Key::from_attrs(a)
            };
            if let Some(check) = desc.check {
                if let Err(e) = check(&key) {
                    self.flog(format!("addkey {}: {e}", desc.name));
                    err = Some(e);
                    continue;
                }
            } else if let Ok(kp) = Attrs::parse(desc.keyprompt) {
                if !key.matches(&kp) {
                    let e = format!("missing attributes -- want {}", desc.keyprompt);
                    self.flog(format!("addkey {}: {e}", desc.name));
                    err = Some(e);
                    continue;
                }
            }
            if let Some(prepare) = desc.prepare {
                match prepare(&key) {
                    Ok(d) => key.derived = Some(d),
                    Err(e) => {
                        self.flog(format!("addkey {}: {e}", desc.name));
                        err = Some(e);
                        continue;
                    }
                }
            }
            self.flog(format!("adding key: {}", key.listing()));
            lock(&self.ring).add(key);
        }
        match err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What reading `ctl` shows: every key, secrets by name only.
    pub fn listing(&self) -> String {
        lock(&self.ring).listing()
    }

    fn stat_of(&self, n: Node) -> Stat {
        let (name, mode) = n.entry();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        Stat {
            ty: 0,
            dev: 0,
            qid: n.qid(),
            mode,
            atime: now,
            mtime: now,
            length: 0,
            name: name.into(),
            uid: self.owner.clone(),
            gid: self.owner.clone(),
            muid: String::new(),
        }
    }
}

impl Filesystem for Factotum {
    type Fid = Fid;

    async fn attach(&self, _c: &Caller, _aname: &str, _afid: Option<&Fid>) -> FsResult<(Fid, Qid)> {
        Ok((
            Fid {
                node: Node::Root,
                open: None,
            },
            Node::Root.qid(),
        ))
    }

    async fn walk(&self, _c: &Caller, fid: &Fid, names: &[String]) -> FsResult<Walked<Fid>> {
        let mut cur = fid.node;
        let mut qids = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let next = if cur != Node::Root {
                None
            } else if name == ".." {
                Some(Node::Root)
            } else {
                FILES.iter().find(|f| f.1 == name).map(|f| f.0)
            };
            match next {
                Some(n) => {
                    cur = n;
                    qids.push(n.qid());
                }
                None if i == 0 => {
                    return Err(Ename::from(if fid.node == Node::Root {
                        errstr::ENONEXIST
                    } else {
                        errstr::EWALKNODIR
                    }));
                }
                None => return Ok(Walked { qids, fid: None }),
            }
        }
        Ok(Walked {
            qids,
            fid: Some(Fid {
                node: cur,
                open: None,
            }),
        })
    }

    async fn open(&self, c: &Caller, fid: &Fid, mode: u8) -> FsResult<Opened<Fid>> {
        let (_, perm) = fid.node.entry();
        let bits = if *c.uname == *self.owner {
            (perm >> 6) & 7
        } else {
            perm & 7
        };
        const NEED: [u32; 4] = [4, 2, 6, 1];
        if mode & !(3 | OTRUNC) != 0 || NEED[(mode & 3) as usize] & !bits != 0 {
            return Err(Ename::from(errstr::EPERM));
        }
        if let Some(i) = fid.node.excl_index() {
            if self.inuse[i].swap(true, Ordering::AcqRel) {
                return Err(Ename::from(errstr::EINUSE));
            }
        }
        let open = if fid.node == Node::Rpc {
            Open::Rpc(
                Box::new(Mutex::new(Conv::new())),
                self.tags.fetch_add(1, Ordering::Relaxed),
            )
        } else {
            Open::Plain
        };
        Ok(Opened {
            fid: Fid {
                node: fid.node,
                open: Some(open),
            },
            qid: fid.node.qid(),
            iounit: 0,
        })
    }

    async fn readdir(&self, _c: &Caller, _fid: &Fid) -> FsResult<Vec<Stat>> {
        Ok(FILES.iter().map(|f| self.stat_of(f.0)).collect())
    }

    async fn read(&self, c: &Caller, fid: &Fid, offset: u64, count: u32) -> FsResult<Data> {
        match (&fid.open, fid.node) {
            (Some(Open::Rpc(conv, tag)), _) => {
                let r = self.rpc_read(c, conv, *tag).await;
                if let Ok(rep) = &r {
                    self.log_reply(&rep.0);
                }
                match r {
                    Ok(rep) => {
                        let n = rep.0.len().min(count as usize);
                        Ok(Data::Bytes(Bytes::copy_from_slice(&rep.0[..n])))
                    }
                    Err(e) => Err(Ename::from(e.to_string())),
                }
            }
            (_, Node::Ctl) => Ok(Data::Bytes(slice(self.listing().as_bytes(), offset, count))),
            (_, Node::Proto) => {
                let mut s = String::new();
                for p in protocols() {
                    s.push_str(p.name);
                    s.push('\n');
                }
                Ok(Data::Bytes(slice(s.as_bytes(), offset, count)))
            }
            (_, Node::Log) => {
                let l = lock(&self.log);
                let all: String = l.lines.iter().map(String::as_str).collect();
                let off = offset.saturating_sub(l.base);
                Ok(Data::Bytes(slice(all.as_bytes(), off, count)))
            }
            // As plan9port, a read too short for any question takes none.
            (_, Node::Confirm | Node::Needkey) if count < 5 => {
                Err(Ename::from("factotum: read request count too short"))
            }
            (_, Node::Confirm) => Ok(Data::Bytes(self.question(Ask::Confirm, count).await)),
            (_, Node::Needkey) => Ok(Data::Bytes(self.question(Ask::NeedKey, count).await)),
            (_, Node::Rpc | Node::Root) => Err(Ename::from(errstr::EBADUSE)),
        }
    }

    async fn write(&self, _c: &Caller, fid: &Fid, _offset: u64, data: Bytes) -> FsResult<u32> {
        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
        match (&fid.open, fid.node) {
            (Some(Open::Rpc(conv, _)), _) => match lock(conv).write(&data) {
                Ok(()) => Ok(n),
                Err(e) => Err(Ename::from(e.to_string())),
            },
            (_, Node::Ctl) => {
                let text = String::from_utf8_lossy(&data);
                self.ctl(&text).map_err(Ename::from)?;
                Ok(n)
            }
            (_, Node::Confirm) => {
                let text = String::from_utf8_lossy(&data);
                self.answer(Ask::Confirm, &text).map_err(Ename::from)?;
                Ok(n)
            }
            (_, Node::Needkey) => {
                let text = String::from_utf8_lossy(&data);
                self.answer(Ask::NeedKey, &text).map_err(Ename::from)?;
                Ok(n)
            }
            _ => Err(Ename::from(errstr::ENOWRITE)),
        }
    }

    async fn stat(&self, _c: &Caller, fid: &Fid) -> FsResult<Stat> {
        Ok(self.stat_of(fid.node))
    }

    async fn clunk(&self, _c: &Caller, fid: &Fid) {
        if fid.open.is_some() {
            let kind = match fid.node {
                Node::Confirm => Some(Ask::Confirm),
                Node::Needkey => Some(Ask::NeedKey),
                _ => None,
            };
            if let Some(kind) = kind {
                // The reader went away: nobody will answer what it was asked.
                let mut q = lock(&self.asks[kind as usize].q);
                self.inuse[kind as usize].store(false, Ordering::Release);
                q.unread.clear();
                q.waiting.clear();
            } else if let Some(i) = fid.node.excl_index() {
                self.inuse[i].store(false, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lib9::fcall::{ORDWR, OREAD};

    fn caller() -> Caller {
        Caller {
            uname: "glenda".into(),
        }
    }

    async fn open(f: &Factotum, name: &str, mode: u8) -> Arc<Fid> {
        let c = caller();
        let (root, _) = f.attach(&c, "", None).await.unwrap();
        let w = f.walk(&c, &root, &[name.to_string()]).await.unwrap();
        let fid = w.fid.unwrap();
        Arc::new(f.open(&c, &fid, mode).await.unwrap().fid)
    }

    async fn write(f: &Factotum, fid: &Fid, s: &str) -> Result<u32, String> {
        f.write(&caller(), fid, 0, Bytes::copy_from_slice(s.as_bytes()))
            .await
            .map_err(|e| e.to_string())
    }

    /// A read, given at most 10 seconds.
    async fn read(f: &Factotum, fid: &Fid) -> String {
        let c = caller();
        let r = tokio::time::timeout(Duration::from_secs(10), f.read(&c, fid, 0, 8192));
        match r.await.expect("read timed out").unwrap() {
            Data::Bytes(b) => String::from_utf8(b.to_vec()).unwrap(),
            Data::File { .. } => panic!("a file"),
        }
    }

    /// Start `rpc` and write `read`: the read, in a task of its own.
    async fn waiting_read(
        f: &Arc<Factotum>,
        start: &str,
    ) -> (Arc<Fid>, tokio::task::JoinHandle<String>) {
        let rpc = open(f, "rpc", ORDWR).await;
        write(f, &rpc, start).await.unwrap();
        assert_eq!(read(f, &rpc).await, "ok");
        write(f, &rpc, "read").await.unwrap();
        let (f2, rpc2) = (Arc::clone(f), Arc::clone(&rpc));
        let h = tokio::spawn(async move { read(&f2, &rpc2).await });
        (rpc, h)
    }

    fn tag_of(q: &str) -> String {
        q.split_whitespace()
            .find(|w| w.starts_with("tag="))
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn needkey_round_trip() {
        let f = Arc::new(Factotum::new("glenda"));
        let nk = open(&f, "needkey", ORDWR).await;
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=bob").await;
        let q = read(&f, &nk).await;
        assert!(
            q.starts_with("needkey tag=")
                && q.ends_with(" proto=pass role=client user=bob !password?\n"),
            "{q:?}"
        );
        assert!(!h.is_finished());
        f.ctl("key proto=pass user=bob !password=pw").unwrap();
        write(&f, &nk, &tag_of(&q)).await.unwrap();
        assert_eq!(h.await.unwrap(), "ok bob pw");
        // Answered once.
        assert_eq!(
            write(&f, &nk, &tag_of(&q)).await.unwrap_err(),
            "tag not found"
        );
        assert_eq!(write(&f, &nk, "x=1").await.unwrap_err(), "no tag");
        assert_eq!(write(&f, &nk, "").await.unwrap_err(), "empty write");
        assert_eq!(write(&f, &nk, "tag=zz").await.unwrap_err(), "tag not found");
        // A read too short for the question gets it cut short.
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=dave").await;
        let c = caller();
        let r = tokio::time::timeout(Duration::from_secs(10), f.read(&c, &nk, 0, 20));
        let q = match r.await.expect("a question").unwrap() {
            Data::Bytes(b) => String::from_utf8(b.to_vec()).unwrap(),
            Data::File { .. } => panic!("a file"),
        };
        assert_eq!(q.len(), 19);
        assert!(
            q.starts_with("needkey tag=") && q.ends_with("...\n"),
            "{q:?}"
        );
        h.abort();
        let e = f
            .read(&caller(), &nk, 0, 4)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(e.as_deref(), Some("factotum: read request count too short"));

        // Answered with no key added: the conversation fails.
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=carol").await;
        let q = read(&f, &nk).await;
        write(&f, &nk, &tag_of(&q)).await.unwrap();
        assert_eq!(h.await.unwrap(), "error pass client nascent: no key found");
    }

    #[tokio::test]
    async fn unanswered_questions() {
        let f = Arc::new(Factotum::new("glenda").with_wait(Duration::from_millis(200)));
        let nk = open(&f, "needkey", ORDWR).await;
        // Nobody answers in time: the needkey reply, and the question is taken back.
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=bob").await;
        assert_eq!(h.await.unwrap(), "needkey proto=pass role=client user=bob");
        assert!(lock(&f.asks[1].q).unread.is_empty());
        assert!(lock(&f.asks[1].q).waiting.is_empty());

        // The reader goes away: the conversation does not wait for the time out.
        let f = Arc::new(Factotum::new("glenda"));
        let nk2 = open(&f, "needkey", ORDWR).await;
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=bob").await;
        let q = read(&f, &nk2).await;
        assert!(q.starts_with("needkey tag="), "{q}");
        f.clunk(&caller(), &nk2).await;
        let r = tokio::time::timeout(Duration::from_secs(10), h).await;
        assert_eq!(
            r.unwrap().unwrap(),
            "needkey proto=pass role=client user=bob"
        );

        // A flushed rpc read takes its question back.
        let nk3 = open(&f, "needkey", ORDWR).await;
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=bob").await;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while lock(&f.asks[1].q).waiting.is_empty() {
            assert!(std::time::Instant::now() < deadline, "no question");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        h.abort();
        let _ = h.await;
        assert!(lock(&f.asks[1].q).unread.is_empty());
        assert!(lock(&f.asks[1].q).waiting.is_empty());
        drop(nk3);
        drop(nk);
    }

    #[tokio::test]
    async fn confirm_yes_and_no() {
        let f = Arc::new(Factotum::new("glenda"));
        f.ctl("key proto=pass user=u confirm !password=p").unwrap();
        let cf = open(&f, "confirm", ORDWR).await;
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client").await;
        let q = read(&f, &cf).await;
        assert!(q.starts_with("confirm tag="), "{q}");
        assert!(
            q.ends_with(" proto=pass user=u confirm='' !password?\n"),
            "{q}"
        );
        let t = tag_of(&q);
        assert_eq!(write(&f, &cf, &t).await.unwrap_err(), "no answer");
        assert_eq!(
            write(&f, &cf, &format!("{t} answer=maybe"))
                .await
                .unwrap_err(),
            "bad answer"
        );
        assert_eq!(write(&f, &cf, "answer=yes").await.unwrap_err(), "no tag");
        write(&f, &cf, &format!("{t} answer=yes")).await.unwrap();
        assert_eq!(h.await.unwrap(), "ok u p");

        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client").await;
        let q = read(&f, &cf).await;
        write(&f, &cf, &format!("{} answer=no", tag_of(&q)))
            .await
            .unwrap();
        assert_eq!(h.await.unwrap(), "needkey proto=pass role=client");
        let log: String = lock(&f.log).lines.iter().cloned().collect();
        assert!(log.contains("confirm=1 proto=pass"), "{log}");
        assert!(log.contains("confirm=0 proto=pass"), "{log}");
        assert!(!log.contains("=p "), "{log}");
    }

    struct Fake(Arc<Mutex<Vec<String>>>);

    impl Prompter for Fake {
        fn key(&mut self, text: &str) -> Option<Zeroizing<String>> {
            lock(&self.0).push(format!("key {text}"));
            if text.contains("user=nobody") {
                return None;
            }
            Some(Zeroizing::new("proto=pass user=bob !password=pw".into()))
        }
        fn confirm(&mut self, key: &str) -> bool {
            lock(&self.0).push(format!("confirm {key}"));
            true
        }
    }

    #[tokio::test]
    async fn own_prompter() {
        let f = Arc::new(Factotum::new("glenda"));
        let asked = Arc::new(Mutex::new(Vec::new()));
        f.prompt_with(Box::new(Fake(Arc::clone(&asked))));
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=bob").await;
        assert_eq!(h.await.unwrap(), "ok bob pw");
        f.ctl("key proto=pass user=c confirm !password=x").unwrap();
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=c").await;
        assert_eq!(h.await.unwrap(), "ok c x");
        assert_eq!(
            *lock(&asked),
            [
                "key proto=pass role=client user=bob !password?",
                "confirm proto=pass user=c confirm='' !password?"
            ]
        );
        // The user gives no key: the reply is as if nobody could be asked.
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=nobody").await;
        let r = tokio::time::timeout(Duration::from_secs(10), h).await;
        assert_eq!(
            r.unwrap().unwrap(),
            "needkey proto=pass role=client user=nobody"
        );
        lock(&asked).pop();
        // A reader of needkey comes first.
        let nk = open(&f, "needkey", OREAD).await;
        let (_rpc, h) = waiting_read(&f, "start proto=pass role=client user=dan").await;
        let q = read(&f, &nk).await;
        assert!(q.contains("user=dan"), "{q}");
        assert_eq!(lock(&asked).len(), 2);
        h.abort();
    }

    #[test]
    fn ctl_lines() {
        let f = Factotum::new("glenda");
        assert_eq!(
            f.ctl("key user=u !password=p"),
            Err("key without protos".into())
        );
        assert_eq!(
            f.ctl("key proto=nosuch user=u"),
            Err("unknown proto nosuch".into())
        );
        assert_eq!(
            f.ctl("key proto=pass user=u"),
            Err("missing attributes -- want user? !password?".into())
        );
        assert_eq!(f.ctl("key proto=pass user=u !password='s e'\n"), Ok(()));
        assert_eq!(
            f.ctl("key proto=pass user=u\nkey x"),
            Err("multiline write not allowed".into())
        );
        assert_eq!(f.ctl("frob"), Err("unknown verb frob".into()));
        assert_eq!(f.ctl("# comment"), Ok(()));
        assert_eq!(f.listing(), "key proto=pass user=u !password?\n");
        assert_eq!(
            f.ctl("delkey !password=x"),
            Err("only !private? patterns are allowed for private fields".into())
        );
        assert_eq!(
            f.ctl("delkey user=v"),
            Err("found no keys to delete".into())
        );
        assert_eq!(f.ctl("delkey user=u !password?"), Ok(()));
        assert_eq!(f.listing(), "");
        let log: String = lock(&f.log).lines.iter().cloned().collect();
        assert!(!log.contains("s e"), "{log}");
        assert!(log.contains("adding key: proto=pass user=u !password?"));
    }
}

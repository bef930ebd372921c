//! factotum's 9P file tree, as plan9port serves it (files at the root of the service):
//!
//! | file | mode | |
//! |---|---|---|
//! | `confirm` | 0600 DMEXCL | key-use confirmations (still to come: reads see no requests) |
//! | `needkey` | 0600 DMEXCL | key prompts (still to come: reads see no requests) |
//! | `ctl` | 0600 | `key ...`, `delkey ...`, `debug`; reading lists keys, secrets hidden |
//! | `rpc` | 0666 | each open is a private conversation ([`crate::rpc::Conv`]) |
//! | `proto` | 0444 | the protocols, one a line |
//! | `log` | 0600 DMEXCL | what factotum did, never with a secret value |
//!
//! Opens are checked as plan9port checks them: the owner bits for the user who
//! started factotum, the other bits for anyone else.

use crate::attr::{Attrs, Key, Ring};
use crate::rpc::{Conv, Env, proto_lookup, protocols};
use bytes::Bytes;
use lib9::errstr::{self, Ename};
use lib9::fcall::{DMDIR, DMEXCL, OTRUNC, QTDIR, QTFILE, Qid, Stat};
use lib9::server::{Caller, Data, Filesystem, FsResult, Opened, Walked};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

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
    Rpc(Mutex<Conv>),
    Plain,
}

/// The most log lines kept.
const LOG_LINES: usize = 1000;

/// The shared state: the key ring, the log, the exclusive-use flags.
pub struct Factotum {
    owner: String,
    ring: Mutex<Ring>,
    log: Mutex<Log>,
    debug: AtomicBool,
    inuse: [AtomicBool; 3],
    /// `-a authaddr`: where protocols get tickets when the key names no `auth=`.
    authaddr: Option<String>,
}

#[derive(Default)]
struct Log {
    lines: VecDeque<String>,
    /// Bytes dropped off the front, so offsets stay meaningful.
    base: u64,
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
        }
    }

    /// Use `addr` as the authentication server (factotum's `-a`).
    pub fn with_authaddr(mut self, addr: Option<String>) -> Factotum {
        self.authaddr = addr;
        self
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
            Open::Rpc(Mutex::new(Conv::new()))
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
            (Some(Open::Rpc(conv)), _) => {
                // A copy of the ring (secrets in it are zeroed when dropped), so a
                // protocol waiting on the auth server holds up no other conversation.
                let ring = lock(&self.ring).clone();
                let env = Env {
                    ring: &ring,
                    sysuser: &c.uname,
                    owner: &self.owner,
                    authaddr: self.authaddr.as_deref(),
                };
                let r = lock(conv).read_env(env);
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
            // Prompting for keys and confirmations is still to come: nothing is ever
            // waiting, so a read finds nothing.
            (_, Node::Confirm | Node::Needkey) => Ok(Data::Bytes(Bytes::new())),
            (_, Node::Rpc | Node::Root) => Err(Ename::from(errstr::EBADUSE)),
        }
    }

    async fn write(&self, _c: &Caller, fid: &Fid, _offset: u64, data: Bytes) -> FsResult<u32> {
        let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
        match (&fid.open, fid.node) {
            (Some(Open::Rpc(conv)), _) => match lock(conv).write(&data) {
                Ok(()) => Ok(n),
                Err(e) => Err(Ename::from(e.to_string())),
            },
            (_, Node::Ctl) => {
                let text = String::from_utf8_lossy(&data);
                self.ctl(&text).map_err(Ename::from)?;
                Ok(n)
            }
            (_, Node::Confirm | Node::Needkey) => Err(Ename::from("no outstanding request")),
            _ => Err(Ename::from(errstr::ENOWRITE)),
        }
    }

    async fn stat(&self, _c: &Caller, fid: &Fid) -> FsResult<Stat> {
        Ok(self.stat_of(fid.node))
    }

    async fn clunk(&self, _c: &Caller, fid: &Fid) {
        if fid.open.is_some() {
            if let Some(i) = fid.node.excl_index() {
                self.inuse[i].store(false, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

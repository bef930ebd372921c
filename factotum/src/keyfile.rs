//! The encrypted key file factotum loads at start, and the user's terminal: reading a
//! password without echo, and prompting for keys and confirmations
//! ([`TtyPrompter`], [`ProgramPrompter`], and `factotum -g`).
//!
//! The file (by default `$HOME/lib/factotum.keys`) holds the `key ...` lines one would
//! write to `ctl`, sealed with a key derived from a password. Its layout:
//!
//! | bytes | |
//! |---|---|
//! | 8 | magic `9fkeys` and the version, 0 1 |
//! | 12 | Argon2id memory (KiB), passes, lanes: three 4-byte little-endian numbers |
//! | 16 | salt |
//! | 24 | XChaCha20-Poly1305 nonce |
//! | 16 | password check |
//! | rest | the text, sealed with XChaCha20-Poly1305, the header above as associated data |
//!
//! Argon2id turns the password and salt into 48 bytes: the first 32 are the cipher's
//! key, the last 16 the password check, so a wrong password is told apart from a
//! damaged or altered file (which fails to open with the right password). The check
//! gives a guesser nothing the sealed text would not.
//!
//! Every buffer that holds a password, a derived key or the opened text is zeroed when
//! dropped.

use crate::attr::{Attrs, Kind, Secret, quote};
use crate::fs::{Factotum, Prompter};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// The first bytes of a key file: a name and the format's version.
pub const MAGIC: &[u8; 8] = b"9fkeys\x00\x01";
const SALT: usize = 16;
const NONCE: usize = 24;
const CHECK: usize = 16;
/// The header's length: magic, parameters, salt, nonce, check.
pub const HEADER: usize = 8 + 12 + SALT + NONCE + CHECK;
/// The largest key file read (and the most text written to one).
pub const MAX_FILE: usize = 1 << 20;
/// The longest line read from the terminal or a password descriptor.
pub const MAX_LINE: usize = 4096;

/// Argon2id's cost, kept in the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    /// Memory, in KiB.
    pub m_kib: u32,
    /// Passes over the memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for Params {
    /// 64 MiB, 3 passes, 1 lane.
    fn default() -> Params {
        Params {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl Params {
    /// Whether a file's parameters are sane: at most 1 GiB of memory, 64 passes, 16
    /// lanes (a damaged or hostile file may not make us allocate without bound).
    fn reasonable(&self) -> bool {
        (1..=16).contains(&self.p)
            && (1..=64).contains(&self.t)
            && self.m_kib >= 8 * self.p
            && self.m_kib <= 1 << 20
    }
}

/// Why a key file could not be read, opened or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{0}: {1}")]
    Io(String, #[source] io::Error),
    #[error("{0}: does not exist")]
    NotFound(String),
    #[error("{0}: not a regular file")]
    NotFile(String),
    #[error("{path}: owned by uid {uid}, not by you (uid {me})")]
    Owner { path: String, uid: u32, me: u32 },
    #[error("{path}: mode {mode:04o}; a key file must be 0600 (chmod 600 {path})")]
    Mode { path: String, mode: u32 },
    #[error("{0}: larger than 1 MiB")]
    TooLarge(String),
    #[error("not a factotum key file")]
    NotKeyFile,
    #[error("key file version {0} is not known")]
    Version(u16),
    #[error("key file has unreasonable key derivation parameters")]
    Params,
    #[error("key derivation failed: {0}")]
    Kdf(String),
    #[error("wrong password")]
    WrongPassword,
    #[error("key file damaged or altered: it does not open")]
    Damaged,
    #[error("key file text is not UTF-8")]
    NotText,
    #[error("no $HOME for the default key file")]
    NoHome,
    #[error("cannot make random numbers: {0}")]
    Random(String),
}

/// `$HOME/lib/factotum.keys`.
pub fn default_path() -> Result<PathBuf, KeyFileError> {
    match std::env::var_os("HOME") {
        Some(h) if !h.is_empty() => Ok(Path::new(&h).join("lib").join("factotum.keys")),
        _ => Err(KeyFileError::NoHome),
    }
}

fn derive(password: &[u8], salt: &[u8], p: Params) -> Result<Zeroizing<[u8; 48]>, KeyFileError> {
    let params = argon2::Params::new(p.m_kib, p.t, p.p, Some(48))
        .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 48]);
    a.hash_password_into(password, salt, &mut out[..])
        .map_err(|e| KeyFileError::Kdf(e.to_string()))?;
    Ok(out)
}

/// The parameters of a key file's header, checking its magic and version.
pub fn header(file: &[u8]) -> Result<Params, KeyFileError> {
    if file.len() < 8 || file[..6] != MAGIC[..6] {
        return Err(KeyFileError::NotKeyFile);
    }
    let v = u16::from_be_bytes([file[6], file[7]]);
    if file[6..8] != MAGIC[6..8] {
        return Err(KeyFileError::Version(v));
    }
    if file.len() < HEADER + 16 {
        return Err(KeyFileError::Damaged);
    }
    let n = |i: usize| u32::from_le_bytes([file[i], file[i + 1], file[i + 2], file[i + 3]]);
    let p = Params {
        m_kib: n(8),
        t: n(12),
        p: n(16),
    };
    if !p.reasonable() {
        return Err(KeyFileError::Params);
    }
    Ok(p)
}

/// Seal `text` under `password` with the cost `p`: the whole key file.
pub fn seal(password: &[u8], text: &[u8], p: Params) -> Result<Vec<u8>, KeyFileError> {
    if !p.reasonable() {
        return Err(KeyFileError::Params);
    }
    let mut rand = [0u8; SALT + NONCE];
    getrandom::fill(&mut rand).map_err(|e| KeyFileError::Random(e.to_string()))?;
    let (salt, nonce) = rand.split_at(SALT);
    let k = derive(password, salt, p)?;
    let mut out = Vec::with_capacity(HEADER + text.len() + 16);
    out.extend_from_slice(MAGIC);
    for x in [p.m_kib, p.t, p.p] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(salt);
    out.extend_from_slice(nonce);
    out.extend_from_slice(&k[32..]);
    let cipher = XChaCha20Poly1305::new_from_slice(&k[..32]).map_err(|_| KeyFileError::Params)?;
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: text,
                aad: &out,
            },
        )
        .map_err(|_| KeyFileError::Damaged)?;
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Open a key file with `password`: its text.
pub fn open(password: &[u8], file: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let p = header(file)?;
    let salt = &file[20..20 + SALT];
    let nonce = &file[20 + SALT..20 + SALT + NONCE];
    let check = &file[HEADER - CHECK..HEADER];
    let k = derive(password, salt, p)?;
    if !bool::from(k[32..].ct_eq(check)) {
        return Err(KeyFileError::WrongPassword);
    }
    let cipher = XChaCha20Poly1305::new_from_slice(&k[..32]).map_err(|_| KeyFileError::Params)?;
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: &file[HEADER..],
                aad: &file[..HEADER],
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| KeyFileError::Damaged)
}

/// Read a key file, refusing one that is not a regular file owned by us with no
/// permission for group or others.
pub fn read(path: &Path) -> Result<Vec<u8>, KeyFileError> {
    let name = path.display().to_string();
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => KeyFileError::NotFound(name.clone()),
        _ => KeyFileError::Io(name.clone(), e),
    })?;
    let md = f
        .metadata()
        .map_err(|e| KeyFileError::Io(name.clone(), e))?;
    if !md.is_file() {
        return Err(KeyFileError::NotFile(name));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if md.uid() != me {
        return Err(KeyFileError::Owner {
            path: name,
            uid: md.uid(),
            me,
        });
    }
    if md.mode() & 0o077 != 0 {
        return Err(KeyFileError::Mode {
            path: name,
            mode: md.mode() & 0o7777,
        });
    }
    if md.len() > (MAX_FILE + HEADER + 16) as u64 {
        return Err(KeyFileError::TooLarge(name));
    }
    let mut v = Vec::with_capacity(md.len() as usize);
    Read::by_ref(&mut f)
        .take((MAX_FILE + HEADER + 17) as u64)
        .read_to_end(&mut v)
        .map_err(|e| KeyFileError::Io(name.clone(), e))?;
    if v.len() > MAX_FILE + HEADER + 16 {
        return Err(KeyFileError::TooLarge(name));
    }
    Ok(v)
}

/// Write a key file: a new file, mode 0600, renamed over the old one (the directory
/// is made, mode 0700, if missing).
pub fn write(path: &Path, data: &[u8]) -> Result<(), KeyFileError> {
    let name = path.display().to_string();
    let io = |e| KeyFileError::Io(name.clone(), e);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| KeyFileError::Io(dir.display().to_string(), e))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".new{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    let done = f
        .write_all(data)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(io(e));
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The lines of a key file's text that are not blank or comments, with their numbers.
fn lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split('\n')
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
}

/// Add the keys of a key file's text to `fs`, each line as a write to `ctl` would:
/// the errors, as `line N: msg` (they name no secret).
pub fn load(fs: &Factotum, text: &str) -> Vec<String> {
    let mut errs = Vec::new();
    for (n, l) in lines(text) {
        if let Err(e) = fs.ctl(l) {
            errs.push(format!("line {n}: {e}"));
        }
    }
    errs
}

/// Check the text of a key file before it is written: each line must be one `ctl`
/// takes (`key ...`), or blank, or a comment. The errors, as `line N: msg`.
pub fn check(text: &str) -> Vec<String> {
    let scratch = Factotum::new("");
    let mut errs = Vec::new();
    for (n, l) in lines(text) {
        let verb = l.split_whitespace().next().unwrap_or("");
        if verb != "key" {
            errs.push(format!("line {n}: want key, not {}", quote(verb)));
        } else if let Err(e) = scratch.ctl(l) {
            errs.push(format!("line {n}: {e}"));
        }
    }
    errs
}

/// Read everything from `r` (at most [`MAX_FILE`] bytes) into memory that is zeroed
/// when dropped, and never left behind by a reallocation.
pub fn read_secret_all(r: &mut impl Read) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(8192));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let n = match r.read(&mut chunk[..]) {
            Ok(0) => return Ok(buf),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.len() + n > MAX_FILE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "more than 1 MiB of keys",
            ));
        }
        if buf.len() + n > buf.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity(2 * (buf.len() + n)));
            bigger.extend_from_slice(&buf);
            buf = bigger;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Read one line (without its newline) a byte at a time, so nothing after it is
/// taken: None at end of file with nothing read.
pub fn read_secret_line(r: &mut impl Read) -> io::Result<Option<Zeroizing<String>>> {
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_LINE));
    let mut b = [0u8; 1];
    let mut any = false;
    loop {
        match r.read(&mut b) {
            Ok(0) => break,
            Ok(_) => {
                any = true;
                if b[0] == b'\n' {
                    break;
                }
                if buf.len() == MAX_LINE {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
                }
                buf.push(b[0]);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    zeroize::Zeroize::zeroize(&mut b);
    if !any {
        return Ok(None);
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    match std::str::from_utf8(&buf) {
        Ok(s) => {
            let mut out = Zeroizing::new(String::with_capacity(s.len()));
            out.push_str(s);
            Ok(Some(out))
        }
        Err(_) => Err(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8")),
    }
}

/// Read a password, the first line, from the open descriptor `fd` (factotum's
/// `-P fd`), and close it.
pub fn read_password_fd(fd: RawFd) -> io::Result<Zeroizing<String>> {
    // SAFETY: fcntl F_GETFD only asks whether the descriptor is open.
    if fd < 0 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the descriptor is open and handed to us (the user named it for this);
    // it is closed when `f` is dropped.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    Ok(read_secret_line(&mut f)?.unwrap_or_default())
}

/// Echo off on a terminal until dropped.
struct NoEcho {
    fd: RawFd,
    old: libc::termios,
}

impl NoEcho {
    fn new(fd: RawFd) -> io::Result<NoEcho> {
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: as above, on a descriptor we hold.
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let old = t;
        t.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK);
        t.c_lflag |= libc::ECHONL;
        // SAFETY: setting attributes we read, less echo.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NoEcho { fd, old })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        // SAFETY: restoring the attributes read in `new`.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.old) };
    }
}

/// The user's terminal: `/dev/tty`, kept open (factotum leaves its session when it
/// goes into the background, after which `/dev/tty` no longer opens).
pub struct Tty {
    f: std::fs::File,
}

impl Tty {
    /// The controlling terminal, if there is one.
    pub fn open() -> io::Result<Tty> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open("/dev/tty")?;
        Ok(Tty { f })
    }

    /// Write to the terminal.
    pub fn say(&mut self, s: &str) -> io::Result<()> {
        self.f.write_all(s.as_bytes())?;
        self.f.flush()
    }

    /// Print `prompt` and read a line, echoed or not: None at end of file (^D).
    pub fn ask(&mut self, prompt: &str, echo: bool) -> io::Result<Option<Zeroizing<String>>> {
        self.say(prompt)?;
        let guard = if echo {
            None
        } else {
            Some(NoEcho::new(self.f.as_raw_fd())?)
        };
        let line = read_secret_line(&mut self.f);
        drop(guard);
        if !echo && matches!(line, Ok(None)) {
            self.say("\n")?;
        }
        line
    }
}

/// Prompt on `tty` for the key a needkey question describes (`text`: a template, or
/// three lines: the bad key, why, a template for its replacement), as plan9port's
/// `factotum -g` does: the public attributes given are shown, then each `name?` is
/// asked for (`user` with `user` as the default), secrets last and without echo. The
/// new key's attributes, or None if the user ended input.
pub fn prompt_key(tty: &mut Tty, text: &str, user: &str) -> io::Result<Option<Zeroizing<String>>> {
    let l: Vec<&str> = text.split('\n').collect();
    let tmpl = match l.as_slice() {
        [t] => *t,
        [key, why, t] => {
            tty.say(&format!("!replace: {key}\n!because: {why}\n"))?;
            *t
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad key request",
            ));
        }
    };
    let mut a = Attrs::parse(tmpl).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut shown = String::from("!adding key:");
    for x in &a.0 {
        if x.kind == Kind::Val && !x.is_secret() {
            shown.push(' ');
            shown.push_str(&quote(&x.name));
            shown.push('=');
            shown.push_str(&quote(x.value.as_str()));
        }
    }
    shown.push('\n');
    tty.say(&shown)?;
    for secret in [false, true] {
        for x in a.0.iter_mut() {
            if x.kind != Kind::Query || x.is_secret() != secret {
                continue;
            }
            let bare = x.name.trim_start_matches('!');
            let def = (bare == "user").then_some(user);
            let prompt = match def {
                Some(d) => format!("{bare}[{d}]: "),
                None => format!("{bare}: "),
            };
            let Some(mut v) = tty.ask(&prompt, !secret)? else {
                return Ok(None);
            };
            if v.is_empty() {
                if let Some(d) = def {
                    v.push_str(d);
                }
            }
            x.kind = Kind::Val;
            x.value = Secret::new(std::mem::take(&mut *v));
        }
    }
    Ok(Some(Zeroizing::new(a.to_string())))
}

/// Questions answered at the terminal factotum was started from.
pub struct TtyPrompter {
    tty: Tty,
    user: String,
}

impl TtyPrompter {
    pub fn new(tty: Tty, user: &str) -> TtyPrompter {
        TtyPrompter {
            tty,
            user: user.into(),
        }
    }
}

impl Prompter for TtyPrompter {
    fn key(&mut self, text: &str) -> Option<Zeroizing<String>> {
        self.tty.say("\nfactotum needs a key\n").ok()?;
        let k = prompt_key(&mut self.tty, text, &self.user);
        if let Err(e) = &k {
            let _ = self.tty.say(&format!("!{e}\n"));
        }
        k.ok().flatten()
    }

    fn confirm(&mut self, key: &str) -> bool {
        let q = format!("\n!confirm use of key: {key}\n!use it? (yes/no) ");
        matches!(self.tty.ask(&q, true), Ok(Some(a)) if matches!(a.trim(), "yes" | "y"))
    }

    fn refused(&mut self, msg: &str) {
        let _ = self.tty.say(&format!("!key refused: {msg}\n"));
    }
}

/// Questions answered by a program (factotum's `-G prog`): `prog needkey TEXT`
/// prints the new key's attributes (a `key ` before them is allowed) and exits 0;
/// `prog confirm KEY` prints `yes` to allow the key's use. Standard input is
/// /dev/null; a program still running after `limit` is killed.
pub struct ProgramPrompter {
    prog: String,
    limit: Duration,
}

impl ProgramPrompter {
    pub fn new(prog: &str, limit: Duration) -> ProgramPrompter {
        ProgramPrompter {
            prog: prog.into(),
            limit,
        }
    }

    /// Run the program: its first line of output, if it exited 0.
    fn run(&self, what: &str, text: &str) -> Option<Zeroizing<String>> {
        let mut child = std::process::Command::new(&self.prog)
            .args([what, text])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| eprintln!("factotum: {}: {e}", self.prog))
            .ok()?;
        let mut out = child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(read_secret_all(&mut out));
        });
        let deadline = Instant::now() + self.limit;
        let got = rx.recv_timeout(self.limit);
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if Instant::now() < deadline && got.is_ok() => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let out = got.ok()?.ok()?;
        if !status?.success() {
            return None;
        }
        let s = std::str::from_utf8(&out).ok()?;
        let first = s.split('\n').next().unwrap_or("").trim();
        let mut line = Zeroizing::new(String::with_capacity(first.len()));
        line.push_str(first);
        Some(line)
    }
}

impl Prompter for ProgramPrompter {
    fn key(&mut self, text: &str) -> Option<Zeroizing<String>> {
        let line = self.run("needkey", text)?;
        let attrs = line.strip_prefix("key ").unwrap_or(&line).trim();
        if attrs.is_empty() {
            return None;
        }
        let mut k = Zeroizing::new(String::with_capacity(attrs.len()));
        k.push_str(attrs);
        Some(k)
    }

    fn confirm(&mut self, key: &str) -> bool {
        self.run("confirm", key).is_some_and(|l| *l == "yes")
    }

    fn refused(&mut self, msg: &str) {
        eprintln!("factotum: {}: key refused: {msg}", self.prog);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cheap parameters, for tests of the format (the default's cost is tested by
    /// the binary's tests).
    const CHEAP: Params = Params {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn seal_and_open() {
        let text = b"key proto=pass user=glenda !password='top secret'\n";
        let f = seal(b"pw", text, CHEAP).unwrap();
        assert_eq!(&f[..8], MAGIC);
        assert_eq!(header(&f).unwrap(), CHEAP);
        assert_eq!(&open(b"pw", &f).unwrap()[..], &text[..]);
        // The text is not in the file.
        assert!(!f.windows(10).any(|w| w == b"top secret"));
        // Two seals of one text differ (salt and nonce).
        assert_ne!(seal(b"pw", text, CHEAP).unwrap(), f);
    }

    #[test]
    fn wrong_password_and_damage() {
        let f = seal(b"pw", b"key proto=pass user=u !password=p", CHEAP).unwrap();
        assert!(matches!(open(b"px", &f), Err(KeyFileError::WrongPassword)));
        // Any byte of the sealed text changed: damaged.
        for i in [HEADER, HEADER + 5, f.len() - 1] {
            let mut g = f.clone();
            g[i] ^= 1;
            assert!(matches!(open(b"pw", &g), Err(KeyFileError::Damaged)), "{i}");
        }
        // The nonce is associated data and the cipher's nonce.
        let mut g = f.clone();
        g[20 + SALT] ^= 1;
        assert!(matches!(open(b"pw", &g), Err(KeyFileError::Damaged)));
        // Salt or parameters changed: the derived key differs.
        let mut g = f.clone();
        g[20] ^= 1;
        assert!(matches!(open(b"pw", &g), Err(KeyFileError::WrongPassword)));
        let mut g = f.clone();
        g[12] = 2;
        assert!(matches!(open(b"pw", &g), Err(KeyFileError::WrongPassword)));
        // Cut short.
        assert!(matches!(
            open(b"pw", &f[..HEADER + 3]),
            Err(KeyFileError::Damaged)
        ));
        assert!(matches!(
            open(b"pw", &f[..f.len() - 1]),
            Err(KeyFileError::Damaged)
        ));
    }

    #[test]
    fn header_checks() {
        assert!(matches!(header(b""), Err(KeyFileError::NotKeyFile)));
        assert!(matches!(
            header(b"key proto=pass"),
            Err(KeyFileError::NotKeyFile)
        ));
        let mut f = seal(b"pw", b"x", CHEAP).unwrap();
        f[7] = 9;
        assert!(matches!(header(&f), Err(KeyFileError::Version(9))));
        let mut f = seal(b"pw", b"x", CHEAP).unwrap();
        f[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(header(&f), Err(KeyFileError::Params)));
        assert!(matches!(
            seal(
                b"pw",
                b"x",
                Params {
                    m_kib: 64,
                    t: 0,
                    p: 1
                }
            ),
            Err(KeyFileError::Params)
        ));
    }

    #[test]
    fn file_modes() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile_dir();
        let p = d.join("sub").join("keys");
        write(&p, b"data").unwrap();
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(read(&p).unwrap(), b"data");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read(&p).unwrap_err().to_string();
        assert!(e.contains("mode 0640; a key file must be 0600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(read(&p).is_ok());
        assert!(matches!(
            read(&d.join("nonesuch")),
            Err(KeyFileError::NotFound(_))
        ));
        assert!(matches!(read(&d), Err(KeyFileError::NotFile(_))));
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tempfile_dir() -> PathBuf {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).unwrap();
        let d = std::env::temp_dir().join(format!("keyfile-test-{}", u64::from_le_bytes(r)));
        std::fs::create_dir(&d).unwrap();
        d
    }

    #[test]
    fn lines_load_and_check() {
        let text =
            "# my keys\n\nkey proto=pass user=u !password=p\r\nkey proto=nosuch\ndelkey user=u\n";
        assert_eq!(
            check(text),
            [
                "line 4: unknown proto nosuch",
                "line 5: want key, not delkey"
            ]
        );
        let f = Factotum::new("u");
        let errs = load(
            &f,
            "key proto=pass user=u !password=p\nkey proto=pass user=v\n",
        );
        assert_eq!(
            errs,
            ["line 2: missing attributes -- want user? !password?"]
        );
        assert_eq!(f.listing(), "key proto=pass user=u !password?\n");
    }

    #[test]
    fn secret_lines() {
        let mut r: &[u8] = b"one\r\ntwo\nthree";
        assert_eq!(read_secret_line(&mut r).unwrap().unwrap().as_str(), "one");
        assert_eq!(read_secret_line(&mut r).unwrap().unwrap().as_str(), "two");
        assert_eq!(read_secret_line(&mut r).unwrap().unwrap().as_str(), "three");
        assert!(read_secret_line(&mut r).unwrap().is_none());
        let mut r: &[u8] = b"\n";
        assert_eq!(read_secret_line(&mut r).unwrap().unwrap().as_str(), "");
        let long = vec![b'x'; MAX_LINE + 1];
        assert!(read_secret_line(&mut &long[..]).is_err());
        let big = vec![b'k'; 10000];
        assert_eq!(&read_secret_all(&mut &big[..]).unwrap()[..], &big[..]);
        let huge = vec![b'k'; MAX_FILE + 1];
        assert!(read_secret_all(&mut &huge[..]).is_err());
    }

    #[test]
    fn program_prompter() {
        let d = tempfile_dir();
        let prog = d.join("ask");
        std::fs::write(
            &prog,
            "#!/bin/sh\ncase $1 in\nneedkey) echo \"key $2 !password=pw\" ;;\nconfirm) case $2 in *ok*) echo yes ;; *) echo no ;; esac ;;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o700)).unwrap();
        let mut p = ProgramPrompter::new(prog.to_str().unwrap(), Duration::from_secs(10));
        assert_eq!(
            p.key("proto=pass user=u").unwrap().as_str(),
            "proto=pass user=u !password=pw"
        );
        assert!(p.confirm("proto=pass ok=1 !password?"));
        assert!(!p.confirm("proto=pass !password?"));
        // A program that runs too long is killed, and answers nothing.
        std::fs::write(&prog, "#!/bin/sh\nexec sleep 30\n").unwrap();
        let mut p = ProgramPrompter::new(prog.to_str().unwrap(), Duration::from_millis(200));
        let t = Instant::now();
        assert!(p.key("proto=pass").is_none());
        assert!(t.elapsed() < Duration::from_secs(10));
        // A missing program answers nothing.
        let mut p = ProgramPrompter::new("/nonexistent/prog", Duration::from_secs(1));
        assert!(!p.confirm("x"));
        let _ = std::fs::remove_dir_all(&d);
    }
}

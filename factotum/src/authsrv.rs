//! The authentication server's ticket service (authsrv(6)), for p9sk1, and the
//! client's side of it (`_asgetticket`, `_asrdresp`).
//!
//! ```text
//! C→A: AuthTreq, IDs, DN, CHs, IDc, IDr
//! A→C: AuthOK, Kc{AuthTc, CHs, IDr, IDr, Kn}, Ks{AuthTs, CHs, IDr, IDr, Kn}
//! ```
//!
//! Rules, as Plan 9's and 9front's authsrv apply them:
//!
//! - An unknown `authid` (IDs) or `hostid` (IDc) gets a one-time random key in
//!   place of its real one, so the AS cannot be probed for valid names; the
//!   tickets are then simply unreadable.
//! - `hostid` may ask for tickets as `uid` only if it speaks for `uid`: always
//!   itself; others only as the user database says (for [`KeyDir`], its
//!   `speaksfor` file). If not, both tickets are sealed with random keys, as
//!   authsrv.c does (the man page's "IDr set to the empty string" is not what
//!   the code does).
//! - Both `cuid` and `suid` of the tickets are the requested `uid`, as in
//!   9front's and plan9port's code.
//! - If the server is configured with a domain, a request for another domain is
//!   answered with `AuthErr` ("bad authentication domain"): domain names are
//!   not secret.
//!
//! Only `AuthTreq` is served; any other request type gets `AuthErr` and the
//! connection is closed.

use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::ticket::{
    AERRLEN, ANAMELEN, AUTH_ERR, AUTH_OK, AUTH_OKVAR, AUTH_TC, AUTH_TREQ, AUTH_TS, DesKey,
    TICKETLEN, TICKREQLEN, Ticket, Ticketreq,
};

/// The TCP port of the ticket service ("ticket", 567).
pub const TICKET_PORT: u16 = 567;

/// Errors of the ticket service, with Plan 9's strings where it has them.
#[derive(Debug, thiserror::Error)]
pub enum AsError {
    /// The peer broke the protocol (short read, unknown reply).
    #[error("AS protocol botch")]
    Botch,
    /// The AS refused, with its message.
    #[error("remote: {0}")]
    Remote(String),
    /// A request the AS will not serve.
    #[error("{0}")]
    BadRequest(String),
    /// A malformed structure.
    #[error("{0}")]
    Format(#[from] crate::ticket::Error),
    /// I/O on the connection or the key directory.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Where the AS finds keys and speaks-for rules.
pub trait UserDb {
    /// The DES key of `user`, if the user exists.
    fn key(&self, user: &str) -> Option<DesKey>;
    /// Whether `hostid` may obtain tickets as `uid`. Everybody speaks for
    /// himself.
    fn speaks_for(&self, hostid: &str, uid: &str) -> bool {
        hostid == uid
    }
}

/// The ticket service.
pub struct AuthServer<D: UserDb> {
    db: D,
    authdom: Option<String>,
}

impl<D: UserDb> AuthServer<D> {
    /// A server over `db`; with `authdom`, requests for other domains are
    /// refused.
    pub fn new(db: D, authdom: Option<String>) -> AuthServer<D> {
        AuthServer { db, authdom }
    }

    /// The user database.
    pub fn db(&self) -> &D {
        &self.db
    }

    /// The two tickets for a ticket request (without the `AuthOK` byte):
    /// the client's, sealed with Kc, then the server's, sealed with Ks.
    pub fn tickets(&self, tr: &Ticketreq) -> Result<[u8; 2 * TICKETLEN], AsError> {
        if tr.typ != AUTH_TREQ {
            return Err(AsError::BadRequest(format!(
                "unsupported request type {}",
                tr.typ
            )));
        }
        if let Some(dom) = &self.authdom {
            if *dom != tr.authdom {
                return Err(AsError::BadRequest("bad authentication domain".into()));
            }
        }
        let lookup = |name: &str| -> Result<DesKey, AsError> {
            match self.db.key(name) {
                Some(k) if !name.is_empty() => Ok(k),
                _ => Ok(DesKey::random()?),
            }
        };
        let (mut ks, mut kc) = (lookup(&tr.authid)?, lookup(&tr.hostid)?);
        if !self.db.speaks_for(&tr.hostid, &tr.uid) {
            ks = DesKey::random()?;
            kc = DesKey::random()?;
        }
        let mut t = Ticket {
            num: AUTH_TC,
            chal: tr.chal,
            cuid: tr.uid.clone(),
            suid: tr.uid.clone(),
            key: DesKey::random()?,
        };
        let mut out = [0u8; 2 * TICKETLEN];
        out[..TICKETLEN].copy_from_slice(&t.seal(&kc)?);
        t.num = AUTH_TS;
        out[TICKETLEN..].copy_from_slice(&t.seal(&ks)?);
        Ok(out)
    }

    /// The reply to one request message: `AuthOK` and the tickets, or
    /// `AuthErr` and a 64-byte message. The second value says whether the
    /// connection may go on.
    pub fn reply(&self, req: &[u8]) -> (Vec<u8>, bool) {
        let result = Ticketreq::from_bytes(req)
            .map_err(AsError::from)
            .and_then(|tr| self.tickets(&tr));
        match result {
            Ok(t) => {
                let mut v = Vec::with_capacity(1 + t.len());
                v.push(AUTH_OK);
                v.extend_from_slice(&t);
                (v, true)
            }
            Err(e) => (error_reply(&e.to_string()).to_vec(), false),
        }
    }

    /// Serve requests on one connection until it closes or errs.
    pub fn serve<S: Read + Write>(&self, mut s: S) -> Result<(), AsError> {
        let mut buf = [0u8; TICKREQLEN];
        loop {
            match read_full(&mut s, &mut buf)? {
                0 => return Ok(()),
                n if n < TICKREQLEN => return Err(AsError::Botch),
                _ => {}
            }
            let (rep, go_on) = self.reply(&buf);
            s.write_all(&rep)?;
            s.flush()?;
            if !go_on {
                return Ok(());
            }
        }
    }
}

/// `AuthErr` and `msg` NUL-padded to 64 bytes (63 at most kept).
pub fn error_reply(msg: &str) -> [u8; 1 + AERRLEN] {
    let mut b = [0u8; 1 + AERRLEN];
    b[0] = AUTH_ERR;
    let mut n = msg.len().min(AERRLEN - 1);
    while !msg.is_char_boundary(n) {
        n -= 1;
    }
    b[1..1 + n].copy_from_slice(&msg.as_bytes()[..n]);
    b
}

/// Read until `buf` is full or end of file; the count read.
fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(m) => n += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// `_asrdresp`: read the AS's reply, expecting `len` bytes after `AuthOK`.
pub fn read_response<R: Read>(r: &mut R, len: usize) -> Result<Vec<u8>, AsError> {
    let mut kind = [0u8; 1];
    if read_full(r, &mut kind)? != 1 {
        return Err(AsError::Botch);
    }
    match kind[0] {
        AUTH_OK => {
            let mut v = vec![0u8; len];
            if read_full(r, &mut v)? != len {
                return Err(AsError::Botch);
            }
            Ok(v)
        }
        AUTH_ERR => {
            let mut e = [0u8; AERRLEN];
            if read_full(r, &mut e)? != AERRLEN {
                return Err(AsError::Botch);
            }
            let end = e[..AERRLEN - 1]
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(AERRLEN - 1);
            Err(AsError::Remote(
                String::from_utf8_lossy(&e[..end]).into_owned(),
            ))
        }
        AUTH_OKVAR => {
            let mut l = [0u8; 5];
            if read_full(r, &mut l)? != 5 {
                return Err(AsError::Botch);
            }
            let n: usize = std::str::from_utf8(&l)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or(AsError::Botch)?;
            if n == 0 || n > len {
                return Err(AsError::Botch);
            }
            let mut v = vec![0u8; n];
            if read_full(r, &mut v)? != n {
                return Err(AsError::Botch);
            }
            Ok(v)
        }
        _ => Err(AsError::Botch),
    }
}

/// `_asgetticket`: send a ticket request, get the two tickets back.
pub fn get_tickets<S: Read + Write>(
    s: &mut S,
    tr: &Ticketreq,
) -> Result<[u8; 2 * TICKETLEN], AsError> {
    s.write_all(&tr.to_bytes()?)?;
    s.flush()?;
    let v = read_response(s, 2 * TICKETLEN)?;
    let mut out = [0u8; 2 * TICKETLEN];
    out.copy_from_slice(&v);
    Ok(out)
}

/// A user database in a directory (mode 0700, owned by us):
///
/// - `users/NAME`: the user's DES key as 14 hex digits (mode 0600); never
///   the password.
/// - `speaksfor` (optional): lines `hostid=H uid=U uid=!V uid=*`: H may speak
///   for U, for anybody (`*`), but never for V. `#` starts a comment.
pub struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    /// Open `dir`, creating it (0700) if need be; refuse one other users can
    /// read or that is not ours.
    pub fn open(dir: &Path) -> Result<KeyDir, AsError> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(dir)?;
        b.create(dir.join("users"))?;
        for d in [dir.to_path_buf(), dir.join("users")] {
            let m = fs::metadata(&d)?;
            // SAFETY: geteuid has no preconditions and cannot fail.
            let me = unsafe { libc::geteuid() };
            if !m.is_dir() || m.mode() & 0o077 != 0 || m.uid() != me {
                return Err(AsError::BadRequest(format!(
                    "{}: must be a directory of ours with mode 0700",
                    d.display()
                )));
            }
        }
        Ok(KeyDir {
            dir: dir.to_path_buf(),
        })
    }

    fn user_path(&self, name: &str) -> Result<PathBuf, AsError> {
        valid_user(name)?;
        Ok(self.dir.join("users").join(name))
    }

    /// Add (or replace) a user with the key of `password`.
    pub fn add_user(&self, name: &str, password: &[u8]) -> Result<(), AsError> {
        self.set_key(name, &DesKey::from_password(password))
    }

    /// Set a user's key.
    pub fn set_key(&self, name: &str, key: &DesKey) -> Result<(), AsError> {
        let path = self.user_path(name)?;
        let tmp = self.dir.join("users").join(format!(".{name}.tmp"));
        let _ = fs::remove_file(&tmp);
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut line = Zeroizing::new(String::new());
        line.push_str(&key.to_hex());
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Remove a user.
    pub fn delete_user(&self, name: &str) -> Result<(), AsError> {
        let path = self.user_path(name)?;
        fs::remove_file(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                AsError::BadRequest(format!("no such user {name}"))
            } else {
                e.into()
            }
        })
    }

    /// The users, sorted.
    pub fn users(&self) -> Result<Vec<String>, AsError> {
        let mut v = Vec::new();
        for e in fs::read_dir(self.dir.join("users"))? {
            let e = e?;
            if let Some(n) = e.file_name().to_str() {
                if valid_user(n).is_ok() {
                    v.push(n.to_string());
                }
            }
        }
        v.sort();
        Ok(v)
    }
}

/// A user name the database accepts: 1 to 27 bytes, no `/`, no control
/// characters, not starting with `.`.
pub fn valid_user(name: &str) -> Result<(), AsError> {
    if name.is_empty()
        || name.len() >= ANAMELEN
        || name.starts_with('.')
        || name.contains('/')
        || name.chars().any(char::is_control)
    {
        return Err(AsError::BadRequest(format!("bad user name {name:?}")));
    }
    Ok(())
}

impl UserDb for KeyDir {
    fn key(&self, user: &str) -> Option<DesKey> {
        let path = self.user_path(user).ok()?;
        let text = Zeroizing::new(fs::read_to_string(path).ok()?);
        DesKey::from_hex(&text).ok()
    }

    fn speaks_for(&self, hostid: &str, uid: &str) -> bool {
        if hostid == uid {
            return true;
        }
        let Ok(text) = fs::read_to_string(self.dir.join("speaksfor")) else {
            return false;
        };
        speaks_for_rules(&text, hostid, uid)
    }
}

/// Evaluate `speaksfor` lines (see [`KeyDir`]) for `hostid` and `uid`.
pub fn speaks_for_rules(text: &str, hostid: &str, uid: &str) -> bool {
    let mut allowed = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if first.strip_prefix("hostid=") != Some(hostid) {
            continue;
        }
        for w in words {
            let Some(u) = w.strip_prefix("uid=") else {
                continue;
            };
            if let Some(denied) = u.strip_prefix('!') {
                if denied == uid {
                    return false;
                }
            } else if u == "*" || u == uid {
                allowed = true;
            }
        }
    }
    allowed
}

/// An in-memory user database (for tests and embedding).
#[derive(Default)]
pub struct MemDb {
    /// user → key.
    pub keys: std::collections::HashMap<String, DesKey>,
    /// `speaksfor` rules, as in [`KeyDir`].
    pub speaksfor: String,
}

impl UserDb for MemDb {
    fn key(&self, user: &str) -> Option<DesKey> {
        self.keys.get(user).cloned()
    }
    fn speaks_for(&self, hostid: &str, uid: &str) -> bool {
        hostid == uid || speaks_for_rules(&self.speaksfor, hostid, uid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ticket::p9sk1::{self, P9sk1Error};
    use crate::ticket::{CHALLEN, TICKREQLEN};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;

    fn db() -> MemDb {
        let mut d = MemDb::default();
        d.keys
            .insert("glenda".into(), DesKey::from_password(b"glenda pw"));
        d.keys
            .insert("bootes".into(), DesKey::from_password(b"bootes pw"));
        d.keys
            .insert("cpu".into(), DesKey::from_password(b"cpu pw"));
        d.speaksfor = "hostid=cpu uid=!bootes uid=*\n".into();
        d
    }

    /// Run the AS on one end of a socket pair, in a thread.
    fn spawn_as(srv: Arc<AuthServer<MemDb>>) -> UnixStream {
        let (a, b) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let _ = srv.serve(b);
        });
        a
    }

    struct Outcome {
        client: Result<(), P9sk1Error>,
        server: Option<Result<String, P9sk1Error>>,
    }

    /// A whole p9sk1 exchange: client `hostid` (key from `cpw`) wanting to be
    /// `uid` on server `bootes` (key from `spw`).
    fn exchange(srv: &Arc<AuthServer<MemDb>>, hostid: &str, uid: &str, cpw: &[u8]) -> Outcome {
        let kc = DesKey::from_password(cpw);
        let ks = DesKey::from_password(b"bootes pw");
        let cchal = p9sk1::challenge().unwrap();
        let str_ = p9sk1::server_ticketreq("bootes", "dom").unwrap();
        let ctr = p9sk1::client_ticketreq(&str_.to_bytes().unwrap(), hostid, uid).unwrap();
        let mut conn = spawn_as(srv.clone());
        let tickets = get_tickets(&mut conn, &ctr).unwrap();
        let (ct, msg) = match p9sk1::client_tickets(&ctr, &tickets, &kc) {
            Ok(x) => x,
            Err(e) => {
                return Outcome {
                    client: Err(e),
                    server: None,
                };
            }
        };
        let (st, sauth) = match p9sk1::server_check(&str_, &msg, &ks, &cchal) {
            Ok(x) => x,
            Err(e) => {
                return Outcome {
                    client: Ok(()),
                    server: Some(Err(e)),
                };
            }
        };
        let client = p9sk1::client_check(&ct, &sauth, &cchal);
        assert_eq!(p9sk1::secret(&ct), p9sk1::secret(&st));
        Outcome {
            client,
            server: Some(Ok(st.suid.clone())),
        }
    }

    #[test]
    fn p9sk1_through_the_as() {
        let srv = Arc::new(AuthServer::new(db(), Some("dom".into())));
        let o = exchange(&srv, "glenda", "glenda", b"glenda pw");
        assert_eq!(o.client, Ok(()));
        assert_eq!(o.server.unwrap().unwrap(), "glenda");
        // A speaks-for host.
        let o = exchange(&srv, "cpu", "glenda", b"cpu pw");
        assert_eq!(o.server.unwrap().unwrap(), "glenda");
        // Wrong password.
        let o = exchange(&srv, "glenda", "glenda", b"guess");
        assert_eq!(o.client.unwrap_err(), P9sk1Error::KeyMismatch);
        // Unknown user: random key, indistinguishable from a wrong password.
        let o = exchange(&srv, "nobody", "nobody", b"anything");
        assert_eq!(o.client.unwrap_err(), P9sk1Error::KeyMismatch);
        // No speaking for others without a rule, nor against a ! rule.
        let o = exchange(&srv, "glenda", "bootes", b"glenda pw");
        assert_eq!(o.client.unwrap_err(), P9sk1Error::KeyMismatch);
        let o = exchange(&srv, "cpu", "bootes", b"cpu pw");
        assert_eq!(o.client.unwrap_err(), P9sk1Error::KeyMismatch);
    }

    #[test]
    fn replayed_ticket_refused() {
        let srv = Arc::new(AuthServer::new(db(), None));
        let kc = DesKey::from_password(b"glenda pw");
        let ks = DesKey::from_password(b"bootes pw");
        let cchal = [1u8; CHALLEN];
        let str1 = p9sk1::server_ticketreq("bootes", "dom").unwrap();
        let ctr = p9sk1::client_ticketreq(&str1.to_bytes().unwrap(), "glenda", "glenda").unwrap();
        let mut conn = spawn_as(srv);
        let tickets = get_tickets(&mut conn, &ctr).unwrap();
        let (_, msg) = p9sk1::client_tickets(&ctr, &tickets, &kc).unwrap();
        assert!(p9sk1::server_check(&str1, &msg, &ks, &cchal).is_ok());
        // The same message against a later conversation's challenge.
        let str2 = p9sk1::server_ticketreq("bootes", "dom").unwrap();
        assert_eq!(
            p9sk1::server_check(&str2, &msg, &ks, &cchal).unwrap_err(),
            P9sk1Error::KeyMismatch
        );
        // Tickets for one request used with another request's challenge.
        let ctr2 = p9sk1::client_ticketreq(&str2.to_bytes().unwrap(), "glenda", "glenda").unwrap();
        assert_eq!(
            p9sk1::client_tickets(&ctr2, &tickets, &kc).unwrap_err(),
            P9sk1Error::KeyMismatch
        );
    }

    #[test]
    fn as_errors() {
        let srv = Arc::new(AuthServer::new(db(), Some("dom".into())));
        // Another domain.
        let mut tr = p9sk1::server_ticketreq("bootes", "other").unwrap();
        tr.hostid = "glenda".into();
        tr.uid = "glenda".into();
        let mut conn = spawn_as(srv.clone());
        match get_tickets(&mut conn, &tr) {
            Err(AsError::Remote(m)) => assert_eq!(m, "bad authentication domain"),
            other => panic!("{other:?}"),
        }
        // Another request type.
        tr.authdom = "dom".into();
        tr.typ = crate::ticket::AUTH_CHAL;
        let mut conn = spawn_as(srv.clone());
        assert!(matches!(
            get_tickets(&mut conn, &tr),
            Err(AsError::Remote(_))
        ));
        // A truncated request: the AS hangs up without a reply.
        let mut conn = spawn_as(srv.clone());
        conn.write_all(&[1u8; TICKREQLEN - 1]).unwrap();
        conn.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(matches!(
            read_response(&mut conn, 2 * TICKETLEN),
            Err(AsError::Botch)
        ));
        // A truncated reply.
        let mut short: &[u8] = &[AUTH_OK, 1, 2, 3];
        assert!(matches!(
            read_response(&mut short, 2 * TICKETLEN),
            Err(AsError::Botch)
        ));
        let mut var: &[u8] = b"\x09   3 abc";
        assert!(matches!(read_response(&mut var, 2), Err(AsError::Botch)));
        let mut var: &[u8] = b"\x09    3abc";
        assert_eq!(read_response(&mut var, 8).unwrap(), b"abc");
        // Several requests on one connection.
        let mut conn = spawn_as(srv);
        let mut tr = p9sk1::server_ticketreq("bootes", "dom").unwrap();
        tr.hostid = "glenda".into();
        tr.uid = "glenda".into();
        for _ in 0..3 {
            get_tickets(&mut conn, &tr).unwrap();
        }
    }

    #[test]
    fn error_reply_is_64_bytes() {
        let long = "é".repeat(40);
        let r = error_reply(&long);
        assert_eq!(r.len(), 65);
        assert_eq!(r[0], AUTH_ERR);
        assert_eq!(r[64], 0);
        assert!(std::str::from_utf8(&r[1..63]).is_ok());
    }

    #[test]
    fn speaksfor_rules() {
        let rules = "# comment\nhostid=cpu uid=!sys uid=*\nhostid=term uid=glenda\n";
        assert!(speaks_for_rules(rules, "cpu", "glenda"));
        assert!(!speaks_for_rules(rules, "cpu", "sys"));
        assert!(speaks_for_rules(rules, "term", "glenda"));
        assert!(!speaks_for_rules(rules, "term", "bootes"));
        assert!(!speaks_for_rules(rules, "other", "glenda"));
    }

    fn tempdir(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!(
            "ninespace-authsrv-{tag}-{}-{n}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keydir() {
        let d = tempdir("keydir");
        let kd = KeyDir::open(&d.join("keys")).unwrap();
        assert_eq!(fs::metadata(d.join("keys")).unwrap().mode() & 0o777, 0o700);
        kd.add_user("glenda", b"glenda pw").unwrap();
        kd.add_user("bootes", b"bootes pw").unwrap();
        assert_eq!(kd.users().unwrap(), ["bootes", "glenda"]);
        assert_eq!(kd.key("glenda"), Some(DesKey::from_password(b"glenda pw")));
        let f = d.join("keys/users/glenda");
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
        let text = fs::read_to_string(&f).unwrap();
        assert!(!text.contains("glenda pw"));
        assert_eq!(text.trim().len(), 14);
        kd.delete_user("glenda").unwrap();
        assert_eq!(kd.key("glenda"), None);
        assert!(kd.delete_user("glenda").is_err());
        for bad in ["", "../x", ".hidden", "a/b", "x\n", &"u".repeat(28)] {
            assert!(kd.add_user(bad, b"pw").is_err(), "{bad:?}");
        }
        assert!(!kd.speaks_for("cpu", "glenda"));
        fs::write(d.join("keys/speaksfor"), "hostid=cpu uid=*\n").unwrap();
        assert!(kd.speaks_for("cpu", "glenda"));
        // A directory others can read is refused.
        fs::set_permissions(d.join("keys"), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(KeyDir::open(&d.join("keys")).is_err());
        let _ = fs::remove_dir_all(&d);
    }
}

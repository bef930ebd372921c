//! The authentication server's ticket service (authsrv(6)), for p9sk1 and dp9ik,
//! and the client's side of it (`_asgetticket`, `_asrdresp`, and the AuthPAK
//! exchange of 9front's factotum).
//!
//! p9sk1:
//!
//! ```text
//! C→A: AuthTreq, IDs, DN, CHs, IDc, IDr
//! A→C: AuthOK, Kc{AuthTc, CHs, IDr, IDr, Kn}, Ks{AuthTs, CHs, IDr, IDr, Kn}
//! ```
//!
//! dp9ik (9front's authsrv.c, `pak` and `ticketrequest`): first a password
//! authenticated key exchange (SPAKE2-EE, [`crate::pak`]) for the server's and the
//! client's user, the AS taking the PAK server's part for both; then tickets in
//! form1, sealed with the two PAK keys:
//!
//! ```text
//! C→A: AuthPAK, IDs, DN, CHs, IDc, IDr       (141 bytes)
//! A→C: AuthOK, YAs                            (the AS's value for IDs)
//! C→A: YBs                                    (the server's value, relayed)
//! A→C: YAc                                    (the AS's value for IDc)
//! C→A: YBc                                    (the client's own)
//! C→A: AuthTreq, IDs, DN, CHs, IDc, IDr
//! A→C: AuthOK, PAKc{AuthTc, CHs, IDr, IDr, Kn}, PAKs{AuthTs, CHs, IDr, IDr, Kn}
//! ```
//!
//! with 56-byte Y values, 124-byte tickets and a 32-byte Kn. 9front's client sends
//! YBs and YBc before it reads anything; the AS answers each Y as it comes.
//! After an AuthPAK the connection gives form1 tickets only, and only for the
//! names of that exchange ("DES is disabled" otherwise), as 9front's.
//!
//! Rules, as Plan 9's and 9front's authsrv apply them:
//!
//! - An unknown `authid` (IDs) or `hostid` (IDc), or a user with no AES key, gets
//!   a made-up key in place of its real one, so the AS cannot be probed for valid
//!   names; the tickets are then simply unreadable. (For the PAK the made-up AES
//!   key of a name is fixed for the life of the server, from a random seed, as
//!   9front fixes made-up DES keys: the exchange looks and takes the same for
//!   every name.)
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
//! Only `AuthTreq` and `AuthPAK` are served; any other request type gets `AuthErr`
//! and the connection is closed.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::pak::{AESKEYLEN, AesKey, PAKYLEN, PakHash, PakKey, PakPriv, authpak_hash};
use crate::ticket::form1;
use crate::ticket::{
    AERRLEN, ANAMELEN, AUTH_ERR, AUTH_OK, AUTH_OKVAR, AUTH_PAK, AUTH_TC, AUTH_TREQ, AUTH_TS,
    DesKey, MAXTICKETLEN, NONCELEN, TICKETLEN, TICKREQLEN, Ticket, Ticketreq, random_bytes,
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
    /// The AES key of `user` (9front's `passtoaeskey` of the password), if the
    /// user exists and has one: what dp9ik needs.
    fn aes_key(&self, _user: &str) -> Option<AesKey> {
        None
    }
    /// Whether `hostid` may obtain tickets as `uid`. Everybody speaks for
    /// himself.
    fn speaks_for(&self, hostid: &str, uid: &str) -> bool {
        hostid == uid
    }
}

/// The most pakhashes [`AuthServer`] keeps; past it the cache starts afresh.
const PAKHASH_CACHE: usize = 1024;

/// A user's pakhash, kept with the AES key it was made from.
struct CachedHash {
    aes: AesKey,
    hash: Arc<PakHash>,
}

/// The ticket service.
pub struct AuthServer<D: UserDb> {
    db: D,
    authdom: Option<String>,
    /// Seed of the made-up AES keys of unknown names.
    seed: Zeroizing<[u8; 32]>,
    /// Users' pakhashes: an Elligator map of a password's key costs as much as
    /// the rest of the AS's part of an exchange, and depends only on the key.
    hashes: Mutex<HashMap<String, CachedHash>>,
}

/// What an AuthPAK exchange leaves for the connection's next ticket request:
/// the PAK key of each name (9front's `akey`, `hkey` and `ukey` slots).
#[derive(Default)]
pub struct PakSlots {
    authid: Option<(String, PakKey)>,
    hostid: Option<(String, PakKey)>,
    uid: Option<(String, PakKey)>,
    /// An AuthPAK has been served on this connection: tickets are form1 from now
    /// on (9front's `ticketform`).
    form1: bool,
}

impl PakSlots {
    fn clear(&mut self) {
        self.authid = None;
        self.hostid = None;
        self.uid = None;
    }
}

impl<D: UserDb> AuthServer<D> {
    /// A server over `db`; with `authdom`, requests for other domains are
    /// refused.
    pub fn new(db: D, authdom: Option<String>) -> Result<AuthServer<D>, AsError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        random_bytes(&mut seed[..])?;
        Ok(AuthServer {
            db,
            authdom,
            seed,
            hashes: Mutex::new(HashMap::new()),
        })
    }

    /// The user database.
    pub fn db(&self) -> &D {
        &self.db
    }

    fn check_request(&self, tr: &Ticketreq, typ: u8) -> Result<(), AsError> {
        if tr.typ != typ {
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
        Ok(())
    }

    /// The two tickets for a ticket request (without the `AuthOK` byte):
    /// the client's, sealed with Kc, then the server's, sealed with Ks.
    pub fn tickets(&self, tr: &Ticketreq) -> Result<[u8; 2 * TICKETLEN], AsError> {
        self.check_request(tr, AUTH_TREQ)?;
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

    /// The two form1 tickets for a ticket request after an AuthPAK on the same
    /// connection: sealed with the client's and the server's PAK keys.
    fn pak_tickets(
        &self,
        tr: &Ticketreq,
        slots: &PakSlots,
    ) -> Result<[u8; 2 * MAXTICKETLEN], AsError> {
        self.check_request(tr, AUTH_TREQ)?;
        if tr.uid.is_empty() || tr.authid.is_empty() || tr.hostid.is_empty() {
            return Err(AsError::BadRequest("bad ticket request".into()));
        }
        let slot = |s: &Option<(String, PakKey)>, name: &str| match s {
            Some((n, k)) if n == name => Ok(k.clone()),
            _ => Err(AsError::BadRequest("DES is disabled".into())),
        };
        let (mut ks, mut kc) = (
            slot(&slots.authid, &tr.authid)?,
            slot(&slots.hostid, &tr.hostid)?,
        );
        if !self.db.speaks_for(&tr.hostid, &tr.uid) {
            ks = random_pakkey()?;
            kc = random_pakkey()?;
        }
        let mut key = Zeroizing::new([0u8; NONCELEN]);
        random_bytes(&mut key[..])?;
        let mut t = form1::Ticket {
            num: AUTH_TC,
            chal: tr.chal,
            cuid: tr.uid.clone(),
            suid: tr.uid.clone(),
            key,
        };
        let mut out = [0u8; 2 * MAXTICKETLEN];
        out[..MAXTICKETLEN].copy_from_slice(&t.seal(&kc.0)?);
        t.num = AUTH_TS;
        out[MAXTICKETLEN..].copy_from_slice(&t.seal(&ks.0)?);
        Ok(out)
    }

    /// The made-up AES key of a name the database has no AES key for.
    fn made_up_aes(&self, name: &str) -> AesKey {
        let hk = Hkdf::<Sha256>::new(Some(&self.seed[..]), name.as_bytes());
        let mut k = AesKey([0u8; AESKEYLEN]);
        // 16 bytes is far below HKDF's limit; expand cannot fail.
        if hk
            .expand(b"ninespace authsrv made-up key", &mut k.0)
            .is_err()
        {
            unreachable!("HKDF output length is fixed and valid");
        }
        k
    }

    /// The pakhash the AS uses for `name`: from the user's AES key, or from a
    /// made-up one for unknown names and users without one.
    fn pakhash(&self, name: &str) -> Arc<PakHash> {
        let aes = match self.db.aes_key(name) {
            Some(k) if !name.is_empty() && !k.is_zero() => k,
            _ => self.made_up_aes(name),
        };
        {
            let cache = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cache.get(name) {
                if c.aes == aes {
                    return c.hash.clone();
                }
            }
        }
        let hash = Arc::new(authpak_hash(&aes, name.as_bytes()));
        let mut cache = self.hashes.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= PAKHASH_CACHE {
            cache.clear();
        }
        cache.insert(
            name.to_string(),
            CachedHash {
                aes,
                hash: hash.clone(),
            },
        );
        hash
    }

    /// Serve an AuthPAK request (9front's `pak`): a PAK with the client for the
    /// server's name and the client's (or, with no host id, for `uid` alone),
    /// leaving the keys in `slots`. The AS's values are made before any of the
    /// client's is read, and each is sent as soon as the protocol allows.
    pub fn pak<S: Read + Write>(
        &self,
        s: &mut S,
        tr: &Ticketreq,
        slots: &mut PakSlots,
    ) -> Result<(), AsError> {
        self.check_request(tr, AUTH_PAK)?;
        slots.clear();
        let mut names: Vec<(u8, &str)> = Vec::with_capacity(2);
        if !tr.hostid.is_empty() {
            if !tr.authid.is_empty() {
                names.push((0, &tr.authid));
            }
            names.push((1, &tr.hostid));
        } else if !tr.uid.is_empty() {
            names.push((2, &tr.uid));
        }
        let mut privs = Vec::with_capacity(names.len());
        for (_, name) in &names {
            let hash = self.pakhash(name);
            let p = PakPriv::new(&hash, false).map_err(|e| AsError::BadRequest(e.to_string()))?;
            privs.push((hash, p));
        }
        let mut out = Vec::with_capacity(1 + PAKYLEN);
        out.push(AUTH_OK);
        if privs.is_empty() {
            s.write_all(&out)?;
            s.flush()?;
        }
        // Each key is finished in a thread of its own while the connection goes
        // on with the next name; the last in this one.
        let n = privs.len();
        let keys: Result<Vec<PakKey>, AsError> = std::thread::scope(|sc| {
            let mut running = Vec::with_capacity(n);
            let mut last = None;
            for (i, (hash, p)) in privs.into_iter().enumerate() {
                out.extend_from_slice(&p.public());
                s.write_all(&out)?;
                s.flush()?;
                out.clear();
                let mut y = [0u8; PAKYLEN];
                if read_full(s, &mut y)? != PAKYLEN {
                    return Err(AsError::Botch);
                }
                if i + 1 < n {
                    running.push(sc.spawn(move || p.finish(&hash, &y)));
                } else {
                    last = Some(p.finish(&hash, &y));
                }
            }
            let mut keys = Vec::with_capacity(n);
            for h in running {
                keys.push(h.join().map_err(|_| AsError::Botch)?);
            }
            keys.extend(last);
            // A value that is not a point ends the connection, as in 9front.
            keys.into_iter()
                .map(|k| k.map_err(|_| AsError::Botch))
                .collect()
        });
        for ((which, name), k) in names.iter().zip(keys?) {
            let slot = Some((name.to_string(), k));
            match which {
                0 => slots.authid = slot,
                1 => slots.hostid = slot,
                _ => slots.uid = slot,
            }
        }
        slots.form1 = true;
        Ok(())
    }

    /// The reply to one request message: `AuthOK` and the tickets, or
    /// `AuthErr` and a 64-byte message. The second value says whether the
    /// connection may go on.
    pub fn reply(&self, req: &[u8]) -> (Vec<u8>, bool) {
        self.reply_after(req, &mut PakSlots::default())
    }

    /// [`AuthServer::reply`] on a connection that may have served an AuthPAK.
    pub fn reply_after(&self, req: &[u8], slots: &mut PakSlots) -> (Vec<u8>, bool) {
        let tr = match Ticketreq::from_bytes(req) {
            Ok(t) => t,
            Err(e) => return (error_reply(&e.to_string()).to_vec(), false),
        };
        let result: Result<Vec<u8>, AsError> = if slots.form1 {
            self.pak_tickets(&tr, slots).map(|t| t.to_vec())
        } else {
            self.tickets(&tr).map(|t| t.to_vec())
        };
        // As 9front, PAK keys serve one request.
        slots.clear();
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
        let mut slots = PakSlots::default();
        loop {
            match read_full(&mut s, &mut buf)? {
                0 => return Ok(()),
                n if n < TICKREQLEN => return Err(AsError::Botch),
                _ => {}
            }
            if buf[0] == AUTH_PAK {
                let tr = Ticketreq::from_bytes(&buf)
                    .map_err(AsError::from)
                    .and_then(|tr| self.check_request(&tr, AUTH_PAK).map(|()| tr));
                match tr {
                    Ok(tr) => {
                        self.pak(&mut s, &tr, &mut slots)?;
                        continue;
                    }
                    Err(e) => {
                        s.write_all(&error_reply(&e.to_string()))?;
                        return Ok(());
                    }
                }
            }
            let (rep, go_on) = self.reply_after(&buf, &mut slots);
            s.write_all(&rep)?;
            s.flush()?;
            if !go_on {
                return Ok(());
            }
        }
    }
}

fn random_pakkey() -> Result<PakKey, AsError> {
    let mut k = PakKey([0u8; 32]);
    random_bytes(&mut k.0)?;
    Ok(k)
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

/// What the client of a dp9ik exchange gets from the AS.
pub struct PakTickets {
    /// The AS's PAK value for the server, to be relayed to it.
    pub server_y: [u8; PAKYLEN],
    /// The client's PAK key, which opens its ticket.
    pub pakkey: PakKey,
    /// The two form1 tickets, the client's then the server's.
    pub tickets: Zeroizing<Vec<u8>>,
}

/// dp9ik's client side of the AS (9front factotum's `getastickets` with a Y):
/// an AuthPAK for `tr` carrying the server's PAK value `server_y` and ours
/// (made from `hash`), then an AuthTreq for the tickets, on one connection.
/// The request and both values go in one write; the AS answers with its two.
pub fn get_pak_tickets<S: Read + Write>(
    s: &mut S,
    tr: &Ticketreq,
    server_y: &[u8; PAKYLEN],
    hash: &PakHash,
) -> Result<PakTickets, AsError> {
    let mut req = tr.clone();
    req.typ = AUTH_PAK;
    let p = PakPriv::new(hash, true).map_err(|e| AsError::BadRequest(e.to_string()))?;
    let mut out = Vec::with_capacity(TICKREQLEN + 2 * PAKYLEN);
    out.extend_from_slice(&req.to_bytes()?);
    out.extend_from_slice(server_y);
    out.extend_from_slice(&p.public());
    s.write_all(&out)?;
    s.flush()?;
    let ys = read_response(s, 2 * PAKYLEN)?;
    if ys.len() != 2 * PAKYLEN {
        return Err(AsError::Botch);
    }
    let mut sy = [0u8; PAKYLEN];
    sy.copy_from_slice(&ys[..PAKYLEN]);
    // The ticket request does not depend on the key: it goes out first, so our half
    // of the exchange is worked out while the auth server works out its own.
    req.typ = AUTH_TREQ;
    s.write_all(&req.to_bytes()?)?;
    s.flush()?;
    let pakkey = p.finish(hash, &ys[PAKYLEN..]).map_err(|_| AsError::Botch)?;
    let tickets = read_tickets(s)?;
    Ok(PakTickets {
        server_y: sy,
        pakkey,
        tickets,
    })
}

/// 9front's `_asgetticket` after the request went out: `AuthOK` and two tickets,
/// each of the length its first 8 bytes say (form1 or DES).
pub fn read_tickets<R: Read>(r: &mut R) -> Result<Zeroizing<Vec<u8>>, AsError> {
    read_response(r, 0)?;
    let mut out = Zeroizing::new(Vec::with_capacity(2 * MAXTICKETLEN));
    for _ in 0..2 {
        let mut head = [0u8; 8];
        if read_full(r, &mut head)? != 8 {
            return Err(AsError::Botch);
        }
        let n = form1::ticket_wire_len(&head);
        let mut rest = Zeroizing::new(vec![0u8; n - 8]);
        if read_full(r, &mut rest)? != n - 8 {
            return Err(AsError::Botch);
        }
        out.extend_from_slice(&head);
        out.extend_from_slice(&rest);
    }
    Ok(out)
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
/// - `users/NAME` (mode 0600): the user's DES key as 14 hex digits on the first
///   line, and on the second the AES key of dp9ik as 32 hex digits (absent in
///   files written before dp9ik: such users have p9sk1 only); never the
///   password.
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

    /// Add (or replace) a user with the keys of `password`: the DES key of
    /// p9sk1 and the AES key of dp9ik.
    pub fn add_user(&self, name: &str, password: &[u8]) -> Result<(), AsError> {
        let aes = crate::pak::passtoaeskey(password);
        self.set_keys(name, &DesKey::from_password(password), Some(&aes))
    }

    /// Set a user's keys: the DES key, and the AES key if there is one.
    pub fn set_keys(&self, name: &str, key: &DesKey, aes: Option<&AesKey>) -> Result<(), AsError> {
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
        if let Some(a) = aes {
            line.push_str(&a.to_hex());
            line.push('\n');
        }
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

impl KeyDir {
    /// The `n`th line of a user's key file.
    fn key_line(&self, user: &str, n: usize) -> Option<Zeroizing<String>> {
        let path = self.user_path(user).ok()?;
        let text = Zeroizing::new(fs::read_to_string(path).ok()?);
        text.lines().nth(n).map(|l| Zeroizing::new(l.to_string()))
    }
}

impl UserDb for KeyDir {
    fn key(&self, user: &str) -> Option<DesKey> {
        DesKey::from_hex(&self.key_line(user, 0)?).ok()
    }

    fn aes_key(&self, user: &str) -> Option<AesKey> {
        AesKey::from_hex(&self.key_line(user, 1)?)
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
    /// user → AES key (dp9ik).
    pub aes_keys: std::collections::HashMap<String, AesKey>,
    /// `speaksfor` rules, as in [`KeyDir`].
    pub speaksfor: String,
}

impl MemDb {
    /// Add a user with both keys of `password`.
    pub fn add_user(&mut self, name: &str, password: &[u8]) {
        self.keys
            .insert(name.to_string(), DesKey::from_password(password));
        self.aes_keys
            .insert(name.to_string(), crate::pak::passtoaeskey(password));
    }
}

impl UserDb for MemDb {
    fn key(&self, user: &str) -> Option<DesKey> {
        self.keys.get(user).cloned()
    }
    fn aes_key(&self, user: &str) -> Option<AesKey> {
        self.aes_keys.get(user).cloned()
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
        let srv = Arc::new(AuthServer::new(db(), Some("dom".into())).unwrap());
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
        let srv = Arc::new(AuthServer::new(db(), None).unwrap());
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
        let srv = Arc::new(AuthServer::new(db(), Some("dom".into())).unwrap());
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
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 14);
        assert_eq!(lines[1].len(), 32);
        assert_eq!(
            kd.aes_key("glenda"),
            Some(crate::pak::passtoaeskey(b"glenda pw"))
        );
        // A file from before dp9ik: the DES key only.
        fs::write(&f, format!("{}\n", lines[0])).unwrap();
        assert_eq!(kd.key("glenda"), Some(DesKey::from_password(b"glenda pw")));
        assert_eq!(kd.aes_key("glenda"), None);
        assert_eq!(kd.aes_key("nobody"), None);
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

    /// A dp9ik exchange through the AS with MemDb's users: the client's and the
    /// server's PAK keys, and what opens with them.
    struct PakRun {
        client: Result<form1::Ticket, crate::ticket::Error>,
        server: Result<form1::Ticket, crate::ticket::Error>,
    }

    fn pak_exchange(
        srv: &Arc<AuthServer<MemDb>>,
        hostid: &str,
        uid: &str,
        cpw: &[u8],
        spw: &[u8],
    ) -> Result<PakRun, AsError> {
        let chash = authpak_hash(&crate::pak::passtoaeskey(cpw), hostid.as_bytes());
        let shash = authpak_hash(&crate::pak::passtoaeskey(spw), b"bootes");
        let sp = PakPriv::new(&shash, true).unwrap();
        let mut tr = p9sk1::server_ticketreq("bootes", "dom").unwrap();
        tr.typ = AUTH_PAK;
        tr.hostid = hostid.into();
        tr.uid = uid.into();
        let mut conn = spawn_as(srv.clone());
        let got = get_pak_tickets(&mut conn, &tr, &sp.public(), &chash)?;
        assert_eq!(got.tickets.len(), 2 * MAXTICKETLEN);
        let skey = sp.finish(&shash, &got.server_y).unwrap();
        Ok(PakRun {
            client: form1::Ticket::open(&got.tickets, &got.pakkey.0),
            server: form1::Ticket::open(&got.tickets[MAXTICKETLEN..], &skey.0),
        })
    }

    fn pak_srv() -> Arc<AuthServer<MemDb>> {
        let mut d = db();
        for u in ["glenda", "bootes", "cpu"] {
            d.add_user(u, format!("{u} pw").as_bytes());
        }
        Arc::new(AuthServer::new(d, Some("dom".into())).unwrap())
    }

    #[test]
    fn authpak_through_the_as() {
        let srv = pak_srv();
        let r = pak_exchange(&srv, "glenda", "glenda", b"glenda pw", b"bootes pw").unwrap();
        let (c, s) = (r.client.unwrap(), r.server.unwrap());
        assert_eq!((c.num, s.num), (AUTH_TC, AUTH_TS));
        assert_eq!((c.cuid.as_str(), s.suid.as_str()), ("glenda", "glenda"));
        assert_eq!(c.key, s.key);
        // A speaks-for host.
        let r = pak_exchange(&srv, "cpu", "glenda", b"cpu pw", b"bootes pw").unwrap();
        assert_eq!(r.server.unwrap().cuid, "glenda");
        // Wrong passwords, an unknown user, a user without an AES key, refused
        // speaks-for: tickets that do not open, nothing else to tell them apart.
        let mut d = db();
        d.add_user("bootes", b"bootes pw");
        let srv2 = Arc::new(AuthServer::new(d, None).unwrap());
        for (srv, h, u, cpw, spw) in [
            (&srv, "glenda", "glenda", &b"guess"[..], &b"bootes pw"[..]),
            (&srv, "nobody", "nobody", b"x", b"bootes pw"),
            (&srv2, "glenda", "glenda", b"glenda pw", b"bootes pw"),
            (&srv, "glenda", "bootes", b"glenda pw", b"bootes pw"),
            (&srv, "cpu", "bootes", b"cpu pw", b"bootes pw"),
        ] {
            let r = pak_exchange(srv, h, u, cpw, spw).unwrap();
            assert_eq!(
                r.client.unwrap_err(),
                crate::ticket::Error::Form1,
                "{h} {u}"
            );
        }
        let r = pak_exchange(&srv, "glenda", "glenda", b"glenda pw", b"guess").unwrap();
        assert!(r.client.is_ok());
        assert_eq!(r.server.unwrap_err(), crate::ticket::Error::Form1);
        // The made-up key of a name stays the same, and its hash is kept.
        let a = srv.pakhash("nobody");
        assert!(Arc::ptr_eq(&a, &srv.pakhash("nobody")));
        assert!(!Arc::ptr_eq(&a, &srv.pakhash("nobody2")));
    }

    #[test]
    fn after_authpak_des_is_disabled() {
        let srv = pak_srv();
        let hash = authpak_hash(&crate::pak::passtoaeskey(b"glenda pw"), b"glenda");
        let mut tr = p9sk1::server_ticketreq("bootes", "dom").unwrap();
        tr.typ = AUTH_PAK;
        tr.hostid = "glenda".into();
        tr.uid = "glenda".into();
        let y = PakPriv::new(&hash, true).unwrap().public();
        let mut conn = spawn_as(srv.clone());
        get_pak_tickets(&mut conn, &tr, &y, &hash).unwrap();
        // A second ticket request on the connection: the PAK keys are spent.
        tr.typ = AUTH_TREQ;
        conn.write_all(&tr.to_bytes().unwrap()).unwrap();
        match read_tickets(&mut conn) {
            Err(AsError::Remote(m)) => assert_eq!(m, "DES is disabled"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Tickets for names other than the PAK's.
        let mut conn = spawn_as(srv.clone());
        let mut req = tr.clone();
        req.typ = AUTH_PAK;
        let mut out = req.to_bytes().unwrap().to_vec();
        out.extend_from_slice(&y);
        out.extend_from_slice(&PakPriv::new(&hash, true).unwrap().public());
        conn.write_all(&out).unwrap();
        read_response(&mut conn, 2 * PAKYLEN).unwrap();
        let mut other = tr.clone();
        other.hostid = "cpu".into();
        conn.write_all(&other.to_bytes().unwrap()).unwrap();
        assert!(
            matches!(read_tickets(&mut conn), Err(AsError::Remote(m)) if m == "DES is disabled")
        );
        // An AuthPAK for another domain.
        let mut conn = spawn_as(srv.clone());
        let mut bad = req.clone();
        bad.authdom = "other".into();
        match get_pak_tickets(&mut conn, &bad, &y, &hash) {
            Err(AsError::Remote(m)) => assert_eq!(m, "bad authentication domain"),
            other => panic!("{:?}", other.map(|_| ())),
        }
        // A value that is not a point: the AS hangs up.
        let mut conn = spawn_as(srv.clone());
        let mut out = req.to_bytes().unwrap().to_vec();
        out.extend_from_slice(&[0xff; PAKYLEN]);
        out.extend_from_slice(&[0xff; PAKYLEN]);
        conn.write_all(&out).unwrap();
        read_response(&mut conn, 2 * PAKYLEN).unwrap();
        let _ = conn.write_all(&tr.to_bytes().unwrap());
        // End of file, or a reset when it went with our request unread.
        assert!(matches!(
            read_tickets(&mut conn),
            Err(AsError::Botch | AsError::Io(_))
        ));
        // No names at all: just AuthOK, and the connection goes on.
        let mut conn = spawn_as(srv);
        let mut none = req.clone();
        none.hostid.clear();
        none.uid.clear();
        conn.write_all(&none.to_bytes().unwrap()).unwrap();
        assert_eq!(read_response(&mut conn, 0).unwrap(), b"");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        #[test]
        fn as_never_panics(first in proptest::prelude::any::<u8>(), data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let srv = Arc::new(AuthServer::new(db(), None).unwrap());
            let (mut a, b) = UnixStream::pair().unwrap();
            let t = std::thread::spawn(move || { let _ = srv.serve(b); });
            let mut msg = vec![first % 24];
            msg.extend_from_slice(&data);
            let _ = a.write_all(&msg);
            let _ = a.shutdown(std::net::Shutdown::Write);
            let mut reply = Vec::new();
            let _ = a.read_to_end(&mut reply);
            let _ = t.join();
            let mut r: &[u8] = &reply;
            let _ = read_tickets(&mut r);
            let mut r: &[u8] = &data;
            let _ = read_tickets(&mut r);
            let mut r: &[u8] = &data;
            let _ = read_response(&mut r, 2 * PAKYLEN);
        }
    }
}

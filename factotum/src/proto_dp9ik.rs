//! dp9ik, 9front's Plan 9 authentication with a password authenticated key exchange
//! (authsrv(6), "Password authenticated key exchange"), in both roles, as 9front's
//! factotum speaks it (p9sk1.c, where dp9ik lives beside p9sk1):
//!
//! ```text
//! client                                            server
//!   read:  CHc[8]                              →     write
//!   write: ←  Ticketreq[141] YBs[56]                 read     (type AuthPAK)
//!          (the client runs AuthPAK and AuthTreq with the auth server,
//!           relaying YBs and getting YAs back for the server)
//!   read:  YAs[56]                             →     write
//!   read:  PAKs{AuthTs,...}[124] Kn{AuthAc, CHs, RNc}[68] → write
//!   write: ←  Kn{AuthAs, CHc, RNs}[68]               read
//! ```
//!
//! Both factotums take the PAK client's part (their values blind with the
//! password's PM point) and the auth server the PAK server's part for each of
//! them; a PAK key opens each side's ticket (form1, ChaCha20-Poly1305), so a
//! sniffed exchange gives nothing to try passwords against. Kn is 256 bits; the
//! authenticators carry 32-byte nonces RNc and RNs, and the session secret is
//! `HKDF-SHA256(salt = RNc || RNs, key = Kn, info = "Plan 9 session secret")`,
//! 256 bytes, as 9front's `establish`.
//!
//! Keys: `proto=dp9ik dom=D user=U !password=P`, or `!hex=` and the 32 hex digits
//! of the AES key (`passtoaeskey` of the password, as 9front's nvram and
//! `auth/keyfs` hold it); `role=client`, `role=server` or `role=speakfor` restrict
//! their use. The AES key and the pakhash (two curve points made from it and the
//! user name) are worked out once, when the key is added.
//!
//! The auth server is found as for p9sk1 (the key's `auth=`, factotum's `-a`,
//! `$auth`). If it cannot be reached and the client's key is the server's own
//! (the same user), the client plays the auth server itself, PAK and tickets, as
//! 9front's `mkservertickets` does.
//!
//! Failures, with the words of Plan 9's p9sk1 where there are some and 9front's
//! otherwise: a ticket the client's PAK key does not open (wrong password, a user
//! the AS does not know, or a refused speaks-for) is `badkey`, then `key mismatch
//! with auth server`, as p9sk1; on the server, a ticket its PAK key does not open,
//! or one for another challenge (a replay, a changed byte), is `key mismatch with
//! auth server`, a bad client authenticator `client lies through his teeth`, and on
//! the client a bad server authenticator `server lies through his teeth`. A
//! message of the wrong kind, or a PAK value that is not a curve point, is 9front's
//! `auth server protocol botch`. A short write is `toosmall n`, a long one refused.

use std::sync::Arc;

use hkdf::Hkdf;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::attr::{Attrs, Derived, Key};
use crate::authsrv::get_pak_tickets;
use crate::pak::{AesKey, PAKYLEN, PakHash, PakKey, PakPriv, authpak_hash, passtoaeskey};
use crate::proto_p9sk1::{
    add_cap, badkey_message, client_ids, client_template, dial_auth, exact, server_key,
    tickets_or_own,
};
use crate::rpc::{AuthInfo, Ctx, Proto, ProtoDesc, SecretBytes, Step, Want};
use crate::ticket::form1::{Authenticator, Ticket};
use crate::ticket::{
    ANAMELEN, AUTH_AC, AUTH_AS, AUTH_PAK, AUTH_TC, AUTH_TS, CHALLEN, DOMLEN, MAXAUTHENTLEN,
    MAXTICKETLEN, NONCELEN, TICKREQLEN, Ticketreq, random_bytes,
};

pub const DESC: ProtoDesc = ProtoDesc {
    name: "dp9ik",
    roles: &["client", "server"],
    keyprompt: "user? dom? !password?",
    start: |role| {
        if role == "server" {
            Box::new(Server::new())
        } else {
            Box::new(Client::new())
        }
    },
    check: Some(check_key),
    prepare: Some(prepare_key),
};

/// The server's first message: a ticket request of type AuthPAK and its PAK value.
pub const PAKREQLEN: usize = TICKREQLEN + PAKYLEN;
/// The client's ticket message: the server's ticket and the client's authenticator.
pub const TICKETMSGLEN: usize = MAXTICKETLEN + MAXAUTHENTLEN;
/// Length of the session secret in the AuthInfo (9front's `ai->nsecret`).
pub const SECRETLEN: usize = 256;

/// 9front's `Easproto`.
const EASPROTO: &str = "auth server protocol botch";
const KEY_MISMATCH: &str = "key mismatch with auth server";
const CLIENT_LIES: &str = "client lies through his teeth";
const SERVER_LIES: &str = "server lies through his teeth";

/// What dp9ik derives from a key (9front's `Authkey` of a dp9ik key): the AES key
/// and the pakhash of the key's user. Both are zeroed when dropped.
pub struct KeyMaterial {
    pub aes: AesKey,
    pub hash: PakHash,
}

/// A dp9ik key's checks, as p9sk1's (`user` and `dom` present and short enough)
/// and a `!password`, or a `!hex` of 32 hex digits.
pub fn check_key(k: &Key) -> Result<(), String> {
    let (Some(user), Some(dom)) = (k.find("user"), k.find("dom")) else {
        return Err("need user and dom attributes".into());
    };
    if user.len() >= ANAMELEN {
        return Err("user name too long".into());
    }
    if dom.len() >= DOMLEN {
        return Err("auth dom name too long".into());
    }
    if k.secret.find("!password").is_some() {
        Ok(())
    } else if let Some(h) = k.secret.find("!hex") {
        AesKey::from_hex(h)
            .map(|_| ())
            .ok_or_else(|| "malformed !hex key data".to_string())
    } else {
        Err("need !password or !hex attribute".into())
    }
}

/// Derive a key's AES key and pakhash (9front's `p9skaddkey` for dp9ik).
pub fn derive(k: &Key) -> Result<KeyMaterial, String> {
    let aes = if let Some(pw) = k.secret.find("!password") {
        passtoaeskey(pw.as_bytes())
    } else if let Some(h) = k.secret.find("!hex") {
        AesKey::from_hex(h).ok_or_else(|| "malformed !hex key data".to_string())?
    } else {
        return Err("need !password or !hex attribute".into());
    };
    let user = k.find("user").ok_or("need user and dom attributes")?;
    let hash = authpak_hash(&aes, user.as_bytes());
    Ok(KeyMaterial { aes, hash })
}

fn prepare_key(k: &Key) -> Result<Derived, String> {
    Ok(Arc::new(derive(k)?))
}

/// A key's material: what was derived when it was added, or derived now.
fn material(k: &Key) -> Result<Arc<KeyMaterial>, String> {
    if let Some(d) = &k.derived {
        if let Ok(m) = d.clone().downcast::<KeyMaterial>() {
            return Ok(m);
        }
    }
    derive(k).map(Arc::new)
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

fn nonce() -> Result<[u8; NONCELEN], String> {
    let mut n = [0u8; NONCELEN];
    random_bytes(&mut n).map_err(|e| e.to_string())?;
    Ok(n)
}

/// 9front's `establish`: the AuthInfo of a dp9ik ticket and the two nonces.
fn authinfo(t: &Ticket, rand: &[u8; 2 * NONCELEN]) -> AuthInfo {
    let hk = Hkdf::<Sha256>::new(Some(&rand[..]), &t.key[..]);
    let mut secret = SecretBytes(vec![0u8; SECRETLEN]);
    // 256 bytes is far below HKDF-SHA256's limit of 255*32; expand cannot fail.
    if hk.expand(b"Plan 9 session secret", &mut secret.0).is_err() {
        unreachable!("HKDF output length is fixed and valid");
    }
    AuthInfo {
        cuid: t.cuid.clone(),
        suid: t.suid.clone(),
        cap: String::new(),
        secret,
    }
}

/// What the client gets for the server from the AS (or makes itself): the AS's
/// PAK value for the server, the client's PAK key, the two tickets.
type Tickets = ([u8; PAKYLEN], PakKey, Zeroizing<Vec<u8>>);

/// 9front's `mkservertickets` for dp9ik: with the server's own key (authid is
/// hostid), the client takes the auth server's part of the server's PAK and seals
/// both tickets with that PAK key. None when the key is not the server's.
fn make_tickets(tr: &Ticketreq, server_y: &[u8; PAKYLEN], hash: &PakHash) -> Option<Tickets> {
    if tr.authid != tr.hostid {
        return None;
    }
    let p = PakPriv::new(hash, false).ok()?;
    let y = p.public();
    let k = p.finish(hash, server_y).ok()?;
    let mut key = Zeroizing::new([0u8; NONCELEN]);
    random_bytes(&mut key[..]).ok()?;
    let mut t = Ticket {
        num: AUTH_TC,
        chal: tr.chal,
        cuid: tr.uid.clone(),
        suid: tr.uid.clone(),
        key,
    };
    let mut out = Zeroizing::new(Vec::with_capacity(2 * MAXTICKETLEN));
    out.extend_from_slice(&t.seal(&k.0).ok()?);
    t.num = AUTH_TS;
    out.extend_from_slice(&t.seal(&k.0).ok()?);
    Some((y, k, out))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CState {
    WriteChal,
    ReadPakReq,
    FindKey,
    GetTickets,
    ReplaceKey,
    WriteTicket,
    ReadAuth,
    Done,
}

/// The client role.
struct Client {
    st: CState,
    cchal: [u8; CHALLEN],
    tr: Ticketreq,
    /// The server's PAK value, for the auth server.
    server_y: [u8; PAKYLEN],
    speakfor: bool,
    /// The key template.
    tmpl: Attrs,
    /// The AES key the auth server disagreed with.
    bad: Option<AesKey>,
    ticket: Option<Ticket>,
    /// The server's ticket and our authenticator, to send.
    msg: SecretBytes,
    /// RNc then RNs.
    rand: Zeroizing<[u8; 2 * NONCELEN]>,
}

impl Client {
    fn new() -> Client {
        Client {
            st: CState::WriteChal,
            cchal: [0; CHALLEN],
            tr: Ticketreq::default(),
            server_y: [0; PAKYLEN],
            speakfor: false,
            tmpl: Attrs::new(),
            bad: None,
            ticket: None,
            msg: SecretBytes::default(),
            rand: Zeroizing::new([0; 2 * NONCELEN]),
        }
    }

    /// Find a key, run the AS exchange, and make the PAK value for the server
    /// (returned) and the ticket message (kept for the next read).
    fn tickets(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if self.st != CState::ReplaceKey {
            self.st = CState::FindKey;
        }
        let Some(key) = ctx.key(&self.tmpl).cloned() else {
            return Step::NeedKey(self.tmpl.clone());
        };
        let km = match material(&key) {
            Ok(m) => m,
            Err(e) => return Step::Error(e),
        };
        if self.bad.as_ref() == Some(&km.aes) {
            return Step::Error(KEY_MISMATCH.into());
        }
        self.st = CState::FindKey;
        if let Err(e) = client_ids(&mut self.tr, &key, self.speakfor, ctx.sysuser) {
            return Step::Error(e);
        }
        if [
            &self.tr.authdom,
            &self.tr.authid,
            &self.tr.hostid,
            &self.tr.uid,
        ]
        .iter()
        .any(|s| s.is_empty())
        {
            return Step::Error("bad ticket request".into());
        }
        self.st = CState::GetTickets;
        let from_as = dial_auth(ctx, &key, &self.tr.authdom).and_then(|mut s| {
            get_pak_tickets(&mut s, &self.tr, &self.server_y, &km.hash).map_err(|e| e.to_string())
        });
        let from_as = from_as.map(|t| (t.server_y, t.pakkey, t.tickets));
        let (paky, pakkey, tickets) =
            match tickets_or_own(from_as, || make_tickets(&self.tr, &self.server_y, &km.hash)) {
                Ok(t) => t,
                Err(step) => return step,
            };
        // Tickets in the old form from a dp9ik exchange are a protocol botch.
        if tickets.len() != 2 * MAXTICKETLEN {
            return Step::Error(EASPROTO.into());
        }
        let t = match Ticket::open(&tickets, &pakkey.0) {
            Ok(t) if t.num == AUTH_TC && same(&t.chal, &self.tr.chal) => t,
            _ => {
                // We don't agree with the auth server about the key: say so, and
                // try again on the next request with whatever key is there then.
                self.st = CState::ReplaceKey;
                self.bad = Some(km.aes.clone());
                return Step::BadKey(badkey_message(&key));
            }
        };
        let rnc = match nonce() {
            Ok(n) => n,
            Err(e) => return Step::Error(e),
        };
        self.rand[..NONCELEN].copy_from_slice(&rnc);
        let a = Authenticator {
            num: AUTH_AC,
            chal: self.tr.chal,
            rand: rnc,
        };
        let sealed = match a.seal(&t.key) {
            Ok(b) => b,
            Err(e) => return Step::Error(e.to_string()),
        };
        let mut msg = SecretBytes(Vec::with_capacity(TICKETMSGLEN));
        msg.0.extend_from_slice(&tickets[MAXTICKETLEN..]);
        msg.0.extend_from_slice(&sealed);
        self.msg = msg;
        self.ticket = Some(t);
        self.st = CState::WriteTicket;
        Step::Ok(SecretBytes(paky.to_vec()))
    }
}

/// The server's first message: its AuthPAK ticket request and PAK value.
fn parse_pakreq(data: &[u8]) -> Result<(Ticketreq, [u8; PAKYLEN]), Step> {
    let data = exact(data, PAKREQLEN)?;
    let tr = Ticketreq::from_bytes(data).map_err(|e| Step::Error(e.to_string()))?;
    if tr.typ != AUTH_PAK {
        return Err(Step::Error(EASPROTO.into()));
    }
    let mut y = [0u8; PAKYLEN];
    y.copy_from_slice(&data[TICKREQLEN..]);
    Ok((tr, y))
}

impl Client {
    /// Check the server's authenticator and keep its nonce.
    fn check_auth(&mut self, data: &[u8]) -> Result<(), Step> {
        let data = exact(data, MAXAUTHENTLEN)?;
        let Some(t) = &self.ticket else {
            return Err(Step::Error("protocol botch".into()));
        };
        let a = match Authenticator::open(data, &t.key) {
            Ok(a) if a.num == AUTH_AS && same(&a.chal, &self.cchal) => a,
            _ => return Err(Step::Error(SERVER_LIES.into())),
        };
        self.rand[NONCELEN..].copy_from_slice(&a.rand);
        Ok(())
    }
}

impl Proto for Client {
    fn state(&self) -> &'static str {
        match self.st {
            CState::WriteChal => "write challenge",
            CState::ReadPakReq => "read pakreq",
            CState::FindKey => "find key",
            CState::GetTickets => "get tickets",
            CState::ReplaceKey => "replace key",
            CState::WriteTicket => "write ticket",
            CState::ReadAuth => "read auth",
            CState::Done => "done",
        }
    }

    fn wants(&self) -> Want {
        match self.st {
            CState::ReadPakReq | CState::ReadAuth => Want::Write,
            _ => Want::Read,
        }
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.st {
            CState::WriteChal => {
                let mut c = [0u8; CHALLEN];
                if let Err(e) = random_bytes(&mut c) {
                    return Step::Error(e.to_string());
                }
                self.cchal = c;
                self.st = CState::ReadPakReq;
                Step::Ok(SecretBytes(c.to_vec()))
            }
            CState::FindKey | CState::GetTickets | CState::ReplaceKey => self.tickets(ctx),
            CState::WriteTicket => {
                self.st = CState::ReadAuth;
                Step::Ok(std::mem::take(&mut self.msg))
            }
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn write(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Step {
        match self.st {
            CState::ReadPakReq => {
                let (tr, y) = match parse_pakreq(data) {
                    Ok(x) => x,
                    Err(s) => return s,
                };
                let (a, speakfor) = match client_template(ctx, "dp9ik", &tr.authdom) {
                    Ok(x) => x,
                    Err(e) => return Step::Error(e),
                };
                self.server_y = y;
                self.speakfor = speakfor;
                self.tmpl = a;
                self.tr = tr;
                self.st = CState::FindKey;
                Step::Ok(SecretBytes::default())
            }
            CState::ReadAuth => {
                if let Err(s) = self.check_auth(data) {
                    return s;
                }
                if let Some(t) = &self.ticket {
                    add_cap(ctx.attrs, &t.cuid, &t.suid);
                }
                self.st = CState::Done;
                Step::Ok(SecretBytes::default())
            }
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn done(&self) -> bool {
        self.st == CState::Done
    }

    fn authinfo(&mut self) -> Option<AuthInfo> {
        self.ticket.as_ref().map(|t| authinfo(t, &self.rand))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SState {
    ReadChal,
    WritePakReq,
    ReadPakY,
    ReadTicket,
    WriteAuth,
    Done,
}

/// The server role.
struct Server {
    st: SState,
    km: Option<Arc<KeyMaterial>>,
    user: String,
    dom: String,
    cchal: [u8; CHALLEN],
    tr: Ticketreq,
    pak: Option<PakPriv>,
    pakkey: Option<PakKey>,
    ticket: Option<Ticket>,
    auth: [u8; MAXAUTHENTLEN],
    /// RNc then RNs.
    rand: Zeroizing<[u8; 2 * NONCELEN]>,
}

impl Server {
    fn new() -> Server {
        Server {
            st: SState::ReadChal,
            km: None,
            user: String::new(),
            dom: String::new(),
            cchal: [0; CHALLEN],
            tr: Ticketreq::default(),
            pak: None,
            pakkey: None,
            ticket: None,
            auth: [0; MAXAUTHENTLEN],
            rand: Zeroizing::new([0; 2 * NONCELEN]),
        }
    }

    /// The AuthPAK ticket request and our PAK value.
    fn pakreq(&mut self) -> Result<SecretBytes, String> {
        let Some(km) = &self.km else {
            return Err("protocol botch".into());
        };
        let mut chal = [0u8; CHALLEN];
        random_bytes(&mut chal).map_err(|e| e.to_string())?;
        let tr = Ticketreq {
            typ: AUTH_PAK,
            authid: self.user.clone(),
            authdom: self.dom.clone(),
            chal,
            hostid: String::new(),
            uid: String::new(),
        };
        let b = tr.to_bytes().map_err(|e| e.to_string())?;
        let p = PakPriv::new(&km.hash, true).map_err(|e| e.to_string())?;
        let mut out = SecretBytes(Vec::with_capacity(PAKREQLEN));
        out.0.extend_from_slice(&b);
        out.0.extend_from_slice(&p.public());
        self.pak = Some(p);
        self.tr = tr;
        Ok(out)
    }

    /// The auth server's PAK value for us (relayed by the client): our PAK key.
    fn finish_pak(&mut self, data: &[u8]) -> Step {
        let data = match exact(data, PAKYLEN) {
            Ok(d) => d,
            Err(s) => return s,
        };
        let (Some(p), Some(km)) = (self.pak.take(), &self.km) else {
            return Step::Error("protocol botch".into());
        };
        match p.finish(&km.hash, data) {
            Ok(k) => self.pakkey = Some(k),
            Err(_) => return Step::Error(EASPROTO.into()),
        }
        self.st = SState::ReadTicket;
        Step::Ok(SecretBytes::default())
    }

    /// Check the client's ticket and authenticator; make ours.
    fn check_ticket(&mut self, data: &[u8]) -> Step {
        let data = match exact(data, TICKETMSGLEN) {
            Ok(d) => d,
            Err(s) => return s,
        };
        let Some(k) = &self.pakkey else {
            return Step::Error("protocol botch".into());
        };
        let t = match Ticket::open(data, &k.0) {
            Ok(t) if t.num == AUTH_TS && same(&t.chal, &self.tr.chal) => t,
            _ => return Step::Error(KEY_MISMATCH.into()),
        };
        let a = match Authenticator::open(&data[MAXTICKETLEN..], &t.key) {
            Ok(a) if a.num == AUTH_AC && same(&a.chal, &self.tr.chal) => a,
            _ => return Step::Error(CLIENT_LIES.into()),
        };
        let rns = match nonce() {
            Ok(n) => n,
            Err(e) => return Step::Error(e),
        };
        self.rand[..NONCELEN].copy_from_slice(&a.rand);
        self.rand[NONCELEN..].copy_from_slice(&rns);
        let reply = Authenticator {
            num: AUTH_AS,
            chal: self.cchal,
            rand: rns,
        };
        match reply.seal(&t.key) {
            Ok(b) => self.auth = b,
            Err(e) => return Step::Error(e.to_string()),
        }
        self.ticket = Some(t);
        self.st = SState::WriteAuth;
        Step::Ok(SecretBytes::default())
    }
}

impl Proto for Server {
    fn state(&self) -> &'static str {
        match self.st {
            SState::ReadChal => "read challenge",
            SState::WritePakReq => "write pakreq",
            SState::ReadPakY => "read paky",
            SState::ReadTicket => "read ticket",
            SState::WriteAuth => "write auth",
            SState::Done => "done",
        }
    }

    fn wants(&self) -> Want {
        match self.st {
            SState::ReadChal | SState::ReadPakY | SState::ReadTicket => Want::Write,
            _ => Want::Read,
        }
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.st {
            SState::WritePakReq => match self.pakreq() {
                Ok(b) => {
                    self.st = SState::ReadPakY;
                    Step::Ok(b)
                }
                Err(e) => Step::Error(e),
            },
            SState::WriteAuth => {
                let Some(t) = &self.ticket else {
                    return Step::Error("protocol botch".into());
                };
                add_cap(ctx.attrs, &t.cuid, &t.suid);
                self.st = SState::Done;
                Step::Ok(SecretBytes(self.auth.to_vec()))
            }
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn write(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Step {
        match self.st {
            SState::ReadChal => {
                if self.km.is_none() {
                    let (key, user, dom) = match server_key(ctx, "dp9ik") {
                        Ok(k) => k,
                        Err(s) => return s,
                    };
                    match material(key) {
                        Ok(m) => self.km = Some(m),
                        Err(e) => return Step::Error(e),
                    }
                    self.user = user;
                    self.dom = dom;
                }
                let data = match exact(data, CHALLEN) {
                    Ok(d) => d,
                    Err(s) => return s,
                };
                self.cchal.copy_from_slice(data);
                self.st = SState::WritePakReq;
                Step::Ok(SecretBytes::default())
            }
            SState::ReadPakY => self.finish_pak(data),
            SState::ReadTicket => self.check_ticket(data),
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn done(&self) -> bool {
        self.st == SState::Done
    }

    fn authinfo(&mut self) -> Option<AuthInfo> {
        self.ticket.as_ref().map(|t| authinfo(t, &self.rand))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::Ring;
    use crate::authsrv::{AuthServer, MemDb};
    use crate::rpc::{Conv, Env};
    use proptest::prelude::*;
    use std::net::TcpListener;

    /// An auth server on a loopback port, serving from a thread; its address.
    fn start_as(db: MemDb) -> String {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let srv = Arc::new(AuthServer::new(db, None).expect("authserver"));
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { break };
                let srv = srv.clone();
                std::thread::spawn(move || {
                    let _ = srv.serve(c);
                });
            }
        });
        format!("tcp!127.0.0.1!{port}")
    }

    fn db() -> MemDb {
        let mut d = MemDb::default();
        d.add_user("glenda", b"glenda pw");
        d.add_user("bootes", b"bootes pw");
        d.add_user("cpu", b"cpu pw");
        // A user from before dp9ik: a DES key only.
        d.keys.insert(
            "old".into(),
            crate::ticket::DesKey::from_password(b"old pw"),
        );
        d.speaksfor = "hostid=cpu uid=!bootes uid=*\n".into();
        d
    }

    /// A key ring as factotum's ctl makes it (each key prepared by its protocol).
    fn ring(keys: &[&str]) -> Ring {
        let mut r = Ring::new();
        for k in keys {
            let mut key = Key::from_attrs(Attrs::parse(k).expect("key"));
            let p = key.find("proto").unwrap_or("");
            let desc = crate::rpc::proto_lookup(p).expect("proto");
            if let Some(prep) = desc.prepare {
                key.derived = Some(prep(&key).expect("prepare"));
            }
            r.add(key);
        }
        r
    }

    /// One side: its keys, its conversation, who is asking.
    struct Side {
        ring: Ring,
        conv: Conv,
        sysuser: &'static str,
        authaddr: Option<String>,
    }

    impl Side {
        fn new(keys: &[&str], authaddr: Option<&str>) -> Side {
            Side {
                ring: ring(keys),
                conv: Conv::new(),
                sysuser: "owner",
                authaddr: authaddr.map(str::to_string),
            }
        }

        fn call(&mut self, req: &[u8]) -> Vec<u8> {
            self.conv.write(req).expect("rpc write");
            let mut env = Env::ring(&self.ring);
            env.sysuser = self.sysuser;
            env.owner = "owner";
            env.authaddr = self.authaddr.as_deref();
            self.conv.read_env(env).expect("rpc read").0.clone()
        }

        fn text(&mut self, req: &[u8]) -> String {
            String::from_utf8_lossy(&self.call(req)).into_owned()
        }

        fn write(&mut self, data: &[u8]) -> String {
            let mut req = b"write ".to_vec();
            req.extend_from_slice(data);
            self.text(&req)
        }

        fn authinfo(&mut self) -> Option<AuthInfo> {
            let r = self.call(b"authinfo");
            AuthInfo::from_bytes(r.strip_prefix(b"ok ")?).ok()
        }
    }

    /// Carry messages, server first, until both are done or one stops; `edit`
    /// may change the n-th message to the server before it goes. The last
    /// replies (client, server) and the messages to the server.
    fn shuttle(
        c: &mut Side,
        s: &mut Side,
        mut edit: impl FnMut(usize, &mut Vec<u8>),
    ) -> ((String, String), Vec<Vec<u8>>) {
        let mut to_server = Vec::new();
        let (mut last_c, mut last_s) = (String::new(), String::new());
        for _ in 0..20 {
            for server_side in [true, false] {
                let r = if server_side {
                    s.call(b"read")
                } else {
                    c.call(b"read")
                };
                if let Some(data) = r.strip_prefix(b"ok ") {
                    let mut data = data.to_vec();
                    let w = if server_side {
                        c.write(&data)
                    } else {
                        edit(to_server.len(), &mut data);
                        to_server.push(data.clone());
                        s.write(&data)
                    };
                    if w != "ok" {
                        if server_side {
                            last_c = w;
                        } else {
                            last_s = w;
                        }
                        return ((last_c, last_s), to_server);
                    }
                } else {
                    let text = String::from_utf8_lossy(&r).into_owned();
                    let stop = !text.starts_with("phase ") && !text.starts_with("done");
                    if server_side {
                        last_s = text;
                    } else {
                        last_c = text;
                    }
                    if stop || (last_c.starts_with("done") && last_s.starts_with("done")) {
                        return ((last_c, last_s), to_server);
                    }
                }
            }
        }
        panic!("shuttle did not finish");
    }

    const CKEY: &str = "proto=dp9ik dom=dom user=glenda !password='glenda pw'";
    const SKEY: &str = "proto=dp9ik dom=dom user=bootes role=server !password='bootes pw'";

    fn pair(ckeys: &[&str], skeys: &[&str], addr: Option<&str>, proto: &str) -> (Side, Side) {
        let mut c = Side::new(ckeys, addr);
        let mut s = Side::new(skeys, addr);
        assert_eq!(
            c.text(format!("start proto={proto} role=client").as_bytes()),
            "ok"
        );
        assert_eq!(
            s.text(format!("start proto={proto} role=server").as_bytes()),
            "ok"
        );
        (c, s)
    }

    #[test]
    fn exchange_through_the_as() {
        let addr = start_as(db());
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let (last, msgs) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(last, ("done haveai".into(), "done haveai".into()));
        let lens: Vec<usize> = msgs.iter().map(Vec::len).collect();
        assert_eq!(lens, [CHALLEN, PAKYLEN, TICKETMSGLEN]);
        assert_eq!(&msgs[2][..8], b"form1 Ts");
        let (ca, sa) = (
            c.authinfo().expect("client ai"),
            s.authinfo().expect("server ai"),
        );
        assert_eq!((ca.cuid.as_str(), ca.suid.as_str()), ("glenda", "glenda"));
        assert_eq!((sa.cuid.as_str(), sa.suid.as_str()), ("glenda", "glenda"));
        assert_eq!(ca.secret.0.len(), SECRETLEN);
        assert_eq!(ca.secret, sa.secret);
        let attr = s.text(b"attr");
        assert!(attr.contains("cuid=glenda suid=glenda cap=''"), "{attr}");
    }

    #[test]
    fn p9any_prefers_dp9ik_and_falls_back_to_p9sk1() {
        let addr = start_as(db());
        let sk1 = "proto=p9sk1 dom=dom user=bootes !password='bootes pw'";
        let csk1 = "proto=p9sk1 dom=dom user=glenda !password='glenda pw'";
        // Both protocols on both sides: the offer lists p9sk1 first, as 9front's,
        // and the client chooses dp9ik.
        let (mut c, mut s) = pair(&[csk1, CKEY], &[SKEY, sk1], Some(&addr), "p9any");
        let offer = s.call(b"read");
        assert_eq!(offer, b"ok v.2 p9sk1@dom dp9ik@dom\0");
        assert_eq!(c.write(&offer[3..]), "ok");
        assert_eq!(c.call(b"read"), b"ok dp9ik dom\0");
        let (mut c, mut s) = pair(&[csk1, CKEY], &[SKEY, sk1], Some(&addr), "p9any");
        let (last, msgs) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(last, ("done haveai".into(), "done haveai".into()));
        assert_eq!(msgs[0], b"dp9ik dom\0");
        assert_eq!(c.authinfo().expect("ai").secret.0.len(), SECRETLEN);
        // A client with only a p9sk1 key gets p9sk1.
        let (mut c, mut s) = pair(&[csk1], &[SKEY, sk1], Some(&addr), "p9any");
        let (last, msgs) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(last, ("done haveai".into(), "done haveai".into()));
        assert_eq!(msgs[0], b"p9sk1 dom\0");
        assert_eq!(c.authinfo().expect("ai").secret.0.len(), 8);
        // A server with only a p9sk1 key: p9sk1 too.
        let (mut c, mut s) = pair(&[csk1, CKEY], &[sk1], Some(&addr), "p9any");
        let (last, msgs) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(last, ("done haveai".into(), "done haveai".into()));
        assert_eq!(msgs[0], b"p9sk1 dom\0");
    }

    #[test]
    fn hex_key_is_the_aes_key() {
        let addr = start_as(db());
        let hex = passtoaeskey(b"bootes pw").to_hex();
        let skey = format!("proto=dp9ik dom=dom user=bootes !hex={}", &*hex);
        let (mut c, mut s) = pair(&[CKEY], &[&skey], Some(&addr), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(last, ("done haveai".into(), "done haveai".into()));
    }

    #[test]
    fn wrong_password_unknown_user_old_user() {
        let addr = start_as(db());
        for key in [
            "proto=dp9ik dom=dom user=glenda !password=wrong",
            "proto=dp9ik dom=dom user=nobody !password=whatever",
            "proto=dp9ik dom=dom user=old !password='old pw'",
        ] {
            let (mut c, mut s) = pair(&[key], &[SKEY], Some(&addr), "dp9ik");
            let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
            assert!(
                last.0.starts_with("badkey proto=dp9ik dom=dom user="),
                "{last:?}"
            );
            assert!(last.0.contains("\nkey mismatch with auth server\n"));
            assert!(!last.0.contains("wrong") && !last.0.contains("whatever"));
            assert_eq!(
                c.text(b"read"),
                "error dp9ik client replace key: key mismatch with auth server"
            );
        }
        // The server's password wrong: its PAK key does not open its ticket.
        let skey = "proto=dp9ik dom=dom user=bootes !password=wrong";
        let (mut c, mut s) = pair(&[CKEY], &[skey], Some(&addr), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(
            last.1,
            "error dp9ik server read ticket: key mismatch with auth server"
        );
        assert!(s.authinfo().is_none());
    }

    #[test]
    fn speaks_for() {
        let addr = start_as(db());
        let cpu = "proto=dp9ik dom=dom user=cpu role=speakfor !password='cpu pw'";
        let (mut c, mut s) = pair(&[cpu], &[SKEY], Some(&addr), "dp9ik");
        c.sysuser = "glenda";
        let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(last, ("done haveai".into(), "done haveai".into()));
        let ai = s.authinfo().expect("ai");
        assert_eq!((ai.cuid.as_str(), ai.suid.as_str()), ("glenda", "glenda"));
        // The AS refuses cpu speaking for bootes: random keys, a key mismatch.
        let (mut c, mut s) = pair(&[cpu], &[SKEY], Some(&addr), "dp9ik");
        c.sysuser = "bootes";
        let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
        assert!(last.0.starts_with("badkey "), "{last:?}");
        // Not the owner and only a client key: the owner's key is not used.
        let ckey = "proto=dp9ik dom=dom user=glenda role=client !password='glenda pw'";
        let (mut c, mut s) = pair(&[ckey], &[SKEY], Some(&addr), "dp9ik");
        c.sysuser = "glenda";
        let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
        assert!(last.0.starts_with("needkey "), "{last:?}");
    }

    #[test]
    fn without_an_auth_server() {
        // Nothing listens there.
        let dead = {
            let l = TcpListener::bind("127.0.0.1:0").expect("bind");
            let a = l.local_addr().expect("addr").port();
            format!("tcp!127.0.0.1!{a}")
        };
        // The server's own key on both sides: the client makes the tickets.
        let (mut c, mut s) = pair(&[SKEY], &[SKEY], Some(&dead), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
        assert_eq!(last, ("done haveai".into(), "done haveai".into()));
        let (ca, sa) = (c.authinfo().expect("ai"), s.authinfo().expect("ai"));
        assert_eq!(ca.secret, sa.secret);
        assert_eq!(ca.cuid, "bootes");
        // Another user's key: no tickets.
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&dead), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |_, _| {});
        assert!(
            last.0
                .starts_with("error dp9ik client get tickets: gettickets: "),
            "{last:?}"
        );
    }

    #[test]
    fn tampering_and_replay() {
        let addr = start_as(db());
        let flip = |at: usize, i: usize| {
            move |n: usize, m: &mut Vec<u8>| {
                if n == at {
                    m[i] ^= 1;
                }
            }
        };
        // The ticket, the client's authenticator.
        for (i, want) in [
            (20, "key mismatch with auth server"),
            (MAXTICKETLEN + 20, "client lies through his teeth"),
            (MAXTICKETLEN + 2, "client lies through his teeth"),
            (3, "key mismatch with auth server"),
        ] {
            let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
            let (last, _) = shuttle(&mut c, &mut s, flip(2, i));
            assert_eq!(last.1, format!("error dp9ik server read ticket: {want}"));
        }
        // The relayed PAK value: another point gives another key.
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |n, m| {
            if n == 1 {
                m.copy_from_slice(&crate::pak::base_mul_encoded(&[7u8; 56]));
            }
        });
        assert_eq!(
            last.1,
            "error dp9ik server read ticket: key mismatch with auth server"
        );
        // Not a point at all.
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |n, m| {
            if n == 1 {
                m.fill(0xff);
            }
        });
        assert_eq!(
            last.1,
            "error dp9ik server read paky: auth server protocol botch"
        );
        // The server's authenticator, changed on the way to the client.
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let m = c.call(b"read");
        assert_eq!(s.write(&m[3..]), "ok");
        let m = s.call(b"read");
        assert_eq!(c.write(&m[3..]), "ok");
        for _ in 0..2 {
            let m = c.call(b"read");
            assert_eq!(s.write(&m[3..]), "ok");
        }
        let mut m = s.call(b"read")[3..].to_vec();
        assert_eq!(m.len(), MAXAUTHENTLEN);
        m[30] ^= 0x80;
        assert_eq!(
            c.write(&m),
            "error dp9ik client read auth: server lies through his teeth"
        );
        // A replayed ticket message, in a later conversation.
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let (_, old) = shuttle(&mut c, &mut s, |_, _| {});
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |n, m| {
            if n == 2 {
                m.copy_from_slice(&old[2]);
            }
        });
        assert_eq!(
            last.1,
            "error dp9ik server read ticket: key mismatch with auth server"
        );
        // The old PAK value too.
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let (last, _) = shuttle(&mut c, &mut s, |n, m| {
            if n >= 1 {
                m.copy_from_slice(&old[n]);
            }
        });
        assert_eq!(
            last.1,
            "error dp9ik server read ticket: key mismatch with auth server"
        );
    }

    #[test]
    fn truncation_and_wrong_kinds() {
        let addr = start_as(db());
        let (mut c, mut s) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        let chal = c.call(b"read");
        assert_eq!(s.write(&chal[3..7]), "toosmall 8");
        assert_eq!(s.write(&chal[3..]), "ok");
        let req = s.call(b"read");
        assert_eq!(req.len(), 3 + PAKREQLEN);
        assert_eq!(req[3], AUTH_PAK);
        assert_eq!(c.write(&req[3..100]), "toosmall 197");
        let mut long = req[3..].to_vec();
        long.push(0);
        assert_eq!(c.write(&long), "error too much data; want 197 got 198");
        assert_eq!(c.write(&req[3..]), "ok");
        let y = c.call(b"read");
        assert_eq!(y.len(), 3 + PAKYLEN);
        assert_eq!(s.write(&y[3..10]), "toosmall 56");
        assert_eq!(s.write(&y[3..]), "ok");
        let t = c.call(b"read");
        assert_eq!(s.write(&t[3..100]), "toosmall 192");
        assert_eq!(s.text(b"read"), "phase in state 'read ticket' want 'write'");
        assert_eq!(s.text(b"authinfo"), "error conversation still active");
        // A p9sk1 ticket request to a dp9ik client.
        let (mut c, _) = pair(&[CKEY], &[SKEY], Some(&addr), "dp9ik");
        c.call(b"read");
        let mut tr = req[3..].to_vec();
        tr[0] = crate::ticket::AUTH_TREQ;
        assert_eq!(
            c.write(&tr),
            "error dp9ik client read pakreq: auth server protocol botch"
        );
    }

    #[test]
    fn keys_are_checked_and_prepared_once() {
        let k = |s: &str| Key::from_attrs(Attrs::parse(s).expect("attrs"));
        assert_eq!(
            check_key(&k("proto=dp9ik user=u !password=p")).unwrap_err(),
            "need user and dom attributes"
        );
        assert_eq!(
            check_key(&k("proto=dp9ik user=u dom=d")).unwrap_err(),
            "need !password or !hex attribute"
        );
        assert_eq!(
            check_key(&k("proto=dp9ik user=u dom=d !hex=abc")).unwrap_err(),
            "malformed !hex key data"
        );
        assert!(
            check_key(&k(&format!(
                "proto=dp9ik user=u dom=d !hex={}",
                "0f".repeat(16)
            )))
            .is_ok()
        );
        let key = ring(&[CKEY]).keys()[0].clone();
        let m1 = material(&key).expect("material");
        let m2 = material(&key).expect("material");
        assert!(Arc::ptr_eq(&m1, &m2));
        assert!(m1.aes == passtoaeskey(b"glenda pw"));
    }

    /// A server conversation waiting for the ticket message.
    fn server_at_ticket() -> Server {
        let mut s = Server::new();
        s.st = SState::ReadTicket;
        s.pakkey = Some(PakKey([9u8; 32]));
        s.tr.chal = [1; CHALLEN];
        s
    }

    /// A client conversation waiting for the server's authenticator.
    fn client_at_auth() -> Client {
        let mut c = Client::new();
        c.st = CState::ReadAuth;
        c.ticket = Some(Ticket {
            num: AUTH_TC,
            chal: [0; CHALLEN],
            cuid: "a".into(),
            suid: "a".into(),
            key: Zeroizing::new([3; NONCELEN]),
        });
        c
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn messages_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = server_at_ticket().check_ticket(&data);
            let mut s = Server::new();
            s.st = SState::ReadPakY;
            let _ = s.finish_pak(&data);
            static KM: std::sync::OnceLock<Arc<KeyMaterial>> = std::sync::OnceLock::new();
            let km = KM.get_or_init(|| {
                Arc::new(derive(&Key::from_attrs(Attrs::parse(SKEY).expect("key"))).expect("derive"))
            });
            let mut s = Server::new();
            s.pak = Some(PakPriv::new(&km.hash, true).expect("pak"));
            s.km = Some(km.clone());
            let _ = s.finish_pak(&data);
            let _ = parse_pakreq(&data);
            let _ = client_at_auth().check_auth(&data);
            let _ = Ticket::open(&data, &[0; 32]);
            let _ = Authenticator::open(&data, &[0; 32]);
        }

        #[test]
        fn ticket_message_of_the_right_size_is_refused_cleanly(data in proptest::collection::vec(any::<u8>(), TICKETMSGLEN)) {
            match server_at_ticket().check_ticket(&data) {
                Step::Error(m) => prop_assert_eq!(m, KEY_MISMATCH),
                other => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn authenticator_of_the_right_size_is_refused_cleanly(data in proptest::collection::vec(any::<u8>(), MAXAUTHENTLEN)) {
            match client_at_auth().check_auth(&data) {
                Err(Step::Error(m)) => prop_assert_eq!(m, SERVER_LIES),
                other => prop_assert!(false, "{:?}", other.err()),
            }
        }

        #[test]
        fn pakreqs_parse_or_fail(data in proptest::collection::vec(any::<u8>(), PAKREQLEN)) {
            match parse_pakreq(&data) {
                Ok((tr, y)) => {
                    prop_assert_eq!(tr.typ, AUTH_PAK);
                    prop_assert_eq!(&y[..], &data[TICKREQLEN..]);
                }
                Err(Step::Error(_)) => {}
                Err(other) => prop_assert!(false, "{:?}", other),
            }
        }
    }
}

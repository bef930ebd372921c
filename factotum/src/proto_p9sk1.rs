//! p9sk1, Plan 9's shared-key protocol (authsrv(6)), in both roles, as plan9port's
//! factotum speaks it:
//!
//! ```text
//! client                                   server
//!   read:  CHc[8]                     →      write
//!   write: ←  Ticketreq[141]                 read
//!          (the client gets two tickets from the auth server)
//!   read:  Ks{ticket}[72] Kn{AuthAc}[13] →   write
//!   write: ←  Kn{AuthAs, CHc}[13]            read
//! ```
//!
//! Keys: `proto=p9sk1 dom=D user=U !password=P` (or `!hex=` and 14 hex digits of
//! the DES key), with `role=client`, `role=server` or `role=speakfor` to restrict
//! their use. It is the client that asks the auth server for tickets: at the key's
//! `auth=` address, else factotum's `-a authaddr`, else `$auth` (tcp, port
//! `ticket`, 567). If the auth server cannot be reached and the client's key is the
//! server's own (the same user), the client makes the tickets itself, as plan9port
//! does.
//!
//! On success both sides add `cuid=`, `suid=` and `cap=''` to the conversation's
//! attributes, and the AuthInfo's secret is the 8-byte `des56to64` of the ticket's
//! key Kn.

use std::net::TcpStream;
use std::time::Duration;

use crate::attr::{Attr, Attrs, Key};
use crate::authsrv::get_tickets;
use crate::rpc::{AuthInfo, Ctx, Proto, ProtoDesc, SecretBytes, Step, Want};
use crate::ticket::p9sk1::{self as sk, P9sk1Error};
use crate::ticket::{
    ANAMELEN, AUTH_AC, AUTH_TC, AUTH_TS, AUTHENTLEN, Authenticator, CHALLEN, DOMLEN, DesKey,
    TICKETLEN, TICKREQLEN, Ticket, Ticketreq, check_name,
};

pub const DESC: ProtoDesc = ProtoDesc {
    name: "p9sk1",
    roles: &["client", "server"],
    keyprompt: "user? dom? !password?",
    start: |role| {
        if role == "server" {
            Box::new(Server::default())
        } else {
            Box::new(Client::default())
        }
    },
    check: Some(check_key),
    prepare: None,
};

/// How long to wait for the auth server.
const AS_TIMEOUT: Duration = Duration::from_secs(10);

/// plan9port's `p9sk1check`.
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
    des_key(k).map(|_| ())
}

/// The key's DES key, from `!password` or `!hex`.
pub fn des_key(k: &Key) -> Result<DesKey, String> {
    if let Some(pw) = k.secret.find("!password") {
        Ok(DesKey::from_password(pw.as_bytes()))
    } else if let Some(h) = k.secret.find("!hex") {
        DesKey::from_hex(h).map_err(|_| "malformed !hex key data".to_string())
    } else {
        Err("need !password or !hex attribute".into())
    }
}

/// plan9port's `convread`: exactly `n` bytes, `toosmall n` for fewer, refused (the
/// conversation goes on) for more.
pub fn exact(data: &[u8], n: usize) -> Result<&[u8], Step> {
    if data.len() < n {
        Err(Step::TooSmall(n))
    } else if data.len() > n {
        Err(Step::Reject(format!(
            "too much data; want {n} got {}",
            data.len()
        )))
    } else {
        Ok(data)
    }
}

/// Add plan9port's `addcap`: `cuid=`, `suid=` and an empty `cap=`.
pub(crate) fn add_cap(attrs: &mut Attrs, cuid: &str, suid: &str) {
    attrs.0.push(Attr::val("cuid", cuid));
    attrs.0.push(Attr::val("suid", suid));
    attrs.0.push(Attr::val("cap", ""));
}

fn authinfo(t: &Ticket) -> AuthInfo {
    AuthInfo {
        cuid: t.cuid.clone(),
        suid: t.suid.clone(),
        cap: String::new(),
        secret: SecretBytes(sk::secret(t).to_vec()),
    }
}

/// Dial the auth server for `dom`: the key's `auth=`, else factotum's `-a`, else
/// `$auth`; tcp, port `ticket` (567) unless given. The connection has timeouts and
/// no Nagle delay (the AS protocols are small messages each way).
pub(crate) fn dial_auth(ctx: &Ctx<'_>, key: &Key, dom: &str) -> Result<TcpStream, String> {
    let env = std::env::var("auth").ok().filter(|s| !s.is_empty());
    let addr = key
        .find("auth")
        .map(str::to_string)
        .or_else(|| ctx.authaddr.map(str::to_string))
        .or(env)
        .ok_or_else(|| format!("no auth server found for {dom}"))?;
    let (host, port) = match lib9::dial::parse_host(&addr, "ticket") {
        Ok(lib9::dial::Addr::Tcp { host, port }) => (host, port),
        Ok(_) => return Err(format!("{addr}: auth server must be on tcp")),
        Err(e) => return Err(format!("{addr}: {e}")),
    };
    let s = lib9::dial::connect_tcp(&host, port, AS_TIMEOUT).map_err(|e| format!("{addr}: {e}"))?;
    let _ = s.set_read_timeout(Some(AS_TIMEOUT));
    let _ = s.set_write_timeout(Some(AS_TIMEOUT));
    Ok(s)
}

/// Dial the auth server for `dom` and get the two tickets for `tr`
/// (plan9port's `getastickets`).
fn as_tickets(ctx: &Ctx<'_>, key: &Key, tr: &Ticketreq) -> Result<[u8; 2 * TICKETLEN], String> {
    let mut s = dial_auth(ctx, key, &tr.authdom)?;
    get_tickets(&mut s, tr).map_err(|e| e.to_string())
}

/// The tickets the auth server gave, or when it could not be asked (none
/// answers, say), those `own` makes when the client holds the server's key too,
/// as plan9port's `mkserverticket`; failing both, the auth server's error.
pub(crate) fn tickets_or_own<T>(
    from_as: Result<T, String>,
    own: impl FnOnce() -> Option<T>,
) -> Result<T, Step> {
    from_as.or_else(|e| own().ok_or_else(|| Step::Error(format!("gettickets: {e}"))))
}

/// The client's key template once the server's ticket request is in, with
/// plan9port's rule: if the caller is the factotum's owner any key will do; if
/// not, only a `role=speakfor` key, and only for the caller's own name. The
/// second value says whether it is speaking for the caller.
pub(crate) fn client_template(
    ctx: &Ctx<'_>,
    proto: &str,
    authdom: &str,
) -> Result<(Attrs, bool), String> {
    let user = ctx.attrs.find("user").map(str::to_string);
    let mut a = ctx.attrs.clone();
    a.remove("role");
    a.0.push(Attr::val("proto", proto));
    let speakfor = if ctx.sysuser == ctx.owner {
        false
    } else if user.is_none() || user.as_deref() == Some(ctx.sysuser) {
        a.remove("user");
        a.0.push(Attr::val("role", "speakfor"));
        true
    } else {
        return Err(format!(
            "will not authenticate for {} as {}",
            crate::attr::quote(ctx.sysuser),
            crate::attr::quote(user.as_deref().unwrap_or(""))
        ));
    };
    a.0.push(Attr::query("user"));
    a.0.push(Attr::val("dom", authdom));
    Ok((a, speakfor))
}

/// The server's key for `proto` (the conversation's attributes with `user?`, `dom?`
/// and the protocol), with its user and domain, checked to fit a ticket request.
pub(crate) fn server_key<'c>(
    ctx: &'c Ctx<'_>,
    proto: &str,
) -> Result<(&'c Key, String, String), Step> {
    let mut a = ctx.attrs.clone();
    a.0.push(Attr::query("user"));
    a.0.push(Attr::query("dom"));
    a.0.push(Attr::val("proto", proto));
    let Some(key) = ctx.key(&a) else {
        return Err(Step::NeedKey(a));
    };
    let user = key.find("user").unwrap_or("").to_string();
    let dom = key.find("dom").unwrap_or("").to_string();
    check_name("user", &user, ANAMELEN)
        .and_then(|()| check_name("dom", &dom, DOMLEN))
        .map_err(|e| Step::Error(e.to_string()))?;
    Ok((key, user, dom))
}

/// A client's ticket request names the key's user as the host, and as the user too
/// unless the client speaks for the user the rpc file was opened by.
pub(crate) fn client_ids(
    tr: &mut Ticketreq,
    key: &Key,
    speakfor: bool,
    sysuser: &str,
) -> Result<(), String> {
    tr.hostid = key.find("user").unwrap_or("").to_string();
    tr.uid = if speakfor {
        sysuser.to_string()
    } else {
        tr.hostid.clone()
    };
    check_name("hostid", &tr.hostid, ANAMELEN)
        .and_then(|()| check_name("uid", &tr.uid, ANAMELEN))
        .map_err(|e| e.to_string())
}

/// The `badkey` message for a key the auth server disagrees with: the key, the
/// reason, and a template for a replacement.
pub(crate) fn badkey_message(key: &Key) -> String {
    let mut prompt = key.public.clone();
    for n in ["user", "dom", "!password"] {
        prompt.remove(n);
        prompt.0.push(Attr::query(n));
    }
    format!(
        "{} {}\nkey mismatch with auth server\n{}",
        key.public,
        key.secret.names(),
        prompt
    )
}

/// plan9port's `mktickets`: with the server's own key, make the tickets without an
/// auth server.
fn make_tickets(tr: &Ticketreq, k: &DesKey) -> Option<[u8; 2 * TICKETLEN]> {
    if tr.authid != tr.hostid {
        return None;
    }
    let mut t = Ticket {
        num: AUTH_TC,
        chal: tr.chal,
        cuid: tr.uid.clone(),
        suid: tr.uid.clone(),
        key: DesKey::random().ok()?,
    };
    let mut out = [0u8; 2 * TICKETLEN];
    out[..TICKETLEN].copy_from_slice(&t.seal(k).ok()?);
    t.num = AUTH_TS;
    out[TICKETLEN..].copy_from_slice(&t.seal(k).ok()?);
    Some(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum CState {
    #[default]
    WriteChal,
    ReadTreq,
    FindKey,
    GetTickets,
    ReplaceKey,
    ReadAuth,
    Done,
}

/// The client role.
#[derive(Default)]
struct Client {
    st: CState,
    cchal: [u8; CHALLEN],
    tr: Ticketreq,
    speakfor: bool,
    /// The key template (plan9port's `a`).
    tmpl: Attrs,
    /// The DES key the auth server disagreed with.
    bad: Option<DesKey>,
    ticket: Option<Ticket>,
}

impl Client {
    /// Find a key, get tickets, and make the message for the server.
    fn tickets(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if self.st != CState::ReplaceKey {
            self.st = CState::FindKey;
        }
        let Some(key) = ctx.key(&self.tmpl).cloned() else {
            return Step::NeedKey(self.tmpl.clone());
        };
        let kc = match des_key(&key) {
            Ok(k) => k,
            Err(e) => return Step::Error(e),
        };
        if self.bad.as_ref() == Some(&kc) {
            return Step::Error("key mismatch with auth server".into());
        }
        self.st = CState::FindKey;
        if let Err(e) = client_ids(&mut self.tr, &key, self.speakfor, ctx.sysuser) {
            return Step::Error(e);
        }
        self.st = CState::GetTickets;
        let tickets = match tickets_or_own(as_tickets(ctx, &key, &self.tr), || {
            make_tickets(&self.tr, &kc)
        }) {
            Ok(t) => t,
            Err(step) => return step,
        };
        let t = match Ticket::open(&tickets, &kc) {
            Ok(t) if t.num == AUTH_TC => t,
            _ => {
                // We don't agree with the auth server about the key: say so, and
                // try again on the next request with whatever key is there then.
                self.st = CState::ReplaceKey;
                self.bad = Some(kc);
                return Step::BadKey(badkey_message(&key));
            }
        };
        let mut out = SecretBytes(Vec::with_capacity(TICKETLEN + AUTHENTLEN));
        out.0.extend_from_slice(&tickets[TICKETLEN..]);
        let a = Authenticator {
            num: AUTH_AC,
            chal: self.tr.chal,
            id: 0,
        };
        match a.seal(&t.key) {
            Ok(b) => out.0.extend_from_slice(&b),
            Err(e) => return Step::Error(e.to_string()),
        }
        self.ticket = Some(t);
        self.st = CState::ReadAuth;
        Step::Ok(out)
    }
}

impl Proto for Client {
    fn state(&self) -> &'static str {
        match self.st {
            CState::WriteChal => "write challenge",
            CState::ReadTreq => "read tickreq",
            CState::FindKey => "find key",
            CState::GetTickets => "get tickets",
            CState::ReplaceKey => "replace key",
            CState::ReadAuth => "read auth",
            CState::Done => "done",
        }
    }

    fn wants(&self) -> Want {
        match self.st {
            CState::ReadTreq | CState::ReadAuth => Want::Write,
            _ => Want::Read,
        }
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.st {
            CState::WriteChal => match sk::challenge() {
                Ok(c) => {
                    self.cchal = c;
                    self.st = CState::ReadTreq;
                    Step::Ok(SecretBytes(c.to_vec()))
                }
                Err(e) => Step::Error(e.to_string()),
            },
            CState::FindKey | CState::GetTickets | CState::ReplaceKey => self.tickets(ctx),
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn write(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Step {
        match self.st {
            CState::ReadTreq => {
                let data = match exact(data, TICKREQLEN) {
                    Ok(d) => d,
                    Err(s) => return s,
                };
                let tr = match Ticketreq::from_bytes(data) {
                    Ok(t) => t,
                    Err(e) => return Step::Error(e.to_string()),
                };
                // If the user is the factotum owner, any key will do; if not, only a
                // speakfor key, and only for the user's own identity.
                let (a, speakfor) = match client_template(ctx, "p9sk1", &tr.authdom) {
                    Ok(x) => x,
                    Err(e) => return Step::Error(e),
                };
                self.speakfor = speakfor;
                self.tmpl = a;
                self.tr = tr;
                self.st = CState::FindKey;
                Step::Ok(SecretBytes::default())
            }
            CState::ReadAuth => {
                let data = match exact(data, AUTHENTLEN) {
                    Ok(d) => d,
                    Err(s) => return s,
                };
                let Some(t) = &self.ticket else {
                    return Step::Error("protocol botch".into());
                };
                match sk::client_check(t, data, &self.cchal) {
                    Ok(()) => {}
                    Err(P9sk1Error::Format(e)) => return Step::Error(e.to_string()),
                    Err(_) => return Step::Error("server lies through his teeth".into()),
                }
                add_cap(ctx.attrs, &t.cuid, &t.suid);
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
        self.ticket.as_ref().map(authinfo)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum SState {
    #[default]
    ReadChal,
    WriteTreq,
    ReadTicket,
    WriteAuth,
    Done,
}

/// The server role.
#[derive(Default)]
struct Server {
    st: SState,
    ks: Option<DesKey>,
    user: String,
    dom: String,
    cchal: [u8; CHALLEN],
    tr: Ticketreq,
    ticket: Option<Ticket>,
    auth: [u8; AUTHENTLEN],
}

impl Proto for Server {
    fn state(&self) -> &'static str {
        // plan9port's server names no states of its own.
        if self.st == SState::Done {
            "done"
        } else {
            "nascent"
        }
    }

    fn wants(&self) -> Want {
        match self.st {
            SState::ReadChal | SState::ReadTicket => Want::Write,
            _ => Want::Read,
        }
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.st {
            SState::WriteTreq => match sk::server_ticketreq(&self.user, &self.dom)
                .and_then(|tr| Ok((tr.to_bytes()?, tr)))
            {
                Ok((b, tr)) => {
                    self.tr = tr;
                    self.st = SState::ReadTicket;
                    Step::Ok(SecretBytes(b.to_vec()))
                }
                Err(e) => Step::Error(e.to_string()),
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
                if self.ks.is_none() {
                    let (key, user, dom) = match server_key(ctx, "p9sk1") {
                        Ok(k) => k,
                        Err(s) => return s,
                    };
                    match des_key(key) {
                        Ok(k) => self.ks = Some(k),
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
                self.st = SState::WriteTreq;
                Step::Ok(SecretBytes::default())
            }
            SState::ReadTicket => {
                let data = match exact(data, TICKETLEN + AUTHENTLEN) {
                    Ok(d) => d,
                    Err(s) => return s,
                };
                let Some(ks) = &self.ks else {
                    return Step::Error("protocol botch".into());
                };
                match sk::server_check(&self.tr, data, ks, &self.cchal) {
                    Ok((t, a)) => {
                        self.ticket = Some(t);
                        self.auth = a;
                        self.st = SState::WriteAuth;
                        Step::Ok(SecretBytes::default())
                    }
                    Err(e) => Step::Error(e.to_string()),
                }
            }
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn done(&self) -> bool {
        self.st == SState::Done
    }

    fn authinfo(&mut self) -> Option<AuthInfo> {
        self.ticket.as_ref().map(authinfo)
    }
}

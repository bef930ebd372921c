//! p9any, the negotiator, as plan9port's factotum speaks it:
//!
//! ```text
//! S→C: v.2 proto@dom proto@dom ... NUL
//! C→S: proto dom NUL
//! S→C: OK NUL                       (v.2 only)
//! then the chosen protocol
//! ```
//!
//! The server offers each key it holds for a protocol p9any may choose (p9sk1 and
//! dp9ik) that has a `dom=` and matches the conversation's attributes, p9sk1's
//! first and then dp9ik's, as 9front orders them (old drawterms take the first
//! offer they know); with none it fails ("no valid keys"). The client prefers
//! dp9ik, then p9sk1, and takes the first offer it has a key for, asking for a key
//! (`needkey`) when it has none. Once chosen, the conversation's
//! attributes become `proto=P dom=D` and the rest, and the chosen protocol runs;
//! its errors read `p9any ROLE STATE: P: msg`.

use crate::attr::{Attr, Attrs, quote, tokenize};
use crate::rpc::{
    AUTH_RPC_MAX, AuthInfo, Ctx, Proto, ProtoDesc, SecretBytes, Step, Want, proto_lookup,
};

pub const DESC: ProtoDesc = ProtoDesc {
    name: "p9any",
    roles: &["client", "server"],
    keyprompt: "",
    start: |role| {
        Box::new(P9any {
            server: role == "server",
            ..P9any::default()
        })
    },
    check: None,
    prepare: None,
};

/// The protocols p9any may choose, least preferred first (plan9port's `okproto`).
const OK_PROTO: &[&str] = &["p9sk1", "dp9ik"];

fn ok_proto(name: &str) -> bool {
    OK_PROTO.contains(&name) && proto_lookup(name).is_some()
}

fn pref(name: &str) -> usize {
    OK_PROTO.iter().position(|p| *p == name).unwrap_or(0)
}

/// plan9port's `hasnul`: a message is whole when it ends in NUL.
fn whole(data: &[u8]) -> Result<&str, Step> {
    match data.split_last() {
        Some((0, s)) => {
            std::str::from_utf8(s).map_err(|_| Step::Error("bad protocol message".into()))
        }
        _ => Err(Step::TooSmall(AUTH_RPC_MAX)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
enum St {
    #[default]
    Nascent,
    // server
    ReadChoice,
    WriteOk,
    // client
    ReadOffer,
    WriteChoice,
    ReadOk,
    // both
    Chosen,
}

#[derive(Default)]
struct P9any {
    server: bool,
    st: St,
    /// The attributes the chosen protocol runs with.
    next: Attrs,
    /// What to send next (offer or choice).
    msg: Vec<u8>,
    chosen: &'static str,
    version: u32,
    inner: Option<Box<dyn Proto>>,
}

impl P9any {
    fn offer(&mut self, ctx: &mut Ctx<'_>) -> Step {
        let mut attr = ctx.attrs.clone();
        attr.remove("proto");
        let mut s = String::from("v.2");
        let mut n = 0;
        // As 9front: protocol by protocol, p9sk1's keys first (old drawterms take
        // the first offer they know), then dp9ik's; clients choose by preference.
        for p in OK_PROTO.iter().filter(|p| ok_proto(p)) {
            for k in ctx.ring.keys() {
                if k.public.find("proto") != Some(p) {
                    continue;
                }
                if let Some(dom) = k.public.find("dom") {
                    if k.matches(&attr) {
                        s.push_str(&format!(" {p}@{dom}"));
                        n += 1;
                    }
                }
            }
        }
        if n == 0 {
            return Step::Error("no valid keys".into());
        }
        self.next = attr;
        s.push('\0');
        self.st = St::ReadChoice;
        Step::Ok(SecretBytes(s.into_bytes()))
    }

    fn choice(&mut self, data: &[u8]) -> Step {
        let s = match whole(data) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let tok = match tokenize(s) {
            Ok(t) if t.len() == 2 => t,
            _ => return Step::Error("bad protocol message".into()),
        };
        let (p, dom) = (tok[0].as_str(), tok[1].as_str());
        let Some(&name) = OK_PROTO.iter().find(|n| **n == p && ok_proto(n)) else {
            return Step::Error(format!("bad chosen protocol {}", quote(p)));
        };
        self.chosen = name;
        self.next.0.push(Attr::val("proto", name));
        self.next.0.push(Attr::val("dom", dom));
        self.st = St::WriteOk;
        Step::Ok(SecretBytes::default())
    }

    /// The client's attributes (plan9port's owner and speakfor rule), or an error.
    fn client_attrs(ctx: &Ctx<'_>) -> Result<Attrs, String> {
        let user = ctx.attrs.find("user").map(str::to_string);
        let mut a = ctx.attrs.clone();
        a.remove("role");
        a.remove("proto");
        if ctx.sysuser == ctx.owner {
            a.0.push(Attr::val("role", "client"));
        } else if user.is_none() || user.as_deref() == Some(ctx.sysuser) {
            a.remove("user");
            a.0.push(Attr::val("role", "speakfor"));
        } else {
            return Err(format!(
                "will not authenticate for {} as {}",
                quote(ctx.sysuser),
                quote(user.as_deref().unwrap_or(""))
            ));
        }
        Ok(a)
    }

    fn read_offer(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Step {
        self.st = St::ReadOffer;
        let attr = match Self::client_attrs(ctx) {
            Ok(a) => a,
            Err(e) => return Step::Error(e),
        };
        let s = match whole(data) {
            Ok(s) => s,
            Err(e) => return e,
        };
        let toks = match tokenize(s) {
            Ok(t) => t,
            Err(_) => return Step::Error("bad protocol message".into()),
        };
        let mut f: Vec<&str> = toks.iter().map(|t| t.as_str()).collect();
        self.version = 1;
        if let Some(v) = f.first().and_then(|t| t.strip_prefix("v.")) {
            if v != "2" {
                return Step::Error(format!("unknown p9any version: {}", f[0]));
            }
            self.version = 2;
            f.remove(0);
        }
        // Most preferred first; unknown protocols last.
        f.sort_by_key(|t| {
            let name = t.split('@').next().unwrap_or("");
            std::cmp::Reverse(if ok_proto(name) { pref(name) + 1 } else { 0 })
        });
        let dom = ctx.attrs.find("dom").map(str::to_string);
        let offers: Vec<(&str, &str)> = f
            .iter()
            .filter_map(|t| t.split_once('@'))
            .filter(|(_, d)| dom.as_deref().is_none_or(|want| want == *d))
            .collect();
        let tmpl = |p: &str, d: &str| {
            let mut a = attr.clone();
            a.0.push(Attr::val("proto", p));
            a.0.push(Attr::val("dom", d));
            a
        };
        // Keys that need no confirmation, then any key (confirmation is still to
        // come, so these are the same), then ask for one.
        let found = offers
            .iter()
            .find(|(p, d)| proto_lookup(p).is_some() && ctx.key(&tmpl(p, d)).is_some());
        let (p, d) = match found {
            Some(&(p, d)) => (p, d),
            None => {
                let ask = offers.iter().find_map(|(p, d)| {
                    let desc = proto_lookup(p)?;
                    if desc.keyprompt.is_empty() {
                        return None;
                    }
                    let mut t = tmpl(p, d);
                    if let Ok(kp) = Attrs::parse(desc.keyprompt) {
                        t.0.extend(kp.0);
                    }
                    Some(t)
                });
                return match ask {
                    Some(t) => Step::NeedKey(t),
                    None => Step::Error("unable to find common key".into()),
                };
            }
        };
        let Some(desc) = proto_lookup(p) else {
            return Step::Error(format!("unknown protocol {}", quote(p)));
        };
        self.chosen = desc.name;
        self.next = tmpl(p, d);
        self.msg = format!("{} {}\0", quote(p), quote(d)).into_bytes();
        self.st = St::WriteChoice;
        Step::Ok(SecretBytes::default())
    }

    fn begin(&mut self, ctx: &mut Ctx<'_>) -> Option<Step> {
        let Some(desc) = proto_lookup(self.chosen) else {
            return Some(Step::Error(format!(
                "unknown protocol {}",
                quote(self.chosen)
            )));
        };
        *ctx.attrs = std::mem::take(&mut self.next);
        self.inner = Some((desc.start)(if self.server { "server" } else { "client" }));
        self.st = St::Chosen;
        None
    }
}

impl Proto for P9any {
    fn state(&self) -> &'static str {
        match (&self.inner, self.st) {
            (Some(p), _) => match p.state() {
                "nascent" => "start choice",
                s => s,
            },
            (None, St::Nascent) if self.server => "nascent",
            (None, St::Nascent) => "read offer",
            (None, St::ReadChoice) => "read choice",
            (None, St::WriteOk) => "write ok",
            (None, St::ReadOffer) => "read offer",
            (None, St::WriteChoice) => "write choice",
            (None, St::ReadOk) => "read ok",
            (None, St::Chosen) => "start choice",
        }
    }

    fn wants(&self) -> Want {
        if let Some(p) = &self.inner {
            return p.wants();
        }
        match self.st {
            St::Nascent if self.server => Want::Read,
            St::WriteOk | St::WriteChoice => Want::Read,
            _ => Want::Write,
        }
    }

    fn read(&mut self, ctx: &mut Ctx<'_>) -> Step {
        if let Some(p) = &mut self.inner {
            return p.read(ctx);
        }
        match self.st {
            St::Nascent => self.offer(ctx),
            St::WriteOk => {
                if let Some(e) = self.begin(ctx) {
                    return e;
                }
                Step::Ok(SecretBytes(b"OK\0".to_vec()))
            }
            St::WriteChoice => {
                let m = SecretBytes(std::mem::take(&mut self.msg));
                if self.version == 2 {
                    self.st = St::ReadOk;
                } else if let Some(e) = self.begin(ctx) {
                    return e;
                }
                Step::Ok(m)
            }
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn write(&mut self, ctx: &mut Ctx<'_>, data: &[u8]) -> Step {
        if let Some(p) = &mut self.inner {
            return p.write(ctx, data);
        }
        match self.st {
            St::ReadChoice => self.choice(data),
            St::Nascent | St::ReadOffer => self.read_offer(ctx, data),
            St::ReadOk => {
                let d = match crate::proto_p9sk1::exact(data, 3) {
                    Ok(d) => d,
                    Err(s) => return s,
                };
                if d != b"OK\0" {
                    return Step::Error("server did not say OK".into());
                }
                match self.begin(ctx) {
                    Some(e) => e,
                    None => Step::Ok(SecretBytes::default()),
                }
            }
            _ => Step::Error("protocol botch".into()),
        }
    }

    fn done(&self) -> bool {
        self.inner.as_ref().is_some_and(|p| p.done())
    }

    fn authinfo(&mut self) -> Option<AuthInfo> {
        self.inner.as_mut().and_then(|p| p.authinfo())
    }

    fn error_prefix(&self) -> Option<&'static str> {
        self.inner.as_ref().map(|_| self.chosen)
    }
}

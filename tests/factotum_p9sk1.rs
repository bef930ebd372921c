//! p9any and p9sk1 end to end: one authsrv, two factotums (the client's and the
//! server's, each in its own $NAMESPACE), and a shuttle here that carries messages
//! between their rpc files as auth_proxy and a 9P server would.

mod common;

use common::auth::*;

const CLIENT_KEY: &str = "proto=p9sk1 dom=dom user=glenda !password='glenda pw'";
const SERVER_KEY: &str = "proto=p9sk1 dom=dom user=bootes role=server !password='bootes pw'";

#[test]
fn p9any_p9sk1_success() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(&a.addr, &[SERVER_KEY]);
    let (c, s) = start(&cf, &sf, "p9any");
    let run = shuttle(&c, &s);
    both_done(&run);
    // The offer, the choice, then p9sk1's messages.
    assert_eq!(run.to_server[0], b"p9sk1 dom\0");
    assert_eq!(run.to_server[1].len(), 8);
    assert_eq!(run.to_server[2].len(), 72 + 13);
    let ca = c.authinfo().expect("client authinfo");
    let sa = s.authinfo().expect("server authinfo");
    assert_eq!(ca.cuid, "glenda");
    assert_eq!(ca.suid, "glenda");
    assert_eq!((sa.cuid.as_str(), sa.suid.as_str()), ("glenda", "glenda"));
    assert_eq!(ca.secret.0.len(), 8);
    assert_eq!(ca.secret, sa.secret);
    let attr = s.text("attr", b"");
    assert!(attr.contains("proto=p9sk1 dom=dom"), "{attr}");
    assert!(attr.contains("cuid=glenda"), "{attr}");
    assert!(!attr.contains("secret"), "{attr}");
    for f in [&cf, &sf] {
        let log = f.log();
        assert!(!log.contains("pw"), "{log}");
    }
    // A second conversation gets another session key.
    let (c2, s2) = start(&cf, &sf, "p9any");
    shuttle(&c2, &s2);
    assert_ne!(c2.authinfo().expect("authinfo").secret, ca.secret);
}

#[test]
fn p9sk1_direct_and_hex_key() {
    let a = AuthSrv::start();
    let hex = factotum::ticket::DesKey::from_password(b"bootes pw").to_hex();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(
        &a.addr,
        &[&format!("proto=p9sk1 dom=dom user=bootes !hex={}", &*hex)],
    );
    let (c, s) = start(&cf, &sf, "p9sk1");
    // The client speaks first: the server's read is out of turn.
    assert_eq!(s.text("read", b""), "phase in state 'nascent' want 'write'");
    let run = shuttle(&c, &s);
    assert_eq!(run.last.0, "done haveai");
    assert_eq!(c.authinfo().unwrap().secret, s.authinfo().unwrap().secret);
}

#[test]
fn wrong_password_and_unknown_user() {
    wrong_client_keys_get_badkey("p9sk1", SERVER_KEY);
}

/// Run p9any as the server up to the ticket, feeding `msg` as the client's ticket
/// and authenticator; the server's reply.
fn serve_with(s: &Rpc, msg: &[u8]) -> String {
    assert_eq!(s.text("start", b"proto=p9any role=server"), "ok");
    assert_eq!(s.call("read", b""), b"ok v.2 p9sk1@dom\0");
    assert_eq!(s.text("write", b"p9sk1 dom\0"), "ok");
    assert_eq!(s.call("read", b""), b"ok OK\0");
    assert_eq!(s.text("write", b"12345678"), "ok");
    let tr = s.call("read", b"");
    assert_eq!(tr.len(), 3 + 141);
    s.text("write", msg)
}

#[test]
fn replayed_ticket_is_refused() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(&a.addr, &[SERVER_KEY]);
    let (c, s) = start(&cf, &sf, "p9any");
    let run = shuttle(&c, &s);
    assert_eq!(run.last.1, "done haveai");
    let captured = run.to_server[2].clone();
    assert_eq!(captured.len(), 85);
    let s2 = sf.rpc();
    assert_eq!(
        serve_with(&s2, &captured),
        "error p9any server start choice: p9sk1: key mismatch with auth server"
    );
    s2.assert_failed();
    // A tampered authenticator with a good ticket is caught too: the challenge
    // differs, so the ticket already fails; and garbage is garbage.
    let s3 = sf.rpc();
    let r = serve_with(&s3, &[0x55; 85]);
    assert!(
        r.starts_with("error p9any server start choice: p9sk1: "),
        "{r}"
    );
}

#[test]
fn truncated_and_oversized_messages() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(&a.addr, &[SERVER_KEY]);
    let (c, s) = start(&cf, &sf, "p9any");
    // The offer without its NUL, then whole.
    let offer = s.call("read", b"");
    let offer = offer.strip_prefix(b"ok ").expect("offer");
    assert_eq!(c.text("write", &offer[..offer.len() - 1]), "toosmall 4096");
    assert_eq!(c.text("write", offer), "ok");
    let choice = c.call("read", b"");
    assert_eq!(s.text("write", &choice[3..]), "ok");
    let ok = s.call("read", b"");
    assert_eq!(c.text("write", &ok[3..]), "ok");
    let chal = c.call("read", b"");
    // Too short: toosmall, and nothing is lost; too long: refused, and the
    // conversation goes on.
    assert_eq!(s.text("write", &chal[3..7]), "toosmall 8");
    assert_eq!(
        s.text("write", b"123456789"),
        "error too much data; want 8 got 9"
    );
    assert_eq!(s.text("write", &chal[3..]), "ok");
    let tr = s.call("read", b"");
    assert_eq!(c.text("write", &tr[3..100]), "toosmall 141");
    assert_eq!(c.text("write", &tr[3..]), "ok");
    let tk = c.call("read", b"");
    assert_eq!(tk.len(), 3 + 85);
    // The ticket cut short: toosmall; the client gives up, and the server's
    // conversation never succeeds.
    assert_eq!(s.text("write", &tk[3..50]), "toosmall 85");
    drop(c);
    assert_eq!(
        s.text("read", b""),
        "phase in state 'start choice' want 'write'"
    );
    assert_eq!(s.authinfo().unwrap_err(), "error conversation still active");
    assert_eq!(s.text("write", b"short"), "toosmall 85");
}

#[test]
fn server_without_key() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    // No keys at all: p9any has nothing to offer, p9sk1 asks for one.
    let empty = Factotum::start(&a.addr, &[]);
    let s = empty.rpc();
    assert_eq!(s.text("start", b"proto=p9any role=server"), "ok");
    assert_eq!(
        s.text("read", b""),
        "error p9any server nascent: no valid keys"
    );
    let s = empty.rpc();
    assert_eq!(s.text("start", b"proto=p9sk1 role=server dom=dom"), "ok");
    assert_eq!(
        s.text("write", b"12345678"),
        "needkey proto=p9sk1 role=server dom=dom user? dom? proto=p9sk1"
    );
    assert_eq!(
        s.text("write", b"12345678"),
        "error p9sk1 server nascent: no key found"
    );
    // A key for another domain only: the client has none for it and asks.
    let other = Factotum::start(
        &a.addr,
        &["proto=p9sk1 dom=other user=bootes !password='bootes pw'"],
    );
    let (c, s) = start(&cf, &other, "p9any");
    let run = shuttle(&c, &s);
    assert!(run.last.0.starts_with("needkey "), "{:?}", run.last);
    assert!(
        run.last.0.contains("proto=p9sk1 dom=other"),
        "{}",
        run.last.0
    );
    assert!(run.last.0.contains("!password?"), "{}", run.last.0);
}

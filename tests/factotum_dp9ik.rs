//! dp9ik end to end: one authsrv, two factotums (the client's and the server's, each
//! in its own $NAMESPACE), and a shuttle here that carries messages between their rpc
//! files as auth_proxy and a 9P server would; p9any choosing between dp9ik and p9sk1.

mod common;

use common::auth::*;

const CLIENT_KEY: &str = "proto=dp9ik dom=dom user=glenda !password='glenda pw'";
const SERVER_KEY: &str = "proto=dp9ik dom=dom user=bootes role=server !password='bootes pw'";
const CLIENT_SK1: &str = "proto=p9sk1 dom=dom user=glenda !password='glenda pw'";
const SERVER_SK1: &str = "proto=p9sk1 dom=dom user=bootes role=server !password='bootes pw'";

#[test]
fn p9any_dp9ik_success() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(&a.addr, &[SERVER_KEY]);
    let (c, s) = start(&cf, &sf, "p9any");
    let run = shuttle(&c, &s);
    both_done(&run);
    // The choice, then dp9ik's: CHc, the AS's value for the server, and the
    // server's form1 ticket with the client's authenticator.
    assert_eq!(run.to_server[0], b"dp9ik dom\0");
    let lens: Vec<usize> = run.to_server[1..].iter().map(Vec::len).collect();
    assert_eq!(lens, [8, 56, 124 + 68]);
    assert_eq!(&run.to_server[3][..8], b"form1 Ts");
    assert_eq!(&run.to_server[3][124..132], b"form1 Ac");
    let ca = c.authinfo().expect("client authinfo");
    let sa = s.authinfo().expect("server authinfo");
    assert_eq!((ca.cuid.as_str(), ca.suid.as_str()), ("glenda", "glenda"));
    assert_eq!((sa.cuid.as_str(), sa.suid.as_str()), ("glenda", "glenda"));
    assert_eq!(ca.secret.0.len(), 256);
    assert_eq!(ca.secret, sa.secret);
    let attr = s.text("attr", b"");
    assert!(attr.contains("proto=dp9ik dom=dom"), "{attr}");
    assert!(attr.contains("cuid=glenda suid=glenda cap=''"), "{attr}");
    assert!(!attr.contains("secret"), "{attr}");
    for f in [&cf, &sf] {
        let log = f.log();
        assert!(!log.contains("pw"), "{log}");
    }
    // Another conversation, another secret.
    let (c2, s2) = start(&cf, &sf, "p9any");
    both_done(&shuttle(&c2, &s2));
    assert_ne!(c2.authinfo().expect("authinfo").secret, ca.secret);
}

#[test]
fn dp9ik_direct_with_the_as_key_in_hex() {
    let a = AuthSrv::start();
    // authsrv adduser keeps the AES key beside the DES key; factotum takes it as
    // !hex=, as 9front's does.
    let hex = a.aes_hex("bootes");
    assert_eq!(hex.len(), 32);
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(
        &a.addr,
        &[&format!("proto=dp9ik dom=dom user=bootes !hex={hex}")],
    );
    let (c, s) = start(&cf, &sf, "dp9ik");
    // The client speaks first: the server's read is out of turn.
    assert_eq!(
        s.text("read", b""),
        "phase in state 'read challenge' want 'write'"
    );
    both_done(&shuttle(&c, &s));
    assert_eq!(c.authinfo().unwrap().secret, s.authinfo().unwrap().secret);
    // A malformed key is refused on ctl.
    assert_eq!(
        sf.ctl("key proto=dp9ik dom=dom user=x !hex=123"),
        Err("malformed !hex key data".to_string())
    );
}

#[test]
fn wrong_password_and_unknown_user() {
    let a = AuthSrv::start();
    wrong_client_keys_get_badkey("dp9ik", SERVER_KEY);
    // The server's password wrong: the client gets its ticket, the server cannot
    // open its own.
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let bad = Factotum::start(
        &a.addr,
        &["proto=dp9ik dom=dom user=bootes !password=wrong"],
    );
    let (c, s) = start(&cf, &bad, "p9any");
    let run = shuttle(&c, &s);
    assert_eq!(
        run.last.1,
        "error p9any server read ticket: dp9ik: key mismatch with auth server"
    );
    s.assert_failed();
    assert_eq!(c.authinfo().unwrap_err(), "error conversation still active");
}

#[test]
fn replayed_ticket_is_refused() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(&a.addr, &[SERVER_KEY]);
    let (c, s) = start(&cf, &sf, "p9any");
    let first = shuttle(&c, &s);
    both_done(&first);
    // A later conversation gets the old ticket message, then the old PAK value
    // and ticket message: neither opens with the new PAK key.
    for from in [3, 2] {
        let (c, s) = start(&cf, &sf, "p9any");
        let run = shuttle_with(&c, &s, |n, m| {
            if n >= from {
                *m = first.to_server[n].clone();
            }
        });
        assert_eq!(
            run.last.1,
            "error p9any server read ticket: dp9ik: key mismatch with auth server"
        );
        s.assert_failed();
    }
}

#[test]
fn tampered_messages() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(&a.addr, &[SERVER_KEY]);
    for (at, byte, want) in [
        // The ticket: its signature, counter, names, tag.
        (3, 0, "key mismatch with auth server"),
        (3, 9, "key mismatch with auth server"),
        (3, 50, "key mismatch with auth server"),
        (3, 123, "key mismatch with auth server"),
        // The client's authenticator.
        (3, 124, "client lies through his teeth"),
        (3, 124 + 30, "client lies through his teeth"),
        (3, 191, "client lies through his teeth"),
        // The relayed PAK value: another point or none.
        (2, 55, "key mismatch with auth server"),
    ] {
        let (c, s) = start(&cf, &sf, "p9any");
        let run = shuttle_with(&c, &s, |n, m| {
            if n == at {
                m[byte] ^= 0x01;
            }
        });
        let state = if run.last.1.contains("read paky") {
            "read paky"
        } else {
            "read ticket"
        };
        let msg = if state == "read paky" {
            "auth server protocol botch"
        } else {
            want
        };
        assert_eq!(
            run.last.1,
            format!("error p9any server {state}: dp9ik: {msg}"),
            "message {at} byte {byte}"
        );
    }
    let (c, s) = start(&cf, &sf, "p9any");
    let run = shuttle_with(&c, &s, |n, m| {
        if n == 2 {
            m.fill(0xff);
        }
    });
    assert_eq!(
        run.last.1,
        "error p9any server read paky: dp9ik: auth server protocol botch"
    );
    // The server's authenticator, changed on its way to the client.
    let (c, s) = start(&cf, &sf, "dp9ik");
    assert_eq!(s.text("write", &c.msg()), "ok");
    assert_eq!(c.text("write", &s.msg()), "ok");
    assert_eq!(s.text("write", &c.msg()), "ok");
    assert_eq!(s.text("write", &c.msg()), "ok");
    let mut auth = s.msg();
    assert_eq!(auth.len(), 68);
    assert_eq!(s.text("read", b""), "done haveai");
    auth[40] ^= 0x10;
    assert_eq!(
        c.text("write", &auth),
        "error dp9ik client read auth: server lies through his teeth"
    );
    c.assert_failed();
}

#[test]
fn truncated_exchange() {
    let a = AuthSrv::start();
    let cf = Factotum::start(&a.addr, &[CLIENT_KEY]);
    let sf = Factotum::start(&a.addr, &[SERVER_KEY]);
    let (c, s) = start(&cf, &sf, "dp9ik");
    let chal = c.msg();
    assert_eq!(s.text("write", &chal[..5]), "toosmall 8");
    assert_eq!(s.text("write", &chal), "ok");
    let req = s.msg();
    assert_eq!(req.len(), 141 + 56);
    assert_eq!(req[0], 19, "AuthPAK");
    assert_eq!(c.text("write", &req[..141]), "toosmall 197");
    assert_eq!(c.text("write", &req), "ok");
    let y = c.msg();
    assert_eq!(s.text("write", &y[..55]), "toosmall 56");
    let mut long = y.clone();
    long.push(0);
    assert_eq!(
        s.text("write", &long),
        "error too much data; want 56 got 57"
    );
    assert_eq!(s.text("write", &y), "ok");
    let t = c.msg();
    assert_eq!(s.text("write", &t[..124]), "toosmall 192");
    // The client goes away: the server's conversation never succeeds.
    drop(c);
    assert_eq!(
        s.text("read", b""),
        "phase in state 'read ticket' want 'write'"
    );
    assert_eq!(s.authinfo().unwrap_err(), "error conversation still active");
    assert_eq!(s.text("write", b"short"), "toosmall 192");
}

#[test]
fn p9any_falls_back_to_p9sk1() {
    let a = AuthSrv::start();
    let both_c = Factotum::start(&a.addr, &[CLIENT_SK1, CLIENT_KEY]);
    let both_s = Factotum::start(&a.addr, &[SERVER_KEY, SERVER_SK1]);
    let only_c = Factotum::start(&a.addr, &[CLIENT_SK1]);
    let only_s = Factotum::start(&a.addr, &[SERVER_SK1]);
    // Both protocols on both sides: offered p9sk1 first, as 9front's, chosen dp9ik.
    let (c, s) = start(&both_c, &both_s, "p9any");
    let offer = s.msg();
    assert_eq!(offer, b"v.2 p9sk1@dom dp9ik@dom\0");
    assert_eq!(c.text("write", &offer), "ok");
    assert_eq!(c.msg(), b"dp9ik dom\0");
    for (cf, sf, want, secret) in [
        (&both_c, &both_s, "dp9ik", 256),
        (&only_c, &both_s, "p9sk1", 8),
        (&both_c, &only_s, "p9sk1", 8),
    ] {
        let (c, s) = start(cf, sf, "p9any");
        let run = shuttle(&c, &s);
        both_done(&run);
        assert_eq!(run.to_server[0], format!("{want} dom\0").as_bytes());
        let (ca, sa) = (c.authinfo().unwrap(), s.authinfo().unwrap());
        assert_eq!(ca.secret.0.len(), secret);
        assert_eq!(ca.secret, sa.secret);
        assert_eq!(sa.cuid, "glenda");
    }
}

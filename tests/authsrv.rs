//! bin/authsrv end to end: users added through the command, tickets over TCP,
//! a whole p9sk1 exchange with them.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use factotum::authsrv::get_tickets;
use factotum::ticket::DesKey;
use factotum::ticket::p9sk1::{self, P9sk1Error};

const BIN: &str = env!("CARGO_BIN_EXE_authsrv");

fn adduser(dir: &std::path::Path, name: &str, pw: &str) {
    let mut c = Command::new(BIN)
        .arg("-d")
        .arg(dir)
        .args(["adduser", name])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{pw}").unwrap();
    assert!(c.wait().unwrap().success());
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tickets_over_tcp() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    adduser(&keys, "glenda", "glenda pw");
    adduser(&keys, "bootes", "bootes pw");
    let out = Command::new(BIN)
        .arg("-d")
        .arg(&keys)
        .arg("users")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bootes\nglenda\n");
    let del = Command::new(BIN)
        .arg("-d")
        .arg(&keys)
        .args(["deluser", "nobody"])
        .output()
        .unwrap();
    assert!(!del.status.success());

    let mut child = Kill(
        Command::new(BIN)
            .arg("-d")
            .arg(&keys)
            .args(["-a", "tcp!127.0.0.1!0", "--authdom", "dom"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();

    let run = |pw: &str| -> Result<String, P9sk1Error> {
        let kc = DesKey::from_password(pw.as_bytes());
        let ks = DesKey::from_password(b"bootes pw");
        let cchal = p9sk1::challenge().unwrap();
        let str_ = p9sk1::server_ticketreq("bootes", "dom").unwrap();
        let ctr = p9sk1::client_ticketreq(&str_.to_bytes().unwrap(), "glenda", "glenda").unwrap();
        let mut conn = TcpStream::connect(&addr).unwrap();
        let tickets = get_tickets(&mut conn, &ctr).unwrap();
        let (ct, msg) = p9sk1::client_tickets(&ctr, &tickets, &kc)?;
        let (st, sauth) = p9sk1::server_check(&str_, &msg, &ks, &cchal)?;
        p9sk1::client_check(&ct, &sauth, &cchal)?;
        Ok(st.suid.clone())
    };
    assert_eq!(run("glenda pw").unwrap(), "glenda");
    assert_eq!(run("wrong").unwrap_err(), P9sk1Error::KeyMismatch);
}

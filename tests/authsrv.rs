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

/// On a terminal, `adduser` prompts on standard error and does not echo the
/// password; the key it stores is the password's.
#[test]
fn adduser_on_a_terminal_does_not_echo() {
    use nix::fcntl::OFlag;
    use std::io::Read;
    use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    let m = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC).unwrap();
    nix::pty::grantpt(&m).unwrap();
    nix::pty::unlockpt(&m).unwrap();
    let name = nix::pty::ptsname_r(&m).unwrap();
    // SAFETY: the descriptor was just taken out of the PtyMaster, which owned it.
    let mut master = unsafe { std::fs::File::from_raw_fd(m.into_raw_fd()) };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&name)
        .unwrap();
    let stdio = |f: &std::fs::File| Stdio::from(OwnedFd::from(f.try_clone().unwrap()));
    let child = Command::new(BIN)
        .arg("-d")
        .arg(&keys)
        .args(["adduser", "glenda"])
        .stdin(stdio(&slave))
        .stdout(stdio(&slave))
        .stderr(stdio(&slave))
        .spawn()
        .unwrap();
    let mut child = Kill(child);
    drop(slave);
    // Wait for the prompt, then type.
    let mut shown = Vec::new();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 256];
    while !String::from_utf8_lossy(&shown).contains("password for glenda: ") {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "no prompt"
        );
        let n = master.read(&mut buf).unwrap();
        shown.extend_from_slice(&buf[..n]);
    }
    master.write_all(b"secret words\n").unwrap();
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(20),
            "adduser hung"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());
    // What the terminal showed after the prompt: not the password. (The pty may
    // report EIO once the child has gone: that ends the reading.)
    // SAFETY: setting O_NONBLOCK on our own descriptor.
    unsafe {
        let fl = libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&master), libc::F_GETFL);
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&master),
            libc::F_SETFL,
            fl | libc::O_NONBLOCK,
        );
    }
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        shown.extend_from_slice(&buf[..n]);
    }
    let shown = String::from_utf8_lossy(&shown);
    assert!(!shown.contains("secret"), "echoed: {shown:?}");
    let want = DesKey::from_password(b"secret words");
    let aes = factotum::pak::passtoaeskey(b"secret words");
    let stored = std::fs::read_to_string(keys.join("users").join("glenda")).unwrap();
    assert_eq!(
        stored,
        format!("{}\n{}\n", want.to_hex().as_str(), aes.to_hex().as_str()),
        "the stored keys are the password's"
    );
}

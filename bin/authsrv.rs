//! authsrv: the ticket service of authsrv(6) for p9sk1 and dp9ik, with its user
//! database.
//! See docs/authsrv.md.

use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use factotum::authsrv::{AuthServer, KeyDir, TICKET_PORT};
use zeroize::Zeroizing;

/// Issue p9sk1 and dp9ik tickets from a directory of users' keys (docs/authsrv.md).
///
/// With no subcommand, serves the ticket service on -a (default tcp!*!567, the
/// "ticket" port). Keys live in -d (default $HOME/lib/authsrv), mode 0700.
#[derive(Parser)]
#[command(name = "authsrv", version)]
struct Args {
    /// Address to serve on: tcp!host!port, host:port, or a port
    #[arg(short = 'a', value_name = "addr", default_value = "tcp!*!567")]
    addr: String,
    /// Directory of users and keys
    #[arg(short = 'd', value_name = "dir")]
    dir: Option<PathBuf>,
    /// Refuse requests for any other authentication domain
    #[arg(long = "authdom", value_name = "dom")]
    authdom: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Add a user, or change a user's keys (DES for p9sk1, AES for dp9ik); the
    /// password is the first line of standard input
    Adduser { name: String },
    /// Remove a user
    Deluser { name: String },
    /// List the users
    Users,
}

fn fatal(msg: impl std::fmt::Display) -> ! {
    eprintln!("authsrv: {msg}");
    std::process::exit(1);
}

fn default_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join("lib/authsrv"),
        None => fatal("no $HOME: give -d dir"),
    }
}

/// tcp!host!port (`*` for any host, `ticket` for 567), host:port, or a port.
fn parse_addr(s: &str) -> Result<Vec<SocketAddr>, String> {
    let (host, port) = if s.contains('!') {
        let f: Vec<&str> = s.split('!').collect();
        match f.as_slice() {
            ["tcp", h, p] | ["net", h, p] => (h.to_string(), p.to_string()),
            [h, p] => (h.to_string(), p.to_string()),
            _ => return Err(format!("bad address {s}")),
        }
    } else if let Some((h, p)) = s.rsplit_once(':') {
        (h.to_string(), p.to_string())
    } else {
        ("*".to_string(), s.to_string())
    };
    let host = if host == "*" {
        "0.0.0.0".to_string()
    } else {
        host
    };
    let port: u16 = match port.as_str() {
        "ticket" => TICKET_PORT,
        p => p.parse().map_err(|_| format!("bad port {p}"))?,
    };
    (host.as_str(), port)
        .to_socket_addrs()
        .map(|a| a.collect())
        .map_err(|e| format!("{s}: {e}"))
}

/// Echo turned off on the terminal that is standard input, until dropped.
struct NoEcho(nix::sys::termios::Termios);

impl NoEcho {
    fn new() -> Option<NoEcho> {
        use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
        let stdin = std::io::stdin();
        let old = tcgetattr(&stdin).ok()?;
        let mut quiet = old.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet).ok()?;
        Some(NoEcho(old))
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        use nix::sys::termios::{SetArg, tcsetattr};
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.0);
    }
}

fn main() {
    let args = Args::parse();
    let dir = args.dir.clone().unwrap_or_else(default_dir);
    let kd = KeyDir::open(&dir).unwrap_or_else(|e| fatal(e));
    match args.cmd {
        Some(Cmd::Adduser { name }) => {
            let mut line = Zeroizing::new(String::new());
            // On a terminal: a prompt, and the password not echoed.
            let quiet = NoEcho::new();
            if quiet.is_some() {
                eprint!("password for {name}: ");
            }
            let r = std::io::stdin().lock().read_line(&mut line);
            if quiet.is_some() {
                eprintln!();
            }
            drop(quiet);
            if let Err(e) = r {
                fatal(format!("reading password: {e}"));
            }
            let pw = line.trim_end_matches(['\n', '\r']);
            if pw.is_empty() {
                fatal("empty password");
            }
            kd.add_user(&name, pw.as_bytes())
                .unwrap_or_else(|e| fatal(e));
        }
        Some(Cmd::Deluser { name }) => kd.delete_user(&name).unwrap_or_else(|e| fatal(e)),
        Some(Cmd::Users) => {
            let mut out = std::io::stdout().lock();
            for u in kd.users().unwrap_or_else(|e| fatal(e)) {
                let _ = writeln!(out, "{u}");
            }
        }
        None => serve(kd, &args.addr, args.authdom),
    }
}

fn serve(kd: KeyDir, addr: &str, authdom: Option<String>) {
    let addrs = parse_addr(addr).unwrap_or_else(|e| fatal(e));
    let l = TcpListener::bind(&addrs[..]).unwrap_or_else(|e| fatal(format!("{addr}: {e}")));
    if let Ok(a) = l.local_addr() {
        eprintln!("authsrv: serving tickets on {a}");
    }
    let srv = Arc::new(AuthServer::new(kd, authdom).unwrap_or_else(|e| fatal(e)));
    // The table of multiples of the curve's base point, before the first AuthPAK.
    std::thread::spawn(factotum::pak::warm_up);
    for c in l.incoming() {
        let c = match c {
            Ok(c) => c,
            Err(e) => {
                eprintln!("authsrv: accept: {e}");
                continue;
            }
        };
        let srv = srv.clone();
        std::thread::spawn(move || {
            let peer = c
                .peer_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "unknown".into());
            // As authsrv's alarm: no connection lives past 10 minutes idle.
            let _ = c.set_read_timeout(Some(Duration::from_secs(600)));
            // AuthPAK answers in pieces (AuthOK, then each PAK value as it is made):
            // each goes out at once, not after the previous one's ACK.
            let _ = c.set_nodelay(true);
            if let Err(e) = srv.serve(c) {
                eprintln!("authsrv: {peer}: {e}");
            }
        });
    }
}

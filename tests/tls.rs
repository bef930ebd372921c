//! 9P over TLS end to end: ramfs announced on `tls!127.0.0.1!port` (an ephemeral
//! port), the `9p` command dialing it with the fingerprint pinned, a wrong or missing
//! pin refused, trust on first use, client certificates required by the server, and
//! files of several MiB both ways. (The record layer itself is tested in lib9's tls.)
//! Each process gets its own $HOME, so each has its own `$HOME/lib/tls`.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `prog -f -a tls!127.0.0.1!port args...` (an ephemeral port) with `home` as its
/// $HOME, once it accepts connections.
fn serve_tls(ns: &Ns, home: &Path, prog: &str, args: &[&std::ffi::OsStr]) -> Proc {
    let port = free_port();
    let addr = format!("tls!127.0.0.1!{port}");
    let mut c = ns.cmd(prog);
    c.env("HOME", home).args(["-f", "-a", &addr]).args(args);
    let (f, s) = stderr_file();
    c.stdin(Stdio::null()).stderr(s);
    let mut child = c.spawn().expect("spawn server");
    wait_tcp(port, &mut child);
    Proc {
        child,
        addr,
        stderr: Some(f),
    }
}

/// A new directory holding one file, `name` with `data`, and `exportfs -R` of it on
/// TLS (bind them in this order, so the server stops before the directory goes).
fn export_tls(ns: &Ns, home: &Path, name: &str, data: &[u8]) -> (tempfile::TempDir, Proc) {
    let tree = tempfile::tempdir().expect("tree");
    std::fs::write(tree.path().join(name), data).expect("write");
    let args = ["-R".as_ref(), tree.path().as_os_str()];
    let ex = serve_tls(ns, home, EXPORTFS, &args);
    (tree, ex)
}

/// A ramfs on TLS with `home` as its $HOME, and the fingerprint it printed.
fn start_tls(ns: &Ns, home: &Path, extra: &[&str]) -> (Proc, String) {
    let extra: Vec<&std::ffi::OsStr> = extra.iter().map(std::ffi::OsStr::new).collect();
    let p = serve_tls(ns, home, RAMFS, &extra);
    let addr = p.addr.clone();
    // The fingerprint is printed once the address is bound: wait for it.
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let text = p.stderr_text();
        if let Some(fp) = text
            .lines()
            .find_map(|l| l.split("certificate sha256 fingerprint ").nth(1))
        {
            assert!(
                text.contains(&format!("ramfs: {addr}: certificate")),
                "{text}"
            );
            let fp = fp.trim().to_string();
            assert_eq!(fp.len(), 64, "{text}");
            return (p, fp);
        }
        assert!(Instant::now() < deadline, "no fingerprint printed: {text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn home() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("home.tls.")
        .tempdir()
        .expect("tempdir")
}

/// Run `9p` as a user whose $HOME is `home`.
fn ninep(ns: &Ns, home: &Path, args: &[&str], input: Option<&[u8]>) -> Output {
    let mut c = ns.cmd(NINEP);
    c.env("HOME", home).args(args);
    run_with_input(&mut c, input)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o777
}

#[test]
fn read_and_write_with_the_right_fingerprint() {
    let ns = Ns::new();
    let (sh, ch) = (home(), home());
    let (srv, fp) = start_tls(&ns, sh.path(), &[]);
    // The generated identity: directory 0700, key 0600.
    let dir = sh.path().join("lib/tls");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("key.pem")), 0o600);
    let addr = format!("{}!fp={fp}", srv.addr);
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let o = ninep(&ns, ch.path(), &["-a", &addr, "create", "f"], None);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let o = ninep(&ns, ch.path(), &["-a", &addr, "write", "f"], Some(&data));
    assert!(o.status.success(), "write: {}", stderr(&o));
    let o = ninep(&ns, ch.path(), &["-a", &addr, "read", "f"], None);
    assert!(o.status.success(), "read: {}", stderr(&o));
    assert!(o.stdout == data, "read back {} bytes", o.stdout.len());

    // Pinned in $HOME/lib/tls/known instead, as host!port.
    let cdir = ch.path().join("lib/tls");
    std::fs::create_dir_all(&cdir).expect("mkdir");
    std::fs::set_permissions(&cdir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(
        cdir.join("known"),
        format!("# pins\n{} {fp}\n", &srv.addr["tls!".len()..]),
    )
    .expect("known");
    let o = ninep(&ns, ch.path(), &["-a", &srv.addr, "read", "f"], None);
    assert!(o.status.success(), "read via known: {}", stderr(&o));
    assert!(o.stdout == data);

    // A restarted server keeps its identity, so its fingerprint.
    drop(srv);
    let (_srv2, fp2) = start_tls(&ns, sh.path(), &[]);
    assert_eq!(fp, fp2);
}

#[test]
fn wrong_fingerprint_is_refused() {
    let ns = Ns::new();
    let (sh, ch) = (home(), home());
    let (srv, fp) = start_tls(&ns, sh.path(), &[]);
    let wrong = if fp.starts_with('0') {
        "1".repeat(64)
    } else {
        "0".repeat(64)
    };
    let addr = format!("{}!fp={wrong}", srv.addr);
    let o = ninep(&ns, ch.path(), &["-a", &addr, "ls", "/"], None);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(&format!(
            "{}: server certificate fingerprint mismatch",
            srv.addr
        )),
        "{e}"
    );
    // The same through $HOME/lib/tls/known.
    let cdir = ch.path().join("lib/tls");
    std::fs::create_dir_all(&cdir).expect("mkdir");
    std::fs::set_permissions(&cdir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    std::fs::write(cdir.join("known"), format!("127.0.0.1 {wrong}\n")).expect("known");
    let o = ninep(&ns, ch.path(), &["-a", &srv.addr, "ls", "/"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("fingerprint mismatch"),
        "{}",
        stderr(&o)
    );
    // tofu does not override a known fingerprint.
    let o = ninep(
        &ns,
        ch.path(),
        &["-a", &format!("{}!tofu", srv.addr), "ls", "/"],
        None,
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("fingerprint mismatch"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn unknown_server_is_refused_with_how_to_pin_it() {
    let ns = Ns::new();
    let (sh, ch) = (home(), home());
    let (srv, fp) = start_tls(&ns, sh.path(), &[]);
    let o = ninep(&ns, ch.path(), &["-a", &srv.addr, "ls", "/"], None);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(e.contains("server certificate not known"), "{e}");
    assert!(e.contains(&format!("{}!fp={fp}", srv.addr)), "{e}");
    assert!(e.contains("$HOME/lib/tls/known"), "{e}");

    // Trust on first use, when asked: remembered in known, 0600.
    let o = ninep(
        &ns,
        ch.path(),
        &["-a", &format!("{}!tofu", srv.addr), "ls", "/"],
        None,
    );
    assert!(o.status.success(), "tofu: {}", stderr(&o));
    let known = ch.path().join("lib/tls/known");
    assert_eq!(mode(&known), 0o600);
    let k = std::fs::read_to_string(&known).expect("known");
    assert!(k.contains(&fp), "{k}");
    let o = ninep(&ns, ch.path(), &["-a", &srv.addr, "ls", "/"], None);
    assert!(o.status.success(), "after tofu: {}", stderr(&o));
}

#[test]
fn client_certificate_required() {
    let ns = Ns::new();
    let (sh, good, none, other) = (home(), home(), home(), home());
    // Each client's identity, made by `9p tlsid`.
    let id = |h: &Path| {
        let o = ninep(&ns, h, &["tlsid"], None);
        assert!(o.status.success(), "tlsid: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let gfp = id(good.path());
    assert_eq!(gfp.len(), 64);
    assert_eq!(id(good.path()), gfp, "tlsid is stable");
    assert_eq!(mode(&good.path().join("lib/tls/key.pem")), 0o600);
    id(other.path());
    let list = sh.path().join("clients");
    std::fs::write(&list, format!("{gfp} alice's laptop\n")).expect("clients");
    let (srv, fp) = start_tls(
        &ns,
        sh.path(),
        &["--clients", list.to_str().expect("utf-8")],
    );
    let addr = format!("{}!fp={fp}", srv.addr);

    let o = ninep(&ns, good.path(), &["-a", &addr, "ls", "/"], None);
    assert!(o.status.success(), "listed client: {}", stderr(&o));
    let o = ninep(&ns, none.path(), &["-a", &addr, "ls", "/"], None);
    assert!(!o.status.success(), "no certificate was let in");
    assert!(
        stderr(&o).contains("the server requires a client certificate"),
        "{}",
        stderr(&o)
    );
    let o = ninep(&ns, other.path(), &["-a", &addr, "ls", "/"], None);
    assert!(!o.status.success(), "an unlisted certificate was let in");
    assert!(
        stderr(&o).contains("the server refused our client certificate"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn loose_key_file_is_refused() {
    let ns = Ns::new();
    let sh = home();
    let o = ninep(&ns, sh.path(), &["tlsid"], None);
    assert!(o.status.success(), "tlsid: {}", stderr(&o));
    let dir = sh.path().join("lib/tls");
    std::fs::set_permissions(dir.join("key.pem"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let port = free_port();
    let out = run_with_input(
        Command::new(RAMFS)
            .env("NAMESPACE", ns.path())
            .env("HOME", sh.path())
            .args(["-f", "-a", &format!("tls!127.0.0.1!{port}")]),
        None,
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("key.pem: mode 0644"), "{e}");
    // Given explicitly, too.
    let out = run_with_input(
        Command::new(RAMFS)
            .env("NAMESPACE", ns.path())
            .env("HOME", sh.path())
            .args(["-f", "-a", &format!("tls!127.0.0.1!{port}")])
            .arg("--cert")
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem")),
        None,
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("mode 0644"), "{}", stderr(&out));
}

#[test]
fn srv_and_exportfs_over_tls() {
    let ns = Ns::new();
    let (sh, ch) = (home(), home());
    let (_tree, ex) = export_tls(&ns, sh.path(), "hello", b"hello over tls\n");
    let addr = ex.addr.clone();
    // The fingerprint the server printed, found by `9p tlsid` as the same user.
    let o = ninep(&ns, sh.path(), &["tlsid"], None);
    let fp = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(fp.len(), 64, "{}", stderr(&o));

    // srv dials it and posts it; local clients go through srv.
    let mut c = ns.cmd(SRV);
    c.env("HOME", ch.path())
        .arg("-f")
        .arg(format!("{addr}!fp={fp}"))
        .arg("tlsremote");
    let _srv = spawn_server(c, ns.svc("tlsremote"));
    let o = ns.ninep(&["read", "tlsremote/hello"], None);
    assert!(o.status.success(), "read through srv: {}", stderr(&o));
    assert_eq!(o.stdout, b"hello over tls\n");

    // Without a pin srv refuses at once, before going into the background.
    let mut c = ns.cmd(SRV);
    c.env("HOME", ch.path()).arg(&addr).arg("nopin");
    let o = run_with_input(&mut c, None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("server certificate not known"),
        "{}",
        stderr(&o)
    );
}

/// Files of several MiB both ways: each 9P message many TLS records, from ramfs's
/// memory and from exportfs's mapped files.
#[test]
fn large_files_both_ways() {
    let ns = Ns::new();
    let (sh, ch) = (home(), home());
    let (srv, fp) = start_tls(&ns, sh.path(), &[]);
    let addr = format!("{}!fp={fp}", srv.addr);
    let data: Vec<u8> = (0..5_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let o = ninep(&ns, ch.path(), &["-a", &addr, "create", "big"], None);
    assert!(o.status.success(), "create: {}", stderr(&o));
    let o = ninep(&ns, ch.path(), &["-a", &addr, "write", "big"], Some(&data));
    assert!(o.status.success(), "write: {}", stderr(&o));
    let o = ninep(&ns, ch.path(), &["-a", &addr, "read", "big"], None);
    assert!(o.status.success(), "read: {}", stderr(&o));
    assert!(o.stdout == data, "read back {} bytes", o.stdout.len());

    let (_tree, ex) = export_tls(&ns, sh.path(), "big", &data);
    let eaddr = ex.addr.clone();
    let o = ninep(
        &ns,
        ch.path(),
        &["-a", &format!("{eaddr}!fp={fp}"), "read", "big"],
        None,
    );
    assert!(o.status.success(), "read from exportfs: {}", stderr(&o));
    assert!(o.stdout == data, "read back {} bytes", o.stdout.len());
}

/// rc's `mount` of a `tls!` address: pinned in the dial string, a wrong pin refused
/// with the mismatch told, and trust on first use remembered in `$HOME/lib/tls/known`
/// (written by the mount's server after it has left the name space).
#[test]
fn rc_mounts_tls_addresses() {
    if !fuse_or_skip() {
        return;
    }
    let ns = Ns::new();
    let (sh, ch) = (home(), home());
    let (srv, fp) = start_tls(&ns, sh.path(), &[]);
    let o = ninep(
        &ns,
        ch.path(),
        &["-a", &format!("{}!fp={fp}", srv.addr), "create", "m"],
        None,
    );
    assert!(o.status.success(), "create: {}", stderr(&o));
    let o = ninep(
        &ns,
        ch.path(),
        &["-a", &format!("{}!fp={fp}", srv.addr), "write", "m"],
        Some(b"mounted over tls\n"),
    );
    assert!(o.status.success(), "write: {}", stderr(&o));
    let wrong: String = fp.chars().rev().collect();
    let script = format!(
        "rfork n
mount '{a}!fp={fp}' /n || exit mount
cat /n/m
mount '{a}!fp={wrong}' /mnt >[2=1]
echo status $status
mount '{a}!tofu' /mnt || exit tofu
cat /mnt/m",
        a = srv.addr
    );
    let mut c = ns.cmd(env!("CARGO_BIN_EXE_rc"));
    c.env("HOME", ch.path()).args(["-c", &script]);
    let o = run_with_input(&mut c, None);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", stderr(&o));
    assert!(out.starts_with("mounted over tls\n"), "{out}{}", stderr(&o));
    assert!(
        out.contains("server certificate fingerprint mismatch"),
        "{out}"
    );
    assert!(out.contains("status "), "{out}");
    assert!(out.ends_with("mounted over tls\n"), "{out}");
    let known = std::fs::read_to_string(ch.path().join("lib/tls/known")).expect("known");
    assert!(known.contains(&fp), "{known}");
    assert_eq!(mode(&ch.path().join("lib/tls/known")), 0o600);
}

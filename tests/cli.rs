//! The binaries as a person uses them from the shell: 9p's commands and their output,
//! errors and exit statuses; the servers' flags, posting, backgrounding and clean exit.

mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn ninep_commands_against_ramfs() {
    let ns = Ns::new();
    let _s = start_posted(&ns, RAMFS, "ram", &[]);
    // create, write, read.
    let o = ns.ninep(&["create", "ram/a", "ram/b"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = ns.ninep(&["write", "ram/a"], Some(b"first line\nsecond line\n"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = ns.ninep(&["read", "ram/a"], None);
    assert_eq!(text(&o.stdout), "first line\nsecond line\n");
    // write truncates.
    let o = ns.ninep(&["write", "ram/a"], Some(b"short\n"));
    assert!(o.status.success());
    assert_eq!(text(&ns.ninep(&["read", "ram/a"], None).stdout), "short\n");
    // write -l writes a line at a time (same result for a plain file).
    let o = ns.ninep(&["write", "-l", "ram/b"], Some(b"x\ny\n"));
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&ns.ninep(&["read", "ram/b"], None).stdout), "x\ny\n");
    // A big file goes through the pipelined path intact.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    assert!(ns.ninep(&["create", "ram/big"], None).status.success());
    let o = ns.ninep(&["write", "ram/big"], Some(&big));
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = ns.ninep(&["read", "ram/big"], None);
    assert_eq!(o.stdout.len(), big.len());
    assert!(o.stdout == big, "big file corrupted");
    // Small msize: many messages, same bytes.
    let o = ns.ninep(&["-m", "300", "read", "ram/big"], None);
    assert!(o.stdout == big, "big file corrupted at a small msize");
    // stat prints plan9port's Dir format.
    let o = ns.ninep(&["stat", "ram/a"], None);
    let st = text(&o.stdout);
    let user = lib9::ns::user();
    assert!(
        st.starts_with(&format!("'a' '{user}' '{user}' '{user}' q (")),
        "{st}"
    );
    assert!(
        st.contains(" m 0666 ") && st.contains(" l 6 t 0 d 0"),
        "{st}"
    );
    // ls, ls -l, ls -d.
    assert!(
        ns.ninep(&["create", "-d", "ram/dir"], None)
            .status
            .success()
    );
    assert!(
        ns.ninep(&["create", "-p", "600", "ram/dir/odd name"], None)
            .status
            .success()
    );
    let o = ns.ninep(&["ls", "ram/"], None);
    assert_eq!(text(&o.stdout), "a\nb\nbig\ndir\n");
    let o = ns.ninep(&["ls", "ram/dir"], None);
    assert_eq!(text(&o.stdout), "'odd name'\n");
    let o = ns.ninep(&["ls", "-l", "ram/dir"], None);
    let l = text(&o.stdout);
    assert!(l.starts_with("--rw------- M 0 "), "{l}");
    assert!(l.trim_end().ends_with("'odd name'"), "{l}");
    let o = ns.ninep(&["ls", "-ld", "ram/dir"], None);
    assert!(
        text(&o.stdout).starts_with("d-rwxrwxrwx M 0 "),
        "{}",
        text(&o.stdout)
    );
    let o = ns.ninep(&["ls", "-l", "ram/"], None);
    // Lengths are right-aligned in a column as wide as the widest.
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    let big_line = lines
        .iter()
        .find(|l| l.ends_with(" big"))
        .expect("big listed");
    assert!(big_line.contains(" 3000000 "), "{big_line}");
    let a_line = lines.iter().find(|l| l.ends_with(" a")).expect("a listed");
    assert!(a_line.contains("       6 "), "{a_line}");
    // rm.
    let o = ns.ninep(&["rm", "ram/dir"], None);
    assert!(!o.status.success(), "removed a full directory");
    assert!(
        text(&o.stderr).contains("directory not empty"),
        "{}",
        text(&o.stderr)
    );
    let o = ns.ninep(&["rm", "ram/dir/odd name", "ram/dir"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = ns.ninep(&["ls", "ram/"], None);
    assert_eq!(text(&o.stdout), "a\nb\nbig\n");
}

#[test]
fn ninep_errors_and_statuses() {
    let ns = Ns::new();
    let _s = start_posted(&ns, RAMFS, "ram", &[]);
    let o = ns.ninep(&["read", "ram/nope"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "9p: ram/nope: file does not exist\n");
    let o = ns.ninep(&["write", "ram/nope"], Some(b"x"));
    assert_eq!(o.status.code(), Some(1));
    let o = ns.ninep(&["read", "nosuchservice/x"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("9p: mount: "),
        "{}",
        text(&o.stderr)
    );
    // ls goes on after a bad path, and fails at the end.
    assert!(ns.ninep(&["create", "ram/here"], None).status.success());
    let o = ns.ninep(&["ls", "ram/missing", "ram/here"], None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stdout), "here\n");
    // Usage errors are Plan 9's: a message, a usage line, status 1.
    let o = ns.ninep(&["frobnicate"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("usage: 9p"), "{}", text(&o.stderr));
    let o = ns.ninep(&["read"], None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("usage: 9p read"),
        "{}",
        text(&o.stderr)
    );
    // --help is help, on standard output, status 0.
    let o = ns.ninep(&["--help"], None);
    assert!(o.status.success());
    assert!(text(&o.stdout).contains("Read and write files on a 9P server"));
    // -a dials an address.
    let addr = format!("unix!{}", ns.svc("ram").display());
    let o = ns.ninep(&["-a", &addr, "ls", "/"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout), "here\n");
}

#[test]
fn servers_post_go_background_and_unpost() {
    let ns = Ns::new();
    // Without -f the server returns once the service accepts connections.
    let t = Instant::now();
    let o = run_with_input(ns.cmd(RAMFS).args(["-s", "bg"]), None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(t.elapsed() < Duration::from_secs(20));
    assert!(std::os::unix::net::UnixStream::connect(ns.svc("bg")).is_ok());
    let o = ns.ninep(&["ls", "bg/"], None);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // A second server cannot take a live name.
    let o = run_with_input(ns.cmd(RAMFS).args(["-f", "-s", "bg"]), None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "ramfs: service 'bg' already posted\n");
    // Stop the background server by its pid (found through /proc) with SIGTERM: it
    // removes its socket.
    let pid = find_pid(&ns, "bg").expect("background ramfs pid");
    // SAFETY: signalling the server this test started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ns.svc("bg").exists() {
        assert!(Instant::now() < deadline, "socket not removed on SIGTERM");
        std::thread::sleep(Duration::from_millis(10));
    }
    // A stale socket (its server killed outright) is replaced.
    let mut p = start_posted(&ns, RAMFS, "stale", &[]);
    let _ = p.child.kill();
    let _ = p.child.wait();
    assert!(ns.svc("stale").exists());
    let _q = start_posted(&ns, RAMFS, "stale", &[]);
    assert!(ns.ninep(&["ls", "stale/"], None).status.success());
    // Bad flags.
    let o = run_with_input(ns.cmd(RAMFS).arg("-x"), None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("usage: ramfs"),
        "{}",
        text(&o.stderr)
    );
    let o = run_with_input(ns.cmd(RAMFS).args(["-f", "-m", "lots"]), None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(text(&o.stderr), "ramfs: bad size 'lots'\n");
    let o = run_with_input(ns.cmd(EXPORTFS).args(["-f", "/no/such/dir"]), None);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        text(&o.stderr),
        "exportfs: /no/such/dir: file does not exist\n"
    );
    let o = run_with_input(ns.cmd(SRV).args(["-f", "unix!/no/such/sock", "x"]), None);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).starts_with("srv: dial unix!/no/such/sock"),
        "{}",
        text(&o.stderr)
    );
    assert!(!ns.svc("x").exists());
    // Every binary has --help.
    for b in [RAMFS, EXPORTFS, SRV, NINEP, env!("CARGO_BIN_EXE_9pfuse")] {
        let o = run_with_input(Command::new(b).arg("--help").stdin(Stdio::null()), None);
        assert!(o.status.success(), "{b} --help");
        assert!(!o.stdout.is_empty());
    }
}

#[test]
fn ramfs_on_stdin_and_stdout() {
    // -i: one client on standard input and output; here a socket pair made by the
    // test, as a parent process would pass it.
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
    let theirs2 = theirs.try_clone().expect("clone");
    let mut child = Command::new(RAMFS)
        .arg("-i")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs2)))
        .spawn()
        .expect("spawn ramfs -i");
    let rt = rt();
    within(&rt, 30, async {
        ours.set_nonblocking(true).expect("nonblocking");
        let s = tokio::net::UnixStream::from_std(ours).expect("tokio");
        let c = lib9::Client::connect(
            lib9::dial::Conn::from_unix(s, "stdio"),
            lib9::client::Options::default(),
        )
        .await
        .expect("version");
        let root = c.attach("glenda", "").await.expect("attach");
        let mut d = root.walk("").await.expect("clone");
        d.create("f", 0o644, lib9::fcall::ORDWR)
            .await
            .expect("create");
        d.write(0, bytes::Bytes::from_static(b"over stdio"))
            .await
            .expect("write");
        assert_eq!(&d.read(0, 100).await.expect("read")[..], b"over stdio");
    });
    // The client hung up (the runtime is gone): ramfs -i exits by itself.
    drop(rt);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(st)) = child.try_wait() {
            assert!(st.success(), "{st}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ramfs -i did not exit when its client went");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

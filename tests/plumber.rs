//! plumber and plumb end to end: the plumber posted in a private $NAMESPACE, messages
//! sent with `plumb` and as raw bytes with `9p write`, ports read with the client
//! library, rules rewritten at run time, `plumb start` and `plumb client`.

mod common;

use common::{Ns, run_with_input};
use plumber::client::Plumb;
use plumber::msg::Message;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const PLUMBER: &str = env!("CARGO_BIN_EXE_plumber");
const PLUMB: &str = env!("CARGO_BIN_EXE_plumb");
const LIMIT: Duration = Duration::from_secs(20);

/// A plumber started in the foreground for one test, killed by pid when dropped.
struct Srv {
    child: Child,
    ns: Ns,
}

impl Drop for Srv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Srv {
    fn start(rules: &str) -> Srv {
        let ns = Ns::new();
        let file = ns.path().join("rules.plumbing");
        std::fs::write(&file, rules).unwrap();
        let child = ns
            .cmd(PLUMBER)
            .arg("-f")
            .arg("-p")
            .arg(&file)
            .current_dir(ns.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("start plumber");
        let s = Srv { child, ns };
        let deadline = Instant::now() + LIMIT;
        while std::os::unix::net::UnixStream::connect(s.ns.svc("plumb")).is_err() {
            assert!(Instant::now() < deadline, "plumber did not post itself");
            std::thread::sleep(Duration::from_millis(20));
        }
        s
    }

    fn dial(&self) -> Plumb {
        Plumb::dial(&format!("unix!{}", self.ns.svc("plumb").display())).expect("dial plumb")
    }

    fn plumb(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        run_with_input(self.ns.cmd(PLUMB).args(args), input)
    }

    fn ninep(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        self.ns.ninep(args, input)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Receive on `port` in a thread; the messages, or a failure after LIMIT.
fn reader(p: Plumb, port: &str, n: usize) -> std::sync::mpsc::Receiver<Message> {
    let mut r = p.open_port(port).expect("open port");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _p = p;
        for _ in 0..n {
            match r.recv() {
                Ok(m) => {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

fn wait_for(path: &Path) -> bool {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

const RULES: &str = "\
# test rules
plumb to declared

type is text
data matches '([a-z]+)\\.c:([0-9]+)'
plumb to edit
plumb client true

type is text
data matches 'http://[a-z.]+'
plumb to web

type is text
data matches 'start:([a-z]+)'
plumb start touch $1
";

#[test]
fn port_reader_receives_messages() {
    let s = Srv::start(RULES);
    let rx = reader(s.dial(), "edit", 2);
    let o = s.plumb(
        &[
            "-s",
            "tester",
            "-w",
            "/src",
            "-a",
            "k=v",
            "main.c:12",
            "x.c:3",
        ],
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = rx.recv_timeout(LIMIT).expect("first message");
    assert_eq!(
        (
            m.src.as_str(),
            m.dst.as_str(),
            m.wdir.as_str(),
            m.kind.as_str()
        ),
        ("tester", "edit", "/src", "text")
    );
    assert_eq!(m.data, b"main.c:12");
    assert_eq!(m.lookup("k"), Some("v"));
    assert_eq!(rx.recv_timeout(LIMIT).expect("second").data, b"x.c:3");
}

#[test]
fn every_reader_gets_a_copy_and_9p_reads_the_wire_format() {
    let s = Srv::start(RULES);
    let a = reader(s.dial(), "web", 1);
    let b = reader(s.dial(), "web", 1);
    // A raw message as plumb(7) lays it out, written with 9p.
    let raw = b"raw\n\n/tmp\ntext\nq='a b'\n13\nhttp://nine.io";
    let raw_ok = b"raw\n\n/tmp\ntext\nq='a b'\n14\nhttp://nine.io";
    let o = s.ninep(&["write", "plumb/send"], Some(raw));
    assert!(!o.status.success(), "data longer than ndata is refused");
    let o = s.ninep(&["write", "plumb/send"], Some(raw_ok));
    assert!(o.status.success(), "{}", stderr(&o));
    for rx in [a, b] {
        let m = rx.recv_timeout(LIMIT).expect("copy");
        assert_eq!(
            m.pack(),
            b"raw\nweb\n/tmp\ntext\nq='a b'\n14\nhttp://nine.io".to_vec()
        );
    }
}

#[test]
fn malformed_messages_get_an_error_and_the_plumber_lives_on() {
    let mut s = Srv::start(RULES);
    let p = s.dial();
    let w = p.sender("send").unwrap();
    for bad in [
        &b"no newlines at all"[..],
        b"a\nb\nc\nd\ne\n1\nTOO LONG",
        b"\xff\xfe\n\n\n\n\n0\n",
        b"a\nb\nc\nd\ne\n-5\n",
    ] {
        let e = w.send_packed(bytes::Bytes::copy_from_slice(bad));
        assert!(e.is_err(), "{bad:?} accepted");
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("bad plumb message format")
        );
    }
    assert!(s.alive());
    let rx = reader(s.dial(), "web", 1);
    w.send(&Message::text("t", "/", b"http://ok.example"))
        .unwrap();
    assert_eq!(rx.recv_timeout(LIMIT).unwrap().data, b"http://ok.example");
}

#[test]
fn a_message_nobody_wants() {
    let s = Srv::start(RULES);
    let o = s.plumb(&["no rule wants this"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no matching plumb rule"),
        "{}",
        stderr(&o)
    );
    // A port with no reader and no start or client action.
    let o = s.plumb(&["http://nobody.reads"], None);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no start action for plumb message"),
        "{}",
        stderr(&o)
    );
    // A destination that is no port.
    let o = s.plumb(&["-d", "nosuch", "x"], None);
    assert!(stderr(&o).contains("no such plumb port"), "{}", stderr(&o));
    // Declared ports exist even without rules sending there.
    let o = s.ninep(&["ls", "plumb/"], None);
    let ls = String::from_utf8_lossy(&o.stdout).into_owned();
    for f in ["declared", "edit", "web", "rules", "send"] {
        assert!(ls.lines().any(|l| l == f), "{f} not in {ls}");
    }
}

#[test]
fn plumb_start_runs_the_command_with_rc() {
    let s = Srv::start(RULES);
    let o = s.plumb(&["start:marker"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    // touch ran in the plumber's directory, the namespace dir.
    assert!(
        wait_for(&s.ns.path().join("marker")),
        "start command did not run"
    );
    // Text that looks like rc syntax stays text.
    let o = s.plumb(&["start:a"], None);
    assert!(o.status.success());
    assert!(wait_for(&s.ns.path().join("a")));
}

#[test]
fn plumb_client_holds_the_message_until_the_port_is_opened() {
    let s = Srv::start(RULES);
    let o = s.plumb(&["held.c:1"], None);
    assert!(o.status.success(), "{}", stderr(&o));
    let rx = reader(s.dial(), "edit", 1);
    let m = rx.recv_timeout(LIMIT).expect("held message");
    assert_eq!(m.data, b"held.c:1");
}

#[test]
fn rules_rewritten_at_run_time() {
    let s = Srv::start(RULES);
    let o = s.ninep(&["read", "plumb/rules"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout), RULES);
    // A bad rules text is refused at its line, and the old rules stay.
    let bad =
        "type is text\ndata matches x\nplumb to new\n\ntype is text\ndata frob y\nplumb to new\n";
    let o = s.ninep(&["write", "plumb/rules"], Some(bad.as_bytes()));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("<rules input>:6: unknown verb frob"),
        "{}",
        stderr(&o)
    );
    let o = s.ninep(&["read", "plumb/rules"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout), RULES);
    let rx = reader(s.dial(), "web", 1);
    // Good rules replace them; a new port appears.
    let good = "type is text\ndata matches 'new.*'\nplumb to fresh\n\ntype is text\ndata matches 'http://.*'\nplumb to web\n";
    let o = s.ninep(&["write", "plumb/rules"], Some(good.as_bytes()));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s.ninep(&["read", "plumb/rules"], None);
    assert_eq!(String::from_utf8_lossy(&o.stdout), good);
    let fresh = reader(s.dial(), "fresh", 1);
    assert!(s.plumb(&["newthing"], None).status.success());
    assert_eq!(fresh.recv_timeout(LIMIT).unwrap().data, b"newthing");
    assert!(s.plumb(&["http://still.here"], None).status.success());
    assert_eq!(rx.recv_timeout(LIMIT).unwrap().data, b"http://still.here");
    // The old rules are gone.
    assert!(!s.plumb(&["main.c:1"], None).status.success());
}

#[test]
fn include_from_a_file() {
    let ns_rules = "include extra\n\ntype is text\ndata matches $pat\nplumb to p\n";
    let s = Srv::start("type is nothing\nplumb to unused\n");
    std::fs::write(s.ns.path().join("extra"), "pat='[0-9]+'\n").unwrap();
    let o = s.ninep(&["write", "plumb/rules"], Some(ns_rules.as_bytes()));
    assert!(o.status.success(), "{}", stderr(&o));
    let rx = reader(s.dial(), "p", 1);
    assert!(s.plumb(&["12345"], None).status.success());
    assert_eq!(rx.recv_timeout(LIMIT).unwrap().data, b"12345");
    let o = s.ninep(&["write", "plumb/rules"], Some(b"include missing\n"));
    assert!(stderr(&o).contains("<rules input>:1: can't open missing for inclusion"));
}

#[test]
fn plumb_i_sends_standard_input_with_showdata() {
    let s = Srv::start(RULES);
    let rx = reader(s.dial(), "edit", 1);
    let o = s.plumb(
        &["-i", "-d", "edit", "-a", "filename=/man/ls(1)"],
        Some(b"line one\nline two\n"),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = rx.recv_timeout(LIMIT).unwrap();
    assert_eq!(m.data, b"line one\nline two\n");
    assert_eq!(m.lookup("action"), Some("showdata"));
    assert_eq!(m.lookup("filename"), Some("/man/ls(1)"));
    assert_eq!(m.dst, "edit");
    // Usage errors.
    assert!(!s.plumb(&[], None).status.success());
    assert!(!s.plumb(&["-i", "x"], None).status.success());
}

#[test]
fn large_messages_are_reassembled() {
    let s = Srv::start(RULES);
    let rx = reader(s.dial(), "edit", 1);
    let data: Vec<u8> = (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let p = s.dial();
    let mut m = Message::text("big", "/", &data);
    m.dst = "edit".into();
    p.send(&m).unwrap();
    let got = rx.recv_timeout(LIMIT).unwrap();
    assert_eq!(got.data.len(), data.len());
    assert_eq!(got.data, data);
}

/// A port reader keeps several reads in flight: messages still come in the order
/// they were sent, small ones and ones that take many reads mixed, from senders
/// racing the reader, with the reader slower and faster than them.
#[test]
fn messages_come_in_order_with_reads_in_flight() {
    let s = Srv::start(RULES);
    const N: usize = 600;
    let rx = reader(s.dial(), "edit", N);
    let p = s.dial();
    let sender = p.sender("send").expect("open send");
    for i in 0..N {
        // Every 50th message takes several reads (and several writes).
        let len = if i % 50 == 7 { 20_000 + i } else { i % 40 };
        let mut data = format!("{i} ").into_bytes();
        data.resize(data.len() + len, b'a' + (i % 26) as u8);
        let mut m = Message::text("order", "/", &data);
        m.dst = "edit".into();
        sender.send(&m).unwrap();
        if i % 100 == 99 {
            // Let the reader catch up and wait with its reads in flight.
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    for i in 0..N {
        let got = rx.recv_timeout(LIMIT).expect("message");
        let text = String::from_utf8_lossy(&got.data);
        let n: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(n, i, "message {i} came as {n}");
    }
}

#[test]
fn bad_rules_file_is_refused_at_start() {
    let ns = Ns::new();
    let file = ns.path().join("bad");
    std::fs::write(&file, "type is text\nplumb to ok\n\ndata wobble x\n").unwrap();
    let o = run_with_input(ns.cmd(PLUMBER).arg("-f").arg("-p").arg(&file), None);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim(),
        format!("plumber: {}:4: unknown verb wobble", file.display())
    );
    assert!(!ns.svc("plumb").exists());
    let o = run_with_input(Command::new(PLUMBER).arg("--help"), None);
    assert!(o.status.success());
    let o = run_with_input(Command::new(PLUMB).arg("--help"), None);
    assert!(o.status.success());
}

#[test]
fn default_rules_without_a_plumbing_file() {
    let ns = Ns::new();
    let home = tempfile::tempdir().unwrap();
    let mut child = ns
        .cmd(PLUMBER)
        .arg("-f")
        .env("HOME", home.path())
        .env_remove("home")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + LIMIT;
    while std::os::unix::net::UnixStream::connect(ns.svc("plumb")).is_err() {
        assert!(Instant::now() < deadline, "plumber did not post itself");
        std::thread::sleep(Duration::from_millis(20));
    }
    let p = Plumb::dial(&format!("unix!{}", ns.svc("plumb").display())).unwrap();
    let rx = reader(p, "web", 1);
    let o = ns.ninep(&["read", "plumb/rules"], None);
    assert!(String::from_utf8_lossy(&o.stdout).contains("include basic"));
    let o = run_with_input(
        ns.cmd(PLUMB)
            .args(["-a", "click=10", "see http://example.com/x now"]),
        None,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let m = rx.recv_timeout(LIMIT).unwrap();
    assert_eq!(m.data, b"http://example.com/x");
    assert_eq!(m.lookup("click"), None);
    let _ = child.kill();
    let _ = child.wait();
}

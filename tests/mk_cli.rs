//! mk's command line and signals (the mkfile language is in tests/mk_diff.rs).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MK: &str = env!("CARGO_BIN_EXE_mk");
const RC: &str = env!("CARGO_BIN_EXE_rc");

fn dir_with(mkfile: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::write(d.path().join("mkfile"), mkfile).expect("write mkfile");
    d
}

#[test]
fn help_is_on_standard_output() {
    let o = Command::new(MK).arg("--help").output().expect("run mk");
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("usage: mk "));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let o = Command::new(MK).arg("-q").output().expect("run mk");
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).starts_with("Usage: mk "));
}

/// An alarm stops mk: its recipes are stopped first, and it says why.
#[test]
fn alarm_stops_the_recipes_and_mk() {
    let d = dir_with("all:V:\n\tsleep 30\n");
    let child = Command::new(MK)
        .current_dir(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run mk");
    // Wait until the recipe runs.
    let start = Instant::now();
    let pid = child.id() as i32;
    loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        if !kids.trim().is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the recipe did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGALRM) };
    let t = Instant::now();
    let o = child.wait_with_output().expect("wait mk");
    stopped_by_alarm(t, &o);
}

/// mk ended soon after `t` (its recipes sleep 30 s), with status 1, saying why.
fn stopped_by_alarm(t: Instant, o: &std::process::Output) {
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "mk did not stop the recipes: {o:?}"
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("mk: alarm"),
        "{o:?}"
    );
}

/// A note that comes while mk is busy starting recipes, not waiting for them,
/// still stops it at once: here the first of two recipes run together signals mk
/// while mk is starting the second.
#[test]
fn alarm_while_starting_recipes_stops_mk() {
    let d =
        dir_with("all:V: a b\na:V:\n\tkill -ALRM $PPID; exec sleep 30\nb:V:\n\texec sleep 30\n");
    let t = Instant::now();
    let o = Command::new(MK)
        .current_dir(d.path())
        .env("NPROC", "2")
        .output()
        .expect("run mk");
    stopped_by_alarm(t, &o);
}

/// `MKSHELL=rc` runs recipes with ninespace's rc: an rc-only construct works.
#[test]
fn mkshell_rc_is_ours() {
    let d = dir_with("MKSHELL=rc\nall:V:\n\tx=(a b c)\n\techo $#x $x(2)\n");
    let bin = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(RC, bin.path().join("rc")).expect("link rc");
    let o = Command::new(MK)
        .current_dir(d.path())
        .env("PATH", format!("{}:/usr/bin:/bin", bin.path().display()))
        .output()
        .expect("run mk");
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "x=(a b c)\necho $#x $x(2)\n3 b\n"
    );
}

/// NPROC jobs run at once: each of two recipes waits (up to 3 s) for the other to
/// have started, which only works if they run together.
#[test]
fn nproc_runs_recipes_together() {
    let mkfile = "all:V: ta tb\n\
t&:V:\n\
\ttouch started.$stem\n\
\tother=a; [ $stem = a ] && other=b\n\
\ti=0; while [ ! -e started.$other ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i+1)); done\n\
\t[ -e started.$other ]\n";
    let d = dir_with(mkfile);
    let o = Command::new(MK)
        .current_dir(d.path())
        .env("NPROC", "2")
        .output()
        .expect("run mk");
    assert!(o.status.success(), "{o:?}");
    // With one job at a time the first recipe gives up waiting and fails.
    for f in ["started.a", "started.b"] {
        std::fs::remove_file(d.path().join(f)).expect("remove");
    }
    let o = Command::new(MK)
        .current_dir(d.path())
        .env("NPROC", "1")
        .arg("-k")
        .output()
        .expect("run mk");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exit status"),
        "{o:?}"
    );
}

//! rc's command line, as docs/rc.md describes it: `--help`, login shells (`-l` and an
//! argv[0] starting with `-`), `$RCMAIN` and `-m`, `rc file` without `.` in `$path`,
//! `-n`, `rfork E`, exit statuses, and the environment shared with Debian's 9base rc
//! (`/usr/lib/plan9/bin/rc`; those tests are skipped with a notice when it is missing,
//! or fail if `NINESPACE_REQUIRE_PEERS=1`).
//!
//! Every run has a fresh directory as its working directory and `$HOME`, an
//! environment of only `HOME`, `PATH=/usr/bin:/bin` and `LC_ALL=C`, argv[0] `rc`
//! (unless the test says otherwise), standard input from `/dev/null`, and 10 s before
//! it is killed. Scripts have names no program in `/usr/bin` or `/bin` has (`t-...`):
//! `rc name` looks through `$path` first (`rc script` would read util-linux's
//! `/usr/bin/script`).

mod rc_support;

use rc_support::{NINEBASE, Outcome, RC, Run, Sandbox, have_peer, run};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(10);

fn go(cmd: &mut Command) -> Run {
    let r = run(cmd, None, TIMEOUT);
    assert_ne!(r.outcome, Outcome::TimedOut, "{cmd:?} timed out: {r:#?}");
    r
}

/// The run exited 0 and printed exactly `out` on standard output and nothing on
/// standard error.
fn assert_ok(r: &Run, out: &str) {
    assert_eq!(
        (r.outcome, r.stdout.as_str(), r.stderr.as_str()),
        (Outcome::Exit(0), out, ""),
        "{r:#?}"
    );
}

/// SYNOPSIS and OPTIONS: `rc --help` prints the usage on standard output and
/// succeeds.
#[test]
fn help() {
    let sb = Sandbox::new();
    let r = go(sb.rc().arg("--help"));
    assert_eq!(r.outcome, Outcome::Exit(0), "{r:#?}");
    assert!(r.stdout.starts_with("usage: rc "), "{r:#?}");
    for flag in ["-c command", "-l", "-n", "-m rcmain", "-p", "-e", "-x"] {
        assert!(
            r.stdout.contains(flag),
            "--help does not mention {flag}: {r:#?}"
        );
    }
    assert_eq!(r.stderr, "");
}

/// An unknown option is an error: a message and the usage on standard error, status 1.
#[test]
fn unknown_option() {
    let sb = Sandbox::new();
    let r = go(sb.rc().args(["-Q", "-c", "echo ran"]));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("usage: rc"), "{r:#?}");
}

/// `-l`, or an argv[0] that starts with `-`, runs `$home/lib/profile` first; otherwise
/// it is not read (OPTIONS, START-UP, AS A LOGIN SHELL).
#[test]
fn login_shell_reads_profile() {
    let sb = Sandbox::new();
    sb.write("lib/profile", "x=fromprofile\n");
    assert_ok(&go(sb.rc().args(["-l", "-c", "echo $x"])), "fromprofile\n");
    assert_ok(
        &go(sb.rc().arg0("-rc").args(["-c", "echo $x"])),
        "fromprofile\n",
    );
    // Without either, no profile: $x is unset (so $"x is one empty string).
    assert_ok(&go(sb.rc().args(["-c", "echo -$\"x-"])), "--\n");
    // The profile runs before the script too, with the script's arguments after it.
    sb.write("t-script", "echo $x $*\n");
    assert_ok(
        &go(sb.rc().args(["-l", "t-script", "a", "b"])),
        "fromprofile a b\n",
    );
}

/// `$home` comes from `$HOME`: the profile is found through it.
#[test]
fn login_shell_profile_follows_home() {
    let sb = Sandbox::new();
    let other = Sandbox::new();
    other.write("lib/profile", "x=other\n");
    assert_ok(
        &go(sb
            .rc()
            .env("HOME", other.home())
            .args(["-l", "-c", "echo $x"])),
        "other\n",
    );
}

/// A small rcmain that says it ran, then does what rc was asked to.
const MY_RCMAIN: &str = "\
echo custom rcmain $0
if(! ~ $#cflag 0) eval $cflag
if not . $*
";

/// START-UP: `-m file`, else `$RCMAIN`, replaces the built-in rcmain.
#[test]
fn rcmain_replaced() {
    let sb = Sandbox::new();
    let mine = sb.write("mymain", MY_RCMAIN);
    let theirs = sb.write(
        "theirmain",
        "echo env rcmain\nif(! ~ $#cflag 0) eval $cflag\nif not . $*\n",
    );
    sb.write("t-script", "echo script $*\n");
    let m = mine.display().to_string();
    assert_ok(
        &go(sb.rc().args(["-m", &m, "-c", "echo hi"])),
        &format!("custom rcmain {m}\nhi\n"),
    );
    assert_ok(
        &go(sb.rc().args(["-m", &m, "t-script", "a"])),
        &format!("custom rcmain {m}\nscript a\n"),
    );
    assert_ok(
        &go(sb.rc().env("RCMAIN", &theirs).args(["-c", "echo hi"])),
        "env rcmain\nhi\n",
    );
    // -m comes first.
    assert_ok(
        &go(sb
            .rc()
            .env("RCMAIN", &theirs)
            .args(["-m", &m, "-c", "echo hi"])),
        &format!("custom rcmain {m}\nhi\n"),
    );
    // An rcmain that cannot be opened is an error.
    let r = go(sb.rc().args(["-m", "/nonexistent/rcmain", "-c", "echo hi"]));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("/nonexistent/rcmain"), "{r:#?}");
}

/// START-UP: `rc file` finds a file in the current directory when `$path` (here
/// without `.`) does not; `$0` is then `./file`.
#[test]
fn script_in_current_directory() {
    let sb = Sandbox::new();
    sb.write("script.rc", "echo $0 $#* $*\n");
    assert_ok(
        &go(sb.rc().args(["script.rc", "a", "b c"])),
        "./script.rc 2 a b c\n",
    );
    // A name with a directory is used as it is.
    sb.write("sub/s.rc", "echo $0\n");
    assert_ok(&go(sb.rc().arg("sub/s.rc")), "./sub/s.rc\n");
    // A file that is nowhere is an error.
    let r = go(sb.rc().arg("missing.rc"));
    assert_ne!(r.outcome, Outcome::Exit(0), "{r:#?}");
    assert!(r.stderr.contains("missing.rc"), "{r:#?}");
}

/// OPTIONS: `-n` reads and parses but runs nothing; a syntax error is still reported,
/// with status 1.
#[test]
fn parse_only() {
    let sb = Sandbox::new();
    let made = sb.home().join("made");
    let touched = sb.home().join("touched");
    sb.write("t-script", ">made\ntouch touched\necho ran\n");
    let r = go(sb.rc().args(["-n", "t-script"]));
    assert_ok(&r, "");
    assert!(!made.exists() && !touched.exists(), "-n ran the script");
    let r = go(sb.rc().args(["-n", "-c", ">made; touch touched; echo ran"]));
    assert_ok(&r, "");
    assert!(!made.exists() && !touched.exists(), "-n ran the command");

    // Syntax errors: nothing before them runs either.
    sb.write("t-bad", ">made\necho )\n");
    let r = go(sb.rc().args(["-n", "t-bad"]));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert!(r.stderr.contains("syntax error"), "{r:#?}");
    let r = go(sb.rc().args(["-n", "-c", ">made; echo )"]));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert!(r.stderr.contains("syntax error"), "{r:#?}");
    assert!(!made.exists(), "-n ran the command");

    // The same without -n runs.
    assert_ok(&go(sb.rc().arg("t-script")), "ran\n");
    assert!(made.exists() && touched.exists());
}

/// The names in an `env` listing.
fn env_names(out: &str) -> Vec<&str> {
    out.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, _)| k)
        .collect()
}

/// Built-ins, `rfork E`: a new, empty environment; afterwards only what is set (or
/// defined) later is exported.
#[test]
fn rfork_empty_environment() {
    let sb = Sandbox::new();
    let r = go(sb.rc().args([
        "-c",
        "x=before; fn g {echo g}; rfork E; y=after; fn h {echo h}; env",
    ]));
    assert_eq!(r.outcome, Outcome::Exit(0), "{r:#?}");
    let names = env_names(&r.stdout);
    for gone in ["x", "fn#g", "HOME", "PATH", "home", "path"] {
        assert!(!names.contains(&gone), "{gone} is still exported: {r:#?}");
    }
    assert!(r.stdout.lines().any(|l| l == "y=after"), "{r:#?}");
    assert!(names.contains(&"fn#h"), "{r:#?}");
    // Before rfork E, the same are exported.
    let r = go(sb.rc().args(["-c", "x=before; fn g {echo g}; env"]));
    let names = env_names(&r.stdout);
    for there in ["x", "fn#g", "HOME", "PATH"] {
        assert!(names.contains(&there), "{there} is not exported: {r:#?}");
    }
    // rfork e copies the environment: all is still there.
    let r = go(sb.rc().args(["-c", "x=before; rfork e; env"]));
    assert!(r.stdout.lines().any(|l| l == "x=before"), "{r:#?}");
}

/// DIAGNOSTICS: exit statuses.
#[test]
fn exit_statuses() {
    let sb = Sandbox::new();
    assert_eq!(go(sb.rc().args(["-c", "exit 3"])).outcome, Outcome::Exit(3));
    assert_eq!(go(sb.rc().args(["-c", "exit"])).outcome, Outcome::Exit(0));
    assert_eq!(
        go(sb.rc().args(["-c", "/bin/false"])).outcome,
        Outcome::Exit(1)
    );

    // A syntax error: status 1, a message with the line, nothing run.
    let r = go(sb.rc().args(["-c", "echo ran; echo )"]));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert_eq!(r.stdout, "");
    assert!(
        r.stderr.starts_with("rc: line ") && r.stderr.contains("syntax error"),
        "{r:#?}"
    );

    // A runtime error: status 1, and the script stops there.
    let r = go(sb.rc().args(["-c", "x=(); echo $x^a; echo after"]));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert_eq!(r.stdout, "");
    assert_eq!(r.stderr, "rc: null list in concatenation\n");

    // The same in a script file.
    sb.write("t-script", "x=()\necho $x^a\necho after\n");
    let r = go(sb.rc().arg("t-script"));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert_eq!(r.stdout, "");
    assert!(r.stderr.contains("null list in concatenation"), "{r:#?}");
    sb.write("t-syntax", "echo ran\necho )\n");
    let r = go(sb.rc().arg("t-syntax"));
    assert_eq!(r.outcome, Outcome::Exit(1), "{r:#?}");
    assert!(r.stderr.contains("syntax error"), "{r:#?}");
}

/// What the other rc prints when it sees `x` and `f` from its parent.
const LOOK: &str = "echo $#x; for(i in $x) echo '['^$i^']'; f 1 2";
const SEEN: &str = "3\n[a]\n[b c]\n[]\nin f 1 2\n";
const DEFINE: &str = "x=(a 'b c' ''); fn f {echo in f $*}";

/// ENVIRONMENT: a list and a function exported by our rc are seen by a 9base rc
/// started from it.
#[test]
fn environment_to_9base() {
    if !have_peer(NINEBASE, "Debian package 9base") {
        return;
    }
    let sb = Sandbox::new();
    let script = format!("{DEFINE}; {NINEBASE} -c {}", quote(LOOK));
    assert_ok(&go(sb.rc().args(["-c", &script])), SEEN);
}

/// ENVIRONMENT: and the other way round.
#[test]
fn environment_from_9base() {
    if !have_peer(NINEBASE, "Debian package 9base") {
        return;
    }
    let sb = Sandbox::new();
    let script = format!("{DEFINE}; {RC} -c {}", quote(LOOK));
    assert_ok(
        &go(sb.cmd(NINEBASE, "/usr/bin:/bin").args(["-c", &script])),
        SEEN,
    );
}

/// ENVIRONMENT: our rc to our rc, and through a 9base rc in between.
#[test]
fn environment_round_trip() {
    let sb = Sandbox::new();
    let script = format!("{DEFINE}; {RC} -c {}", quote(LOOK));
    assert_ok(&go(sb.rc().args(["-c", &script])), SEEN);
    if !have_peer(NINEBASE, "Debian package 9base") {
        return;
    }
    let inner = format!("{RC} -c {}", quote(LOOK));
    let script = format!("{DEFINE}; {NINEBASE} -c {}", quote(&inner));
    assert_ok(&go(sb.rc().args(["-c", &script])), SEEN);
}

/// `s` in rc quotes.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

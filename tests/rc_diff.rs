//! Differential tests for ninespace's rc.
//!
//! Every script in `tests/rc/*.rc` runs under our `rc` and under Debian's 9base rc (a
//! pre-2020 plan9port rc, at `/usr/lib/plan9/bin/rc`); standard output and the exit
//! status must be the same, and standard error too for scripts marked `#stderr`.
//!
//! A script may start with header comment lines (rc ignores them as comments):
//!
//! - `#stderr`: compare standard error as well;
//! - `#args: a b c`: arguments after the script name (split at blanks, no quoting);
//! - `#stdin: text`: a line of standard input (repeat the header for more lines;
//!   without it standard input is `/dev/null`);
//! - `#expect: file`: plan9port's current rc and 9base differ here (userland.md says
//!   how), so the script is not compared with 9base but with the expected standard
//!   output in `NNN-topic.out` beside it (test `rc_expected_outputs`); the next line
//!   `#why: ...` records the reason.
//!
//! Each run gets a fresh directory that is its working directory and `$HOME`, a
//! private `$NAMESPACE` (mode 0700), and a cleared environment (`PATH`, `HOME`, `USER`,
//! `NAMESPACE`, `TZ=UTC`, `LC_ALL=C`). `PATH` is `/usr/local/bin:/usr/bin:/bin` with one
//! directory in front that holds only `rc`, a link to the shell under test: scripts
//! run `rc -c ...` and `rc script` to test flags, the environment and exit codes, and
//! that must be the shell under test, not whatever `rc` the system has (Debian's
//! `/usr/bin/rc` is 9base). So scripts never print the default `$path`.
//!
//! If 9base is missing the comparison is skipped with a notice, unless
//! `NINESPACE_REQUIRE_PEERS=1`, when it fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const OURS: &str = env!("CARGO_BIN_EXE_rc");
const REFERENCE: &str = "/usr/lib/plan9/bin/rc";
const TIMEOUT: Duration = Duration::from_secs(20);
/// Output beyond this is drained but not kept.
const OUTPUT_CAP: usize = 4 << 20;
/// How much of each output a failure report shows.
const SHOW_BYTES: usize = 1500;
const SHOW_LINES: usize = 30;
/// Lines shown before the first difference.
const CONTEXT_LINES: usize = 3;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("rc")
}

/// One script of the corpus and what its header asks for.
struct Script {
    name: String,
    path: PathBuf,
    text: Vec<u8>,
    stderr: bool,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    /// The file of expected standard output, for `#expect` scripts.
    expect: Option<PathBuf>,
    why: Option<String>,
}

/// Read every `tests/rc/*.rc`, sorted by name. Problems with the headers themselves
/// are returned as failures rather than panicking, so one run shows all of them.
fn load_corpus(failures: &mut Vec<String>) -> Vec<Script> {
    let dir = corpus_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rc"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no scripts in {}", dir.display());
    paths
        .into_iter()
        .map(|p| parse_script(&p, failures))
        .collect()
}

fn parse_script(path: &Path, failures: &mut Vec<String>) -> Script {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let mut s = Script {
        name: name.clone(),
        path: path.to_path_buf(),
        text: text.clone(),
        stderr: false,
        args: Vec::new(),
        stdin: None,
        expect: None,
        why: None,
    };
    let body = String::from_utf8_lossy(&text);
    for line in body.lines() {
        let Some(h) = line.strip_prefix('#') else {
            break;
        };
        if h.trim_end() == "stderr" {
            s.stderr = true;
        } else if let Some(v) = h.strip_prefix("args:") {
            s.args = v.split_whitespace().map(str::to_owned).collect();
        } else if let Some(v) = h.strip_prefix("stdin:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            let buf = s.stdin.get_or_insert_with(Vec::new);
            buf.extend_from_slice(v.as_bytes());
            buf.push(b'\n');
        } else if let Some(v) = h.strip_prefix("expect:") {
            let v = v.trim();
            let out = if v == "file" {
                path.with_extension("out")
            } else {
                path.with_file_name(v)
            };
            s.expect = Some(out);
        } else if let Some(v) = h.strip_prefix("why:") {
            s.why = Some(v.trim().to_owned());
        }
    }
    if let Some(out) = &s.expect {
        if !out.is_file() {
            failures.push(format!(
                "{name}: #expect names {}, which does not exist",
                out.display()
            ));
        }
        if s.why.as_deref().is_none_or(str::is_empty) {
            failures.push(format!("{name}: #expect without a #why: line"));
        }
    }
    s
}

/// Scripts with identical contents test the same thing twice.
fn check_duplicates(scripts: &[Script], failures: &mut Vec<String>) {
    let mut seen: BTreeMap<&[u8], &str> = BTreeMap::new();
    for s in scripts {
        if let Some(first) = seen.insert(&s.text, &s.name) {
            failures.push(format!("{}: identical to {first}", s.name));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Exit(i32),
    Signal(i32),
    TimedOut,
}

struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    outcome: Outcome,
}

/// Read a pipe to its end on another thread, keeping at most OUTPUT_CAP bytes.
fn drain(mut r: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        let _ = tx.send(kept);
    });
    rx
}

/// Run one script under one shell, in a fresh directory, with the controlled
/// environment. Returns the run and the temporary root (for normalising stderr).
fn run(shell: &str, s: &Script) -> (Run, String) {
    let root = tempfile::Builder::new()
        .prefix("rc-diff.")
        .tempdir()
        .expect("tempdir");
    let home = root.path().join("home");
    let ns = root.path().join("ns");
    let bin = root.path().join("bin");
    for d in [&home, &ns, &bin] {
        std::fs::create_dir(d).expect("mkdir");
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&ns, std::fs::Permissions::from_mode(0o700)).expect("chmod ns");
    std::os::unix::fs::symlink(shell, bin.join("rc")).expect("symlink rc");
    let stdin = match &s.stdin {
        Some(text) => {
            // A file, not a pipe: reads are then repeatable (head seeks back).
            let f = root.path().join("stdin");
            std::fs::write(&f, text).expect("write stdin");
            Stdio::from(std::fs::File::open(&f).expect("open stdin"))
        }
        None => Stdio::null(),
    };
    let mut cmd = Command::new(shell);
    cmd.arg0("rc")
        .arg(&s.path)
        .args(&s.args)
        .current_dir(&home)
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/local/bin:/usr/bin:/bin", bin.display()),
        )
        .env("HOME", &home)
        .env("USER", "glenda")
        .env("NAMESPACE", &ns)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {shell}: {e}"));
    let out = drain(child.stdout.take().expect("stdout"));
    let err = drain(child.stderr.take().expect("stderr"));
    let deadline = started + TIMEOUT;
    let pgid = child.id() as i32;
    let kill_group = || {
        // SAFETY: signalling the process group we created for this child.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    };
    let mut outcome = Outcome::TimedOut;
    loop {
        match child.try_wait().expect("wait") {
            Some(st) => {
                outcome = match (st.code(), st.signal()) {
                    (Some(c), _) => Outcome::Exit(c),
                    (None, Some(sig)) => Outcome::Signal(sig),
                    _ => Outcome::Exit(-1),
                };
                break;
            }
            None if Instant::now() >= deadline => {
                kill_group();
                let _ = child.wait();
                break;
            }
            None => std::thread::sleep(Duration::from_millis(2)),
        }
    }
    // Background processes left behind may hold the pipes open: they get what is
    // left of the time limit, then the whole group is killed.
    let mut collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => v,
            Err(_) => {
                outcome = Outcome::TimedOut;
                kill_group();
                rx.recv_timeout(Duration::from_secs(2)).unwrap_or_default()
            }
        }
    };
    let stdout = collect(out);
    let stderr = collect(err);
    let root_name = root.path().display().to_string();
    (
        Run {
            stdout,
            stderr,
            outcome,
        },
        root_name,
    )
}

/// rc names itself `rc (argv0):` in messages unless argv[0] is `rc` or `/bin/rc`;
/// both shells run with argv[0] `rc`, but a nested one might not. Also the run's
/// temporary directory differs from run to run.
fn normalise_stderr(err: &[u8], shell: &str, root: &str) -> Vec<u8> {
    let mut s = String::from_utf8_lossy(err).into_owned();
    let link = format!("{root}/bin/rc");
    for p in [shell, link.as_str()] {
        s = s.replace(&format!("rc ({p}):"), "rc:");
    }
    s.replace(root, "$TMP").into_bytes()
}

fn outcome_text(o: Outcome) -> String {
    match o {
        Outcome::Exit(c) => format!("exit {c}"),
        Outcome::Signal(s) => format!("killed by signal {s}"),
        Outcome::TimedOut => format!("timed out after {} s", TIMEOUT.as_secs()),
    }
}

/// A readable, bounded rendering of some output from line `from` (1-based) on, each
/// line prefixed with `|`.
fn show(bytes: &[u8], from: usize) -> String {
    if bytes.is_empty() {
        return "    (empty)\n".to_owned();
    }
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let skip = from.saturating_sub(1).min(lines.len());
    let mut s = String::new();
    if skip > 0 {
        let _ = writeln!(s, "    ({skip} line(s) not shown)");
    }
    let mut shown = 0;
    for l in lines.iter().skip(skip).take(SHOW_LINES) {
        if shown >= SHOW_BYTES {
            break;
        }
        shown += l.len();
        let l = l.strip_suffix('\n').unwrap_or(l);
        s.push_str("    |");
        for c in l.chars() {
            if c.is_control() && c != '\t' {
                let _ = write!(s, "{}", c.escape_default());
            } else {
                s.push(c);
            }
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "    ({} line(s), {} byte(s) in all{})",
        lines.len(),
        bytes.len(),
        if bytes.ends_with(b"\n") {
            ""
        } else {
            ", no final newline"
        }
    );
    s
}

/// Where two outputs first differ, as a 1-based line number.
fn first_difference(a: &[u8], b: &[u8]) -> usize {
    let at = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    1 + a[..at].iter().filter(|&&c| c == b'\n').count()
}

fn describe(what: &str, ours: &[u8], reference: &[u8], reference_name: &str) -> String {
    let line = first_difference(ours, reference);
    let from = line.saturating_sub(CONTEXT_LINES);
    format!(
        "  {what} differs from line {line}:\n   ours:\n{}   {reference_name}:\n{}",
        show(ours, from),
        show(reference, from)
    )
}

/// Run `f` over every script on a few threads; results come back in script order.
fn par_map<T: Send>(scripts: &[&Script], f: impl Fn(&Script) -> T + Sync) -> Vec<T> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<T>>> = scripts
        .iter()
        .map(|_| std::sync::Mutex::new(None))
        .collect();
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(s) = scripts.get(i) else { break };
                    let r = f(s);
                    *results[i].lock().unwrap() = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().unwrap().expect("result"))
        .collect()
}

fn finish(title: &str, total: usize, failures: Vec<String>) {
    if failures.is_empty() {
        return;
    }
    let mut msg = format!(
        "{title}: {} problem(s) in {total} script(s)\n\n",
        failures.len()
    );
    for f in &failures {
        msg.push_str(f);
        if !f.ends_with('\n') {
            msg.push('\n');
        }
        msg.push('\n');
    }
    panic!("{msg}");
}

/// Whether 9base is there to compare with; fails instead of skipping when
/// NINESPACE_REQUIRE_PEERS=1.
fn have_reference() -> bool {
    if Path::new(REFERENCE).is_file() {
        return true;
    }
    if std::env::var("NINESPACE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("{REFERENCE} is missing and NINESPACE_REQUIRE_PEERS=1 (apt-get install 9base)");
    }
    eprintln!(
        "notice: {REFERENCE} is missing (Debian package 9base): rc differential tests skipped"
    );
    false
}

#[test]
fn rc_matches_9base() {
    if !have_reference() {
        return;
    }
    let mut failures = Vec::new();
    let scripts = load_corpus(&mut failures);
    check_duplicates(&scripts, &mut failures);
    let all: Vec<&Script> = scripts.iter().collect();
    let results = par_map(&all, |s| {
        let (reference, ref_root) = run(REFERENCE, s);
        let ours = if s.expect.is_none() {
            Some(run(OURS, s))
        } else {
            None
        };
        (reference, ref_root, ours)
    });
    for (s, (reference, ref_root, ours)) in scripts.iter().zip(results) {
        if reference.outcome == Outcome::TimedOut {
            failures.push(format!(
                "{}: 9base {}",
                s.name,
                outcome_text(reference.outcome)
            ));
        }
        if let Some(out) = &s.expect {
            // Compared with the .out file by rc_expected_outputs; here only check
            // that the #expect is needed at all.
            if let Ok(want) = std::fs::read(out) {
                if want.is_empty() {
                    failures.push(format!("{}: {} is empty", s.name, out.display()));
                } else if want == reference.stdout {
                    failures.push(format!(
                        "{}: 9base already prints what {} expects; drop the #expect",
                        s.name,
                        out.display()
                    ));
                }
            }
            continue;
        }
        if reference.stdout.is_empty() && !s.stderr {
            failures.push(format!(
                "{}: prints nothing under 9base and has no #stderr, so it tests nothing",
                s.name
            ));
        }
        let Some((ours, our_root)) = ours else {
            continue;
        };
        let mut diffs = Vec::new();
        if ours.outcome != reference.outcome {
            diffs.push(format!(
                "  status differs: ours {}, 9base {}\n",
                outcome_text(ours.outcome),
                outcome_text(reference.outcome)
            ));
        }
        if ours.stdout != reference.stdout {
            diffs.push(describe("stdout", &ours.stdout, &reference.stdout, "9base"));
        }
        if s.stderr {
            let a = normalise_stderr(&ours.stderr, OURS, &our_root);
            let b = normalise_stderr(&reference.stderr, REFERENCE, &ref_root);
            if a != b {
                diffs.push(describe("stderr", &a, &b, "9base"));
            }
        }
        if !diffs.is_empty() {
            let mut f = format!("{}:\n", s.name);
            for d in diffs {
                f.push_str(&d);
            }
            if !s.stderr && !ours.stderr.is_empty() {
                let _ = write!(f, "   ours wrote on stderr:\n{}", show(&ours.stderr, 1));
            }
            failures.push(f);
        }
    }
    finish("rc differs from 9base rc", scripts.len(), failures);
}

#[test]
fn rc_expected_outputs() {
    let mut failures = Vec::new();
    let scripts = load_corpus(&mut failures);
    let expecting: Vec<&Script> = scripts.iter().filter(|s| s.expect.is_some()).collect();
    let results = par_map(&expecting, |s| run(OURS, s).0);
    for (s, ours) in expecting.iter().zip(results) {
        let out = s.expect.as_ref().expect("expect");
        let Ok(want) = std::fs::read(out) else {
            continue; // reported by load_corpus
        };
        let mut f = String::new();
        if ours.outcome == Outcome::TimedOut {
            let _ = writeln!(f, "  {}", outcome_text(ours.outcome));
        }
        if ours.stdout != want {
            f.push_str(&describe(
                "stdout",
                &ours.stdout,
                &want,
                &format!("expected ({})", out.file_name().unwrap().to_string_lossy()),
            ));
        }
        if !f.is_empty() {
            let why = s.why.as_deref().unwrap_or("");
            let mut head = format!("{} (not compared with 9base: {why}):\n", s.name);
            head.push_str(&f);
            if !ours.stderr.is_empty() {
                let _ = write!(head, "   ours wrote on stderr:\n{}", show(&ours.stderr, 1));
            }
            failures.push(head);
        }
    }
    finish(
        "rc differs from the expected outputs",
        expecting.len(),
        failures,
    );
}

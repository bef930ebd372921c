//! Differential tests for ninespace's mk.
//!
//! Every directory `tests/mk/NNN-topic/` holds a `mkfile` and a few optional files
//! (`tests/mk/README.md` describes them). Each case runs twice, under our `mk` and
//! under Debian's 9base mk (`/usr/lib/plan9/bin/mk`), each time in a fresh copy of
//! the case; standard output, standard error, the exit status and the final contents
//! of the working directory must be the same.
//!
//! Both mks run recipes with the same shell, our `rc`. Neither looks at `$MKSHELL` in
//! the environment (plan9port ignores it there, and 9base's mk too): a mkfile selects rc
//! with a `MKSHELL=rc` line, and mk then runs `rc` through `$PATH`. So `PATH` is
//! `/usr/local/bin:/usr/bin:/bin` with one directory in front that holds only `rc`, a
//! link to our rc, and `mk`, a link to the mk under test (for recursive mk). Without
//! `MKSHELL`, recipes run under `/bin/sh`, as plan9port's do. (`P` programs are run
//! without mk's environment, so there `PATH` would find the system's rc: cases with `P`
//! say `MKSHELL=../bin/rc`.) Standard error is compared unless the case has a
//! `nostderr` file; outputs of `parallel` cases are compared as sorted lines.
//!
//! Each run gets a fresh temporary directory with `work` (the copy of the case, the
//! working directory), `home` (`$HOME`) and `bin`; the environment is cleared except
//! `PATH`, `HOME`, `TZ=UTC`, `LC_ALL=C` and what the case's `env` file adds. The
//! temporary directory's name is replaced by `$TMP` in the outputs before they are
//! compared. Every run (and every `setup`) has a time limit, after which its process
//! group is killed.
//!
//! If 9base is missing the comparison is skipped with a notice, unless
//! `NINESPACE_REQUIRE_PEERS=1`, when it fails; the same goes for a program a case
//! `needs` (such as `ar`).

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const OURS: &str = env!("CARGO_BIN_EXE_mk");
const OUR_RC: &str = env!("CARGO_BIN_EXE_rc");
const REFERENCE: &str = "/usr/lib/plan9/bin/mk";
/// The time `dates` offsets count from (2017-07-14 02:40:00 UTC): far enough in the
/// past that whatever a recipe creates is newer.
const BASE_TIME: i64 = 1_500_000_000;
const TIMEOUT: Duration = Duration::from_secs(20);
/// Output beyond this is drained but not kept.
const OUTPUT_CAP: usize = 4 << 20;
/// How much of each output a failure report shows.
const SHOW_BYTES: usize = 1500;
const SHOW_LINES: usize = 30;
/// Lines shown before the first difference.
const CONTEXT_LINES: usize = 3;
/// Files of a case directory that control the test and are not copied.
const CONTROL_FILES: &[&str] = &[
    "setup",
    "args",
    "dates",
    "env",
    "expect",
    "expected.out",
    "expected.err",
    "parallel",
    "nostderr",
    "needs",
];

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("mk")
}

/// One case of the corpus and what its control files ask for.
struct Case {
    name: String,
    dir: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Paths and their offsets from BASE_TIME in nanoseconds.
    dates: Vec<(String, i128)>,
    /// Run `setup` with /bin/sh rather than rc.
    setup_sh: bool,
    has_setup: bool,
    parallel: bool,
    stderr: bool,
    needs: Vec<String>,
    /// For `expect` cases: the reason, the expected status if given.
    expect: Option<Expect>,
}

struct Expect {
    why: String,
    status: Option<i32>,
    out: PathBuf,
    err: Option<PathBuf>,
}

fn read_text(p: &Path) -> String {
    let b = std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()));
    String::from_utf8_lossy(&b).into_owned()
}

/// Read every `tests/mk/NNN-*/`, sorted by name. Problems with the control files are
/// returned as failures rather than panicking, so one run shows all of them.
fn load_corpus(failures: &mut Vec<String>) -> Vec<Case> {
    let dir = corpus_dir();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no cases in {}", dir.display());
    let mut numbers: BTreeMap<String, String> = BTreeMap::new();
    let mut cases = Vec::new();
    for d in dirs {
        let name = d.file_name().unwrap().to_string_lossy().into_owned();
        let num = name.split('-').next().unwrap_or("").to_owned();
        if num.len() != 3 || !num.bytes().all(|c| c.is_ascii_digit()) {
            failures.push(format!("{name}: not named NNN-topic"));
        } else if let Some(first) = numbers.insert(num, name.clone()) {
            failures.push(format!("{name}: same number as {first}"));
        }
        if !d.join("mkfile").is_file() {
            failures.push(format!("{name}: no mkfile"));
            continue;
        }
        cases.push(parse_case(&name, &d, failures));
    }
    cases
}

fn parse_case(name: &str, dir: &Path, failures: &mut Vec<String>) -> Case {
    let mut c = Case {
        name: name.to_owned(),
        dir: dir.to_path_buf(),
        args: Vec::new(),
        env: Vec::new(),
        dates: Vec::new(),
        setup_sh: false,
        has_setup: false,
        parallel: dir.join("parallel").exists(),
        stderr: !dir.join("nostderr").exists(),
        needs: Vec::new(),
        expect: None,
    };
    let args = dir.join("args");
    if args.is_file() {
        c.args = read_text(&args)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
    }
    let env = dir.join("env");
    if env.is_file() {
        for line in read_text(&env).lines().filter(|l| !l.trim().is_empty()) {
            match line.split_once('=') {
                Some((k, v)) if !k.is_empty() => c.env.push((k.to_owned(), v.to_owned())),
                _ => failures.push(format!("{name}: env: bad line {line:?}")),
            }
        }
    }
    let dates = dir.join("dates");
    if dates.is_file() {
        for line in read_text(&dates).lines().filter(|l| !l.trim().is_empty()) {
            let mut w = line.split_whitespace();
            match (w.next(), w.next().and_then(parse_offset), w.next()) {
                (Some(f), Some(off), None) if !f.starts_with('/') && !f.contains("..") => {
                    c.dates.push((f.to_owned(), off))
                }
                _ => failures.push(format!("{name}: dates: bad line {line:?}")),
            }
        }
    }
    let setup = dir.join("setup");
    if setup.is_file() {
        c.has_setup = true;
        c.setup_sh = read_text(&setup)
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("#!") && l.ends_with("/sh"));
    }
    let needs = dir.join("needs");
    if needs.is_file() {
        c.needs = read_text(&needs)
            .split_whitespace()
            .map(str::to_owned)
            .collect();
    }
    let expect = dir.join("expect");
    if expect.is_file() {
        let text = read_text(&expect);
        let mut why = String::new();
        let mut status = None;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("#why:") {
                why = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("#status:") {
                match v.trim().parse() {
                    Ok(n) => status = Some(n),
                    Err(_) => failures.push(format!("{name}: expect: bad #status line")),
                }
            }
        }
        if why.is_empty() {
            failures.push(format!("{name}: expect without a #why: line"));
        }
        let out = dir.join("expected.out");
        if !out.is_file() {
            failures.push(format!("{name}: expect without expected.out"));
        }
        let err = dir.join("expected.err");
        c.expect = Some(Expect {
            why,
            status,
            out,
            err: err.is_file().then_some(err),
        });
    }
    for f in std::fs::read_dir(dir).expect("read case dir") {
        let f = f.expect("dir entry").file_name();
        let f = f.to_string_lossy();
        if (f == "expected.out" || f == "expected.err") && c.expect.is_none() {
            failures.push(format!("{name}: {f} without an expect file"));
        }
    }
    c
}

/// Cases with identical files test the same thing twice.
fn check_duplicates(cases: &[Case], failures: &mut Vec<String>) {
    let mut seen: BTreeMap<Vec<u8>, &str> = BTreeMap::new();
    for c in cases {
        let mut key = Vec::new();
        for (name, entry) in snapshot(&c.dir) {
            key.extend_from_slice(name.as_bytes());
            key.push(0);
            if let Entry::File(b) = entry {
                key.extend_from_slice(&b);
            }
            key.push(0);
        }
        if let Some(first) = seen.insert(key, &c.name) {
            failures.push(format!("{}: identical to {first}", c.name));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    Exit(i32),
    Signal(i32),
    TimedOut,
}

#[derive(PartialEq, Eq, Debug)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

struct Run {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    outcome: Outcome,
    files: BTreeMap<String, Entry>,
    /// A problem running the case itself (setup failed, say), not a difference.
    trouble: Option<String>,
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

/// Run a command in its own process group with the time limit; returns stdout,
/// stderr and how it ended. On timeout the whole group is killed.
fn run_limited(mut cmd: Command) -> (Vec<u8>, Vec<u8>, Outcome) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
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
    (stdout, stderr, outcome)
}

/// Copy a case directory (without its control files) into `to`.
fn copy_case(from: &Path, to: &Path, top: bool) {
    for e in std::fs::read_dir(from).expect("read case dir") {
        let e = e.expect("dir entry");
        let name = e.file_name();
        if top
            && CONTROL_FILES
                .iter()
                .any(|c| name.as_bytes() == c.as_bytes())
        {
            continue;
        }
        let src = e.path();
        let dst = to.join(&name);
        let ft = e.file_type().expect("file type");
        if ft.is_dir() {
            std::fs::create_dir(&dst).expect("mkdir");
            copy_case(&src, &dst, false);
        } else if ft.is_symlink() {
            let t = std::fs::read_link(&src).expect("readlink");
            std::os::unix::fs::symlink(t, &dst).expect("symlink");
        } else {
            std::fs::copy(&src, &dst).expect("copy");
        }
    }
}

/// A `dates` offset, seconds with up to nine decimals (`-5`, `7.25`), in nanoseconds.
fn parse_offset(s: &str) -> Option<i128> {
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = |d: &str| d.bytes().all(|c| c.is_ascii_digit());
    if whole.is_empty() || !ok(whole) || !ok(frac) || frac.len() > 9 {
        return None;
    }
    let whole: i128 = whole.parse().ok()?;
    let frac: i128 = format!("{frac:0<9}").parse().ok()?;
    let n = whole * 1_000_000_000 + frac;
    Some(if neg { -n } else { n })
}

/// Set a file's access and modification times to `nanos` after the epoch.
fn set_mtime(p: &Path, nanos: i128) -> std::io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path with NUL");
    let t = libc::timespec {
        tv_sec: nanos.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: nanos.rem_euclid(1_000_000_000) as libc::c_long,
    };
    let times = [t, t];
    // SAFETY: a valid NUL-terminated path and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The names, kinds and contents of everything under `dir` (not times or modes).
fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    fn walk(dir: &Path, prefix: &str, into: &mut BTreeMap<String, Entry>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                into.insert(format!("{name}/"), Entry::Dir);
                walk(&e.path(), &format!("{name}/"), into);
            } else if ft.is_symlink() {
                let t = std::fs::read_link(e.path()).unwrap_or_default();
                into.insert(name, Entry::Link(t));
            } else {
                let b = std::fs::read(e.path()).unwrap_or_default();
                into.insert(name, Entry::File(b));
            }
        }
    }
    let mut m = BTreeMap::new();
    walk(dir, "", &mut m);
    m
}

fn environment(c: &Case, root: &Path, cmd: &mut Command) {
    cmd.env_clear()
        .env(
            "PATH",
            format!(
                "{}:/usr/local/bin:/usr/bin:/bin",
                root.join("bin").display()
            ),
        )
        .env("HOME", root.join("home"))
        .env("TZ", "UTC")
        .env("LC_ALL", "C");
    for (k, v) in &c.env {
        cmd.env(k, v);
    }
}

/// Run one case under one mk, in a fresh directory. Returns the run and the
/// temporary root (for normalising the outputs).
fn run(mk: &str, c: &Case) -> (Run, String) {
    let root = tempfile::Builder::new()
        .prefix("mk-diff.")
        .tempdir()
        .expect("tempdir");
    let work = root.path().join("work");
    let home = root.path().join("home");
    let bin = root.path().join("bin");
    for d in [&work, &home, &bin] {
        std::fs::create_dir(d).expect("mkdir");
    }
    std::os::unix::fs::symlink(OUR_RC, bin.join("rc")).expect("symlink rc");
    std::os::unix::fs::symlink(mk, bin.join("mk")).expect("symlink mk");
    copy_case(&c.dir, &work, true);
    let root_name = root.path().display().to_string();
    let mut trouble = None;
    if c.has_setup {
        let shell = if c.setup_sh { "/bin/sh" } else { OUR_RC };
        let mut cmd = Command::new(shell);
        cmd.arg(c.dir.join("setup")).current_dir(&work);
        environment(c, root.path(), &mut cmd);
        cmd.env("BASE", BASE_TIME.to_string());
        let (out, err, outcome) = run_limited(cmd);
        if outcome != Outcome::Exit(0) {
            trouble = Some(format!(
                "setup: {}\n   stdout:\n{}   stderr:\n{}",
                outcome_text(outcome),
                show(&out, 1),
                show(&err, 1)
            ));
        }
    }
    for (f, off) in &c.dates {
        let p = work.join(f);
        if !p.exists() {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).expect("mkdir for dates");
            }
            std::fs::write(&p, b"").expect("create for dates");
        }
        if let Err(e) = set_mtime(&p, i128::from(BASE_TIME) * 1_000_000_000 + off) {
            trouble = Some(format!("dates: {f}: {e}"));
        }
    }
    if let Some(t) = trouble {
        let run = Run {
            stdout: Vec::new(),
            stderr: Vec::new(),
            outcome: Outcome::Exit(-1),
            files: BTreeMap::new(),
            trouble: Some(t),
        };
        return (run, root_name);
    }
    let mut cmd = Command::new(mk);
    cmd.arg0("mk").args(&c.args).current_dir(&work);
    environment(c, root.path(), &mut cmd);
    let (stdout, stderr, outcome) = run_limited(cmd);
    let files = snapshot(&work);
    (
        Run {
            stdout,
            stderr,
            outcome,
            files,
            trouble: None,
        },
        root_name,
    )
}

/// Replace the run's temporary directory by `$TMP` and the name of the temporary
/// file mk writes command-line assignments to by `/tmp/mkargXXXXXX`; for parallel
/// cases, sort the lines.
fn normalise(out: &[u8], root: &str, parallel: bool) -> Vec<u8> {
    let s = String::from_utf8_lossy(out).replace(root, "$TMP");
    let mut t = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(i) = rest.find("/tmp/mkarg") {
        let (head, tail) = rest.split_at(i + "/tmp/mkarg".len());
        t.push_str(head);
        let n = tail
            .bytes()
            .take(6)
            .take_while(u8::is_ascii_alphanumeric)
            .count();
        t.push_str(&"X".repeat(n));
        rest = &tail[n..];
    }
    t.push_str(rest);
    if parallel {
        let mut lines: Vec<&str> = t.split_inclusive('\n').collect();
        lines.sort_unstable();
        let mut sorted = lines.concat();
        if !sorted.is_empty() && !sorted.ends_with('\n') {
            sorted.push('\n');
        }
        return sorted.into_bytes();
    }
    t.into_bytes()
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

fn entry_text(e: Option<&Entry>) -> String {
    match e {
        None => "missing".to_owned(),
        Some(Entry::Dir) => "a directory".to_owned(),
        Some(Entry::Link(t)) => format!("a link to {}", t.display()),
        Some(Entry::File(b)) => {
            let mut s = format!("{} byte(s)", b.len());
            if b.len() <= 200 {
                let _ = write!(s, " {:?}", String::from_utf8_lossy(b));
            }
            s
        }
    }
}

/// The differences between two final states of the working directory.
fn describe_files(ours: &BTreeMap<String, Entry>, reference: &BTreeMap<String, Entry>) -> String {
    let mut s = String::new();
    let names: std::collections::BTreeSet<&String> = ours.keys().chain(reference.keys()).collect();
    for n in names {
        let (a, b) = (ours.get(n), reference.get(n));
        if a != b {
            let _ = writeln!(
                s,
                "    {n}: ours {}, 9base {}",
                entry_text(a),
                entry_text(b)
            );
        }
    }
    format!("  final files differ:\n{s}")
}

/// Run `f` over every case on a few threads; results come back in case order.
fn par_map<T: Send>(cases: &[&Case], f: impl Fn(&Case) -> T + Sync) -> Vec<T> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 8);
    let next = AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<T>>> =
        cases.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(c) = cases.get(i) else { break };
                    let r = f(c);
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
        "{title}: {} problem(s) in {total} case(s)\n\n",
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

fn require_peers() -> bool {
    std::env::var("NINESPACE_REQUIRE_PEERS").as_deref() == Ok("1")
}

/// Whether 9base is there to compare with; fails instead of skipping when
/// NINESPACE_REQUIRE_PEERS=1.
fn have_reference() -> bool {
    if Path::new(REFERENCE).is_file() {
        return true;
    }
    if require_peers() {
        panic!("{REFERENCE} is missing and NINESPACE_REQUIRE_PEERS=1 (apt-get install 9base)");
    }
    eprintln!(
        "notice: {REFERENCE} is missing (Debian package 9base): mk differential tests skipped"
    );
    false
}

/// Whether the programs a case needs are installed; a notice (or, with
/// NINESPACE_REQUIRE_PEERS=1, a failure) for each one that is not.
fn have_needs(c: &Case, failures: &mut Vec<String>) -> bool {
    let mut ok = true;
    for prog in &c.needs {
        let found = ["/usr/local/bin", "/usr/bin", "/bin"]
            .iter()
            .any(|d| Path::new(d).join(prog).is_file());
        if !found {
            ok = false;
            if require_peers() {
                failures.push(format!(
                    "{}: needs {prog}, which is not installed (NINESPACE_REQUIRE_PEERS=1)",
                    c.name
                ));
            } else {
                eprintln!("notice: {}: skipped, {prog} is not installed", c.name);
            }
        }
    }
    ok
}

/// Compare one run of ours with 9base's; the differences, if any.
fn compare(c: &Case, ours: &(Run, String), reference: &(Run, String)) -> Vec<String> {
    let ((ours, our_root), (reference, ref_root)) = (ours, reference);
    let mut diffs = Vec::new();
    for (who, r) in [("ours", ours), ("9base", reference)] {
        if let Some(t) = &r.trouble {
            diffs.push(format!("  {who}: {t}\n"));
        }
    }
    if !diffs.is_empty() {
        return diffs;
    }
    if ours.outcome != reference.outcome {
        diffs.push(format!(
            "  status differs: ours {}, 9base {}\n",
            outcome_text(ours.outcome),
            outcome_text(reference.outcome)
        ));
    }
    let a = normalise(&ours.stdout, our_root, c.parallel);
    let b = normalise(&reference.stdout, ref_root, c.parallel);
    if a != b {
        diffs.push(describe("stdout", &a, &b, "9base"));
    }
    if c.stderr {
        let a = normalise(&ours.stderr, our_root, c.parallel);
        let b = normalise(&reference.stderr, ref_root, c.parallel);
        if a != b {
            diffs.push(describe("stderr", &a, &b, "9base"));
        }
    }
    if ours.files != reference.files {
        diffs.push(describe_files(&ours.files, &reference.files));
    }
    diffs
}

#[test]
fn mk_matches_9base() {
    if !have_reference() {
        return;
    }
    let mut failures = Vec::new();
    let cases = load_corpus(&mut failures);
    check_duplicates(&cases, &mut failures);
    let runnable: Vec<&Case> = cases
        .iter()
        .filter(|c| have_needs(c, &mut failures))
        .collect();
    let results = par_map(&runnable, |c| {
        let reference = run(REFERENCE, c);
        let ours = c.expect.is_none().then(|| run(OURS, c));
        (reference, ours)
    });
    for (c, (reference, ours)) in runnable.iter().zip(results) {
        if reference.0.outcome == Outcome::TimedOut {
            failures.push(format!(
                "{}: 9base {}",
                c.name,
                outcome_text(reference.0.outcome)
            ));
        }
        if let Some(t) = &reference.0.trouble {
            failures.push(format!("{}: 9base run: {t}", c.name));
            continue;
        }
        if let Some(e) = &c.expect {
            // Compared with expected.out by mk_expected_outputs; here only check
            // that the expect is needed at all.
            if let Ok(want) = std::fs::read(&e.out) {
                let got = normalise(&reference.0.stdout, &reference.1, c.parallel);
                if want.is_empty() && e.err.is_none() {
                    failures.push(format!("{}: expected.out is empty", c.name));
                } else if want == got
                    && e.err.as_ref().is_none_or(|ef| {
                        std::fs::read(ef).is_ok_and(|w| {
                            w == normalise(&reference.0.stderr, &reference.1, c.parallel)
                        })
                    })
                {
                    failures.push(format!(
                        "{}: 9base already prints what expected.out (and expected.err) hold; drop the expect",
                        c.name
                    ));
                }
            }
            continue;
        }
        if reference.0.stdout.is_empty() && reference.0.stderr.is_empty() {
            failures.push(format!(
                "{}: prints nothing under 9base, so it shows little",
                c.name
            ));
        }
        let Some(ours) = ours else { continue };
        let diffs = compare(c, &ours, &reference);
        if !diffs.is_empty() {
            let mut f = format!("{}:\n", c.name);
            for d in diffs {
                f.push_str(&d);
            }
            if !c.stderr && !ours.0.stderr.is_empty() {
                let _ = write!(f, "   ours wrote on stderr:\n{}", show(&ours.0.stderr, 1));
            }
            failures.push(f);
        }
    }
    finish("mk differs from 9base mk", runnable.len(), failures);
}

#[test]
fn mk_expected_outputs() {
    let mut failures = Vec::new();
    let cases = load_corpus(&mut failures);
    let expecting: Vec<&Case> = cases
        .iter()
        .filter(|c| c.expect.is_some() && have_needs(c, &mut failures))
        .collect();
    let results = par_map(&expecting, |c| run(OURS, c));
    for (c, (ours, root)) in expecting.iter().zip(results) {
        let e = c.expect.as_ref().expect("expect");
        let mut f = String::new();
        if let Some(t) = &ours.trouble {
            let _ = writeln!(f, "  {t}");
        }
        if let Some(want) = e.status {
            if ours.outcome != Outcome::Exit(want) {
                let _ = writeln!(
                    f,
                    "  status: ours {}, expected exit {want}",
                    outcome_text(ours.outcome)
                );
            }
        } else if ours.outcome == Outcome::TimedOut {
            let _ = writeln!(f, "  {}", outcome_text(ours.outcome));
        }
        let pairs = [
            (Some(&e.out), &ours.stdout, "stdout"),
            (e.err.as_ref(), &ours.stderr, "stderr"),
        ];
        for (file, got, what) in pairs {
            let Some(file) = file else { continue };
            let Ok(want) = std::fs::read(file) else {
                continue; // reported by load_corpus
            };
            let got = normalise(got, &root, c.parallel);
            if got != want {
                f.push_str(&describe(
                    what,
                    &got,
                    &want,
                    &format!("expected ({})", file.file_name().unwrap().to_string_lossy()),
                ));
            }
        }
        if !f.is_empty() {
            let mut head = format!("{} (not compared with 9base: {}):\n", c.name, e.why);
            head.push_str(&f);
            if e.err.is_none() && !ours.stderr.is_empty() {
                let _ = write!(head, "   ours wrote on stderr:\n{}", show(&ours.stderr, 1));
            }
            failures.push(head);
        }
    }
    finish(
        "mk differs from the expected outputs",
        expecting.len(),
        failures,
    );
}

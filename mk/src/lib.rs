//! mk: Plan 9's build tool, as mk(1) and "Maintaining Files on Plan 9 with Mk"
//! describe it and plan9port ships it.
//!
//! - [`lex`], [`word`], [`parse`]: reading mkfiles into variables and rules;
//! - [`graph`]: the dependency graph, with metarules applied;
//! - [`make`]: what is out of date; [`run`]: running recipes, `$NPROC` at a time;
//! - [`archive`]: dates of `lib.a(member)` targets;
//! - [`shell`]: rc's and sh's quoting, which mkfiles follow.

pub mod archive;
pub mod graph;
pub mod lex;
pub mod make;
pub mod parse;
pub mod run;
pub mod shell;
pub mod word;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::collections::VecDeque;
use std::io::Write;
use std::rc::Rc;

/// An error that has been reported already: mk stops (or, under -k, goes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

pub type R<T> = Result<T, Failed>;

pub type NodeId = usize;
pub type RuleId = usize;

/// A rule's attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    /// D: delete the target if the recipe fails.
    pub d: bool,
    /// E: run the recipe without -e.
    pub e: bool,
    /// n: a metarule that matches no virtual target.
    pub n: bool,
    /// N: no recipe needed.
    pub nn: bool,
    /// Q: do not echo the recipe.
    pub q: bool,
    /// R: the target is a regular expression.
    pub r: bool,
    /// U: targets count as updated (for assignments: not exported).
    pub u: bool,
    /// V: virtual targets.
    pub v: bool,
    /// A metarule (`%`, `&` or R).
    pub meta: bool,
}

impl Attr {
    pub fn is_empty(&self) -> bool {
        *self == Attr::default()
    }
}

pub struct Rule {
    pub target: String,
    pub tail: Vec<String>,
    pub recipe: Rc<String>,
    pub line: u32,
    pub file: Rc<String>,
    pub attr: Attr,
    /// All the targets of the line the rule came from.
    pub all: Rc<Vec<String>>,
    pub prog: Option<String>,
    pub shell: shell::Shell,
    pub regex: Option<regex::Regex>,
    /// Number, for counting uses in a chain.
    pub id: usize,
}

/// A recipe to run.
pub struct Job {
    pub rule: RuleId,
    pub nodes: Vec<NodeId>,
    pub stem: String,
    pub matches: Vec<Option<String>>,
    pub prereq: Vec<String>,
    pub newprereq: Vec<String>,
    pub targets: Vec<String>,
    pub alltargets: Vec<String>,
}

/// All of mk's state.
#[derive(Default)]
pub struct Mk {
    pub vars: HashMap<String, Vec<String>>,
    /// Variables assigned in mkfiles or on the command line (echoed recipes show them).
    pub weset: HashSet<String>,
    pub noexport: HashSet<String>,
    pub overridden: HashSet<String>,
    pub shell: shell::Shell,
    pub file: String,
    pub line: u32,
    pub rules: Vec<Rule>,
    pub by_target: HashMap<String, Vec<RuleId>>,
    pub metarules: Vec<RuleId>,
    pub nrules: usize,
    pub target1: Option<Vec<String>>,
    pub nodes: Vec<graph::Node>,
    pub node_of: HashMap<String, NodeId>,
    pub times: HashMap<String, i128>,
    pub agg: HashMap<String, i128>,
    pub bitched: HashSet<String>,
    pub outofdate_cache: HashMap<String, bool>,
    pub jobs: VecDeque<Job>,
    pub slots: Vec<Option<run::Running>>,
    pub nproclimit: usize,
    pub nreps: u32,
    pub runerrs: u32,
    pub aflag: bool,
    pub iflag: bool,
    pub kflag: bool,
    pub nflag: bool,
    pub tflag: bool,
    pub explain: bool,
    /// An error that stops mk was found: a rule with a bad regular expression, or
    /// an archive name whose file is not an archive.
    pub fatal: bool,
    /// mk's buffered standard output (plan9port's `bout`).
    pub bout: String,
    /// The shell each mkfile starts with, if not sh (`FORCERCFORMK`).
    pub default_shell: Option<shell::Shell>,
    /// `-dp`: show what was read.
    pub dparse: bool,
    /// `-dg`: show each graph; `-de`: show jobs as they start and end.
    pub dgraph: bool,
    pub dexec: bool,
    /// `-u`: seconds spent with each number of jobs running, and when last counted.
    pub tslot: Vec<i64>,
    pub tick: i64,
    /// mk's variables as environment strings, for the shell kind they were made for.
    pub env_cache: Option<(shell::Kind, Vec<std::ffi::CString>)>,
    /// Commands found in `$PATH`.
    pub path_cache: HashMap<String, std::path::PathBuf>,
}

impl Default for shell::Shell {
    fn default() -> Self {
        shell::Shell::default_sh()
    }
}

impl Mk {
    /// Print a syntax error: `mk: file:line: syntax error; msg`. `line` -1: the
    /// current line.
    pub fn synerr(&mut self, line: impl Into<i64>, msg: &str) {
        let l: i64 = line.into();
        let l = if l == -1 { self.line as i64 } else { l };
        self.flush();
        eprintln!("mk: {}:{}: syntax error; {msg}", self.file, l);
    }

    pub fn synerr_(&mut self, line: i64, msg: &str) {
        self.synerr(line, msg);
    }

    pub fn err(&mut self, msg: &str) -> R<()> {
        self.flush();
        eprintln!("{msg}");
        Err(Failed)
    }

    /// `-u` accounting: the time since the last count goes to the number of jobs
    /// running then (whole seconds, as plan9port counts).
    pub fn usage(&mut self) {
        let t = run::now() as i64 / 1_000_000_000;
        let n = self.running();
        if self.tslot.len() <= n {
            self.tslot.resize(n + 1, 0);
        }
        if self.tick != 0 {
            self.tslot[n] += t - self.tick;
        }
        self.tick = t;
    }

    /// Buffered standard output, as plan9port's `Bprint(&bout, ...)`.
    pub fn bprint(&mut self, s: &str) {
        self.bout.push_str(s);
    }

    /// Unbuffered standard output (plan9port's `fprint(1, ...)`).
    pub fn fprint1(&mut self, s: &str) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(s.as_bytes());
        let _ = o.flush();
    }

    pub fn flush(&mut self) {
        if !self.bout.is_empty() {
            let mut o = std::io::stdout().lock();
            let _ = o.write_all(self.bout.as_bytes());
            let _ = o.flush();
            self.bout.clear();
        }
    }

    /// The date of a file (nanoseconds; 0 if missing), cached unless `force`.
    pub fn timeof(&mut self, name: &str, force: bool) -> i128 {
        if name.contains('(') {
            return self.atimeof(force, name).unwrap_or(0);
        }
        if force {
            return mtime(name);
        }
        if let Some(&t) = self.times.get(name) {
            return t;
        }
        let t = mtime(name);
        if t != 0 {
            self.times.insert(name.to_string(), t);
        }
        t
    }
}

/// A file's modification time in nanoseconds, 0 if it does not exist.
pub fn mtime(name: &str) -> i128 {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(name) {
        Ok(m) => {
            let t = m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128;
            t.max(1)
        }
        Err(_) => 0,
    }
}

pub fn ioerr(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

const USAGE: &str = "Usage: mk [-f file] [-n] [-a] [-e] [-t] [-k] [-i] [-d[egp]] [targets ...]";

/// What `mk --help` prints.
pub const USAGE_LONG: &str = "\
usage: mk [-f mkfile]... [-aeiknstu] [-d[egp]] [-w file,...]... [var=value]... [target...]

Plan 9's build tool: make the targets (by default those of the first rule that is
not a metarule) from the rules in ./mkfile (or the -f files).

  -a  everything is out of date         -k  go on after errors where possible
  -e  explain why each target is made   -n  print recipes, run nothing
  -f  read this mkfile (may repeat)     -s  make the command-line targets one by one
  -i  make missing intermediate files   -t  touch targets instead of running recipes
  -u  print time spent per job slot     -w  pretend these files were just modified
  -d[egp]  debugging output

See mk(1) and docs/mk.md.
";

/// mk's main: returns the exit code.
pub fn main(argv: Vec<String>) -> i32 {
    let mut mk = Mk::new();
    match mk.main(argv) {
        Ok(()) => {
            mk.flush();
            0
        }
        Err(Failed) => {
            mk.flush();
            mk.killall();
            1
        }
    }
}

impl Mk {
    /// Wait for what is still running, as plan9port's `Exit` does.
    fn killall(&mut self) {
        loop {
            let mut st = 0;
            // SAFETY: waitpid with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
            if pid < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
        }
        self.slots.iter_mut().for_each(|s| *s = None);
    }

    /// A fresh mk, as the command starts it (for using the parts as a library).
    pub fn new() -> Mk {
        Mk {
            nproclimit: 1,
            nreps: 1,
            line: 0,
            file: "<nil>".to_string(),
            ..Default::default()
        }
    }

    fn main(&mut self, argv: Vec<String>) -> R<()> {
        let mut flags = String::new();
        let mut files: Vec<String> = Vec::new();
        let mut whatif: Vec<String> = Vec::new();
        let mut sflag = false;
        let mut uflag = false;
        let mut i = 1;
        while i < argv.len() && argv[i].starts_with('-') {
            let a = argv[i].clone();
            flags.push_str(&a);
            flags.push(' ');
            match a.chars().nth(1) {
                Some('a') => self.aflag = true,
                Some('d') => {
                    let all = a.len() == 2;
                    self.dparse |= all || a[2..].contains('p');
                    self.dgraph |= all || a[2..].contains('g');
                    self.dexec |= all || a[2..].contains('e');
                }
                Some('e') => self.explain = true,
                Some('f') => {
                    i += 1;
                    let Some(f) = argv.get(i) else {
                        eprintln!("{USAGE}");
                        return Err(Failed);
                    };
                    files.push(f.clone());
                    flags.push_str(f);
                    flags.push(' ');
                }
                Some('i') => self.iflag = true,
                Some('k') => self.kflag = true,
                Some('n') => self.nflag = true,
                Some('s') => sflag = true,
                Some('t') => self.tflag = true,
                Some('u') => uflag = true,
                Some('w') => {
                    if a.len() > 2 {
                        whatif.push(a[2..].to_string());
                    } else {
                        i += 1;
                        let Some(w) = argv.get(i) else {
                            eprintln!("{USAGE}");
                            return Err(Failed);
                        };
                        whatif.push(w.clone());
                    }
                }
                _ => {
                    eprintln!("{USAGE}");
                    return Err(Failed);
                }
            }
            i += 1;
        }
        if self.aflag {
            self.iflag = true;
        }
        self.usage();
        self.shell = shell::Shell::default_sh();
        // plan9port: FORCERCFORMK in the environment makes rc the default shell.
        if std::env::var_os("FORCERCFORMK").is_some() {
            self.default_shell = Some(shell::Shell {
                kind: shell::Kind::Rc,
                cmd: vec!["rc".to_string()],
            });
            self.shell = self.default_shell.clone().unwrap_or_default();
        }
        self.vars.insert("MKSHELL".into(), self.shell.cmd.clone());
        // The environment, each variable one word.
        for (k, v) in std::env::vars_os() {
            let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) else {
                continue;
            };
            if run::INTERNAL.contains(&k.as_str()) {
                continue;
            }
            self.vars.insert(k, vec![v]);
        }
        let mut rest: Vec<String> = argv[i..].to_vec();
        // Command-line assignments, read like an mkfile.
        let mut assigns = String::new();
        for a in rest.iter_mut() {
            if a.contains('=') {
                flags.push_str(a);
                flags.push(' ');
                assigns.push_str(a);
                assigns.push('\n');
                a.clear();
            }
        }
        if !assigns.is_empty() {
            self.parse("command line args", &assigns, true)?;
        }
        if flags.ends_with(' ') {
            flags.pop();
        }
        // As in plan9port, these are read as words (with $ substitution).
        let f = self
            .stow(&flags)
            .unwrap_or_else(|Failed| self.stow_plain(&flags));
        self.vars.insert("MKFLAGS".into(), f);
        let targets: Vec<String> = rest.into_iter().filter(|a| !a.is_empty()).collect();
        let a = targets.join(" ");
        let a = self.stow(&a).unwrap_or_else(|Failed| self.stow_plain(&a));
        self.vars.insert("MKARGS".into(), a);
        if files.is_empty() {
            if let Ok(b) = std::fs::read("mkfile") {
                let t = String::from_utf8_lossy(&b).into_owned();
                self.parse("mkfile", &t, false)?;
            }
        } else {
            for f in &files {
                match std::fs::read(f) {
                    Ok(b) => {
                        let t = String::from_utf8_lossy(&b).into_owned();
                        self.parse(f, &t, false)?;
                    }
                    Err(e) => {
                        eprintln!("open {f}: {}", ioerr(&e));
                        return Err(Failed);
                    }
                }
            }
        }
        if self.fatal {
            return Err(Failed);
        }
        if self.dparse {
            self.dump();
        }
        let now = run::now();
        for w in &whatif {
            for name in w.split([' ', ',', '\n']).filter(|s| !s.is_empty()) {
                self.times.insert(name.to_string(), now);
            }
        }
        catch_notes();
        if targets.is_empty() {
            match self.target1.clone() {
                Some(t) => {
                    for w in t {
                        self.mk(&w)?;
                    }
                }
                None => {
                    eprintln!("mk: nothing to mk");
                    return Err(Failed);
                }
            }
        } else if sflag || targets.len() == 1 {
            for t in &targets {
                self.mk(t)?;
            }
        } else {
            let head = "command line arguments".to_string();
            let all = Rc::new(vec![head.clone()]);
            let attr = Attr {
                v: true,
                ..Attr::default()
            };
            let id = self.rules.len();
            self.rules.push(Rule {
                target: head.clone(),
                tail: targets.clone(),
                recipe: Rc::new(String::new()),
                line: self.line,
                file: Rc::new(self.file.clone()),
                attr,
                all,
                prog: None,
                shell: self.shell.clone(),
                regex: None,
                id: self.nrules,
            });
            self.nrules += 1;
            self.by_target
                .entry(head.clone())
                .or_default()
                .insert(0, id);
            self.mk(&head)?;
        }
        if uflag {
            self.usage();
            self.flush();
            for s in 0..=self.slots.len() {
                println!("{s}: {}", self.tslot.get(s).copied().unwrap_or(0));
            }
        }
        Ok(())
    }

    /// `-dp`: the default targets, the rules and the variables.
    fn dump(&mut self) {
        let mut out = String::from("default targets");
        for w in self.target1.clone().unwrap_or_default() {
            out.push_str(&format!(" '{w}'"));
        }
        out.push('\n');
        for (title, meta) in [("rules", false), ("metarules", true)] {
            out.push_str(&format!("{title}:\n"));
            for r in self.rules.iter().filter(|r| r.attr.meta == meta) {
                out.push_str(&format!(
                    "\t{}:{}: {}: {}\n",
                    r.file,
                    r.line,
                    r.target,
                    r.tail.join(" ")
                ));
                out.push_str(&format!("\trecipe='{}'\n", r.recipe));
            }
        }
        out.push_str("variables:\n");
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        for n in names {
            out.push_str(&format!("\t{n}="));
            for w in &self.vars[n] {
                out.push_str(&format!("'{w}'"));
            }
            out.push('\n');
        }
        self.bprint(&out);
    }

    /// Words of plain text (split at blanks, nothing substituted).
    fn stow_plain(&self, s: &str) -> Vec<String> {
        let v: Vec<String> = s
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .map(str::to_string)
            .collect();
        if v.is_empty() { vec![String::new()] } else { v }
    }
}

/// The signal that arrived (0: none); see [`catch_notes`].
pub static NOTE: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn on_note(sig: libc::c_int) {
    use std::sync::atomic::Ordering::SeqCst;
    if NOTE.compare_exchange(0, sig, SeqCst, SeqCst).is_ok() {
        // mk looks at NOTE when a wait is interrupted, and before it waits; a note
        // that lands between that look and the wait would go unseen until a recipe
        // ends. So one more signal, an alarm a second later, interrupts that wait
        // (the first note's name is kept). alarm(2) is async-signal-safe.
        // SAFETY: alarm takes a number and touches no memory of ours.
        unsafe { libc::alarm(1) };
    }
}

/// As plan9port's mk: an alarm, a floating-point trap, a write on a closed pipe or
/// an illegal instruction stops mk, which first stops the recipes it started
/// ([`Mk::killchildren`]). An interrupt from the terminal reaches the recipes too,
/// and ends mk by default.
fn catch_notes() {
    for sig in [libc::SIGALRM, libc::SIGFPE, libc::SIGPIPE, libc::SIGILL] {
        // SAFETY: installing a handler that only stores to an atomic; no SA_RESTART,
        // so a waiting mk wakes up.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_note as extern "C" fn(libc::c_int) as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The message for a signal mk stops on.
fn note_text(sig: i32) -> &'static str {
    match sig {
        libc::SIGALRM => "alarm",
        libc::SIGFPE => "sys: fp: fptrap",
        libc::SIGPIPE => "sys: write on closed pipe",
        _ => "sys: trap: illegal instruction",
    }
}

impl Mk {
    /// A note arrived: stop the recipes, wait for them, say why, and end.
    pub fn killchildren(&mut self) -> ! {
        let sig = NOTE.load(std::sync::atomic::Ordering::SeqCst);
        let msg = note_text(sig);
        for s in self.slots.iter().flatten() {
            // SAFETY: signalling our own children.
            unsafe { libc::kill(s.pid, libc::SIGINT) };
        }
        self.killall();
        self.bprint(&format!("mk: {msg}\n"));
        self.flush();
        std::process::exit(1);
    }
}

//! Running rc programs: expansion of words to lists, commands, pipelines, redirections,
//! functions, and the process work behind them.

use crate::ast::{Cmd, Redir, RedirOp, Word};
use crate::glob;
use crate::lex::{GLOB, RedirKind, unglob};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid};
use rustc_hash::{FxHashMap as HashMap, FxHashSet};
use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// Why running stopped short.
#[derive(Debug)]
pub enum Unwind {
    /// A runtime error (already reported): a script stops, an interactive rc goes back
    /// to its prompt.
    Error,
}

pub type Res = Result<(), Unwind>;

/// How deeply functions and `.` may nest before rc calls it an error (plan9port has no
/// limit, and runs out of memory instead).
pub const MAX_CALL_DEPTH: u32 = 10_000;

/// A function: its body and the text it prints as.
#[derive(Clone, Debug)]
pub struct Func {
    pub body: Rc<Cmd>,
}

/// rc's flags (rc(1)).
#[derive(Default, Clone, Debug)]
pub struct Flags {
    pub e: bool,
    pub i: bool,
    pub l: bool,
    pub x: bool,
    pub v: bool,
    pub s: bool,
    pub p: bool,
    pub r: bool,
    pub big_v: bool,
    pub big_i: bool,
    pub d: bool,
    pub c: bool,
    /// `-n`: parse, but run nothing (scripts and `-c`; rcmain still runs).
    pub n: bool,
    /// Letters set with `flag x +` that rc itself does not use.
    pub other: FxHashSet<char>,
}

/// The shell's state.
pub struct Shell {
    /// Each variable's bindings, innermost last.
    vars: HashMap<String, Vec<Vec<String>>>,
    pub fns: HashMap<String, Func>,
    pub flags: Flags,
    /// argv[0], for messages.
    pub argv0: String,
    pub interactive: bool,
    /// The last `if` found its condition false (for `if not`).
    iflast: bool,
    /// Statuses of children reaped while waiting for others.
    reaped: HashMap<i32, String>,
    /// Background children not yet waited for.
    background: Vec<i32>,
    /// Descriptors opened for `<{}` and the like, closed after the command.
    /// Descriptors of `<{cmd}` pipes: open until the command line (or function
    /// call) that made them ends, as in plan9port.
    pub pipefds: Vec<(OwnedFd, i32)>,
    /// We are a forked child of rc.
    pub in_child: bool,
    /// The next simple command is the last thing this process runs: an external one
    /// replaces the process instead of forking.
    pub tail: bool,
    env_cache: Option<Vec<CString>>,
    /// Depth of `.` files being run (rcmain and profile count).
    pub ndot: u32,
    /// Where the current script text comes from, for messages.
    pub srcname: String,
    /// The interactive front end's view of the shell, refreshed before each command.
    /// Depth of conditions (`if`, `while`, `&&`, `||`, `!`) being run, where `-e` does
    /// not apply.
    pub no_e: u32,
    /// Functions (and `.` files) being run, one inside another.
    pub depth: u32,
    /// After `rfork E`: variables (and `fn#name`s) left out of the environment
    /// until they are set again.
    pub unexported: FxHashSet<String>,
    pub ui: Option<std::rc::Rc<std::cell::RefCell<crate::interactive::UiState>>>,
    /// `sigexit` already ran.
    exiting: bool,
    /// Unique counter for here document files.
    herectr: u32,
}

/// Status strings are true when empty or made only of `0` and `|`.
pub fn truestatus(s: &str) -> bool {
    s.chars().all(|c| c == '0' || c == '|')
}

/// A child's wait status in rc's words.
pub fn status_of(ws: WaitStatus) -> String {
    match ws {
        WaitStatus::Exited(_, 0) => String::new(),
        WaitStatus::Exited(_, n) => n.to_string(),
        WaitStatus::Signaled(_, sig, _) => format!("signal: {}", signame(sig as i32)),
        _ => String::new(),
    }
}

fn signame(s: i32) -> String {
    match s {
        libc::SIGHUP => "hangup".into(),
        libc::SIGINT => "interrupt".into(),
        libc::SIGQUIT => "quit".into(),
        libc::SIGILL => "sys: illegal instruction".into(),
        libc::SIGTRAP => "sys: breakpoint".into(),
        libc::SIGABRT => "sys: abort".into(),
        libc::SIGBUS => "sys: bus error".into(),
        libc::SIGFPE => "sys: fp: exception".into(),
        libc::SIGKILL => "sys: kill".into(),
        libc::SIGUSR1 => "sys: usr1".into(),
        libc::SIGSEGV => "sys: segmentation violation".into(),
        libc::SIGUSR2 => "sys: usr2".into(),
        libc::SIGPIPE => "sys: write on closed pipe".into(),
        libc::SIGALRM => "alarm".into(),
        libc::SIGTERM => "kill".into(),
        n => format!("sys: signal {n}"),
    }
}

/// The exit code for a status string, as plan9port's rc computes it.
pub fn exit_code(s: &str) -> i32 {
    if truestatus(s) {
        return 0;
    }
    let b = s.trim_start().as_bytes();
    let mut i = 0;
    let neg = b.first() == Some(&b'-');
    if neg || b.first() == Some(&b'+') {
        i = 1;
    }
    let mut n: i64 = 0;
    while i < b.len() && b[i].is_ascii_digit() {
        n = (n * 10 + (b[i] - b'0') as i64) % (1 << 32);
        i += 1;
    }
    if neg {
        n = -n;
    }
    if n == 0 { 1 } else { n as i32 }
}

/// An assignment chain with no command at its end.
fn only_assignments(c: &Cmd) -> bool {
    match c {
        Cmd::Assign { body: None, .. } => true,
        Cmd::Assign { body: Some(b), .. } => only_assignments(b),
        _ => false,
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Escape a plain value for inclusion in a marked word.
fn mark_plain(s: &str) -> String {
    if s.contains(GLOB) {
        s.replace(GLOB, "\u{1}\u{1}")
    } else {
        s.to_string()
    }
}

impl Shell {
    pub fn new(argv0: &str) -> Shell {
        Shell {
            vars: HashMap::default(),
            fns: HashMap::default(),
            flags: Flags::default(),
            argv0: argv0.to_string(),
            interactive: false,
            iflast: false,
            reaped: HashMap::default(),
            background: Vec::new(),
            pipefds: Vec::new(),
            in_child: false,
            tail: false,
            env_cache: None,
            ndot: 0,
            srcname: String::new(),
            ui: None,
            no_e: 0,
            depth: 0,
            unexported: FxHashSet::default(),
            exiting: false,
            herectr: 0,
        }
    }

    // ----- messages -----

    /// `rc: msg` (or `rc (argv0): msg` when started under another name).
    pub fn prefix(&self) -> String {
        if self.argv0 == "rc" || self.argv0 == "/bin/rc" || self.argv0 == "-rc" {
            "rc".to_string()
        } else {
            format!("rc ({})", self.argv0)
        }
    }

    pub fn error(&self, msg: &str) {
        let mut e = crate::exec::err();
        let _ = writeln!(e, "{}: {}", self.prefix(), msg);
    }

    /// Report a runtime error and unwind.
    fn fail(&mut self, msg: &str) -> Res {
        self.error(msg);
        self.set_status("error");
        Err(Unwind::Error)
    }

    // ----- variables -----

    /// The value of a variable (empty if unset).
    pub fn get(&self, name: &str) -> &[String] {
        if is_number(name) && name != "0" {
            // $1, $2, ... are elements of $*.
            return self.get_nth(name);
        }
        self.vars
            .get(name)
            .and_then(|v| v.last())
            .map_or(&[], |v| v.as_slice())
    }

    fn get_nth(&self, name: &str) -> &[String] {
        let n: usize = name.parse().unwrap_or(0);
        let all = self
            .vars
            .get("*")
            .and_then(|v| v.last())
            .map_or(&[][..], |v| v.as_slice());
        if n >= 1 && n <= all.len() {
            std::slice::from_ref(&all[n - 1])
        } else {
            &[]
        }
    }

    /// Set the innermost binding of a variable.
    pub fn set(&mut self, name: &str, val: Vec<String>) {
        self.env_cache = None;
        if !self.unexported.is_empty() {
            self.unexported.remove(name);
        }
        self.sync_path(name, &val);
        match self.vars.get_mut(name) {
            Some(stack) if !stack.is_empty() => {
                if let Some(top) = stack.last_mut() {
                    *top = val;
                }
            }
            _ => {
                self.vars.insert(name.to_string(), vec![val]);
            }
        }
    }

    /// `path` and `PATH`, `home` and `HOME` are kept in step, as plan9port does.
    fn sync_path(&mut self, name: &str, val: &[String]) {
        let (other, v): (&str, Vec<String>) = match name {
            "path" => ("PATH", vec![val.join(":")]),
            "PATH" => (
                "path",
                val.first()
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        p.split(':')
                            .map(|s| {
                                if s.is_empty() {
                                    ".".to_string()
                                } else {
                                    s.to_string()
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            ),
            _ => return,
        };
        match self.vars.get_mut(other) {
            Some(stack) if !stack.is_empty() => {
                if let Some(top) = stack.last_mut() {
                    *top = v;
                }
            }
            _ => {
                self.vars.insert(other.to_string(), vec![v]);
            }
        }
    }

    /// Push a local binding.
    pub fn push_local(&mut self, name: &str, val: Vec<String>) {
        self.env_cache = None;
        self.vars.entry(name.to_string()).or_default().push(val);
    }

    pub fn pop_local(&mut self, name: &str) {
        self.env_cache = None;
        if let Some(s) = self.vars.get_mut(name) {
            s.pop();
            if s.is_empty() {
                self.vars.remove(name);
            }
        }
    }

    pub fn var_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .vars
            .iter()
            .filter(|(_, s)| s.last().is_some_and(|x| !x.is_empty()))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// Forget the environment built for children (it is built again when needed).
    pub fn env_cache_clear(&mut self) {
        self.env_cache = None;
    }

    pub fn define_fn(&mut self, name: &str, body: Rc<Cmd>) {
        self.env_cache = None;
        if !self.unexported.is_empty() {
            self.unexported.remove(&format!("fn#{name}"));
        }
        self.fns.insert(name.to_string(), Func { body });
        if !self.in_child {
            if let Some(sig) = crate::note_signal(name) {
                crate::catch(sig);
            }
        }
    }

    pub fn delete_fn(&mut self, name: &str) {
        self.env_cache = None;
        self.fns.remove(name);
        if !self.in_child {
            if let Some(sig) = crate::note_signal(name) {
                crate::uncatch(sig, self.interactive);
            }
        }
    }

    /// If a signal is pending, handle it (see [`Shell::take_trap`]); an error unwinds
    /// the command that was running.
    pub fn check_trap(&mut self) -> Res {
        if crate::TRAP.load(std::sync::atomic::Ordering::Relaxed) != 0 && self.take_trap() {
            return Err(Unwind::Error);
        }
        Ok(())
    }

    /// The environment children get: variables as `name=v1\x01v2`, functions as
    /// `fn#name={body}`, sorted.
    fn environ(&mut self) -> &[CString] {
        if self.env_cache.is_none() {
            let mut out: Vec<(String, String)> = Vec::new();
            for (k, s) in &self.vars {
                let Some(v) = s.last() else { continue };
                if v.is_empty() || k.contains('=') || k.is_empty() || self.unexported.contains(k) {
                    continue;
                }
                out.push((k.clone(), v.join("\u{1}")));
            }
            for (k, f) in &self.fns {
                if self.unexported.contains(&format!("fn#{k}")) {
                    continue;
                }
                // plan9port ends a function's text with a newline.
                out.push((format!("fn#{k}"), format!("{{{}}}\n", f.body)));
            }
            out.sort();
            self.env_cache = Some(
                out.into_iter()
                    .filter_map(|(k, v)| CString::new(format!("{k}={v}")).ok())
                    .collect(),
            );
        }
        self.env_cache.as_deref().unwrap_or(&[])
    }

    /// Import the process environment: lists and functions as plan9port encodes them.
    pub fn import_env(&mut self, with_fns: bool) {
        for (k, v) in std::env::vars_os() {
            let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) else {
                continue;
            };
            if let Some(name) = k.strip_prefix("fn#") {
                if with_fns {
                    if let Ok(Cmd::Fn { body: Some(b), .. }) =
                        crate::parse::parse_text(&format!("fn {} {}", crate::ast::quote(name), v))
                    {
                        self.define_fn(name, b);
                    }
                }
                continue;
            }
            let val: Vec<String> = if v.contains('\u{1}') {
                v.split('\u{1}').map(str::to_string).collect()
            } else {
                vec![v]
            };
            self.vars.insert(k, vec![val]);
        }
        // PATH and path agree from the start.
        if let Some(p) = self.vars.get("PATH").and_then(|s| s.last()).cloned() {
            self.sync_path("PATH", &p);
        }
        self.env_cache = None;
    }

    // ----- expansion -----

    /// Expand a word to a list of marked strings.
    pub fn expand(&mut self, w: &Word, out: &mut Vec<String>) -> Res {
        // Deeply nested words and commands grow the stack on the heap rather than
        // overflow it.
        crate::stack::guard(|| self.expand_inner(w, out))
    }

    fn expand_inner(&mut self, w: &Word, out: &mut Vec<String>) -> Res {
        match w {
            Word::Lit { text, .. } => out.push(text.clone()),
            Word::Var(n) => {
                let name = self.name_of(n)?;
                for v in self.get(&name) {
                    out.push(mark_plain(v));
                }
            }
            Word::Sub(n, subs) => {
                let name = self.name_of(n)?;
                let mut idx = Vec::new();
                for s in subs {
                    self.expand(s, &mut idx)?;
                }
                let vals = self.get(&name).to_vec();
                for s in idx {
                    let s = unglob(&s);
                    let (lo, hi) = match s.split_once('-') {
                        Some((a, "")) => (a.parse::<usize>().ok(), Some(vals.len())),
                        Some((a, b)) => (a.parse().ok(), b.parse().ok()),
                        None => (s.parse().ok(), s.parse().ok()),
                    };
                    if let (Some(lo), Some(hi)) = (lo, hi) {
                        let lo = lo.max(1);
                        for i in lo..=hi.min(vals.len()) {
                            out.push(mark_plain(&vals[i - 1]));
                        }
                    }
                }
            }
            Word::Count(n) => {
                let name = self.name_of(n)?;
                out.push(self.get(&name).len().to_string());
            }
            Word::Join(n) => {
                let name = self.name_of(n)?;
                out.push(mark_plain(&self.get(&name).join(" ")));
            }
            Word::Concat(a, b) => {
                let mut la = Vec::new();
                self.expand(a, &mut la)?;
                let mut lb = Vec::new();
                self.expand(b, &mut lb)?;
                if la.is_empty() || lb.is_empty() {
                    return self.fail("null list in concatenation");
                }
                if la.len() == lb.len() {
                    for (x, y) in la.into_iter().zip(lb) {
                        out.push(x + &y);
                    }
                } else if la.len() == 1 {
                    for y in lb {
                        out.push(format!("{}{}", la[0], y));
                    }
                } else if lb.len() == 1 {
                    for x in la {
                        out.push(x + &lb[0]);
                    }
                } else {
                    return self.fail("mismatched list lengths in concatenation");
                }
            }
            Word::List(ws) => {
                for w in ws {
                    self.expand(w, out)?;
                }
            }
            Word::Backquote { sep, body } => {
                let seps = match sep {
                    Some(s) => {
                        let mut v = Vec::new();
                        self.expand(s, &mut v)?;
                        v.iter().map(|x| unglob(x)).collect::<String>()
                    }
                    None => self.get("ifs").first().cloned().unwrap_or_default(),
                };
                let text = self.backquote(body)?;
                for w in text.split(|c| seps.contains(c)) {
                    if !w.is_empty() {
                        out.push(mark_plain(w));
                    }
                }
            }
            Word::PipeFd { kind, body } => self.pipefd(*kind, body, out)?,
        }
        Ok(())
    }

    /// The name a `$` refers to: one word.
    fn name_of<'a>(&mut self, w: &'a Word) -> Result<std::borrow::Cow<'a, str>, Unwind> {
        if let Word::Lit { text, .. } = w {
            if !text.contains(GLOB) {
                return Ok(std::borrow::Cow::Borrowed(text));
            }
            return Ok(std::borrow::Cow::Owned(unglob(text)));
        }
        let mut v = Vec::new();
        self.expand(w, &mut v)?;
        if v.len() != 1 {
            self.fail("variable name not singleton!")?;
        }
        Ok(std::borrow::Cow::Owned(unglob(&v[0])))
    }

    /// Expand words, globbing the results: arguments of commands, `for` lists, values.
    pub fn expand_glob(&mut self, ws: &[Word]) -> Result<Vec<String>, Unwind> {
        let mut raw = Vec::new();
        for w in ws {
            self.expand(w, &mut raw)?;
        }
        let mut out = Vec::with_capacity(raw.len());
        for r in raw {
            if glob::is_pattern(&r) {
                let g = glob::glob(&r);
                if g.is_empty() {
                    out.push(unglob(&r));
                } else {
                    out.extend(g);
                }
            } else if r.contains(GLOB) {
                out.push(unglob(&r));
            } else {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// Expand words without globbing, as plain strings.
    pub fn expand_plain(&mut self, ws: &[Word]) -> Result<Vec<String>, Unwind> {
        let mut raw = Vec::new();
        for w in ws {
            self.expand(w, &mut raw)?;
        }
        Ok(raw.iter().map(|r| unglob(r)).collect())
    }

    // ----- running -----

    /// Set `$status`.
    pub fn set_status(&mut self, s: impl Into<String> + AsRef<str>) {
        // Statuses change after nearly every command: reuse the binding's storage.
        if let Some(top) = self.vars.get_mut("status").and_then(|st| st.last_mut()) {
            if top.len() == 1 {
                if top[0] != s.as_ref() {
                    top[0].clear();
                    top[0].push_str(s.as_ref());
                    self.env_cache = None;
                }
                if !self.unexported.is_empty() {
                    self.unexported.remove("status");
                }
                return;
            }
        }
        self.set("status", vec![s.into()]);
    }

    /// `$status` as one string.
    pub fn status(&self) -> String {
        self.get("status").join(" ")
    }

    /// Whether `$status` is true: every element empty or made of `0` and `|`.
    pub fn status_true(&self) -> bool {
        self.get("status").iter().all(|s| truestatus(s))
    }

    /// `-s`: after each command read, a false status is shown (as a list, quoted).
    pub fn show_status(&mut self) {
        if self.flags.s && !self.status_true() {
            let v: Vec<String> = self
                .get("status")
                .iter()
                .map(|x| crate::ast::quote(x))
                .collect();
            let _ = writeln!(err(), "status={}", v.join(" "));
        }
    }

    fn check_e(&mut self) {
        if self.flags.e && self.no_e == 0 && !self.status_true() {
            let s = self.status();
            self.exit(&s);
        }
    }

    /// After a simple command: `-s` and `-e`.
    fn after_simple(&mut self) {
        self.check_e();
    }

    /// Run a command.
    pub fn run(&mut self, c: &Cmd) -> Res {
        crate::stack::guard(|| self.run_inner(c))
    }

    fn run_inner(&mut self, c: &Cmd) -> Res {
        match c {
            Cmd::Empty => Ok(()),
            Cmd::Simple { words, redirs } => {
                self.simple(words, redirs)?;
                self.after_simple();
                Ok(())
            }
            Cmd::Assign { name, value, body } => {
                let name = self.name_of(name)?;
                let val = self.expand_glob(std::slice::from_ref(value))?;
                match body {
                    None => {
                        self.set(&name, val);
                        Ok(())
                    }
                    Some(b) if only_assignments(b) => {
                        // `a=1 b=2` with no command: both are plain assignments.
                        self.set(&name, val);
                        self.run(b)
                    }
                    Some(b) => {
                        // As in plan9port, a local `path` does not change `PATH`.
                        self.push_local(&name, val);
                        let r = self.run(b);
                        self.pop_local(&name);
                        r
                    }
                }
            }
            Cmd::Seq(v) => {
                for c in v {
                    self.run(c)?;
                    self.check_trap()?;
                }
                Ok(())
            }
            Cmd::Async(c) => self.run_async(c),
            Cmd::And(a, b) => {
                self.no_e += 1;
                let r = self.run(a);
                self.no_e -= 1;
                r?;
                if self.status_true() {
                    self.run(b)?;
                }
                Ok(())
            }
            Cmd::Or(a, b) => {
                self.no_e += 1;
                let r = self.run(a);
                self.no_e -= 1;
                r?;
                if !self.status_true() {
                    self.run(b)?;
                }
                Ok(())
            }
            Cmd::Not(c) => {
                self.no_e += 1;
                let r = self.run(c);
                self.no_e -= 1;
                r?;
                let ok = self.status_true();
                self.set_status(if ok { "false" } else { "" });
                Ok(())
            }
            Cmd::Subshell(c) => {
                let pid = self.fork_run(|sh| sh.run_tail(c))?;
                self.wait_status(pid);
                self.after_simple();
                Ok(())
            }
            Cmd::Pipe { .. } => self.pipeline(c),
            Cmd::Brace { body, redirs } => self.with_redirs(redirs, |sh| sh.run(body)),
            Cmd::Redirected { redirs, cmd } => self.with_redirs(redirs, |sh| sh.run(cmd)),
            Cmd::If { cond, body } => {
                self.no_e += 1;
                let r = self.run(cond);
                self.no_e -= 1;
                r?;
                if self.status_true() {
                    self.iflast = false;
                    self.run(body)
                } else {
                    self.iflast = true;
                    Ok(())
                }
            }
            Cmd::IfNot(body) => {
                if self.iflast {
                    self.iflast = false;
                    self.run(body)
                } else {
                    Ok(())
                }
            }
            Cmd::For { var, list, body } => {
                let name = self.name_of(var)?;
                let items = match list {
                    Some(l) => self.expand_glob(l)?,
                    None => self.get("*").to_vec(),
                };
                self.push_local(&name, Vec::new());
                let mut r = Ok(());
                for it in items {
                    self.set(&name, vec![it]);
                    r = self.run(body).and_then(|()| self.check_trap());
                    if r.is_err() {
                        break;
                    }
                }
                self.pop_local(&name);
                r
            }
            Cmd::While { cond, body } => {
                loop {
                    self.no_e += 1;
                    // `while()` loops for ever.
                    let r = if matches!(**cond, Cmd::Empty) {
                        self.set_status("");
                        Ok(())
                    } else {
                        self.run(cond)
                    };
                    self.no_e -= 1;
                    r?;
                    if !self.status_true() {
                        break;
                    }
                    self.run(body)?;
                    self.check_trap()?;
                }
                Ok(())
            }
            Cmd::Switch { subject, body } => self.switch(subject, body),
            Cmd::Fn { names, body } => {
                let names = self.expand_plain(names)?;
                for n in names {
                    match body {
                        Some(b) => self.define_fn(&n, Rc::clone(b)),
                        None => self.delete_fn(&n),
                    }
                }
                Ok(())
            }
            Cmd::Twiddle { subject, patterns } => {
                let mut s = Vec::new();
                self.expand(subject, &mut s)?;
                // The subject keeps its marks: an unquoted `*` in it is not the same as
                // a quoted one, as in plan9port.
                let s = s.join(" ");
                let mut pats = Vec::new();
                for p in patterns {
                    self.expand(p, &mut pats)?;
                }
                let hit = pats.iter().any(|p| glob::pmatch(p, &s));
                self.set_status(if hit { "" } else { "no match" });
                if self.flags.x {
                    let mut line = format!("~ {}", crate::ast::quote(&unglob(&s)));
                    for p in &pats {
                        line.push(' ');
                        line.push_str(&crate::ast::quote(&unglob(p)));
                    }
                    let _ = writeln!(crate::exec::err(), "{line}");
                }
                self.after_simple();
                Ok(())
            }
        }
    }

    fn switch(&mut self, subject: &Word, body: &Cmd) -> Res {
        let mut s = Vec::new();
        self.expand(subject, &mut s)?;
        let s = s.join(" ");
        let cmds: Vec<&Cmd> = match body {
            Cmd::Seq(v) => v.iter().collect(),
            c => vec![c],
        };
        let is_case = |c: &Cmd| -> Option<Vec<Word>> {
            if let Cmd::Simple { words, redirs } = c {
                if redirs.is_empty() {
                    if let Some(Word::Lit {
                        text,
                        quoted: false,
                    }) = words.first()
                    {
                        if text == "case" {
                            return Some(words[1..].to_vec());
                        }
                    }
                }
            }
            None
        };
        let mut i = 0;
        let mut running = false;
        while i < cmds.len() {
            if let Some(pats) = is_case(cmds[i]) {
                if running {
                    break;
                }
                let mut ps = Vec::new();
                for p in &pats {
                    self.expand(p, &mut ps)?;
                }
                if ps.iter().any(|p| glob::pmatch(p, &s)) {
                    running = true;
                }
            } else if running {
                self.run(cmds[i])?;
            }
            i += 1;
        }
        Ok(())
    }

    fn trace(&self, argv: &[String]) {
        if self.flags.x {
            let line: Vec<String> = argv.iter().map(|a| crate::ast::quote(a)).collect();
            let _ = writeln!(crate::exec::err(), "{}", line.join(" "));
        }
    }

    fn simple(&mut self, words: &[Word], redirs: &[Redir]) -> Res {
        let tail = std::mem::take(&mut self.tail);
        let argv = self.expand_glob(words)?;
        if argv.is_empty() {
            // Only redirections: they are made, and undone.
            return self.with_redirs(redirs, |sh| {
                sh.set_status("");
                Ok(())
            });
        }
        self.trace(&argv);
        let name = argv[0].clone();
        if let Some(f) = self.fns.get(&name).cloned() {
            return self.with_redirs(redirs, |sh| sh.call(&f, &argv));
        }
        if let Some(b) = crate::builtins::lookup(&name) {
            return self.with_redirs(redirs, |sh| b(sh, &argv));
        }
        if tail {
            self.exec_here(&argv, redirs);
        }
        self.external(&argv, redirs)
    }

    /// Run a command that is the last thing this process does.
    pub fn run_tail(&mut self, c: &Cmd) -> Res {
        if matches!(c, Cmd::Simple { .. }) && !self.fns.contains_key("sigexit") {
            self.tail = true;
        }
        let r = self.run(c);
        self.tail = false;
        r
    }

    /// Call a function: `$*` is its arguments for the duration.
    pub fn call(&mut self, f: &Func, argv: &[String]) -> Res {
        if self.depth >= MAX_CALL_DEPTH {
            return self.fail("function calls nested too deeply");
        }
        self.depth += 1;
        self.push_local("*", argv[1..].to_vec());
        let mark = self.pipefds.len();
        let r = self.run(&f.body);
        self.pipefds.truncate(mark);
        self.pop_local("*");
        self.depth -= 1;
        r
    }

    /// Find a command in `$path`.
    pub fn search(&self, name: &str) -> Option<String> {
        // As plan9port: only names starting with `/`, `./` or `../` are used as
        // they are; others (`bin/cmd` too) are looked for in each `$path` element.
        if name.starts_with('/') || name.starts_with("./") || name.starts_with("../") {
            return Some(name.to_string());
        }
        for dir in self.get("path") {
            let p = if dir.is_empty() {
                name.to_string()
            } else {
                format!("{dir}/{name}")
            };
            if let Ok(c) = CString::new(p.clone()) {
                // SAFETY: access on a NUL-terminated path.
                if unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0
                    && std::fs::metadata(&p).is_ok_and(|m| m.is_file())
                {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Run an external command (in a child, unless we are a child about to exit).
    fn external(&mut self, argv: &[String], redirs: &[Redir]) -> Res {
        let preps = self.prepare_redirs(redirs)?;
        let pid = self.fork_run(|sh| {
            install_redirs(preps, None);
            sh.exec_here(argv, &[]);
        })?;
        self.wait_status(pid);
        Ok(())
    }

    /// Exec in this process (a child): redirect, then replace ourselves.
    pub fn exec_here(&mut self, argv: &[String], redirs: &[Redir]) -> ! {
        if let Err(Unwind::Error) = self.apply_redirs(redirs, None) {
            self.child_exit(1);
        }
        let Some(path) = self.search(&argv[0]) else {
            let _ = writeln!(std::io::stderr(), "{}: No such file or directory", argv[0]);
            self.child_exit(1);
        };
        let cargs: Vec<CString> = argv
            .iter()
            .filter_map(|a| CString::new(a.as_str()).ok())
            .collect();
        let Ok(cpath) = CString::new(path) else {
            self.child_exit(1);
        };
        let env = self.environ().to_vec();
        let err = nix::unistd::execve(&cpath, &cargs, &env).err();
        let msg = match err {
            Some(nix::Error::ENOEXEC) => {
                // A script without #!: run it with /bin/sh, as execvp would.
                let mut a = vec![CString::new("/bin/sh").unwrap_or_default(), cpath.clone()];
                a.extend(cargs.iter().skip(1).cloned());
                let sh = CString::new("/bin/sh").unwrap_or_default();
                let _ = nix::unistd::execve(&sh, &a, &env);
                nix::Error::ENOEXEC.desc().to_string()
            }
            Some(e) => errstr(e),
            None => "exec failed".into(),
        };
        let _ = writeln!(std::io::stderr(), "{}: {msg}", argv[0]);
        self.child_exit(1);
    }

    /// Leave a child process.
    pub fn child_exit(&mut self, code: i32) -> ! {
        let _ = std::io::stdout().flush();
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) }
    }

    /// Fork; the child runs `f` and exits with the resulting status.
    pub fn fork_run(&mut self, f: impl FnOnce(&mut Shell) -> Res) -> Result<i32, Unwind> {
        let _ = std::io::stdout().flush();
        // SAFETY: rc is single-threaded; the child only runs rc code and exits.
        match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Parent { child }) => Ok(child.as_raw()),
            Ok(ForkResult::Child) => {
                self.in_child = true;
                self.interactive = false;
                self.background.clear();
                self.reaped.clear();
                restore_signals();
                let r = f(self);
                let code = match r {
                    Ok(()) => exit_code(&self.status()),
                    Err(_) => 1,
                };
                self.child_exit(code);
            }
            Err(e) => self.fail(&format!("fork: {}", errstr(e))).map(|_| -1),
        }
    }

    /// Wait for a child; its status becomes `$status`.
    pub fn wait_status(&mut self, pid: i32) {
        let s = self.wait_for(pid);
        self.set_status(s);
    }

    /// Wait for one child, keeping the statuses of others reaped meanwhile.
    pub fn wait_for(&mut self, pid: i32) -> String {
        if let Some(s) = self.reaped.remove(&pid) {
            return s;
        }
        loop {
            match waitpid(Pid::from_raw(-1), None) {
                Ok(ws) => {
                    let Some(p) = ws.pid() else { continue };
                    let s = status_of(ws);
                    if let WaitStatus::Signaled(_, sig, _) = ws {
                        if sig != nix::sys::signal::Signal::SIGINT || !self.interactive {
                            let _ = writeln!(
                                crate::exec::err(),
                                "{}: signal: {}",
                                p.as_raw(),
                                signame(sig as i32)
                            );
                        }
                    }
                    self.background.retain(|b| *b != p.as_raw());
                    if p.as_raw() == pid {
                        return s;
                    }
                    self.reaped.insert(p.as_raw(), s);
                }
                Err(nix::Error::EINTR) => continue,
                Err(_) => return String::new(),
            }
        }
    }

    /// Reap what has finished, without waiting.
    pub fn reap(&mut self) {
        while let Ok(ws) = waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            match ws.pid() {
                Some(p) => {
                    self.background.retain(|b| *b != p.as_raw());
                    self.reaped.insert(p.as_raw(), status_of(ws));
                }
                None => break,
            }
        }
    }

    /// `wait [pid]`.
    pub fn wait_cmd(&mut self, pid: Option<i32>) {
        match pid {
            Some(p) if !self.background.contains(&p) && !self.reaped.contains_key(&p) => {
                self.set_status("");
            }
            Some(p) => {
                let s = self.wait_for(p);
                self.set_status(s);
            }
            None => {
                // Waiting for everything leaves `$status` true, as in plan9port.
                while let Some(&p) = self.background.first() {
                    self.wait_for(p);
                }
                self.reaped.clear();
                self.set_status("");
            }
        }
    }

    fn run_async(&mut self, c: &Cmd) -> Res {
        let pid = self.fork_run(|sh| {
            // SAFETY: ignoring terminal signals in the child.
            unsafe {
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                libc::signal(libc::SIGQUIT, libc::SIG_IGN);
            }
            if isatty(0) {
                if let Ok(null) = std::fs::File::open("/dev/null") {
                    // SAFETY: dup2 onto standard input.
                    unsafe { libc::dup2(null.as_raw_fd(), 0) };
                }
            }
            sh.run_tail(c)
        })?;
        self.background.push(pid);
        self.set("apid", vec![pid.to_string()]);
        self.set_status("");
        Ok(())
    }

    fn pipeline(&mut self, c: &Cmd) -> Res {
        // Flatten a|b|c into its stages and the fds joining them.
        let mut stages: Vec<(&Cmd, i32, i32)> = Vec::new();
        fn flatten<'a>(c: &'a Cmd, out: &mut Vec<(&'a Cmd, i32, i32)>) {
            if let Cmd::Pipe {
                left,
                right,
                lfd,
                rfd,
            } = c
            {
                flatten(left, out);
                if let Some(l) = out.last_mut() {
                    l.1 = *lfd;
                }
                out.push((right, -1, *rfd));
            } else {
                out.push((c, -1, -1));
            }
        }
        flatten(c, &mut stages);
        let n = stages.len();
        let mut pids = Vec::with_capacity(n);
        let mut prev_read: Option<(OwnedFd, i32)> = None;
        for (i, (cmd, outfd, _)) in stages.iter().enumerate().take(n - 1) {
            let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
                Ok(p) => p,
                Err(e) => return self.fail(&format!("pipe: {}", errstr(e))),
            };
            let rfd = stages[i + 1].2;
            let inp = prev_read.take();
            let wfd = w.as_raw_fd();
            let outfd = *outfd;
            let pid = self.fork_run(|sh| {
                if let Some((r, fd)) = &inp {
                    dup_to(r.as_raw_fd(), *fd);
                }
                dup_to(wfd, outfd);
                sh.run_tail(cmd)
            })?;
            pids.push(pid);
            drop(inp);
            drop(w);
            prev_read = Some((r, rfd));
        }
        // The last command runs in rc itself, as in plan9port: `echo x | y=`{cat}`
        // sets y, and `cd` there sticks.
        let mut saved = Vec::new();
        if let Some((r, fd)) = prev_read.take() {
            install_redirs(vec![Prep::Open(fd, r)], Some(&mut saved));
        }
        let r = self.run(stages[n - 1].0);
        restore_redirs(saved);
        let mut left: Option<String> = None;
        for p in pids {
            let s = self.wait_for(p);
            // plan9port runs `a|b|c` as `{a|b}|c`: the left part is one child rc, whose
            // status reaches the parent as an exit code.
            left = Some(match left {
                None => s,
                Some(l) => status_of_code(exit_code(&format!("{l}|{s}")) & 0xff),
            });
        }
        if let Some(l) = left {
            let last = self.status();
            self.set_status(format!("{l}|{last}"));
        }
        // -e does not look at a pipeline's status, as in plan9port.
        r
    }

    /// Run a command with its standard output collected.
    fn backquote(&mut self, body: &Cmd) -> Result<String, Unwind> {
        let (r, w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => p,
            Err(e) => {
                self.fail(&format!("pipe: {}", errstr(e)))?;
                return Ok(String::new());
            }
        };
        let wfd = w.as_raw_fd();
        let pid = self.fork_run(|sh| {
            dup_to(wfd, 1);
            sh.run_tail(body)
        })?;
        drop(w);
        let mut f = std::fs::File::from(r);
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut f, &mut buf);
        self.wait_status(pid);
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    /// `<{cmd}` and friends: a pipe to or from a command, named by a /dev/fd path.
    /// `<{cmd}`, `>{cmd}` and `<>{cmd}`: run cmd with its output (input, both) on a
    /// pipe and give the names of our ends: for `<>`, the end to read cmd's output
    /// and then the end to write its input, as in plan9port.
    fn pipefd(&mut self, kind: RedirKind, body: &Cmd, out: &mut Vec<String>) -> Res {
        let pipe = |sh: &mut Shell| match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
            Ok(p) => Ok(p),
            Err(e) => {
                sh.fail(&format!("pipe: {}", errstr(e)))?;
                Err(Unwind::Error)
            }
        };
        // (its end, our end) of the pipe from cmd's output, then of the one to its input.
        let from_cmd = if kind != RedirKind::Write {
            Some(pipe(self)?)
        } else {
            None
        };
        let to_cmd = if kind != RedirKind::Read {
            Some(pipe(self)?)
        } else {
            None
        };
        let out_fd = from_cmd.as_ref().map(|(_, w)| w.as_raw_fd());
        let in_fd = to_cmd.as_ref().map(|(r, _)| r.as_raw_fd());
        let pid = self.fork_run(|sh| {
            if let Some(w) = out_fd {
                dup_to(w, 1);
            }
            if let Some(r) = in_fd {
                dup_to(r, 0);
            }
            sh.run_tail(body)
        })?;
        self.background.push(pid);
        let ours: Vec<OwnedFd> = from_cmd
            .into_iter()
            .map(|(r, _)| r)
            .chain(to_cmd.map(|(_, w)| w))
            .collect();
        for o in ours {
            // The descriptor must survive exec: a copy without close-on-exec.
            // SAFETY: fcntl on a descriptor we own.
            let keep = unsafe { libc::fcntl(o.as_raw_fd(), libc::F_DUPFD, 10) };
            drop(o);
            if keep < 0 {
                return self.fail("can't dup pipe");
            }
            out.push(format!("/dev/fd/{keep}"));
            // SAFETY: keep is a fresh descriptor we own.
            self.pipefds
                .push((unsafe { OwnedFd::from_raw_fd(keep) }, pid));
        }
        Ok(())
    }

    // ----- redirections -----

    /// Apply redirections around `f` in this process, undoing them after.
    pub fn with_redirs(&mut self, redirs: &[Redir], f: impl FnOnce(&mut Shell) -> Res) -> Res {
        if redirs.is_empty() {
            return f(self);
        }
        let _ = std::io::stdout().flush();
        let mut saved: Vec<(i32, Option<OwnedFd>)> = Vec::new();
        let r = match self.apply_redirs(redirs, Some(&mut saved)) {
            Ok(()) => f(self),
            Err(e) => {
                self.set_status("error");
                Err(e)
            }
        };
        restore_redirs(saved);
        r
    }

    /// Make redirections; with `saved`, remember what each replaced.
    fn apply_redirs(
        &mut self,
        redirs: &[Redir],
        saved: Option<&mut Vec<(i32, Option<OwnedFd>)>>,
    ) -> Res {
        let preps = self.prepare_redirs(redirs)?;
        install_redirs(preps, saved);
        Ok(())
    }

    /// Open the files of redirections (and write here documents), in rc; errors are
    /// rc's (a script stops). The descriptors are moved into place by [`install_redirs`],
    /// in the child for a program.
    fn prepare_redirs(&mut self, redirs: &[Redir]) -> Result<Vec<Prep>, Unwind> {
        let mut out = Vec::with_capacity(redirs.len());
        for r in redirs {
            let p = match &r.op {
                RedirOp::File(kind, w) => {
                    let mut v = self.expand_glob(std::slice::from_ref(w))?;
                    // plan9port's messages for <, > and <> end with a blank line.
                    let (sym, nl) = match kind {
                        RedirKind::Read => ("<", "\n"),
                        RedirKind::RdWr => ("<>", "\n"),
                        RedirKind::Append => (">>", ""),
                        _ => (">", "\n"),
                    };
                    if v.len() != 1 {
                        let what = if v.is_empty() { "file" } else { "singleton" };
                        return self
                            .fail(&format!("{sym} requires {what}{nl}"))
                            .map(|()| Vec::new());
                    }
                    let name = v.remove(0);
                    let mut o = std::fs::OpenOptions::new();
                    match kind {
                        RedirKind::Read => o.read(true),
                        RedirKind::RdWr => o.read(true).write(true),
                        RedirKind::Append => o.append(true).create(true),
                        _ => o.write(true).create(true).truncate(true),
                    };
                    match o.open(&name) {
                        Ok(f) => Prep::Open(r.fd, OwnedFd::from(f)),
                        Err(e) => {
                            let _ = writeln!(
                                err(),
                                "{name}: {}: can't open: {}",
                                self.prefix(),
                                ioerr(&e)
                            );
                            self.set_status("error");
                            return Err(Unwind::Error);
                        }
                    }
                }
                RedirOp::Here { body, .. } => {
                    let text = body.borrow().clone().unwrap_or_default();
                    Prep::Open(r.fd, self.here_file(&text)?)
                }
                RedirOp::Dup(from) => Prep::Dup(r.fd, *from),
                RedirOp::Close => Prep::Close(r.fd),
            };
            out.push(p);
        }
        Ok(out)
    }

    /// `$name` (and `$name^`) substitution in here documents.
    /// Substitute variables in the here documents of a command just read, as rc does
    /// when it reads them (not each time they are used).
    pub fn subst_here_docs(&self, c: &Cmd) {
        let mut docs = Vec::new();
        c.here_docs(&mut docs);
        for (body, subst) in docs {
            if subst {
                let t = body.borrow().clone();
                if let Some(t) = t {
                    *body.borrow_mut() = Some(self.here_subst(&t));
                }
            }
        }
    }

    fn here_subst(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let cs: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < cs.len() {
            if cs[i] == '$' {
                let mut j = i + 1;
                while j < cs.len()
                    && cs[j] > ' '
                    && !"!\"#$%&'()+,-./:;<=>?@[\\]^`{|}~".contains(cs[j])
                {
                    j += 1;
                }
                // A `$` with no name after it stands for nothing, as in plan9port.
                let name: String = cs[i + 1..j].iter().collect();
                if !name.is_empty() {
                    out.push_str(&self.get(&name).join(" "));
                    if j < cs.len() && cs[j] == '^' {
                        j += 1;
                    }
                }
                i = j;
                continue;
            }
            out.push(cs[i]);
            i += 1;
        }
        out
    }

    /// A here document's text as an open file (written to a temporary file, removed).
    fn here_file(&mut self, text: &str) -> Result<OwnedFd, Unwind> {
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        self.herectr += 1;
        let path = format!("{dir}/here{:x}.{:04}", std::process::id(), self.herectr);
        let r = (|| -> std::io::Result<OwnedFd> {
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            let _ = std::fs::remove_file(&path);
            f.write_all(text.as_bytes())?;
            std::io::Seek::rewind(&mut f)?;
            Ok(OwnedFd::from(f))
        })();
        match r {
            Ok(fd) => Ok(fd),
            Err(e) => {
                self.fail(&format!("can't make here document: {}", ioerr(&e)))?;
                Err(Unwind::Error)
            }
        }
    }

    /// Leave rc: run `fn sigexit` once, then exit with the status's code.
    pub fn exit(&mut self, status: &str) -> ! {
        if !self.exiting && !self.in_child {
            self.exiting = true;
            if let Some(f) = self.fns.get("sigexit").cloned() {
                let s = self.status();
                let _ = self.call(&f, &["sigexit".to_string()]);
                self.set_status(s);
            }
        }
        let _ = std::io::stdout().flush();
        let code = exit_code(status);
        if self.in_child {
            self.child_exit(code);
        }
        std::process::exit(code)
    }
}

/// A redirection ready to be made: files are open.
pub enum Prep {
    Open(RawFd, OwnedFd),
    /// `>[to=from]`
    Dup(RawFd, RawFd),
    Close(RawFd),
}

/// Move prepared redirections into place, in order; with `saved`, remember what each
/// target was, to put it back.
pub fn install_redirs(preps: Vec<Prep>, mut saved: Option<&mut Vec<(i32, Option<OwnedFd>)>>) {
    for p in preps {
        let target = match &p {
            Prep::Open(t, _) | Prep::Dup(t, _) | Prep::Close(t) => *t,
        };
        if let Some(s) = saved.as_deref_mut() {
            // SAFETY: F_DUPFD_CLOEXEC of the target, to restore it later.
            let old = unsafe { libc::fcntl(target, libc::F_DUPFD_CLOEXEC, 10) };
            // SAFETY: a fresh descriptor we own.
            s.push((
                target,
                (old >= 0).then(|| unsafe { OwnedFd::from_raw_fd(old) }),
            ));
        }
        match p {
            Prep::Open(t, f) => {
                if f.as_raw_fd() != t {
                    dup_to(f.as_raw_fd(), t);
                } else {
                    // Already there: keep it open past drop, without close-on-exec.
                    let raw = std::os::fd::IntoRawFd::into_raw_fd(f);
                    // SAFETY: clearing FD_CLOEXEC on our own descriptor.
                    unsafe { libc::fcntl(raw, libc::F_SETFD, 0) };
                }
            }
            Prep::Dup(t, from) => {
                if t != from {
                    // SAFETY: dup2 between descriptor numbers; a closed `from` closes `t`.
                    if unsafe { libc::dup2(from, t) } < 0 {
                        unsafe { libc::close(t) };
                    }
                }
            }
            Prep::Close(t) => {
                // SAFETY: closing the target descriptor as asked.
                unsafe { libc::close(t) };
            }
        }
    }
}

/// Put back what [`install_redirs`] saved, last first.
pub fn restore_redirs(saved: Vec<(i32, Option<OwnedFd>)>) {
    let _ = std::io::stdout().flush();
    for (fd, old) in saved.into_iter().rev() {
        match old {
            Some(o) => dup_to(o.as_raw_fd(), fd),
            None => {
                // SAFETY: closing a descriptor a redirection opened.
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// The status a child rc's exit code stands for.
fn status_of_code(code: i32) -> String {
    if code == 0 {
        String::new()
    } else {
        code.to_string()
    }
}

/// Where rc's own messages go: standard error as rc started with it. Like plan9port's
/// rc, rc does not send its own complaints through a command's redirections
/// (`cd /nonexistent >[2]/dev/null` still says why it failed); what a program writes
/// to its standard error is redirected as usual.
static ERRFD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(2);

/// Keep a copy of standard error for rc's messages (see [`err`]).
pub fn save_stderr() {
    // SAFETY: duplicating a descriptor to a new, close-on-exec one.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 10) };
    if fd >= 0 {
        ERRFD.store(fd, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The descriptor of rc's own messages.
pub fn err_fd() -> RawFd {
    ERRFD.load(std::sync::atomic::Ordering::Relaxed)
}

/// rc's own message stream.
pub struct ErrOut;

/// rc's own message stream (see [`save_stderr`]).
pub fn err() -> ErrOut {
    ErrOut
}

impl Write for ErrOut {
    /// One message, one write: messages from several processes do not interleave.
    fn write_fmt(&mut self, args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
        let s = std::fmt::format(args);
        self.write_all(s.as_bytes())
    }

    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let fd = ERRFD.load(std::sync::atomic::Ordering::Relaxed);
        loop {
            // SAFETY: writing from a valid buffer to a descriptor number.
            let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether a descriptor is a terminal.
pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

/// Put descriptor `from` at `to` (not close-on-exec), if they differ.
pub fn dup_to(from: RawFd, to: RawFd) {
    if from != to {
        // SAFETY: dup2 between descriptor numbers; failures leave `to` as it was.
        unsafe { libc::dup2(from, to) };
    }
}

/// Signals back to their defaults before running a program.
pub fn restore_signals() {
    // SAFETY: resetting dispositions is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
        libc::signal(libc::SIGTTOU, libc::SIG_DFL);
        libc::signal(libc::SIGTTIN, libc::SIG_DFL);
        libc::signal(libc::SIGTSTP, libc::SIG_DFL);
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// An errno as C's strerror says it (as plan9port's rc prints it).
pub fn errstr(e: nix::Error) -> String {
    std::io::Error::from_raw_os_error(e as i32)
        .to_string()
        .split(" (os error")
        .next()
        .unwrap_or("")
        .to_string()
}

pub fn ioerr(e: &std::io::Error) -> String {
    let s = e.to_string();
    s.split(" (os error").next().unwrap_or(&s).to_string()
}

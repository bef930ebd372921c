//! Running recipes: up to `$NPROC` at once, each as one script on the standard input
//! of `$MKSHELL -e`, with mk's variables and the recipe's own in its environment.

use crate::graph::*;
use crate::shell::{Kind, Shell};
use crate::{Failed, Job, Mk, R};
use std::ffi::CString;
use std::io::Write;

/// The variables mk sets for each recipe (in this order in the environment).
pub const INTERNAL: &[&str] = &[
    "target",
    "stem",
    "prereq",
    "pid",
    "nproc",
    "newprereq",
    "alltarget",
    "newmember",
    "stem0",
    "stem1",
    "stem2",
    "stem3",
    "stem4",
    "stem5",
    "stem6",
    "stem7",
    "stem8",
    "stem9",
];

/// A running recipe.
pub struct Running {
    pub pid: i32,
    pub job: Job,
}

impl Mk {
    pub fn running(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }

    /// Queue a job, and start it if a slot is free.
    pub fn run(&mut self, j: Job) -> R<()> {
        self.jobs.push_back(j);
        if self.running() < self.nproclimit {
            self.sched()?;
        }
        Ok(())
    }

    fn sched(&mut self) -> R<()> {
        let Some(j) = self.jobs.pop_front() else {
            return Ok(());
        };
        let slot = self.slots.iter().position(|s| s.is_none()).unwrap_or(0);
        let env = self.buildenv(&j, slot);
        let r = j.rule;
        let text = self.shprint(
            &self.rules[r].recipe.clone(),
            &env,
            self.rules[r].shell.kind,
        );
        if !self.tflag && (self.nflag || !self.rules[r].attr.q) {
            self.bout.push_str(&text);
        }
        if self.nflag || self.tflag {
            for &n in &j.nodes {
                if self.tflag {
                    if self.nodes[n].flags & VIRTUAL == 0 {
                        let name = self.nodes[n].name.clone();
                        self.touch(&name)?;
                    } else if self.explain {
                        let name = self.nodes[n].name.clone();
                        self.bprint(&format!("no touch of virtual '{name}'\n"));
                    }
                }
                self.nodes[n].time = now();
                let f = self.nodes[n].flags;
                self.nodes[n].flags = (f & !(NOTMADE | BEINGMADE | MADE)) | MADE;
            }
            return Ok(());
        }
        self.flush();
        let shell = self.rules[r].shell.clone();
        let flags: &[&str] = if self.rules[r].attr.e { &[] } else { &["-e"] };
        let recipe = self.rules[r].recipe.to_string();
        let envp = self.export(&env, &shell);
        match self.execsh(&shell, flags, &recipe, &envp) {
            Ok(pid) => {
                self.slots[slot] = Some(Running { pid, job: j });
                Ok(())
            }
            Err(e) => {
                eprintln!("mk fork: {e}");
                Err(Failed)
            }
        }
    }

    /// Wait for a recipe to finish. `echildok > 0`: having none is not an error
    /// (returns 1). Returns 0 after handling one.
    pub fn waitup(&mut self, echildok: i32) -> R<i32> {
        loop {
            if self.running() == 0 {
                if echildok > 0 {
                    return Ok(1);
                }
                if !self.jobs.is_empty() {
                    self.sched()?;
                    continue;
                }
                return Ok(1);
            }
            let mut st: libc::c_int = 0;
            // SAFETY: waitpid on our children with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
            if pid < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                if echildok > 0 {
                    return Ok(1);
                }
                eprintln!("mk: (waitup {echildok}): {}", crate::ioerr(&e));
                return Err(Failed);
            }
            let Some(slot) = self
                .slots
                .iter()
                .position(|s| s.as_ref().is_some_and(|r| r.pid == pid))
            else {
                continue;
            };
            let Some(run) = self.slots[slot].take() else {
                continue;
            };
            let j = run.job;
            let failed = status_text(st);
            let mut uarg = false;
            if let Some(msg) = failed {
                let env = self.buildenv(&j, slot);
                let r = j.rule;
                let text = self.shprint(
                    &self.rules[r].recipe.clone(),
                    &env,
                    self.rules[r].shell.kind,
                );
                self.flush();
                // Written as it goes, so a failed removal's complaint comes in the middle,
                // as plan9port's does.
                let mut e = std::io::stderr().lock();
                let _ = write!(e, "mk: {}: exit status={msg}", front(&text));
                let mut done = 0;
                for &n in &j.nodes {
                    if self.nodes[n].flags & DELETE != 0 {
                        if done == 0 {
                            let _ = write!(e, ", deleting");
                        }
                        done += 1;
                        let _ = write!(e, " '{}'", self.nodes[n].name);
                        delete(&self.nodes[n].name);
                    }
                }
                let _ = writeln!(e);
                drop(e);
                if self.kflag {
                    self.runerrs += 1;
                    uarg = true;
                } else {
                    self.jobs.clear();
                    return Err(Failed);
                }
            }
            for t in j.targets.clone() {
                if let Some(&n) = self.node_of.get(&t) {
                    self.update(uarg, n)?;
                }
            }
            if self.running() < self.nproclimit && !self.jobs.is_empty() {
                self.sched()?;
            }
            return Ok(0);
        }
    }

    /// `$NPROC`: how many recipes run at once.
    pub fn nproc(&mut self) {
        let n = self
            .vars
            .get("NPROC")
            .and_then(|w| w.first())
            .map(|s| atoi(s))
            .unwrap_or(0);
        self.nproclimit = n.max(1) as usize;
        while self.slots.len() < self.nproclimit {
            self.slots.push(None);
        }
    }

    /// `$NREP`: how often a rule may be used in one chain.
    pub fn nrep(&mut self) {
        let n = self
            .vars
            .get("NREP")
            .and_then(|w| w.first())
            .map(|s| atoi(s))
            .unwrap_or(0);
        self.nreps = n.max(1) as u32;
    }

    /// The environment of a recipe: mk's variables (not `U` ones) with the recipe's.
    pub fn buildenv(&self, j: &Job, slot: usize) -> Vec<(String, Vec<String>)> {
        let mut env: Vec<(String, Vec<String>)> =
            Vec::with_capacity(self.vars.len() + INTERNAL.len());
        let r = &self.rules[j.rule];
        let is_re = r.attr.r;
        for name in INTERNAL {
            let v: Vec<String> = match *name {
                "target" => j.targets.clone(),
                "stem" => vec![if is_re { String::new() } else { j.stem.clone() }],
                "prereq" => j.prereq.clone(),
                "pid" => vec![std::process::id().to_string()],
                "nproc" => vec![slot.to_string()],
                "newprereq" => j.newprereq.clone(),
                "alltarget" => j.alltargets.clone(),
                "newmember" => j
                    .newprereq
                    .iter()
                    .filter_map(|w| {
                        let (_, rest) = w.split_once('(')?;
                        let (m, _) = rest.split_once(')')?;
                        Some(m.to_string())
                    })
                    .collect(),
                s => {
                    let i: usize = s[4..].parse().unwrap_or(0);
                    match j.matches.get(i) {
                        Some(Some(m)) if is_re => vec![m.clone()],
                        _ => vec![String::new()],
                    }
                }
            };
            env.push((name.to_string(), v));
        }
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        for n in names {
            if self.noexport.contains(n) || INTERNAL.contains(&n.as_str()) {
                continue;
            }
            env.push((n.clone(), self.vars[n].clone()));
        }
        env
    }

    /// The environment strings for a shell.
    pub fn export(&self, env: &[(String, Vec<String>)], sh: &Shell) -> Vec<CString> {
        let sep = sh.iws().to_string();
        env.iter()
            .filter_map(|(k, v)| CString::new(format!("{k}={}", v.join(&sep))).ok())
            .collect()
    }

    /// The recipe as it is echoed: variables mk set (and the recipe's own) put in,
    /// others left as written; quoted text left alone.
    pub fn shprint(&self, s: &str, env: &[(String, Vec<String>)], kind: Kind) -> String {
        let cs: Vec<char> = s.chars().collect();
        let mut out = String::with_capacity(s.len());
        let mut i = 0;
        while i < cs.len() {
            let c = cs[i];
            if c == '$' {
                let start = i;
                let mut p = i + 1;
                let braced = cs.get(p) == Some(&'{');
                let (name_start, name_end);
                if braced {
                    p += 1;
                    name_start = p;
                    let mut q = p;
                    while q < cs.len() && cs[q] != '}' {
                        q += 1;
                    }
                    name_end = q;
                } else {
                    name_start = p;
                    let mut q = p;
                    while q < cs.len() && crate::word::wordchr(cs[q]) {
                        q += 1;
                    }
                    name_end = q;
                }
                let name: String = cs[name_start..name_end].iter().collect();
                let mut end = name_end;
                if braced && end < cs.len() {
                    end += 1;
                }
                let known = self.weset.contains(&name) || INTERNAL.contains(&name.as_str());
                match env.iter().find(|(k, _)| *k == name).filter(|_| known) {
                    Some((_, v)) => out.push_str(&v.join(" ")),
                    None => out.extend(&cs[start..end]),
                }
                i = end;
                continue;
            }
            out.push(c);
            i += 1;
            // Quoted text is copied as it is.
            let quote = match kind {
                Kind::Rc => c == '\'',
                Kind::Sh => c == '\'' || c == '"',
            };
            if quote {
                while i < cs.len() {
                    out.push(cs[i]);
                    i += 1;
                    if cs[i - 1] == c {
                        break;
                    }
                }
            } else if c == '`' {
                let close = if kind == Kind::Rc { '}' } else { '`' };
                while i < cs.len() {
                    let d = cs[i];
                    out.push(d);
                    i += 1;
                    if d == close {
                        break;
                    }
                }
            }
        }
        out
    }

    /// Start the shell with the recipe on its standard input.
    fn execsh(
        &self,
        sh: &Shell,
        flags: &[&str],
        recipe: &str,
        envp: &[CString],
    ) -> std::io::Result<i32> {
        let mut argv: Vec<String> = sh.cmd.clone();
        argv.extend(flags.iter().map(|s| s.to_string()));
        let prog = self.shell_path(&argv[0]);
        let mut cmd = std::process::Command::new(&prog);
        cmd.arg0(&argv[0]).args(&argv[1..]).env_clear();
        for e in envp {
            let s = e.to_string_lossy();
            if let Some((k, v)) = s.split_once('=') {
                cmd.env(k, v);
            }
        }
        cmd.stdin(std::process::Stdio::piped());
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                // As in plan9port, the shell that could not be run fails like a recipe.
                // SAFETY: the child only writes a message and exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    let _ = writeln!(std::io::stderr(), "/bin/sh: {}", crate::ioerr(&e));
                    // SAFETY: leaving the child at once.
                    unsafe { libc::_exit(1) };
                }
                if pid < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                return Ok(pid);
            }
        };
        let pid = child.id() as i32;
        if let Some(mut stdin) = child.stdin.take() {
            let text = recipe.to_string();
            if text.len() <= 16 * 1024 {
                let _ = stdin.write_all(text.as_bytes());
            } else {
                std::thread::spawn(move || {
                    let _ = stdin.write_all(text.as_bytes());
                });
            }
        }
        // The child is reaped by waitup, not through `child`.
        std::mem::forget(child);
        Ok(pid)
    }

    /// Where to find the shell's program: `rc` is ours (beside mk), else `$PATH`.
    pub fn shell_path(&self, name: &str) -> std::path::PathBuf {
        if name == "rc" {
            if let Some(dir) = std::env::current_exe()
                .ok()
                .and_then(|p| p.parent().map(|d| d.to_path_buf()))
            {
                let ours = dir.join("rc");
                if ours.is_file() {
                    return ours;
                }
            }
        }
        std::path::PathBuf::from(name)
    }

    /// Run `cmd` with `$MKSHELL -c`, mk's variables in its environment; its output.
    pub fn pipecmd_output(&mut self, cmd: &str) -> (Vec<u8>, bool) {
        let shell = self.shell.clone();
        let env = self.plain_env();
        let envp = self.export(&env, &shell);
        let mut argv = shell.cmd.clone();
        argv.push("-c".into());
        argv.push(cmd.to_string());
        let mut c = std::process::Command::new(self.shell_path(&argv[0]));
        c.arg0(&argv[0]).args(&argv[1..]).env_clear();
        for e in &envp {
            let s = e.to_string_lossy();
            if let Some((k, v)) = s.split_once('=') {
                c.env(k, v);
            }
        }
        c.stdin(std::process::Stdio::inherit());
        c.stderr(std::process::Stdio::inherit());
        match c.output() {
            Ok(o) => (o.stdout, o.status.success()),
            Err(e) => {
                eprintln!("{}: {}", argv[0], crate::ioerr(&e));
                (Vec::new(), false)
            }
        }
    }

    /// Run `cmd` with `sh -c`; whether it succeeded.
    pub fn pipecmd_status(&mut self, cmd: &str, sh: &Shell) -> bool {
        let mut argv = sh.cmd.clone();
        argv.push("-c".into());
        argv.push(cmd.to_string());
        let mut c = std::process::Command::new(self.shell_path(&argv[0]));
        c.arg0(&argv[0]).args(&argv[1..]);
        c.status().is_ok_and(|s| s.success())
    }

    /// Backquoted text in an mkfile line: the command's output less a final newline.
    pub fn backquote(&mut self, cmd: &str) -> String {
        let shell = self.shell.clone();
        let env = self.plain_env();
        let envp = self.export(&env, &shell);
        let mut argv = shell.cmd.clone();
        let mut c = std::process::Command::new(self.shell_path(&argv[0]));
        let a0 = argv.remove(0);
        c.arg0(&a0).args(&argv).env_clear();
        for e in &envp {
            let s = e.to_string_lossy();
            if let Some((k, v)) = s.split_once('=') {
                c.env(k, v);
            }
        }
        c.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped());
        let Ok(mut child) = c.spawn() else {
            return String::new();
        };
        if let Some(mut i) = child.stdin.take() {
            let text = cmd.to_string();
            std::thread::spawn(move || {
                let _ = i.write_all(text.as_bytes());
            });
        }
        let out = child
            .wait_with_output()
            .map(|o| o.stdout)
            .unwrap_or_default();
        let mut s = String::from_utf8_lossy(&out).into_owned();
        if s.ends_with('\n') {
            s.pop();
        }
        s
    }

    /// mk's variables as an environment (no recipe variables).
    fn plain_env(&self) -> Vec<(String, Vec<String>)> {
        let mut env: Vec<(String, Vec<String>)> = INTERNAL
            .iter()
            .map(|n| (n.to_string(), vec![String::new()]))
            .collect();
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        for n in names {
            if self.noexport.contains(n) || INTERNAL.contains(&n.as_str()) {
                continue;
            }
            env.push((n.clone(), self.vars[n].clone()));
        }
        env
    }

    /// `-t`: bring a target's date up to now (creating it if missing).
    pub fn touch(&mut self, name: &str) -> R<()> {
        self.bprint(&format!("touch({name})\n"));
        if self.nflag {
            return Ok(());
        }
        if name.contains('(') {
            crate::archive::atouch(name);
            return Ok(());
        }
        let r = if std::path::Path::new(name).exists() {
            let c = CString::new(name).unwrap_or_default();
            // SAFETY: utimes with a NUL-terminated path and a null times pointer (now).
            if unsafe { libc::utimes(c.as_ptr(), std::ptr::null()) } == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        } else {
            std::fs::File::create(name).map(|_| ())
        };
        if let Err(e) = r {
            self.flush();
            eprintln!("{name}: {}", crate::ioerr(&e));
            return Err(Failed);
        }
        Ok(())
    }
}

use std::os::unix::process::CommandExt;

/// A failed child's status in mk's words, or `None` for success.
fn status_text(st: libc::c_int) -> Option<String> {
    if libc::WIFSIGNALED(st) {
        let sig = libc::WTERMSIG(st);
        if libc::WCOREDUMP(st) {
            return Some(format!("signal {sig}, core dumped"));
        }
        return Some(format!("signal {sig}"));
    }
    let code = libc::WEXITSTATUS(st);
    (code != 0).then(|| format!("exit({code})"))
}

/// The first words of a recipe, for the failure message: up to three, `...`, the last.
pub fn front(s: &str) -> String {
    let mut f: Vec<&str> = s.split([' ', '\t', '\n']).collect();
    if f.len() > 5 {
        let last = f[f.len() - 1];
        f.truncate(3);
        f.push("...");
        f.push(last);
    }
    let mut out = String::new();
    for w in f {
        out.push_str(w);
        out.push(' ');
    }
    out
}

fn delete(name: &str) {
    if name.contains('(') {
        eprintln!("hoon off; mk can'tdelete archive members");
        return;
    }
    if let Err(e) = std::fs::remove_file(name).or_else(|_| std::fs::remove_dir(name)) {
        eprintln!("remove {name}: {}", crate::ioerr(&e));
    }
}

/// The time now, in nanoseconds.
pub fn now() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as i128)
}

pub fn atoi(s: &str) -> i64 {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut n: i64 = 0;
    for b in t.bytes().take_while(u8::is_ascii_digit) {
        n = n.saturating_mul(10).saturating_add((b - b'0') as i64);
    }
    if neg { -n } else { n }
}

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
        if self.dexec {
            self.flush();
            self.fprint1(&format!(
                "firing up job for target {}\n",
                j.targets.join(" ")
            ));
        }
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
        let own = self.job_envp(&env, &shell);
        // A one-command sh recipe with nothing for the shell to do runs without the
        // shell, as GNU make runs such commands.
        let direct = self
            .direct_argv(&recipe, &env, &shell)
            .map(|argv| (self.resolve(&argv[0]), argv));
        let base: &[CString] = self.env_cache.as_ref().map_or(&[], |(_, b)| b.as_slice());
        let envp: Vec<&std::ffi::CStr> = own
            .iter()
            .chain(base.iter())
            .map(|c| c.as_c_str())
            .collect();
        if let Some((prog, argv)) = direct {
            if let Ok(pid) = spawn(&prog, &argv, &envp, None) {
                drop(envp);
                self.usage();
                if self.dexec {
                    self.fprint1(&format!("pid for target {} = {pid}\n", j.targets.join(" ")));
                }
                self.slots[slot] = Some(Running { pid, job: j });
                return Ok(());
            }
        }
        match self.execsh(&shell, flags, &recipe, &envp) {
            Ok(pid) => {
                self.usage();
                if self.dexec {
                    self.fprint1(&format!("pid for target {} = {pid}\n", j.targets.join(" ")));
                }
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
            // A note that came while mk was busy (starting this recipe, say) did
            // not interrupt a wait: look before waiting.
            if crate::NOTE.load(std::sync::atomic::Ordering::SeqCst) != 0 {
                self.killchildren();
            }
            let mut st: libc::c_int = 0;
            // SAFETY: waitpid on our children with a valid status pointer.
            let pid = unsafe { libc::waitpid(-1, &mut st, 0) };
            if pid < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    if crate::NOTE.load(std::sync::atomic::Ordering::SeqCst) != 0 {
                        self.killchildren();
                    }
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
            self.usage();
            if self.dexec {
                let msg = status_text(st).unwrap_or_default();
                self.fprint1(&format!("waitup got pid={pid}, status='{msg}'\n"));
            }
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
        if self.dexec {
            self.fprint1(&format!("nprocs = {}\n", self.nproclimit));
        }
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
        env
    }

    /// A recipe's own environment strings; mk's, the same for every recipe, are made
    /// once, into `env_cache`.
    pub fn job_envp(&mut self, internal: &[(String, Vec<String>)], sh: &Shell) -> Vec<CString> {
        let out = self.export(internal, sh);
        let cached = matches!(&self.env_cache, Some((k, _)) if *k == sh.kind);
        if !cached {
            let mut base: Vec<(String, Vec<String>)> = Vec::new();
            let mut names: Vec<&String> = self.vars.keys().collect();
            names.sort();
            for n in names {
                if self.noexport.contains(n) || INTERNAL.contains(&n.as_str()) {
                    continue;
                }
                base.push((n.clone(), self.vars[n].clone()));
            }
            let strings = self.export(&base, sh);
            self.env_cache = Some((sh.kind, strings));
        }
        out
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
                let value = if INTERNAL.contains(&name.as_str()) {
                    env.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
                } else if self.weset.contains(&name) && !self.noexport.contains(&name) {
                    self.vars.get(&name)
                } else {
                    None
                };
                match value {
                    Some(v) => out.push_str(&v.join(" ")),
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

    /// Start the shell on the recipe. plan9port's mk gives it the recipe on standard
    /// input; ours passes it with `-c` (standard input /dev/null), so that the shell
    /// knows the last command is last and runs it without another fork, and gives it
    /// on standard input only when it is too long for an argument.
    fn execsh(
        &self,
        sh: &Shell,
        flags: &[&str],
        recipe: &str,
        envp: &[&std::ffi::CStr],
    ) -> std::io::Result<i32> {
        let mut argv: Vec<String> = sh.cmd.clone();
        argv.extend(flags.iter().map(|s| s.to_string()));
        // Only the shells we know take -c the same way; another MKSHELL program
        // gets the recipe on standard input, as plan9port gives it.
        let known = sh.cmd.len() == 1 && matches!(sh.cmd[0].as_str(), "sh" | "/bin/sh" | "rc");
        let inline = known && recipe.len() < 100 * 1024;
        if inline {
            argv.push("-c".into());
            argv.push(recipe.to_string());
        }
        let prog = self.shell_path(&argv[0]);
        let pipe = if inline { None } else { Some(pipe2()?) };
        let r = spawn(&prog, &argv, envp, pipe.as_ref().map(|(r, w)| (*r, *w)));
        let pid = match r {
            Ok(pid) => pid,
            Err(e) => {
                if let Some((r, w)) = pipe {
                    // SAFETY: closing our own pipe.
                    unsafe {
                        libc::close(r);
                        libc::close(w);
                    }
                }
                // As in plan9port, a shell that cannot be run fails like a recipe.
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
        if let Some((r, w)) = pipe {
            // SAFETY: the read end is the child's now; the write end is ours.
            unsafe { libc::close(r) };
            // SAFETY: w is a descriptor we own.
            let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(w) };
            let text = recipe.to_string();
            std::thread::spawn(move || {
                let _ = f.write_all(text.as_bytes());
            });
        }
        Ok(pid)
    }

    /// The words of a recipe that sh would run as one plain command: one line, no
    /// quoting, redirection, globbing or other shell syntax, not a shell built-in;
    /// `$name` and `${name}` are put in (split at blanks) as sh would. `None` when sh
    /// must run it.
    fn direct_argv(
        &self,
        recipe: &str,
        internal: &[(String, Vec<String>)],
        sh: &Shell,
    ) -> Option<Vec<String>> {
        if sh.kind != Kind::Sh
            || sh.cmd.len() != 1
            || !matches!(sh.cmd[0].as_str(), "sh" | "/bin/sh")
        {
            return None;
        }
        let line = recipe.strip_suffix('\n').unwrap_or(recipe);
        if line.is_empty() || line.contains(|c: char| "\n;&|<>()`\\\"'*?[]#~={}!^".contains(c)) {
            return None;
        }
        let mut words: Vec<String> = Vec::new();
        for raw in line.split([' ', '\t']).filter(|w| !w.is_empty()) {
            let mut cur = String::new();
            let mut fields: Vec<String> = Vec::new();
            let cs: Vec<char> = raw.chars().collect();
            let mut i = 0;
            while i < cs.len() {
                if cs[i] != '$' {
                    cur.push(cs[i]);
                    i += 1;
                    continue;
                }
                i += 1;
                let braced = cs.get(i) == Some(&'{');
                if braced {
                    i += 1;
                }
                let start = i;
                while i < cs.len() && (cs[i].is_ascii_alphanumeric() || cs[i] == '_') {
                    i += 1;
                }
                if i == start || cs[start].is_ascii_digit() {
                    return None;
                }
                let name: String = cs[start..i].iter().collect();
                if braced {
                    if cs.get(i) != Some(&'}') {
                        return None;
                    }
                    i += 1;
                }
                let value: Vec<String> = match internal.iter().find(|(k, _)| *k == name) {
                    Some((_, v)) => v.clone(),
                    None if self.noexport.contains(&name) => Vec::new(),
                    None => self.vars.get(&name).cloned().unwrap_or_default(),
                };
                let joined = value.join(" ");
                if joined.contains(['*', '?', '[']) {
                    return None;
                }
                // Unquoted, the value is split at blanks; its first piece joins what
                // came before, its last what comes after.
                let mut pieces = joined.split([' ', '\t', '\n']).peekable();
                let leading_blank = joined.starts_with([' ', '\t', '\n']);
                if let Some(first) = pieces.next() {
                    if leading_blank && !cur.is_empty() {
                        fields.push(std::mem::take(&mut cur));
                    }
                    cur.push_str(first);
                    for p in pieces {
                        if !cur.is_empty() {
                            fields.push(std::mem::take(&mut cur));
                        }
                        cur.push_str(p);
                    }
                }
            }
            if !cur.is_empty() {
                fields.push(cur);
            }
            words.extend(fields);
        }
        const BUILTIN: &[&str] = &[
            ".", ":", "[", "alias", "bg", "break", "case", "cd", "command", "continue", "do",
            "done", "echo", "elif", "else", "esac", "eval", "exec", "exit", "export", "false",
            "fc", "fg", "fi", "for", "function", "getopts", "hash", "if", "in", "jobs", "kill",
            "local", "printf", "pwd", "read", "readonly", "return", "select", "set", "shift",
            "test", "then", "times", "trap", "true", "type", "ulimit", "umask", "unalias", "unset",
            "until", "wait", "while",
        ];
        let first = words.first()?;
        if BUILTIN.contains(&first.as_str()) {
            return None;
        }
        Some(words)
    }

    /// Where `$PATH` (mk's variable) finds a command, remembered; the name itself if
    /// it has a `/` or is not found (then the spawn fails and sh runs the recipe, to
    /// say so in its words).
    fn resolve(&mut self, name: &str) -> std::path::PathBuf {
        if name.contains('/') {
            return std::path::PathBuf::from(name);
        }
        if let Some(p) = self.path_cache.get(name) {
            return p.clone();
        }
        let path = self
            .vars
            .get("PATH")
            .map(|v| v.join(" "))
            .unwrap_or_default();
        let found = path
            .split(':')
            .map(|d| std::path::Path::new(if d.is_empty() { "." } else { d }).join(name))
            .find(|p| {
                use std::os::unix::fs::PermissionsExt;
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
            .unwrap_or_else(|| std::path::PathBuf::from(name));
        self.path_cache.insert(name.to_string(), found.clone());
        found
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

fn pipe2() -> std::io::Result<(i32, i32)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((fds[0], fds[1]))
}

/// Start `prog` (searched in `$PATH` if it has no `/`) with posix_spawn: standard
/// input from `stdin` (a pipe's read end) or /dev/null, signals at their defaults.
fn spawn(
    prog: &std::path::Path,
    argv: &[String],
    envp: &[&std::ffi::CStr],
    stdin: Option<(i32, i32)>,
) -> std::io::Result<i32> {
    use std::os::unix::ffi::OsStrExt;
    let cprog =
        CString::new(prog.as_os_str().as_bytes()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let cargs: Vec<CString> = argv
        .iter()
        .filter_map(|a| CString::new(a.as_str()).ok())
        .collect();
    let mut pargv: Vec<*mut libc::c_char> = cargs.iter().map(|c| c.as_ptr() as *mut _).collect();
    pargv.push(std::ptr::null_mut());
    let mut penv: Vec<*mut libc::c_char> = envp.iter().map(|c| c.as_ptr() as *mut _).collect();
    penv.push(std::ptr::null_mut());
    let devnull = c"/dev/null";
    // SAFETY: the attribute and action objects are initialised, used and destroyed
    // here; every pointer passed stays valid for the call.
    unsafe {
        let mut fa: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut at: libc::posix_spawnattr_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut fa);
        libc::posix_spawnattr_init(&mut at);
        match stdin {
            Some((r, _)) => {
                libc::posix_spawn_file_actions_adddup2(&mut fa, r, 0);
            }
            None => {
                libc::posix_spawn_file_actions_addopen(
                    &mut fa,
                    0,
                    devnull.as_ptr(),
                    libc::O_RDONLY,
                    0,
                );
            }
        }
        let mut def: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut def);
        libc::sigaddset(&mut def, libc::SIGPIPE);
        libc::posix_spawnattr_setsigdefault(&mut at, &def);
        libc::posix_spawnattr_setflags(&mut at, libc::POSIX_SPAWN_SETSIGDEF as libc::c_short);
        let mut pid: libc::pid_t = 0;
        let r = libc::posix_spawnp(
            &mut pid,
            cprog.as_ptr(),
            &fa,
            &at,
            pargv.as_ptr(),
            penv.as_ptr(),
        );
        libc::posix_spawn_file_actions_destroy(&mut fa);
        libc::posix_spawnattr_destroy(&mut at);
        if r != 0 {
            return Err(std::io::Error::from_raw_os_error(r));
        }
        Ok(pid)
    }
}

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

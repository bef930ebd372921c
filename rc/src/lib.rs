//! rc: Plan 9's shell, as rc(1) describes it and plan9port ships it.
//!
//! - [`lex`] and [`parse`]: the language, into the tree of [`ast`];
//! - [`exec`]: expansion and running, with [`builtins`] and the patterns of [`glob`];
//! - [`interactive`]: the terminal front end (line editing, history, completion).
//!
//! Start-up follows plan9port's: an `rcmain` (embedded; `-m file`, `$RCMAIN` or
//! `$PLAN9/rcmain` replace it) sets the defaults and runs the `-c` string, the script,
//! or standard input.

pub mod ast;
pub mod builtins;
pub mod exec;
pub mod glob;
pub mod interactive;
pub mod lex;
pub mod parse;
pub mod stack;

use exec::{Res, Shell, Unwind};
use std::io::BufRead;
use std::io::Write;
use std::sync::atomic::{AtomicI32, Ordering};

/// The embedded rcmain.
pub const RCMAIN: &str = include_str!("rcmain.rc");

/// Lines from a file, read as they are needed (so that commands see the rest).
pub struct FileSource {
    r: std::io::BufReader<std::fs::File>,
}

impl FileSource {
    pub fn new(f: std::fs::File) -> FileSource {
        FileSource {
            r: std::io::BufReader::new(f),
        }
    }
}

impl lex::Source for FileSource {
    fn next_line(&mut self, _continued: bool) -> Option<String> {
        let mut buf = Vec::new();
        match self.r.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        }
    }
}

/// The last signal caught and not yet handled (0 if none).
pub static TRAP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    TRAP.store(sig, Ordering::SeqCst);
}

/// Catch a signal: its handler only notes it in [`TRAP`].
pub fn catch(sig: libc::c_int) {
    // SAFETY: installing a handler that only stores to an atomic.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Stop catching a signal whose note function was deleted: back to what rc does
/// without one.
pub fn uncatch(sig: libc::c_int, interactive: bool) {
    match sig {
        libc::SIGHUP | libc::SIGALRM | libc::SIGINT => {}
        libc::SIGQUIT | libc::SIGTERM if interactive => {
            // SAFETY: ignoring a signal.
            unsafe { libc::signal(sig, libc::SIG_IGN) };
        }
        _ => {
            // SAFETY: resetting a signal to its default.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// The signal behind a note function's name (`sigint` and the rest of rc(1)'s list).
pub fn note_signal(name: &str) -> Option<libc::c_int> {
    Some(match name {
        "sighup" => libc::SIGHUP,
        "sigint" => libc::SIGINT,
        "sigquit" => libc::SIGQUIT,
        "sigalrm" => libc::SIGALRM,
        "sigkill" | "sigterm" => libc::SIGTERM,
        "sigfpe" => libc::SIGFPE,
        _ => return None,
    })
}

/// Catch the signals rc handles itself. Every rc catches interrupts, hangups and
/// alarms: without a note function, an interrupt returns an interactive rc to its
/// prompt and ends any other (with the status it had), and the others end rc (after
/// `fn sigexit`). An interactive rc also ignores quit and terminate signals, as a
/// login shell should.
pub fn catch_signals(interactive: bool) {
    // A signal ignored when rc starts (`rc script &` from a shell that runs jobs with
    // interrupts ignored) stays ignored, as in plan9port, unless rc is interactive.
    let ignored = |sig: libc::c_int| {
        // SAFETY: reading the current disposition only.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            libc::sigaction(sig, std::ptr::null(), &mut old);
            old.sa_sigaction == libc::SIG_IGN
        }
    };
    for sig in [libc::SIGINT, libc::SIGHUP, libc::SIGALRM] {
        if (interactive && sig == libc::SIGINT) || !ignored(sig) {
            catch(sig);
        }
    }
    if interactive {
        // SAFETY: ignoring signals.
        unsafe {
            libc::signal(libc::SIGQUIT, libc::SIG_IGN);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
        }
    }
}

fn signote(sig: i32) -> (&'static [&'static str], &'static str) {
    match sig {
        libc::SIGINT => (&["sigint"], "interrupt"),
        libc::SIGHUP => (&["sighup"], "hangup"),
        libc::SIGTERM => (&["sigterm", "sigkill"], "kill"),
        libc::SIGALRM => (&["sigalrm"], "alarm"),
        libc::SIGQUIT => (&["sigquit"], "quit"),
        libc::SIGFPE => (&["sigfpe"], "sys: fp: "),
        _ => (&[], "kill"),
    }
}

impl Shell {
    /// Handle a caught signal. A note function for it runs, and what was running goes
    /// on; without one, an interrupt abandons the current command of an interactive rc
    /// and any other signal ends rc (after `fn sigexit`). Returns true if the current
    /// command should be abandoned.
    pub fn take_trap(&mut self) -> bool {
        let sig = TRAP.swap(0, Ordering::SeqCst);
        if sig == 0 {
            return false;
        }
        let (fnames, note) = signote(sig);
        for fname in fnames {
            if let Some(f) = self.fns.get(*fname).cloned() {
                let s = self.status();
                let _ = self.call(&f, &[fname.to_string()]);
                self.set_status(s);
                return false;
            }
        }
        if sig == libc::SIGINT {
            if self.interactive {
                let _ = writeln!(crate::exec::err());
                if self.status_true() {
                    self.set_status("interrupted");
                }
                return true;
            }
            let st = self.status();
            self.exit(&st);
        }
        self.set_status(note.to_string());
        self.exit(note);
    }

    /// Import the functions in the environment (`finit`).
    pub fn import_fns(&mut self) {
        for (k, v) in std::env::vars_os() {
            let (Ok(k), Ok(v)) = (k.into_string(), v.into_string()) else {
                continue;
            };
            if let Some(name) = k.strip_prefix("fn#") {
                let text = format!("fn {} {}", ast::quote(name), v);
                if let Ok(ast::Cmd::Fn { body: Some(b), .. }) = parse::parse_text(&text) {
                    self.define_fn(name, b);
                }
            }
        }
    }

    /// Run a program found in `$path` (not a function or built-in).
    pub fn run_program(&mut self, argv: &[String]) -> Res {
        let argv = argv.to_vec();
        let pid = self.fork_run(move |sh| sh.exec_here(&argv, &[]))?;
        self.wait_status(pid);
        Ok(())
    }

    /// Read and run commands from a source, a line at a time. `name` is the file for
    /// messages (none for `-c` and `eval`). Errors stop a non-interactive source.
    pub fn run_source(
        &mut self,
        src: Box<dyn lex::Source>,
        name: Option<String>,
        interactive: bool,
    ) -> Res {
        let mut lx = lex::Lexer::new(src);
        if self.flags.big_v || (self.flags.v && self.ndot >= 1) {
            lx.echo = Some(Box::new(|l: &str| {
                let _ = crate::exec::err().write_all(l.as_bytes());
            }));
        }
        self.ndot += 1;
        let mut p = parse::Parser::new(lx);
        let mut prev_if = false;
        let r = loop {
            if interactive {
                self.refresh_ui();
            }
            let got = p.line();
            if p.lx.take_interrupt() {
                // ^C at a prompt: drop what was typed, and handle the interrupt.
                p.reset();
                self.take_trap();
                continue;
            }
            match got {
                Ok(None) => break Ok(()),
                Ok(Some(c)) => {
                    if let Err(IfNotError) = check_ifnot(&c, &mut prev_if) {
                        self.syntax_error(
                            name.as_deref(),
                            p.lx.line,
                            "`if not' does not follow `if(...)'",
                            interactive,
                        );
                        if interactive {
                            continue;
                        }
                        break Err(Unwind::Error);
                    }
                    self.subst_here_docs(&c);
                    if self.flags.n && self.ndot >= 2 {
                        continue;
                    }
                    let mark = self.pipefds.len();
                    let r = self.run(&c);
                    self.pipefds.truncate(mark);
                    self.show_status();
                    if self.take_trap() && !interactive {
                        break Err(Unwind::Error);
                    }
                    if r.is_err() && !interactive {
                        break r;
                    }
                }
                Err(e) => {
                    // plan9port's lexer has read one line further by the time it
                    // reports, so its numbers are one past the line; ours match.
                    let line = if e.line == 0 { p.lx.line } else { e.line } + 1;
                    self.syntax_error(name.as_deref(), line, &e.msg, interactive);
                    if interactive {
                        p.recover();
                        continue;
                    }
                    break Err(Unwind::Error);
                }
            }
        };
        self.ndot -= 1;
        r
    }

    fn syntax_error(&mut self, name: Option<&str>, line: u32, msg: &str, interactive: bool) {
        let prefix = self.prefix();
        let mut e = crate::exec::err();
        let _ = match name {
            Some(n) if interactive => writeln!(e, "{prefix}: {n}: {msg}"),
            Some(n) => writeln!(e, "{prefix}: {n}:{line}: {msg}"),
            None => writeln!(e, "{prefix}: line {line}: {msg}"),
        };
        self.set_status(msg.to_string());
    }
}

/// An `if not` that does not follow an `if`.
#[derive(Debug)]
pub struct IfNotError;

/// `if not` must come straight after an `if` (or an `if not` whose body is an `if`).
pub fn check_ifnot(c: &ast::Cmd, prev_if: &mut bool) -> Result<(), IfNotError> {
    use ast::Cmd;
    match c {
        Cmd::Seq(v) => {
            for x in v {
                check_ifnot(x, prev_if)?;
            }
            return Ok(());
        }
        Cmd::IfNot(body) => {
            if !*prev_if {
                return Err(IfNotError);
            }
            let mut inner = false;
            check_ifnot(body, &mut inner)?;
            *prev_if = matches!(**body, Cmd::If { .. });
            return Ok(());
        }
        Cmd::If { cond, body } => {
            check_ifnot(cond, &mut false)?;
            check_ifnot(body, &mut false)?;
            *prev_if = true;
            return Ok(());
        }
        Cmd::Brace { body, .. } => check_ifnot(body, &mut false)?,
        Cmd::For { body, .. } | Cmd::While { body, .. } => check_ifnot(body, &mut false)?,
        Cmd::Switch { body, .. } => check_ifnot(body, &mut false)?,
        Cmd::Fn { body: Some(b), .. } => check_ifnot(b, &mut false)?,
        Cmd::And(a, b) | Cmd::Or(a, b) => {
            check_ifnot(a, &mut false)?;
            check_ifnot(b, &mut false)?;
        }
        Cmd::Not(x) | Cmd::Subshell(x) | Cmd::Async(x) => check_ifnot(x, &mut false)?,
        Cmd::Redirected { cmd, .. } => check_ifnot(cmd, &mut false)?,
        Cmd::Assign { body: Some(b), .. } => check_ifnot(b, &mut false)?,
        _ => {}
    }
    *prev_if = false;
    Ok(())
}

/// rc's command line: the flags, the `-c` string, the rcmain file and the rest.
type Args = (exec::Flags, Option<String>, Option<String>, Vec<String>);

/// Parse rc's command line: flags (getflags style: `-xe`, `-c cmd`, `-m file`), then
/// the arguments. Returns the flags, the `-c` string, the rcmain file and the rest.
fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut f = exec::Flags::default();
    let mut cflag = None;
    let mut mflag = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        if !a.starts_with('-') || a.len() < 2 {
            break;
        }
        let cs: Vec<char> = a[1..].chars().collect();
        let mut j = 0;
        while j < cs.len() {
            match cs[j] {
                'c' | 'm' => {
                    let rest: String = cs[j + 1..].iter().collect();
                    let val = if !rest.is_empty() {
                        rest
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.clone(),
                            None => return Err(format!("option -{} needs an argument", cs[j])),
                        }
                    };
                    if cs[j] == 'c' {
                        f.c = true;
                        cflag = Some(val);
                    } else {
                        mflag = Some(val);
                    }
                    j = cs.len();
                    continue;
                }
                'e' => f.e = true,
                'i' => f.i = true,
                'I' => f.big_i = true,
                'l' => f.l = true,
                'x' => f.x = true,
                'v' => f.v = true,
                'V' => f.big_v = true,
                's' => f.s = true,
                'p' => f.p = true,
                'r' => f.r = true,
                'n' => f.n = true,
                'd' | 'D' | 'S' | 'Y' => f.d = true,
                c => return Err(format!("unknown option -{c}")),
            }
            j += 1;
        }
        i += 1;
    }
    Ok((f, cflag, mflag, args[i..].to_vec()))
}

/// rc's main: run with these arguments (argv[0] first); returns the exit code.
pub fn main(argv: Vec<String>) -> i32 {
    stack::init();
    let argv0 = argv.first().cloned().unwrap_or_else(|| "rc".into());
    let (mut flags, cflag, mflag, args) = match parse_args(&argv[1..]) {
        Ok(x) => x,
        Err(e) => {
            let _ = writeln!(
                crate::exec::err(),
                "rc: {e}\nusage: rc [-SsrdiIlxevVpn] [-c command] [-m rcmain] [file [arg ...]]"
            );
            return 1;
        }
    };
    if argv0.starts_with('-') {
        flags.l = true;
    }
    if cflag.is_none() && args.is_empty() && !flags.big_i && exec::isatty(0) {
        flags.i = true;
    }
    if flags.big_i {
        flags.i = false;
    }
    let name = argv0.trim_start_matches('-').to_string();
    let mut sh = Shell::new(if argv0.starts_with('-') { "rc" } else { &name });
    sh.flags = flags;
    sh.interactive = sh.flags.i;
    catch_signals(sh.interactive);
    exec::save_stderr();
    sh.import_env(false);
    if sh.flags.l {
        login_namespace(&mut sh);
    }
    sh.set("pid", vec![std::process::id().to_string()]);
    sh.set("rcname", vec![argv0.clone()]);
    match &cflag {
        Some(c) => sh.set("cflag", vec![c.clone()]),
        None => sh.set("cflag", Vec::new()),
    }
    // rcmain: -m file, $RCMAIN, $PLAN9/rcmain, or the embedded one.
    let file = mflag
        .or_else(|| std::env::var("RCMAIN").ok().filter(|s| !s.is_empty()))
        .or_else(|| {
            std::env::var("PLAN9")
                .ok()
                .map(|p| format!("{p}/rcmain"))
                .filter(|p| std::path::Path::new(p).is_file())
        });
    // `rc file`: where `.` would not find file through $path, use the one here.
    let mut args = args;
    if cflag.is_none() {
        if let Some(first) = args.first_mut() {
            let plain =
                !(first.starts_with('/') || first.starts_with("./") || first.starts_with("../"));
            if plain
                && sh.find_in_path(first).is_none()
                && std::path::Path::new(first.as_str()).is_file()
            {
                *first = format!("./{first}");
            }
        }
    }
    sh.push_local("*", args);
    // `.` of rcmain sets $0 to its name, as in plan9port.
    let rcmain_name = file.clone().unwrap_or_else(|| "rcmain".to_string());
    sh.push_local("0", vec![rcmain_name]);
    let r = match file {
        Some(f) => match std::fs::File::open(&f) {
            Ok(fh) => sh.run_source(Box::new(FileSource::new(fh)), Some(f), false),
            Err(e) => {
                let _ = writeln!(
                    crate::exec::err(),
                    "{f}: {}: .: can't open: {}",
                    sh.prefix(),
                    exec::ioerr(&e)
                );
                return 1;
            }
        },
        None => {
            let src = lex::TextSource::new(RCMAIN);
            sh.run_source(Box::new(src), Some("rcmain".into()), false)
        }
    };
    let st = match r {
        Ok(()) => sh.status(),
        Err(_) if sh.status_true() => "error".to_string(),
        Err(_) => sh.status(),
    };
    sh.exit(&st);
}

/// A login starts in a private name space built from `$home/lib/namespace` (or the
/// default one), unless `$NONAMESPACE` is set or `$home/lib/nonamespace` exists.
/// Where user namespaces are denied, rc says why, once, and carries on in the
/// host's name space (plan9port's way: services are sockets in `$NAMESPACE`).
fn login_namespace(sh: &mut Shell) {
    let home = builtins::ns_var(sh, "home")
        .first()
        .cloned()
        .unwrap_or_else(|| "/".into());
    if std::env::var_os("NONAMESPACE").is_some_and(|v| !v.is_empty())
        || std::path::Path::new(&format!("{home}/lib/nonamespace")).exists()
    {
        return;
    }
    if let Err(why) = srv::ns::available() {
        let _ = writeln!(
            crate::exec::err(),
            "rc: no private name space: {why}; carrying on without one (see docs/namespaces.md)"
        );
        return;
    }
    if let Err(e) = builtins::new_namespace(sh, true) {
        let _ = writeln!(
            crate::exec::err(),
            "rc: {e}; carrying on without one (see docs/namespaces.md)"
        );
    }
}

/// What `rc --help` prints.
pub const USAGE_LONG: &str = "\
usage: rc [-SsrdiIlxevVpn] [-c command] [-m rcmain] [file [arg ...]]

Plan 9's shell. With no file and no -c, rc reads commands from standard input,
interactively if it is a terminal.

  -c command  run command, then exit
  -e          exit when a simple command fails
  -i          interactive: prompts, interrupts return to the prompt
  -I          not interactive, even on a terminal
  -l          login shell: run $home/lib/profile first
  -n          read and parse commands, but run none
  -p          do not import functions; path=(/bin /usr/bin)
  -s          print the status of each failing command
  -v          echo input as it is read
  -x          print each simple command before running it
  -m rcmain   start with this file instead of the built-in rcmain

See rc(1) and docs/rc.md.
";

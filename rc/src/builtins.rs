//! rc's built-in commands (rc(1), "Built-in commands", plan9port's set).

use crate::ast::quote;
use crate::exec::{Res, Shell, Unwind, errstr, ioerr};
use std::io::Write;

pub type Builtin = fn(&mut Shell, &[String]) -> Res;

/// The names of the built-in commands.
pub const NAMES: &[&str] = &[
    ".", "bind", "builtin", "cd", "eval", "exec", "exit", "finit", "flag", "mount", "rfork",
    "shift", "unmount", "wait", "whatis", "umask", "ulimit",
];

/// The built-in command of this name.
pub fn lookup(name: &str) -> Option<Builtin> {
    Some(match name {
        "." => dot,
        "bind" => namespace_cmd,
        "mount" => namespace_cmd,
        "unmount" => namespace_cmd,
        "builtin" => builtin,
        "cd" => cd,
        "eval" => eval,
        "exec" => exec,
        "exit" => exit,
        "finit" => finit,
        "flag" => flag,
        "rfork" => rfork,
        "shift" => shift,
        "wait" => wait,
        "whatis" => whatis,
        "umask" => umask,
        "ulimit" => ulimit,
        _ => return None,
    })
}

/// A usage error that is an rc error (`rc: Usage: ...`; a script stops), as plan9port
/// treats `.`, `eval`, `flag`, `wait` and `whatis`.
fn fatal_usage(sh: &mut Shell, u: &str) -> Res {
    sh.error(&format!("Usage: {u}"));
    sh.set_status("error");
    Err(Unwind::Error)
}

fn usage(sh: &mut Shell, u: &str) -> Res {
    let _ = writeln!(crate::exec::err(), "Usage: {u}");
    sh.set_status("usage");
    Ok(())
}

/// `. [-i] file [arg ...]`
fn dot(sh: &mut Shell, argv: &[String]) -> Res {
    // As plan9port: only a first `-i` is an option.
    let interactive = argv.get(1).is_some_and(|a| a == "-i");
    let i = if interactive { 2 } else { 1 };
    let Some(file) = argv.get(i) else {
        return fatal_usage(sh, ". [-i] file [arg ...]");
    };
    let args = argv[i + 1..].to_vec();
    let path = if file.starts_with('/') || file.starts_with("./") || file.starts_with("../") {
        Some(file.clone())
    } else {
        sh.find_in_path(file)
    };
    let f = match path.as_deref().map(std::fs::File::open) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            let _ = writeln!(
                crate::exec::err(),
                "{file}: {}: .: can't open: {}",
                sh.prefix(),
                ioerr(&e)
            );
            sh.set_status("can't open");
            return Err(Unwind::Error);
        }
        None => {
            let _ = writeln!(
                crate::exec::err(),
                "{file}: {}: .: can't open: No such file or directory",
                sh.prefix()
            );
            sh.set_status("can't open");
            return Err(Unwind::Error);
        }
    };
    if sh.depth >= crate::exec::MAX_CALL_DEPTH {
        sh.error(". files nested too deeply");
        sh.set_status("error");
        return Err(Unwind::Error);
    }
    sh.depth += 1;
    sh.push_local("*", args);
    sh.push_local("0", vec![file.clone()]);
    let r = if interactive {
        crate::interactive::run_interactive(sh, f, file)
    } else {
        let src = crate::FileSource::new(f);
        sh.run_source(Box::new(src), Some(file.clone()), false)
    };
    sh.pop_local("0");
    sh.pop_local("*");
    sh.depth -= 1;
    r
}

impl Shell {
    /// Where `.` finds a file through `$path`.
    pub fn find_in_path(&self, file: &str) -> Option<String> {
        self.get("path").iter().find_map(|d| {
            let p = if d.is_empty() {
                file.to_string()
            } else {
                format!("{d}/{file}")
            };
            std::fs::metadata(&p)
                .is_ok_and(|m| m.is_file())
                .then_some(p)
        })
    }
}

/// `builtin cmd [arg ...]`: run the built-in (or program) even if a function has the name.
fn builtin(sh: &mut Shell, argv: &[String]) -> Res {
    let Some(name) = argv.get(1) else {
        let _ = writeln!(crate::exec::err(), "builtin: empty argument list");
        sh.set_status("empty arg list");
        return Ok(());
    };
    if let Some(b) = lookup(name) {
        return b(sh, &argv[1..]);
    }
    sh.run_program(&argv[1..])
}

/// `cd [dir]`
fn cd(sh: &mut Shell, argv: &[String]) -> Res {
    let target = match argv.len() {
        1 => match sh.get("home").first() {
            Some(h) => h.clone(),
            None => {
                let _ = writeln!(crate::exec::err(), "Can't cd -- $home empty");
                sh.set_status("can't cd");
                return Ok(());
            }
        },
        2 => argv[1].clone(),
        _ => {
            let _ = writeln!(crate::exec::err(), "Usage: cd [directory]");
            sh.set_status("can't cd");
            return Ok(());
        }
    };
    let absolute = target.starts_with('/') || target.starts_with("./") || target.starts_with("../");
    let cdpath: Vec<String> = if absolute {
        vec![String::new()]
    } else {
        let c = sh.get("cdpath").to_vec();
        if c.is_empty() { vec![String::new()] } else { c }
    };
    let mut last_err = None;
    for dir in &cdpath {
        let p = if dir.is_empty() {
            target.clone()
        } else {
            format!("{dir}/{target}")
        };
        match std::env::set_current_dir(&p) {
            Ok(()) => {
                if !dir.is_empty() && dir != "." {
                    let _ = writeln!(crate::exec::err(), "{p}");
                }
                sh.set_status("");
                return Ok(());
            }
            Err(e) => last_err = Some(e),
        }
    }
    let msg = last_err.map_or_else(|| "No such file or directory".to_string(), |e| ioerr(&e));
    let _ = writeln!(crate::exec::err(), "Can't cd {target}: {msg}");
    sh.set_status("can't cd");
    Ok(())
}

/// `eval [arg ...]`: the arguments, joined by spaces, as rc input.
fn eval(sh: &mut Shell, argv: &[String]) -> Res {
    if argv.len() < 2 {
        return fatal_usage(sh, "eval cmd ...");
    }
    let text = argv[1..].join(" ");
    let src = crate::lex::TextSource::new(text + "\n");
    sh.run_source(Box::new(src), None, false)
}

/// `exec [command ...]`: replace rc by the command.
fn exec(sh: &mut Shell, argv: &[String]) -> Res {
    if argv.len() < 2 {
        sh.error("empty argument list");
        sh.set_status("empty argument list");
        return Err(Unwind::Error);
    }
    let _ = std::io::stdout().flush();
    crate::exec::restore_signals();
    sh.exec_here(&argv[1..], &[]);
}

/// `exit [status]`
fn exit(sh: &mut Shell, argv: &[String]) -> Res {
    let st = match argv.len() {
        1 => sh.status(),
        2 => argv[1].clone(),
        _ => {
            let _ = writeln!(crate::exec::err(), "Usage: exit [status]\nExiting anyway");
            argv[1].clone()
        }
    };
    sh.set_status(st.clone());
    sh.exit(&st);
}

/// `finit`: import the functions in the environment.
fn finit(sh: &mut Shell, _argv: &[String]) -> Res {
    sh.import_fns();
    sh.set_status("");
    Ok(())
}

/// `flag f [+-]`
fn flag(sh: &mut Shell, argv: &[String]) -> Res {
    if argv.len() < 2 || argv.len() > 3 || argv[1].chars().count() != 1 {
        return fatal_usage(sh, "flag [letter] [+-]");
    }
    let c = argv[1].chars().next().unwrap_or(' ');
    let set = match argv.get(2).map(String::as_str) {
        None => None,
        Some("+") => Some(true),
        Some("-") => Some(false),
        Some(_) => return fatal_usage(sh, "flag [letter] [+-]"),
    };
    let f = &mut sh.flags;
    let slot: Option<&mut bool> = match c {
        'e' => Some(&mut f.e),
        'i' => Some(&mut f.i),
        'l' => Some(&mut f.l),
        'x' => Some(&mut f.x),
        'v' => Some(&mut f.v),
        's' => Some(&mut f.s),
        'p' => Some(&mut f.p),
        'r' => Some(&mut f.r),
        'V' => Some(&mut f.big_v),
        'I' => Some(&mut f.big_i),
        'd' => Some(&mut f.d),
        'c' => Some(&mut f.c),
        _ => None,
    };
    match (slot, set) {
        (Some(s), Some(v)) => {
            *s = v;
            sh.set_status("");
        }
        (Some(s), None) => {
            let on = *s;
            sh.set_status(if on { "" } else { "flag not set" });
        }
        (None, Some(v)) => {
            if v {
                sh.flags.other.insert(c);
            } else {
                sh.flags.other.remove(&c);
            }
            sh.set_status("");
        }
        (None, None) => {
            let on = sh.flags.other.contains(&c);
            sh.set_status(if on { "" } else { "flag not set" });
        }
    }
    Ok(())
}

/// `rfork [nNeEsfFm]`. Of the flags that matter on Unix, `s` puts rc in a new process
/// group, `e`/`E` are no-ops but for `E` clearing what is exported, `F` closes
/// descriptors, `n` gives rc a private copy of its name space and `N` a clean one,
/// built from `$home/lib/namespace` (or the default). See docs/namespaces.md.
fn rfork(sh: &mut Shell, argv: &[String]) -> Res {
    // Without flags: a new environment, name space and note group, as in rc(1).
    let flags = argv.get(1).map_or("ens", String::as_str);
    if argv.len() > 2 || flags.chars().any(|c| !"nNeEsfFm".contains(c)) {
        return usage(sh, "rfork [nNeEsfFm]");
    }
    let mut status = String::new();
    for c in flags.chars() {
        match c {
            // A new note group: a process group of its own.
            's' => {
                let _ = nix::unistd::setpgid(
                    nix::unistd::Pid::from_raw(0),
                    nix::unistd::Pid::from_raw(0),
                );
            }
            // A clean environment: what is set from now on is exported, nothing else.
            'E' => {
                let mut names: Vec<String> = sh.var_names();
                names.extend(sh.fns.keys().map(|k| format!("fn#{k}")));
                sh.unexported.extend(names);
                sh.env_cache_clear();
            }
            // A clean descriptor table, but for standard input, output and error.
            'F' => close_from(3),
            'n' | 'N' => {
                if let Err(e) = new_namespace(sh, c == 'N') {
                    let _ = writeln!(crate::exec::err(), "rfork: {e}");
                    status = e;
                }
            }
            // A process's environment and descriptors are its own copies already; `m`
            // (no more mounts) has no Linux counterpart and is accepted as is.
            _ => {}
        }
    }
    sh.set_status(status);
    Ok(())
}

/// The value of `name` for a namespace file: rc's variable, else the environment's
/// (`home` and `user` fall back on `HOME` and `USER`).
pub(crate) fn ns_var(sh: &Shell, name: &str) -> Vec<String> {
    let v = sh.get(name);
    if !v.is_empty() {
        return v.to_vec();
    }
    let env = |n: &str| std::env::var(n).ok().filter(|s| !s.is_empty());
    match env(name).or_else(|| match name {
        "home" => env("HOME"),
        "user" => env("USER"),
        _ => None,
    }) {
        Some(s) => vec![s],
        None => Vec::new(),
    }
}

/// A private name space for rc (`rfork n`), or a clean one built from the
/// namespace file (`rfork N`, a login).
pub fn new_namespace(sh: &mut Shell, clean: bool) -> Result<(), String> {
    srv::ns::fork(clean).map_err(|e| e.to_string())?;
    if clean {
        let home = ns_var(sh, "home")
            .first()
            .cloned()
            .unwrap_or_else(|| "/".into());
        let own = format!("{home}/lib/namespace");
        let (text, name) = match std::fs::read_to_string(&own) {
            Ok(t) => (t, own),
            Err(_) => (srv::ns::file::DEFAULT.to_string(), "namespace".to_string()),
        };
        let var = |n: &str| ns_var(sh, n);
        srv::ns::file::run(&text, &name, &var, &mut |m| {
            let _ = writeln!(crate::exec::err(), "rc: {m}");
        });
    }
    Ok(())
}

/// `bind`, `mount` and `unmount`, as bind(1) describes them.
fn namespace_cmd(sh: &mut Shell, argv: &[String]) -> Res {
    if !srv::ns::is_private() {
        let _ = writeln!(
            crate::exec::err(),
            "{}: not in a private name space (rfork n makes one)",
            argv[0]
        );
        sh.set_status("no name space");
        return Ok(());
    }
    match srv::ns::file::command(argv) {
        Ok(()) => sh.set_status(""),
        Err(e) => {
            let _ = writeln!(crate::exec::err(), "{e}");
            sh.set_status(if e.starts_with("usage") || e.contains("usage:") {
                "usage".to_string()
            } else {
                e
            });
        }
    }
    Ok(())
}

/// Close every descriptor from `low` up, except rc's own.
fn close_from(low: i32) {
    let keep = crate::exec::err_fd();
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    for fd in fds {
        if fd >= low && fd != keep {
            // SAFETY: closing a descriptor number; ones already closed give EBADF.
            unsafe { libc::close(fd) };
        }
    }
}

/// `shift [n]`
fn shift(sh: &mut Shell, argv: &[String]) -> Res {
    let n = match argv.len() {
        1 => 1,
        2 => atoi(&argv[1]).max(0) as usize,
        _ => {
            let _ = writeln!(crate::exec::err(), "Usage: shift [n]");
            sh.set_status("shift usage");
            return Ok(());
        }
    };
    let all = sh.get("*").to_vec();
    let rest = if n >= all.len() {
        Vec::new()
    } else {
        all[n..].to_vec()
    };
    sh.set("*", rest);
    sh.set_status("");
    Ok(())
}

/// `wait [pid]`
fn wait(sh: &mut Shell, argv: &[String]) -> Res {
    match argv.len() {
        1 => sh.wait_cmd(None),
        2 => sh.wait_cmd(Some(atoi(&argv[1]) as i32)),
        _ => return fatal_usage(sh, "wait [pid]"),
    }
    Ok(())
}

/// C's atoi: leading blanks, a sign, digits; anything else ends it.
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

/// How `whatis` shows a variable.
pub fn show_var(name: &str, v: &[String]) -> String {
    let n = quote(name);
    if v.len() == 1 {
        format!("{n}={}", quote(&v[0]))
    } else {
        let items: Vec<String> = v.iter().map(|x| quote(x)).collect();
        format!("{n}=({})", items.join(" "))
    }
}

/// `whatis name ...`
fn whatis(sh: &mut Shell, argv: &[String]) -> Res {
    if argv.len() < 2 {
        return fatal_usage(sh, "whatis name ...");
    }
    let mut found_all = true;
    let mut out = String::new();
    for name in &argv[1..] {
        let mut found = false;
        let v = sh.get(name);
        if !v.is_empty() {
            out.push_str(&show_var(name, v));
            out.push('\n');
            found = true;
        }
        // A function hides a built-in or program of the same name; `builtin` itself
        // is not in the table of built-ins.
        if let Some(f) = sh.fns.get(name) {
            out.push_str(&format!("fn {} {{{}}}\n", quote(name), f.body));
            found = true;
        } else if lookup(name).is_some() && name != "builtin" {
            out.push_str(&format!("builtin {name}\n"));
            found = true;
        } else if let Some(p) = sh.search(name) {
            if std::fs::metadata(&p).is_ok() {
                out.push_str(&p);
                out.push('\n');
                found = true;
            }
        }
        if !found {
            let _ = std::io::stdout().write_all(out.as_bytes());
            out.clear();
            let _ = writeln!(crate::exec::err(), "{name}: not found");
            found_all = false;
        }
    }
    let _ = std::io::stdout().write_all(out.as_bytes());
    sh.set_status(if found_all { "" } else { "not found" });
    Ok(())
}

/// `umask [octal]`
fn umask(sh: &mut Shell, argv: &[String]) -> Res {
    match argv.len() {
        1 => {
            // SAFETY: umask has no preconditions; set it back at once.
            let m = unsafe { libc::umask(0) };
            // SAFETY: as above.
            unsafe { libc::umask(m) };
            println!("umask {m:03o}");
        }
        2 => match u32::from_str_radix(&argv[1], 8) {
            Ok(m) if m <= 0o777 => {
                // SAFETY: setting the process umask.
                unsafe { libc::umask(m as libc::mode_t) };
            }
            _ => {
                let _ = writeln!(crate::exec::err(), "umask: bad mask {}", argv[1]);
                sh.set_status("bad umask");
                return Ok(());
            }
        },
        _ => return usage(sh, "umask [mode]"),
    }
    sh.set_status("");
    Ok(())
}

const LIMITS: &[(char, &str, libc::__rlimit_resource_t, u64)] = &[
    ('c', "core", libc::RLIMIT_CORE, 1024),
    ('d', "data", libc::RLIMIT_DATA, 1024),
    ('f', "file", libc::RLIMIT_FSIZE, 1024),
    ('l', "locked", libc::RLIMIT_MEMLOCK, 1024),
    ('m', "rss", libc::RLIMIT_RSS, 1024),
    ('n', "files", libc::RLIMIT_NOFILE, 1),
    ('s', "stack", libc::RLIMIT_STACK, 1024),
    ('t', "time", libc::RLIMIT_CPU, 1),
    ('u', "procs", libc::RLIMIT_NPROC, 1),
    ('v', "vmem", libc::RLIMIT_AS, 1024),
];

/// `ulimit [-SHa] [-cdflmnstuv] [limit|unlimited]`, as plan9port's rc has it.
fn ulimit(sh: &mut Shell, argv: &[String]) -> Res {
    let mut hard = false;
    let mut all = false;
    let mut which = 'f';
    let mut i = 1;
    while i < argv.len() && argv[i].starts_with('-') {
        for c in argv[i][1..].chars() {
            match c {
                'H' => hard = true,
                'S' => hard = false,
                'a' => all = true,
                c if LIMITS.iter().any(|l| l.0 == c) => which = c,
                _ => return usage(sh, "ulimit [-SHa] [-cdflmnstuv] [limit|unlimited]"),
            }
        }
        i += 1;
    }
    let get = |res: libc::__rlimit_resource_t| -> (u64, u64) {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills the struct we pass.
        unsafe { libc::getrlimit(res, &mut r) };
        (r.rlim_cur, r.rlim_max)
    };
    let show = |v: u64, unit: u64| -> String {
        if v == libc::RLIM_INFINITY {
            "unlimited".into()
        } else {
            (v / unit).to_string()
        }
    };
    if all {
        for (c, _, res, unit) in LIMITS {
            let (s, h) = get(*res);
            println!("ulimit -{c} {}", show(if hard { h } else { s }, *unit));
        }
        sh.set_status("");
        return Ok(());
    }
    let Some(&(c, _, res, unit)) = LIMITS.iter().find(|l| l.0 == which) else {
        return usage(sh, "ulimit");
    };
    match argv.get(i) {
        None => {
            let (s, h) = get(res);
            println!("ulimit -{c} {}", show(if hard { h } else { s }, unit));
        }
        Some(v) => {
            let (mut s, mut h) = get(res);
            let n = if v == "unlimited" {
                libc::RLIM_INFINITY
            } else {
                match v.parse::<u64>() {
                    Ok(n) => n.saturating_mul(unit),
                    Err(_) => return usage(sh, "ulimit [-SHa] [-cdflmnstuv] [limit|unlimited]"),
                }
            };
            if hard {
                h = n;
            } else {
                s = n;
            }
            let r = libc::rlimit {
                rlim_cur: s,
                rlim_max: h,
            };
            // SAFETY: setrlimit with a struct we filled.
            if unsafe { libc::setrlimit(res, &r) } != 0 {
                let e = nix::Error::last();
                let _ = writeln!(crate::exec::err(), "ulimit: {}", errstr(e));
                sh.set_status("ulimit failed");
                return Ok(());
            }
        }
    }
    sh.set_status("");
    Ok(())
}

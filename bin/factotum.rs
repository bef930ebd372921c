//! factotum: the authentication agent (factotum(4)). See docs/factotum.md.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;
use factotum::fs::{Factotum, WAIT};
use factotum::keyfile::{self, KeyFileError, ProgramPrompter, Tty, TtyPrompter};
use srv::daemon::{self, Opts, fatal};
use zeroize::Zeroizing;

/// Hold keys and speak authentication protocols for programs (docs/factotum.md).
///
/// Posts itself as `factotum` (or the -s name) in $NAMESPACE, socket mode 0600, and
/// goes into the background once it accepts connections, unless -f is given. At start
/// it loads the keys of the key file (-k, default $HOME/lib/factotum.keys), asking
/// its password on the terminal.
#[derive(Parser)]
#[command(name = "factotum", version)]
struct Args {
    /// Do not load the key file, and do not prompt on the terminal
    #[arg(short = 'n', conflicts_with_all = ["keyfile", "passfd"])]
    no_keyfile: bool,
    /// The key file (default $HOME/lib/factotum.keys)
    #[arg(short = 'k', value_name = "keyfile")]
    keyfile: Option<PathBuf>,
    /// Read the key file's password, the first line, from this open file descriptor
    /// instead of the terminal
    #[arg(short = 'P', value_name = "fd")]
    passfd: Option<i32>,
    /// Ask this program for missing keys and confirmations when nobody has needkey
    /// or confirm open: `prog needkey TEMPLATE`, `prog confirm KEY`
    #[arg(short = 'G', value_name = "prog")]
    prompter: Option<String>,
    /// Prompt on the terminal for a key matching the template, write it to the
    /// running factotum's ctl, and exit (plan9port's getkey)
    #[arg(short = 'g', value_name = "template", conflicts_with_all = ["write", "read", "keyfile", "passfd", "prompter"])]
    getkey: Option<String>,
    /// Write the key file: the `key ...` lines on standard input, sealed with a new
    /// password, then exit
    #[arg(short = 'w', conflicts_with_all = ["read", "no_keyfile"])]
    write: bool,
    /// Print the key file's lines, secrets and all, on standard output, then exit
    #[arg(short = 'r', conflicts_with = "no_keyfile")]
    read: bool,
    /// Post the service as NAME in $NAMESPACE
    #[arg(short = 's', value_name = "srvname", default_value = "factotum")]
    srvname: String,
    /// Where to mount the service in a private name space (default /mnt/factotum)
    #[arg(short = 'm', value_name = "mtpt")]
    mtpt: Option<String>,
    /// The authentication server, tcp!host[!port] (p9sk1 clients get tickets
    /// there when the key has no auth= attribute)
    #[arg(short = 'a', value_name = "authaddr")]
    authaddr: Option<String>,
    /// Print debugging messages on standard error (no secret is ever printed)
    #[arg(short = 'd')]
    debug: bool,
    /// Print every 9P message on standard error
    #[arg(short = 'D')]
    trace: bool,
    /// Stay in the foreground
    #[arg(short = 'f')]
    foreground: bool,
}

/// Keep the process's memory out of core dumps, ptrace by other users and swap.
fn harden(debug: bool) {
    // SAFETY: prctl with PR_SET_DUMPABLE takes an integer argument.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        fatal("factotum", "cannot make the process undumpable");
    }
    // Lock all memory when the limit allows it; with a small RLIMIT_MEMLOCK,
    // MCL_FUTURE would make later allocations fail, so then memory is not locked.
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct we pass.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl) } == 0;
    if ok && (rl.rlim_cur == libc::RLIM_INFINITY || rl.rlim_cur >= 512 << 20) {
        // SAFETY: mlockall takes flags only.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_FUTURE) } != 0 && debug {
            eprintln!("factotum: mlockall failed; memory not locked");
        }
    } else if debug {
        eprintln!("factotum: RLIMIT_MEMLOCK too small; memory not locked");
    }
}

fn die(msg: impl std::fmt::Display) -> ! {
    fatal("factotum", msg)
}

/// The key file named by -k, else the default; and whether it was named.
fn keyfile_path(a: &Args) -> (PathBuf, bool) {
    match &a.keyfile {
        Some(p) => (p.clone(), true),
        None => (keyfile::default_path().unwrap_or_else(|e| die(e)), false),
    }
}

/// The password of an existing key file, from -P or, once, the terminal.
fn password_once(a: &Args, prompt: &str) -> Zeroizing<String> {
    match a.passfd {
        Some(fd) => keyfile::read_password_fd(fd).unwrap_or_else(|e| die(format!("-P {fd}: {e}"))),
        None => {
            let mut tty = Tty::open().unwrap_or_else(|e| die(format!("/dev/tty: {e}")));
            match tty.ask(prompt, false) {
                Ok(Some(p)) => p,
                Ok(None) => die("no password"),
                Err(e) => die(format!("/dev/tty: {e}")),
            }
        }
    }
}

/// At start: load the key file's keys, asking its password (secstore's way: a
/// wrong password is asked again, an empty one goes on without the keys). An error
/// is the end of factotum.
fn load_keys(fs: &Factotum, a: &Args, tty: Option<&mut Tty>) -> Result<(), String> {
    let (path, named) = match &a.keyfile {
        Some(p) => (p.clone(), true),
        None => match keyfile::default_path() {
            Ok(p) => (p, false),
            Err(_) => return Ok(()),
        },
    };
    let name = path.display().to_string();
    let data = match keyfile::read(&path) {
        Ok(d) => d,
        Err(KeyFileError::NotFound(_)) if !named => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    keyfile::header(&data).map_err(|e| format!("{name}: {e}"))?;
    let text = match (a.passfd, tty) {
        (Some(fd), _) => {
            let pw = keyfile::read_password_fd(fd).map_err(|e| format!("-P {fd}: {e}"))?;
            keyfile::open(pw.as_bytes(), &data).map_err(|e| format!("{name}: {e}"))?
        }
        (None, None) => {
            eprintln!(
                "factotum: no terminal to ask the password of {name}: its keys are not loaded (give -P fd, or -n)"
            );
            return Ok(());
        }
        (None, Some(tty)) => loop {
            let pw = match tty.ask("key file password: ", false) {
                Ok(Some(p)) if !p.is_empty() => p,
                Ok(_) => {
                    eprintln!("factotum: the keys of {name} are not loaded");
                    return Ok(());
                }
                Err(e) => return Err(format!("/dev/tty: {e}")),
            };
            match keyfile::open(pw.as_bytes(), &data) {
                Ok(t) => break t,
                Err(KeyFileError::WrongPassword) => {
                    let _ = tty.say("factotum: wrong password\nEnter an empty password to quit.\n");
                }
                Err(e) => return Err(format!("{name}: {e}")),
            }
        },
    };
    let text =
        std::str::from_utf8(&text).map_err(|_| format!("{name}: {}", KeyFileError::NotText))?;
    for e in keyfile::load(fs, text) {
        eprintln!("factotum: {name}: {e}");
    }
    Ok(())
}

/// -w: seal the `key` lines of standard input into the key file.
fn write_keys(a: &Args) {
    let (path, _) = keyfile_path(a);
    if a.passfd == Some(0) {
        die("-P 0 -w: standard input holds the keys");
    }
    let raw = keyfile::read_secret_all(&mut std::io::stdin().lock())
        .unwrap_or_else(|e| die(format!("reading keys: {e}")));
    let text = std::str::from_utf8(&raw).unwrap_or_else(|_| die("keys: not UTF-8"));
    let errs = keyfile::check(text);
    if !errs.is_empty() {
        for e in &errs {
            eprintln!("factotum: {e}");
        }
        die("key file not written");
    }
    let pw = match a.passfd {
        Some(fd) => keyfile::read_password_fd(fd).unwrap_or_else(|e| die(format!("-P {fd}: {e}"))),
        None => {
            let mut tty = Tty::open().unwrap_or_else(|e| die(format!("/dev/tty: {e}")));
            let ask = |tty: &mut Tty, p: &str| match tty.ask(p, false) {
                Ok(Some(p)) => p,
                Ok(None) => die("no password"),
                Err(e) => die(format!("/dev/tty: {e}")),
            };
            let one = ask(&mut tty, "new key file password: ");
            let two = ask(&mut tty, "again: ");
            if one != two {
                die("the passwords differ; key file not written");
            }
            one
        }
    };
    if pw.is_empty() {
        die("empty password; key file not written");
    }
    let sealed = keyfile::seal(pw.as_bytes(), text.as_bytes(), keyfile::Params::default())
        .unwrap_or_else(|e| die(e));
    keyfile::write(&path, &sealed).unwrap_or_else(|e| die(e));
}

/// -r: print the key file's text.
fn read_keys(a: &Args) {
    use std::io::Write;
    let (path, _) = keyfile_path(a);
    let name = path.display().to_string();
    let data = keyfile::read(&path).unwrap_or_else(|e| die(e));
    if let Err(e) = keyfile::header(&data) {
        die(format!("{name}: {e}"));
    }
    let pw = password_once(a, "key file password: ");
    let text = keyfile::open(pw.as_bytes(), &data).unwrap_or_else(|e| die(format!("{name}: {e}")));
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&text).and_then(|()| out.flush()) {
        die(format!("writing keys: {e}"));
    }
}

/// -g: prompt for a key and give it to the running factotum (plan9port's getkey).
fn getkey(a: &Args, template: &str) {
    let mut tty = Tty::open().unwrap_or_else(|e| die(format!("open /dev/tty: {e}")));
    let _ = tty.say("\n");
    let key = match keyfile::prompt_key(&mut tty, template, &lib9::ns::user()) {
        Ok(Some(k)) => k,
        Ok(None) => die("user terminated key input"),
        Err(e) => die(e),
    };
    let send = || -> Result<(), lib9::client::Error> {
        let c = lib9::blocking::Client::dial(&a.srvname)?;
        let root = c.attach(&lib9::ns::user(), "")?;
        let mut ctl = root.walk("ctl")?;
        ctl.open(lib9::fcall::OWRITE)?;
        let line = Zeroizing::new(format!("key {}", key.as_str()));
        ctl.write(0, bytes::Bytes::copy_from_slice(line.as_bytes()))?;
        Ok(())
    };
    if let Err(e) = send() {
        die(format!("sending key to factotum: {e}"));
    }
}

fn isatty(fd: i32) -> bool {
    // SAFETY: isatty only looks at the descriptor.
    unsafe { libc::isatty(fd) == 1 }
}

fn main() {
    let a: Args = daemon::args();
    harden(a.debug);
    if let Some(t) = &a.getkey {
        getkey(&a, t);
        return;
    }
    if a.write {
        write_keys(&a);
        return;
    }
    if a.read {
        read_keys(&a);
        return;
    }
    // In a private name space the service is also mounted, as Plan 9's factotum mounts
    // itself on /mnt.
    let selfmount =
        daemon::SelfMount::new(&a.srvname, a.mtpt.as_deref().unwrap_or("/mnt/factotum"));
    // The posted socket must be the user's alone: 0600.
    // SAFETY: umask only sets the process's file creation mask.
    unsafe { libc::umask(0o077) };
    let o = Opts::posted(&a.srvname, a.foreground);
    let path = lib9::ns::service_path(&a.srvname).unwrap_or_else(|e| die(e));
    // A live factotum under this name is found before the password is asked.
    if std::os::unix::net::UnixStream::connect(&path).is_ok() {
        die(lib9::ns::NsError::Posted(a.srvname.clone()));
    }
    let user = lib9::ns::user();
    let fs = Factotum::new(&user).with_authaddr(a.authaddr.clone());
    if a.debug {
        let _ = fs.ctl("debug");
    }
    // The terminal, opened before leaving it for the background: for the key file's
    // password and, when started from it, for prompting. The keys are loaded before
    // the service is posted, so no client finds a factotum that then fails to start.
    let mut tty = if a.no_keyfile { None } else { Tty::open().ok() };
    if !a.no_keyfile {
        if let Err(e) = load_keys(&fs, &a, tty.as_mut()) {
            die(e);
        }
    }
    let listeners = daemon::announce_all(&o).unwrap_or_else(|e| die(e));
    {
        use std::os::unix::fs::PermissionsExt;
        if let Err(e) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            die(format!("chmod {}: {e}", path.display()));
        }
        match std::fs::symlink_metadata(&path) {
            Ok(md) if md.permissions().mode() & 0o777 == 0o600 => {}
            _ => die(format!("{} is not mode 0600", path.display())),
        }
    }
    let prompt_on_tty = tty.is_some() && isatty(0) && a.prompter.is_none();
    if !o.foreground {
        daemon::background_mounted(selfmount.as_ref(), "factotum").unwrap_or_else(|e| die(e));
    } else if let Some(m) = &selfmount {
        m.mount_aside("factotum");
    }
    // dp9ik's table of multiples of the curve's base point, made now rather than in
    // the first exchange (after the fork, which would not take the thread along).
    std::thread::spawn(factotum::pak::warm_up);
    // With timers: needkey and confirm questions wait at most fs::WAIT.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("9p")
        .build()
        .unwrap_or_else(|e| die(e));
    let cfg = lib9::server::Config {
        trace: a.trace,
        ..lib9::server::Config::default()
    };
    let server = lib9::server::Server::with_config(fs, cfg);
    let fs: &Arc<Factotum> = server.fs();
    if let Some(prog) = &a.prompter {
        fs.prompt_with(Box::new(ProgramPrompter::new(prog, WAIT)));
    } else if let Some(tty) = tty.filter(|_| prompt_on_tty) {
        fs.prompt_with(Box::new(TtyPrompter::new(tty, &user)));
    }
    let served = rt.block_on(daemon::serve_mounted(server, &o, listeners, selfmount));
    if let Err(e) = served {
        die(e);
    }
}

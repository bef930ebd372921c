//! Running a service: announce its addresses (posting in `$NAMESPACE` as asked), go
//! into the background once they are ready, serve until a signal, and take the posted
//! sockets away again on the way out.
//!
//! The order matters for scripts: a server started as `ramfs -s ram` returns only once
//! `ram` is posted and accepting, so the next command can use it at once.

use lib9::dial::{self, AsyncListener, Conn, DialError, Listener};
use lib9::server::{Filesystem, Server};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// How a server was asked to run.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// Dial strings to announce (`-a`).
    pub addrs: Vec<String>,
    /// Names to post in `$NAMESPACE` (`-s`).
    pub names: Vec<String>,
    /// Serve one connection on standard input and output (`-i`).
    pub stdio: bool,
    /// Stay in the foreground (`-f`).
    pub foreground: bool,
    /// Certificate, key and allowed clients for `tls!` addresses.
    pub tls: lib9::tls::ServerOpts,
}

impl Opts {
    /// A service posted as `name` in `$NAMESPACE` only (factotum, the plumber).
    pub fn posted(name: &str, foreground: bool) -> Opts {
        Opts {
            names: vec![name.to_string()],
            foreground,
            ..Opts::default()
        }
    }
}

/// The flags every file server takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// Announce this dial string (tcp!*!564, tls!*!5640, unix!/path; a bare name is a host)
    #[arg(short = 'a', value_name = "addr")]
    pub addr: Vec<String>,
    /// For tls! addresses: the certificate chain (PEM); default $HOME/lib/tls/cert.pem, made if missing
    #[arg(long = "cert", value_name = "file", requires = "key")]
    pub cert: Option<std::path::PathBuf>,
    /// For tls! addresses: the private key (PEM, mode 0600)
    #[arg(long = "key", value_name = "file", requires = "cert")]
    pub key: Option<std::path::PathBuf>,
    /// For tls! addresses: require a client certificate whose SHA-256 fingerprint is listed in this file
    #[arg(long = "clients", value_name = "file")]
    pub clients: Option<std::path::PathBuf>,
    /// Post the service as NAME in $NAMESPACE
    #[arg(short = 's', value_name = "name")]
    pub name: Vec<String>,
    /// Serve one client on standard input and output
    #[arg(short = 'i')]
    pub stdio: bool,
    /// Stay in the foreground
    #[arg(short = 'f')]
    pub foreground: bool,
    /// Print every 9P message on standard error
    #[arg(short = 'D')]
    pub debug: bool,
    /// Require 9P authentication (p9any through the factotum in $NAMESPACE)
    #[arg(long = "auth")]
    pub auth: bool,
    /// With --auth: the authentication domain whose keys to use
    #[arg(long = "authdom", value_name = "dom", requires = "auth")]
    pub authdom: Option<String>,
}

/// Run a file server as its flags say, posting it as `default_name` if they name no
/// address: announce, go into the background, serve until a stop signal. Exits the
/// process with a message on failure.
pub fn run_server<F: Filesystem>(prog: &str, a: &ServeArgs, default_name: &str, fs: F) {
    let mut o = Opts {
        addrs: a.addr.clone(),
        names: a.name.clone(),
        stdio: a.stdio,
        foreground: a.foreground || a.stdio,
        tls: lib9::tls::ServerOpts {
            cert: a.cert.clone(),
            key: a.key.clone(),
            clients: a.clients.clone(),
        },
    };
    if o.addrs.is_empty() && o.names.is_empty() && !o.stdio {
        o.names.push(default_name.into());
    }
    let listeners = announce_all(&o).unwrap_or_else(|e| fatal(prog, e));
    for l in &listeners {
        if let Some(fp) = l.fingerprint() {
            eprintln!("{prog}: {}: certificate sha256 fingerprint {fp}", l.addr());
        }
    }
    if !o.foreground {
        background().unwrap_or_else(|e| fatal(prog, e));
    }
    let rt = runtime().unwrap_or_else(|e| fatal(prog, e));
    let cfg = lib9::server::Config {
        trace: a.debug,
        ..lib9::server::Config::default()
    };
    let r = if a.auth {
        let fs = lib9::auth::Authed::new(fs, a.authdom.as_deref());
        rt.block_on(serve(Server::with_config(fs, cfg), &o, listeners))
    } else {
        rt.block_on(serve(Server::with_config(fs, cfg), &o, listeners))
    };
    if let Err(e) = r {
        fatal(prog, e);
    }
}

/// Bind every address and post every name, before anything else happens.
pub fn announce_all(o: &Opts) -> Result<Vec<Listener>, DialError> {
    let mut out = Vec::new();
    for a in &o.addrs {
        out.push(dial::announce_host_tls(a, &o.tls)?);
    }
    for n in &o.names {
        out.push(dial::announce(n)?);
    }
    Ok(out)
}

/// Fork into the background: the parent exits at once with status 0 (the listeners
/// are already accepting), the child leaves the terminal's session and reads
/// /dev/null. Must be called before any thread is started.
pub fn background() -> io::Result<()> {
    background_mounted(None, "")
}

/// Let go of the caller's standard input and output, and of standard error if it is a
/// pipe or socket: whoever started us (`x=$(ramfs)`, a test reading our output) would
/// otherwise wait for them to close for as long as we run. Standard error on a
/// terminal or a file stays, for messages.
fn detach_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let fd = null.as_raw_fd();
        // SAFETY: dup2 of a descriptor we hold onto the standard ones.
        unsafe {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            if is_pipe_or_socket(2) {
                libc::dup2(fd, 2);
            }
        }
    }
}

/// A service that mounts itself in the private name space it was started in, as
/// Plan 9's factotum mounts at `/mnt/factotum` and the plumber is mounted at
/// `/mnt/plumb`: `name` (posted in `$NAMESPACE`) mounted at `mtpt`.
#[derive(Clone, Debug)]
pub struct SelfMount {
    pub name: String,
    pub mtpt: String,
}

impl SelfMount {
    /// The mount to make, or `None` outside a ninespace name space (there is nowhere
    /// private to mount in; the service is used through `$NAMESPACE`).
    pub fn new(name: &str, mtpt: &str) -> Option<SelfMount> {
        crate::ns::is_private().then(|| SelfMount {
            name: name.to_string(),
            mtpt: mtpt.to_string(),
        })
    }

    /// Make the mount (the mount point too, if missing). The service must be
    /// answering: the mount attaches to it. Runs the namespace engine, so must run in
    /// a process with one thread.
    fn mount(&self) -> Result<(), String> {
        match std::fs::create_dir(&self.mtpt) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("{}: {}", self.mtpt, crate::ns::errstr(&e))),
        }
        let f = crate::ns::Flags {
            noauth: true,
            ..crate::ns::Flags::default()
        };
        crate::ns::mount(&self.name, &self.mtpt, f, "").map_err(|e| e.to_string())
    }

    /// Take the mount away again, if it is still this service's. It looks at the
    /// mount, so the service must still be answering (see [`serve_mounted`]).
    pub fn unmount(&self) {
        let _ = crate::ns::unmount(Some(&self.name), &self.mtpt);
    }

    /// Mount from a process of its own, started now (before any thread), while this
    /// one goes on to serve: for a service staying in the foreground. A failure is
    /// reported on standard error as `prog: mount mtpt: why`.
    pub fn mount_aside(&self, prog: &str) {
        // SAFETY: no other threads exist yet (callers promise), so fork is sound.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let code = match self.mount() {
                    Ok(()) => 0,
                    Err(e) => {
                        eprintln!("{prog}: mount {}: {e}", self.mtpt);
                        1
                    }
                };
                // SAFETY: _exit ends the process without running the parent's
                // destructors (the posted sockets are the parent's).
                unsafe { libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                // Reap it when it is done, from a thread that waits only for it.
                std::thread::spawn(move || {
                    let _ = nix::sys::wait::waitpid(child, None);
                });
            }
            Err(e) => eprintln!("{prog}: mount {}: fork: {e}", self.mtpt),
        }
    }
}

/// [`background`], with the parent making `mount` (if any) once the child serves and
/// only then exiting: `factotum; cat /mnt/factotum/ctl` works as on Plan 9. A mount
/// that fails is reported on standard error as `prog: mount mtpt: why`, and the
/// service goes on (it is still posted).
pub fn background_mounted(mount: Option<&SelfMount>, prog: &str) -> io::Result<()> {
    // SAFETY: no other threads exist yet (callers promise), so fork is sound.
    match unsafe { nix::unistd::fork() }.map_err(io::Error::from)? {
        nix::unistd::ForkResult::Parent { .. } => {
            if let Some(m) = mount
                && let Err(e) = m.mount()
            {
                eprintln!("{prog}: mount {}: {e}", m.mtpt);
            }
            // Leave without running destructors: the posted sockets belong to the
            // child now.
            // SAFETY: _exit ends the process immediately.
            unsafe { libc::_exit(0) }
        }
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::setsid();
            detach_stdio();
            Ok(())
        }
    }
}

fn is_pipe_or_socket(fd: i32) -> bool {
    // SAFETY: fstat fills the struct we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return false;
    }
    let t = st.st_mode & libc::S_IFMT;
    t == libc::S_IFIFO || t == libc::S_IFSOCK
}

/// The runtime servers run on: one worker per core, with I/O but no timer (see
/// `lib9::server::pause`).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .thread_name("9p")
        .build()
}

/// Resolve when the process is asked to stop (SIGINT, SIGTERM or SIGHUP).
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    tokio::select! {
        _ = recv(&mut term) => {}
        _ = recv(&mut int) => {}
        _ = recv(&mut hup) => {}
    }
}

/// A connection on standard input and output.
pub fn stdio_conn() -> io::Result<Conn> {
    Conn::from_fds(dial::dup_fd(0)?, dial::dup_fd(1)?, "stdio")
}

/// Serve `fs` as `o` says until a stop signal (or, with `-i`, until the client hangs
/// up). Listeners must come from [`announce_all`], made before [`background`].
pub async fn serve<F: Filesystem>(
    server: Arc<Server<F>>,
    o: &Opts,
    listeners: Vec<Listener>,
) -> io::Result<()> {
    serve_mounted(server, o, listeners, None).await
}

/// [`serve`], taking `mount` away once asked to stop and before the service goes.
/// Unmounting looks at the mount, which asks this service, so it is done while the
/// service still answers (on a thread of its own, in case the runtime has only one).
pub async fn serve_mounted<F: Filesystem>(
    server: Arc<Server<F>>,
    o: &Opts,
    listeners: Vec<Listener>,
    mount: Option<SelfMount>,
) -> io::Result<()> {
    let unmount = || async {
        if let Some(m) = mount.clone() {
            let _ = tokio::task::spawn_blocking(move || m.unmount()).await;
        }
    };
    if o.stdio {
        let conn = stdio_conn()?;
        tokio::select! {
            _ = server.serve_conn(conn) => {}
            _ = stop_signal() => {}
        }
        unmount().await;
        return Ok(());
    }
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        let l: AsyncListener = l.into_async()?;
        let s = Arc::clone(&server);
        tasks.spawn(async move { s.serve(l).await });
    }
    tokio::select! {
        r = tasks.join_next() => {
            if let Some(Ok(Err(e))) = r {
                return Err(e);
            }
        }
        _ = stop_signal() => {}
    }
    unmount().await;
    // Dropping the tasks drops the listeners, which unposts the names.
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Parse the command line as clap describes it, but report a bad one Plan 9's way:
/// the usage line on standard error and exit status 1. `--help` still prints help.
pub fn args<T: clap::Parser + clap::CommandFactory>() -> T {
    match T::try_parse() {
        Ok(a) => a,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                e.exit();
            }
            let cmd = T::command();
            let text = e.render().to_string();
            let mut first = true;
            for line in text.lines() {
                let l = line.trim_end();
                if l.is_empty() || l.starts_with("For more information") {
                    continue;
                }
                if let Some(u) = l.strip_prefix("Usage: ") {
                    eprintln!("usage: {u}");
                } else if first {
                    eprintln!("{}: {}", cmd.get_name(), l.trim_start_matches("error: "));
                } else {
                    eprintln!("{l}");
                }
                first = false;
            }
            std::process::exit(1);
        }
    }
}

/// Print `prog: msg` on standard error and exit with status 1.
pub fn fatal(prog: &str, msg: impl std::fmt::Display) -> ! {
    eprintln!("{prog}: {msg}");
    std::process::exit(1);
}

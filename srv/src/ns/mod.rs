//! The namespace engine: Plan 9 name spaces from Linux mount namespaces and FUSE.
//! See docs/namespaces.md.
//!
//! - [`fork`]: `rfork n` (a private copy of the name space) and `rfork N` (a clean one);
//!   the first private name space of a session gets a root of its own: a read-only
//!   tmpfs holding the host's top-level entries, `/n`, `/mnt`, `/net`, and `/srv`,
//!   which is `$NAMESPACE`.
//! - [`bind`], [`mount`], [`unmount`]: as bind(2) and mount(2); unions are served by
//!   [`crate::union`] in a process of their own, file servers by the 9P bridge.
//! - [`lines`]: the name space as the `bind` and `mount` lines that rebuild it (`ns`).
//! - [`file`]: namespace files (namespace(6)).
//!
//! Nothing here keeps state but the kernel: a union's members and a mount's service
//! are written in the mount's source, which /proc/self/mountinfo shows, and the
//! mounts the root was built with are listed in `/.nsbase` on the root itself.

pub mod file;
pub mod mountinfo;
pub mod serve;
mod sys;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use mountinfo::Mount;

/// Errors, worded as Plan 9 words them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}: {1}")]
    Path(String, String),
    #[error("{0}")]
    Msg(String),
    /// User namespaces are denied here (a seccomp filter, an AppArmor rule, a
    /// sysctl): there can be no private name space.
    #[error("no private name space: user namespaces are denied here ({0})")]
    NoUserns(String),
}

type Result<T> = std::result::Result<T, Error>;

/// Plan 9's words for a system error.
pub fn errstr(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOENT) => "file does not exist".into(),
        Some(libc::EACCES) | Some(libc::EPERM) => "permission denied".into(),
        Some(libc::ENOTDIR) => "not a directory".into(),
        Some(libc::EROFS) => "read-only file system".into(),
        Some(libc::ENOTCONN) | Some(libc::ECONNREFUSED) => "connection refused".into(),
        Some(libc::ELOOP) => "too many levels of symbolic links".into(),
        _ => {
            let s = e.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s.to_lowercase(),
            }
        }
    }
}

fn path_err(p: &str, e: &io::Error) -> Error {
    Error::Path(p.to_string(), errstr(e))
}

/// Where a bind or mount goes in the union at `old`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Replace what is there (no flag).
    #[default]
    Replace,
    /// `-b`: before the members there.
    Before,
    /// `-a`: after them.
    After,
}

/// The flags of bind and mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    pub order: Order,
    /// `-c`: files may be created in this member.
    pub create: bool,
    /// `-C` (mount): cache the service's files.
    pub cache: bool,
    /// `-n` (mount): no authentication.
    pub noauth: bool,
}

impl Flags {
    /// The flags as bind(1) and mount(1) spell them: `-bc`, `-a`, ...
    pub fn word(&self, mount: bool) -> String {
        let mut s = String::new();
        match self.order {
            Order::Replace => {}
            Order::Before => s.push('b'),
            Order::After => s.push('a'),
        }
        if self.create {
            s.push('c');
        }
        if mount && self.cache {
            s.push('C');
        }
        if mount && self.noauth {
            s.push('n');
        }
        if s.is_empty() { s } else { format!("-{s}") }
    }
}

/// The file that lists the mounts the root was built with.
const BASE: &str = "/.nsbase";
/// The root file system's source: how a ninespace root is known.
const ROOT_SOURCE: &str = "ninespace";

/// Whether this process is in a ninespace name space (one whose root we built).
pub fn is_private() -> bool {
    mountinfo::read()
        .map(|all| {
            all.iter()
                .any(|m| m.point == "/" && m.fstype == "tmpfs" && m.source == ROOT_SOURCE)
        })
        .unwrap_or(false)
}

/// A private name space for this process and the ones it starts. It is a copy of
/// the current one unless `clean`, when everything bound or mounted since the root
/// was built is taken away (the caller then runs a namespace file). Outside a
/// ninespace name space, the root is built first.
///
/// Must be called while the process has one thread (the kernel's rule for a new
/// user namespace).
pub fn fork(clean: bool) -> Result<()> {
    enter()?;
    if is_private() {
        if clean {
            clear()?;
        }
        Ok(())
    } else {
        build_root()
    }
}

/// A new mount namespace, and for an ordinary user a user namespace to hold it.
fn enter() -> Result<()> {
    let mut done = false;
    if sys::have_sys_admin() {
        match sys::unshare(libc::CLONE_NEWNS) {
            Ok(()) => done = true,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => return Err(Error::Msg(format!("unshare: {}", errstr(&e)))),
        }
    }
    if !done {
        let (uid, gid) = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        if let Err(e) = sys::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) {
            return Err(match e.raw_os_error() {
                Some(libc::EINVAL) => Error::Msg("rfork: more than one thread".into()),
                _ => Error::NoUserns(errstr(&e)),
            });
        }
        sys::map_self(uid, gid).map_err(|e| Error::NoUserns(format!("uid_map: {}", errstr(&e))))?;
        sys::keep_sys_admin().map_err(|e| Error::Msg(format!("capabilities: {}", errstr(&e))))?;
    }
    sys::make_private("/").map_err(|e| Error::Msg(format!("private mounts: {}", errstr(&e))))
}

/// Whether a private name space can be made here, and if not, why.
pub fn available() -> std::result::Result<(), String> {
    if sys::have_sys_admin() {
        return Ok(());
    }
    let max = std::fs::read_to_string("/proc/sys/user/max_user_namespaces").unwrap_or_default();
    if max.trim() == "0" {
        return Err("user.max_user_namespaces is 0".into());
    }
    if std::fs::read_to_string("/proc/sys/kernel/unprivileged_userns_clone")
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
    {
        return Err("kernel.unprivileged_userns_clone is 0".into());
    }
    if std::fs::read_to_string("/proc/sys/kernel/apparmor_restrict_unprivileged_userns")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Err("AppArmor restricts unprivileged user namespaces".into());
    }
    Ok(())
}

/// Build the root: a tmpfs holding the host's top-level entries (bound, or copied if
/// they are symbolic links), a tmpfs each on `/n` and `/mnt` (with the host's
/// `/mnt` entries bound in it), an empty `/net`, and `/srv` bound to `$NAMESPACE`;
/// then make it the root and the tmpfs read-only.
fn build_root() -> Result<()> {
    let cwd = std::env::current_dir().ok();
    let nsdir = lib9::ns::namespace().map_err(|e| Error::Msg(format!("$NAMESPACE: {e}")))?;
    let nsdir = nsdir.to_string_lossy().into_owned();

    enum Entry {
        Tree(OwnedFd, bool),
        Link(std::path::PathBuf),
    }
    let mut entries: Vec<(String, Entry)> = Vec::new();
    let mut mnt: Vec<(String, OwnedFd)> = Vec::new();
    let rd = std::fs::read_dir("/").map_err(|e| Error::Msg(format!("/: {}", errstr(&e))))?;
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if matches!(name.as_str(), "n" | "srv" | "net") {
            continue;
        }
        let Ok(ft) = e.file_type() else { continue };
        let path = format!("/{name}");
        if name == "mnt" {
            if let Ok(rd) = std::fs::read_dir("/mnt") {
                for s in rd.flatten() {
                    let (Some(sn), Ok(true)) = (
                        s.file_name().to_str().map(str::to_string),
                        s.file_type().map(|t| t.is_dir()),
                    ) else {
                        continue;
                    };
                    if let Ok(t) = sys::clone_tree(libc::AT_FDCWD, &format!("/mnt/{sn}")) {
                        mnt.push((sn, t));
                    }
                }
            }
            continue;
        }
        if ft.is_symlink() {
            if let Ok(t) = std::fs::read_link(&path) {
                entries.push((name, Entry::Link(t)));
            }
        } else if ft.is_dir() || ft.is_file() {
            match sys::clone_tree(libc::AT_FDCWD, &path) {
                Ok(t) => entries.push((name, Entry::Tree(t, ft.is_dir()))),
                // Something we may not see (a mount of another user's): left out.
                Err(_) => continue,
            }
        }
    }
    let srv = sys::clone_tree(libc::AT_FDCWD, &nsdir).map_err(|e| path_err(&nsdir, &e))?;
    let fresh = |what: &str| {
        sys::new_mount(
            "tmpfs",
            &[
                ("source", Some(what)),
                ("mode", Some("0755")),
                ("size", Some("1m")),
            ],
            libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        )
        .map_err(|e| Error::Msg(format!("tmpfs: {}", errstr(&e))))
    };
    let root = fresh(ROOT_SOURCE)?;
    let n = fresh("none")?;
    let mnt_fs = fresh("none")?;

    // The new root is put together at /tmp (hidden only in this name space, and only
    // until the pivot), from the copies taken above; any directory will do.
    let at = ["/tmp", "/mnt", "/run", "/var/tmp", "/media", "/opt"]
        .into_iter()
        .find(|d| std::fs::symlink_metadata(d).is_ok_and(|m| m.is_dir()))
        .ok_or_else(|| Error::Msg("no directory to build the root in".into()))?;
    sys::attach(&root, at).map_err(|e| Error::Msg(format!("root: {}", errstr(&e))))?;
    let mk = |rel: &str, dir: bool| -> Result<String> {
        let p = format!("{at}/{rel}");
        let r = if dir {
            std::fs::DirBuilder::new().create(&p)
        } else {
            std::fs::File::create(&p).map(|_| ())
        };
        match r {
            Ok(()) => Ok(p),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(p),
            Err(e) => Err(path_err(&p, &e)),
        }
    };
    for (name, e) in &entries {
        match e {
            Entry::Tree(t, dir) => {
                let p = mk(name, *dir)?;
                sys::attach(t, &p).map_err(|e| path_err(&format!("/{name}"), &e))?;
            }
            Entry::Link(t) => {
                let p = format!("{at}/{name}");
                std::os::unix::fs::symlink(t, &p).map_err(|e| path_err(&p, &e))?;
            }
        }
    }
    for d in ["n", "mnt", "srv", "net"] {
        mk(d, true)?;
    }
    sys::attach(&n, &format!("{at}/n")).map_err(|e| path_err("/n", &e))?;
    sys::attach(&mnt_fs, &format!("{at}/mnt")).map_err(|e| path_err("/mnt", &e))?;
    for (name, t) in &mnt {
        let p = mk(&format!("mnt/{name}"), true)?;
        sys::attach(t, &p).map_err(|e| path_err(&format!("/mnt/{name}"), &e))?;
    }
    sys::attach(&srv, &format!("{at}/srv")).map_err(|e| path_err("/srv", &e))?;
    std::env::set_current_dir(at).map_err(|e| path_err(at, &e))?;
    sys::pivot_here().map_err(|e| Error::Msg(format!("pivot_root: {}", errstr(&e))))?;

    // Record what the root is made of, then close it to writing.
    let all = mountinfo::read().map_err(|e| Error::Msg(format!("mountinfo: {}", errstr(&e))))?;
    let mut base = String::new();
    for m in &all {
        base.push_str(&base_key(m));
        base.push('\n');
    }
    std::fs::write(BASE, base).map_err(|e| path_err(BASE, &e))?;
    sys::set_attr_at("/", libc::MOUNT_ATTR_RDONLY)
        .map_err(|e| Error::Msg(format!("read-only root: {}", errstr(&e))))?;
    if let Some(d) = cwd {
        let _ = std::env::set_current_dir(d);
    }
    Ok(())
}

fn base_key(m: &Mount) -> String {
    // Mount points may hold any byte but NUL; the key is one line, escaped.
    format!("{}\t{}\t{}", esc(&m.point), m.dev, esc(&m.root))
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\t', "\\t")
}

/// The mounts made since the root was built, in the kernel's order.
fn user_mounts(all: &[Mount]) -> Vec<Mount> {
    let base: std::collections::HashSet<String> = std::fs::read_to_string(BASE)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    all.iter()
        .filter(|m| m.point != "/" && !base.contains(&base_key(m)))
        .cloned()
        .collect()
}

fn read_mounts() -> Result<Vec<Mount>> {
    mountinfo::read().map_err(|e| Error::Msg(format!("mountinfo: {}", errstr(&e))))
}

/// Take away everything bound or mounted since the root was built.
fn clear() -> Result<()> {
    for _ in 0..64 {
        let all = read_mounts()?;
        let user = user_mounts(&all);
        if user.is_empty() {
            return Ok(());
        }
        // Topmost first: a mount's children come after it.
        for m in user.iter().rev() {
            let _ = sys::detach(&m.point);
        }
    }
    Err(Error::Msg("clear: mounts remain".into()))
}

/// An absolute path with symbolic links resolved, as the kernel will see it.
fn canon(p: &str) -> Result<String> {
    if p.is_empty() {
        return Err(Error::Path(p.into(), "file does not exist".into()));
    }
    std::fs::canonicalize(p)
        .map(|c| c.to_string_lossy().into_owned())
        .map_err(|e| path_err(p, &e))
}

/// The mounts stacked at `point` that were made since the root was built, bottom
/// first.
fn user_stack(point: &str) -> Result<Vec<Mount>> {
    let all = read_mounts()?;
    let user = user_mounts(&all);
    Ok(mountinfo::stack(&all, point)
        .into_iter()
        .filter(|m| user.iter().any(|u| u.id == m.id))
        .cloned()
        .collect())
}

/// Take away all that was bound or mounted at `point`.
fn detach_all(point: &str) -> Result<bool> {
    let mut any = false;
    for _ in 0..64 {
        if user_stack(point)?.is_empty() {
            return Ok(any);
        }
        detach(point)?;
        any = true;
    }
    Err(Error::Path(point.into(), "too many mounts".into()))
}

fn is_dir(p: &str) -> Result<bool> {
    let st = sys::stat_path(p).map_err(|e| path_err(p, &e))?;
    Ok(st.st_mode & libc::S_IFMT == libc::S_IFDIR)
}

/// bind(2): make `new` visible at `old`.
pub fn bind(new: &str, old: &str, f: Flags) -> Result<()> {
    let newc = canon(new)?;
    let oldc = canon(old)?;
    if is_dir(&newc)? != is_dir(&oldc)? {
        return Err(Error::Msg("inconsistent mount".into()));
    }
    if f.order == Order::Replace {
        let tree = sys::clone_tree(libc::AT_FDCWD, &newc).map_err(|e| path_err(new, &e))?;
        sys::set_attr(&tree, libc::MOUNT_ATTR_NOSUID).map_err(|e| path_err(new, &e))?;
        detach_all(&oldc)?;
        return put(&tree, &oldc).map_err(|e| path_err(old, &e));
    }
    if !is_dir(&newc)? {
        return Err(Error::Msg("inconsistent mount".into()));
    }
    let dir = sys::open_dir(&newc).map_err(|e| path_err(new, &e))?;
    add_member(&oldc, dir, f, newc.clone())
}

/// mount(2): the file server at `service` (a dial string, or a name posted in /srv or
/// `$NAMESPACE`) at `old`, attached with `aname`.
pub fn mount(service: &str, old: &str, f: Flags, aname: &str) -> Result<()> {
    let oldc = canon(old)?;
    if !is_dir(&oldc)? {
        return Err(Error::Msg("inconsistent mount".into()));
    }
    let svc = Service {
        addr: service_addr(service),
        aname: aname.to_string(),
        cache: f.cache,
        noauth: f.noauth,
    };
    let label = format!("mount {}", svc.text());
    let tree = spawn(Server::NineP(svc)).map_err(|e| Error::Msg(format!("{service}: {e}")))?;
    if f.order == Order::Replace {
        detach_all(&oldc)?;
        return put(&tree, &oldc).map_err(|e| path_err(old, &e));
    }
    // As a member of a union: its root, opened through the detached mount.
    let dir = sys::open_dir(&format!("/proc/self/fd/{}", tree.as_raw_fd()))
        .map_err(|e| Error::Msg(format!("{service}: {}", errstr(&e))))?;
    // Its root's attributes, fetched (see `put`).
    let _ = sys::fstat(dir.as_raw_fd());
    drop(tree);
    add_member(&oldc, dir, f, label)
}

/// A service as a dial string: `/srv/x` and plain names are services posted in
/// `$NAMESPACE`; other paths are Unix sockets.
fn service_addr(s: &str) -> String {
    if let Some(name) = s.strip_prefix("/srv/") {
        if !name.contains('/') {
            return name.to_string();
        }
    }
    if s.starts_with('/') || s.starts_with("./") {
        return format!("unix!{s}");
    }
    s.to_string()
}

/// A union member, re-opened from the process that serves a union.
pub(crate) struct Held {
    pub(crate) dir: OwnedFd,
    pub(crate) create: bool,
    pub(crate) label: String,
}

/// The members of the union mounted as `m`, if it is one.
fn union_members(m: &Mount) -> Option<Result<Vec<Held>>> {
    if !m.fstype.starts_with("fuse") {
        return None;
    }
    let (pid, members) = crate::union::parse_source(&m.source)?;
    let mut out = Vec::new();
    for (fd, create, label) in members {
        match sys::open_dir(&format!("/proc/{pid}/fd/{fd}")) {
            Ok(dir) => out.push(Held { dir, create, label }),
            Err(e) => {
                return Some(Err(Error::Msg(format!(
                    "union at {}: {}",
                    m.point,
                    errstr(&e)
                ))));
            }
        }
    }
    Some(Ok(out))
}

/// Put `dir` in the union at `oldc` (making it one if it is not).
fn add_member(oldc: &str, dir: OwnedFd, f: Flags, label: String) -> Result<()> {
    let stack = user_stack(oldc)?;
    let top = stack.last();
    let mut members = match top.and_then(union_members) {
        Some(r) => r?,
        None => {
            // What is at `old` now becomes the first member: the directory, or what
            // is bound or mounted there.
            let here = sys::open_dir(oldc).map_err(|e| path_err(oldc, &e))?;
            vec![Held {
                dir: here,
                create: false,
                label: oldc.to_string(),
            }]
        }
    };
    let m = Held {
        dir,
        create: f.create,
        label,
    };
    if f.order == Order::Before {
        members.insert(0, m);
    } else {
        members.push(m);
    }
    replace_union(
        oldc,
        top.is_some_and(|t| crate::union::parse_source(&t.source).is_some()),
        members,
    )
}

/// Mount a union of `members` at `oldc`, in place of the union there if `over_union`.
fn replace_union(oldc: &str, over_union: bool, members: Vec<Held>) -> Result<()> {
    let tree = spawn(Server::Union(members)).map_err(|e| Error::Msg(format!("union: {e}")))?;
    if over_union {
        detach(oldc)?;
    }
    put(&tree, oldc).map_err(|e| path_err(oldc, &e))
}

/// Attach `tree` at `point`, and fetch the attributes of its root: until then the
/// kernel takes a new FUSE root for root's (uid 0), which in a user namespace has no
/// mapping and refuses an ordinary user's creates.
fn put(tree: &OwnedFd, point: &str) -> io::Result<()> {
    sys::attach(tree, point)?;
    let _ = sys::stat_path(point);
    Ok(())
}

/// Detach the topmost mount at `point`. When a union above hides that mount point
/// (`mount x /n/r` then `bind -a y /n`: `/n/r` now leads into the union), the mount is
/// reached through the union's members, as Plan 9 reaches it through the name.
fn detach(point: &str) -> Result<()> {
    match sys::detach(point) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            let all = read_mounts()?;
            let mut p = std::path::Path::new(point);
            while let Some(up) = p.parent() {
                let upc = up.to_string_lossy();
                let rest = point[upc.len()..].trim_start_matches('/');
                if let Some(top) = mountinfo::stack(&all, &upc).last() {
                    if let Some((pid, members)) = crate::union::parse_source(&top.source) {
                        for (fd, _, _) in members {
                            if sys::detach(&format!("/proc/{pid}/fd/{fd}/{rest}")).is_ok() {
                                // The union server may hold what was there open, and
                                // the kernel its names: a new server forgets both.
                                if let Some(Ok(held)) = union_members(top) {
                                    replace_union(&upc, true, held)?;
                                }
                                return Ok(());
                            }
                        }
                    }
                }
                p = up;
            }
            Err(path_err(point, &e))
        }
        Err(e) => Err(path_err(point, &e)),
    }
}

/// unmount(2): take away what is at `old`, or only `new` from the union there.
pub fn unmount(new: Option<&str>, old: &str) -> Result<()> {
    let oldc = canon(old)?;
    let Some(new) = new else {
        return if detach_all(&oldc)? {
            Ok(())
        } else {
            Err(Error::Msg("not mounted".into()))
        };
    };
    let stack = user_stack(&oldc)?;
    let Some(top) = stack.last() else {
        return Err(Error::Msg("not mounted".into()));
    };
    let target = canon(new).ok();
    let target_st = target.as_deref().and_then(|t| sys::stat_path(t).ok());
    if let Some(r) = union_members(top) {
        let members = r?;
        let addr = service_addr(new);
        let pos = members.iter().position(|m| {
            let by_name = target.as_deref() == Some(m.label.as_str())
                || Service::of_label(&m.label).is_some_and(|s| s.addr == addr);
            let by_file = target_st.is_some_and(|t| {
                sys::fstat(m.dir.as_raw_fd())
                    .is_ok_and(|s| s.st_dev == t.st_dev && s.st_ino == t.st_ino)
            });
            by_name || by_file
        });
        let Some(pos) = pos else {
            return Err(Error::Msg("not in union".into()));
        };
        let mut members = members;
        members.remove(pos);
        // Only what was there before the union left: the union goes.
        let only_old = members.len() == 1 && members[0].label == oldc && !members[0].create;
        if members.is_empty() || only_old {
            return detach(&oldc);
        }
        return replace_union(&oldc, true, members);
    }
    // A plain bind or mount: `new` must be what is there.
    let here = sys::stat_path(&oldc).map_err(|e| path_err(old, &e))?;
    let same = target_st.is_some_and(|t| t.st_dev == here.st_dev && t.st_ino == here.st_ino)
        || (top.fstype.starts_with("fuse")
            && Service::of_source(&top.source).is_some_and(|s| s.addr == service_addr(new)));
    if !same {
        return Err(Error::Msg("not in union".into()));
    }
    detach(&oldc)
}

/// A 9P service as the engine records it: in a 9P mount's source (`9p:` and this
/// text) and in a union member's label (`mount ` and this text). The text is
/// `[-C ][-n ]addr[ aname]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Service {
    pub(crate) addr: String,
    pub(crate) aname: String,
    pub(crate) cache: bool,
    /// `-n`: attached without authentication.
    pub(crate) noauth: bool,
}

impl Service {
    pub(crate) fn text(&self) -> String {
        let mut t = format!(
            "{}{}{}",
            if self.cache { "-C " } else { "" },
            if self.noauth { "-n " } else { "" },
            self.addr
        );
        if !self.aname.is_empty() {
            t.push(' ');
            t.push_str(&self.aname);
        }
        t
    }

    fn parse(t: &str) -> Service {
        let (cache, t) = match t.strip_prefix("-C ") {
            Some(r) => (true, r),
            None => (false, t),
        };
        let (noauth, t) = match t.strip_prefix("-n ") {
            Some(r) => (true, r),
            None => (false, t),
        };
        let (addr, aname) = t.split_once(' ').unwrap_or((t, ""));
        Service {
            addr: addr.to_string(),
            aname: aname.to_string(),
            cache,
            noauth,
        }
    }

    /// The service a 9P mount's source names.
    fn of_source(s: &str) -> Option<Service> {
        s.strip_prefix("9p:").map(Service::parse)
    }

    /// The service a union member's label names.
    fn of_label(l: &str) -> Option<Service> {
        l.strip_prefix("mount ").map(Service::parse)
    }

    /// The `mount` line that mounts it at `old` with the order and create flag of `f`.
    fn line(&self, f: Flags, old: &str) -> String {
        let w = Flags {
            cache: self.cache,
            noauth: self.noauth,
            ..f
        }
        .word(true);
        let mut l = String::from("mount ");
        if !w.is_empty() {
            l.push_str(&w);
            l.push(' ');
        }
        l.push_str(&quote(&self.addr));
        l.push(' ');
        l.push_str(old);
        if !self.aname.is_empty() {
            l.push(' ');
            l.push_str(&quote(&self.aname));
        }
        l
    }
}

/// Quote a word for a namespace file or rc, if it needs it.
pub fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| !c.is_whitespace() && !"'#;&|^$=`{}()<>[]*?\\\"".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "''"))
    }
}

/// The name space as `bind` and `mount` lines that rebuild it on the root.
pub fn lines() -> Result<Vec<String>> {
    let all = read_mounts()?;
    let user = user_mounts(&all);
    let mut out = Vec::new();
    for m in &user {
        let old = quote(&m.point);
        if let Some((_, members)) = if m.fstype.starts_with("fuse") {
            crate::union::parse_source(&m.source)
        } else {
            None
        } {
            // Members before the directory that was there are bound before it, in
            // reverse; those after it, after.
            let base = members.iter().position(|(_, c, l)| !c && *l == m.point);
            let (before, after): (Vec<_>, Vec<_>) = match base {
                Some(i) => (
                    members[..i].iter().rev().collect(),
                    members[i + 1..].iter().collect(),
                ),
                None => {
                    if let Some((first, rest)) = members.split_first() {
                        out.push(member_line(first, Order::Replace, &old));
                        (Vec::new(), rest.iter().collect())
                    } else {
                        (Vec::new(), Vec::new())
                    }
                }
            };
            for mb in before {
                out.push(member_line(mb, Order::Before, &old));
            }
            for mb in after {
                out.push(member_line(mb, Order::After, &old));
            }
            continue;
        }
        if m.fstype.starts_with("fuse") {
            if let Some(svc) = Service::of_source(&m.source) {
                out.push(svc.line(Flags::default(), &old));
                continue;
            }
        }
        out.push(format!("bind {} {old}", quote(&bound_from(&all, m))));
    }
    Ok(out)
}

fn member_line(mb: &(i32, bool, String), order: Order, old: &str) -> String {
    let f = Flags {
        order,
        create: mb.1,
        ..Flags::default()
    };
    match Service::of_label(&mb.2) {
        Some(svc) => svc.line(f, old),
        None => {
            let w = f.word(false);
            let sp = if w.is_empty() { "" } else { " " };
            format!("bind {w}{sp}{} {old}", quote(&mb.2))
        }
    }
}

/// The path a bind mount shows: another mount of the same file system whose root
/// holds this one's, with the rest of the path after it.
fn bound_from(all: &[Mount], m: &Mount) -> String {
    let mut best: Option<(usize, String)> = None;
    for o in all {
        if o.id == m.id || o.dev != m.dev {
            continue;
        }
        let rest = if o.root == "/" {
            Some(m.root.as_str())
        } else {
            m.root
                .strip_prefix(o.root.as_str())
                .filter(|r| r.is_empty() || r.starts_with('/'))
        };
        let Some(rest) = rest else { continue };
        let p = if o.point == "/" {
            if rest.is_empty() {
                "/".to_string()
            } else {
                rest.to_string()
            }
        } else {
            format!("{}{rest}", o.point)
        };
        if p == m.point {
            continue;
        }
        // The shortest way there.
        if best.as_ref().is_none_or(|(l, _)| rest.len() < *l) {
            best = Some((rest.len(), p));
        }
    }
    best.map(|(_, p)| p).unwrap_or_else(|| m.root.clone())
}

/// A file server to start in a process of its own.
pub(crate) enum Server {
    Union(Vec<Held>),
    NineP(Service),
}

/// Start `server` in a process of its own (the `ns` program, run as `ns --serve`:
/// see [`serve`]), leave it serving a new FUSE mount, and return that mount, detached,
/// to be attached where it belongs. The program is exec'd, so that rc carries none of
/// the servers' code.
fn spawn(server: Server) -> std::result::Result<OwnedFd, String> {
    let prog = server_program()?;
    let (ours, theirs) = UnixStream::pair().map_err(|e| errstr(&e))?;
    let mut pass: Vec<RawFd> = vec![theirs.as_raw_fd()];
    let mut args: Vec<String> = vec!["ns".into(), "--serve".into()];
    match &server {
        Server::Union(m) => {
            args.push("union".into());
            args.push(theirs.as_raw_fd().to_string());
            for h in m {
                pass.push(h.dir.as_raw_fd());
                args.push(h.dir.as_raw_fd().to_string());
                args.push(if h.create { "c" } else { "-" }.into());
                args.push(h.label.clone());
            }
        }
        Server::NineP(svc) => {
            args.push("9p".into());
            args.push(theirs.as_raw_fd().to_string());
            args.push(svc.addr.clone());
            args.push(svc.aname.clone());
            let mut fl = String::from("-");
            if svc.cache {
                fl.push('C');
            }
            if svc.noauth {
                fl.push('n');
            }
            args.push(fl);
        }
    }
    let cprog =
        std::ffi::CString::new(prog.as_str()).map_err(|_| "bad program name".to_string())?;
    let cargs: Vec<std::ffi::CString> = args
        .iter()
        .map(|a| std::ffi::CString::new(a.as_str()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| "a name holds a NUL byte".to_string())?;
    let mut argv: Vec<*const libc::c_char> = cargs.iter().map(|c| c.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: the engine runs in single-threaded programs (rc); between fork and exec
    // the child makes system calls only, on memory prepared before the fork.
    match unsafe { libc::fork() } {
        -1 => return Err(errstr(&io::Error::last_os_error())),
        0 => {
            // SAFETY: as above; the middle process exits at once so the server is
            // nobody's child.
            unsafe {
                if libc::fork() == 0 {
                    for fd in &pass {
                        libc::fcntl(*fd, libc::F_SETFD, 0);
                    }
                    libc::execv(cprog.as_ptr(), argv.as_ptr());
                    let msg = b"cannot run the ns program";
                    libc::write(theirs.as_raw_fd(), msg.as_ptr().cast(), msg.len());
                }
                libc::_exit(0)
            }
        }
        pid => {
            drop(theirs);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
    }
    drop(server);
    // A server that never answers its attach is not waited for forever.
    let _ = ours.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    receive(&ours)
}

/// The `ns` program, which runs the servers: `$NINESPACE_NS`, else the one beside this
/// program, else the first in `$path`.
fn server_program() -> std::result::Result<String, String> {
    let exec = |p: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if let Some(p) = std::env::var_os("NINESPACE_NS").filter(|p| !p.is_empty()) {
        return Ok(p.to_string_lossy().into_owned());
    }
    if let Ok(me) = std::env::current_exe() {
        if let Some(p) = me.parent().map(|d| d.join("ns")).filter(|p| exec(p)) {
            return Ok(p.to_string_lossy().into_owned());
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        let p = d.join("ns");
        if exec(&p) {
            return Ok(p.to_string_lossy().into_owned());
        }
    }
    Err("the ns program is missing (install ninespace's programs together)".into())
}

/// The reply of a server process: its mount, or why it failed.
fn receive(s: &UnixStream) -> std::result::Result<OwnedFd, String> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    let mut buf = [0u8; 1024];
    let mut cmsg = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        s.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .map_err(|e| match e {
        nix::errno::Errno::EAGAIN => "the server did not answer in time".to_string(),
        e => e.desc().to_lowercase(),
    })?;
    let mut fd = None;
    if let Ok(cm) = msg.cmsgs() {
        for c in cm {
            if let ControlMessageOwned::ScmRights(fds) = c {
                for f in fds {
                    // SAFETY: the kernel passed us this descriptor.
                    let o = unsafe { OwnedFd::from_raw_fd(f) };
                    if fd.is_none() {
                        fd = Some(o);
                    }
                }
            }
        }
    }
    let n = msg.bytes;
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    match fd {
        Some(f) if text == "ok" => Ok(f),
        _ if text.is_empty() => Err("server process died".into()),
        _ => Err(text),
    }
}

pub(crate) fn send(s: &UnixStream, text: &str, fd: Option<&OwnedFd>) {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let iov = [io::IoSlice::new(text.as_bytes())];
    let fds: Vec<RawFd> = fd.map(|f| vec![f.as_raw_fd()]).unwrap_or_default();
    let cm = [ControlMessage::ScmRights(&fds)];
    let cms: &[ControlMessage] = if fds.is_empty() { &[] } else { &cm };
    let _ = sendmsg::<()>(s.as_raw_fd(), &iov, cms, MsgFlags::empty(), None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_read_back_and_print_as_mount_lines() {
        for (cache, noauth, aname) in [
            (false, false, ""),
            (true, false, ""),
            (false, true, "sub dir"),
            (true, true, "x"),
        ] {
            let s = Service {
                addr: "unix!/tmp/ns.u/ram".into(),
                aname: aname.into(),
                cache,
                noauth,
            };
            assert_eq!(
                Service::of_source(&format!("9p:{}", s.text())),
                Some(s.clone())
            );
            assert_eq!(
                Service::of_label(&format!("mount {}", s.text())),
                Some(s.clone())
            );
        }
        let s = Service::parse("-C ram spec");
        let f = Flags {
            order: Order::Before,
            create: true,
            ..Flags::default()
        };
        assert_eq!(s.line(f, "/n/r"), "mount -bcC ram /n/r spec");
        assert_eq!(
            Service::parse("ram").line(Flags::default(), "/n/r"),
            "mount ram /n/r"
        );
        assert_eq!(
            member_line(&(5, true, "/a b".into()), Order::After, "/n"),
            "bind -ac '/a b' /n"
        );
        assert_eq!(
            member_line(&(5, false, "mount ram".into()), Order::After, "/n"),
            "mount -a ram /n"
        );
        assert!(Service::of_source("union@1:3=/x").is_none());
    }
}

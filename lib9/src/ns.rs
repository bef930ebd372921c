//! The plan9port name space directory, `$NAMESPACE`, where services post themselves
//! as Unix-domain sockets so that plan9port's programs and ours find each other.
//!
//! The directory is `$NAMESPACE` if that is set, else `/tmp/ns.$USER.$DISPLAY` with the
//! display canonicalised as plan9port does (`host:0.0` is `host:0`, `/` becomes `_`).
//! Where plan9port gives up because neither variable is set, we use the display `:0`,
//! so terminal-only sessions still work (docs/lib9.md). The directory is created mode
//! 0700 and refused unless it is a directory of mode 0700 owned by the user.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

/// Why the name space directory or a posted service is unusable.
#[derive(Debug, thiserror::Error)]
pub enum NsError {
    #[error("bad name space dir {0}: {1}")]
    BadDir(PathBuf, String),
    #[error("create name space dir {0}: {1}")]
    Create(PathBuf, io::Error),
    #[error("bad service name '{0}'")]
    BadName(String),
    #[error("service '{0}' already posted")]
    Posted(String),
    #[error("post {0}: {1}")]
    Post(PathBuf, io::Error),
}

/// The name of the user running this process, as plan9port's getuser gives it: the
/// password-file name of the real uid, else `$USER`, else the number.
pub fn user() -> String {
    let uid = nix::unistd::getuid();
    if let Ok(Some(u)) = nix::unistd::User::from_uid(uid) {
        return u.name;
    }
    match std::env::var("USER") {
        Ok(u) if !u.is_empty() => u,
        _ => uid.to_string(),
    }
}

/// Canonicalise an X display name the way plan9port does.
pub fn canonical_display(d: &str) -> String {
    let mut s = d.to_string();
    if let Some(colon) = s.rfind(':') {
        let rest = &s[colon + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if &rest[digits..] == ".0" {
            s.truncate(colon + 1 + digits);
        }
    }
    s.replace('/', "_")
}

/// The name space directory path, computed but not created or checked.
pub fn namespace_path() -> PathBuf {
    namespace_path_from(
        std::env::var_os("NAMESPACE"),
        std::env::var("DISPLAY").ok(),
        &user(),
    )
}

fn namespace_path_from(ns: Option<OsString>, display: Option<String>, user: &str) -> PathBuf {
    if let Some(ns) = ns.filter(|s| !s.is_empty()) {
        return PathBuf::from(ns);
    }
    let disp = display
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| ":0".into());
    PathBuf::from(format!("/tmp/ns.{}.{}", user, canonical_display(&disp)))
}

/// The name space directory, created if it is missing and checked to be ours and
/// private.
pub fn namespace() -> Result<PathBuf, NsError> {
    let p = namespace_path();
    ensure_dir(&p)?;
    Ok(p)
}

fn ensure_dir(p: &Path) -> Result<(), NsError> {
    match fs::DirBuilder::new().mode(0o700).create(p) {
        Ok(()) => {
            // The umask may have taken bits away; 0700 is what we want, exactly.
            fs::set_permissions(p, fs::Permissions::from_mode(0o700))
                .map_err(|e| NsError::Create(p.into(), e))?;
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(NsError::Create(p.into(), e)),
    }
    let md = fs::symlink_metadata(p).map_err(|e| NsError::BadDir(p.into(), e.to_string()))?;
    if !md.is_dir() {
        return Err(NsError::BadDir(p.into(), "not a directory".into()));
    }
    if md.uid() != nix::unistd::getuid().as_raw() {
        return Err(NsError::BadDir(p.into(), "owned by another user".into()));
    }
    if md.mode() & 0o777 != 0o700 {
        return Err(NsError::BadDir(
            p.into(),
            format!("mode {:o}, not 700", md.mode() & 0o777),
        ));
    }
    Ok(())
}

/// Check a service name: one non-empty path element.
pub fn check_name(name: &str) -> Result<(), NsError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(NsError::BadName(name.into()));
    }
    Ok(())
}

/// The socket path of service `name`.
pub fn service_path(name: &str) -> Result<PathBuf, NsError> {
    check_name(name)?;
    Ok(namespace()?.join(name))
}

/// A service posted in the name space directory: a listening Unix socket, removed again
/// when this is dropped (if it is still ours).
#[derive(Debug)]
pub struct Posted {
    pub listener: UnixListener,
    pub path: PathBuf,
    ino: u64,
}

impl Posted {
    /// Take the listener out; the socket file is still removed on drop.
    pub fn try_clone_listener(&self) -> io::Result<UnixListener> {
        self.listener.try_clone()
    }
}

impl Drop for Posted {
    fn drop(&mut self) {
        if let Ok(md) = fs::symlink_metadata(&self.path) {
            if md.ino() == self.ino {
                let _ = fs::remove_file(&self.path);
            }
        }
    }
}

/// Post service `name`: bind a Unix socket at `$NAMESPACE/name`. A stale socket left by
/// a dead server is replaced; a live one is an error.
pub fn post(name: &str) -> Result<Posted, NsError> {
    let path = service_path(name)?;
    post_at(&path, name)
}

/// Bind a listening socket at `path`, replacing a stale socket there.
pub fn post_at(path: &Path, name: &str) -> Result<Posted, NsError> {
    if let Ok(md) = fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !md.file_type().is_socket() {
            return Err(NsError::Post(
                path.into(),
                io::Error::new(io::ErrorKind::AlreadyExists, "exists and is not a socket"),
            ));
        }
        if UnixStream::connect(path).is_ok() {
            return Err(NsError::Posted(name.into()));
        }
        let _ = fs::remove_file(path);
    }
    let listener = UnixListener::bind(path).map_err(|e| NsError::Post(path.into(), e))?;
    let ino = fs::symlink_metadata(path)
        .map_err(|e| NsError::Post(path.into(), e))?
        .ino();
    Ok(Posted {
        listener,
        path: path.into(),
        ino,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_canonical() {
        assert_eq!(canonical_display(":0.0"), ":0");
        assert_eq!(canonical_display("host:10.0"), "host:10");
        assert_eq!(canonical_display(":0.1"), ":0.1");
        assert_eq!(canonical_display("/tmp/launch/:0"), "_tmp_launch_:0");
    }

    #[test]
    fn path_rules() {
        assert_eq!(
            namespace_path_from(Some("/x/y".into()), Some(":1".into()), "u"),
            PathBuf::from("/x/y")
        );
        assert_eq!(
            namespace_path_from(None, Some(":0.0".into()), "glenda"),
            PathBuf::from("/tmp/ns.glenda.:0")
        );
        assert_eq!(
            namespace_path_from(Some("".into()), None, "glenda"),
            PathBuf::from("/tmp/ns.glenda.:0")
        );
    }

    #[test]
    fn dir_checks() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("ns");
        ensure_dir(&p).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o700);
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(ensure_dir(&p), Err(NsError::BadDir(..))));
        let f = t.path().join("file");
        fs::write(&f, "").unwrap();
        assert!(matches!(ensure_dir(&f), Err(NsError::BadDir(..))));
        // A directory of the right mode that belongs to someone else is refused. Only
        // root can make one here (as CI runs); others check what they can.
        if nix::unistd::getuid().is_root() {
            let other = t.path().join("other");
            fs::DirBuilder::new().mode(0o700).create(&other).unwrap();
            nix::unistd::chown(&other, Some(65534.into()), None).unwrap();
            match ensure_dir(&other) {
                Err(NsError::BadDir(_, why)) => assert!(why.contains("another user"), "{why}"),
                r => panic!("accepted a directory owned by another user: {r:?}"),
            }
        }
    }

    #[test]
    fn post_replaces_stale_and_refuses_live() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("svc");
        let a = post_at(&p, "svc").unwrap();
        assert!(matches!(post_at(&p, "svc"), Err(NsError::Posted(_))));
        drop(a);
        assert!(!p.exists());
        // A socket nobody listens on, as a crashed server leaves it, is stale.
        drop(UnixListener::bind(&p).unwrap());
        assert!(p.exists());
        let b = post_at(&p, "svc").unwrap();
        assert!(UnixStream::connect(&p).is_ok());
        drop(b);
        assert!(!p.exists());
        assert!(check_name("a/b").is_err());
    }
}

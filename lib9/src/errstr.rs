//! Plan 9's error strings, and the mapping between them and Unix errno values.
//!
//! 9P errors are strings. Servers here answer with the strings Plan 9's kernel and
//! lib9p use, so that people and programs that know Plan 9 recognise them; clients that
//! need an errno (the FUSE bridge, `9p`'s exit messages) map them back with
//! [`to_errno`], by a table rather than guesses.

use std::borrow::Cow;
use std::fmt;
use std::io;

pub const ENONEXIST: &str = "file does not exist";
pub const EEXIST: &str = "file already exists";
pub const EPERM: &str = "permission denied";
pub const ENOTDIR: &str = "not a directory";
pub const EISDIR: &str = "file is a directory";
pub const ENOTEMPTY: &str = "directory not empty";
pub const EINUSE: &str = "file in use";
pub const EEXCL: &str = "exclusive use file already open";
pub const EBADFID: &str = "unknown fid";
pub const EDUPFID: &str = "duplicate fid";
pub const EDUPTAG: &str = "duplicate tag";
pub const EISOPEN: &str = "file already open";
pub const ENOTOPEN: &str = "file not open";
pub const EBADUSE: &str = "inappropriate use of fid";
pub const EBADMODE: &str = "bad open mode";
pub const EBADOFFSET: &str = "bad offset in directory read";
pub const EBADCHAR: &str = "bad character in file name";
pub const EBADNAME: &str = "illegal name";
pub const EWALKNODIR: &str = "walk in non-directory";
pub const ECREATENONDIR: &str = "create in non-directory";
pub const ENOAUTH: &str = "authentication not required";
pub const ENOCREATE: &str = "create prohibited";
pub const ENOREMOVE: &str = "remove prohibited";
pub const ENOWRITE: &str = "write prohibited";
pub const ENOWSTAT: &str = "wstat prohibited";
pub const ENOREAD: &str = "read prohibited";
pub const EBOTCH: &str = "9P protocol botch";
pub const ETOOBIG: &str = "message too big";
pub const ETOOMANYFIDS: &str = "too many fids";
pub const ETOOMANYWALK: &str = "too many names in walk";
pub const EBADWSTAT: &str = "wstat can't change that";
pub const EWSTATUID: &str = "wstat can't change uid";
pub const EWSTATDIR: &str = "wstat can't convert between files and directories";
pub const EBADLENGTH: &str = "bad length in wstat";
pub const EINTR: &str = "interrupted";
pub const EIO: &str = "i/o error";
pub const ENOSPACE: &str = "file system full";
pub const EREADONLY: &str = "file system read only";
pub const EXDEV: &str = "cross-device rename";
pub const ELOOP: &str = "too many levels of symbolic links";
pub const EOUTSIDE: &str = "path leads outside the exported tree";
pub const ENAMETOOLONG: &str = "file name too long";
pub const ENOMEM: &str = "out of memory";
pub const EHUNGUP: &str = "i/o on hungup channel";
pub const EUNKNOWN: &str = "unknown error";

/// An error a file server answers with: the text of an `Rerror`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Ename(pub Cow<'static, str>);

impl Ename {
    pub fn new(s: impl Into<Cow<'static, str>>) -> Ename {
        Ename(s.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ename {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Ename {}

impl From<&'static str> for Ename {
    fn from(s: &'static str) -> Ename {
        Ename(Cow::Borrowed(s))
    }
}

impl From<String> for Ename {
    fn from(s: String) -> Ename {
        Ename(Cow::Owned(s))
    }
}

impl From<io::Error> for Ename {
    fn from(e: io::Error) -> Ename {
        match e.raw_os_error() {
            Some(n) => Ename::from(from_errno(n)),
            None => Ename(Cow::Owned(e.to_string())),
        }
    }
}

impl From<nix::Error> for Ename {
    fn from(e: nix::Error) -> Ename {
        Ename::from(from_errno(e as i32))
    }
}

/// The Plan 9 string for a Unix errno.
pub fn from_errno(n: i32) -> &'static str {
    match n {
        libc::ENOENT => ENONEXIST,
        libc::EEXIST => EEXIST,
        libc::EACCES | libc::EPERM => EPERM,
        libc::ENOTDIR => ENOTDIR,
        libc::EISDIR => EISDIR,
        libc::ENOTEMPTY => ENOTEMPTY,
        libc::EBUSY | libc::ETXTBSY => EINUSE,
        libc::EINTR => EINTR,
        libc::ENOSPC | libc::EDQUOT => ENOSPACE,
        libc::EROFS => EREADONLY,
        libc::EXDEV => EXDEV,
        libc::ELOOP => ELOOP,
        libc::ENAMETOOLONG => ENAMETOOLONG,
        libc::ENOMEM => ENOMEM,
        libc::EINVAL => "invalid argument",
        libc::EFBIG => "file too large",
        libc::EMLINK => "too many links",
        libc::ENXIO | libc::ENODEV => "no such device",
        libc::EPIPE => EHUNGUP,
        libc::EBADF => EBADUSE,
        libc::EAGAIN => "resource temporarily unavailable",
        libc::ESPIPE => "seek on a stream",
        libc::EOPNOTSUPP => "operation not supported",
        libc::ECONNREFUSED => "connection refused",
        libc::ECONNRESET => "connection reset",
        libc::ETIMEDOUT => "connection timed out",
        libc::EHOSTUNREACH => "host unreachable",
        libc::ENETUNREACH => "network unreachable",
        libc::EADDRINUSE => "address in use",
        libc::EADDRNOTAVAIL => "address not available",
        _ => EIO,
    }
}

/// The Unix errno closest to a 9P error string, for programs that need one.
///
/// Exact strings of Plan 9, plan9port and 9front come first; then phrases that those
/// systems' servers put into longer messages ("'x' does not exist", "create -- file
/// exists"). Anything unrecognised is `EIO`.
pub fn to_errno(ename: &str) -> i32 {
    let exact = match ename {
        ENONEXIST | "file not found" | "no such file or directory" => Some(libc::ENOENT),
        EEXIST | "file exists" => Some(libc::EEXIST),
        EPERM | "access permission denied" | "permission denied: not owner" => Some(libc::EACCES),
        ENOTDIR | EWALKNODIR | ECREATENONDIR => Some(libc::ENOTDIR),
        EISDIR | "is a directory" => Some(libc::EISDIR),
        ENOTEMPTY | "directory is not empty" => Some(libc::ENOTEMPTY),
        EINUSE | EEXCL | "file locked" => Some(libc::EBUSY),
        EBADFID | EBADUSE | ENOTOPEN => Some(libc::EBADF),
        EISOPEN | EBADMODE | EBADOFFSET | EBADWSTAT | EWSTATUID | EWSTATDIR | EBADLENGTH => {
            Some(libc::EINVAL)
        }
        EBADCHAR | EBADNAME => Some(libc::EINVAL),
        ENOCREATE | ENOREMOVE | ENOWRITE | ENOWSTAT | ENOREAD | EREADONLY => Some(libc::EPERM),
        EINTR => Some(libc::EINTR),
        ENOSPACE => Some(libc::ENOSPC),
        EXDEV => Some(libc::EXDEV),
        ELOOP => Some(libc::ELOOP),
        EOUTSIDE => Some(libc::EACCES),
        ENAMETOOLONG => Some(libc::ENAMETOOLONG),
        ENOMEM => Some(libc::ENOMEM),
        EHUNGUP => Some(libc::EPIPE),
        ENOAUTH => Some(libc::EOPNOTSUPP),
        _ => None,
    };
    if let Some(e) = exact {
        return e;
    }
    let lower = ename.to_ascii_lowercase();
    let phrases: &[(&str, i32)] = &[
        ("does not exist", libc::ENOENT),
        ("not found", libc::ENOENT),
        ("no such file", libc::ENOENT),
        ("already exists", libc::EEXIST),
        ("file exists", libc::EEXIST),
        ("permission denied", libc::EACCES),
        ("not a directory", libc::ENOTDIR),
        ("is a directory", libc::EISDIR),
        ("not empty", libc::ENOTEMPTY),
        ("in use", libc::EBUSY),
        ("read only", libc::EROFS),
        ("read-only", libc::EROFS),
        ("prohibited", libc::EPERM),
        ("interrupted", libc::EINTR),
        ("file system full", libc::ENOSPC),
        ("no space", libc::ENOSPC),
        ("unknown fid", libc::EBADF),
        ("bad fid", libc::EBADF),
        ("name too long", libc::ENAMETOOLONG),
        ("hungup", libc::EPIPE),
        ("out of memory", libc::ENOMEM),
    ];
    for (p, e) in phrases {
        if lower.contains(p) {
            return *e;
        }
    }
    libc::EIO
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_errno() {
        for e in [
            libc::ENOENT,
            libc::EEXIST,
            libc::EACCES,
            libc::ENOTDIR,
            libc::EISDIR,
            libc::ENOTEMPTY,
            libc::ENOSPC,
            libc::EXDEV,
        ] {
            assert_eq!(to_errno(from_errno(e)), e, "errno {e}");
        }
    }

    #[test]
    fn phrases_of_other_servers() {
        assert_eq!(to_errno("'foo' does not exist"), libc::ENOENT);
        assert_eq!(to_errno("create -- file exists"), libc::EEXIST);
        assert_eq!(to_errno("something odd"), libc::EIO);
    }
}

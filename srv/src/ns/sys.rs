//! The system calls the namespace engine is built from: Linux's mount API
//! (`open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `mount_setattr`),
//! `pivot_root`, user-namespace set-up and capabilities. Thin, checked wrappers.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn fd_result(r: libc::c_long) -> io::Result<OwnedFd> {
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

fn unit_result(r: libc::c_long) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

const AT_RECURSIVE: libc::c_uint = 0x8000;

/// A detached copy of the mount tree at `path` (with everything mounted beneath it).
pub fn clone_tree(dirfd: RawFd, path: &str) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | AT_RECURSIVE;
    if path.is_empty() {
        flags |= libc::AT_EMPTY_PATH as libc::c_uint;
    }
    // SAFETY: a path and flags; the result is checked.
    fd_result(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, p.as_ptr(), flags) })
}

/// Attach the detached tree `tree` at `path`.
pub fn attach(tree: &OwnedFd, path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    let empty = c"";
    // SAFETY: two descriptors/paths and flags; the result is checked.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            p.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
}

/// Set mount attributes (`MOUNT_ATTR_*`) on a detached tree, with everything in it.
pub fn set_attr(tree: &OwnedFd, set: u64) -> io::Result<()> {
    mount_setattr(
        tree.as_raw_fd(),
        "",
        libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE,
        set,
    )
}

/// Set mount attributes on the mount at `path` (not those beneath it).
pub fn set_attr_at(path: &str, set: u64) -> io::Result<()> {
    mount_setattr(libc::AT_FDCWD, path, 0, set)
}

fn mount_setattr(dirfd: RawFd, path: &str, flags: libc::c_uint, set: u64) -> io::Result<()> {
    let p = cstr(path)?;
    let mut attr = libc::mount_attr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path and the attr struct outlive the call; its size is passed.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            dirfd,
            p.as_ptr(),
            flags,
            &mut attr as *mut libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })
}

/// A new, detached mount of file system `fstype` configured by `params`
/// (`(key, Some(value))` strings, `(key, None)` flags), with mount attributes `attrs`.
pub fn new_mount(fstype: &str, params: &[(&str, Option<&str>)], attrs: u64) -> io::Result<OwnedFd> {
    let t = cstr(fstype)?;
    // SAFETY: a file system name; the result is checked.
    let fs =
        fd_result(unsafe { libc::syscall(libc::SYS_fsopen, t.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    for (k, v) in params {
        let key = cstr(k)?;
        let r = match v {
            Some(v) => {
                let val = cstr(v)?;
                // SAFETY: key and value are NUL-terminated and live through the call.
                unsafe {
                    libc::syscall(
                        libc::SYS_fsconfig,
                        fs.as_raw_fd(),
                        libc::FSCONFIG_SET_STRING,
                        key.as_ptr(),
                        val.as_ptr(),
                        0,
                    )
                }
            }
            // SAFETY: as above, with no value.
            None => unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fs.as_raw_fd(),
                    libc::FSCONFIG_SET_FLAG,
                    key.as_ptr(),
                    std::ptr::null::<libc::c_char>(),
                    0,
                )
            },
        };
        unit_result(r)?;
    }
    // SAFETY: no pointers.
    unit_result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    // SAFETY: no pointers.
    fd_result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs as libc::c_uint,
        )
    })
}

/// Detach the topmost mount at `path` (lazily: it goes when its last user does).
pub fn detach(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: a path; the result is checked.
    unit_result(unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) } as libc::c_long)
}

/// Make every mount beneath `path` private: nothing propagates in or out.
pub fn make_private(path: &str) -> io::Result<()> {
    let p = cstr(path)?;
    // SAFETY: paths and flags; the result is checked.
    unit_result(unsafe {
        libc::mount(
            std::ptr::null(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } as libc::c_long)
}

/// Make the current directory (a mount point) the root, taking the old root away.
pub fn pivot_here() -> io::Result<()> {
    let dot = c".";
    // SAFETY: paths; the result is checked. pivot_root(".", ".") stacks the old root
    // on the new one, from where it is detached.
    unit_result(unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) })?;
    // SAFETY: as above.
    unit_result(unsafe { libc::umount2(dot.as_ptr(), libc::MNT_DETACH) } as libc::c_long)?;
    std::env::set_current_dir("/")
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: flags only.
    unit_result(unsafe { libc::unshare(flags) } as libc::c_long)
}

/// Map our own user and group to themselves in a new user namespace.
pub fn map_self(uid: u32, gid: u32) -> io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    Ok(())
}

const CAP_SYS_ADMIN: u32 = 21;
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Whether CAP_SYS_ADMIN is in our effective set (in our user namespace).
pub fn have_sys_admin() -> bool {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: header and two data structs, as version 3 wants.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
    r == 0 && d[0].effective & (1 << CAP_SYS_ADMIN) != 0
}

/// Keep CAP_SYS_ADMIN across exec (as an ambient capability), so that programs
/// started in the name space can bind and mount in it too.
pub fn keep_sys_admin() -> io::Result<()> {
    let mut h = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: as in have_sys_admin.
    unit_result(unsafe {
        libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr())
    })?;
    d[0].inheritable |= 1 << CAP_SYS_ADMIN;
    // SAFETY: as above.
    unit_result(unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) })?;
    // SAFETY: prctl with integer arguments.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
            CAP_SYS_ADMIN as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    unit_result(r as libc::c_long)
}

/// Open a directory (or, with `path_only`, any file) for use as a handle.
pub fn open_dir(path: &str) -> io::Result<OwnedFd> {
    let p = cstr(path)?;
    // SAFETY: a path and flags; the result is checked.
    let fd = unsafe {
        libc::open(
            p.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    fd_result(fd as libc::c_long)
}

pub fn stat_path(path: &str) -> io::Result<libc::stat> {
    let p = cstr(path)?;
    // SAFETY: an out-parameter written by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: path and out-parameter.
    unit_result(unsafe { libc::stat(p.as_ptr(), &mut st) } as libc::c_long)?;
    Ok(st)
}

pub fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an out-parameter written by the kernel.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: descriptor and out-parameter.
    unit_result(unsafe { libc::fstat(fd, &mut st) } as libc::c_long)?;
    Ok(st)
}

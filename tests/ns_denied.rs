//! Where user namespaces are denied (Docker's seccomp profile denies `unshare`), a
//! login rc says so once, clearly, and carries on as plan9port does: commands run,
//! `bind` refuses, services are still sockets in `$NAMESPACE`. The denial is made
//! here the way Docker makes it: a seccomp filter that fails `unshare` with EPERM.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Install a filter failing `unshare` with EPERM (and allowing everything else).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn deny_unshare() -> std::io::Result<()> {
    const LD_W_ABS: u16 = 0x20;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const RET_ERRNO: u32 = 0x0005_0000;
    const RET_ALLOW: u32 = 0x7fff_0000;
    let f = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    let prog = [
        f(LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        f(JEQ_K, 0, 3, AUDIT_ARCH),
        f(LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        f(JEQ_K, 0, 1, libc::SYS_unshare as u32),
        f(RET_K, 0, 0, RET_ERRNO | libc::EPERM as u32),
        f(RET_K, 0, 0, RET_ALLOW),
    ];
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: prctl with a filter that outlives the call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &fprog as *const libc::sock_fprog,
            ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
#[test]
fn login_without_user_namespaces_says_so_once_and_carries_on() {
    let t = tempfile::tempdir().expect("tempdir");
    let home = t.path().join("home");
    let ns = t.path().join("ns");
    std::fs::create_dir_all(home.join("lib")).expect("mkdir");
    std::fs::create_dir(&ns).expect("mkdir");
    std::fs::set_permissions(&ns, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rc"));
    cmd.arg("-l")
        .arg("-c")
        .arg("echo running; bind / /n; echo status $status; rfork n; echo rfork $status")
        .env("HOME", &home)
        .env("NAMESPACE", &ns)
        .env_remove("NONAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure makes system calls only.
    unsafe {
        cmd.pre_exec(deny_unshare);
    }
    let child = cmd.spawn().expect("rc");
    let pid = child.id();
    let start = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = loop {
        if let Ok(r) = rx.recv_timeout(Duration::from_millis(100)) {
            break r.expect("wait");
        }
        if start.elapsed() > Duration::from_secs(30) {
            // SAFETY: killing our own child by pid.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("rc did not finish");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout,
        "running\nstatus no name space\nrfork no private name space: user namespaces are denied here (permission denied)\n",
        "stderr: {stderr}"
    );
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("rc: no private name space"))
        .collect();
    assert_eq!(
        said,
        [
            "rc: no private name space: user namespaces are denied here (permission denied); carrying on without one (see docs/namespaces.md)"
        ],
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains("bind: not in a private name space"),
        "stderr: {stderr}"
    );
    assert!(out.status.success() || out.status.code().is_some());
}

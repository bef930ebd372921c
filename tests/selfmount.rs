//! Services that mount themselves in the private name space they are started in, as
//! on Plan 9: factotum at /mnt/factotum (mounted before it returns, when it goes into
//! the background) and the plumber at /mnt/plumb (mounted aside when it stays in the
//! foreground), each mount taken away again when the service stops. Outside a private
//! name space nothing is mounted.

mod common;

use common::*;

const RC: &str = env!("CARGO_BIN_EXE_rc");

/// Kills the service posted as `name` (by pid) when dropped.
struct Posted<'a>(&'a Ns, &'static str);

impl Drop for Posted<'_> {
    fn drop(&mut self) {
        if let Some(pid) = find_pid(self.0, self.1) {
            // SAFETY: kill(2) on the pid serving our own test's socket.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
}

#[test]
fn factotum_and_plumber_mount_themselves() {
    if !fuse_or_skip() {
        return;
    }
    let ns = Ns::new();
    let _f = Posted(&ns, "fact");
    let _p = Posted(&ns, "plumbsvc");
    let home = tempfile::tempdir().expect("home");
    let script = r#"rfork n
factotum -n -s fact || exit factotum
echo 'key proto=pass user=glenda !password=secret' >/mnt/factotum/ctl
cat /mnt/factotum/ctl
plumber -f -s plumbsvc &
p=$apid
for(i in `{seq 200}) if(! test -e /mnt/plumb/send) sleep 0.05
ls /mnt/plumb/send
ns | grep -Ec '^mount -n (fact|plumbsvc) '
kill $p
for(i in `{seq 200}) if(test -e /mnt/plumb/send) sleep 0.05
ns | grep -c '^mount -n plumbsvc '
echo end
"#;
    let mut c = ns.cmd(RC);
    c.env("HOME", home.path())
        .env("home", home.path())
        .env("PATH", path_with_binaries())
        .args(["-c", script]);
    let o = run_with_input(&mut c, None);
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        out, "key proto=pass user=glenda !password?\n/mnt/plumb/send\n2\n0\nend\n",
        "{err}"
    );
    // The service itself is still posted: used through $NAMESPACE as ever.
    let o = ns.ninep(&["read", "fact/ctl"], None);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "key proto=pass user=glenda !password?\n"
    );
}

#[test]
fn outside_a_private_name_space_nothing_is_mounted() {
    let ns = Ns::new();
    let _f = Posted(&ns, "fact");
    let mut c = ns.cmd(env!("CARGO_BIN_EXE_factotum"));
    c.args(["-n", "-s", "fact", "-m", "/nonexistent/factotum"]);
    let o = run_with_input(&mut c, None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!std::path::Path::new("/nonexistent/factotum").exists());
}

/// $PATH with the directory of the binaries under test first.
fn path_with_binaries() -> String {
    let dir = std::path::Path::new(RC)
        .parent()
        .expect("bin dir")
        .to_string_lossy()
        .into_owned();
    format!("{dir}:{}", std::env::var("PATH").unwrap_or_default())
}

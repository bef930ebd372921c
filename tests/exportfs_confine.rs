//! exportfs cannot be made to reach outside its root: not by `..`, not by absolute or
//! relative symbolic links, not by an aname, not by renaming or creating with odd names.

mod common;
use bytes::Bytes;
use common::*;
use lib9::client::{Client, Options};
use lib9::dial;
use lib9::fcall::{ORDWR, OREAD, OWRITE, Stat};
use std::os::unix::fs::symlink;

struct Tree {
    top: tempfile::TempDir,
}

impl Tree {
    /// top/secret (outside), top/root/ (exported) with links of every kind.
    fn new() -> Tree {
        let top = tempfile::tempdir().expect("tempdir");
        let t = top.path();
        std::fs::write(t.join("secret"), b"the secret").expect("secret");
        std::fs::create_dir_all(t.join("outdir")).expect("outdir");
        std::fs::write(t.join("outdir/other"), b"also secret").expect("other");
        let r = t.join("root");
        std::fs::create_dir_all(r.join("sub/deeper")).expect("mkdir");
        std::fs::write(r.join("inside"), b"fine").expect("inside");
        symlink(t.join("secret"), r.join("abs")).expect("abs link");
        symlink("../secret", r.join("rel")).expect("rel link");
        symlink("../../../secret", r.join("sub/deeper/far")).expect("far link");
        symlink("../outdir", r.join("dirlink")).expect("dir link");
        symlink("/", r.join("slash")).expect("slash link");
        symlink("inside", r.join("good")).expect("good link");
        symlink("../inside", r.join("sub/up")).expect("up link");
        Tree { top }
    }
    fn root(&self) -> std::path::PathBuf {
        self.top.path().join("root")
    }
}

async fn connect(addr: &str) -> Client {
    let conn = dial::dial_addr(&dial::parse(addr).expect("addr"))
        .await
        .expect("dial");
    Client::connect(conn, Options::default())
        .await
        .expect("version")
}

/// Read a path through the server, if it can be read at all.
async fn read(c: &Client, aname: &str, path: &str) -> Result<Vec<u8>, String> {
    let root = c.attach("glenda", aname).await.map_err(|e| e.to_string())?;
    let mut f = root.walk(path).await.map_err(|e| e.to_string())?;
    f.open(OREAD).await.map_err(|e| e.to_string())?;
    f.read_all().await.map_err(|e| e.to_string())
}

#[test]
fn no_way_out() {
    let tree = Tree::new();
    let ns = Ns::new();
    let root = tree.root();
    let s = start_posted(&ns, EXPORTFS, "exp", &[root.to_str().expect("utf8")]);
    let rt = rt();
    within(&rt, 60, async {
        let c = connect(&s.addr).await;
        // Links that stay inside work.
        assert_eq!(read(&c, "", "good").await.expect("good link"), b"fine");
        assert_eq!(read(&c, "", "sub/up").await.expect("up link"), b"fine");
        // Links that lead out do not, however they are written.
        for p in [
            "abs",
            "rel",
            "sub/deeper/far",
            "dirlink/other",
            "slash/etc/passwd",
        ] {
            let r = read(&c, "", p).await;
            assert!(r.is_err(), "{p} leaked: {r:?}");
            if let Ok(d) = &r {
                assert_ne!(d, b"the secret");
            }
        }
        let e = read(&c, "", "abs").await.expect_err("abs");
        assert!(e.contains("outside"), "{e}");
        // `..` stays at the root, however many.
        for p in [
            "..",
            "../..",
            "../secret",
            "../../secret",
            "sub/../../secret",
            "../root/inside",
        ] {
            let r = read(&c, "", p).await;
            assert!(
                r.as_deref() != Ok(b"the secret".as_slice()),
                "{p} read the secret"
            );
        }
        let root_fid = c.attach("glenda", "").await.expect("attach");
        let up = root_fid.walk("../../..").await.expect("walk ..");
        assert_eq!(up.qid().path, root_fid.qid().path);
        // An aname cannot climb out either.
        assert!(c.attach("glenda", "../").await.is_err());
        assert!(c.attach("glenda", "dirlink").await.is_err());
        assert!(read(&c, "sub", "../../secret").await.is_err());
        // Creating through a link that leads out fails, and creates nothing outside.
        let mut d = root_fid.walk("").await.expect("clone");
        d.create("x", 0o644, OWRITE).await.expect("create inside");
        if let Ok(mut dl) = root_fid.walk("dirlink").await {
            assert!(dl.create("planted", 0o644, OWRITE).await.is_err());
        }
        assert!(!tree.top.path().join("outdir/planted").exists());
        // Names with slashes or dot-dot are refused by the protocol layer.
        let mut d = root_fid.walk("").await.expect("clone");
        assert!(d.create("../escaped", 0o644, OWRITE).await.is_err());
        let mut d = root_fid.walk("").await.expect("clone");
        assert!(d.create("..", 0o644, OWRITE).await.is_err());
        assert!(!tree.top.path().join("escaped").exists());
        // Renaming out of the tree is impossible.
        let f = root_fid.walk("x").await.expect("walk");
        let mut w = Stat::dont_touch();
        w.name = "../moved".into();
        assert!(f.wstat(&w).await.is_err());
        w.name = "..".into();
        assert!(f.wstat(&w).await.is_err());
        assert!(!tree.top.path().join("moved").exists());
        // Writing through an escaping link fails and leaves the target alone.
        if let Ok(mut l) = root_fid.walk("rel").await {
            if l.open(ORDWR).await.is_ok() {
                let _ = l.write(0, Bytes::from_static(b"overwritten")).await;
            }
        }
        assert_eq!(
            std::fs::read(tree.top.path().join("secret")).expect("secret"),
            b"the secret"
        );
        // Removing through a link removes nothing outside.
        if let Ok(l) = root_fid.walk("dirlink/other").await {
            let _ = l.remove().await;
        }
        assert!(tree.top.path().join("outdir/other").exists());
        // A listing shows the links themselves, and does not follow them out.
        let mut d = root_fid.walk("").await.expect("clone");
        d.open(OREAD).await.expect("open root");
        let list = d.readdir().await.expect("readdir");
        // The entry for an escaping link describes the link (its length is that of
        // the path it holds), not the file outside.
        let abs = list.iter().find(|s| s.name == "abs").expect("abs listed");
        let target = tree.top.path().join("secret");
        assert_eq!(abs.length, target.as_os_str().len() as u64);
        let inside = list.iter().find(|s| s.name == "good").expect("good listed");
        assert_eq!(inside.length, 4, "a link inside is followed");
        assert!(list.iter().all(|s| s.name != "secret"));
    });
}

#[test]
fn read_only_export_refuses_changes() {
    let tree = Tree::new();
    let ns = Ns::new();
    let root = tree.root();
    let s = start_posted(&ns, EXPORTFS, "exp", &["-R", root.to_str().expect("utf8")]);
    let rt = rt();
    within(&rt, 60, async {
        let c = connect(&s.addr).await;
        assert_eq!(read(&c, "", "inside").await.expect("read"), b"fine");
        let r = c.attach("glenda", "").await.expect("attach");
        let mut f = r.walk("inside").await.expect("walk");
        let e = f.open(OWRITE).await.expect_err("open for write");
        assert!(e.to_string().contains("read only"), "{e}");
        let mut d = r.walk("").await.expect("clone");
        assert!(d.create("new", 0o644, OWRITE).await.is_err());
        let f = r.walk("inside").await.expect("walk");
        let mut w = Stat::dont_touch();
        w.mode = 0o600;
        assert!(f.wstat(&w).await.is_err());
        assert!(f.remove().await.is_err());
        assert_eq!(std::fs::read(root.join("inside")).expect("host"), b"fine");
        assert!(!root.join("new").exists());
    });
}

/// Files of pseudo file systems say one size and hold another (proc says 0, sys says a
/// page): they are read as they are, not by their stat.
#[test]
fn pseudo_files_read_as_they_are() {
    let ns = Ns::new();
    let _p = start_posted(&ns, EXPORTFS, "proc", &["-R", "/proc"]);
    let o = ns.ninep(&["read", "proc/version"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want = std::fs::read("/proc/version").expect("read /proc/version");
    assert_eq!(o.stdout, want);
    // A large read (one message of up to 1 MiB) of a file whose stat says 0.
    let o = ns.ninep(&["read", "proc/self/mountinfo"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        o.stdout.len() > 10 && !o.stdout.contains(&0),
        "mountinfo: {:?}",
        o.stdout.len()
    );
    if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists() {
        let _s = start_posted(&ns, EXPORTFS, "sys", &["-R", "/sys"]);
        let o = ns.ninep(
            &["read", "sys/kernel/mm/transparent_hugepage/enabled"],
            None,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let want = std::fs::read("/sys/kernel/mm/transparent_hugepage/enabled").expect("sysfs");
        assert_eq!(o.stdout, want, "sysfs file padded or cut");
    }
}

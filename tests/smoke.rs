mod common;
use common::*;

#[test]
fn ramfs_posts_and_9p_reads_back() {
    let ns = Ns::new();
    let _s = start_posted(&ns, RAMFS, "ram", &[]);
    let o = ns.ninep(&["create", "ram/f"], None);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ns.ninep(&["write", "ram/f"], Some(b"hello\n"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ns.ninep(&["read", "ram/f"], None);
    assert_eq!(o.stdout, b"hello\n");
}

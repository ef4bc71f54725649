//! The established NFS server used as the benchmark anchor and as the negative control of the
//! handle-survival test really serves here: nfs-ganesha (FSAL VFS) in a namespace, read by
//! libnfs's `nfs-ls`/`nfs-cat` without a portmapper lookup.

use std::fs;

use cm_tests::ganesha::{Ganesha, GANESHA_MOUNT_PORT};
use cm_tests::{require_program, require_root, Netns};

#[test]
fn ganesha_serves_a_tree_to_libnfs() {
    let test = "ganesha_serves_a_tree_to_libnfs";
    if !require_root(test)
        || !require_program(test, "ganesha.nfsd")
        || !require_program(test, "rpcbind")
        || !require_program(test, "nfs-cat")
    {
        return;
    }
    let tree = tempfile::tempdir().unwrap();
    fs::write(tree.path().join("hello.txt"), "hello from ganesha\n").unwrap();
    let ns = Netns::new("cmgan").unwrap();
    ns.ip(&["link", "set", "lo", "up"]).unwrap();
    let g = Ganesha::start(&ns, tree.path(), "127.0.0.1").unwrap();
    let url = format!(
        "nfs://127.0.0.1{}/hello.txt?version=3&nfsport=2049&mountport={GANESHA_MOUNT_PORT}",
        tree.path().display()
    );
    let out = ns
        .run("nfs-cat", &[&url])
        .unwrap_or_else(|e| panic!("nfs-cat failed: {e}\nganesha log:\n{}", g.log_text()));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello from ganesha\n");
}

//! Node images: the versioned image store, image sources, snapshots and the node initramfs.
//!
//! An **image** is an exported root tree plus its kernel, initramfs and metadata (source,
//! content hash, build time), kept as immutable **versions** under `<images_dir>/NAME/`
//! ([`store`] has the layout). `current` names the version nodes boot and the NFS server
//! serves; publishing a new version and switching `current` is atomic, and old versions stay
//! until pruned, so replacing an image while nodes run it never breaks them.
//!
//! | module | responsibility |
//! | --- | --- |
//! | [`source`] | source spellings, host excludes, the debootstrap command (pure) |
//! | [`relpath`] | checked relative paths for archive entries (pure) |
//! | [`listing`] | the canonical listing and content hash of a tree; scanning |
//! | [`tree`] | writing a staging tree safely (no escape from the root) |
//! | [`import`] | dir, tar(.gz) and OCI/`docker save` sources into a tree |
//! | [`kernel`] | the kernel of an image (its own, or given) |
//! | [`initramfs`] | the node initramfs (also used by `cargo xtask build-image`) |
//! | [`share`] | reflink / hard-link sharing between versions and snapshots |
//! | [`space`] | unique vs shared space of a tree |
//! | [`store`] | layout, lock, atomic `current` switch, prune |
//! | [`build`] | build/update: a source into a new version |
//! | [`snapshot`] | snapshot, verify, rollback, list/show report |
//!
//! **How to change an image safely**: publish a new version (`clustermaker image update NAME`,
//! after changing the source), or use tools that replace files rather than write into them.
//! Never edit `versions/*/root` in place: files there may be hard links shared with other
//! versions and snapshots (on file systems without reflinks); `image verify` names any file
//! changed that way.

pub mod build;
pub mod import;
pub mod initramfs;
pub mod kernel;
pub mod listing;
pub mod meta;
pub mod overlay;
pub mod progress;
pub mod relpath;
pub mod share;
pub mod snapshot;
pub mod source;
pub mod space;
pub mod store;
pub mod tree;

pub use build::{build, BuildOptions, BuildReport, InitramfsOptions};
/// Initramfs compression (re-exported so callers need not depend on `initrd`).
pub use initrd::Compression;
pub use listing::{Listing, ScanOptions};
pub use meta::{Export, VersionMeta};
pub use progress::{Console, Progress, Silent};
pub use snapshot::{
    info, rollback, snapshot, verify, ImageInfo, RollbackReport, SnapshotReport, TreeCheck,
};
pub use source::Source;
pub use store::Store;

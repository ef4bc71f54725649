//! Node images: sources, overlays rendered with minijinja, NFS export, snapshots. Built in the
//! shared-root issue; nothing here yet.
pub mod overlay;

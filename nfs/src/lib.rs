//! Embedded read-only NFSv3 server (RFC 1813) with MOUNTv3 on the same TCP port, made so that
//! file handles are the same on every copy of a tree: a node keeps running when the backup
//! master, serving its own file-by-file copy, takes over. Design and reasons:
//! `docs/design/nfs-server.md`.
//!
//! Layers, pure first:
//! - [`xdr`], [`record`], [`rpc`], [`proto`]: wire codecs (bytes in, values out; no I/O).
//! - [`fs`]: the contract between the protocol side and the file side ([`fs::Filesystem`]).
//! - [`handle`], [`index`]: handles from a keyed hash of the path and the content; the
//!   in-memory index of one tree. [`exports`]: named exports, version switch, rescans.
//! - [`ops`]: one RPC call in, one reply out, over a [`fs::Filesystem`] (pure).
//! - [`io`], [`server`]: file reads and the tokio TCP server (the edges).

pub mod fs;
pub mod handle;
pub mod index;
pub mod exports;
pub mod io;
pub mod xdr;
pub mod record;
pub mod rpc;
pub mod proto;
pub mod ops;
pub mod server;
pub mod memfs;

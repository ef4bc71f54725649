//! Feeds arbitrary bytes as a TCP stream into the pure connection core of the NFS server:
//! record deframer → RPC decoding → NFSv3/MOUNTv3 dispatcher over the in-memory test
//! filesystem. The stream is cut into chunks whose sizes come from the first input byte, so
//! the same records are also seen split at arbitrary points.
//!
//! Invariants: no panic; every reply is a well-formed RPC reply of at most
//! `ops::MAX_REPLY_LEN` bytes; READs the dispatcher lets through are capped at `MAX_READ`.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nfs::memfs::MemFs;
use nfs::ops::{self, Action, Stats, MAX_READ, MAX_REPLY_LEN};
use nfs::record::{Deframer, Frame, DISCARD_HEAD, MAX_RECORD};
use nfs::rpc;

/// Data bytes actually read per READ: the generated 5 GiB file costs time per byte, and the
/// read path's framing does not depend on the count beyond this.
const FUZZ_READ_CAP: u32 = 64 * 1024;

static FS: OnceLock<MemFs> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let fs = FS.get_or_init(MemFs::new);
    let stats = Stats::new();
    let Some((&seed, mut stream)) = data.split_first() else {
        return;
    };
    let mut state = u32::from(seed) | 1;
    let mut deframer = Deframer::new();
    'stream: while !stream.is_empty() {
        // Chunk sizes from a small LCG seeded by the first byte: 1..=512 bytes.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((state >> 16) as usize % 512 + 1).min(stream.len());
        let (mut chunk, rest) = stream.split_at(n);
        stream = rest;
        while let Some(frame) = deframer.feed(&mut chunk) {
            match &frame {
                Frame::Record(r) => assert!(r.len() <= MAX_RECORD),
                Frame::Discarded { head, .. } => assert!(head.len() <= DISCARD_HEAD),
            }
            assert!(deframer.buffered() <= MAX_RECORD);
            let reply = match ops::handle_frame(&frame, fs, &stats) {
                Action::Reply(r) => r,
                Action::Read(mut req) => {
                    assert!(req.count <= MAX_READ);
                    req.count = req.count.min(FUZZ_READ_CAP);
                    ops::read_reply(&req, fs)
                }
                Action::Ignore => continue,
                // The server closes the connection here: the rest of the stream is never read.
                Action::Close => break 'stream,
            };
            assert!(
                reply.len() <= MAX_REPLY_LEN,
                "reply of {} bytes",
                reply.len()
            );
            assert!(rpc::decode_reply(&reply).is_some(), "unparsable reply");
        }
    }
});

//! A hostile serial line: any byte stream, read in any chunking, goes through the COBS
//! deframer; every frame goes to `wire::decode`. Nothing may panic, no frame may exceed the
//! bound, and any payload survives an encode/decode round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use runtime::links::frame::{self, Deframer, Piece, MAX_FRAME};
use runtime::wire::{self, Key};

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, stream)) = data.split_first() else {
        return;
    };
    let key = Key::new(b"fuzzing key, 32 bytes long......".to_vec()).expect("long enough");
    let mut deframer = Deframer::default();
    for part in stream.chunks(usize::from(chunk).max(1)) {
        deframer.push(part, |piece| {
            if let Piece::Frame(bytes) = piece {
                assert!(bytes.len() <= MAX_FRAME);
                let _ = wire::decode(&bytes, &key);
            }
        });
    }
    let encoded = frame::encode(stream);
    assert_eq!(encoded.iter().filter(|&&b| b == 0).count(), 1);
    assert_eq!(
        frame::decode(&encoded[..encoded.len() - 1]).as_deref(),
        Some(stream)
    );
});

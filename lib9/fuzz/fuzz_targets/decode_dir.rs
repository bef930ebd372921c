//! `fcall::decode_dir` (the stat entries of a directory read) and `Stat::decode` of
//! arbitrary bytes: never a panic, and what decodes re-encodes to exactly the input.
#![no_main]

use bytes::BytesMut;
use lib9::fcall::{self, Stat};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(stats) = fcall::decode_dir(data) {
        let mut b = BytesMut::new();
        for s in &stats {
            s.encode(&mut b).expect("a decoded stat re-encodes");
            let _ = s.to_string();
        }
        assert_eq!(&b[..], data, "round trip changed the bytes of {stats:?}");
    }
    if let Ok(s) = Stat::decode(data) {
        let mut b = BytesMut::new();
        s.encode(&mut b).expect("a decoded stat re-encodes");
        assert_eq!(&b[..], data, "round trip changed the bytes of {s:?}");
    }
});

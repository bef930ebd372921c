//! `fcall_l::decode` (9P2000.L) of arbitrary bytes, as they come and with the size
//! field patched to the input's length. Decoding must never panic, and a message that
//! decodes must re-encode to exactly the input (the decoding is strict). `Rreaddir`
//! data must decode or fail cleanly, and re-encode to itself when it decodes.
#![no_main]

use bytes::Bytes;
use lib9::fcall::MAX_MSIZE;
use lib9::fcall_l::{self, LFcall};
use libfuzzer_sys::fuzz_target;

fn check(frame: &[u8]) {
    let Ok(m) = fcall_l::decode(Bytes::copy_from_slice(frame), MAX_MSIZE) else {
        return;
    };
    let again = m.to_bytes().expect("a decoded message re-encodes");
    assert_eq!(&again[..], frame, "round trip changed {m:?}");
    if let LFcall::Rreaddir { data } = &m.body {
        if let Ok(ents) = fcall_l::decode_dirents(data) {
            let back = fcall_l::encode_dirents(&ents).expect("entries re-encode");
            assert_eq!(&back[..], &data[..]);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() >= 4 {
        let mut v = data.to_vec();
        let n = v.len() as u32;
        v[..4].copy_from_slice(&n.to_le_bytes());
        if v[..] != *data {
            check(&v);
        }
    }
});

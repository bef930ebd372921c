//! `fcall::decode` of arbitrary bytes, as they come and with the size field patched to
//! the input's length (so that the body decoder is reached). Decoding must never
//! panic, and a message that decodes must re-encode to exactly the input: decoding is
//! strict, so every message has one encoding.
#![no_main]

use bytes::{Bytes, BytesMut};
use lib9::fcall::{self, MAX_MSIZE};
use libfuzzer_sys::fuzz_target;

fn check(frame: &[u8]) {
    let Ok(m) = fcall::decode(Bytes::copy_from_slice(frame), MAX_MSIZE) else {
        return;
    };
    let again = m.to_bytes().expect("a decoded message re-encodes");
    assert_eq!(
        &again[..],
        frame,
        "round trip changed the bytes of {m}\n input {frame:02x?}\n output {:02x?}",
        &again[..]
    );
    assert_eq!(m.body.encoded_len(), frame.len());
    // The vectored form is the same bytes.
    let mut head = BytesMut::new();
    if let Some(bulk) = m.encode_head(&mut head).expect("encode_head") {
        head.extend_from_slice(&bulk);
    }
    assert_eq!(&head[..], frame);
    // Traces print every message.
    let _ = m.to_string();
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
    } else {
        // Too short to carry a size field: give it a correct one in front.
        let mut v = ((data.len() + 4) as u32).to_le_bytes().to_vec();
        v.extend_from_slice(data);
        check(&v);
    }
});

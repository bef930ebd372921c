//! Property tests of the 9P2000 codec (`lib9::fcall`) and of dial-string parsing.
//!
//! - every message round-trips, `encoded_len` is exact, and `encode_head` plus the
//!   bulk data is the same byte string as `encode`;
//! - decoding any byte string never panics, and whatever decodes re-encodes to exactly
//!   the bytes it came from (strict decoding: one encoding per message);
//! - no strict prefix and no one-byte extension of a valid encoding decodes;
//! - every length field is checked: a valid encoding with a length off by one (and
//!   a byte added or taken away to match) decodes to nothing or to its one encoding;
//! - `decode_dir` never panics and gives back concatenated stat entries;
//! - what cannot be framed is refused by the encoder, which then leaves the buffer
//!   as it was;
//! - `dial::parse` and `dial::parse_host` never panic.
//!
//! The case counts (each block's `ProptestConfig`) keep the whole file to a few
//! seconds in a debug build; for a long soak, raise them, or run the cargo-fuzz
//! targets in `lib9/fuzz`.

use bytes::{Bytes, BytesMut};
use lib9::dial::{self, Addr};
use lib9::fcall::{self, Fcall, MAX_MSIZE, MAXWELEM, Msg, ProtoError, Qid, Stat};
use proptest::prelude::*;

// ---------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------

/// Arbitrary UTF-8 without NUL, at most `max` characters (so at most 4*max bytes).
fn string(max: usize) -> impl Strategy<Value = String> + Clone {
    prop::collection::vec(
        any::<char>().prop_map(|c| if c == '\0' { '\u{1}' } else { c }),
        0..=max,
    )
    .prop_map(String::from_iter)
}

/// A short string, as names, unames and version strings are.
fn name() -> impl Strategy<Value = String> + Clone {
    string(24)
}

fn qid() -> impl Strategy<Value = Qid> + Clone {
    (any::<u8>(), any::<u32>(), any::<u64>()).prop_map(|(ty, vers, path)| Qid { ty, vers, path })
}

fn data() -> impl Strategy<Value = Bytes> + Clone {
    prop::collection::vec(any::<u8>(), 0..=512).prop_map(Bytes::from)
}

fn stat() -> impl Strategy<Value = Stat> + Clone {
    (
        (
            any::<u16>(),
            any::<u32>(),
            qid(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
        ),
        (name(), name(), name(), name()),
    )
        .prop_map(
            |((ty, dev, qid, mode, atime, mtime, length), (name, uid, gid, muid))| Stat {
                ty,
                dev,
                qid,
                mode,
                atime,
                mtime,
                length,
                name,
                uid,
                gid,
                muid,
            },
        )
}

/// Every `Fcall` variant, with arbitrary fields.
fn fcall() -> impl Strategy<Value = Fcall> {
    prop_oneof![
        (any::<u32>(), name()).prop_map(|(msize, version)| Fcall::Tversion { msize, version }),
        (any::<u32>(), name()).prop_map(|(msize, version)| Fcall::Rversion { msize, version }),
        (any::<u32>(), name(), name()).prop_map(|(afid, uname, aname)| Fcall::Tauth {
            afid,
            uname,
            aname
        }),
        qid().prop_map(|aqid| Fcall::Rauth { aqid }),
        (any::<u32>(), any::<u32>(), name(), name()).prop_map(|(fid, afid, uname, aname)| {
            Fcall::Tattach {
                fid,
                afid,
                uname,
                aname,
            }
        }),
        qid().prop_map(|qid| Fcall::Rattach { qid }),
        string(64).prop_map(|ename| Fcall::Rerror { ename }),
        any::<u16>().prop_map(|oldtag| Fcall::Tflush { oldtag }),
        Just(Fcall::Rflush),
        (
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(name(), 0..=MAXWELEM)
        )
            .prop_map(|(fid, newfid, wnames)| Fcall::Twalk {
                fid,
                newfid,
                wnames
            }),
        prop::collection::vec(qid(), 0..=MAXWELEM).prop_map(|wqids| Fcall::Rwalk { wqids }),
        (any::<u32>(), any::<u8>()).prop_map(|(fid, mode)| Fcall::Topen { fid, mode }),
        (qid(), any::<u32>()).prop_map(|(qid, iounit)| Fcall::Ropen { qid, iounit }),
        (any::<u32>(), name(), any::<u32>(), any::<u8>()).prop_map(|(fid, name, perm, mode)| {
            Fcall::Tcreate {
                fid,
                name,
                perm,
                mode,
            }
        }),
        (qid(), any::<u32>()).prop_map(|(qid, iounit)| Fcall::Rcreate { qid, iounit }),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(fid, offset, count)| Fcall::Tread {
            fid,
            offset,
            count
        }),
        data().prop_map(|data| Fcall::Rread { data }),
        (any::<u32>(), any::<u64>(), data()).prop_map(|(fid, offset, data)| Fcall::Twrite {
            fid,
            offset,
            data
        }),
        any::<u32>().prop_map(|count| Fcall::Rwrite { count }),
        any::<u32>().prop_map(|fid| Fcall::Tclunk { fid }),
        Just(Fcall::Rclunk),
        any::<u32>().prop_map(|fid| Fcall::Tremove { fid }),
        Just(Fcall::Rremove),
        any::<u32>().prop_map(|fid| Fcall::Tstat { fid }),
        stat().prop_map(|stat| Fcall::Rstat { stat }),
        (any::<u32>(), stat()).prop_map(|(fid, stat)| Fcall::Twstat { fid, stat }),
        Just(Fcall::Rwstat),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    (any::<u16>(), fcall()).prop_map(|(tag, body)| Msg::new(tag, body))
}

fn encode(m: &Msg) -> Vec<u8> {
    let mut b = BytesMut::new();
    m.encode(&mut b).expect("encode");
    b.to_vec()
}

/// Overwrite the size field with the frame's length (if it has room for one).
fn patch_size(v: &mut [u8]) {
    if v.len() >= 4 {
        let n = v.len() as u32;
        v[..4].copy_from_slice(&n.to_le_bytes());
    }
}

/// Byte strings for the decoder: pure noise, a plausible header followed by noise,
/// and valid encodings with a few bytes changed, cut or added (size field patched or
/// not), which reach deep into the decoder.
fn frame() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..=64);
    let header_then_noise = (
        prop_oneof![3 => 100u8..=127, 1 => any::<u8>()],
        any::<u16>(),
        prop::collection::vec(any::<u8>(), 0..=96),
    )
        .prop_map(|(ty, tag, tail)| {
            let mut v = vec![0; 4];
            v.push(ty);
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&tail);
            patch_size(&mut v);
            v
        });
    let mutated = (
        msg(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..=4),
        prop_oneof![
            Just(None),
            (any::<prop::sample::Index>(), any::<bool>()).prop_map(Some)
        ],
        any::<bool>(),
    )
        .prop_map(|(m, pokes, cut, patch)| {
            let mut v = encode(&m);
            for (i, b) in pokes {
                let i = i.index(v.len());
                v[i] = b;
            }
            match cut {
                Some((i, false)) => v.truncate(i.index(v.len() + 1)),
                Some((i, true)) => v.insert(i.index(v.len() + 1), 0x41),
                None => {}
            }
            if patch {
                patch_size(&mut v);
            }
            v
        });
    prop_oneof![1 => noise, 2 => header_then_noise, 4 => mutated]
}

// ---------------------------------------------------------------------------
// Properties of the message codec
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Encode, decode: the same message; `encoded_len` is the encoded length; and the
    /// head plus the bulk data is the whole encoding.
    #[test]
    fn round_trip(m in msg(), prefix in prop::collection::vec(any::<u8>(), 0..8)) {
        let bytes = m.to_bytes().expect("encode");
        prop_assert_eq!(bytes.len(), m.body.encoded_len());
        let len = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
        prop_assert_eq!(len, bytes.len());
        prop_assert_eq!(bytes[4], m.body.mtype());

        let d = fcall::decode(bytes.clone(), MAX_MSIZE).expect("decode");
        prop_assert_eq!(&d, &m);
        // Also at the tightest msize that admits it, and not one byte below.
        let exact = bytes.len() as u32;
        prop_assert_eq!(fcall::decode(bytes.clone(), exact), Ok(m.clone()));
        let too_big = matches!(
            fcall::decode(bytes.clone(), exact - 1),
            Err(ProtoError::TooBig { .. }) | Err(ProtoError::TooShort(_))
        );
        prop_assert!(too_big);

        // `encode` appends: whatever was in the buffer stays in front.
        let mut whole = BytesMut::from(&prefix[..]);
        m.encode(&mut whole).expect("encode");
        prop_assert_eq!(&whole[..prefix.len()], &prefix[..]);
        prop_assert_eq!(&whole[prefix.len()..], &bytes[..]);

        // `encode_head` gives the same bytes, with the data of Rread/Twrite left out.
        let mut head = BytesMut::from(&prefix[..]);
        let bulk = m.encode_head(&mut head).expect("encode_head");
        match (&m.body, &bulk) {
            (Fcall::Rread { data }, Some(b)) | (Fcall::Twrite { data, .. }, Some(b)) => {
                prop_assert_eq!(data, b);
            }
            (Fcall::Rread { .. } | Fcall::Twrite { .. }, None) => {
                prop_assert!(false, "no bulk data for {}", m.body.name());
            }
            (_, Some(b)) => prop_assert!(b.is_empty(), "bulk data for {}", m.body.name()),
            (_, None) => {}
        }
        if let Some(b) = bulk {
            head.extend_from_slice(&b);
        }
        prop_assert_eq!(&head[..], &whole[..]);

        // Formatting a message (as traces do) never panics either.
        let _ = m.to_string();
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(8192))]

    /// Any byte string: no panic, and if it decodes, it is the one encoding of what
    /// it decodes to.
    #[test]
    fn decode_is_total_and_strict(v in frame(), max in any::<u32>()) {
        let bytes = Bytes::from(v.clone());
        match fcall::decode(bytes.clone(), MAX_MSIZE) {
            Ok(m) => {
                let again = m.to_bytes().expect("a decoded message re-encodes");
                prop_assert_eq!(&again[..], &v[..], "{}", m);
                prop_assert_eq!(m.body.encoded_len(), v.len());
                let _ = m.to_string();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        // Any msize: no panic; what decodes fits in it.
        if let Ok(m) = fcall::decode(bytes, max) {
            prop_assert!(v.len() <= max as usize);
            prop_assert_eq!(&m.to_bytes().unwrap()[..], &v[..]);
        }
        // The frame helpers on the same bytes.
        let _ = fcall::frame_tag(&v);
        if let Some(n) = fcall::frame_len(&v) {
            let _ = fcall::check_frame_len(n, max);
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// No strict prefix of a valid encoding decodes (whether or not its size field is
    /// patched to its length), and neither does the encoding with one byte appended and
    /// the size field patched.
    #[test]
    fn prefixes_and_extensions_fail(m in msg(), extra in any::<u8>()) {
        let v = encode(&m);
        for n in 0..v.len() {
            let cut = v[..n].to_vec();
            prop_assert!(
                fcall::decode(Bytes::from(cut.clone()), MAX_MSIZE).is_err(),
                "prefix of {} bytes of {} decodes", n, m
            );
            let mut patched = cut;
            patch_size(&mut patched);
            prop_assert!(
                fcall::decode(Bytes::from(patched), MAX_MSIZE).is_err(),
                "prefix of {} bytes of {} with its size patched decodes", n, m
            );
        }
        let mut longer = v.clone();
        longer.push(extra);
        prop_assert!(fcall::decode(Bytes::from(longer.clone()), MAX_MSIZE).is_err());
        patch_size(&mut longer);
        prop_assert_eq!(
            fcall::decode(Bytes::from(longer), MAX_MSIZE),
            Err(ProtoError::Trailing(1))
        );
    }
}

/// Add `delta` (wrapping) to the little-endian integer of `width` bytes at `at`.
fn bump(v: &mut [u8], at: usize, width: usize, delta: i8) {
    let mut x = [0u8; 8];
    x[..width].copy_from_slice(&v[at..at + width]);
    let n = u64::from_le_bytes(x).wrapping_add_signed(delta.into());
    v[at..at + width].copy_from_slice(&n.to_le_bytes()[..width]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(384))]

    /// Length fields are all checked: a valid encoding with any 2- or 4-byte field
    /// one more (and a byte inserted after it, or at the end) or one less (and a byte
    /// taken away after it, or at the end), the size field patched, either does not
    /// decode or decodes to something that re-encodes to exactly those bytes. This
    /// finds a decoder that lets a nested length (the n[2] in front of a stat entry,
    /// say) disagree with what it frames.
    #[test]
    fn length_edits_stay_strict(
        m in msg(),
        extra in any::<u8>(),
        at in any::<prop::sample::Index>(),
    ) {
        let v = encode(&m);
        for j in fcall::HEADER_LEN..v.len() {
            for width in [2, 4] {
                if j + width > v.len() {
                    continue;
                }
                let after = j + width + at.index(v.len() - j - width + 1);
                for (delta, pos) in [(1, after), (1, v.len()), (-1, after), (-1, v.len())] {
                    let mut w = v.clone();
                    bump(&mut w, j, width, delta);
                    if delta > 0 {
                        w.insert(pos, extra);
                    } else if pos > j + width {
                        w.remove(pos - 1);
                    } else {
                        continue;
                    }
                    patch_size(&mut w);
                    if let Ok(d) = fcall::decode(Bytes::from(w.clone()), MAX_MSIZE) {
                        let again = d.to_bytes().expect("a decoded message re-encodes");
                        prop_assert_eq!(
                            &again[..], &w[..],
                            "{} with {} at {} (width {}) decodes as {}", m, delta, j, width, d
                        );
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Stat entries and directory reads
// ---------------------------------------------------------------------------

fn encode_stats(stats: &[Stat]) -> Vec<u8> {
    let mut b = BytesMut::new();
    for s in stats {
        s.encode(&mut b).expect("encode stat");
    }
    b.to_vec()
}

/// Byte strings for `decode_dir`: noise, and encoded directories with bytes changed.
fn dir_bytes() -> impl Strategy<Value = Vec<u8>> {
    let noise = prop::collection::vec(any::<u8>(), 0..=128);
    let mutated = (
        prop::collection::vec(stat(), 0..=3),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..=3),
        prop::option::of(any::<prop::sample::Index>()),
    )
        .prop_map(|(stats, pokes, cut)| {
            let mut v = encode_stats(&stats);
            if !v.is_empty() {
                for (i, b) in pokes {
                    let i = i.index(v.len());
                    v[i] = b;
                }
            }
            if let Some(i) = cut {
                v.truncate(i.index(v.len() + 1));
            }
            v
        });
    prop_oneof![noise, mutated]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Concatenated stat entries come back out of `decode_dir`, each one alone out of
    /// `Stat::decode`, and every strict prefix of an entry is refused.
    #[test]
    fn decode_dir_round_trip(stats in prop::collection::vec(stat(), 0..=6)) {
        let v = encode_stats(&stats);
        prop_assert_eq!(
            v.len(),
            stats.iter().map(Stat::encoded_len).sum::<usize>()
        );
        prop_assert_eq!(fcall::decode_dir(&v), Ok(stats.clone()));
        let mut at = 0;
        for s in &stats {
            let n = s.encoded_len();
            let one = &v[at..at + n];
            prop_assert_eq!(&Stat::decode(one).expect("stat"), s);
            for k in 0..n {
                prop_assert!(Stat::decode(&one[..k]).is_err());
            }
            at += n;
        }
        if !v.is_empty() {
            prop_assert!(fcall::decode_dir(&v[..v.len() - 1]).is_err());
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Any byte string: no panic, and what decodes is the one encoding of its entries.
    #[test]
    fn decode_dir_is_total_and_strict(v in dir_bytes()) {
        if let Ok(stats) = fcall::decode_dir(&v) {
            prop_assert_eq!(&encode_stats(&stats), &v);
            for s in &stats {
                let _ = s.to_string();
            }
        }
        let _ = Stat::decode(&v);
    }
}

// ---------------------------------------------------------------------------
// What cannot be framed
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Too many walk elements and strings with a NUL are refused by the encoder, and
    /// the buffer is left as it was.
    #[test]
    fn unframeable_is_refused(
        n in (MAXWELEM + 1)..=(2 * MAXWELEM),
        s in name(),
        at in any::<prop::sample::Index>(),
        which in 0..4u8,
        prefix in prop::collection::vec(any::<u8>(), 0..8),
    ) {
        // `s` with a NUL inserted at a char boundary chosen by `at`.
        let bounds: Vec<usize> = s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .collect();
        let mut nul = s.clone();
        nul.insert(bounds[at.index(bounds.len())], '\0');
        let body = match which {
            0 => Fcall::Twalk { fid: 1, newfid: 2, wnames: vec![s.clone(); n] },
            1 => Fcall::Rwalk { wqids: vec![Qid::default(); n] },
            2 => Fcall::Rerror { ename: nul },
            _ => Fcall::Rstat { stat: Stat { gid: nul, ..Stat::default() } },
        };
        let m = Msg::new(7, body);
        let mut b = BytesMut::from(&prefix[..]);
        prop_assert!(m.encode(&mut b).is_err());
        prop_assert_eq!(&b[..], &prefix[..]);
        prop_assert!(m.encode_head(&mut b).is_err());
        prop_assert_eq!(&b[..], &prefix[..]);
    }
}

/// Strings and stat entries too long for their 16-bit length fields are refused.
#[test]
fn too_long_is_refused() {
    let long = "x".repeat(u16::MAX as usize + 1);
    let m = Msg::new(
        1,
        Fcall::Rerror {
            ename: long.clone(),
        },
    );
    let mut b = BytesMut::new();
    assert_eq!(m.encode(&mut b), Err(ProtoError::StringTooLong(long.len())));
    assert!(b.is_empty());
    // Each string fits, but together they overflow the stat entry's size field.
    let quarter = "y".repeat(u16::MAX as usize / 4);
    let st = Stat {
        name: quarter.clone(),
        uid: quarter.clone(),
        gid: quarter.clone(),
        muid: quarter,
        ..Stat::default()
    };
    assert!(st.encode(&mut b).is_err());
    assert!(b.is_empty());
    let m = Msg::new(1, Fcall::Twstat { fid: 1, stat: st });
    assert!(m.encode(&mut b).is_err());
    assert!(b.is_empty());
}

// ---------------------------------------------------------------------------
// Dial strings
// ---------------------------------------------------------------------------

/// Dial strings: arbitrary text, and `net!host!svc` built from plausible and
/// implausible pieces.
fn dial_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just(String::new()),
        Just("tcp".to_string()),
        Just("net".to_string()),
        Just("unix".to_string()),
        Just("tcp6".to_string()),
        Just("il".to_string()),
        Just("*".to_string()),
        Just("[::1]".to_string()),
        Just("9fs".to_string()),
        Just("65535".to_string()),
        Just("65536".to_string()),
        Just("-1".to_string()),
        Just("/tmp/x".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        any::<String>(),
    ];
    prop_oneof![
        any::<String>(),
        "[a-z./!*\\[\\]:0-9\u{0}-]{0,24}",
        prop::collection::vec(piece, 1..=4).prop_map(|p| p.join("!")),
    ]
}

/// `parse` and `parse_host` never panic. `$NAMESPACE` points into a fresh temporary
/// directory, which a bare name makes `parse` create; a bare name that is a valid
/// service name resolves to `$NAMESPACE/name`.
#[test]
fn dial_parse_never_panics() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ns = tmp.path().join("ns");
    // SAFETY: no other test in this binary reads the environment through libc while
    // this runs; Rust's own environment accesses are serialised by std.
    unsafe { std::env::set_var("NAMESPACE", &ns) };

    let config = ProptestConfig::with_cases(4096);
    proptest!(config, |(s in dial_string(), defsrv in prop_oneof![Just("9fs".to_string()), dial_string()])| {
        match dial::parse(&s) {
            Ok(Addr::Unix(p)) if !s.contains('!') && !s.starts_with('/') && !s.starts_with("./") => {
                prop_assert_eq!(p.parent(), Some(ns.as_path()));
                prop_assert_eq!(p.file_name().and_then(|f| f.to_str()), Some(s.as_str()));
            }
            Ok(a) => {
                let _ = a.to_string();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        match dial::parse_host(&s, &defsrv) {
            Ok(a) => {
                let _ = a.to_string();
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
        let _ = dial::service_port(&s);
    });
}

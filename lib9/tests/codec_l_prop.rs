//! 9P2000.L: every message encodes and decodes back to itself; anything that
//! decodes re-encodes to the same bytes; truncated or extended frames fail cleanly.

use bytes::Bytes;
use lib9::fcall::{MAX_MSIZE, Qid};
use lib9::fcall_l::*;
use proptest::prelude::*;

fn qid() -> impl Strategy<Value = Qid> {
    (any::<u8>(), any::<u32>(), any::<u64>()).prop_map(|(ty, vers, path)| Qid { ty, vers, path })
}

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._ é-]{0,20}"
}

fn t2() -> impl Strategy<Value = (u64, u64)> {
    (any::<u64>(), any::<u64>())
}

fn lock() -> impl Strategy<Value = Lock> {
    (
        any::<u8>(),
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        name(),
    )
        .prop_map(|(ty, flags, start, length, proc_id, client_id)| Lock {
            ty,
            flags,
            start,
            length,
            proc_id,
            client_id,
        })
}

fn body() -> impl Strategy<Value = LFcall> {
    use LFcall::*;
    let data = prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from);
    prop_oneof![
        any::<u32>().prop_map(|ecode| Rlerror { ecode }),
        any::<u32>().prop_map(|fid| Tstatfs { fid }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(ty, bsize, blocks, bfree, bavail, files, ffree, fsid)| Rstatfs(StatFs {
                    ty,
                    bsize,
                    blocks,
                    bfree,
                    bavail,
                    files,
                    ffree,
                    fsid,
                    namelen: 255
                })
            ),
        (any::<u32>(), any::<u32>()).prop_map(|(fid, flags)| Tlopen { fid, flags }),
        (qid(), any::<u32>()).prop_map(|(qid, iounit)| Rlopen { qid, iounit }),
        (
            any::<u32>(),
            name(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(fid, name, flags, mode, gid)| Tlcreate {
                fid,
                name,
                flags,
                mode,
                gid
            }),
        (any::<u32>(), name(), name(), any::<u32>()).prop_map(|(fid, name, target, gid)| {
            Tsymlink {
                fid,
                name,
                target,
                gid,
            }
        }),
        qid().prop_map(|qid| Rmknod { qid }),
        (any::<u32>(), any::<u32>(), name()).prop_map(|(fid, dfid, name)| Trename {
            fid,
            dfid,
            name
        }),
        name().prop_map(|target| Rreadlink { target }),
        (any::<u32>(), any::<u64>()).prop_map(|(fid, mask)| Tgetattr { fid, mask }),
        (
            any::<u64>(),
            qid(),
            any::<u32>(),
            any::<u64>(),
            t2(),
            t2(),
            t2()
        )
            .prop_map(|(valid, qid, mode, size, atime, mtime, ctime)| {
                Rgetattr(Attr {
                    valid,
                    qid,
                    mode,
                    size,
                    atime,
                    mtime,
                    ctime,
                    uid: 1,
                    gid: 2,
                    nlink: 3,
                    ..Attr::default()
                })
            }),
        (any::<u32>(), any::<u32>(), any::<u64>(), t2(), t2()).prop_map(
            |(fid, valid, size, atime, mtime)| Tsetattr {
                fid,
                attr: SetAttr {
                    valid,
                    size,
                    atime,
                    mtime,
                    mode: 0o644,
                    uid: 7,
                    gid: 8
                }
            }
        ),
        (any::<u32>(), any::<u32>(), name()).prop_map(|(fid, newfid, name)| Txattrwalk {
            fid,
            newfid,
            name
        }),
        (any::<u32>(), any::<u64>(), any::<u32>()).prop_map(|(fid, offset, count)| Treaddir {
            fid,
            offset,
            count
        }),
        data.clone().prop_map(|data| Rreaddir { data }),
        (any::<u32>(), any::<u32>()).prop_map(|(fid, datasync)| Tfsync { fid, datasync }),
        (any::<u32>(), lock()).prop_map(|(fid, lock)| Tlock { fid, lock }),
        lock().prop_map(|mut l| {
            l.flags = 0;
            Rgetlock(l)
        }),
        (any::<u32>(), any::<u32>(), name()).prop_map(|(dfid, fid, name)| Tlink {
            dfid,
            fid,
            name
        }),
        (any::<u32>(), name(), any::<u32>(), any::<u32>()).prop_map(|(dfid, name, mode, gid)| {
            Tmkdir {
                dfid,
                name,
                mode,
                gid,
            }
        }),
        (any::<u32>(), name(), any::<u32>(), name()).prop_map(
            |(olddfid, oldname, newdfid, newname)| Trenameat {
                olddfid,
                oldname,
                newdfid,
                newname
            }
        ),
        (any::<u32>(), name(), any::<u32>()).prop_map(|(dfid, name, flags)| Tunlinkat {
            dfid,
            name,
            flags
        }),
        (any::<u32>(), any::<u32>(), name(), name(), any::<u32>()).prop_map(
            |(fid, afid, uname, aname, n_uname)| Tattach {
                fid,
                afid,
                uname,
                aname,
                n_uname
            }
        ),
        (
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(name(), 0..16)
        )
            .prop_map(|(fid, newfid, names)| Twalk { fid, newfid, names }),
        prop::collection::vec(qid(), 0..16).prop_map(|qids| Rwalk { qids }),
        (any::<u32>(), any::<u64>(), data).prop_map(|(fid, offset, data)| Twrite {
            fid,
            offset,
            data
        }),
        Just(Rrenameat),
        Just(Rclunk),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn messages_round_trip(tag in any::<u16>(), b in body()) {
        let m = LMsg::new(tag, b);
        let bytes = m.to_bytes().expect("encode");
        let back = decode(bytes.clone(), MAX_MSIZE).expect("decode");
        prop_assert_eq!(&back, &m);
        // One byte short, or one extra, is an error and never a panic.
        let short = bytes.slice(..bytes.len() - 1);
        prop_assert!(decode(short, MAX_MSIZE).is_err());
        let mut long = bytes.to_vec();
        long.push(0);
        let n = long.len() as u32;
        long[..4].copy_from_slice(&n.to_le_bytes());
        prop_assert!(decode(Bytes::from(long), MAX_MSIZE).is_err());
    }

    #[test]
    fn anything_that_decodes_reencodes(mut v in prop::collection::vec(any::<u8>(), 7..80), ty in any::<u8>()) {
        let n = v.len() as u32;
        v[..4].copy_from_slice(&n.to_le_bytes());
        v[4] = ty;
        if let Ok(m) = decode(Bytes::from(v.clone()), MAX_MSIZE) {
            prop_assert_eq!(&m.to_bytes().expect("encode")[..], &v[..]);
        }
    }

    #[test]
    fn dirents_round_trip(ents in prop::collection::vec((qid(), any::<u64>(), any::<u8>(), name()), 0..10)) {
        let ents: Vec<DirEnt> = ents.into_iter().map(|(qid, offset, ty, name)| DirEnt { qid, offset, ty, name }).collect();
        let data = encode_dirents(&ents).expect("encode");
        prop_assert_eq!(decode_dirents(&data).expect("decode"), ents);
        if !data.is_empty() {
            prop_assert!(decode_dirents(&data[..data.len() - 1]).is_err());
        }
    }
}

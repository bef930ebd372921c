//! 9P2000.L, the Linux dialect of 9P that servers such as diod speak: its messages,
//! encoded and decoded as strictly as [`crate::fcall`] handles 9P2000.
//!
//! The dialect keeps 9P2000's version, flush, walk, read, write and clunk, adds
//! `n_uname` to attach and auth, replaces `Rerror` by `Rlerror` (an errno) and
//! open/create/stat/wstat/remove by the Linux-shaped messages below.

use crate::fcall::{HEADER_LEN, ProtoError, Qid, Reader, check_frame_len, frame_len};
use bytes::{BufMut, Bytes, BytesMut};

pub const TLERROR: u8 = 6;
pub const RLERROR: u8 = 7;
pub const TSTATFS: u8 = 8;
pub const RSTATFS: u8 = 9;
pub const TLOPEN: u8 = 12;
pub const RLOPEN: u8 = 13;
pub const TLCREATE: u8 = 14;
pub const RLCREATE: u8 = 15;
pub const TSYMLINK: u8 = 16;
pub const RSYMLINK: u8 = 17;
pub const TMKNOD: u8 = 18;
pub const RMKNOD: u8 = 19;
pub const TRENAME: u8 = 20;
pub const RRENAME: u8 = 21;
pub const TREADLINK: u8 = 22;
pub const RREADLINK: u8 = 23;
pub const TGETATTR: u8 = 24;
pub const RGETATTR: u8 = 25;
pub const TSETATTR: u8 = 26;
pub const RSETATTR: u8 = 27;
pub const TXATTRWALK: u8 = 30;
pub const RXATTRWALK: u8 = 31;
pub const TXATTRCREATE: u8 = 32;
pub const RXATTRCREATE: u8 = 33;
pub const TREADDIR: u8 = 40;
pub const RREADDIR: u8 = 41;
pub const TFSYNC: u8 = 50;
pub const RFSYNC: u8 = 51;
pub const TLOCK: u8 = 52;
pub const RLOCK: u8 = 53;
pub const TGETLOCK: u8 = 54;
pub const RGETLOCK: u8 = 55;
pub const TLINK: u8 = 70;
pub const RLINK: u8 = 71;
pub const TMKDIR: u8 = 72;
pub const RMKDIR: u8 = 73;
pub const TRENAMEAT: u8 = 74;
pub const RRENAMEAT: u8 = 75;
pub const TUNLINKAT: u8 = 76;
pub const RUNLINKAT: u8 = 77;
pub const TVERSION: u8 = 100;
pub const RVERSION: u8 = 101;
pub const TAUTH: u8 = 102;
pub const RAUTH: u8 = 103;
pub const TATTACH: u8 = 104;
pub const RATTACH: u8 = 105;
pub const TFLUSH: u8 = 108;
pub const RFLUSH: u8 = 109;
pub const TWALK: u8 = 110;
pub const RWALK: u8 = 111;
pub const TREAD: u8 = 116;
pub const RREAD: u8 = 117;
pub const TWRITE: u8 = 118;
pub const RWRITE: u8 = 119;
pub const TCLUNK: u8 = 120;
pub const RCLUNK: u8 = 121;
pub const TREMOVE: u8 = 122;
pub const RREMOVE: u8 = 123;

/// `Tgetattr` request mask: everything basic.
pub const GETATTR_BASIC: u64 = 0x7ff;
pub const GETATTR_ALL: u64 = 0x3fff;

/// `Tsetattr` valid bits.
pub const SETATTR_MODE: u32 = 0x1;
pub const SETATTR_UID: u32 = 0x2;
pub const SETATTR_GID: u32 = 0x4;
pub const SETATTR_SIZE: u32 = 0x8;
pub const SETATTR_ATIME: u32 = 0x10;
pub const SETATTR_MTIME: u32 = 0x20;
pub const SETATTR_CTIME: u32 = 0x40;
pub const SETATTR_ATIME_SET: u32 = 0x80;
pub const SETATTR_MTIME_SET: u32 = 0x100;

/// Most walk elements in one message.
pub const MAXWELEM: usize = 16;

/// `Rgetattr`'s attributes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attr {
    pub valid: u64,
    pub qid: Qid,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime: (u64, u64),
    pub mtime: (u64, u64),
    pub ctime: (u64, u64),
    pub btime: (u64, u64),
    pub generation: u64,
    pub data_version: u64,
}

/// `Tsetattr`'s changes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub valid: u32,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub atime: (u64, u64),
    pub mtime: (u64, u64),
}

/// `Rstatfs`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatFs {
    pub ty: u32,
    pub bsize: u32,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub fsid: u64,
    pub namelen: u32,
}

/// One entry of `Rreaddir`'s data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEnt {
    pub qid: Qid,
    /// Where the next read goes on from.
    pub offset: u64,
    pub ty: u8,
    pub name: String,
}

/// A lock request or state (`Tlock`, `Tgetlock`, `Rgetlock`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lock {
    pub ty: u8,
    pub flags: u32,
    pub start: u64,
    pub length: u64,
    pub proc_id: u32,
    pub client_id: String,
}

/// A 9P2000.L message body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LFcall {
    Rlerror {
        ecode: u32,
    },
    Tstatfs {
        fid: u32,
    },
    Rstatfs(StatFs),
    Tlopen {
        fid: u32,
        flags: u32,
    },
    Rlopen {
        qid: Qid,
        iounit: u32,
    },
    Tlcreate {
        fid: u32,
        name: String,
        flags: u32,
        mode: u32,
        gid: u32,
    },
    Rlcreate {
        qid: Qid,
        iounit: u32,
    },
    Tsymlink {
        fid: u32,
        name: String,
        target: String,
        gid: u32,
    },
    Rsymlink {
        qid: Qid,
    },
    Tmknod {
        dfid: u32,
        name: String,
        mode: u32,
        major: u32,
        minor: u32,
        gid: u32,
    },
    Rmknod {
        qid: Qid,
    },
    Trename {
        fid: u32,
        dfid: u32,
        name: String,
    },
    Rrename,
    Treadlink {
        fid: u32,
    },
    Rreadlink {
        target: String,
    },
    Tgetattr {
        fid: u32,
        mask: u64,
    },
    Rgetattr(Attr),
    Tsetattr {
        fid: u32,
        attr: SetAttr,
    },
    Rsetattr,
    Txattrwalk {
        fid: u32,
        newfid: u32,
        name: String,
    },
    Rxattrwalk {
        size: u64,
    },
    Txattrcreate {
        fid: u32,
        name: String,
        size: u64,
        flags: u32,
    },
    Rxattrcreate,
    Treaddir {
        fid: u32,
        offset: u64,
        count: u32,
    },
    /// The entries, still encoded (see [`decode_dirents`]).
    Rreaddir {
        data: Bytes,
    },
    Tfsync {
        fid: u32,
        datasync: u32,
    },
    Rfsync,
    Tlock {
        fid: u32,
        lock: Lock,
    },
    Rlock {
        status: u8,
    },
    Tgetlock {
        fid: u32,
        lock: Lock,
    },
    Rgetlock(Lock),
    Tlink {
        dfid: u32,
        fid: u32,
        name: String,
    },
    Rlink,
    Tmkdir {
        dfid: u32,
        name: String,
        mode: u32,
        gid: u32,
    },
    Rmkdir {
        qid: Qid,
    },
    Trenameat {
        olddfid: u32,
        oldname: String,
        newdfid: u32,
        newname: String,
    },
    Rrenameat,
    Tunlinkat {
        dfid: u32,
        name: String,
        flags: u32,
    },
    Runlinkat,
    Tversion {
        msize: u32,
        version: String,
    },
    Rversion {
        msize: u32,
        version: String,
    },
    Tauth {
        afid: u32,
        uname: String,
        aname: String,
        n_uname: u32,
    },
    Rauth {
        aqid: Qid,
    },
    Tattach {
        fid: u32,
        afid: u32,
        uname: String,
        aname: String,
        n_uname: u32,
    },
    Rattach {
        qid: Qid,
    },
    Tflush {
        oldtag: u16,
    },
    Rflush,
    Twalk {
        fid: u32,
        newfid: u32,
        names: Vec<String>,
    },
    Rwalk {
        qids: Vec<Qid>,
    },
    Tread {
        fid: u32,
        offset: u64,
        count: u32,
    },
    Rread {
        data: Bytes,
    },
    Twrite {
        fid: u32,
        offset: u64,
        data: Bytes,
    },
    Rwrite {
        count: u32,
    },
    Tclunk {
        fid: u32,
    },
    Rclunk,
    Tremove {
        fid: u32,
    },
    Rremove,
}

/// A tagged 9P2000.L message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LMsg {
    pub tag: u16,
    pub body: LFcall,
}

fn put_str(b: &mut BytesMut, s: &str) -> Result<(), ProtoError> {
    let n = u16::try_from(s.len()).map_err(|_| ProtoError::StringTooLong(s.len()))?;
    b.put_u16_le(n);
    b.put_slice(s.as_bytes());
    Ok(())
}

fn put_qid(b: &mut BytesMut, q: &Qid) {
    b.put_u8(q.ty);
    b.put_u32_le(q.vers);
    b.put_u64_le(q.path);
}

fn put_time(b: &mut BytesMut, t: (u64, u64)) {
    b.put_u64_le(t.0);
    b.put_u64_le(t.1);
}

fn put_lock(b: &mut BytesMut, l: &Lock, flags: bool) -> Result<(), ProtoError> {
    b.put_u8(l.ty);
    if flags {
        b.put_u32_le(l.flags);
    }
    b.put_u64_le(l.start);
    b.put_u64_le(l.length);
    b.put_u32_le(l.proc_id);
    put_str(b, &l.client_id)
}

impl LFcall {
    /// The message type number.
    pub fn mtype(&self) -> u8 {
        use LFcall::*;
        match self {
            Rlerror { .. } => RLERROR,
            Tstatfs { .. } => TSTATFS,
            Rstatfs(_) => RSTATFS,
            Tlopen { .. } => TLOPEN,
            Rlopen { .. } => RLOPEN,
            Tlcreate { .. } => TLCREATE,
            Rlcreate { .. } => RLCREATE,
            Tsymlink { .. } => TSYMLINK,
            Rsymlink { .. } => RSYMLINK,
            Tmknod { .. } => TMKNOD,
            Rmknod { .. } => RMKNOD,
            Trename { .. } => TRENAME,
            Rrename => RRENAME,
            Treadlink { .. } => TREADLINK,
            Rreadlink { .. } => RREADLINK,
            Tgetattr { .. } => TGETATTR,
            Rgetattr(_) => RGETATTR,
            Tsetattr { .. } => TSETATTR,
            Rsetattr => RSETATTR,
            Txattrwalk { .. } => TXATTRWALK,
            Rxattrwalk { .. } => RXATTRWALK,
            Txattrcreate { .. } => TXATTRCREATE,
            Rxattrcreate => RXATTRCREATE,
            Treaddir { .. } => TREADDIR,
            Rreaddir { .. } => RREADDIR,
            Tfsync { .. } => TFSYNC,
            Rfsync => RFSYNC,
            Tlock { .. } => TLOCK,
            Rlock { .. } => RLOCK,
            Tgetlock { .. } => TGETLOCK,
            Rgetlock(_) => RGETLOCK,
            Tlink { .. } => TLINK,
            Rlink => RLINK,
            Tmkdir { .. } => TMKDIR,
            Rmkdir { .. } => RMKDIR,
            Trenameat { .. } => TRENAMEAT,
            Rrenameat => RRENAMEAT,
            Tunlinkat { .. } => TUNLINKAT,
            Runlinkat => RUNLINKAT,
            Tversion { .. } => TVERSION,
            Rversion { .. } => RVERSION,
            Tauth { .. } => TAUTH,
            Rauth { .. } => RAUTH,
            Tattach { .. } => TATTACH,
            Rattach { .. } => RATTACH,
            Tflush { .. } => TFLUSH,
            Rflush => RFLUSH,
            Twalk { .. } => TWALK,
            Rwalk { .. } => RWALK,
            Tread { .. } => TREAD,
            Rread { .. } => RREAD,
            Twrite { .. } => TWRITE,
            Rwrite { .. } => RWRITE,
            Tclunk { .. } => TCLUNK,
            Rclunk => RCLUNK,
            Tremove { .. } => TREMOVE,
            Rremove => RREMOVE,
        }
    }

    fn encode_body(&self, b: &mut BytesMut) -> Result<(), ProtoError> {
        use LFcall::*;
        match self {
            Rlerror { ecode } => b.put_u32_le(*ecode),
            Tstatfs { fid } | Treadlink { fid } | Tclunk { fid } | Tremove { fid } => {
                b.put_u32_le(*fid)
            }
            Rstatfs(s) => {
                b.put_u32_le(s.ty);
                b.put_u32_le(s.bsize);
                for v in [s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.fsid] {
                    b.put_u64_le(v);
                }
                b.put_u32_le(s.namelen);
            }
            Tlopen { fid, flags } => {
                b.put_u32_le(*fid);
                b.put_u32_le(*flags);
            }
            Rlopen { qid, iounit } | Rlcreate { qid, iounit } => {
                put_qid(b, qid);
                b.put_u32_le(*iounit);
            }
            Tlcreate {
                fid,
                name,
                flags,
                mode,
                gid,
            } => {
                b.put_u32_le(*fid);
                put_str(b, name)?;
                b.put_u32_le(*flags);
                b.put_u32_le(*mode);
                b.put_u32_le(*gid);
            }
            Tsymlink {
                fid,
                name,
                target,
                gid,
            } => {
                b.put_u32_le(*fid);
                put_str(b, name)?;
                put_str(b, target)?;
                b.put_u32_le(*gid);
            }
            Rsymlink { qid } | Rmknod { qid } | Rmkdir { qid } | Rattach { qid } => put_qid(b, qid),
            Rauth { aqid } => put_qid(b, aqid),
            Tmknod {
                dfid,
                name,
                mode,
                major,
                minor,
                gid,
            } => {
                b.put_u32_le(*dfid);
                put_str(b, name)?;
                b.put_u32_le(*mode);
                b.put_u32_le(*major);
                b.put_u32_le(*minor);
                b.put_u32_le(*gid);
            }
            Trename { fid, dfid, name } => {
                b.put_u32_le(*fid);
                b.put_u32_le(*dfid);
                put_str(b, name)?;
            }
            Rrename | Rsetattr | Rxattrcreate | Rfsync | Rlink | Rrenameat | Runlinkat | Rflush
            | Rclunk | Rremove => {}
            Rreadlink { target } => put_str(b, target)?,
            Tgetattr { fid, mask } => {
                b.put_u32_le(*fid);
                b.put_u64_le(*mask);
            }
            Rgetattr(a) => {
                b.put_u64_le(a.valid);
                put_qid(b, &a.qid);
                b.put_u32_le(a.mode);
                b.put_u32_le(a.uid);
                b.put_u32_le(a.gid);
                for v in [a.nlink, a.rdev, a.size, a.blksize, a.blocks] {
                    b.put_u64_le(v);
                }
                for t in [a.atime, a.mtime, a.ctime, a.btime] {
                    put_time(b, t);
                }
                b.put_u64_le(a.generation);
                b.put_u64_le(a.data_version);
            }
            Tsetattr { fid, attr } => {
                b.put_u32_le(*fid);
                b.put_u32_le(attr.valid);
                b.put_u32_le(attr.mode);
                b.put_u32_le(attr.uid);
                b.put_u32_le(attr.gid);
                b.put_u64_le(attr.size);
                put_time(b, attr.atime);
                put_time(b, attr.mtime);
            }
            Txattrwalk { fid, newfid, name } => {
                b.put_u32_le(*fid);
                b.put_u32_le(*newfid);
                put_str(b, name)?;
            }
            Rxattrwalk { size } => b.put_u64_le(*size),
            Txattrcreate {
                fid,
                name,
                size,
                flags,
            } => {
                b.put_u32_le(*fid);
                put_str(b, name)?;
                b.put_u64_le(*size);
                b.put_u32_le(*flags);
            }
            Treaddir { fid, offset, count } | Tread { fid, offset, count } => {
                b.put_u32_le(*fid);
                b.put_u64_le(*offset);
                b.put_u32_le(*count);
            }
            Rreaddir { data } | Rread { data } => {
                let n =
                    u32::try_from(data.len()).map_err(|_| ProtoError::DataTooLong(data.len()))?;
                b.put_u32_le(n);
                b.put_slice(data);
            }
            Tfsync { fid, datasync } => {
                b.put_u32_le(*fid);
                b.put_u32_le(*datasync);
            }
            Tlock { fid, lock } => {
                b.put_u32_le(*fid);
                put_lock(b, lock, true)?;
            }
            Rlock { status } => b.put_u8(*status),
            Tgetlock { fid, lock } => {
                b.put_u32_le(*fid);
                put_lock(b, lock, false)?;
            }
            Rgetlock(lock) => put_lock(b, lock, false)?,
            Tlink { dfid, fid, name } => {
                b.put_u32_le(*dfid);
                b.put_u32_le(*fid);
                put_str(b, name)?;
            }
            Tmkdir {
                dfid,
                name,
                mode,
                gid,
            } => {
                b.put_u32_le(*dfid);
                put_str(b, name)?;
                b.put_u32_le(*mode);
                b.put_u32_le(*gid);
            }
            Trenameat {
                olddfid,
                oldname,
                newdfid,
                newname,
            } => {
                b.put_u32_le(*olddfid);
                put_str(b, oldname)?;
                b.put_u32_le(*newdfid);
                put_str(b, newname)?;
            }
            Tunlinkat { dfid, name, flags } => {
                b.put_u32_le(*dfid);
                put_str(b, name)?;
                b.put_u32_le(*flags);
            }
            Tversion { msize, version } | Rversion { msize, version } => {
                b.put_u32_le(*msize);
                put_str(b, version)?;
            }
            Tauth {
                afid,
                uname,
                aname,
                n_uname,
            } => {
                b.put_u32_le(*afid);
                put_str(b, uname)?;
                put_str(b, aname)?;
                b.put_u32_le(*n_uname);
            }
            Tattach {
                fid,
                afid,
                uname,
                aname,
                n_uname,
            } => {
                b.put_u32_le(*fid);
                b.put_u32_le(*afid);
                put_str(b, uname)?;
                put_str(b, aname)?;
                b.put_u32_le(*n_uname);
            }
            Tflush { oldtag } => b.put_u16_le(*oldtag),
            Twalk { fid, newfid, names } => {
                if names.len() > MAXWELEM {
                    return Err(ProtoError::TooManyWalkElems(names.len()));
                }
                b.put_u32_le(*fid);
                b.put_u32_le(*newfid);
                b.put_u16_le(names.len() as u16);
                for n in names {
                    put_str(b, n)?;
                }
            }
            Rwalk { qids } => {
                if qids.len() > MAXWELEM {
                    return Err(ProtoError::TooManyWalkElems(qids.len()));
                }
                b.put_u16_le(qids.len() as u16);
                for q in qids {
                    put_qid(b, q);
                }
            }
            Twrite { fid, offset, data } => {
                let n =
                    u32::try_from(data.len()).map_err(|_| ProtoError::DataTooLong(data.len()))?;
                b.put_u32_le(*fid);
                b.put_u64_le(*offset);
                b.put_u32_le(n);
                b.put_slice(data);
            }
            Rwrite { count } => b.put_u32_le(*count),
        }
        Ok(())
    }
}

impl LMsg {
    pub fn new(tag: u16, body: LFcall) -> LMsg {
        LMsg { tag, body }
    }

    /// The message as it goes on the wire.
    pub fn to_bytes(&self) -> Result<Bytes, ProtoError> {
        let mut b = BytesMut::with_capacity(64);
        b.put_u32_le(0);
        b.put_u8(self.body.mtype());
        b.put_u16_le(self.tag);
        self.body.encode_body(&mut b)?;
        let n = u32::try_from(b.len()).map_err(|_| ProtoError::DataTooLong(b.len()))?;
        b[0..4].copy_from_slice(&n.to_le_bytes());
        Ok(b.freeze())
    }
}

fn lock(r: &mut Reader<'_>, flags: bool) -> Result<Lock, ProtoError> {
    Ok(Lock {
        ty: r.u8("lock type")?,
        flags: if flags { r.u32("lock flags")? } else { 0 },
        start: r.u64("lock start")?,
        length: r.u64("lock length")?,
        proc_id: r.u32("lock proc_id")?,
        client_id: r.string("lock client_id")?,
    })
}

fn time(r: &mut Reader<'_>, what: &'static str) -> Result<(u64, u64), ProtoError> {
    Ok((r.u64(what)?, r.u64(what)?))
}

/// Decode one whole 9P2000.L frame (size field included), no bigger than `max`.
pub fn decode(frame: Bytes, max: u32) -> Result<LMsg, ProtoError> {
    let Some(size) = frame_len(&frame) else {
        return Err(ProtoError::TooShort(frame.len()));
    };
    check_frame_len(size, max)?;
    if size as usize != frame.len() {
        return Err(ProtoError::SizeMismatch {
            declared: size,
            actual: frame.len(),
        });
    }
    let ty = frame[4];
    let tag = u16::from_le_bytes([frame[5], frame[6]]);
    let mut r = Reader {
        b: &frame,
        pos: HEADER_LEN,
    };
    use LFcall::*;
    let body = match ty {
        RLERROR => Rlerror {
            ecode: r.u32("ecode")?,
        },
        TSTATFS => Tstatfs { fid: r.u32("fid")? },
        RSTATFS => Rstatfs(StatFs {
            ty: r.u32("type")?,
            bsize: r.u32("bsize")?,
            blocks: r.u64("blocks")?,
            bfree: r.u64("bfree")?,
            bavail: r.u64("bavail")?,
            files: r.u64("files")?,
            ffree: r.u64("ffree")?,
            fsid: r.u64("fsid")?,
            namelen: r.u32("namelen")?,
        }),
        TLOPEN => Tlopen {
            fid: r.u32("fid")?,
            flags: r.u32("flags")?,
        },
        RLOPEN => Rlopen {
            qid: r.qid()?,
            iounit: r.u32("iounit")?,
        },
        TLCREATE => Tlcreate {
            fid: r.u32("fid")?,
            name: r.string("name")?,
            flags: r.u32("flags")?,
            mode: r.u32("mode")?,
            gid: r.u32("gid")?,
        },
        RLCREATE => Rlcreate {
            qid: r.qid()?,
            iounit: r.u32("iounit")?,
        },
        TSYMLINK => Tsymlink {
            fid: r.u32("fid")?,
            name: r.string("name")?,
            target: r.string("symtgt")?,
            gid: r.u32("gid")?,
        },
        RSYMLINK => Rsymlink { qid: r.qid()? },
        TMKNOD => Tmknod {
            dfid: r.u32("dfid")?,
            name: r.string("name")?,
            mode: r.u32("mode")?,
            major: r.u32("major")?,
            minor: r.u32("minor")?,
            gid: r.u32("gid")?,
        },
        RMKNOD => Rmknod { qid: r.qid()? },
        TRENAME => Trename {
            fid: r.u32("fid")?,
            dfid: r.u32("dfid")?,
            name: r.string("name")?,
        },
        RRENAME => Rrename,
        TREADLINK => Treadlink { fid: r.u32("fid")? },
        RREADLINK => Rreadlink {
            target: r.string("target")?,
        },
        TGETATTR => Tgetattr {
            fid: r.u32("fid")?,
            mask: r.u64("request_mask")?,
        },
        RGETATTR => Rgetattr(Attr {
            valid: r.u64("valid")?,
            qid: r.qid()?,
            mode: r.u32("mode")?,
            uid: r.u32("uid")?,
            gid: r.u32("gid")?,
            nlink: r.u64("nlink")?,
            rdev: r.u64("rdev")?,
            size: r.u64("size")?,
            blksize: r.u64("blksize")?,
            blocks: r.u64("blocks")?,
            atime: time(&mut r, "atime")?,
            mtime: time(&mut r, "mtime")?,
            ctime: time(&mut r, "ctime")?,
            btime: time(&mut r, "btime")?,
            generation: r.u64("gen")?,
            data_version: r.u64("data_version")?,
        }),
        TSETATTR => Tsetattr {
            fid: r.u32("fid")?,
            attr: SetAttr {
                valid: r.u32("valid")?,
                mode: r.u32("mode")?,
                uid: r.u32("uid")?,
                gid: r.u32("gid")?,
                size: r.u64("size")?,
                atime: time(&mut r, "atime")?,
                mtime: time(&mut r, "mtime")?,
            },
        },
        RSETATTR => Rsetattr,
        TXATTRWALK => Txattrwalk {
            fid: r.u32("fid")?,
            newfid: r.u32("newfid")?,
            name: r.string("name")?,
        },
        RXATTRWALK => Rxattrwalk {
            size: r.u64("size")?,
        },
        TXATTRCREATE => Txattrcreate {
            fid: r.u32("fid")?,
            name: r.string("name")?,
            size: r.u64("attr_size")?,
            flags: r.u32("flags")?,
        },
        RXATTRCREATE => Rxattrcreate,
        TREADDIR => Treaddir {
            fid: r.u32("fid")?,
            offset: r.u64("offset")?,
            count: r.u32("count")?,
        },
        RREADDIR | RREAD => {
            let n = r.u32("count")? as usize;
            let (s, e) = r.span(n, "data")?;
            let data = frame.slice(s..e);
            if ty == RREADDIR {
                Rreaddir { data }
            } else {
                Rread { data }
            }
        }
        TFSYNC => Tfsync {
            fid: r.u32("fid")?,
            datasync: r.u32("datasync")?,
        },
        RFSYNC => Rfsync,
        TLOCK => Tlock {
            fid: r.u32("fid")?,
            lock: lock(&mut r, true)?,
        },
        RLOCK => Rlock {
            status: r.u8("status")?,
        },
        TGETLOCK => Tgetlock {
            fid: r.u32("fid")?,
            lock: lock(&mut r, false)?,
        },
        RGETLOCK => Rgetlock(lock(&mut r, false)?),
        TLINK => Tlink {
            dfid: r.u32("dfid")?,
            fid: r.u32("fid")?,
            name: r.string("name")?,
        },
        RLINK => Rlink,
        TMKDIR => Tmkdir {
            dfid: r.u32("dfid")?,
            name: r.string("name")?,
            mode: r.u32("mode")?,
            gid: r.u32("gid")?,
        },
        RMKDIR => Rmkdir { qid: r.qid()? },
        TRENAMEAT => Trenameat {
            olddfid: r.u32("olddirfid")?,
            oldname: r.string("oldname")?,
            newdfid: r.u32("newdirfid")?,
            newname: r.string("newname")?,
        },
        RRENAMEAT => Rrenameat,
        TUNLINKAT => Tunlinkat {
            dfid: r.u32("dirfd")?,
            name: r.string("name")?,
            flags: r.u32("flags")?,
        },
        RUNLINKAT => Runlinkat,
        TVERSION | RVERSION => {
            let msize = r.u32("msize")?;
            let version = r.string("version")?;
            if ty == TVERSION {
                Tversion { msize, version }
            } else {
                Rversion { msize, version }
            }
        }
        TAUTH => Tauth {
            afid: r.u32("afid")?,
            uname: r.string("uname")?,
            aname: r.string("aname")?,
            n_uname: r.u32("n_uname")?,
        },
        RAUTH => Rauth { aqid: r.qid()? },
        TATTACH => Tattach {
            fid: r.u32("fid")?,
            afid: r.u32("afid")?,
            uname: r.string("uname")?,
            aname: r.string("aname")?,
            n_uname: r.u32("n_uname")?,
        },
        RATTACH => Rattach { qid: r.qid()? },
        TFLUSH => Tflush {
            oldtag: r.u16("oldtag")?,
        },
        RFLUSH => Rflush,
        TWALK => {
            let fid = r.u32("fid")?;
            let newfid = r.u32("newfid")?;
            let n = r.u16("nwname")? as usize;
            if n > MAXWELEM {
                return Err(ProtoError::TooManyWalkElems(n));
            }
            let mut names = Vec::with_capacity(n);
            for _ in 0..n {
                names.push(r.string("wname")?);
            }
            Twalk { fid, newfid, names }
        }
        RWALK => {
            let n = r.u16("nwqid")? as usize;
            if n > MAXWELEM {
                return Err(ProtoError::TooManyWalkElems(n));
            }
            let mut qids = Vec::with_capacity(n);
            for _ in 0..n {
                qids.push(r.qid()?);
            }
            Rwalk { qids }
        }
        TREAD => Tread {
            fid: r.u32("fid")?,
            offset: r.u64("offset")?,
            count: r.u32("count")?,
        },
        TWRITE => {
            let fid = r.u32("fid")?;
            let offset = r.u64("offset")?;
            let n = r.u32("count")? as usize;
            let (s, e) = r.span(n, "data")?;
            Twrite {
                fid,
                offset,
                data: frame.slice(s..e),
            }
        }
        RWRITE => Rwrite {
            count: r.u32("count")?,
        },
        TCLUNK => Tclunk { fid: r.u32("fid")? },
        RCLUNK => Rclunk,
        TREMOVE => Tremove { fid: r.u32("fid")? },
        RREMOVE => Rremove,
        t => return Err(ProtoError::UnknownType(t)),
    };
    r.finish()?;
    Ok(LMsg { tag, body })
}

/// The entries of an `Rreaddir`.
pub fn decode_dirents(data: &[u8]) -> Result<Vec<DirEnt>, ProtoError> {
    let mut r = Reader { b: data, pos: 0 };
    let mut out = Vec::new();
    while r.pos < data.len() {
        out.push(DirEnt {
            qid: r.qid()?,
            offset: r.u64("dirent offset")?,
            ty: r.u8("dirent type")?,
            name: r.string("dirent name")?,
        });
    }
    Ok(out)
}

/// Encode directory entries as `Rreaddir` carries them.
pub fn encode_dirents(ents: &[DirEnt]) -> Result<Bytes, ProtoError> {
    let mut b = BytesMut::new();
    for e in ents {
        put_qid(&mut b, &e.qid);
        b.put_u64_le(e.offset);
        b.put_u8(e.ty);
        put_str(&mut b, &e.name)?;
    }
    Ok(b.freeze())
}

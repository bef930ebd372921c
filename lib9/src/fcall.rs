//! The 9P2000 wire format: every message of intro(5), qids, stat entries, and the
//! constants for open modes and permission bits.
//!
//! Decoding is strict: the size field must match the frame, every string must be
//! UTF-8 without NUL bytes, walks carry at most [`MAXWELEM`] names, stat entries must
//! be exactly as long as they say, and nothing may follow the last field. A frame is
//! never trusted: any byte string decodes to a message or to a [`ProtoError`], never
//! to a panic (the codec is fuzzed and property-tested).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Room for the header of a `Twrite` or `Rread`: `msize - IOHDRSZ` bytes of data fit.
pub const IOHDRSZ: u32 = 24;
/// The tag of `Tversion`.
pub const NOTAG: u16 = 0xFFFF;
/// No fid (the afid of an unauthenticated attach).
pub const NOFID: u32 = 0xFFFF_FFFF;
/// Names per `Twalk`, qids per `Rwalk`.
pub const MAXWELEM: usize = 16;
/// The fixed part of a stat entry, including its leading size.
pub const STATFIXLEN: usize = 49;
/// The smallest message: `size[4] type[1] tag[2]`.
pub const HEADER_LEN: usize = 7;
/// The version string this codec speaks.
pub const VERSION9P: &str = "9P2000";
/// The largest msize anything here will agree to.
pub const MAX_MSIZE: u32 = 16 * 1024 * 1024 + IOHDRSZ;
/// The smallest msize that still lets a stat entry and a walk through.
pub const MIN_MSIZE: u32 = 256;

// Open modes (open(5)).
pub const OREAD: u8 = 0;
pub const OWRITE: u8 = 1;
pub const ORDWR: u8 = 2;
pub const OEXEC: u8 = 3;
pub const OTRUNC: u8 = 0x10;
pub const ORCLOSE: u8 = 0x40;

// Permission and mode bits (stat(5)).
pub const DMDIR: u32 = 0x8000_0000;
pub const DMAPPEND: u32 = 0x4000_0000;
pub const DMEXCL: u32 = 0x2000_0000;
pub const DMMOUNT: u32 = 0x1000_0000;
pub const DMAUTH: u32 = 0x0800_0000;
pub const DMTMP: u32 = 0x0400_0000;
pub const DMSYMLINK: u32 = 0x0200_0000;
pub const DMDEVICE: u32 = 0x0080_0000;
pub const DMNAMEDPIPE: u32 = 0x0020_0000;
pub const DMSOCKET: u32 = 0x0010_0000;
pub const DMREAD: u32 = 0o4;
pub const DMWRITE: u32 = 0o2;
pub const DMEXEC: u32 = 0o1;

// Qid types.
pub const QTDIR: u8 = 0x80;
pub const QTAPPEND: u8 = 0x40;
pub const QTEXCL: u8 = 0x20;
pub const QTMOUNT: u8 = 0x10;
pub const QTAUTH: u8 = 0x08;
pub const QTTMP: u8 = 0x04;
pub const QTFILE: u8 = 0x00;

/// Message type numbers (include/fcall.h).
pub mod mtype {
    pub const TVERSION: u8 = 100;
    pub const RVERSION: u8 = 101;
    pub const TAUTH: u8 = 102;
    pub const RAUTH: u8 = 103;
    pub const TATTACH: u8 = 104;
    pub const RATTACH: u8 = 105;
    pub const RERROR: u8 = 107;
    pub const TFLUSH: u8 = 108;
    pub const RFLUSH: u8 = 109;
    pub const TWALK: u8 = 110;
    pub const RWALK: u8 = 111;
    pub const TOPEN: u8 = 112;
    pub const ROPEN: u8 = 113;
    pub const TCREATE: u8 = 114;
    pub const RCREATE: u8 = 115;
    pub const TREAD: u8 = 116;
    pub const RREAD: u8 = 117;
    pub const TWRITE: u8 = 118;
    pub const RWRITE: u8 = 119;
    pub const TCLUNK: u8 = 120;
    pub const RCLUNK: u8 = 121;
    pub const TREMOVE: u8 = 122;
    pub const RREMOVE: u8 = 123;
    pub const TSTAT: u8 = 124;
    pub const RSTAT: u8 = 125;
    pub const TWSTAT: u8 = 126;
    pub const RWSTAT: u8 = 127;
}
use mtype::*;

/// Why a byte string is not a 9P2000 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("message too short: {0} bytes")]
    TooShort(usize),
    #[error("size field says {declared} bytes but the frame has {actual}")]
    SizeMismatch { declared: u32, actual: usize },
    #[error("message of {size} bytes exceeds msize {max}")]
    TooBig { size: u32, max: u32 },
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("message truncated in field {0}")]
    Truncated(&'static str),
    #[error("{0} bytes after the last field")]
    Trailing(usize),
    #[error("string is not UTF-8")]
    BadUtf8,
    #[error("string contains a NUL byte")]
    Nul,
    #[error("string of {0} bytes is too long")]
    StringTooLong(usize),
    #[error("{0} walk elements exceed {MAXWELEM}")]
    TooManyWalkElems(usize),
    #[error("stat entry size {declared} does not match its {actual} bytes")]
    BadStat { declared: usize, actual: usize },
    #[error("stat entry too big: {0} bytes")]
    StatTooBig(usize),
    #[error("data of {0} bytes too long for one message")]
    DataTooLong(usize),
}

/// A qid: the server's unique identity of a file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Qid {
    pub ty: u8,
    pub vers: u32,
    pub path: u64,
}

impl Qid {
    pub const LEN: usize = 13;
    pub fn is_dir(&self) -> bool {
        self.ty & QTDIR != 0
    }
}

impl fmt::Display for Qid {
    /// As plan9port's fcallfmt prints it: `(path vers type)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({:016x} {} {})", self.path, self.vers, QidType(self.ty))
    }
}

struct QidType(u8);
impl fmt::Display for QidType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (bit, c) in [(QTDIR, 'd'), (QTAPPEND, 'a'), (QTEXCL, 'l'), (QTAUTH, 'A')] {
            if self.0 & bit != 0 {
                write!(f, "{c}")?;
            }
        }
        Ok(())
    }
}

/// A stat entry (stat(5)). In a `Twstat`, the "don't touch" value of every field is
/// the one [`Stat::dont_touch`] gives.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Stat {
    pub ty: u16,
    pub dev: u32,
    pub qid: Qid,
    pub mode: u32,
    pub atime: u32,
    pub mtime: u32,
    pub length: u64,
    pub name: String,
    pub uid: String,
    pub gid: String,
    pub muid: String,
}

impl Stat {
    /// A stat whose every field means "leave this alone" in a `Twstat`
    /// (plan9port's `nulldir`). Sent unchanged it asks the server to sync the file.
    pub fn dont_touch() -> Stat {
        Stat {
            ty: !0,
            dev: !0,
            qid: Qid {
                ty: !0,
                vers: !0,
                path: !0,
            },
            mode: !0,
            atime: !0,
            mtime: !0,
            length: !0,
            name: String::new(),
            uid: String::new(),
            gid: String::new(),
            muid: String::new(),
        }
    }

    /// The encoded length, including the leading size field.
    pub fn encoded_len(&self) -> usize {
        STATFIXLEN + self.name.len() + self.uid.len() + self.gid.len() + self.muid.len()
    }

    /// Append the entry to `buf`. Fails only if it cannot be framed (longer than 65535).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        let n = self.encoded_len();
        if n - 2 > u16::MAX as usize {
            return Err(ProtoError::StatTooBig(n));
        }
        buf.reserve(n);
        buf.put_u16_le((n - 2) as u16);
        buf.put_u16_le(self.ty);
        buf.put_u32_le(self.dev);
        put_qid(buf, &self.qid);
        buf.put_u32_le(self.mode);
        buf.put_u32_le(self.atime);
        buf.put_u32_le(self.mtime);
        buf.put_u64_le(self.length);
        for s in [&self.name, &self.uid, &self.gid, &self.muid] {
            put_str(buf, s)?;
        }
        Ok(())
    }

    /// Decode one stat entry that must fill `b` exactly.
    pub fn decode(b: &[u8]) -> Result<Stat, ProtoError> {
        let mut r = Reader { b, pos: 0 };
        let st = r.stat_entry()?;
        r.finish()?;
        Ok(st)
    }

    /// Whether this stat is the all-don't-touch "sync" request.
    pub fn is_dont_touch(&self) -> bool {
        *self == Stat::dont_touch()
    }
}

impl fmt::Display for Stat {
    /// As plan9port's `%D` prints a Dir.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "'{}' '{}' '{}' '{}' q {} m 0{:o} at {} mt {} l {} t {} d {}",
            self.name,
            self.uid,
            self.gid,
            self.muid,
            self.qid,
            self.mode,
            self.atime,
            self.mtime,
            self.length,
            self.ty,
            self.dev
        )
    }
}

/// Decode the concatenated stat entries of a directory read.
pub fn decode_dir(mut b: &[u8]) -> Result<Vec<Stat>, ProtoError> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 2 {
            return Err(ProtoError::Truncated("stat size"));
        }
        let n = u16::from_le_bytes([b[0], b[1]]) as usize + 2;
        if n > b.len() {
            return Err(ProtoError::Truncated("stat entry"));
        }
        out.push(Stat::decode(&b[..n])?);
        b = &b[n..];
    }
    Ok(out)
}

/// The body of a 9P2000 message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Fcall {
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
    },
    Rauth {
        aqid: Qid,
    },
    Tattach {
        fid: u32,
        afid: u32,
        uname: String,
        aname: String,
    },
    Rattach {
        qid: Qid,
    },
    Rerror {
        ename: String,
    },
    Tflush {
        oldtag: u16,
    },
    Rflush,
    Twalk {
        fid: u32,
        newfid: u32,
        wnames: Vec<String>,
    },
    Rwalk {
        wqids: Vec<Qid>,
    },
    Topen {
        fid: u32,
        mode: u8,
    },
    Ropen {
        qid: Qid,
        iounit: u32,
    },
    Tcreate {
        fid: u32,
        name: String,
        perm: u32,
        mode: u8,
    },
    Rcreate {
        qid: Qid,
        iounit: u32,
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
    Tstat {
        fid: u32,
    },
    Rstat {
        stat: Stat,
    },
    Twstat {
        fid: u32,
        stat: Stat,
    },
    Rwstat,
}

impl Fcall {
    /// The message type number.
    pub fn mtype(&self) -> u8 {
        match self {
            Fcall::Tversion { .. } => TVERSION,
            Fcall::Rversion { .. } => RVERSION,
            Fcall::Tauth { .. } => TAUTH,
            Fcall::Rauth { .. } => RAUTH,
            Fcall::Tattach { .. } => TATTACH,
            Fcall::Rattach { .. } => RATTACH,
            Fcall::Rerror { .. } => RERROR,
            Fcall::Tflush { .. } => TFLUSH,
            Fcall::Rflush => RFLUSH,
            Fcall::Twalk { .. } => TWALK,
            Fcall::Rwalk { .. } => RWALK,
            Fcall::Topen { .. } => TOPEN,
            Fcall::Ropen { .. } => ROPEN,
            Fcall::Tcreate { .. } => TCREATE,
            Fcall::Rcreate { .. } => RCREATE,
            Fcall::Tread { .. } => TREAD,
            Fcall::Rread { .. } => RREAD,
            Fcall::Twrite { .. } => TWRITE,
            Fcall::Rwrite { .. } => RWRITE,
            Fcall::Tclunk { .. } => TCLUNK,
            Fcall::Rclunk => RCLUNK,
            Fcall::Tremove { .. } => TREMOVE,
            Fcall::Rremove => RREMOVE,
            Fcall::Tstat { .. } => TSTAT,
            Fcall::Rstat { .. } => RSTAT,
            Fcall::Twstat { .. } => TWSTAT,
            Fcall::Rwstat => RWSTAT,
        }
    }

    /// Whether this is a request (T-message).
    pub fn is_request(&self) -> bool {
        self.mtype() % 2 == 0
    }

    /// The message's name, as in traces: `Twalk`, `Rerror`, ...
    pub fn name(&self) -> &'static str {
        type_name(self.mtype())
    }

    /// The length of the whole encoded message, size field included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN
            + match self {
                Fcall::Tversion { version, .. } | Fcall::Rversion { version, .. } => {
                    4 + 2 + version.len()
                }
                Fcall::Tauth { uname, aname, .. } => 4 + 2 + uname.len() + 2 + aname.len(),
                Fcall::Rauth { .. } | Fcall::Rattach { .. } => Qid::LEN,
                Fcall::Tattach { uname, aname, .. } => 8 + 2 + uname.len() + 2 + aname.len(),
                Fcall::Rerror { ename } => 2 + ename.len(),
                Fcall::Tflush { .. } => 2,
                Fcall::Rflush | Fcall::Rclunk | Fcall::Rremove | Fcall::Rwstat => 0,
                Fcall::Twalk { wnames, .. } => {
                    10 + wnames.iter().map(|w| 2 + w.len()).sum::<usize>()
                }
                Fcall::Rwalk { wqids } => 2 + Qid::LEN * wqids.len(),
                Fcall::Topen { .. } => 5,
                Fcall::Ropen { .. } | Fcall::Rcreate { .. } => Qid::LEN + 4,
                Fcall::Tcreate { name, .. } => 4 + 2 + name.len() + 4 + 1,
                Fcall::Tread { .. } => 16,
                Fcall::Rread { data } => 4 + data.len(),
                Fcall::Twrite { data, .. } => 16 + data.len(),
                Fcall::Rwrite { .. } => 4,
                Fcall::Tclunk { .. } | Fcall::Tremove { .. } | Fcall::Tstat { .. } => 4,
                Fcall::Rstat { stat } => 2 + stat.encoded_len(),
                Fcall::Twstat { stat, .. } => 4 + 2 + stat.encoded_len(),
            }
    }
}

/// The name of message type `t`.
pub fn type_name(t: u8) -> &'static str {
    match t {
        TVERSION => "Tversion",
        RVERSION => "Rversion",
        TAUTH => "Tauth",
        RAUTH => "Rauth",
        TATTACH => "Tattach",
        RATTACH => "Rattach",
        RERROR => "Rerror",
        TFLUSH => "Tflush",
        RFLUSH => "Rflush",
        TWALK => "Twalk",
        RWALK => "Rwalk",
        TOPEN => "Topen",
        ROPEN => "Ropen",
        TCREATE => "Tcreate",
        RCREATE => "Rcreate",
        TREAD => "Tread",
        RREAD => "Rread",
        TWRITE => "Twrite",
        RWRITE => "Rwrite",
        TCLUNK => "Tclunk",
        RCLUNK => "Rclunk",
        TREMOVE => "Tremove",
        RREMOVE => "Rremove",
        TSTAT => "Tstat",
        RSTAT => "Rstat",
        TWSTAT => "Twstat",
        RWSTAT => "Rwstat",
        _ => "unknown",
    }
}

/// A tagged message.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Msg {
    pub tag: u16,
    pub body: Fcall,
}

impl Msg {
    pub fn new(tag: u16, body: Fcall) -> Msg {
        Msg { tag, body }
    }

    /// Encode the whole message into `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), ProtoError> {
        if let Some(bulk) = self.encode_head(buf)? {
            buf.extend_from_slice(&bulk);
        }
        Ok(())
    }

    /// Encode the message into `buf`, except that the data of an `Rread` or `Twrite` is
    /// returned instead of copied: the message is `buf`'s new bytes followed by it.
    /// This lets the data go to the socket with a vectored write, uncopied.
    pub fn encode_head(&self, buf: &mut BytesMut) -> Result<Option<Bytes>, ProtoError> {
        let total = self.body.encoded_len();
        if total > u32::MAX as usize {
            return Err(ProtoError::DataTooLong(total));
        }
        let start = buf.len();
        buf.reserve(total.min(4096));
        buf.put_u32_le(total as u32);
        buf.put_u8(self.body.mtype());
        buf.put_u16_le(self.tag);
        let mut bulk = None;
        let res = encode_body(&self.body, buf, &mut bulk);
        if let Err(e) = res {
            buf.truncate(start);
            return Err(e);
        }
        Ok(bulk)
    }

    /// Encode to a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, ProtoError> {
        let mut b = BytesMut::with_capacity(self.body.encoded_len());
        self.encode(&mut b)?;
        Ok(b.freeze())
    }
}

fn encode_body(
    body: &Fcall,
    buf: &mut BytesMut,
    bulk: &mut Option<Bytes>,
) -> Result<(), ProtoError> {
    match body {
        Fcall::Tversion { msize, version } | Fcall::Rversion { msize, version } => {
            buf.put_u32_le(*msize);
            put_str(buf, version)?;
        }
        Fcall::Tauth { afid, uname, aname } => {
            buf.put_u32_le(*afid);
            put_str(buf, uname)?;
            put_str(buf, aname)?;
        }
        Fcall::Rauth { aqid: qid } | Fcall::Rattach { qid } => put_qid(buf, qid),
        Fcall::Tattach {
            fid,
            afid,
            uname,
            aname,
        } => {
            buf.put_u32_le(*fid);
            buf.put_u32_le(*afid);
            put_str(buf, uname)?;
            put_str(buf, aname)?;
        }
        Fcall::Rerror { ename } => put_str(buf, ename)?,
        Fcall::Tflush { oldtag } => buf.put_u16_le(*oldtag),
        Fcall::Rflush | Fcall::Rclunk | Fcall::Rremove | Fcall::Rwstat => {}
        Fcall::Twalk {
            fid,
            newfid,
            wnames,
        } => {
            if wnames.len() > MAXWELEM {
                return Err(ProtoError::TooManyWalkElems(wnames.len()));
            }
            buf.put_u32_le(*fid);
            buf.put_u32_le(*newfid);
            buf.put_u16_le(wnames.len() as u16);
            for w in wnames {
                put_str(buf, w)?;
            }
        }
        Fcall::Rwalk { wqids } => {
            if wqids.len() > MAXWELEM {
                return Err(ProtoError::TooManyWalkElems(wqids.len()));
            }
            buf.put_u16_le(wqids.len() as u16);
            for q in wqids {
                put_qid(buf, q);
            }
        }
        Fcall::Topen { fid, mode } => {
            buf.put_u32_le(*fid);
            buf.put_u8(*mode);
        }
        Fcall::Ropen { qid, iounit } | Fcall::Rcreate { qid, iounit } => {
            put_qid(buf, qid);
            buf.put_u32_le(*iounit);
        }
        Fcall::Tcreate {
            fid,
            name,
            perm,
            mode,
        } => {
            buf.put_u32_le(*fid);
            put_str(buf, name)?;
            buf.put_u32_le(*perm);
            buf.put_u8(*mode);
        }
        Fcall::Tread { fid, offset, count } => {
            buf.put_u32_le(*fid);
            buf.put_u64_le(*offset);
            buf.put_u32_le(*count);
        }
        Fcall::Rread { data } => {
            let n = u32::try_from(data.len()).map_err(|_| ProtoError::DataTooLong(data.len()))?;
            buf.put_u32_le(n);
            *bulk = Some(data.clone());
        }
        Fcall::Twrite { fid, offset, data } => {
            let n = u32::try_from(data.len()).map_err(|_| ProtoError::DataTooLong(data.len()))?;
            buf.put_u32_le(*fid);
            buf.put_u64_le(*offset);
            buf.put_u32_le(n);
            *bulk = Some(data.clone());
        }
        Fcall::Rwrite { count } => buf.put_u32_le(*count),
        Fcall::Tclunk { fid } | Fcall::Tremove { fid } | Fcall::Tstat { fid } => {
            buf.put_u32_le(*fid)
        }
        Fcall::Rstat { stat } => {
            let n = stat.encoded_len();
            if n > u16::MAX as usize {
                return Err(ProtoError::StatTooBig(n));
            }
            buf.put_u16_le(n as u16);
            stat.encode(buf)?;
        }
        Fcall::Twstat { fid, stat } => {
            let n = stat.encoded_len();
            if n > u16::MAX as usize {
                return Err(ProtoError::StatTooBig(n));
            }
            buf.put_u32_le(*fid);
            buf.put_u16_le(n as u16);
            stat.encode(buf)?;
        }
    }
    Ok(())
}

fn put_qid(buf: &mut BytesMut, q: &Qid) {
    buf.put_u8(q.ty);
    buf.put_u32_le(q.vers);
    buf.put_u64_le(q.path);
}

fn put_str(buf: &mut BytesMut, s: &str) -> Result<(), ProtoError> {
    if s.len() > u16::MAX as usize {
        return Err(ProtoError::StringTooLong(s.len()));
    }
    if s.as_bytes().contains(&0) {
        return Err(ProtoError::Nul);
    }
    buf.put_u16_le(s.len() as u16);
    buf.put_slice(s.as_bytes());
    Ok(())
}

/// The length of the message at the front of `b`, once its size field is there.
pub fn frame_len(b: &[u8]) -> Option<u32> {
    if b.len() < 4 {
        return None;
    }
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The tag of a frame, if it has a header: an error reply can name it even when the
/// rest of the message does not decode.
pub fn frame_tag(b: &[u8]) -> Option<u16> {
    if b.len() < HEADER_LEN {
        return None;
    }
    Some(u16::from_le_bytes([b[5], b[6]]))
}

/// Check a frame's size field against the limit before any of it is read.
pub fn check_frame_len(size: u32, max: u32) -> Result<(), ProtoError> {
    if (size as usize) < HEADER_LEN {
        return Err(ProtoError::TooShort(size as usize));
    }
    if size > max {
        return Err(ProtoError::TooBig { size, max });
    }
    Ok(())
}

/// Decode exactly one message from `frame`, which must be exactly as long as its size
/// field says and no longer than `max` (the msize). The data of `Rread` and `Twrite`
/// share `frame`'s storage.
pub fn decode(frame: Bytes, max: u32) -> Result<Msg, ProtoError> {
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
    let body = match ty {
        TVERSION | RVERSION => {
            let msize = r.u32("msize")?;
            let version = r.string("version")?;
            if ty == TVERSION {
                Fcall::Tversion { msize, version }
            } else {
                Fcall::Rversion { msize, version }
            }
        }
        TAUTH => Fcall::Tauth {
            afid: r.u32("afid")?,
            uname: r.string("uname")?,
            aname: r.string("aname")?,
        },
        RAUTH => Fcall::Rauth { aqid: r.qid()? },
        TATTACH => Fcall::Tattach {
            fid: r.u32("fid")?,
            afid: r.u32("afid")?,
            uname: r.string("uname")?,
            aname: r.string("aname")?,
        },
        RATTACH => Fcall::Rattach { qid: r.qid()? },
        RERROR => Fcall::Rerror {
            ename: r.string("ename")?,
        },
        TFLUSH => Fcall::Tflush {
            oldtag: r.u16("oldtag")?,
        },
        RFLUSH => Fcall::Rflush,
        TWALK => {
            let fid = r.u32("fid")?;
            let newfid = r.u32("newfid")?;
            let n = r.u16("nwname")? as usize;
            if n > MAXWELEM {
                return Err(ProtoError::TooManyWalkElems(n));
            }
            let mut wnames = Vec::with_capacity(n);
            for _ in 0..n {
                wnames.push(r.string("wname")?);
            }
            Fcall::Twalk {
                fid,
                newfid,
                wnames,
            }
        }
        RWALK => {
            let n = r.u16("nwqid")? as usize;
            if n > MAXWELEM {
                return Err(ProtoError::TooManyWalkElems(n));
            }
            let mut wqids = Vec::with_capacity(n);
            for _ in 0..n {
                wqids.push(r.qid()?);
            }
            Fcall::Rwalk { wqids }
        }
        TOPEN => Fcall::Topen {
            fid: r.u32("fid")?,
            mode: r.u8("mode")?,
        },
        ROPEN | RCREATE => {
            let qid = r.qid()?;
            let iounit = r.u32("iounit")?;
            if ty == ROPEN {
                Fcall::Ropen { qid, iounit }
            } else {
                Fcall::Rcreate { qid, iounit }
            }
        }
        TCREATE => Fcall::Tcreate {
            fid: r.u32("fid")?,
            name: r.string("name")?,
            perm: r.u32("perm")?,
            mode: r.u8("mode")?,
        },
        TREAD => Fcall::Tread {
            fid: r.u32("fid")?,
            offset: r.u64("offset")?,
            count: r.u32("count")?,
        },
        RREAD => {
            let n = r.u32("count")? as usize;
            let (start, end) = r.span(n, "data")?;
            Fcall::Rread {
                data: frame.slice(start..end),
            }
        }
        TWRITE => {
            let fid = r.u32("fid")?;
            let offset = r.u64("offset")?;
            let n = r.u32("count")? as usize;
            let (start, end) = r.span(n, "data")?;
            Fcall::Twrite {
                fid,
                offset,
                data: frame.slice(start..end),
            }
        }
        RWRITE => Fcall::Rwrite {
            count: r.u32("count")?,
        },
        TCLUNK => Fcall::Tclunk { fid: r.u32("fid")? },
        RCLUNK => Fcall::Rclunk,
        TREMOVE => Fcall::Tremove { fid: r.u32("fid")? },
        RREMOVE => Fcall::Rremove,
        TSTAT => Fcall::Tstat { fid: r.u32("fid")? },
        RSTAT => Fcall::Rstat {
            stat: r.sized_stat()?,
        },
        TWSTAT => {
            let fid = r.u32("fid")?;
            Fcall::Twstat {
                fid,
                stat: r.sized_stat()?,
            }
        }
        RWSTAT => Fcall::Rwstat,
        other => return Err(ProtoError::UnknownType(other)),
    };
    r.finish()?;
    Ok(Msg { tag, body })
}

pub(crate) struct Reader<'a> {
    pub(crate) b: &'a [u8],
    pub(crate) pos: usize,
}

impl Reader<'_> {
    pub(crate) fn span(
        &mut self,
        n: usize,
        what: &'static str,
    ) -> Result<(usize, usize), ProtoError> {
        let start = self.pos;
        let end = start.checked_add(n).ok_or(ProtoError::Truncated(what))?;
        if end > self.b.len() {
            return Err(ProtoError::Truncated(what));
        }
        self.pos = end;
        Ok((start, end))
    }
    pub(crate) fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], ProtoError> {
        let (s, e) = self.span(n, what)?;
        Ok(&self.b[s..e])
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        Ok(self.take(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        let mut s = self.take(2, what)?;
        Ok(s.get_u16_le())
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        let mut s = self.take(4, what)?;
        Ok(s.get_u32_le())
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        let mut s = self.take(8, what)?;
        Ok(s.get_u64_le())
    }
    pub(crate) fn qid(&mut self) -> Result<Qid, ProtoError> {
        Ok(Qid {
            ty: self.u8("qid")?,
            vers: self.u32("qid")?,
            path: self.u64("qid")?,
        })
    }
    pub(crate) fn string(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let n = self.u16(what)? as usize;
        let s = self.take(n, what)?;
        if s.contains(&0) {
            return Err(ProtoError::Nul);
        }
        std::str::from_utf8(s)
            .map(str::to_owned)
            .map_err(|_| ProtoError::BadUtf8)
    }
    /// `n[2]` followed by a stat entry of exactly n bytes.
    fn sized_stat(&mut self) -> Result<Stat, ProtoError> {
        let n = self.u16("stat")? as usize;
        let b = self.take(n, "stat")?;
        Stat::decode(b)
    }
    fn stat_entry(&mut self) -> Result<Stat, ProtoError> {
        let start = self.pos;
        let size = self.u16("stat size")? as usize;
        let st = Stat {
            ty: self.u16("stat type")?,
            dev: self.u32("stat dev")?,
            qid: self.qid()?,
            mode: self.u32("stat mode")?,
            atime: self.u32("stat atime")?,
            mtime: self.u32("stat mtime")?,
            length: self.u64("stat length")?,
            name: self.string("stat name")?,
            uid: self.string("stat uid")?,
            gid: self.string("stat gid")?,
            muid: self.string("stat muid")?,
        };
        let actual = self.pos - start - 2;
        if actual != size {
            return Err(ProtoError::BadStat {
                declared: size,
                actual,
            });
        }
        Ok(st)
    }
    pub(crate) fn finish(&self) -> Result<(), ProtoError> {
        if self.pos != self.b.len() {
            return Err(ProtoError::Trailing(self.b.len() - self.pos));
        }
        Ok(())
    }
}

impl fmt::Display for Msg {
    /// One line per message, in the style of plan9port's fcallfmt (the `-D` traces).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = self.tag;
        write!(f, "{} tag {tag}", self.body.name())?;
        match &self.body {
            Fcall::Tversion { msize, version } | Fcall::Rversion { msize, version } => {
                write!(f, " msize {msize} version '{version}'")
            }
            Fcall::Tauth { afid, uname, aname } => {
                write!(f, " afid {} uname {uname} aname {aname}", *afid as i32)
            }
            Fcall::Rauth { aqid } => write!(f, " qid {aqid}"),
            Fcall::Tattach {
                fid,
                afid,
                uname,
                aname,
            } => write!(
                f,
                " fid {fid} afid {} uname {uname} aname {aname}",
                *afid as i32
            ),
            Fcall::Rattach { qid } => write!(f, " qid {qid}"),
            Fcall::Rerror { ename } => write!(f, " ename {ename}"),
            Fcall::Tflush { oldtag } => write!(f, " oldtag {oldtag}"),
            Fcall::Twalk {
                fid,
                newfid,
                wnames,
            } => {
                write!(f, " fid {fid} newfid {newfid} nwname {}", wnames.len())?;
                for (i, w) in wnames.iter().enumerate() {
                    write!(f, " {i}:{w}")?;
                }
                Ok(())
            }
            Fcall::Rwalk { wqids } => {
                write!(f, " nwqid {}", wqids.len())?;
                for (i, q) in wqids.iter().enumerate() {
                    write!(f, " {i}:{q}")?;
                }
                Ok(())
            }
            Fcall::Topen { fid, mode } => write!(f, " fid {fid} mode {mode}"),
            Fcall::Ropen { qid, iounit } | Fcall::Rcreate { qid, iounit } => {
                write!(f, " qid {qid} iounit {iounit}")
            }
            Fcall::Tcreate {
                fid,
                name,
                perm,
                mode,
            } => write!(
                f,
                " fid {fid} name {name} perm {} mode {mode}",
                ModeString(*perm)
            ),
            Fcall::Tread { fid, offset, count } => {
                write!(f, " fid {fid} offset {offset} count {count}")
            }
            Fcall::Rread { data } => write!(f, " count {} {}", data.len(), Dump(data)),
            Fcall::Twrite { fid, offset, data } => write!(
                f,
                " fid {fid} offset {offset} count {} {}",
                data.len(),
                Dump(data)
            ),
            Fcall::Rwrite { count } => write!(f, " count {count}"),
            Fcall::Tclunk { fid } | Fcall::Tremove { fid } | Fcall::Tstat { fid } => {
                write!(f, " fid {fid}")
            }
            Fcall::Rstat { stat } => write!(f, " stat {stat}"),
            Fcall::Twstat { fid, stat } => write!(f, " fid {fid} stat {stat}"),
            Fcall::Rflush | Fcall::Rclunk | Fcall::Rremove | Fcall::Rwstat => Ok(()),
        }
    }
}

/// The first bytes of some data: as text if printable, else in hex.
struct Dump<'a>(&'a [u8]);
impl fmt::Display for Dump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0[..self.0.len().min(64)];
        let printable = b
            .iter()
            .all(|&c| (32..127).contains(&c) || c == b'\n' || c == b'\t');
        f.write_str("'")?;
        if printable {
            for &c in b {
                match c {
                    b'\n' => f.write_str("\\n")?,
                    b'\t' => f.write_str("\\t")?,
                    c => write!(f, "{}", c as char)?,
                }
            }
        } else {
            for (i, c) in b.iter().enumerate() {
                if i > 0 && i % 4 == 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{c:02x}")?;
            }
        }
        f.write_str("'")
    }
}

/// A mode as Plan 9's `ls -l` prints it: `d-rwxr-xr-x`, `--rw-r--r--`, `a-rw-------`...
pub struct ModeString(pub u32);

impl fmt::Display for ModeString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        let kind = if m & DMDIR != 0 {
            'd'
        } else if m & DMAPPEND != 0 {
            'a'
        } else if m & DMAUTH != 0 {
            'A'
        } else if m & DMDEVICE != 0 {
            'D'
        } else if m & DMSYMLINK != 0 {
            'L'
        } else if m & DMSOCKET != 0 {
            'S'
        } else if m & DMNAMEDPIPE != 0 {
            'P'
        } else {
            '-'
        };
        let excl = if m & DMEXCL != 0 { 'l' } else { '-' };
        write!(f, "{kind}{excl}")?;
        for shift in [6, 3, 0] {
            let b = (m >> shift) & 7;
            let r = if b & 4 != 0 { 'r' } else { '-' };
            let w = if b & 2 != 0 { 'w' } else { '-' };
            let x = if b & 1 != 0 { 'x' } else { '-' };
            write!(f, "{r}{w}{x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt(m: Msg) {
        let b = m.to_bytes().expect("encode");
        assert_eq!(b.len(), m.body.encoded_len());
        let d = decode(b, MAX_MSIZE).expect("decode");
        assert_eq!(d, m);
    }

    #[test]
    fn fixed_messages_round_trip() {
        rt(Msg::new(
            NOTAG,
            Fcall::Tversion {
                msize: 8192,
                version: "9P2000".into(),
            },
        ));
        rt(Msg::new(
            3,
            Fcall::Twalk {
                fid: 1,
                newfid: 2,
                wnames: vec!["a".into(), "b".into()],
            },
        ));
        rt(Msg::new(
            4,
            Fcall::Rread {
                data: Bytes::from_static(b"hello"),
            },
        ));
        rt(Msg::new(
            5,
            Fcall::Rstat {
                stat: Stat {
                    name: "x".into(),
                    ..Stat::default()
                },
            },
        ));
    }

    #[test]
    fn known_encoding() {
        // Tversion tag NOTAG msize 8192 "9P2000", byte for byte.
        let m = Msg::new(
            NOTAG,
            Fcall::Tversion {
                msize: 8192,
                version: "9P2000".into(),
            },
        );
        let b = m.to_bytes().unwrap();
        assert_eq!(
            &b[..],
            &[
                19, 0, 0, 0, 100, 0xff, 0xff, 0, 0x20, 0, 0, 6, 0, b'9', b'P', b'2', b'0', b'0',
                b'0'
            ]
        );
    }

    #[test]
    fn strict_decoding() {
        let ok = Msg::new(1, Fcall::Tclunk { fid: 7 }).to_bytes().unwrap();
        // Trailing byte, with the size field updated to include it.
        let mut v = ok.to_vec();
        v.push(0);
        v[0] += 1;
        assert_eq!(
            decode(Bytes::from(v), MAX_MSIZE),
            Err(ProtoError::Trailing(1))
        );
        // Size too big for msize.
        assert!(matches!(
            decode(ok.clone(), 8),
            Err(ProtoError::TooBig { .. })
        ));
        // Bad type.
        let mut v = ok.to_vec();
        v[4] = 106;
        assert_eq!(
            decode(Bytes::from(v), MAX_MSIZE),
            Err(ProtoError::UnknownType(106))
        );
        // 17 walk names.
        let mut b = BytesMut::new();
        b.put_u32_le(0);
        b.put_u8(TWALK);
        b.put_u16_le(1);
        b.put_u32_le(1);
        b.put_u32_le(2);
        b.put_u16_le(17);
        for _ in 0..17 {
            b.put_u16_le(1);
            b.put_u8(b'a');
        }
        let n = b.len() as u32;
        b[..4].copy_from_slice(&n.to_le_bytes());
        assert_eq!(
            decode(b.freeze(), MAX_MSIZE),
            Err(ProtoError::TooManyWalkElems(17))
        );
        // A NUL in a string.
        let m = Msg::new(1, Fcall::Rerror { ename: "ab".into() });
        let mut v = m.to_bytes().unwrap().to_vec();
        let last = v.len() - 1;
        v[last] = 0;
        assert_eq!(decode(Bytes::from(v), MAX_MSIZE), Err(ProtoError::Nul));
    }

    #[test]
    fn mode_strings() {
        assert_eq!(ModeString(DMDIR | 0o755).to_string(), "d-rwxr-xr-x");
        assert_eq!(ModeString(0o644).to_string(), "--rw-r--r--");
        assert_eq!(
            ModeString(DMAPPEND | DMEXCL | 0o600).to_string(),
            "alrw-------"
        );
    }
}

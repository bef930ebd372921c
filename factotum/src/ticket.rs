//! Plan 9's authentication data structures (`<authsrv.h>`) and the DES they are
//! sealed with, as used by p9sk1 and the ticket service of authsrv(6).
//!
//! Wire formats (all fixed size, names NUL-padded to their field width, integers
//! little-endian):
//!
//! | structure | layout | bytes |
//! |---|---|---|
//! | Ticketreq | type[1] authid[28] authdom[48] chal[8] hostid[28] uid[28] | 141 |
//! | Ticket | num[1] chal[8] cuid[28] suid[28] key[7], DES-sealed | 72 |
//! | Authenticator | num[1] chal[8] id[4], DES-sealed | 13 |
//! | Passwordreq | num[1] old[28] new[28] changesecret[1] secret[32], DES-sealed | 90 |
//!
//! "DES-sealed" is Plan 9's `encrypt(2)`: single DES in ECB mode over 8-byte
//! blocks that start every 7 bytes, the last block moved back to end exactly at
//! the end of the buffer, so any buffer of 8 or more bytes is covered without
//! padding. Keys are 56-bit DES keys in Plan 9's packed 7-byte form.
//!
//! Secrets (keys, plaintext buffers, passwords) are zeroed when dropped and are
//! never shown by `Debug`.

use des::Des;
use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Maximum size of a name (user, auth id) including its NUL.
pub const ANAMELEN: usize = 28;
/// Size of an error string in the AS protocol (`AuthErr` replies).
pub const AERRLEN: usize = 64;
/// Size of an authentication domain name including its NUL.
pub const DOMLEN: usize = 48;
/// Size of a DES key in Plan 9's packed form.
pub const DESKEYLEN: usize = 7;
/// Size of a p9sk1 challenge.
pub const CHALLEN: usize = 8;
/// Maximum network challenge length (challenge box protocol).
pub const NETCHLEN: usize = 16;
/// Size of nvram config strings.
pub const CONFIGLEN: usize = 14;
/// Maximum size of a secret (non-Plan 9 password) including its NUL.
pub const SECRETLEN: usize = 32;

/// Size of a marshaled Ticketreq.
pub const TICKREQLEN: usize = 3 * ANAMELEN + CHALLEN + DOMLEN + 1;
/// Size of a marshaled (and sealed) Ticket.
pub const TICKETLEN: usize = CHALLEN + 2 * ANAMELEN + DESKEYLEN + 1;
/// Size of a marshaled (and sealed) Authenticator.
pub const AUTHENTLEN: usize = CHALLEN + 4 + 1;
/// Size of a marshaled (and sealed) Passwordreq.
pub const PASSREQLEN: usize = 2 * ANAMELEN + 1 + 1 + SECRETLEN;

/// Ticket request.
pub const AUTH_TREQ: u8 = 1;
/// Challenge box request.
pub const AUTH_CHAL: u8 = 2;
/// Change password.
pub const AUTH_PASS: u8 = 3;
/// Fixed length reply follows.
pub const AUTH_OK: u8 = 4;
/// Error (AERRLEN bytes) follows.
pub const AUTH_ERR: u8 = 5;
/// Modify user.
pub const AUTH_MOD: u8 = 6;
/// APOP authentication for pop3.
pub const AUTH_APOP: u8 = 7;
/// Variable length reply follows.
pub const AUTH_OKVAR: u8 = 9;
/// CHAP authentication for ppp.
pub const AUTH_CHAP: u8 = 10;
/// MS-CHAP authentication for ppp.
pub const AUTH_MSCHAP: u8 = 11;
/// CRAM verification for IMAP.
pub const AUTH_CRAM: u8 = 12;
/// HTTP domain login.
pub const AUTH_HTTP: u8 = 13;
/// VNC server login (deprecated).
pub const AUTH_VNC: u8 = 14;
/// Authenticated Diffie-Hellman key agreement (9front's dp9ik).
pub const AUTH_PAK: u8 = 19;
/// Ticket sealed with the server's key.
pub const AUTH_TS: u8 = 64;
/// Ticket sealed with the client's key.
pub const AUTH_TC: u8 = 65;
/// Server-generated authenticator.
pub const AUTH_AS: u8 = 66;
/// Client-generated authenticator.
pub const AUTH_AC: u8 = 67;
/// Ticket sealed with the client's key, for a password change.
pub const AUTH_TP: u8 = 68;
/// HTTP reply.
pub const AUTH_HR: u8 = 69;

/// What can go wrong decoding, sealing or checking these structures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The input is shorter than the structure.
    #[error("short {what}: {got} bytes, need {need}")]
    Short {
        what: &'static str,
        need: usize,
        got: usize,
    },
    /// DES sealing needs at least one 8-byte block.
    #[error("cannot encrypt fewer than 8 bytes")]
    TooSmall,
    /// A name does not fit its field (or contains a NUL).
    #[error("{what} too long or malformed")]
    BadField { what: &'static str },
    /// A name in a message is not UTF-8.
    #[error("{what} in message is not UTF-8")]
    NotUtf8 { what: &'static str },
    /// A message of another type than expected; with a sealed message, most
    /// often the sign of a wrong key.
    #[error("{what}: type {got}, expected {want}")]
    WrongType {
        what: &'static str,
        want: u8,
        got: u8,
    },
    /// A ticket or authenticator for another challenge (stale or replayed).
    #[error("{what}: challenge mismatch")]
    ChallengeMismatch { what: &'static str },
    /// Malformed hex key text.
    #[error("malformed hex key data")]
    BadHex,
    /// The system's random number source failed.
    #[error("no randomness: {0}")]
    Random(String),
    /// A form1 (dp9ik) message that does not open: a wrong key, a changed byte,
    /// or not a message of the kind expected.
    #[error("form1 message corrupted")]
    Form1,
}

/// Fill `buf` with random bytes from the operating system.
pub fn random_bytes(buf: &mut [u8]) -> Result<(), Error> {
    getrandom::fill(buf).map_err(|e| Error::Random(e.to_string()))
}

/// A 56-bit DES key in Plan 9's packed 7-byte form.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DesKey([u8; DESKEYLEN]);

impl std::fmt::Debug for DesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DesKey(<secret>)")
    }
}

impl DesKey {
    /// The key with these 7 bytes.
    pub fn from_bytes(b: [u8; DESKEYLEN]) -> DesKey {
        DesKey(b)
    }

    /// The key's 7 bytes.
    pub fn as_bytes(&self) -> &[u8; DESKEYLEN] {
        &self.0
    }

    /// A fresh random key (`mkkey` / `memrandom` in Plan 9).
    pub fn random() -> Result<DesKey, Error> {
        let mut k = [0u8; DESKEYLEN];
        random_bytes(&mut k)?;
        Ok(DesKey(k))
    }

    /// Parse 14 hex digits (factotum's `!hex=` attribute).
    pub fn from_hex(s: &str) -> Result<DesKey, Error> {
        let s = s.trim().as_bytes();
        if s.len() != 2 * DESKEYLEN {
            return Err(Error::BadHex);
        }
        let mut k = [0u8; DESKEYLEN];
        for (i, pair) in s.chunks(2).enumerate() {
            let hi = hexval(pair[0]).ok_or(Error::BadHex)?;
            let lo = hexval(pair[1]).ok_or(Error::BadHex)?;
            k[i] = (hi << 4) | lo;
        }
        Ok(DesKey(k))
    }

    /// The key as 14 lower-case hex digits (for key files; a secret).
    pub fn to_hex(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::with_capacity(2 * DESKEYLEN));
        for b in self.0 {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 15)]));
        }
        s
    }

    /// Plan 9's `passtokey`: the DES key of a password. Only the bytes before
    /// the first NUL count, and at most `ANAMELEN-1` of them.
    pub fn from_password(password: &[u8]) -> DesKey {
        let end = password
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(password.len());
        let mut n = end.min(ANAMELEN - 1);
        let mut buf = Zeroizing::new([0u8; ANAMELEN]);
        buf[..8].fill(b' ');
        buf[..n].copy_from_slice(&password[..n]);
        buf[n] = 0;
        let mut key = DesKey([0; DESKEYLEN]);
        let mut t = 0usize;
        loop {
            for i in 0..DESKEYLEN {
                let a = buf[t + i] >> i;
                let b = ((u32::from(buf[t + i + 1])) << (8 - (i + 1))) as u8;
                key.0[i] = a.wrapping_add(b);
            }
            if n <= 8 {
                return key;
            }
            n -= 8;
            t += 8;
            if n < 8 {
                t -= 8 - n;
                n = 8;
            }
            let cipher = key.cipher();
            des_block(&cipher, &mut buf[t..t + 8], false);
        }
    }

    /// libsec's `des56to64`: the standard 8-byte DES key, 7 key bits in the
    /// top of each byte and odd parity in the low bit. Also the 8-byte p9sk1
    /// session secret.
    pub fn to_des64(&self) -> Zeroizing<[u8; 8]> {
        let mut v: u64 = 0;
        for b in self.0 {
            v = (v << 8) | u64::from(b);
        }
        let mut out = Zeroizing::new([0u8; 8]);
        for (i, o) in out.iter_mut().enumerate() {
            let seven = ((v >> (49 - 7 * i)) & 0x7f) as u8;
            let parity = u8::from(seven.count_ones() % 2 == 0);
            *o = (seven << 1) | parity;
        }
        v.zeroize();
        out
    }

    /// libsec's `des64to56`: pack a standard 8-byte key (parity bits dropped).
    pub fn from_des64(k: &[u8; 8]) -> DesKey {
        let mut v: u64 = 0;
        for &b in k {
            v = (v << 7) | u64::from(b >> 1);
        }
        let mut out = [0u8; DESKEYLEN];
        for (i, o) in out.iter_mut().enumerate() {
            *o = (v >> (48 - 8 * i)) as u8;
        }
        v.zeroize();
        DesKey(out)
    }

    fn cipher(&self) -> Des {
        let k = self.to_des64();
        // A DES key is any 8 bytes; new_from_slice fails only on a wrong length.
        match Des::new_from_slice(&k[..]) {
            Ok(c) => c,
            Err(_) => unreachable!("DES key is 8 bytes"),
        }
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hexval(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn des_block(c: &Des, block: &mut [u8], decrypting: bool) {
    let b = GenericArray::from_mut_slice(block);
    if decrypting {
        c.decrypt_block(b);
    } else {
        c.encrypt_block(b);
    }
}

/// Plan 9's `encrypt`: seal `buf` in place with `key`. The buffer must be at
/// least 8 bytes long.
pub fn encrypt(key: &DesKey, buf: &mut [u8]) -> Result<(), Error> {
    if buf.len() < 8 {
        return Err(Error::TooSmall);
    }
    let c = key.cipher();
    let n = buf.len() - 1;
    let (blocks, r) = (n / 7, n % 7);
    for i in 0..blocks {
        des_block(&c, &mut buf[7 * i..7 * i + 8], false);
    }
    if r != 0 {
        let off = 7 * blocks - 7 + r;
        des_block(&c, &mut buf[off..off + 8], false);
    }
    Ok(())
}

/// Plan 9's `decrypt`: the inverse of [`encrypt`].
pub fn decrypt(key: &DesKey, buf: &mut [u8]) -> Result<(), Error> {
    if buf.len() < 8 {
        return Err(Error::TooSmall);
    }
    let c = key.cipher();
    let n = buf.len() - 1;
    let (blocks, r) = (n / 7, n % 7);
    if r != 0 {
        let off = 7 * blocks - 7 + r;
        des_block(&c, &mut buf[off..off + 8], true);
    }
    for i in (0..blocks).rev() {
        des_block(&c, &mut buf[7 * i..7 * i + 8], true);
    }
    Ok(())
}

fn need(what: &'static str, buf: &[u8], need: usize) -> Result<(), Error> {
    if buf.len() < need {
        Err(Error::Short {
            what,
            need,
            got: buf.len(),
        })
    } else {
        Ok(())
    }
}

/// Check a name fits a NUL-terminated field of `width` bytes.
pub fn check_name(what: &'static str, s: &str, width: usize) -> Result<(), Error> {
    if s.len() >= width || s.as_bytes().contains(&0) {
        Err(Error::BadField { what })
    } else {
        Ok(())
    }
}

fn put_name(out: &mut [u8], s: &str) {
    // Callers check the length first; the field stays NUL-padded and its last
    // byte NUL.
    let n = s.len().min(out.len() - 1);
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
}

fn get_name(what: &'static str, field: &[u8]) -> Result<String, Error> {
    // As convM2*: the last byte of the field is forced to NUL.
    let field = &field[..field.len() - 1];
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| Error::NotUtf8 { what })
}

/// The head both ticket forms start with (type, challenge, client and server names),
/// written into `b`; where the key goes after it.
fn put_ticket_head(
    b: &mut [u8],
    num: u8,
    chal: &[u8; CHALLEN],
    cuid: &str,
    suid: &str,
) -> Result<usize, Error> {
    check_name("cuid", cuid, ANAMELEN)?;
    check_name("suid", suid, ANAMELEN)?;
    b[0] = num;
    let mut p = 1;
    b[p..p + CHALLEN].copy_from_slice(chal);
    p += CHALLEN;
    put_name(&mut b[p..p + ANAMELEN], cuid);
    p += ANAMELEN;
    put_name(&mut b[p..p + ANAMELEN], suid);
    Ok(p + ANAMELEN)
}

/// A ticket's head read from `b` (at least the head's length): type, challenge,
/// client and server names, and where the key starts.
fn get_ticket_head(b: &[u8]) -> Result<(u8, [u8; CHALLEN], String, String, usize), Error> {
    let mut p = 1;
    let mut chal = [0u8; CHALLEN];
    chal.copy_from_slice(&b[p..p + CHALLEN]);
    p += CHALLEN;
    let cuid = get_name("cuid", &b[p..p + ANAMELEN])?;
    p += ANAMELEN;
    let suid = get_name("suid", &b[p..p + ANAMELEN])?;
    Ok((b[0], chal, cuid, suid, p + ANAMELEN))
}

/// A ticket request (`Ticketreq`): sent by a server to its client and relayed,
/// completed, to the authentication server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Ticketreq {
    /// Request type: `AUTH_TREQ` for tickets.
    pub typ: u8,
    /// The server's authentication id (IDs).
    pub authid: String,
    /// The server's authentication domain (DN).
    pub authdom: String,
    /// The server's challenge (CHs).
    pub chal: [u8; CHALLEN],
    /// The client's host id (IDc).
    pub hostid: String,
    /// The user the client wants to be on the server (IDr).
    pub uid: String,
}

impl Ticketreq {
    /// `convTR2M`.
    pub fn to_bytes(&self) -> Result<[u8; TICKREQLEN], Error> {
        check_name("authid", &self.authid, ANAMELEN)?;
        check_name("authdom", &self.authdom, DOMLEN)?;
        check_name("hostid", &self.hostid, ANAMELEN)?;
        check_name("uid", &self.uid, ANAMELEN)?;
        let mut b = [0u8; TICKREQLEN];
        b[0] = self.typ;
        let mut p = 1;
        put_name(&mut b[p..p + ANAMELEN], &self.authid);
        p += ANAMELEN;
        put_name(&mut b[p..p + DOMLEN], &self.authdom);
        p += DOMLEN;
        b[p..p + CHALLEN].copy_from_slice(&self.chal);
        p += CHALLEN;
        put_name(&mut b[p..p + ANAMELEN], &self.hostid);
        p += ANAMELEN;
        put_name(&mut b[p..p + ANAMELEN], &self.uid);
        Ok(b)
    }

    /// `convM2TR`: the first `TICKREQLEN` bytes of `buf`.
    pub fn from_bytes(buf: &[u8]) -> Result<Ticketreq, Error> {
        need("ticket request", buf, TICKREQLEN)?;
        let mut p = 1;
        let authid = get_name("authid", &buf[p..p + ANAMELEN])?;
        p += ANAMELEN;
        let authdom = get_name("authdom", &buf[p..p + DOMLEN])?;
        p += DOMLEN;
        let mut chal = [0u8; CHALLEN];
        chal.copy_from_slice(&buf[p..p + CHALLEN]);
        p += CHALLEN;
        let hostid = get_name("hostid", &buf[p..p + ANAMELEN])?;
        p += ANAMELEN;
        let uid = get_name("uid", &buf[p..p + ANAMELEN])?;
        Ok(Ticketreq {
            typ: buf[0],
            authid,
            authdom,
            chal,
            hostid,
            uid,
        })
    }
}

/// A ticket: the AS's statement that whoever holds `key` may be `suid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// `AUTH_TC`, `AUTH_TS`, `AUTH_TP` or `AUTH_HR`.
    pub num: u8,
    /// The server's challenge (CHs).
    pub chal: [u8; CHALLEN],
    /// The user on the client.
    pub cuid: String,
    /// The user on the server.
    pub suid: String,
    /// The nonce key Kn shared by client and server.
    pub key: DesKey,
}

impl Ticket {
    /// `convT2M`: marshal and seal with `key`.
    pub fn seal(&self, key: &DesKey) -> Result<[u8; TICKETLEN], Error> {
        let mut b = [0u8; TICKETLEN];
        let p = put_ticket_head(&mut b, self.num, &self.chal, &self.cuid, &self.suid)?;
        b[p..p + DESKEYLEN].copy_from_slice(self.key.as_bytes());
        encrypt(key, &mut b)?;
        Ok(b)
    }

    /// `convM2T`: unseal the first `TICKETLEN` bytes of `buf` with `key`.
    /// A wrong key gives garbage, not an error: check `num` and `chal` (or use
    /// [`Ticket::open_checked`]).
    pub fn open(buf: &[u8], key: &DesKey) -> Result<Ticket, Error> {
        Self::parse(&Self::unseal(buf, key)?[..])
    }

    fn unseal(buf: &[u8], key: &DesKey) -> Result<Zeroizing<[u8; TICKETLEN]>, Error> {
        need("ticket", buf, TICKETLEN)?;
        let mut b = Zeroizing::new([0u8; TICKETLEN]);
        b.copy_from_slice(&buf[..TICKETLEN]);
        decrypt(key, &mut b[..])?;
        Ok(b)
    }

    /// Unseal and check the type and the challenge before anything else, so a
    /// wrong key or a stale ticket reads as such.
    pub fn open_checked(
        buf: &[u8],
        key: &DesKey,
        want: u8,
        chal: &[u8; CHALLEN],
    ) -> Result<Ticket, Error> {
        let b = Self::unseal(buf, key)?;
        if b[0] != want {
            return Err(Error::WrongType {
                what: "ticket",
                want,
                got: b[0],
            });
        }
        if !ct_eq(&b[1..1 + CHALLEN], chal) {
            return Err(Error::ChallengeMismatch { what: "ticket" });
        }
        Self::parse(&b[..])
    }

    fn parse(b: &[u8]) -> Result<Ticket, Error> {
        let (num, chal, cuid, suid, p) = get_ticket_head(b)?;
        let mut k = [0u8; DESKEYLEN];
        k.copy_from_slice(&b[p..p + DESKEYLEN]);
        let key = DesKey::from_bytes(k);
        k.zeroize();
        Ok(Ticket {
            num,
            chal,
            cuid,
            suid,
            key,
        })
    }
}

/// An authenticator: proof of holding a ticket's key, bound to a challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authenticator {
    /// `AUTH_AC` (client's) or `AUTH_AS` (server's).
    pub num: u8,
    /// The peer's challenge.
    pub chal: [u8; CHALLEN],
    /// Unused by p9sk1: always 0 (9front writes zeros; plan9port checks 0).
    pub id: u32,
}

impl Authenticator {
    /// `convA2M`: marshal and seal with the ticket key.
    pub fn seal(&self, key: &DesKey) -> Result<[u8; AUTHENTLEN], Error> {
        let mut b = [0u8; AUTHENTLEN];
        b[0] = self.num;
        b[1..1 + CHALLEN].copy_from_slice(&self.chal);
        b[1 + CHALLEN..].copy_from_slice(&self.id.to_le_bytes());
        encrypt(key, &mut b)?;
        Ok(b)
    }

    /// `convM2A`: unseal the first `AUTHENTLEN` bytes of `buf`.
    pub fn open(buf: &[u8], key: &DesKey) -> Result<Authenticator, Error> {
        need("authenticator", buf, AUTHENTLEN)?;
        let mut b = Zeroizing::new([0u8; AUTHENTLEN]);
        b.copy_from_slice(&buf[..AUTHENTLEN]);
        decrypt(key, &mut b[..])?;
        let mut chal = [0u8; CHALLEN];
        chal.copy_from_slice(&b[1..1 + CHALLEN]);
        let mut id = [0u8; 4];
        id.copy_from_slice(&b[1 + CHALLEN..]);
        Ok(Authenticator {
            num: b[0],
            chal,
            id: u32::from_le_bytes(id),
        })
    }

    /// Unseal and check type, challenge and a zero id.
    pub fn open_checked(
        buf: &[u8],
        key: &DesKey,
        want: u8,
        chal: &[u8; CHALLEN],
    ) -> Result<Authenticator, Error> {
        let a = Self::open(buf, key)?;
        if a.num != want {
            return Err(Error::WrongType {
                what: "authenticator",
                want,
                got: a.num,
            });
        }
        if !ct_eq(&a.chal, chal) || a.id != 0 {
            return Err(Error::ChallengeMismatch {
                what: "authenticator",
            });
        }
        Ok(a)
    }
}

/// A password change request (`Passwordreq`), sealed with a ticket key.
#[derive(Clone, PartialEq, Eq, Default, Zeroize, ZeroizeOnDrop)]
pub struct Passwordreq {
    /// `AUTH_PASS`.
    pub num: u8,
    /// The old password.
    pub old: String,
    /// The new password (empty: unchanged).
    pub new: String,
    /// Whether to change the secret too.
    pub changesecret: bool,
    /// The new secret (password for non-Plan 9 protocols).
    pub secret: String,
}

impl std::fmt::Debug for Passwordreq {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwordreq")
            .field("num", &self.num)
            .field("changesecret", &self.changesecret)
            .finish_non_exhaustive()
    }
}

impl Passwordreq {
    /// `convPR2M`: marshal and seal with `key`.
    pub fn seal(&self, key: &DesKey) -> Result<Zeroizing<[u8; PASSREQLEN]>, Error> {
        check_name("old password", &self.old, ANAMELEN)?;
        check_name("new password", &self.new, ANAMELEN)?;
        check_name("secret", &self.secret, SECRETLEN)?;
        let mut b = Zeroizing::new([0u8; PASSREQLEN]);
        b[0] = self.num;
        let mut p = 1;
        put_name(&mut b[p..p + ANAMELEN], &self.old);
        p += ANAMELEN;
        put_name(&mut b[p..p + ANAMELEN], &self.new);
        p += ANAMELEN;
        b[p] = u8::from(self.changesecret);
        p += 1;
        put_name(&mut b[p..p + SECRETLEN], &self.secret);
        encrypt(key, &mut b[..])?;
        Ok(b)
    }

    /// `convM2PR`: unseal the first `PASSREQLEN` bytes of `buf`.
    pub fn open(buf: &[u8], key: &DesKey) -> Result<Passwordreq, Error> {
        need("password request", buf, PASSREQLEN)?;
        let mut b = Zeroizing::new([0u8; PASSREQLEN]);
        b.copy_from_slice(&buf[..PASSREQLEN]);
        decrypt(key, &mut b[..])?;
        let mut p = 1;
        let old = get_name("old password", &b[p..p + ANAMELEN])?;
        p += ANAMELEN;
        let new = get_name("new password", &b[p..p + ANAMELEN])?;
        p += ANAMELEN;
        let changesecret = b[p] != 0;
        p += 1;
        let secret = get_name("secret", &b[p..p + SECRETLEN])?;
        Ok(Passwordreq {
            num: b[0],
            old,
            new,
            changesecret,
            secret,
        })
    }
}

/// Size of a dp9ik ticket key and of an authenticator's nonce.
pub const NONCELEN: usize = 32;
/// Size of a marshaled form1 (dp9ik) ticket: signature and counter, the sealed
/// fields, the tag.
pub const MAXTICKETLEN: usize = 12 + CHALLEN + 2 * ANAMELEN + NONCELEN + 16;
/// Size of a marshaled form1 (dp9ik) authenticator.
pub const MAXAUTHENTLEN: usize = 12 + CHALLEN + NONCELEN + 16;

/// dp9ik's tickets and authenticators: "form1", sealed with ChaCha20-Poly1305
/// (9front's convT2M, convM2T, convA2M and convM2A when `form` is 1).
///
/// | structure | sealed fields | bytes on the wire |
/// |---|---|---|
/// | Ticket | chal[8] cuid[28] suid[28] key[32] | 12 + 96 + 16 = 124 |
/// | Authenticator | chal[8] rand[32] | 12 + 40 + 16 = 68 |
///
/// The message type is not sent as a byte: it is named by the 8-byte signature
/// (`form1 Tc`, `form1 Ts`, `form1 Ac`, `form1 As`, ...) that, with a 4-byte
/// counter, is the AEAD's nonce; see [`crate::pak::form1_seal`]. A ticket is
/// sealed with a PAK key (the client's or the server's), an authenticator with
/// the ticket's 32-byte key.
pub mod form1 {
    use super::*;
    use crate::pak::{form1_check, form1_open, form1_seal};

    /// A dp9ik ticket.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Ticket {
        /// `AUTH_TC` or `AUTH_TS`.
        pub num: u8,
        /// The server's challenge (CHs).
        pub chal: [u8; CHALLEN],
        /// The user on the client.
        pub cuid: String,
        /// The user on the server.
        pub suid: String,
        /// The nonce key Kn, 256 bits.
        pub key: Zeroizing<[u8; NONCELEN]>,
    }

    impl std::fmt::Debug for Ticket {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("form1::Ticket")
                .field("num", &self.num)
                .field("cuid", &self.cuid)
                .field("suid", &self.suid)
                .finish_non_exhaustive()
        }
    }

    impl Ticket {
        /// convT2M with form 1: marshal and seal with a PAK key.
        pub fn seal(&self, pakkey: &[u8; 32]) -> Result<[u8; MAXTICKETLEN], Error> {
            let mut b = Zeroizing::new([0u8; 1 + CHALLEN + 2 * ANAMELEN + NONCELEN]);
            let p = put_ticket_head(&mut b[..], self.num, &self.chal, &self.cuid, &self.suid)?;
            b[p..p + NONCELEN].copy_from_slice(&self.key[..]);
            let v = form1_seal(&b[..], pakkey).map_err(|_| Error::Form1)?;
            let mut out = [0u8; MAXTICKETLEN];
            out.copy_from_slice(&v);
            Ok(out)
        }

        /// convM2T with form 1: unseal the first `MAXTICKETLEN` bytes of `buf`.
        /// A wrong key, a changed byte or a message that is not a form1 ticket
        /// fails as [`Error::Form1`].
        pub fn open(buf: &[u8], pakkey: &[u8; 32]) -> Result<Ticket, Error> {
            need("ticket", buf, MAXTICKETLEN)?;
            let buf = &buf[..MAXTICKETLEN];
            if !matches!(form1_check(buf), Some(AUTH_TC | AUTH_TS)) {
                return Err(Error::Form1);
            }
            let b = form1_open(buf, pakkey).map_err(|_| Error::Form1)?;
            let (num, chal, cuid, suid, p) = get_ticket_head(&b)?;
            let mut key = Zeroizing::new([0u8; NONCELEN]);
            key.copy_from_slice(&b[p..p + NONCELEN]);
            Ok(Ticket {
                num,
                chal,
                cuid,
                suid,
                key,
            })
        }
    }

    /// A dp9ik authenticator: proof of holding the ticket's key, bound to the
    /// peer's challenge, carrying a nonce for the session secret.
    #[derive(Clone, PartialEq, Eq)]
    pub struct Authenticator {
        /// `AUTH_AC` or `AUTH_AS`.
        pub num: u8,
        /// The peer's challenge.
        pub chal: [u8; CHALLEN],
        /// This side's nonce (RNc or RNs).
        pub rand: [u8; NONCELEN],
    }

    impl std::fmt::Debug for Authenticator {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("form1::Authenticator")
                .field("num", &self.num)
                .finish_non_exhaustive()
        }
    }

    impl Authenticator {
        /// convA2M with form 1: marshal and seal with the ticket's key.
        pub fn seal(&self, key: &[u8; NONCELEN]) -> Result<[u8; MAXAUTHENTLEN], Error> {
            let mut b = Zeroizing::new([0u8; 1 + CHALLEN + NONCELEN]);
            b[0] = self.num;
            b[1..1 + CHALLEN].copy_from_slice(&self.chal);
            b[1 + CHALLEN..].copy_from_slice(&self.rand);
            let v = form1_seal(&b[..], key).map_err(|_| Error::Form1)?;
            let mut out = [0u8; MAXAUTHENTLEN];
            out.copy_from_slice(&v);
            Ok(out)
        }

        /// convM2A with form 1: unseal the first `MAXAUTHENTLEN` bytes of `buf`.
        pub fn open(buf: &[u8], key: &[u8; NONCELEN]) -> Result<Authenticator, Error> {
            need("authenticator", buf, MAXAUTHENTLEN)?;
            let buf = &buf[..MAXAUTHENTLEN];
            if !matches!(form1_check(buf), Some(AUTH_AC | AUTH_AS)) {
                return Err(Error::Form1);
            }
            let b = form1_open(buf, key).map_err(|_| Error::Form1)?;
            let mut chal = [0u8; CHALLEN];
            chal.copy_from_slice(&b[1..1 + CHALLEN]);
            let mut rand = [0u8; NONCELEN];
            rand.copy_from_slice(&b[1 + CHALLEN..1 + CHALLEN + NONCELEN]);
            Ok(Authenticator {
                num: b[0],
                chal,
                rand,
            })
        }
    }

    /// The length of the ticket at the start of `buf` as the AS sends it: a form1
    /// ticket when its first 8 bytes are a form1 signature, else a DES one
    /// (9front's `_asgetticket`).
    pub fn ticket_wire_len(first8: &[u8]) -> usize {
        if form1_check(first8).is_some() {
            MAXTICKETLEN
        } else {
            TICKETLEN
        }
    }
}

/// Compare without an early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// The steps of p9sk1 (authsrv(6)) for each side, without the transport.
///
/// ```text
/// C→S: CHc
/// S→C: AuthTreq, IDs, DN, CHs, -, -
/// C→A: AuthTreq, IDs, DN, CHs, IDc, IDr
/// A→C: AuthOK, Kc{AuthTc, CHs, IDc, IDr, Kn}, Ks{AuthTs, CHs, IDc, IDr, Kn}
/// C→S: Ks{AuthTs, CHs, IDc, IDr, Kn}, Kn{AuthAc, CHs}
/// S→C: Kn{AuthAs, CHc}
/// ```
///
/// Errors carry Plan 9's strings: "key mismatch with auth server", "client
/// lies through his teeth", "server lies through his teeth".
pub mod p9sk1 {
    use super::*;

    /// Why a p9sk1 step failed, with Plan 9's error strings.
    #[derive(Debug, thiserror::Error, PartialEq, Eq)]
    pub enum P9sk1Error {
        /// Our key does not open the ticket, or the ticket is for another
        /// challenge (a replay).
        #[error("key mismatch with auth server")]
        KeyMismatch,
        /// The client's authenticator does not check.
        #[error("client lies through his teeth")]
        ClientLies,
        /// The server's authenticator does not check.
        #[error("server lies through his teeth")]
        ServerLies,
        /// A malformed or truncated message.
        #[error("{0}")]
        Format(#[from] Error),
    }

    /// A fresh random challenge.
    pub fn challenge() -> Result<[u8; CHALLEN], Error> {
        let mut c = [0u8; CHALLEN];
        random_bytes(&mut c)?;
        Ok(c)
    }

    /// Server, after reading CHc: the ticket request to send (with a fresh CHs).
    pub fn server_ticketreq(authid: &str, authdom: &str) -> Result<Ticketreq, Error> {
        check_name("authid", authid, ANAMELEN)?;
        check_name("authdom", authdom, DOMLEN)?;
        Ok(Ticketreq {
            typ: AUTH_TREQ,
            authid: authid.to_string(),
            authdom: authdom.to_string(),
            chal: challenge()?,
            hostid: String::new(),
            uid: String::new(),
        })
    }

    /// Client: complete the server's ticket request with our host id and the
    /// user we want to be, for the AS.
    pub fn client_ticketreq(server_tr: &[u8], hostid: &str, uid: &str) -> Result<Ticketreq, Error> {
        let mut tr = Ticketreq::from_bytes(server_tr)?;
        if tr.typ != AUTH_TREQ {
            return Err(Error::WrongType {
                what: "ticket request",
                want: AUTH_TREQ,
                got: tr.typ,
            });
        }
        check_name("hostid", hostid, ANAMELEN)?;
        check_name("uid", uid, ANAMELEN)?;
        tr.hostid = hostid.to_string();
        tr.uid = uid.to_string();
        Ok(tr)
    }

    /// Client, given the AS's two tickets (without the AuthOK byte): open ours
    /// with Kc and build the message for the server (its ticket and our
    /// authenticator).
    pub fn client_tickets(
        tr: &Ticketreq,
        tickets: &[u8],
        kc: &DesKey,
    ) -> Result<(Ticket, [u8; TICKETLEN + AUTHENTLEN]), P9sk1Error> {
        super::need("ticket pair", tickets, 2 * TICKETLEN)?;
        let t = match Ticket::open_checked(tickets, kc, AUTH_TC, &tr.chal) {
            Ok(t) => t,
            Err(Error::WrongType { .. } | Error::ChallengeMismatch { .. }) => {
                return Err(P9sk1Error::KeyMismatch);
            }
            Err(e) => return Err(e.into()),
        };
        let mut out = [0u8; TICKETLEN + AUTHENTLEN];
        out[..TICKETLEN].copy_from_slice(&tickets[TICKETLEN..2 * TICKETLEN]);
        let a = Authenticator {
            num: AUTH_AC,
            chal: tr.chal,
            id: 0,
        };
        out[TICKETLEN..].copy_from_slice(&a.seal(&t.key)?);
        Ok((t, out))
    }

    /// Server: check the client's ticket and authenticator with Ks against our
    /// CHs; return the ticket and our authenticator for CHc.
    pub fn server_check(
        tr: &Ticketreq,
        msg: &[u8],
        ks: &DesKey,
        cchal: &[u8; CHALLEN],
    ) -> Result<(Ticket, [u8; AUTHENTLEN]), P9sk1Error> {
        super::need("ticket and authenticator", msg, TICKETLEN + AUTHENTLEN)?;
        let t = match Ticket::open_checked(msg, ks, AUTH_TS, &tr.chal) {
            Ok(t) => t,
            Err(Error::WrongType { .. } | Error::ChallengeMismatch { .. }) => {
                return Err(P9sk1Error::KeyMismatch);
            }
            Err(e) => return Err(e.into()),
        };
        match Authenticator::open_checked(&msg[TICKETLEN..], &t.key, AUTH_AC, &tr.chal) {
            Ok(_) => {}
            Err(Error::WrongType { .. } | Error::ChallengeMismatch { .. }) => {
                return Err(P9sk1Error::ClientLies);
            }
            Err(e) => return Err(e.into()),
        }
        let a = Authenticator {
            num: AUTH_AS,
            chal: *cchal,
            id: 0,
        };
        let sealed = a.seal(&t.key)?;
        Ok((t, sealed))
    }

    /// Client: check the server's authenticator against our CHc.
    pub fn client_check(t: &Ticket, msg: &[u8], cchal: &[u8; CHALLEN]) -> Result<(), P9sk1Error> {
        match Authenticator::open_checked(msg, &t.key, AUTH_AS, cchal) {
            Ok(_) => Ok(()),
            Err(Error::WrongType { .. } | Error::ChallengeMismatch { .. }) => {
                Err(P9sk1Error::ServerLies)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The 8-byte session secret both sides share afterwards (`des56to64` of
    /// Kn, factotum's `secret=` attribute).
    pub fn secret(t: &Ticket) -> Zeroizing<[u8; 8]> {
        t.key.to_des64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(TICKREQLEN, 141);
        assert_eq!(TICKETLEN, 72);
        assert_eq!(AUTHENTLEN, 13);
        assert_eq!(PASSREQLEN, 90);
    }

    #[test]
    fn form1_structures() {
        assert_eq!(MAXTICKETLEN, 124);
        assert_eq!(MAXAUTHENTLEN, 68);
        let k = [7u8; 32];
        let t = form1::Ticket {
            num: AUTH_TS,
            chal: [1; CHALLEN],
            cuid: "glenda".into(),
            suid: "bootes".into(),
            key: Zeroizing::new([9; NONCELEN]),
        };
        let b = t.seal(&k).unwrap();
        assert_eq!(&b[..8], b"form1 Ts");
        assert_eq!(form1::ticket_wire_len(&b[..8]), MAXTICKETLEN);
        assert_eq!(form1::ticket_wire_len(&[0u8; 8]), TICKETLEN);
        assert_eq!(form1::Ticket::open(&b, &k).unwrap(), t);
        assert_eq!(
            form1::Ticket::open(&b, &[8u8; 32]).unwrap_err(),
            Error::Form1
        );
        for i in [0, 8, 12, 60, 123] {
            let mut c = b;
            c[i] ^= 4;
            assert!(form1::Ticket::open(&c, &k).is_err(), "byte {i}");
        }
        assert!(matches!(
            form1::Ticket::open(&b[..100], &k),
            Err(Error::Short { .. })
        ));
        let a = form1::Authenticator {
            num: AUTH_AC,
            chal: [2; CHALLEN],
            rand: [3; NONCELEN],
        };
        let ab = a.seal(&t.key).unwrap();
        assert_eq!(&ab[..8], b"form1 Ac");
        assert_eq!(form1::Authenticator::open(&ab, &t.key).unwrap(), a);
        // An authenticator is not a ticket, nor the other way round.
        assert!(form1::Ticket::open(&[&ab[..], &[0u8; 56]].concat(), &t.key).is_err());
        assert!(form1::Authenticator::open(&b, &k).is_err());
        let long = "x".repeat(ANAMELEN);
        let bad = form1::Ticket {
            cuid: long,
            ..t.clone()
        };
        assert!(bad.seal(&k).is_err());
    }

    #[test]
    fn des64_round_trip() {
        let k = DesKey::from_bytes([1, 2, 3, 4, 5, 6, 7]);
        let k64 = k.to_des64();
        assert_eq!(DesKey::from_des64(&k64), k);
        for b in k64.iter() {
            assert_eq!(b.count_ones() % 2, 1, "odd parity");
        }
    }

    #[test]
    fn debug_hides_key() {
        let k = DesKey::from_bytes([0x41; 7]);
        assert_eq!(format!("{k:?}"), "DesKey(<secret>)");
    }
}

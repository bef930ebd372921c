//! The cryptographic core of dp9ik, 9front's password-authenticated key exchange
//! (authsrv(6), "Password authenticated key exchange"; libauthsrv's authpak.c and
//! form1.c; passtokey.c), written from 9front's sources and man pages.
//!
//! # Construction
//!
//! * **Password to AES key** (`passtoaeskey` in passtokey.c):
//!   `aes = PBKDF2-HMAC-SHA1(password, "Plan 9 key derivation", 9001 rounds, 16 bytes)`.
//!   The password's bytes are taken as given (9front passes its C string).
//! * **Password hash to two points** (`authpak_hash`):
//!   `h = HKDF-SHA256(salt = SHA256(user), ikm = aes, info = "Plan 9 AuthPAK hash", 112 bytes)`;
//!   `PM = spake2ee_h2P(h[0..56])`, `PN = spake2ee_h2P(h[56..112])`, each 56-byte half read
//!   big-endian and reduced mod p. `spake2ee_h2P` is Elligator 2 (as in libsec's
//!   `elligator2.mp`) with the non-square `n`, the smallest `n >= 2` whose Legendre symbol
//!   is -1 (7 for this p). The pakhash is the four extended coordinates `X, Y, Z, T` of PM
//!   then of PN, each 56 bytes big-endian: 448 bytes, exactly as authpak.c lays it out.
//! * **Curve** (`ed448.mp`): Ed448-Goldilocks, `x^2 + y^2 = 1 - 39081 x^2 y^2` over
//!   `p = 2^448 - 2^224 - 1`, base point `(1178...8495, 19)`; extended twisted-Edwards
//!   coordinates and the unified addition of `edwards.mp` (Hisil-Wong-Carter-Dawson).
//!   Scalar multiplication computes the same multiple as `edwards_scale` (all 448 bits of
//!   the scalar) with dedicated doubling and a 4-bit window read by constant-time selects;
//!   multiples of the base point come from a table of `j * 16^i * G` (made once per
//!   process, some 320 KiB), one addition per 4 bits and no doubling. As Decaf encodings do
//!   not depend on the projective representation, only the group element matters for what
//!   goes on the wire.
//! * **Points on the wire** are Decaf encodings (`decaf.mp`, Hamburg's Decaf with a = 1):
//!   56 bytes big-endian of `s` with `0 <= s <= (p-1)/2`. Decoding rejects `s > (p-1)/2`
//!   (so also any value `>= p`) and any `s` for which `u*s^2` is not a square — those are
//!   not encodings of curve points. `s = 0` decodes to the identity, as 9front's does.
//! * **Exchange** (`authpak_new`, `authpak_finish`, with `spake2ee_1` / `spake2ee_2`):
//!   the client blinds with PM, the server with PN. Each side picks `x` uniformly in
//!   `[0, p)` (9front's `mpnrand(p)`), sends `y = encode(x*G + P_own)`, and on the peer's
//!   `y'` computes `z = encode(x * (decode(y') - P_peer))`, then
//!   `pakkey = HKDF-SHA256(salt = SHA256(y_client || y_server), ikm = z,
//!   info = "Plan 9 AuthPAK key", 32 bytes)`. The `x` and `x*G` of `authpak_new` depend
//!   on nothing else, so a thread at idle priority keeps a few ready (`Blinds`), each
//!   used once; an exchange adds `P_own` and encodes.
//! * **form1** (form1.c): a message whose first byte is its type (AuthTs, AuthTc, AuthAs,
//!   AuthAc, AuthTp, AuthHr, AuthPass) is sealed as `sig[8] || counter[4] (little-endian) ||
//!   ChaCha20-Poly1305(key, nonce = those 12 bytes, no AAD)(body) || tag[16]`, where `sig`
//!   is `"form1 Ts"` etc. and body is the message without its type byte. ccpoly.c with a
//!   12-byte IV is the RFC 8439 AEAD. Opening recognises the signature, checks the tag
//!   (constant time, in the AEAD crate) and gives back the type byte followed by the body.
//!
//! # What is and is not verified
//!
//! The byte layouts, labels, iteration counts and formulas follow the 9front sources named
//! above. The primitives (PBKDF2, HKDF, SHA-256, ChaCha20-Poly1305) are RustCrypto's and the
//! tests check the compositions against independent computations (Python's hashlib/hmac and
//! `cryptography`). The curve code is checked for internal consistency (points on the curve,
//! group laws, Decaf round trips, client/server agreement) and against an independent
//! transliteration of the `.mp` formulas into Python big integers (known answers in
//! `tests/pak_vectors.rs`). 9front publishes no known-answer values for AuthPAK, so agreement
//! with a real 9front peer has not been observed here.
//!
//! Field arithmetic is our own, branch-free, in eight 56-bit limbs with the reduction
//! 2^448 = 2^224 + 1 (mod p) and Karatsuba multiplication over 2^224; the tests check it
//! against `crypto-bigint`'s Montgomery arithmetic on edge values and random ones. The
//! exponentiations (square roots, inverses, Legendre symbols) are one addition chain for
//! (p-3)/4, checked against square-and-multiply. Secret-dependent choices use
//! constant-time selects; exponentiations use public exponents only. Secrets (AES key,
//! pakhash, ephemeral scalar, pakkey) are zeroed on drop.
//!
//! On a 2-core VM a client's or server's half of an exchange (`PakPriv::new` and `finish`)
//! takes some 0.35 ms, down from 1.8 ms with square-and-multiply, schoolbook
//! multiplication and no base table.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};
use crypto_bigint::{Encoding, U448};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeGreater};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ticket::{AUTH_AC, AUTH_AS, AUTH_HR, AUTH_PASS, AUTH_TC, AUTH_TP, AUTH_TS};

/// Length of the AES key derived from a password (AESKEYLEN).
pub const AESKEYLEN: usize = 16;
/// Length of the key a PAK exchange yields (PAKKEYLEN).
pub const PAKKEYLEN: usize = 32;
/// Length of one field element or scalar (PAKSLEN).
pub const PAKSLEN: usize = 56;
/// Length of one point in extended coordinates (PAKPLEN).
pub const PAKPLEN: usize = 4 * PAKSLEN;
/// Length of the pakhash, two points (PAKHASHLEN).
pub const PAKHASHLEN: usize = 2 * PAKPLEN;
/// Length of the secret scalar (PAKXLEN).
pub const PAKXLEN: usize = PAKSLEN;
/// Length of the public value (PAKYLEN).
pub const PAKYLEN: usize = PAKSLEN;
/// Bytes form1 adds to a message: 12 of signature and counter, 16 of tag, less the type byte.
pub const FORM1_OVERHEAD: usize = 12 + 16 - 1;

/// Errors of the PAK and form1 operations.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PakError {
    /// The peer's public value is not the encoding of a curve point.
    #[error("bad pak public value")]
    BadPoint,
    /// A scalar given to [`PakPriv::from_scalar`] was not below p, or was the wrong length.
    #[error("bad pak scalar")]
    BadScalar,
    /// The system's random source failed.
    #[error("no randomness: {0}")]
    Random(String),
    /// form1: unknown message type, too short, bad signature or failed authentication.
    #[error("form1 message corrupted")]
    Form1,
}

// ---------------------------------------------------------------------------
// The field GF(p), p = 2^448 - 2^224 - 1, in eight 56-bit limbs (the "Solinas trick":
// 2^448 = 2^224 + 1 mod p). Every operation is branch-free; results are kept weakly
// reduced (each limb below 2^57) and made canonical only by `retrieve`.

mod field {
    use super::{Choice, ConditionallySelectable, ConstantTimeEq, U448, Zeroize};
    use crypto_bigint::Encoding;
    use std::ops::{Add, AddAssign, Mul, Neg, Sub};

    const MASK: u64 = (1 << 56) - 1;
    /// 2p in limbs, added before a subtraction so that no limb goes negative.
    const TWO_P: [u64; 8] = [
        2 * MASK,
        2 * MASK,
        2 * MASK,
        2 * MASK,
        2 * MASK - 2,
        2 * MASK,
        2 * MASK,
        2 * MASK,
    ];

    #[derive(Clone, Copy, Default)]
    pub(super) struct Fe([u64; 8]);

    impl Fe {
        pub(super) const ZERO: Fe = Fe([0; 8]);
        pub(super) const ONE: Fe = Fe([1, 0, 0, 0, 0, 0, 0, 0]);
        /// The curve's d = -39081, as p - 39081.
        pub(super) const D: Fe = Fe([MASK - 39081, MASK, MASK, MASK, MASK - 1, MASK, MASK, MASK]);

        /// Any value below 2^448 (not necessarily below p).
        pub(super) fn new(v: &U448) -> Fe {
            let b = v.to_le_bytes();
            let mut l = [0u64; 8];
            for (i, limb) in l.iter_mut().enumerate() {
                let mut w = [0u8; 8];
                w[..7].copy_from_slice(&b[7 * i..7 * i + 7]);
                *limb = u64::from_le_bytes(w);
            }
            Fe(l)
        }

        /// One carry pass for limbs below 2^59: afterwards limbs 1..3 and 5..7 are below 2^56
        /// and limbs 0 and 4 below 2^56 + 8.
        fn carry64(l: [u64; 8]) -> Fe {
            let mut l = l;
            let mut carry = 0u64;
            for limb in l.iter_mut() {
                *limb += carry;
                carry = *limb >> 56;
                *limb &= MASK;
            }
            l[0] += carry;
            l[4] += carry;
            Fe(l)
        }

        /// self^2: Karatsuba over 2^224 as in `mul`, each half squared with its cross
        /// products computed once.
        pub(super) fn square(&self) -> Fe {
            let (a0, a1) = halves(&self.0);
            let sa: [u64; 4] = std::array::from_fn(|i| a0[i] + a1[i]);
            let (p00, p11, m) = (sqr4(&a0), sqr4(&a1), sqr4(&sa));
            Fe::combine(&p00, &p11, &m)
        }

        /// self^(2^n): n squarings.
        pub(super) fn sqn(&self, n: usize) -> Fe {
            let mut r = *self;
            for _ in 0..n {
                r = r.square();
            }
            r
        }

        /// a*b from the three half products of Karatsuba over phi = 2^224, with
        /// a = A0 + A1 phi and b = B0 + B1 phi: as p = phi^2 - phi - 1, phi^2 is
        /// phi + 1 and a*b = (A0B0 + A1B1) + ((A0+A1)(B0+B1) - A0B0) phi.
        fn combine(p00: &[u128; 7], p11: &[u128; 7], m: &[u128; 7]) -> Fe {
            let mut w = [0u128; 15];
            for k in 0..7 {
                w[k] += p00[k] + p11[k];
                // Column by column m >= p00: every term of p00 is a term of m.
                w[k + 4] += m[k] - p00[k];
            }
            Fe::reduce_wide(w)
        }

        /// Columns of 56-bit weight (each below 2^121) reduced to 8 limbs below 2^57.
        fn reduce_wide(mut w: [u128; 15]) -> Fe {
            // 2^(56k) for k >= 8 is 2^(56(k-8)) * (2^224 + 1).
            for k in (8..15).rev() {
                let v = w[k];
                w[k - 4] += v;
                w[k - 8] += v;
            }
            // One carry pass leaves limbs below 2^56 and a carry below 2^67 out of
            // the top, which goes into limbs 0 and 4 (2^448 = 2^224 + 1); their own
            // carries, below 2^12, go one limb up.
            let mut carry = 0u128;
            for limb in w[..8].iter_mut() {
                *limb += carry;
                carry = *limb >> 56;
                *limb &= MASK as u128;
            }
            w[0] += carry;
            w[4] += carry;
            let c0 = w[0] >> 56;
            w[0] &= MASK as u128;
            w[1] += c0;
            let c4 = w[4] >> 56;
            w[4] &= MASK as u128;
            w[5] += c4;
            Fe(std::array::from_fn(|i| w[i] as u64))
        }

        /// The canonical value, below p.
        pub(super) fn retrieve(&self) -> U448 {
            // Limbs strictly below 2^56, value below 2^448 < 2p.
            let mut l = self.0;
            for _ in 0..3 {
                let mut carry = 0u64;
                for limb in l.iter_mut() {
                    *limb += carry;
                    carry = *limb >> 56;
                    *limb &= MASK;
                }
                l[0] += carry;
                l[4] += carry;
            }
            // Subtract p if the value is at least p.
            let p = [MASK, MASK, MASK, MASK, MASK - 1, MASK, MASK, MASK];
            let mut d = [0u64; 8];
            let mut borrow = 0u64;
            for i in 0..8 {
                let v = l[i].wrapping_sub(p[i]).wrapping_sub(borrow);
                borrow = v >> 63;
                d[i] = v & MASK;
            }
            let ge = Choice::from((borrow ^ 1) as u8);
            let mut bytes = [0u8; 56];
            for i in 0..8 {
                let v = u64::conditional_select(&l[i], &d[i], ge);
                bytes[7 * i..7 * i + 7].copy_from_slice(&v.to_le_bytes()[..7]);
            }
            let r = U448::from_le_bytes(bytes);
            bytes.zeroize();
            l.zeroize();
            d.zeroize();
            r
        }

        /// self^e for a public exponent e (the plain square-and-multiply the
        /// addition chains are checked against).
        #[cfg(test)]
        pub(super) fn pow(&self, e: &U448) -> Fe {
            let eb = e.to_le_bytes();
            let mut acc = Fe::ONE;
            for i in (0..448).rev() {
                acc = acc.square();
                if (eb[i / 8] >> (i % 8)) & 1 == 1 {
                    acc = acc * *self;
                }
            }
            acc
        }

        /// 1/self (0 for 0), and whether self was non-zero: self^(p-2), as
        /// self^((p-3)/4) squared twice times self.
        pub(super) fn invert(&self) -> (Fe, Choice) {
            (
                super::pow_isqrt(self).sqn(2) * *self,
                !self.ct_eq(&Fe::ZERO),
            )
        }

        pub(super) fn zeroize(&mut self) {
            self.0.zeroize();
        }
    }

    impl ConstantTimeEq for Fe {
        fn ct_eq(&self, o: &Fe) -> Choice {
            self.retrieve().ct_eq(&o.retrieve())
        }
    }

    impl PartialEq for Fe {
        fn eq(&self, o: &Fe) -> bool {
            self.ct_eq(o).into()
        }
    }

    impl std::fmt::Debug for Fe {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Fe(..)")
        }
    }

    impl ConditionallySelectable for Fe {
        fn conditional_select(a: &Fe, b: &Fe, choice: Choice) -> Fe {
            let mut out = [0u64; 8];
            for (i, o) in out.iter_mut().enumerate() {
                *o = u64::conditional_select(&a.0[i], &b.0[i], choice);
            }
            Fe(out)
        }
    }

    impl Add for Fe {
        type Output = Fe;
        fn add(self, o: Fe) -> Fe {
            let mut l = [0u64; 8];
            for (i, v) in l.iter_mut().enumerate() {
                *v = self.0[i] + o.0[i];
            }
            Fe::carry64(l)
        }
    }

    impl AddAssign for Fe {
        fn add_assign(&mut self, o: Fe) {
            *self = *self + o;
        }
    }

    impl Sub for Fe {
        type Output = Fe;
        fn sub(self, o: Fe) -> Fe {
            let mut l = [0u64; 8];
            for (i, v) in l.iter_mut().enumerate() {
                *v = self.0[i] + TWO_P[i] - o.0[i];
            }
            Fe::carry64(l)
        }
    }

    impl Neg for Fe {
        type Output = Fe;
        fn neg(self) -> Fe {
            Fe::ZERO - self
        }
    }

    impl Mul for Fe {
        type Output = Fe;
        fn mul(self, o: Fe) -> Fe {
            let (a0, a1) = halves(&self.0);
            let (b0, b1) = halves(&o.0);
            let sa: [u64; 4] = std::array::from_fn(|i| a0[i] + a1[i]);
            let sb: [u64; 4] = std::array::from_fn(|i| b0[i] + b1[i]);
            let (p00, p11, m) = (mul4(&a0, &b0), mul4(&a1, &b1), mul4(&sa, &sb));
            Fe::combine(&p00, &p11, &m)
        }
    }

    /// The low and high four limbs.
    #[inline(always)]
    fn halves(l: &[u64; 8]) -> ([u64; 4], [u64; 4]) {
        ([l[0], l[1], l[2], l[3]], [l[4], l[5], l[6], l[7]])
    }

    /// The 7 columns of a 4-limb product (limbs below 2^58: columns below 2^118).
    #[inline(always)]
    fn mul4(a: &[u64; 4], b: &[u64; 4]) -> [u128; 7] {
        let mut w = [0u128; 7];
        for i in 0..4 {
            for j in 0..4 {
                w[i + j] += a[i] as u128 * b[j] as u128;
            }
        }
        w
    }

    /// The 7 columns of a 4-limb square.
    #[inline(always)]
    fn sqr4(a: &[u64; 4]) -> [u128; 7] {
        let mut w = [0u128; 7];
        for i in 0..4 {
            let ai = a[i] as u128;
            w[2 * i] += ai * ai;
            let d = ai << 1;
            for j in i + 1..4 {
                w[i + j] += d * a[j] as u128;
            }
        }
        w
    }
}

use field::Fe;

const P_HEX: &str = "fffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

const P: U448 = U448::from_be_hex(P_HEX);
/// (p-1)/2: the largest "non-negative" value for Decaf's sign convention.
const HALF_P: U448 = P.shr_vartime(1);
/// (p+1)/4: a^((p+1)/4) is a square root of a square a, as p = 3 mod 4.
#[cfg(test)]
const EXP_SQRT: U448 = P.wrapping_add(&U448::ONE).shr_vartime(2);
/// (p-3)/4: misqrt's exponent.
#[cfg(test)]
const EXP_ISQRT: U448 = P.wrapping_sub(&U448::from_u64(3)).shr_vartime(2);
/// (p-1)/2 as a Legendre-symbol exponent.
#[cfg(test)]
const EXP_LEGENDRE: U448 = HALF_P;

/// The curve's d is -39081; the smallest non-square is 7.
#[cfg(test)]
const MINUS_D: u64 = 39081;
pub(crate) const NONSQUARE: u64 = 7;

const BASE_X: U448 = U448::from_be_hex(
    "297ea0ea2692ff1b4faff46098453a6a26adf733245f065c3c59d0709cecfa96147eaaf3932d94c63d96c170033f4ba0c7f0de840aed939f",
);
const BASE_Y: u64 = 19;

fn fe(v: u64) -> Fe {
    Fe::new(&U448::from_u64(v))
}

fn fe_d() -> Fe {
    Fe::D
}

/// A 56-byte big-endian value reduced mod p (betomp then mpmod).
fn fe_from_be(b: &[u8; PAKSLEN]) -> Fe {
    Fe::new(&U448::from_be_slice(b))
}

fn fe_to_be(a: &Fe) -> [u8; PAKSLEN] {
    a.retrieve().to_be_bytes()
}

fn is_zero(a: &Fe) -> Choice {
    a.ct_eq(&Fe::ZERO)
}

/// a^((p-3)/4) by an addition chain: (p-3)/4 = 2^446 - 2^222 - 1 is 223 ones, a
/// zero and 222 ones in binary, so 446 squarings and 13 multiplications do it
/// (square-and-multiply takes some 440 multiplications more). Every exponent the
/// curve code needs is this one and a step: a^((p+1)/4) = a * a^((p-3)/4),
/// a^((p-1)/2) = a * (a^((p-3)/4))^2, a^(p-2) = a * (a^((p-3)/4))^4.
fn pow_isqrt(a: &Fe) -> Fe {
    // a_k = a^(2^k - 1); a_m^(2^n) * a_n = a_(m+n).
    let a1 = *a;
    let a2 = a1.square() * a1;
    let a3 = a2.square() * a1;
    let a6 = a3.sqn(3) * a3;
    let a12 = a6.sqn(6) * a6;
    let a24 = a12.sqn(12) * a12;
    let a30 = a24.sqn(6) * a6;
    let a48 = a24.sqn(24) * a24;
    let a96 = a48.sqn(48) * a48;
    let a192 = a96.sqn(96) * a96;
    let a222 = a192.sqn(30) * a30;
    let a223 = a222.square() * a1;
    a223.sqn(223) * a222
}

/// For a: a^((p-3)/4), the square root a^((p+1)/4) and the Legendre symbol
/// a^((p-1)/2), from one exponentiation.
fn isqrt_root_legendre(a: &Fe) -> (Fe, Fe, Fe) {
    let isr = pow_isqrt(a);
    let root = *a * isr;
    let l = root * isr;
    (isr, root, l)
}

/// msqrt: a^((p+1)/4) when a is a non-zero square, else 0.
#[cfg(test)]
fn msqrt(a: &Fe) -> Fe {
    let (_, root, l) = isqrt_root_legendre(a);
    Fe::conditional_select(&Fe::ZERO, &root, l.ct_eq(&Fe::ONE))
}

/// misqrt: a^((p-3)/4), 1/sqrt(a) when a is a square (p = 3 mod 4).
fn misqrt(a: &Fe) -> Fe {
    pow_isqrt(a)
}

/// misqrt of the non-square n, a constant.
fn n_isqrt() -> Fe {
    static N: OnceLock<[u8; PAKSLEN]> = OnceLock::new();
    fe_from_be(N.get_or_init(|| fe_to_be(&misqrt(&fe(NONSQUARE)))))
}

/// decaf_neg: r, negated when n > (p-1)/2.
fn neg_if_high(n: &Fe, r: &Fe) -> Fe {
    let high = n.retrieve().ct_gt(&HALF_P);
    Fe::conditional_select(r, &-*r, high)
}

// ---------------------------------------------------------------------------
// Points in extended coordinates (x = X/Z, y = Y/Z, x*y = T/Z).

#[derive(Clone, Copy)]
struct Point {
    x: Fe,
    y: Fe,
    z: Fe,
    t: Fe,
}

impl Zeroize for Point {
    fn zeroize(&mut self) {
        for c in [&mut self.x, &mut self.y, &mut self.z, &mut self.t] {
            c.zeroize();
        }
    }
}

impl Point {
    fn identity() -> Point {
        Point {
            x: Fe::ZERO,
            y: Fe::ONE,
            z: Fe::ONE,
            t: Fe::ZERO,
        }
    }

    fn base() -> Point {
        let x = Fe::new(&BASE_X);
        let y = fe(BASE_Y);
        Point {
            x,
            y,
            z: Fe::ONE,
            t: x * y,
        }
    }

    /// edwards_add with a = 1.
    fn add(&self, o: &Point) -> Point {
        let a = self.x * o.x;
        let b = self.y * o.y;
        let c = fe_d() * self.t * o.t;
        let d = self.z * o.z;
        let e = (self.x + self.y) * (o.x + o.y) - a - b;
        let f = d - c;
        let g = d + c;
        let h = b - a;
        Point {
            x: e * f,
            y: g * h,
            z: f * g,
            t: e * h,
        }
    }

    fn neg(&self) -> Point {
        Point {
            x: -self.x,
            y: self.y,
            z: self.z,
            t: -self.t,
        }
    }

    fn select(a: &Point, b: &Point, choice: Choice) -> Point {
        Point {
            x: Fe::conditional_select(&a.x, &b.x, choice),
            y: Fe::conditional_select(&a.y, &b.y, choice),
            z: Fe::conditional_select(&a.z, &b.z, choice),
            t: Fe::conditional_select(&a.t, &b.t, choice),
        }
    }

    /// The same point as `self.add(self)`, with the cheaper doubling formulas (a = 1).
    fn double(&self) -> Point {
        self.double_t(true)
    }

    /// Doubling, with T left zero unless asked for: doubling does not read T, so
    /// a run of doublings needs it only from the last.
    fn double_t(&self, with_t: bool) -> Point {
        let a = self.x.square();
        let b = self.y.square();
        let zz = self.z.square();
        let c = zz + zz;
        let e = (self.x + self.y).square() - a - b;
        let g = a + b;
        let f = g - c;
        let h = a - b;
        Point {
            x: e * f,
            y: g * h,
            z: f * g,
            t: if with_t { e * h } else { Fe::ZERO },
        }
    }

    /// self + q for a table point q with Z = 1 (the same unified formula as `add`,
    /// with q's d*T precomputed).
    fn add_affine(&self, q: &Affine) -> Point {
        let a = self.x * q.x;
        let b = self.y * q.y;
        let c = self.t * q.dt;
        let d = self.z;
        let e = (self.x + self.y) * (q.x + q.y) - a - b;
        let f = d - c;
        let g = d + c;
        let h = b - a;
        Point {
            x: e * f,
            y: g * h,
            z: f * g,
            t: e * h,
        }
    }

    /// s*P for a 448-bit s (56 bytes big-endian), as edwards_scale computes it, in a fixed
    /// sequence of operations: a 4-bit window with constant-time table lookups.
    fn scale(&self, s: &[u8; PAKSLEN]) -> Point {
        let mut table = [Point::identity(); 16];
        table[1] = *self;
        for i in 2..16 {
            table[i] = if i % 2 == 0 {
                table[i / 2].double()
            } else {
                table[i - 1].add(self)
            };
        }
        let mut acc = Point::identity();
        for byte in s.iter() {
            for nibble in [byte >> 4, byte & 15] {
                acc = acc
                    .double_t(false)
                    .double_t(false)
                    .double_t(false)
                    .double_t(true);
                let mut pick = Point::identity();
                for (i, entry) in table.iter().enumerate() {
                    pick = Point::select(&pick, entry, (i as u8).ct_eq(&nibble));
                }
                acc = acc.add(&pick);
                pick.zeroize();
            }
        }
        for entry in table.iter_mut() {
            entry.zeroize();
        }
        acc
    }

    /// s*G for the base point G, s any 448 bits (56 bytes big-endian): the same
    /// multiple as `Point::base().scale(s)`, from a table of j * 16^i * G, one
    /// addition per 4 bits and no doubling; table entries are read by
    /// constant-time selects.
    fn scale_base(s: &[u8; PAKSLEN]) -> Point {
        let table = base_table();
        let mut acc = Point::identity();
        for (i, row) in table.iter().enumerate() {
            // The i-th nibble from the least significant end.
            let byte = s[PAKSLEN - 1 - i / 2];
            let nibble = if i % 2 == 0 { byte & 15 } else { byte >> 4 };
            let mut pick = Affine::IDENTITY;
            for (j, entry) in row.iter().enumerate() {
                pick = Affine::select(&pick, entry, ((j + 1) as u8).ct_eq(&nibble));
            }
            acc = acc.add_affine(&pick);
            pick.zeroize();
        }
        acc
    }

    /// Whether the point satisfies X^2 + Y^2 = Z^2 + d*T^2 and X*Y = Z*T with Z != 0.
    #[cfg(test)]
    fn on_curve(&self) -> bool {
        let lhs = self.x.square() + self.y.square();
        let rhs = self.z.square() + fe_d() * self.t.square();
        bool::from(
            lhs.ct_eq(&rhs) & (self.x * self.y).ct_eq(&(self.z * self.t)) & !is_zero(&self.z),
        )
    }

    fn to_bytes(self) -> [u8; PAKPLEN] {
        let mut out = [0u8; PAKPLEN];
        for (i, c) in [self.x, self.y, self.z, self.t].iter().enumerate() {
            out[i * PAKSLEN..(i + 1) * PAKSLEN].copy_from_slice(&fe_to_be(c));
        }
        out
    }

    fn from_bytes(b: &[u8; PAKPLEN]) -> Point {
        let c = |i: usize| {
            let mut w = [0u8; PAKSLEN];
            w.copy_from_slice(&b[i * PAKSLEN..(i + 1) * PAKSLEN]);
            let v = fe_from_be(&w);
            w.zeroize();
            v
        };
        Point {
            x: c(0),
            y: c(1),
            z: c(2),
            t: c(3),
        }
    }
}

/// A point with Z = 1 as the base table keeps it: x, y and d*x*y.
#[derive(Clone, Copy)]
struct Affine {
    x: Fe,
    y: Fe,
    dt: Fe,
}

impl Affine {
    const IDENTITY: Affine = Affine {
        x: Fe::ZERO,
        y: Fe::ONE,
        dt: Fe::ZERO,
    };

    fn select(a: &Affine, b: &Affine, choice: Choice) -> Affine {
        Affine {
            x: Fe::conditional_select(&a.x, &b.x, choice),
            y: Fe::conditional_select(&a.y, &b.y, choice),
            dt: Fe::conditional_select(&a.dt, &b.dt, choice),
        }
    }

    fn zeroize(&mut self) {
        self.x.zeroize();
        self.y.zeroize();
        self.dt.zeroize();
    }
}

/// Nibbles in a 448-bit scalar.
const NIBBLES: usize = 2 * PAKSLEN;

/// The base table: row i holds j * 16^i * G for j = 1..15. 112 rows of 15 points of
/// three 64-byte elements, some 320 KiB, made on first use (a few milliseconds,
/// once per process).
fn base_table() -> &'static [[Affine; 15]; NIBBLES] {
    static TABLE: OnceLock<Box<[[Affine; 15]; NIBBLES]>> = OnceLock::new();
    TABLE.get_or_init(|| {
        // Projective points first, row by row: 16^(i+1) G = 2 * (8 * 16^i G).
        let mut pts: Vec<Point> = Vec::with_capacity(15 * NIBBLES);
        let mut p = Point::base();
        for _ in 0..NIBBLES {
            let row = pts.len();
            pts.push(p);
            for j in 1..15 {
                let q = pts[row + j - 1].add(&p);
                pts.push(q);
            }
            p = pts[row + 7].double();
        }
        // Then Z = 1 with one inversion for all (Montgomery's trick).
        let mut prefix = Vec::with_capacity(pts.len());
        let mut acc = Fe::ONE;
        for q in &pts {
            prefix.push(acc);
            acc = acc * q.z;
        }
        let (mut inv, _) = acc.invert();
        let rows = vec![[Affine::IDENTITY; 15]; NIBBLES].into_boxed_slice();
        let mut table: Box<[[Affine; 15]; NIBBLES]> = match rows.try_into() {
            Ok(t) => t,
            Err(_) => unreachable!("the table has NIBBLES rows"),
        };
        for k in (0..pts.len()).rev() {
            let zi = inv * prefix[k];
            inv = inv * pts[k].z;
            let x = pts[k].x * zi;
            let y = pts[k].y * zi;
            table[k / 15][k % 15] = Affine {
                x,
                y,
                dt: fe_d() * x * y,
            };
        }
        table
    })
}

/// Make the base table now (say, in a thread at start), rather than in the first
/// exchange, and start keeping ephemeral values ready (see [`Blinds`]). Call it
/// after any fork: the thread that keeps them does not survive one.
pub fn warm_up() {
    base_table();
    Blinds::get();
}

// ---------------------------------------------------------------------------
// Ephemeral values made ahead of need.

/// An ephemeral scalar x, uniform in [0, p), and x*G: the part of authpak_new that
/// depends on neither the key nor the peer.
struct Blind {
    x: [u8; PAKXLEN],
    xg: Point,
}

impl Blind {
    fn fresh() -> Result<Blind, PakError> {
        let mut x = [0u8; PAKXLEN];
        loop {
            if let Err(e) = getrandom::fill(&mut x[..]) {
                x.zeroize();
                return Err(PakError::Random(e.to_string()));
            }
            if bool::from(P.ct_gt(&U448::from_be_slice(&x[..]))) {
                let xg = Point::scale_base(&x);
                return Ok(Blind { x, xg });
            }
        }
    }
}

impl Drop for Blind {
    fn drop(&mut self) {
        self.x.zeroize();
        self.xg.zeroize();
    }
}

/// How many blinds are kept ready. A full handshake uses one in each factotum and
/// two in the auth server; a few more cover a burst.
const BLINDS: usize = 4;

/// Blinds made by a thread of their own while the process waits on the network, so
/// that an exchange has only the key-dependent addition and the encoding to do on
/// its way (some 100 microseconds less per side on the machine this was measured
/// on). Each blind is used once and zeroed when taken or dropped; the thread starts
/// on first use (or [`warm_up`]) and refills the store whenever one is taken.
struct Blinds {
    ready: std::sync::Mutex<Vec<Blind>>,
    taken: std::sync::Condvar,
    /// The process the store belongs to. A child forked from it would hold the same
    /// blinds as its parent: it never uses them.
    pid: u32,
}

impl Blinds {
    fn get() -> &'static Blinds {
        static B: OnceLock<Blinds> = OnceLock::new();
        B.get_or_init(|| {
            // Without the thread (it could not be made) every exchange makes its
            // own blind, as `take` does when the store is empty.
            let _ = std::thread::Builder::new()
                .name("pak-blinds".into())
                .spawn(|| Blinds::get().refill());
            Blinds {
                ready: std::sync::Mutex::new(Vec::with_capacity(BLINDS)),
                taken: std::sync::Condvar::new(),
                pid: std::process::id(),
            }
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Blind>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A blind from the store, or a new one made now when the store is empty (or
    /// is a forked parent's).
    fn take(&self) -> Result<Blind, PakError> {
        if std::process::id() != self.pid {
            return Blind::fresh();
        }
        let got = self.lock().pop();
        self.taken.notify_one();
        match got {
            Some(b) => Ok(b),
            None => Blind::fresh(),
        }
    }

    /// The keeping thread: top the store up, then sleep until one is taken. It runs
    /// only when a CPU would otherwise be idle (SCHED_IDLE), so it never competes
    /// with an exchange in progress, which is when blinds are taken.
    fn refill(&self) {
        let idle = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is this thread; the parameter is a plain struct. Failing
        // leaves the thread at normal priority, which is only slower.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) };
        base_table();
        loop {
            {
                let mut ready = self.lock();
                while ready.len() >= BLINDS {
                    ready = self.taken.wait(ready).unwrap_or_else(|p| p.into_inner());
                }
            }
            // Made outside the lock: a taker never waits for the arithmetic.
            match Blind::fresh() {
                Ok(b) => self.lock().push(b),
                // The random source failed: stop; exchanges make their own and
                // report the failure themselves.
                Err(_) => return,
            }
        }
    }
}

/// elligator2 (a = 1, d = -39081, non-square n): a curve point for the field element r0.
fn elligator2(r0: &Fe) -> Point {
    let one = Fe::ONE;
    let d = fe_d();
    let n = fe(NONSQUARE);
    let a_2d = one - (d + d);
    let r = n * *r0 * *r0;
    let den = (d * r + one - d) * (d * r - r - d);
    let num = (r + one) * a_2d;
    let nd = num * den;

    let nd_zero = is_zero(&nd);
    // One exponentiation for all three: when ND is a non-zero square its root is
    // ND^((p+1)/4) and 1/root is ND^((p-3)/4); and misqrt(n*ND) is
    // misqrt(n) * misqrt(ND).
    let (isr, _, l) = isqrt_root_legendre(&nd);
    let root_ok = l.ct_eq(&Fe::ONE);
    let inv_root = isr;
    let e_nonsq = n * *r0 * (n_isqrt() * isr);
    // ND == 0: c = 1, e = 0; ND square: c = 1, e = 1/sqrt(ND); else c = -1, e = n*r0*misqrt(n*ND).
    let mut e = Fe::conditional_select(&e_nonsq, &inv_root, root_ok);
    e = Fe::conditional_select(&e, &Fe::ZERO, nd_zero);
    let c = Fe::conditional_select(&-one, &one, root_ok | nd_zero);

    let s = c * num * e;
    let t = -(c * num * (r - one) * (a_2d * e).square()) - one;
    let ss = s.square();
    Point {
        x: (s + s) * t,
        y: (one - ss) * (one + ss),
        z: (one + ss) * t,
        t: (s + s) * (one - ss),
    }
}

/// spake2ee_h2P: the point for a 56-byte big-endian hash.
fn hash_to_point(h: &[u8; PAKSLEN]) -> Point {
    elligator2(&fe_from_be(h))
}

/// decaf_encode with a = 1.
fn decaf_encode(p: &Point) -> [u8; PAKSLEN] {
    let one_d = Fe::ONE - fe_d();
    let mut r = misqrt(&(one_d * (p.z + p.y) * (p.z - p.y)));
    let u = one_d * r;
    let n = -((u + u) * p.z);
    r = neg_if_high(&n, &r);
    let s = u * (r * (p.z * p.x - fe_d() * p.y * p.t) + p.y);
    fe_to_be(&neg_if_high(&s, &s))
}

/// decaf_decode with a = 1: None when the bytes encode no point.
fn decaf_decode(b: &[u8; PAKSLEN]) -> Option<Point> {
    let sv = U448::from_be_slice(b);
    if bool::from(sv.ct_gt(&HALF_P)) {
        return None;
    }
    let s = Fe::new(&sv);
    let ss = s.square();
    let z = Fe::ONE + ss;
    let u = z.square() - fe(4) * fe_d() * ss;
    let mut v = u * ss;
    if !bool::from(is_zero(&v)) {
        // 1/sqrt(v), which is v^((p-3)/4) when v is a square; not a point if not.
        let (isr, _, l) = isqrt_root_legendre(&v);
        if !bool::from(l.ct_eq(&Fe::ONE)) {
            return None;
        }
        v = isr;
    }
    v = neg_if_high(&(u * v), &v);
    let mut w = v * s * (fe(2) - z);
    if bool::from(is_zero(&s)) {
        w += Fe::ONE;
    }
    let x = s + s;
    Some(Point {
        x,
        y: w * z,
        z,
        t: w * x,
    })
}

// ---------------------------------------------------------------------------
// Keys.

/// The AES key 9front derives from a password (Authkey.aes).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AesKey(pub [u8; AESKEYLEN]);

impl AesKey {
    /// Parse 32 hex digits (factotum's `!hex=` for dp9ik, the AS's key files).
    pub fn from_hex(s: &str) -> Option<AesKey> {
        let s = s.trim().as_bytes();
        if s.len() != 2 * AESKEYLEN {
            return None;
        }
        let d = |c: u8| (c as char).to_digit(16).map(|v| v as u8);
        let mut k = AesKey([0u8; AESKEYLEN]);
        for (i, pair) in s.chunks(2).enumerate() {
            k.0[i] = (d(pair[0])? << 4) | d(pair[1])?;
        }
        Some(k)
    }

    /// The key as 32 lower-case hex digits (a secret).
    pub fn to_hex(&self) -> Zeroizing<String> {
        const H: &[u8; 16] = b"0123456789abcdef";
        let mut s = Zeroizing::new(String::with_capacity(2 * AESKEYLEN));
        for b in self.0 {
            s.push(char::from(H[usize::from(b >> 4)]));
            s.push(char::from(H[usize::from(b & 15)]));
        }
        s
    }

    /// Whether the key is all zeros (9front's mark of a user without one).
    pub fn is_zero(&self) -> bool {
        bool::from(self.0.ct_eq(&[0u8; AESKEYLEN]))
    }
}

impl PartialEq for AesKey {
    fn eq(&self, o: &AesKey) -> bool {
        self.0.ct_eq(&o.0).into()
    }
}
impl Eq for AesKey {}

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey(..)")
    }
}

/// passtoaeskey: PBKDF2-HMAC-SHA1(password, "Plan 9 key derivation", 9001, 16).
pub fn passtoaeskey(password: &[u8]) -> AesKey {
    let mut k = [0u8; AESKEYLEN];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(password, b"Plan 9 key derivation", 9001, &mut k);
    let key = AesKey(k);
    k.zeroize();
    key
}

/// The two blinding points of a user's password (Authkey.pakhash): PM then PN, each as
/// X, Y, Z, T, 56 bytes big-endian apiece.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PakHash(pub [u8; PAKHASHLEN]);

impl PakHash {
    fn point(&self, which: usize) -> Point {
        let mut b = [0u8; PAKPLEN];
        b.copy_from_slice(&self.0[which * PAKPLEN..(which + 1) * PAKPLEN]);
        let p = Point::from_bytes(&b);
        b.zeroize();
        p
    }
}

/// authpak_hash: the pakhash of a password's AES key for user `user`.
pub fn authpak_hash(aes: &AesKey, user: &[u8]) -> PakHash {
    let salt = Sha256::digest(user);
    let mut h = Zeroizing::new([0u8; 2 * PAKSLEN]);
    let hk = Hkdf::<Sha256>::new(Some(&salt), &aes.0);
    // 112 bytes is far below HKDF-SHA256's limit of 255*32; expand cannot fail.
    if hk.expand(b"Plan 9 AuthPAK hash", &mut h[..]).is_err() {
        unreachable!("HKDF output length is fixed and valid");
    }
    let mut out = PakHash([0u8; PAKHASHLEN]);
    for i in 0..2 {
        let mut hi = [0u8; PAKSLEN];
        hi.copy_from_slice(&h[i * PAKSLEN..(i + 1) * PAKSLEN]);
        let mut pt = hash_to_point(&hi);
        out.0[i * PAKPLEN..(i + 1) * PAKPLEN].copy_from_slice(&pt.to_bytes());
        pt.zeroize();
        hi.zeroize();
    }
    out
}

/// The key a PAK exchange yields (Authkey.pakkey).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PakKey(pub [u8; PAKKEYLEN]);

impl PartialEq for PakKey {
    fn eq(&self, o: &PakKey) -> bool {
        self.0.ct_eq(&o.0).into()
    }
}
impl Eq for PakKey {}

impl std::fmt::Debug for PakKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PakKey(..)")
    }
}

/// One side's state between authpak_new and authpak_finish (PAKpriv).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PakPriv {
    x: [u8; PAKXLEN],
    y: [u8; PAKYLEN],
    is_client: bool,
}

impl std::fmt::Debug for PakPriv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PakPriv")
            .field("is_client", &self.is_client)
            .finish_non_exhaustive()
    }
}

impl PakPriv {
    /// authpak_new: a fresh random scalar in [0, p) and our public value y, to send.
    pub fn new(hash: &PakHash, is_client: bool) -> Result<PakPriv, PakError> {
        let b = Blinds::get().take()?;
        Ok(Self::blinded(hash, &b, is_client))
    }

    /// authpak_new with a given scalar x (56 bytes big-endian, below p): for tests and
    /// known-answer checks.
    pub fn from_scalar(hash: &PakHash, x: &[u8], is_client: bool) -> Result<PakPriv, PakError> {
        let xb: [u8; PAKXLEN] = x.try_into().map_err(|_| PakError::BadScalar)?;
        if !bool::from(P.ct_gt(&U448::from_be_slice(&xb))) {
            return Err(PakError::BadScalar);
        }
        let b = Blind {
            x: xb,
            xg: Point::scale_base(&xb),
        };
        Ok(Self::blinded(hash, &b, is_client))
    }

    /// y = encode(x*G + P_own) for the blind's x.
    fn blinded(hash: &PakHash, b: &Blind, is_client: bool) -> PakPriv {
        let mut own = hash.point(if is_client { 0 } else { 1 });
        let mut q = b.xg.add(&own);
        let y = decaf_encode(&q);
        own.zeroize();
        q.zeroize();
        PakPriv {
            x: b.x,
            y,
            is_client,
        }
    }

    /// Our public value, sent to the peer.
    pub fn public(&self) -> [u8; PAKYLEN] {
        self.y
    }

    /// Whether this is the client's side.
    pub fn is_client(&self) -> bool {
        self.is_client
    }

    /// authpak_finish: the shared key from the peer's public value. Consumes the state,
    /// as 9front clears it. Fails when the peer's value is not a point.
    pub fn finish(self, hash: &PakHash, peer_y: &[u8]) -> Result<PakKey, PakError> {
        let py: [u8; PAKYLEN] = peer_y.try_into().map_err(|_| PakError::BadPoint)?;
        let q = decaf_decode(&py).ok_or(PakError::BadPoint)?;
        let mut peer = hash.point(if self.is_client { 1 } else { 0 });
        let mut zp = q.add(&peer.neg()).scale(&self.x);
        let z = Zeroizing::new(decaf_encode(&zp));
        zp.zeroize();
        peer.zeroize();

        let mut s = Sha256::new();
        if self.is_client {
            s.update(self.y);
            s.update(py);
        } else {
            s.update(py);
            s.update(self.y);
        }
        let salt = s.finalize();
        let mut key = PakKey([0u8; PAKKEYLEN]);
        let hk = Hkdf::<Sha256>::new(Some(&salt), &z[..]);
        if hk.expand(b"Plan 9 AuthPAK key", &mut key.0).is_err() {
            unreachable!("HKDF output length is fixed and valid");
        }
        Ok(key)
    }
}

// ---------------------------------------------------------------------------
// form1: ChaCha20-Poly1305 sealing of tickets, authenticators and password requests.

const FORM1SIG: [(u8, &[u8; 8]); 7] = [
    (AUTH_PASS, b"form1 PR"),
    (AUTH_TS, b"form1 Ts"),
    (AUTH_TC, b"form1 Tc"),
    (AUTH_AS, b"form1 As"),
    (AUTH_AC, b"form1 Ac"),
    (AUTH_TP, b"form1 Tp"),
    (AUTH_HR, b"form1 Hr"),
];

/// form1check: the message type a sealed message's signature names, if any.
pub fn form1_check(sealed: &[u8]) -> Option<u8> {
    let sig = sealed.get(..8)?;
    FORM1SIG
        .iter()
        .find(|(_, s)| s.as_slice() == sig)
        .map(|(n, _)| *n)
}

fn form1_counter() -> u32 {
    // 9front uses a process-wide counter from 0; start ours at a random value so that two
    // processes are unlikely to repeat a nonce even under one key.
    static COUNTER: OnceLock<AtomicU32> = OnceLock::new();
    COUNTER
        .get_or_init(|| {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            AtomicU32::new(u32::from_le_bytes(b))
        })
        .fetch_add(1, Ordering::Relaxed)
}

/// form1B2M: seal `msg` (its first byte the message type, then the body) under `key`.
/// The result is `FORM1_OVERHEAD` bytes longer than `msg`.
pub fn form1_seal(msg: &[u8], key: &[u8; 32]) -> Result<Vec<u8>, PakError> {
    let (&num, body) = msg.split_first().ok_or(PakError::Form1)?;
    let sig = FORM1SIG
        .iter()
        .find(|(n, _)| *n == num)
        .map(|(_, s)| *s)
        .ok_or(PakError::Form1)?;
    form1_seal_with_counter(sig, body, key, form1_counter())
}

fn form1_seal_with_counter(
    sig: &[u8; 8],
    body: &[u8],
    key: &[u8; 32],
    counter: u32,
) -> Result<Vec<u8>, PakError> {
    let mut out = Vec::with_capacity(12 + body.len() + 16);
    out.extend_from_slice(sig);
    out.extend_from_slice(&counter.to_le_bytes());
    out.extend_from_slice(body);
    let nonce = *Nonce::from_slice(&out[..12]);
    let aead = ChaCha20Poly1305::new(Key::from_slice(key));
    let tag = aead
        .encrypt_in_place_detached(&nonce, &[], &mut out[12..])
        .map_err(|_| PakError::Form1)?;
    out.extend_from_slice(&tag);
    Ok(out)
}

/// form1B2M with a chosen counter: for known-answer tests only.
#[doc(hidden)]
pub fn form1_seal_counter(msg: &[u8], key: &[u8; 32], counter: u32) -> Result<Vec<u8>, PakError> {
    let (&num, body) = msg.split_first().ok_or(PakError::Form1)?;
    let sig = FORM1SIG
        .iter()
        .find(|(n, _)| *n == num)
        .map(|(_, s)| *s)
        .ok_or(PakError::Form1)?;
    form1_seal_with_counter(sig, body, key, counter)
}

/// form1M2B: open a sealed message; gives back the type byte followed by the body.
pub fn form1_open(sealed: &[u8], key: &[u8; 32]) -> Result<Zeroizing<Vec<u8>>, PakError> {
    let num = form1_check(sealed).ok_or(PakError::Form1)?;
    if sealed.len() <= 12 + 16 {
        return Err(PakError::Form1);
    }
    let n = sealed.len() - 12 - 16;
    let nonce = *Nonce::from_slice(&sealed[..12]);
    let tag = *Tag::from_slice(&sealed[12 + n..]);
    let mut out = Zeroizing::new(Vec::with_capacity(n + 1));
    out.push(num);
    out.extend_from_slice(&sealed[12..12 + n]);
    let aead = ChaCha20Poly1305::new(Key::from_slice(key));
    aead.decrypt_in_place_detached(&nonce, &[], &mut out[1..], &tag)
        .map_err(|_| PakError::Form1)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Internal hooks for the known-answer tests.

/// spake2ee_h2P exposed for tests: the 224-byte X||Y||Z||T of the point for a hash.
#[doc(hidden)]
pub fn hash_to_point_bytes(h: &[u8; PAKSLEN]) -> [u8; PAKPLEN] {
    hash_to_point(h).to_bytes()
}

/// Decaf-encode x*G (x big-endian, any 56 bytes): for tests.
#[doc(hidden)]
pub fn base_mul_encoded(x: &[u8; PAKSLEN]) -> [u8; PAKSLEN] {
    decaf_encode(&Point::base().scale(x))
}

/// Whether 56 bytes decode as a Decaf point: for tests.
#[doc(hidden)]
pub fn decaf_valid(b: &[u8; PAKSLEN]) -> bool {
    decaf_decode(b).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn x_of(v: u64) -> [u8; PAKSLEN] {
        U448::from_u64(v).to_be_bytes()
    }

    #[test]
    fn constants() {
        // p = 3 mod 4, 7 is the smallest non-square, as spake2ee_h2P searches for it.
        assert_eq!(P.as_words()[0] & 3, 3);
        for n in 2..NONSQUARE {
            assert_eq!(fe(n).pow(&EXP_LEGENDRE), Fe::ONE, "{n}");
        }
        assert_eq!(fe(NONSQUARE).pow(&EXP_LEGENDRE), -Fe::ONE);
        // The base point is on the curve; the decimal x of ed448.mp is BASE_X.
        assert!(Point::base().on_curve());
        // Reduction of values >= p.
        let big = P.wrapping_add(&U448::from_u64(5));
        assert_eq!(Fe::new(&big), fe(5));
        assert_eq!(Fe::new(&U448::MAX), Fe::new(&U448::MAX.wrapping_sub(&P)));
    }

    mod oracle {
        crypto_bigint::impl_modulus!(
            P448,
            crypto_bigint::U448,
            "fffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        );
        pub type R =
            crypto_bigint::modular::constant_mod::Residue<P448, { crypto_bigint::U448::LIMBS }>;
    }

    fn check_ops(a: U448, b: U448) {
        use oracle::R;
        let (fa, fb) = (Fe::new(&a), Fe::new(&b));
        let (ra, rb) = (R::new(&a), R::new(&b));
        assert_eq!(fa.retrieve(), ra.retrieve());
        assert_eq!((fa + fb).retrieve(), (ra + rb).retrieve());
        assert_eq!((fa - fb).retrieve(), (ra - rb).retrieve());
        assert_eq!((fa * fb).retrieve(), (ra * rb).retrieve());
        assert_eq!((-fa).retrieve(), (-ra).retrieve());
        assert_eq!(fa.square().retrieve(), ra.square().retrieve());
        // Chains keep the limbs in range.
        let mut x = fa;
        let mut y = ra;
        for _ in 0..64 {
            x = (x + x) * fb - fa;
            y = (y + y) * rb - ra;
        }
        assert_eq!(x.retrieve(), y.retrieve());
        if a != U448::ZERO && a != P {
            assert_eq!(fa.invert().0.retrieve(), ra.invert().0.retrieve());
        }
    }

    #[test]
    fn field_matches_crypto_bigint_edges() {
        let edges = [
            U448::ZERO,
            U448::ONE,
            P.wrapping_sub(&U448::ONE),
            P,
            P.wrapping_add(&U448::ONE),
            U448::MAX,
            HALF_P,
            U448::from_be_hex(
                "00ffffffffffffff00ffffffffffffff00ffffffffffffff00ffffffffffffff00ffffffffffffff00ffffffffffffff00ffffffffffffff",
            ),
            U448::ONE.shl_vartime(224),
        ];
        for a in edges {
            for b in edges {
                check_ops(a, b);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn field_matches_crypto_bigint(a in proptest::prelude::any::<[u8; 56]>(), b in proptest::prelude::any::<[u8; 56]>()) {
            check_ops(U448::from_be_slice(&a), U448::from_be_slice(&b));
        }
    }

    #[test]
    fn doubling_and_d() {
        assert_eq!(Fe::D, -fe(MINUS_D));
        let g = Point::base().scale(&x_of(987654321));
        assert_eq!(decaf_encode(&g.double()), decaf_encode(&g.add(&g)));
        assert!(g.double().on_curve());
    }

    #[test]
    fn chains_match_square_and_multiply() {
        let p_minus_2 = P.wrapping_sub(&U448::from_u64(2));
        let mut vals = vec![Fe::ZERO, Fe::ONE, -Fe::ONE, fe(2), fe(NONSQUARE), Fe::D];
        for i in 1..20u64 {
            vals.push(fe(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).square() * fe(i + 3) + fe(i));
        }
        for a in vals {
            assert_eq!(pow_isqrt(&a), a.pow(&EXP_ISQRT));
            let (isr, root, l) = isqrt_root_legendre(&a);
            assert_eq!(isr, a.pow(&EXP_ISQRT));
            assert_eq!(root, a.pow(&EXP_SQRT));
            assert_eq!(l, a.pow(&EXP_LEGENDRE));
            assert_eq!(a.invert().0, a.pow(&p_minus_2));
            assert_eq!(a.square(), a * a);
            assert_eq!(a.sqn(3), a.pow(&U448::from_u64(8)));
        }
        assert_eq!(n_isqrt(), fe(NONSQUARE).pow(&EXP_ISQRT));
    }

    #[test]
    fn base_table_matches_scale() {
        let g = Point::base();
        let mut scalars = vec![
            [0u8; PAKSLEN],
            [0xffu8; PAKSLEN],
            P.wrapping_sub(&U448::ONE).to_be_bytes(),
            x_of(1),
            x_of(15),
            x_of(16),
            x_of(0x1234_5678_9abc_def0),
        ];
        for i in 0..8u8 {
            let mut x = [0u8; PAKSLEN];
            for (k, b) in x.iter_mut().enumerate() {
                *b = (k as u8).wrapping_mul(29).wrapping_add(i.wrapping_mul(101));
            }
            scalars.push(x);
        }
        for x in scalars {
            let a = Point::scale_base(&x);
            assert!(a.on_curve());
            assert_eq!(decaf_encode(&a), decaf_encode(&g.scale(&x)));
        }
    }

    /// The store hands out each blind once, each a correct multiple of G, and
    /// keeps up when taken from faster than it refills; `new` then agrees with
    /// `from_scalar` for the same x.
    #[test]
    fn blinds_are_fresh_and_right() {
        let g = Point::base();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 * BLINDS {
            let b = Blinds::get().take().expect("blind");
            assert!(bool::from(P.ct_gt(&U448::from_be_slice(&b.x))));
            assert_eq!(decaf_encode(&b.xg), decaf_encode(&g.scale(&b.x)));
            assert!(seen.insert(b.x), "a blind was handed out twice");
        }
        // The thread refills the store (other tests may take from it too, so it
        // need only be seen full once). It runs at idle priority: on a machine
        // busy with other tests that can take a while, hence the generous bound.
        let full = (0..12_000).any(|_| {
            Blinds::get().lock().len() == BLINDS || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        });
        assert!(full, "the store was not refilled");
        let hash = authpak_hash(&passtoaeskey(b"pw"), b"glenda");
        let p = PakPriv::new(&hash, true).expect("new");
        let q = PakPriv::from_scalar(&hash, &p.x, true).expect("from_scalar");
        assert_eq!(p.public(), q.public());
        assert!(seen.insert(p.x));
    }

    /// A forked child does not hand out its parent's blinds, which the parent
    /// still holds and will use.
    #[test]
    fn a_forked_child_makes_its_own_blinds() {
        let store = Blinds::get();
        let full = (0..12_000).any(|_| {
            store.lock().len() == BLINDS || {
                std::thread::sleep(std::time::Duration::from_millis(10));
                false
            }
        });
        assert!(full, "the store was not filled");
        let held: Vec<[u8; PAKXLEN]> = store.lock().iter().map(|b| b.x).collect();
        let mut fds = [0i32; 2];
        // SAFETY: a pipe into a two-int array.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: the child only takes a blind (a getpid, getrandom and arithmetic,
        // no lock and no allocation on success), writes it and ends with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let code = match store.take() {
                Ok(b) => {
                    // SAFETY: writing the child's own buffer to the pipe.
                    let n = unsafe { libc::write(fds[1], b.x.as_ptr().cast(), PAKXLEN) };
                    i32::from(n != PAKXLEN as isize)
                }
                Err(_) => 2,
            };
            // SAFETY: ending the forked child without running the parent's destructors.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: closing our copy of the write end.
        unsafe { libc::close(fds[1]) };
        let mut x = [0u8; PAKXLEN];
        let mut got = 0;
        while got < PAKXLEN {
            // SAFETY: reading into the rest of our buffer.
            let n = unsafe { libc::read(fds[0], x[got..].as_mut_ptr().cast(), PAKXLEN - got) };
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe {
            libc::close(fds[0]);
            libc::waitpid(pid, &mut status, 0);
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        assert_eq!(got, PAKXLEN);
        assert!(
            !held.contains(&x),
            "the child used a blind its parent holds"
        );
    }

    #[test]
    fn sqrt_helpers() {
        let a = fe(123456789);
        let sq = a.square();
        let r = msqrt(&sq);
        assert_eq!(r.square(), sq);
        assert_eq!(msqrt(&fe(NONSQUARE)), Fe::ZERO);
        assert_eq!(msqrt(&Fe::ZERO), Fe::ZERO);
        assert_eq!(misqrt(&sq).square() * sq, Fe::ONE);
    }

    #[test]
    fn group_laws() {
        let g = Point::base();
        let two = g.add(&g);
        let enc = |p: &Point| decaf_encode(p);
        assert_eq!(enc(&g.scale(&x_of(2))), enc(&two));
        assert_eq!(enc(&g.scale(&x_of(5))), enc(&two.add(&two).add(&g)));
        assert_eq!(enc(&g.add(&g.neg())), enc(&Point::identity()));
        assert_eq!(enc(&Point::identity()), [0u8; PAKSLEN]);
        assert!(g.scale(&x_of(12345)).on_curve());
        // (a+b)G = aG + bG with large scalars.
        let a = [0x5au8; PAKSLEN];
        let mut b = [0x33u8; PAKSLEN];
        b[0] = 0x01;
        let sum = U448::from_be_slice(&a).wrapping_add(&U448::from_be_slice(&b));
        assert_eq!(
            enc(&g.scale(&sum.to_be_bytes())),
            enc(&g.scale(&a).add(&g.scale(&b)))
        );
    }

    #[test]
    fn decaf_round_trip() {
        let g = Point::base();
        for k in [1u64, 2, 3, 4, 7, 1000, 0xdead_beef] {
            let p = g.scale(&x_of(k));
            let e = decaf_encode(&p);
            assert!(!bool::from(U448::from_be_slice(&e).ct_gt(&HALF_P)));
            let q = decaf_decode(&e).expect("decodes");
            assert!(q.on_curve());
            assert_eq!(decaf_encode(&q), e, "k={k}");
        }
        let id = decaf_decode(&[0u8; PAKSLEN]).expect("identity");
        assert_eq!(decaf_encode(&id), [0u8; PAKSLEN]);
    }

    #[test]
    fn elligator_points_on_curve() {
        for i in 0u8..20 {
            let mut h = [i.wrapping_mul(37); PAKSLEN];
            h[0] = i;
            let p = hash_to_point(&h);
            assert!(p.on_curve(), "i={i}");
            let e = decaf_encode(&p);
            assert_eq!(decaf_encode(&decaf_decode(&e).expect("decodes")), e);
        }
        assert!(hash_to_point(&[0u8; PAKSLEN]).on_curve());
        assert!(hash_to_point(&[0xffu8; PAKSLEN]).on_curve());
    }
}

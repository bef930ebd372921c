//! Known answers and properties of factotum::pak, the cryptographic core of dp9ik.
//!
//! 9front publishes no known-answer values for AuthPAK or form1, so the known answers below
//! come from an independent reference written for this purpose: a direct transliteration of
//! 9front's authpak.c, passtokey.c (passtoaeskey), form1.c and libsec's `msqrt.mp`,
//! `elligator2.mp`, `edwards.mp`, `decaf.mp`, `spake2ee.mp` and `ed448.mp` into Python
//! integers (`pow`, `%`), with Python's `hashlib.pbkdf2_hmac`, `hmac` (for RFC 5869 HKDF)
//! and `cryptography`'s ChaCha20Poly1305 for the primitives. It shares no code with the
//! Rust module (which uses RustCrypto and crypto-bigint), so agreement checks the
//! compositions, byte orders and formulas, not only self-consistency. The fixed scalars are
//! the first 56 bytes of SHA-512("client x") / SHA-512("server x") reduced mod p.
//!
//! What this cannot show is agreement with a running 9front: that needs a 9front peer.
use factotum::pak::*;
use proptest::prelude::*;

const AES_PASSWORD: &[&str] = &["15d13256344211e56c52f50c539de223"];
const AES_GLENDA: &[&str] = &["a91114409ef4c4ba76af88bfb390f69b"];
const PAKHASH: &[&str] = &[
    "93ff01be8a0b83b660e720fbace16aaa51cb196307e773be7c0a012c07e533f9219a2d8608b554934ccb106f3764fb92",
    "fb7b47ccc2b7ab0c2670e3ec92945f97b74ddfe2d612be6345ebe68db878bf7d130471c61518f35dd10b838e17998af7",
    "03a42dab86f14beaf269aeada15979cdc4ce1359b49bc6f9a2c7910a6100b5199b3fd92982fe5b57cbdec5bff8d3ac6f",
    "c294c386a6e285f7835a33c59be5e96a5718fa8b75e4da4ff64dc8ae21876bace48c2425bf41a659af6acfa3d2e98017",
    "aa364f03714b3478c04d28b8dd47a26219439d7128b4f41f0b6088ced861ad2f4797722f4461e9505dd27a921a71afcd",
    "cad19dbb33ac8d8b60b805c022763c12221d58fa56ca896c3c2f41738c0ed59b161c6290a91c911e5db6c30ca3c575cf",
    "12420cee8e24acc0256fa19ce109b47b3c47a65973df4d244f7eeb9cfb46a3e7487e77a3892a045f98a64cf0ac16c404",
    "3deac96dd2d0e6a8af4f96da09171befc46a9310552bfda6f06617dad35cfd2450e0d44119796877cb7c0efcc8dd565f",
    "57627ccdbe7ea5d5c0f9becb5d603c3fdf3b8556caf0cf5b93a6240143235a3d309857b3a55c10a1b814e6a1a6d3ca4e",
    "daab960b03348b60c3395beed7d0c3cc",
];
const XC: &[&str] = &[
    "4116a64f411b58945479e0e3d5818adde7e59b558c584da2b236d863a0e060c704de5e9434f0be0286da9be7871c4c1f",
    "77722edd4bc3c1d0",
];
const XS: &[&str] = &[
    "f387aa526b70411c910016e58d0092c133fa7cc962f296408f80ad9a4117cba87b3c9a5aeea62ca0a9f6a1d99f92b6b5",
    "0f730cabeaebed9b",
];
const YC: &[&str] = &[
    "3ee6dd7cb0224c520ac80b1d48bcd6ae0c9f3bcac2e1aec5cbcf680bfe401857b79bf425985f342028c4ac0c415e749b",
    "0fd9392b750fbbb4",
];
const YS: &[&str] = &[
    "2402ae249a9d708f8f1556778ac2d90ff55b590f0cb8f6115d84bef3ae7d577f94e6bdfa812deba497fc55a44e562ef3",
    "49bff5883bc9b188",
];
const KEY: &[&str] = &["1ba79ed8fbf6d7acc747bb7091f00bb848b451775ff63231f9253b5de8989c8d"];
const G2: &[&str] = &[
    "0b4a2d6cf07f000c094794d27eb8fcecf07d94ac77595081e1e05358560e798c4fc3704405ba3b89c6dd1e3d79179db4",
    "2b5f1cb5ae952e20",
];
const H2P_ZERO: &[&str] = &[
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000",
    "00000000000000000000000000000001fffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffff",
    "fffffffffffffffffffffffffffffffffffffffffffffffe000000000000000000000000000000000000000000000000",
    "0000000000000000000000000000000000000000000000000000000000000000",
];
const H2P_FF: &[&str] = &[
    "b32534bf9dcd130c0611b211b027b586af347b8b993a5a08e2b3a4d99f9c6b0c0ff02e54fc9f9825187f5fab3455b98b",
    "448b1abb060dfa7434b6a3c76523be55abbd3c08606a31f1383c11554995966c412d1306aeebfd2f8d59e901412f47a1",
    "de3e7b5c3973b867a223826f9c2f5a46f23f84e03cc36ade0df7a37c1774740c2ea26b9c2549b3c28b16e95c53d999cd",
    "aabb5359db8c47121478980c2806ab8c138815383c5046704bf2ac1cbc02814d83dc466ef879470939a8fd6400a0c1cc",
    "2d50cb872103d6319af8dcd8e1509338eaae4a4f6d1a157e1b3c2788a623237a",
];
const FORM1_KEY: &[&str] = &["000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"];
const FORM1_BODY: &[&str] = &[
    "303132333435363738396162636465663031323334353637383961626364656630313233343536373839616263646566",
];
const FORM1_TC: &[&str] = &[
    "666f726d31205463040302011ba9937908677cbfbb2446b75ffc0154c740edf122d8a504d365f02ab135341c546a006e",
    "0f28d4f3b50ecdd7386f8b28ad3275f3716460324b7f83fb59761bf2",
];
fn hex(parts: &[&str]) -> Vec<u8> {
    let s: String = parts.concat();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn arr<const N: usize>(v: &[u8]) -> [u8; N] {
    v.try_into().expect("length")
}

#[test]
fn passtoaeskey_known_answers() {
    assert_eq!(passtoaeskey(b"password").0.to_vec(), hex(AES_PASSWORD));
    assert_eq!(passtoaeskey(b"glenda's secret").0.to_vec(), hex(AES_GLENDA));
}

#[test]
fn authpak_hash_known_answer() {
    let ph = authpak_hash(&passtoaeskey(b"password"), b"glenda");
    assert_eq!(ph.0.to_vec(), hex(PAKHASH));
}

#[test]
fn hash_to_point_known_answers() {
    assert_eq!(hash_to_point_bytes(&[0u8; PAKSLEN]).to_vec(), hex(H2P_ZERO));
    assert_eq!(
        hash_to_point_bytes(&[0xffu8; PAKSLEN]).to_vec(),
        hex(H2P_FF)
    );
    let mut two = [0u8; PAKSLEN];
    two[PAKSLEN - 1] = 2;
    assert_eq!(base_mul_encoded(&two).to_vec(), hex(G2));
}

#[test]
fn exchange_known_answer() {
    let ph = authpak_hash(&passtoaeskey(b"password"), b"glenda");
    let c = PakPriv::from_scalar(&ph, &hex(XC), true).expect("client");
    let s = PakPriv::from_scalar(&ph, &hex(XS), false).expect("server");
    assert_eq!(c.public().to_vec(), hex(YC));
    assert_eq!(s.public().to_vec(), hex(YS));
    let (yc, ys) = (c.public(), s.public());
    let kc = c.finish(&ph, &ys).expect("client key");
    let ks = s.finish(&ph, &yc).expect("server key");
    assert_eq!(kc.0.to_vec(), hex(KEY));
    assert_eq!(kc, ks);
}

#[test]
fn random_exchange_agrees() {
    let ph = authpak_hash(&passtoaeskey(b"a good password"), b"bootes");
    for _ in 0..3 {
        let c = PakPriv::new(&ph, true).expect("client");
        let s = PakPriv::new(&ph, false).expect("server");
        let (yc, ys) = (c.public(), s.public());
        assert_ne!(yc, ys);
        let kc = c.finish(&ph, &ys).expect("client key");
        let ks = s.finish(&ph, &yc).expect("server key");
        assert_eq!(kc, ks);
    }
}

#[test]
fn wrong_password_or_user_disagrees() {
    let good = authpak_hash(&passtoaeskey(b"password"), b"glenda");
    for bad in [
        authpak_hash(&passtoaeskey(b"passwore"), b"glenda"),
        authpak_hash(&passtoaeskey(b"password"), b"glendb"),
    ] {
        let c = PakPriv::new(&good, true).expect("client");
        let s = PakPriv::new(&bad, false).expect("server");
        let (yc, ys) = (c.public(), s.public());
        let kc = c.finish(&good, &ys).expect("client key");
        let ks = s.finish(&bad, &yc).expect("server key");
        assert_ne!(kc, ks);
    }
}

#[test]
fn two_clients_do_not_agree() {
    // Both sides blinding with PM: the roles matter.
    let ph = authpak_hash(&passtoaeskey(b"password"), b"glenda");
    let a = PakPriv::new(&ph, true).expect("a");
    let b = PakPriv::new(&ph, true).expect("b");
    let (ya, yb) = (a.public(), b.public());
    assert_ne!(
        a.finish(&ph, &yb).expect("a"),
        b.finish(&ph, &ya).expect("b")
    );
}

#[test]
fn hash_to_curve_is_deterministic() {
    let k = passtoaeskey(b"password");
    assert_eq!(authpak_hash(&k, b"glenda").0, authpak_hash(&k, b"glenda").0);
    assert_ne!(authpak_hash(&k, b"glenda").0, authpak_hash(&k, b"bootes").0);
}

#[test]
fn malformed_points_rejected() {
    let ph = authpak_hash(&passtoaeskey(b"password"), b"glenda");
    // s above (p-1)/2, s = p, all ones, and values that are not encodings.
    let p_bytes = hex(&[
        "fffffffffffffffffffffffffffffffffffffffffffffffffffffffeffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    ]);
    let mut half_plus = p_bytes.clone();
    half_plus[0] = 0x80; // (p+1)/2 and above in the top half
    let bad: Vec<Vec<u8>> = vec![
        p_bytes.clone(),
        vec![0xff; PAKYLEN],
        half_plus,
        vec![],
        vec![1; PAKYLEN - 1],
        vec![1; PAKYLEN + 1],
    ];
    for b in &bad {
        let c = PakPriv::new(&ph, true).expect("client");
        assert_eq!(c.finish(&ph, b).err(), Some(PakError::BadPoint), "{b:02x?}");
    }
    // About half of the small s in range are not encodings of points: find some.
    let mut rejected = 0;
    for v in 1u8..=40 {
        let mut y = [0u8; PAKYLEN];
        y[PAKYLEN - 1] = v;
        if !decaf_valid(&y) {
            rejected += 1;
            let c = PakPriv::new(&ph, true).expect("client");
            assert_eq!(c.finish(&ph, &y).err(), Some(PakError::BadPoint));
        }
    }
    assert!(rejected > 5, "only {rejected} rejected");
    // A valid public value is accepted.
    let s = PakPriv::new(&ph, false).expect("server");
    assert!(decaf_valid(&s.public()));
}

#[test]
fn scalar_bounds() {
    let ph = authpak_hash(&passtoaeskey(b"password"), b"glenda");
    assert_eq!(
        PakPriv::from_scalar(&ph, &[0xff; PAKXLEN], true).err(),
        Some(PakError::BadScalar)
    );
    assert_eq!(
        PakPriv::from_scalar(&ph, &[1; 3], true).err(),
        Some(PakError::BadScalar)
    );
}

#[test]
fn form1_known_answer() {
    let key: [u8; 32] = arr(&hex(FORM1_KEY));
    let mut msg = vec![65u8]; // AuthTc
    msg.extend_from_slice(&hex(FORM1_BODY));
    let sealed = form1_seal_counter(&msg, &key, 0x0102_0304).expect("seal");
    assert_eq!(sealed, hex(FORM1_TC));
    assert_eq!(form1_check(&sealed), Some(65));
    assert_eq!(
        form1_open(&sealed, &key).expect("open").as_slice(),
        msg.as_slice()
    );
}

#[test]
fn form1_round_trip_all_types() {
    let key = [7u8; 32];
    for num in [3u8, 64, 65, 66, 67, 68, 69] {
        let mut msg = vec![num];
        msg.extend((0..72u8).map(|i| i ^ num));
        let sealed = form1_seal(&msg, &key).expect("seal");
        assert_eq!(sealed.len(), msg.len() + FORM1_OVERHEAD);
        assert_eq!(form1_check(&sealed), Some(num));
        assert_eq!(
            form1_open(&sealed, &key).expect("open").as_slice(),
            msg.as_slice()
        );
        // Two seals of one message differ in their counter, so in everything after it.
        let again = form1_seal(&msg, &key).expect("seal");
        assert_ne!(sealed, again);
    }
    // Unknown types are refused, not sealed.
    assert_eq!(form1_seal(&[1, 2, 3], &key).err(), Some(PakError::Form1));
    assert_eq!(form1_seal(&[], &key).err(), Some(PakError::Form1));
}

#[test]
fn form1_tamper_detected() {
    let key = [9u8; 32];
    let mut msg = vec![64u8];
    msg.extend_from_slice(&[0x5a; 120]);
    let sealed = form1_seal(&msg, &key).expect("seal");
    for i in 0..sealed.len() {
        let mut t = sealed.clone();
        t[i] ^= 0x01;
        assert!(form1_open(&t, &key).is_err(), "flip at {i} accepted");
    }
    let mut other = key;
    other[0] ^= 1;
    assert!(form1_open(&sealed, &other).is_err());
    assert!(form1_open(&sealed[..sealed.len() - 1], &key).is_err());
    assert!(form1_open(&sealed[..28], &key).is_err());
    assert!(form1_open(&sealed[..7], &key).is_err());
}

proptest! {
    #[test]
    fn form1_open_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200), sig in 0usize..8) {
        let sigs: [&[u8]; 8] = [b"form1 PR", b"form1 Ts", b"form1 Tc", b"form1 As", b"form1 Ac", b"form1 Tp", b"form1 Hr", b"garbage!"];
        let mut buf = sigs[sig].to_vec();
        buf.extend_from_slice(&data);
        let _ = form1_open(&buf, &[3u8; 32]);
        let _ = form1_open(&data, &[3u8; 32]);
        let _ = form1_check(&data);
    }

    #[test]
    fn form1_round_trip_any_body(body in proptest::collection::vec(any::<u8>(), 1..300), key in any::<[u8; 32]>()) {
        let mut msg = vec![66u8];
        msg.extend_from_slice(&body);
        let sealed = form1_seal(&msg, &key).expect("seal");
        let opened = form1_open(&sealed, &key).expect("open");
        prop_assert_eq!(opened.as_slice(), msg.as_slice());
    }

    #[test]
    fn decode_accepts_only_canonical(y in any::<[u8; PAKYLEN]>()) {
        // Whatever decodes re-encodes to itself (canonical encodings only).
        if decaf_valid(&y) {
            prop_assert!(y[0] < 0x80);
        }
    }

    #[test]
    fn hash_to_point_deterministic(h in any::<[u8; PAKSLEN]>()) {
        prop_assert_eq!(hash_to_point_bytes(&h).to_vec(), hash_to_point_bytes(&h).to_vec());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn finish_never_panics(y in proptest::collection::vec(any::<u8>(), 0..70)) {
        let ph = authpak_hash(&AesKey([1; AESKEYLEN]), b"u");
        let c = PakPriv::from_scalar(&ph, &[5; PAKXLEN], false).expect("scalar");
        let _ = c.finish(&ph, &y);
    }
}

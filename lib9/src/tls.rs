//! 9P over TLS (rustls with the ring provider): the `tls!host!port` dial string.
//!
//! There is no certificate authority. Each side is known by the SHA-256 fingerprint of
//! its certificate (the DER bytes), written as 64 lowercase hex digits:
//!
//! - A server presents the certificate it is given (`--cert`, `--key`: PEM files) or
//!   the user's own identity, `$HOME/lib/tls/cert.pem` and `key.pem`, made on first
//!   use (a self-signed ECDSA P-256 certificate). It prints the fingerprint on start.
//! - A client accepts a server only if its fingerprint is pinned: in the dial string
//!   (`tls!host!port!fp=HEX`), or in `$HOME/lib/tls/known`, whose lines are
//!   `host!port HEX` or `host HEX` (any port); `#` starts a comment. Trust on first
//!   use is only by asking: `tls!host!port!tofu` accepts an unknown server and appends
//!   its line to `known`; a known server with another fingerprint is still refused.
//! - A server given a list of client fingerprints (`--clients file`, one per line)
//!   requires every client to present a certificate on that list. A client presents
//!   the user's identity (`cert.pem`, `key.pem`) when it has one and the server asks.
//!
//! `$HOME/lib/tls` is made mode 0700; key files are written 0600 and refused if the
//! group or others may read them, or if someone else owns them.

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use sha2::Digest;

/// The port `tls!host` means: 9P over TLS has no registered port, so the 9fs port.
pub const DEFAULT_PORT: u16 = 564;

/// What went wrong setting TLS up.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

fn err(s: impl Into<String>) -> TlsError {
    TlsError(s.into())
}

/// ring's suites, AES-128-GCM first: as safe, and faster for bulk 9P traffic.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    p.cipher_suites.sort_by_key(|s| {
        !matches!(
            s.suite(),
            rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | rustls::CipherSuite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    Arc::new(p)
}

/// The SHA-256 fingerprint of a certificate's DER bytes, in lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let d = sha2::Sha256::digest(der);
    let mut s = String::with_capacity(64);
    for b in d {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A fingerprint as written by a person (colons, capitals) in our form, or `None` if
/// it is not 64 hex digits.
pub fn normalize_fingerprint(s: &str) -> Option<String> {
    let s = s.strip_prefix("sha256:").unwrap_or(s);
    let f: String = s
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    (f.len() == 64 && f.chars().all(|c| c.is_ascii_hexdigit())).then_some(f)
}

/// `$HOME/lib/tls`, made mode 0700 if missing and checked to be the user's and closed
/// to others.
pub fn dir() -> Result<PathBuf, TlsError> {
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .ok_or_else(|| err("tls: $HOME is not set"))?;
    let d = Path::new(&home).join("lib/tls");
    if !d.exists() {
        if let Some(p) = d.parent() {
            std::fs::create_dir_all(p)
                .map_err(|e| err(format!("{}: {}", p.display(), ename(&e))))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(err(format!("{}: {}", d.display(), ename(&e)))),
        }
    }
    check_private(&d, 0o077)?;
    Ok(d)
}

fn ename(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => crate::errstr::from_errno(n).to_string(),
        None => e.to_string(),
    }
}

/// Refuse a file or directory someone else owns, or whose mode has any of `bad`.
fn check_private(p: &Path, bad: u32) -> Result<(), TlsError> {
    let m = std::fs::metadata(p).map_err(|e| err(format!("{}: {}", p.display(), ename(&e))))?;
    let uid = nix::unistd::geteuid().as_raw();
    if m.uid() != uid {
        return Err(err(format!(
            "{}: owned by uid {}, not by us ({uid})",
            p.display(),
            m.uid()
        )));
    }
    let mode = m.mode() & 0o777;
    if mode & bad != 0 {
        return Err(err(format!(
            "{}: mode {mode:04o} lets others in; want {:04o}",
            p.display(),
            mode & !bad
        )));
    }
    Ok(())
}

/// Read a private key file, after checking it is ours and mode 0600 (or stricter).
fn read_key(p: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    check_private(p, 0o077)?;
    let b = std::fs::read(p).map_err(|e| err(format!("{}: {}", p.display(), ename(&e))))?;
    PrivateKeyDer::from_pem_slice(&b)
        .map_err(|e| err(format!("{}: no usable private key: {e}", p.display())))
}

fn read_certs(p: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let b = std::fs::read(p).map_err(|e| err(format!("{}: {}", p.display(), ename(&e))))?;
    let certs = CertificateDer::pem_slice_iter(&b)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(format!("{}: bad certificate: {e}", p.display())))?;
    if certs.is_empty() {
        return Err(err(format!("{}: no certificate", p.display())));
    }
    Ok(certs)
}

/// Write `data` to `p` with `mode`, atomically (a new file renamed into place).
fn write_file(p: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write;
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(data)?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)
    })();
    res.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(format!("{}: {}", p.display(), ename(&e)))
    })
}

/// A certificate chain and its key.
pub struct Identity {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

impl Identity {
    /// The fingerprint of the leaf certificate.
    pub fn fingerprint(&self) -> String {
        self.certs
            .first()
            .map(|c| fingerprint(c))
            .unwrap_or_default()
    }

    /// Load a certificate and key from PEM files.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
        Ok(Identity {
            key: read_key(key)?,
            certs: read_certs(cert)?,
        })
    }

    /// The user's identity in `$HOME/lib/tls`, or `None` if there is none yet.
    pub fn user() -> Result<Option<Identity>, TlsError> {
        let d = dir()?;
        let (c, k) = (d.join("cert.pem"), d.join("key.pem"));
        if !c.exists() && !k.exists() {
            return Ok(None);
        }
        Identity::load(&c, &k).map(Some)
    }

    /// The user's identity, made (and kept in `$HOME/lib/tls`) if there is none yet.
    pub fn user_or_generate() -> Result<Identity, TlsError> {
        if let Some(id) = Identity::user()? {
            return Ok(id);
        }
        let d = dir()?;
        let mut names = vec!["localhost".to_string()];
        if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname")
            && let h = h.trim()
            && !h.is_empty()
            && h != "localhost"
        {
            names.push(h.to_string());
        }
        let ck = rcgen::generate_simple_self_signed(names)
            .map_err(|e| err(format!("tls: making a certificate: {e}")))?;
        write_file(
            &d.join("key.pem"),
            ck.signing_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        write_file(&d.join("cert.pem"), ck.cert.pem().as_bytes(), 0o644)?;
        Identity::load(&d.join("cert.pem"), &d.join("key.pem"))
    }
}

/// How a server sets up TLS.
#[derive(Clone, Debug, Default)]
pub struct ServerOpts {
    /// Certificate chain (PEM); with `key`. Neither: the user's identity.
    pub cert: Option<PathBuf>,
    /// Private key (PEM), mode 0600.
    pub key: Option<PathBuf>,
    /// A file of client fingerprints; if given, clients must present one of them.
    pub clients: Option<PathBuf>,
}

/// A server's TLS configuration and the fingerprint it presents.
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub fingerprint: String,
}

/// Read a list of fingerprints, one a line (more fields after it are a comment).
fn read_fingerprints(p: &Path) -> Result<Vec<String>, TlsError> {
    let text =
        std::fs::read_to_string(p).map_err(|e| err(format!("{}: {}", p.display(), ename(&e))))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        let Some(first) = line.split_whitespace().next() else {
            continue;
        };
        let fp = normalize_fingerprint(first).ok_or_else(|| {
            err(format!(
                "{}:{}: not a sha256 fingerprint: {first}",
                p.display(),
                i + 1
            ))
        })?;
        out.push(fp);
    }
    Ok(out)
}

impl ServerTls {
    pub fn new(o: &ServerOpts) -> Result<ServerTls, TlsError> {
        let id = match (&o.cert, &o.key) {
            (Some(c), Some(k)) => Identity::load(c, k)?,
            (None, None) => Identity::user_or_generate()?,
            _ => return Err(err("tls: give both a certificate and a key, or neither")),
        };
        let fp = id.fingerprint();
        let b = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| err(format!("tls: {e}")))?;
        let b = match &o.clients {
            Some(p) => {
                let allowed = read_fingerprints(p)?;
                b.with_client_cert_verifier(Arc::new(AllowedClients {
                    allowed,
                    algs: provider().signature_verification_algorithms,
                }))
            }
            None => b.with_no_client_auth(),
        };
        let mut config = b
            .with_single_cert(id.certs, id.key)
            .map_err(|e| err(format!("tls: certificate and key: {e}")))?;
        config.max_early_data_size = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            fingerprint: fp,
        })
    }
}

/// Accepts only client certificates whose fingerprint is listed.
#[derive(Debug)]
struct AllowedClients {
    allowed: Vec<String>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AllowedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.allowed.contains(&fingerprint(end_entity)) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Accepts a server whose fingerprint is pinned, and notes what it saw.
#[derive(Debug)]
struct Pinned {
    pins: Vec<String>,
    tofu: bool,
    seen: Mutex<Option<String>>,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        let ok = self.pins.contains(&fp) || (self.pins.is_empty() && self.tofu);
        if let Ok(mut s) = self.seen.lock() {
            *s = Some(fp);
        }
        if ok {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Where a client is going and how it knows the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    /// Fingerprints given in the dial string (`fp=`).
    pub pins: Vec<String>,
    /// Trust on first use (`tofu`).
    pub tofu: bool,
}

impl Target {
    fn name(&self) -> String {
        format!("tls!{}!{}", self.host, self.port)
    }
}

/// The fingerprints `known` holds for this host and port.
fn known_pins(known: &Path, host: &str, port: u16) -> Result<Vec<String>, TlsError> {
    let text = match std::fs::read_to_string(known) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(err(format!("{}: {}", known.display(), ename(&e)))),
    };
    check_private(known, 0o022)?;
    let hp = format!("{host}!{port}");
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut f = line.split_whitespace();
        let (Some(h), Some(fp)) = (f.next(), f.next()) else {
            continue;
        };
        if (h == host || h == hp)
            && let Some(fp) = normalize_fingerprint(fp)
        {
            out.push(fp);
        }
    }
    Ok(out)
}

/// Append a line to `known` (made 0600 if new).
fn remember(known: &Path, host: &str, port: u16, fp: &str) -> Result<(), TlsError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(known)
        .map_err(|e| err(format!("{}: {}", known.display(), ename(&e))))?;
    writeln!(f, "{host}!{port} {fp}")
        .map_err(|e| err(format!("{}: {}", known.display(), ename(&e))))
}

/// Run the client's side of the handshake over `tcp`, checking the server against the
/// pins of the dial string or `$HOME/lib/tls/known`.
pub async fn connect(tcp: tokio::net::TcpStream, t: &Target) -> Result<Stream, TlsError> {
    let name = t.name();
    let mut pins = t.pins.clone();
    let mut known = None;
    if pins.is_empty() {
        let k = dir()?.join("known");
        pins = known_pins(&k, &t.host, t.port)?;
        known = Some(k);
    }
    let tofu = t.tofu && pins.is_empty();
    let algs = provider().signature_verification_algorithms;
    let verifier = Arc::new(Pinned {
        pins: pins.clone(),
        tofu,
        seen: Mutex::new(None),
        algs,
    });
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(format!("{name}: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone());
    // The user's identity goes along for servers that ask for one; a broken one is
    // an error rather than silently left out.
    let config = match Identity::user().map_err(|e| err(format!("{name}: {e}")))? {
        Some(id) => b
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|e| err(format!("{name}: client certificate: {e}")))?,
        None => b.with_no_client_auth(),
    };
    // Names are not checked (the pin is), but a DNS name goes along as SNI.
    let sni = ServerName::try_from(t.host.clone()).unwrap_or(ServerName::IpAddress(
        std::net::IpAddr::from([127, 0, 0, 1]).into(),
    ));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    match connector.connect(sni, tcp).await {
        Ok(s) => {
            if tofu
                && let Some(k) = &known
                && let Some(fp) = verifier.seen.lock().ok().and_then(|s| s.clone())
            {
                remember(k, &t.host, t.port, &fp).map_err(|e| err(format!("{name}: {e}")))?;
            }
            let (tcp, conn) = s.into_inner();
            Ok(Stream::new(tcp, conn.into()))
        }
        Err(e) => {
            let seen = verifier.seen.lock().ok().and_then(|s| s.clone());
            Err(err(match seen {
                Some(fp) if !pins.is_empty() && !pins.contains(&fp) => format!(
                    "{name}: server certificate fingerprint mismatch: it is {fp}, expected {}",
                    pins.join(" or ")
                ),
                Some(fp) if pins.is_empty() && !tofu => format!(
                    "{name}: server certificate not known (sha256 fingerprint {fp}); \
                     if that is the server's, pin it: dial {name}!fp={fp}, or add the line \
                     '{}!{} {fp}' to $HOME/lib/tls/known",
                    t.host, t.port
                ),
                _ => format!("{name}: tls handshake: {}", describe(&e)),
            }))
        }
    }
}

/// A handshake error in plain words.
fn describe(e: &io::Error) -> String {
    if let Some(inner) = e.get_ref()
        && let Some(r) = inner.downcast_ref::<rustls::Error>()
    {
        return describe_tls(r);
    }
    ename(e)
}

/// A TLS error in plain words. With TLS 1.3 a server refuses a client certificate only
/// after the client's side of the handshake is done, so the refusal arrives as an alert
/// on the first read, and is told here.
fn describe_tls(r: &rustls::Error) -> String {
    match r {
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            "tls: the server requires a client certificate ($HOME/lib/tls/cert.pem; see 9p tlsid)"
                .into()
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::AccessDenied,
        ) => "tls: the server refused our client certificate".into(),
        other => format!("tls: {other}"),
    }
}

/// An I/O error from rustls, its TLS error (if it carries one) in plain words.
fn plain(e: io::Error) -> io::Error {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(r) => io::Error::new(e.kind(), describe_tls(r)),
        None => e,
    }
}

// The connection once the handshake is done.
//
// tokio-rustls does the handshake; then a `Stream` takes the TCP socket and the rustls
// connection and moves 9P's bytes itself, because the general-purpose stream costs much
// of what TLS costs here: it reads the socket 4 KiB at a time (a system call for every
// quarter of a record), and both directions go through one lock, `tokio::io::split`'s.
// Here the two halves share the rustls state under a mutex held only while records are
// encrypted or decrypted, never across I/O, and each half does its own socket I/O:
//
// - the reading half takes up to [`RECV_MAX`] bytes of records in one read and has rustls
//   decrypt them, handing the plaintext straight into the caller's buffer (for a large
//   9P message, the frame's own buffer);
// - the writing half has rustls encrypt up to [`SEND_BATCH`] bytes of plaintext into
//   full-size records and sends them with one vectored write.
//
// Copies are made in pieces of at most [`PIECE`] bytes. glibc copies larger blocks with
// `rep movsb`, which on AMD Zen processors crawls (at a twentieth of its speed) when the
// destination lies 1 to 32 bytes past the source modulo 4 KiB, and a record body sits 5
// bytes (its header) past where the plaintext was: measured, most of the server's copies
// into records met that case. Smaller pieces go by vector moves, as fast in every case.

/// The most record bytes read from the socket at once; the buffer starts smaller and
/// grows to this while reads fill it.
const RECV_MAX: usize = 256 * 1024;
const RECV_MIN: usize = 16 * 1024;
/// The most plaintext encrypted before the records go to the socket.
const SEND_BATCH: usize = 256 * 1024;
/// The largest single copy of bulk data (see above).
const PIECE: usize = 1536;
const SEND_PIECES: usize = SEND_BATCH / PIECE + 2;

/// What both halves of a connection share.
struct Shared {
    tls: Mutex<rustls::Connection>,
    sock: tokio::net::TcpStream,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, rustls::Connection> {
        self.tls.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A TLS connection after its handshake: split into its two halves with
/// [`Stream::into_conn`].
pub struct Stream {
    sh: Arc<Shared>,
}

impl Stream {
    fn new(sock: tokio::net::TcpStream, mut tls: rustls::Connection) -> Stream {
        // Whatever has been encrypted waits for the socket; with what a batch adds, and
        // sent before more is taken, so the limit is never reached.
        tls.set_buffer_limit(Some(2 * SEND_BATCH));
        Stream {
            sh: Arc::new(Shared {
                tls: Mutex::new(tls),
                sock,
            }),
        }
    }

    /// The server's side of a connection whose handshake `accept` does.
    pub async fn accept(accept: tokio_rustls::Accept<tokio::net::TcpStream>) -> io::Result<Stream> {
        let (tcp, conn) = accept.await?.into_inner();
        Ok(Stream::new(tcp, conn.into()))
    }

    /// The two halves, as a 9P connection to `peer`.
    pub fn into_conn(self, peer: impl Into<String>) -> crate::dial::Conn {
        crate::dial::Conn {
            read: crate::dial::ReadHalf::Other(Box::new(Reader {
                sh: Arc::clone(&self.sh),
                buf: Vec::new(),
                start: 0,
                end: 0,
                eof: false,
            })),
            write: crate::dial::WriteHalf::Other(Box::new(Writer {
                sh: self.sh,
                closed: false,
            })),
            peer: peer.into(),
        }
    }
}

/// Copy `src` to the end of `out`, in pieces (see above).
fn put(out: &mut tokio::io::ReadBuf<'_>, src: &[u8]) {
    for p in src.chunks(PIECE) {
        out.put_slice(p);
    }
}

/// Send what rustls has ready, as far as the socket takes it without waiting.
struct SockWrite<'a>(&'a tokio::net::TcpStream);

impl io::Write for SockWrite<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.try_write(b)
    }
    fn write_vectored(&mut self, b: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(b)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Send everything rustls has ready; pending (woken when the socket can take more)
/// while it does not all fit.
fn poll_send(
    tls: &mut rustls::Connection,
    sock: &tokio::net::TcpStream,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while tls.wants_write() {
        match tls.write_tls(&mut SockWrite(sock)) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::task::ready!(sock.poll_write_ready(cx))?;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}

/// Send what rustls has ready as far as the socket takes it now (the reading half's
/// answers to the peer: alerts, key updates). What is left goes with the next write.
fn send_now(tls: &mut rustls::Connection, sock: &tokio::net::TcpStream) {
    while tls.wants_write() {
        match tls.write_tls(&mut SockWrite(sock)) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The reading half.
struct Reader {
    sh: Arc<Shared>,
    /// Records read from the socket; `start..end` not yet given to rustls.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The socket has reached its end (and rustls has been told).
    eof: bool,
}

/// What decrypting what is at hand came to.
enum Got {
    /// Plaintext was put in the caller's buffer, or the peer closed the TLS stream.
    Done,
    /// Nothing yet: more records are needed from the socket.
    More,
}

impl Reader {
    /// Decrypt the records at hand into `out`, as far as they and `out` go.
    fn decrypt(&mut self, out: &mut tokio::io::ReadBuf<'_>) -> io::Result<Got> {
        use std::io::BufRead;
        let before = out.filled().len();
        let mut tls = self.sh.lock();
        loop {
            let mut rd = tls.reader();
            loop {
                match rd.fill_buf() {
                    // A clean close (close_notify) once the data before it is read.
                    Ok([]) => return Ok(Got::Done),
                    Ok(chunk) => {
                        let n = chunk.len().min(out.remaining());
                        put(out, &chunk[..n]);
                        rd.consume(n);
                        if out.remaining() == 0 {
                            return Ok(Got::Done);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    // The socket ended without close_notify: an error, once the data
                    // before it is read (rustls says it again next time).
                    Err(e) => {
                        return if out.filled().len() > before {
                            Ok(Got::Done)
                        } else {
                            Err(e)
                        };
                    }
                }
            }
            if self.start == self.end {
                if out.filled().len() > before {
                    return Ok(Got::Done);
                }
                if self.eof {
                    // Told rustls already and it had nothing more to say: cannot be, as
                    // rustls reports the end itself; end rather than spin.
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                return Ok(Got::More);
            }
            let end = self.end.min(self.start + PIECE);
            let n = tls.read_tls(&mut &self.buf[self.start..end])?;
            if n == 0 {
                // After close_notify rustls reads no more; what follows is ignored.
                self.start = self.end;
            }
            self.start += n;
            if let Err(e) = tls.process_new_packets() {
                // rustls has queued an alert telling the peer why: a last try to send it.
                send_now(&mut tls, &self.sh.sock);
                return Err(io::Error::new(io::ErrorKind::InvalidData, describe_tls(&e)));
            }
            if tls.wants_write() {
                send_now(&mut tls, &self.sh.sock);
            }
        }
    }

    /// Read more records from the socket; at its end, tell rustls.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            self.buf = vec![0; RECV_MIN];
        }
        self.start = 0;
        self.end = 0;
        loop {
            std::task::ready!(self.sh.sock.poll_read_ready(cx))?;
            match self.sh.sock.try_read(&mut self.buf) {
                Ok(0) => {
                    self.eof = true;
                    let mut tls = self.sh.lock();
                    tls.read_tls(&mut io::empty())?;
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => {
                    self.end = n;
                    if n == self.buf.len() && n < RECV_MAX {
                        // Reads fill the buffer: give them more room next time.
                        self.buf.resize((2 * n).min(RECV_MAX), 0);
                    }
                    return Poll::Ready(Ok(()));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncRead for Reader {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if let Got::Done = me.decrypt(out)? {
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            std::task::ready!(me.poll_fill(cx))?;
        }
    }
}

/// The writing half.
struct Writer {
    sh: Arc<Shared>,
    /// close_notify has been queued.
    closed: bool,
}

impl tokio::io::AsyncWrite for Writer {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        b: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(b)])
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        let mut pieces = [io::IoSlice::new(&[]); SEND_PIECES];
        let mut k = 0;
        let mut total = 0;
        'gather: for b in bufs {
            for p in b.chunks(PIECE) {
                if k == SEND_PIECES || total >= SEND_BATCH {
                    break 'gather;
                }
                pieces[k] = io::IoSlice::new(p);
                k += 1;
                total += p.len();
            }
        }
        if total == 0 {
            return Poll::Ready(Ok(0));
        }
        use std::io::Write;
        let mut tls = me.sh.lock();
        loop {
            // What was encrypted before goes first: nothing more is taken while the
            // socket cannot keep up.
            std::task::ready!(poll_send(&mut tls, &me.sh.sock, cx))?;
            let n = tls
                .writer()
                .write_vectored(&pieces[..k])
                .map_err(plain)?;
            if n == 0 {
                if tls.wants_write() {
                    continue;
                }
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "tls: the connection takes no more data",
                )));
            }
            // Start sending at once; what the socket does not take now goes next time.
            if let Poll::Ready(Err(e)) = poll_send(&mut tls, &me.sh.sock, cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(n));
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut tls = self.sh.lock();
        poll_send(&mut tls, &self.sh.sock, cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        let mut tls = me.sh.lock();
        if !me.closed {
            tls.send_close_notify();
            me.closed = true;
        }
        std::task::ready!(poll_send(&mut tls, &me.sh.sock, cx))?;
        drop(tls);
        // The reading half goes on: the peer may still have something to say.
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) of the writing direction of a socket we hold.
        if unsafe { libc::shutdown(me.sh.sock.as_raw_fd(), libc::SHUT_WR) } < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOTCONN) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints() {
        assert_eq!(
            fingerprint(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let f = "E3:B0:C4:42:98:FC:1C:14:9A:FB:F4:C8:99:6F:B9:24:27:AE:41:E4:64:9B:93:4C:A4:95:99:1B:78:52:B8:55";
        assert_eq!(normalize_fingerprint(f), Some(fingerprint(b"")));
        assert_eq!(normalize_fingerprint("abc"), None);
        assert_eq!(normalize_fingerprint(&"g".repeat(64)), None);
    }

    #[test]
    fn known_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let k = d.path().join("known");
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        std::fs::write(
            &k,
            format!(
                "# comment\nh {a}\nh!99 {b}\nother {b}\nh!98 {}\n",
                "c".repeat(64)
            ),
        )
        .expect("write");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(known_pins(&k, "h", 99).expect("pins"), vec![a.clone(), b]);
        assert_eq!(known_pins(&k, "h", 1).expect("pins"), vec![a]);
        assert!(known_pins(&k, "nobody", 1).expect("pins").is_empty());
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(known_pins(&k, "h", 1).is_err());
    }

    #[test]
    fn key_mode_checked() {
        let d = tempfile::tempdir().expect("tempdir");
        let ck = rcgen::generate_simple_self_signed(vec!["x".to_string()]).expect("cert");
        let (c, k) = (d.path().join("c.pem"), d.path().join("k.pem"));
        write_file(&c, ck.cert.pem().as_bytes(), 0o644).expect("cert");
        write_file(&k, ck.signing_key.serialize_pem().as_bytes(), 0o600).expect("key");
        let id = Identity::load(&c, &k).expect("load");
        assert_eq!(id.fingerprint(), fingerprint(ck.cert.der()));
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = Identity::load(&c, &k).err().expect("refused");
        assert!(e.0.contains("mode 0640"), "{e}");
    }
}

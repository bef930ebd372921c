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

/// A TLS stream to a server. Its errors say in plain words what TLS alert ended it:
/// with TLS 1.3 a server refuses a client certificate only after the client's side of
/// the handshake is done, so the refusal arrives on the first read.
pub struct ClientStream {
    inner: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
}

fn plain(e: io::Error) -> io::Error {
    if e.get_ref().is_some_and(|i| i.is::<rustls::Error>()) {
        io::Error::new(e.kind(), describe(&e))
    } else {
        e
    }
}

impl tokio::io::AsyncRead for ClientStream {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_read(cx, buf)
            .map_err(plain)
    }
}

impl tokio::io::AsyncWrite for ClientStream {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        b: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_write(cx, b)
            .map_err(plain)
    }
    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> std::task::Poll<io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_write_vectored(cx, bufs)
            .map_err(plain)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_flush(cx)
            .map_err(plain)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_shutdown(cx)
            .map_err(plain)
    }
}

/// Run the client's side of the handshake over `tcp`, checking the server against the
/// pins of the dial string or `$HOME/lib/tls/known`.
pub async fn connect(tcp: tokio::net::TcpStream, t: &Target) -> Result<ClientStream, TlsError> {
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
            Ok(ClientStream { inner: s })
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
        return match r {
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
        };
    }
    ename(e)
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

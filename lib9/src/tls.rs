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
//!
//! rustls does the handshake; the connection's records are then framed here and
//! sealed and opened by rustls's record protection (see [`Stream`], and "The
//! connection" below).

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
        let allowed = match &o.clients {
            Some(p) => Some(read_fingerprints(p)?),
            None => None,
        };
        Ok(ServerTls {
            config: Arc::new(server_config(id, allowed, rustls::DEFAULT_VERSIONS)?),
            fingerprint: fp,
        })
    }
}

/// A server's configuration: presenting `id`, and if `allowed` is given, requiring a
/// client certificate with one of its fingerprints.
fn server_config(
    id: Identity,
    allowed: Option<Vec<String>>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ServerConfig, TlsError> {
    let b = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| err(format!("tls: {e}")))?;
    let b = match allowed {
        Some(allowed) => b.with_client_cert_verifier(Arc::new(AllowedClients {
            allowed,
            algs: provider().signature_verification_algorithms,
        })),
        None => b.with_no_client_auth(),
    };
    let mut config = b
        .with_single_cert(id.certs, id.key)
        .map_err(|e| err(format!("tls: certificate and key: {e}")))?;
    config.max_early_data_size = 0;
    // Once the handshake is done, records are sealed and opened with rustls's record
    // protection given the traffic keys (see `Stream`); the keys stay in this process.
    config.enable_secret_extraction = true;
    Ok(config)
}

/// A client's configuration: checking the server with `verifier`, presenting `id` if
/// the server asks.
fn client_config(
    verifier: Arc<Pinned>,
    id: Option<Identity>,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, TlsError> {
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| err(format!("tls: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match id {
        Some(id) => b
            .with_client_auth_cert(id.certs, id.key)
            .map_err(|e| err(format!("client certificate: {e}")))?,
        None => b.with_no_client_auth(),
    };
    // As for servers (see `server_config`).
    config.enable_secret_extraction = true;
    Ok(config)
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

/// Open `known` to append to (made 0600 if new).
fn open_known(known: &Path) -> Result<std::fs::File, TlsError> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(known)
        .map_err(|e| err(format!("{}: {}", known.display(), ename(&e))))
}

/// Append a line for `host!port` to `known`, open to append.
fn remember(
    known: &mut std::fs::File,
    path: &Path,
    host: &str,
    port: u16,
    fp: &str,
) -> Result<(), TlsError> {
    use std::io::Write;
    writeln!(known, "{host}!{port} {fp}")
        .map_err(|e| err(format!("{}: {}", path.display(), ename(&e))))
}

/// Run the client's side of the handshake over `tcp`, checking the server against the
/// pins of the dial string or `$HOME/lib/tls/known`.
pub async fn connect(tcp: tokio::net::TcpStream, t: &Target) -> Result<Stream, TlsError> {
    t.prepare()?.handshake(tcp).await
}

/// Everything a client's handshake needs from the file system (the pins, the user's
/// identity, the `known` file to remember a new server in), read beforehand, so that
/// the handshake itself can run where `$HOME` is out of reach: the namespace engine's
/// mount server makes its connection, prepares, leaves the name space, and only then
/// shakes hands.
pub struct Prepared {
    target: Target,
    /// For trust on first use: `known`'s path and the file, open to append.
    known: Option<(PathBuf, std::fs::File)>,
    /// The pins and whether to trust on first use, and what the server showed.
    verifier: Arc<Pinned>,
    config: Arc<rustls::ClientConfig>,
}

impl Target {
    /// Read what the handshake with this server will need (see [`Prepared`]).
    pub fn prepare(&self) -> Result<Prepared, TlsError> {
        let name = self.name();
        let mut pins = self.pins.clone();
        let mut known = None;
        if pins.is_empty() {
            let k = dir()?.join("known");
            pins = known_pins(&k, &self.host, self.port)?;
            known = Some(k);
        }
        let tofu = self.tofu && pins.is_empty();
        let known = match known {
            Some(k) if tofu => {
                let f = open_known(&k).map_err(|e| err(format!("{name}: {e}")))?;
                Some((k, f))
            }
            _ => None,
        };
        let algs = provider().signature_verification_algorithms;
        let verifier = Arc::new(Pinned {
            pins,
            tofu,
            seen: Mutex::new(None),
            algs,
        });
        // The user's identity goes along for servers that ask for one; a broken one is
        // an error rather than silently left out.
        let id = Identity::user().map_err(|e| err(format!("{name}: {e}")))?;
        let config = client_config(Arc::clone(&verifier), id, rustls::DEFAULT_VERSIONS)
            .map_err(|e| err(format!("{name}: {e}")))?;
        Ok(Prepared {
            target: self.clone(),
            known,
            verifier,
            config: Arc::new(config),
        })
    }
}

impl Prepared {
    /// Run the client's side of the handshake over `tcp`.
    pub async fn handshake(self, tcp: tokio::net::TcpStream) -> Result<Stream, TlsError> {
        let t = &self.target;
        let name = t.name();
        // Names are not checked (the pin is), but a DNS name goes along as SNI.
        let sni = ServerName::try_from(t.host.clone()).unwrap_or(ServerName::IpAddress(
            std::net::IpAddr::from([127, 0, 0, 1]).into(),
        ));
        let (pins, tofu) = (&self.verifier.pins, self.verifier.tofu);
        match client_handshake(tcp, self.config, sni).await {
            Ok(s) => {
                // `known` is open only for trust on first use.
                if let Some((path, mut file)) = self.known
                    && let Some(fp) = self.verifier.seen.lock().ok().and_then(|s| s.clone())
                {
                    remember(&mut file, &path, &t.host, t.port, &fp)
                        .map_err(|e| err(format!("{name}: {e}")))?;
                }
                Ok(s)
            }
            Err(e) => {
                let seen = self.verifier.seen.lock().ok().and_then(|s| s.clone());
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
}

/// The client's side of the handshake on `tcp`.
async fn client_handshake(
    tcp: tokio::net::TcpStream,
    config: Arc<rustls::ClientConfig>,
    sni: ServerName<'static>,
) -> io::Result<Stream> {
    let conn = rustls::client::UnbufferedClientConnection::new(config, sni)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let est = handshake(conn, &tcp).await?;
    Stream::new(tcp, est)
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

// The connection.
//
// rustls does the handshake (its unbuffered interface), and with it the certificate
// checks and the key schedule; for as long as the connection lasts it also derives the
// keys of key updates and takes session tickets (its `kernel` interface, made for the
// kernel's TLS). The records are sealed and opened with rustls's own record protection
// (`MessageEncrypter`, `MessageDecrypter`: the AEAD, the nonce made from the sequence
// number, TLS 1.3's inner content type and padding), and framed here, as the kernel's
// TLS frames them. The framing is here because a general-purpose TLS stream costs much
// of what TLS costs 9P: rustls's buffered connection reads the socket 4 KiB at a time,
// copies the records into a buffer of its own, decrypts them there, copies each
// plaintext into a fresh allocation and again into the caller's buffer; and the two
// directions of a split stream share one lock. Here:
//
// - the reading half reads up to [`RECV_MAX`] bytes of records at once into its buffer,
//   opens each record in place there, and copies the plaintext straight into the
//   caller's buffer (for a large 9P message, the frame's own buffer);
// - the writing half seals up to [`SEND_BATCH`] bytes of plaintext into full-size
//   records and sends them with one vectored write;
// - each half keeps its own keys and sequence number, so neither waits for the other;
//   they meet only for a key update or an alert.
//
// Copies. glibc copies blocks of 2 KiB and more with `rep movsb`, which on AMD Zen
// processors crawls, at a twentieth of its speed, when the destination lies 1 to 63
// bytes past the source modulo 4 KiB. A record's body lies 5 bytes (its header) into
// rustls's buffer, and measured, most of a server's copies of 9P data into records met
// the case. rustls's buffers for full records come from the allocator alike (blocks of
// one size lie alike modulo 4 KiB), so the writing half expects each to lie as the last
// did, and ends a record early where that makes the copies into the records after it
// land 2 KiB off (one short record in a large message); rustls then copies the data
// straight from the caller's buffers at full speed: the one read of 9P's file data,
// seldom in the cache, from memory. Where the buffer's place is not known, or was not
// as expected, the record's plaintext is first gathered into a stage placed 2 KiB off
// the source, and rustls copies it from there, warm in the cache, in pieces of at most
// [`PIECE`] bytes, which go by vector moves at full speed whatever their alignment. The
// reading half hands plaintext out in such pieces too.

/// The most record bytes read from the socket at once: the buffer starts at
/// [`RECV_MIN`] and grows while reads fill it.
const RECV_MAX: usize = 256 * 1024;
/// More than the largest record, so that a partial record always fits.
const RECV_MIN: usize = 32 * 1024;
/// The most plaintext sealed before the records go to the socket.
const SEND_BATCH: usize = 256 * 1024;
/// The largest copy of bulk data made at once where the alignment is not chosen (see
/// above).
const PIECE: usize = 1536;
/// The most plaintext in a record (2^14).
const MAX_PLAIN: usize = 16 * 1024;
/// The largest record body accepted: 2^14 + 256 in TLS 1.3, 2^14 + 2048 in TLS 1.2.
const MAX_BODY_TLS13: usize = MAX_PLAIN + 256;
const MAX_BODY_TLS12: usize = MAX_PLAIN + 2048;
const HEADER: usize = 5;
/// The largest post-handshake handshake message accepted (rustls's limit too).
const MAX_HANDSHAKE_MSG: usize = 0xffff;
/// The most handshake bytes held while a flight is incomplete.
const MAX_HANDSHAKE_FLIGHT: usize = 256 * 1024;
/// rustls's limits: keys are renewed (TLS 1.3) or the connection ends (TLS 1.2) after
/// this many records, and no sequence number reaches the last.
const SEQ_SOFT_LIMIT: u64 = 0xffff_ffff_ffff_0000;
const SEQ_HARD_LIMIT: u64 = 0xffff_ffff_ffff_fffe;
/// Key update requests allowed between two records of application data, warning alerts
/// and TLS 1.2 renegotiation requests allowed at all (rustls's and BoringSSL's limits).
const KEY_UPDATE_REQUESTS: u8 = 32;
const WARNING_ALERTS: u8 = 4;
const RENEGOTIATION_REQUESTS: u8 = 1;

const KEY_UPDATE: u8 = 24;
const NEW_SESSION_TICKET: u8 = 4;
const HELLO_REQUEST: u8 = 0;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error of the TLS layer as an I/O error, in plain words.
fn tls_io(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, describe_tls(&e))
}

/// rustls's side of a connection once the handshake is done: what derives the keys of
/// key updates and takes session tickets.
enum Kernel {
    Client(rustls::kernel::KernelConnection<rustls::client::ClientConnectionData>),
    Server(rustls::kernel::KernelConnection<rustls::server::ServerConnectionData>),
}

impl Kernel {
    fn update_tx(&mut self) -> Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_tx_secret(),
            Kernel::Server(k) => k.update_tx_secret(),
        }
    }
    fn update_rx(&mut self) -> Result<(u64, rustls::ConnectionTrafficSecrets), rustls::Error> {
        match self {
            Kernel::Client(k) => k.update_rx_secret(),
            Kernel::Server(k) => k.update_rx_secret(),
        }
    }
    fn suite(&self) -> rustls::SupportedCipherSuite {
        match self {
            Kernel::Client(k) => k.negotiated_cipher_suite(),
            Kernel::Server(k) => k.negotiated_cipher_suite(),
        }
    }
    fn version(&self) -> rustls::ProtocolVersion {
        match self {
            Kernel::Client(k) => k.protocol_version(),
            Kernel::Server(k) => k.protocol_version(),
        }
    }
}

/// The side-specific part of driving a handshake.
trait Handshaking {
    type Data;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> rustls::unbuffered::UnbufferedStatus<'c, 'i, Self::Data>;
    fn handshaking(&self) -> bool;
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error>;
}

impl Handshaking for rustls::client::UnbufferedClientConnection {
    type Data = rustls::client::ClientConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> rustls::unbuffered::UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (s, k) = self.dangerous_into_kernel_connection()?;
        Ok((s, Kernel::Client(k)))
    }
}

impl Handshaking for rustls::server::UnbufferedServerConnection {
    type Data = rustls::server::ServerConnectionData;
    fn process<'c, 'i>(
        &'c mut self,
        incoming: &'i mut [u8],
    ) -> rustls::unbuffered::UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }
    fn handshaking(&self) -> bool {
        self.is_handshaking()
    }
    fn into_kernel(self) -> Result<(rustls::ExtractedSecrets, Kernel), rustls::Error> {
        let (s, k) = self.dangerous_into_kernel_connection()?;
        Ok((s, Kernel::Server(k)))
    }
}

/// What a handshake leaves.
struct Established {
    secrets: rustls::ExtractedSecrets,
    kernel: Kernel,
    /// Records read after the handshake's last, not yet opened.
    rest: Vec<u8>,
    /// Application data that came with the handshake's last flight.
    early: Vec<u8>,
}

async fn read_some(sock: &tokio::net::TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        sock.readable().await?;
        match sock.try_read(buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            r => return r,
        }
    }
}

async fn write_all(sock: &tokio::net::TcpStream, mut b: &[u8]) -> io::Result<()> {
    while !b.is_empty() {
        sock.writable().await?;
        match sock.try_write(b) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => b = &b[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Encode what rustls has to send (a handshake flight, an alert) at the end of `out`.
fn encode<D>(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, D>,
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let at = out.len();
    out.resize(at + 4096, 0);
    loop {
        match e.encode(&mut out[at..]) {
            Ok(n) => {
                out.truncate(at + n);
                return Ok(());
            }
            Err(rustls::unbuffered::EncodeError::InsufficientSize(s)) => {
                out.resize(at + s.required_size, 0)
            }
            Err(e) => {
                out.truncate(at);
                return Err(io::Error::other(format!("tls: {e}")));
            }
        }
    }
}

/// Run a handshake over `sock`. A failure rustls has an alert for sends the alert.
async fn handshake<C: Handshaking>(
    mut conn: C,
    sock: &tokio::net::TcpStream,
) -> io::Result<Established> {
    use rustls::unbuffered::ConnectionState;
    enum Next {
        Go,
        Read,
        Traffic,
    }
    let mut inb = vec![0u8; RECV_MIN];
    let mut have = 0;
    let mut out = Vec::new();
    let mut early = Vec::new();
    loop {
        let st = conn.process(&mut inb[..have]);
        let mut discard = st.discard;
        let next = match st.state {
            Err(e) => {
                // The alert rustls has queued, if any: a last try to send it.
                let mut alert = Vec::new();
                if let Ok(ConnectionState::EncodeTlsData(mut enc)) = conn.process(&mut []).state {
                    let _ = encode(&mut enc, &mut alert);
                }
                if !alert.is_empty() {
                    let _ = sock.try_write(&alert);
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Ok(ConnectionState::EncodeTlsData(mut enc)) => {
                encode(&mut enc, &mut out)?;
                Next::Go
            }
            Ok(ConnectionState::TransmitTlsData(t)) => {
                write_all(sock, &out).await?;
                out.clear();
                t.done();
                Next::Go
            }
            Ok(ConnectionState::BlockedHandshake) => Next::Read,
            Ok(ConnectionState::WriteTraffic(_)) => Next::Traffic,
            Ok(ConnectionState::ReadTraffic(mut r)) => {
                while let Some(rec) = r.next_record() {
                    let rec = rec.map_err(tls_io)?;
                    discard += rec.discard;
                    early.extend_from_slice(rec.payload);
                }
                Next::Go
            }
            Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "tls: the peer closed the connection during the handshake",
                ));
            }
            Ok(other) => {
                return Err(io::Error::other(format!(
                    "tls: unexpected state in the handshake: {other:?}"
                )));
            }
        };
        if discard > 0 {
            inb.copy_within(discard..have, 0);
            have -= discard;
        }
        match next {
            Next::Go => continue,
            // A server may send before the client's Finished; the handshake is not done
            // until that has come and been checked.
            Next::Traffic if !conn.handshaking() => break,
            Next::Traffic | Next::Read => {}
        }
        if have == inb.len() {
            if inb.len() >= MAX_HANDSHAKE_FLIGHT {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "tls: handshake message too large",
                ));
            }
            inb.resize(2 * inb.len(), 0);
        }
        let n = read_some(sock, &mut inb[have..]).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "tls: the peer closed the connection during the handshake",
            ));
        }
        have += n;
    }
    let (secrets, kernel) = conn.into_kernel().map_err(tls_io)?;
    inb.truncate(have);
    Ok(Established {
        secrets,
        kernel,
        rest: inb,
        early,
    })
}

/// The key and IV of traffic secrets.
fn key_iv(
    s: rustls::ConnectionTrafficSecrets,
) -> io::Result<(rustls::crypto::cipher::AeadKey, rustls::crypto::cipher::Iv)> {
    use rustls::ConnectionTrafficSecrets as S;
    match s {
        S::Aes128Gcm { key, iv } | S::Aes256Gcm { key, iv } | S::Chacha20Poly1305 { key, iv } => {
            Ok((key, iv))
        }
        _ => Err(io::Error::other("tls: unsupported cipher")),
    }
}

/// rustls's record protection for sealing with `s`. A TLS 1.2 IV is the fixed part and
/// then the explicit nonce, as the kernel's TLS takes them.
fn encrypter(
    suite: rustls::SupportedCipherSuite,
    s: rustls::ConnectionTrafficSecrets,
) -> io::Result<Box<dyn rustls::crypto::cipher::MessageEncrypter>> {
    let (key, iv) = key_iv(s)?;
    match suite {
        rustls::SupportedCipherSuite::Tls13(t) => Ok(t.aead_alg.encrypter(key, iv)),
        rustls::SupportedCipherSuite::Tls12(t) => {
            let shape = t.aead_alg.key_block_shape();
            let iv = iv.as_ref();
            let fixed = iv.get(..shape.fixed_iv_len);
            let explicit =
                iv.get(shape.fixed_iv_len..shape.fixed_iv_len + shape.explicit_nonce_len);
            match (fixed, explicit) {
                (Some(f), Some(x)) => Ok(t.aead_alg.encrypter(key, f, x)),
                _ => Err(io::Error::other("tls: bad IV length")),
            }
        }
    }
}

/// rustls's record protection for opening with `s`.
fn decrypter(
    suite: rustls::SupportedCipherSuite,
    s: rustls::ConnectionTrafficSecrets,
) -> io::Result<Box<dyn rustls::crypto::cipher::MessageDecrypter>> {
    let (key, iv) = key_iv(s)?;
    match suite {
        rustls::SupportedCipherSuite::Tls13(t) => Ok(t.aead_alg.decrypter(key, iv)),
        rustls::SupportedCipherSuite::Tls12(t) => {
            let shape = t.aead_alg.key_block_shape();
            match iv.as_ref().get(..shape.fixed_iv_len) {
                Some(f) => Ok(t.aead_alg.decrypter(key, f)),
                None => Err(io::Error::other("tls: bad IV length")),
            }
        }
    }
}

/// The most records one set of keys may seal: rustls's limits, and the suite's
/// confidentiality limit (2^24 records for AES-GCM).
fn seal_limit(suite: rustls::SupportedCipherSuite) -> u64 {
    let common = match suite {
        rustls::SupportedCipherSuite::Tls13(t) => &t.common,
        rustls::SupportedCipherSuite::Tls12(t) => &t.common,
    };
    common.confidentiality_limit.min(SEQ_SOFT_LIMIT)
}

/// What both halves of a connection share.
struct Shared {
    sock: tokio::net::TcpStream,
    kernel: Mutex<Kernel>,
    tx: Mutex<Tx>,
    suite: rustls::SupportedCipherSuite,
    tls13: bool,
    client: bool,
}

/// The sending direction: its keys, and the records sealed and not yet sent.
struct Tx {
    enc: Box<dyn rustls::crypto::cipher::MessageEncrypter>,
    seq: u64,
    /// The sequence number at which the keys are renewed (TLS 1.3) or no more records
    /// may go (TLS 1.2).
    limit: u64,
    queue: std::collections::VecDeque<Vec<u8>>,
    /// How much of the first queued record has been written.
    sent: usize,
    /// The peer asked for new keys: ours are renewed before our next record.
    update: bool,
    /// close_notify or a fatal alert has been sealed: nothing more goes.
    closed: bool,
    /// Where a record's plaintext is gathered before it is sealed (see [`Tx::seal_data`]).
    stage: Vec<u8>,
    /// Where the last record's buffer from rustls lay, modulo 4 KiB. The next is
    /// expected to lie alike: the allocator hands out blocks of one size alike.
    rec_at: Option<usize>,
    /// Records to seal through the stage before that is trusted again, after it failed.
    distrust: u32,
}

impl Tx {
    /// How far past `src`, modulo 4 KiB, rustls's copy of it would land `at` bytes into
    /// the next record, if that record's buffer lies as the last one did.
    fn copy_offset(&self, src: &[u8], at: usize) -> Option<usize> {
        if self.distrust > 0 {
            return None;
        }
        Some(copy_offset(self.rec_at?, src.as_ptr() as usize, at))
    }

    /// For data about to join the record being gathered (`at` bytes so far): how many of
    /// its bytes to take before ending the record so that rustls's copies into the
    /// records after it go at full speed; `None` if they would anyway, or it is not known.
    fn steer(&self, src: &[u8], at: usize) -> Option<usize> {
        let d = self.copy_offset(src, at)?;
        slow_copy(d).then(|| steer_cut(d, at))
    }

    /// Seal one record of application data from `slices` (at most [`MAX_PLAIN`] bytes in
    /// all). If rustls's copy of the largest slice would go at full speed, rustls copies
    /// the slices straight from the caller's buffers; else they are gathered into the
    /// stage first (see above).
    fn seal_data(&mut self, slices: &[&[u8]]) -> io::Result<()> {
        let (mut at, mut big_at, mut big) = (0, 0, &[][..]);
        for s in slices {
            if s.len() > big.len() {
                (big_at, big) = (at, *s);
            }
            at += s.len();
        }
        if self.copy_offset(big, big_at).is_some_and(|d| !slow_copy(d)) {
            let mut chunks: Vec<&[u8]> = Vec::with_capacity(slices.len() + 8);
            for s in slices {
                if s.as_ptr() == big.as_ptr() {
                    chunks.push(s);
                } else {
                    chunks.extend(s.chunks(PIECE));
                }
            }
            let r = self.seal(rustls::ContentType::ApplicationData, &chunks);
            // Had the buffer lain elsewhere, the copy was slow: stage for a while.
            if self.copy_offset(big, big_at).is_some_and(slow_copy) {
                self.distrust = 64;
            }
            return r;
        }
        self.distrust = self.distrust.saturating_sub(1);
        let total = at;
        let mut stage = std::mem::take(&mut self.stage);
        stage.resize(MAX_PLAIN + 4096, 0);
        let want = (big.as_ptr() as usize + 2048).wrapping_sub(big_at);
        let off = want.wrapping_sub(stage.as_ptr() as usize) % 4096;
        let mut at = off;
        for s in slices {
            stage[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
        let mut pieces = [&[][..]; MAX_PLAIN.div_ceil(PIECE)];
        let mut k = 0;
        for p in stage[off..off + total].chunks(PIECE) {
            pieces[k] = p;
            k += 1;
        }
        let r = self.seal(rustls::ContentType::ApplicationData, &pieces[..k]);
        self.stage = stage;
        r
    }

    /// Seal one record of `typ` holding `chunks` (at most [`MAX_PLAIN`] bytes in all).
    fn seal(&mut self, typ: rustls::ContentType, chunks: &[&[u8]]) -> io::Result<()> {
        if self.closed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "tls: the connection is closed for writing",
            ));
        }
        if self.seq >= self.limit {
            return Err(io::Error::other(
                "tls: the keys have sealed as many records as is safe",
            ));
        }
        let m = rustls::crypto::cipher::OutboundPlainMessage {
            typ,
            version: rustls::ProtocolVersion::TLSv1_2,
            payload: rustls::crypto::cipher::OutboundChunks::new(chunks),
        };
        let rec = self.enc.encrypt(m, self.seq).map_err(tls_io)?.encode();
        self.seq += 1;
        self.rec_at = Some(rec.as_ptr() as usize % 4096);
        self.queue.push_back(rec);
        Ok(())
    }

    /// Seal an alert; nothing more goes after a fatal one or close_notify.
    fn alert(&mut self, fatal: bool, desc: rustls::AlertDescription) {
        let close = fatal || desc == rustls::AlertDescription::CloseNotify;
        if !self.closed {
            let _ = self.seal(
                rustls::ContentType::Alert,
                &[&[if fatal { 2 } else { 1 }, u8::from(desc)]],
            );
        }
        self.closed |= close;
    }

    /// In TLS 1.3, renew the keys when the peer has asked, or before they have sealed
    /// too much: a KeyUpdate goes under the old keys (taking their last sequence number
    /// at most), the records after it under the new.
    fn renew(&mut self, sh: &Shared) -> io::Result<()> {
        if !sh.tls13 || !(self.update || self.seq + 1 >= self.limit) {
            return Ok(());
        }
        self.seal(rustls::ContentType::Handshake, &[&[KEY_UPDATE, 0, 0, 1, 0]])?;
        let (seq, secrets) = lock(&sh.kernel).update_tx().map_err(tls_io)?;
        self.enc = encrypter(sh.suite, secrets)?;
        self.seq = seq;
        self.update = false;
        Ok(())
    }

    /// Write queued records as far as the socket takes them now; true once all are.
    fn send(&mut self, sock: &tokio::net::TcpStream) -> io::Result<bool> {
        while !self.queue.is_empty() {
            let mut iov = [io::IoSlice::new(&[]); 64];
            let mut k = 0;
            for r in self.queue.iter().take(iov.len()) {
                iov[k] = io::IoSlice::new(if k == 0 { &r[self.sent..] } else { r });
                k += 1;
            }
            let mut n = match sock.try_write_vectored(&iov[..k]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            while let Some(front) = self.queue.front() {
                let left = front.len() - self.sent;
                if n < left {
                    self.sent += n;
                    break;
                }
                n -= left;
                self.sent = 0;
                self.queue.pop_front();
            }
        }
        Ok(true)
    }

    /// Write all queued records; pending (woken when the socket can take more) while
    /// they do not all fit.
    fn poll_send(
        &mut self,
        sock: &tokio::net::TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if self.send(sock)? {
                return Poll::Ready(Ok(()));
            }
            std::task::ready!(sock.poll_write_ready(cx))?;
        }
    }
}

/// A TLS connection whose handshake is done. [`Stream::into_conn`] gives its halves.
pub struct Stream {
    reader: Reader,
    writer: Writer,
}

impl Stream {
    fn new(sock: tokio::net::TcpStream, est: Established) -> io::Result<Stream> {
        let suite = est.kernel.suite();
        let tls13 = est.kernel.version() == rustls::ProtocolVersion::TLSv1_3;
        let client = matches!(est.kernel, Kernel::Client(_));
        let (tx_seq, tx_secrets) = est.secrets.tx;
        let (rx_seq, rx_secrets) = est.secrets.rx;
        let limit = seal_limit(suite);
        let sh = Arc::new(Shared {
            sock,
            kernel: Mutex::new(est.kernel),
            tx: Mutex::new(Tx {
                enc: encrypter(suite, tx_secrets)?,
                seq: tx_seq,
                limit,
                queue: std::collections::VecDeque::new(),
                sent: 0,
                update: false,
                closed: false,
                stage: Vec::new(),
                rec_at: None,
                distrust: 0,
            }),
            suite,
            tls13,
            client,
        });
        let mut buf = est.rest;
        let end = buf.len();
        buf.resize(end.max(RECV_MIN), 0);
        Ok(Stream {
            reader: Reader {
                sh: Arc::clone(&sh),
                dec: decrypter(suite, rx_secrets)?,
                seq: rx_seq,
                buf,
                start: 0,
                end,
                plain: 0..0,
                early: est.early,
                early_at: 0,
                hs: Vec::new(),
                closed: false,
                eof: false,
                failed: None,
                key_update_requests: KEY_UPDATE_REQUESTS,
                warnings: WARNING_ALERTS,
                renegotiations: RENEGOTIATION_REQUESTS,
            },
            writer: Writer { sh },
        })
    }

    /// The cipher suite agreed on.
    pub fn cipher_suite(&self) -> rustls::CipherSuite {
        self.writer.sh.suite.suite()
    }

    /// The protocol version agreed on.
    pub fn protocol_version(&self) -> rustls::ProtocolVersion {
        lock(&self.writer.sh.kernel).version()
    }

    /// The two halves, as a 9P connection to `peer`.
    pub fn into_conn(self, peer: impl Into<String>) -> crate::dial::Conn {
        crate::dial::Conn {
            read: crate::dial::ReadHalf::Other(Box::new(self.reader)),
            write: crate::dial::WriteHalf::Other(Box::new(self.writer)),
            peer: peer.into(),
        }
    }
}

/// A server's TLS configuration, ready to take connections.
#[derive(Clone)]
pub struct Acceptor {
    config: Arc<rustls::ServerConfig>,
}

/// A server's handshake with one client, to be awaited in the connection's own task.
pub type Accepting =
    std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<Stream>> + Send>>;

impl Acceptor {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Acceptor {
        Acceptor { config }
    }

    /// The server's side of the handshake with the client on `tcp`.
    pub fn accept(&self, tcp: tokio::net::TcpStream) -> Accepting {
        let config = Arc::clone(&self.config);
        Box::pin(async move {
            let conn = rustls::server::UnbufferedServerConnection::new(config)
                .map_err(|e| io::Error::other(describe_tls(&e)))?;
            let est = handshake(conn, &tcp).await?;
            Stream::new(tcp, est)
        })
    }
}

/// Whether `rep movsb` copies slowly to a destination this far past the source
/// (modulo 4 KiB); see above.
fn slow_copy(d: usize) -> bool {
    (1..64).contains(&d)
}

/// How far past `src`, modulo 4 KiB, a copy lands `at` bytes into a record whose buffer
/// lies `rec_at` past a 4 KiB boundary (its body starts [`HEADER`] bytes in).
fn copy_offset(rec_at: usize, src: usize, at: usize) -> usize {
    (rec_at + HEADER + at).wrapping_sub(src) % 4096
}

/// Given a copy `d` past its source `at` bytes into a record, how many bytes further on
/// a record should start for its copy to be 2 KiB past: a record starting `k` bytes on
/// copies `d - at - k` past.
fn steer_cut(d: usize, at: usize) -> usize {
    (d + 2 * 4096 - at % 4096 - 2048) % 4096
}

/// Copy `src` to the end of `out`, in pieces (see above).
fn put(out: &mut tokio::io::ReadBuf<'_>, src: &[u8]) {
    for p in src.chunks(PIECE) {
        out.put_slice(p);
    }
}

/// The reading half: opens records in its buffer, hands out their plaintext.
struct Reader {
    sh: Arc<Shared>,
    dec: Box<dyn rustls::crypto::cipher::MessageDecrypter>,
    seq: u64,
    /// Records from the socket; `start..end` are not yet opened.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The plaintext of the last record opened not yet handed out: a range of `buf`.
    plain: std::ops::Range<usize>,
    /// Application data that came with the handshake, handed out first.
    early: Vec<u8>,
    early_at: usize,
    /// A post-handshake handshake message being gathered from its records.
    hs: Vec<u8>,
    /// close_notify has come: the end of the stream.
    closed: bool,
    /// The socket has ended.
    eof: bool,
    /// The error that ended the connection, given again to every later read.
    failed: Option<(io::ErrorKind, String)>,
    key_update_requests: u8,
    warnings: u8,
    renegotiations: u8,
}

impl Reader {
    /// End the connection for a peer's fault: tell the peer with a fatal alert when
    /// `alert` says so, and keep the error for every later read.
    fn fail(
        &mut self,
        alert: Option<rustls::AlertDescription>,
        kind: io::ErrorKind,
        msg: impl Into<String>,
    ) -> io::Error {
        if let Some(desc) = alert {
            let mut tx = lock(&self.sh.tx);
            tx.alert(true, desc);
            let _ = tx.send(&self.sh.sock);
        }
        let msg = msg.into();
        self.failed = Some((kind, msg.clone()));
        io::Error::new(kind, msg)
    }

    fn violation(&mut self, alert: rustls::AlertDescription, what: &str) -> io::Error {
        self.fail(
            Some(alert),
            io::ErrorKind::InvalidData,
            format!("tls: the peer broke the protocol: {what}"),
        )
    }

    /// Open the next record if it is all here: true if one was.
    fn open(&mut self) -> io::Result<bool> {
        use rustls::{AlertDescription as A, ContentType as T};
        let avail = self.end - self.start;
        if avail < HEADER {
            return Ok(false);
        }
        let h = &self.buf[self.start..self.start + HEADER];
        let typ = T::from(h[0]);
        let version = rustls::ProtocolVersion::from(u16::from_be_bytes([h[1], h[2]]));
        let len = u16::from_be_bytes([h[3], h[4]]) as usize;
        let max = if self.sh.tls13 {
            MAX_BODY_TLS13
        } else {
            MAX_BODY_TLS12
        };
        if len > max {
            return Err(self.violation(A::RecordOverflow, "oversized record"));
        }
        // After the handshake TLS 1.3 has only (encrypted) application data records;
        // TLS 1.2 has no change_cipher_spec.
        let known = match typ {
            T::ApplicationData => true,
            T::Handshake | T::Alert => !self.sh.tls13,
            _ => false,
        };
        if !known {
            return Err(self.violation(A::UnexpectedMessage, "unexpected record type"));
        }
        if avail < HEADER + len {
            return Ok(false);
        }
        if self.seq >= SEQ_HARD_LIMIT {
            return Err(self.fail(
                None,
                io::ErrorKind::InvalidData,
                "tls: the peer's keys have sealed too many records",
            ));
        }
        let body = self.start + HEADER;
        self.start = body + len;
        let base = self.buf.as_ptr() as usize;
        let msg = rustls::crypto::cipher::InboundOpaqueMessage::new(
            typ,
            version,
            &mut self.buf[body..body + len],
        );
        let (typ, at, n) = match self.dec.decrypt(msg, self.seq) {
            Ok(p) => (p.typ, p.payload.as_ptr() as usize - base, p.payload.len()),
            Err(rustls::Error::PeerSentOversizedRecord) => {
                return Err(self.violation(A::RecordOverflow, "oversized record"));
            }
            Err(rustls::Error::DecryptError) => {
                return Err(self.fail(
                    Some(A::BadRecordMac),
                    io::ErrorKind::InvalidData,
                    "tls: a record from the peer failed its integrity check",
                ));
            }
            Err(e) => {
                let m = describe_tls(&e);
                return Err(self.fail(Some(A::DecodeError), io::ErrorKind::InvalidData, m));
            }
        };
        self.seq += 1;
        if n > MAX_PLAIN {
            return Err(self.violation(A::RecordOverflow, "oversized record"));
        }
        match typ {
            T::ApplicationData => {
                if !self.hs.is_empty() {
                    return Err(
                        self.violation(A::UnexpectedMessage, "handshake message interrupted")
                    );
                }
                self.key_update_requests = KEY_UPDATE_REQUESTS;
                self.plain = at..at + n;
            }
            T::Handshake => {
                if n == 0 {
                    return Err(self.violation(A::UnexpectedMessage, "empty handshake record"));
                }
                if self.hs.len() + n > MAX_HANDSHAKE_MSG + 4 {
                    return Err(self.violation(A::DecodeError, "handshake message too large"));
                }
                self.hs.extend_from_slice(&self.buf[at..at + n]);
                self.handshake()?;
            }
            T::Alert => self.alert(at, n)?,
            _ => return Err(self.violation(A::UnexpectedMessage, "unexpected record type")),
        }
        Ok(true)
    }

    /// Act on the handshake messages gathered whole.
    fn handshake(&mut self) -> io::Result<()> {
        use rustls::AlertDescription as A;
        while self.hs.len() >= 4 {
            let mlen = u32::from_be_bytes([0, self.hs[1], self.hs[2], self.hs[3]]) as usize;
            if mlen > MAX_HANDSHAKE_MSG {
                return Err(self.violation(A::DecodeError, "handshake message too large"));
            }
            if self.hs.len() < 4 + mlen {
                return Ok(());
            }
            match (self.hs[0], self.sh.tls13, self.sh.client) {
                (KEY_UPDATE, true, _) => {
                    if mlen != 1 {
                        return Err(self.violation(A::DecodeError, "bad key update"));
                    }
                    // New keys from the next record on: nothing may follow in this one.
                    if self.hs.len() != 5 {
                        return Err(self.violation(
                            A::UnexpectedMessage,
                            "data after a key update in its record",
                        ));
                    }
                    let requested = match self.hs[4] {
                        0 => false,
                        1 => true,
                        _ => return Err(self.violation(A::IllegalParameter, "bad key update")),
                    };
                    if requested {
                        if self.key_update_requests == 0 {
                            return Err(
                                self.violation(A::UnexpectedMessage, "too many key updates")
                            );
                        }
                        self.key_update_requests -= 1;
                    }
                    let updated = lock(&self.sh.kernel).update_rx();
                    let (seq, secrets) = match updated {
                        Ok(s) => s,
                        Err(e) => {
                            let m = describe_tls(&e);
                            return Err(self.fail(
                                Some(A::InternalError),
                                io::ErrorKind::InvalidData,
                                m,
                            ));
                        }
                    };
                    self.dec = decrypter(self.sh.suite, secrets)?;
                    self.seq = seq;
                    if requested {
                        lock(&self.sh.tx).update = true;
                    }
                }
                (NEW_SESSION_TICKET, true, true) => {
                    let r = match &mut *lock(&self.sh.kernel) {
                        Kernel::Client(k) => k.handle_new_session_ticket(&self.hs[4..4 + mlen]),
                        Kernel::Server(_) => Ok(()),
                    };
                    if let Err(e) = r {
                        let m = describe_tls(&e);
                        return Err(self.fail(Some(A::DecodeError), io::ErrorKind::InvalidData, m));
                    }
                }
                (HELLO_REQUEST, false, true) if mlen == 0 => {
                    // TLS 1.2 renegotiation is refused, as rustls refuses it.
                    if self.renegotiations == 0 {
                        return Err(
                            self.violation(A::UnexpectedMessage, "too many renegotiation requests")
                        );
                    }
                    self.renegotiations -= 1;
                    let mut tx = lock(&self.sh.tx);
                    tx.alert(false, A::NoRenegotiation);
                    let _ = tx.send(&self.sh.sock);
                }
                _ => {
                    return Err(
                        self.violation(A::UnexpectedMessage, "unexpected handshake message")
                    );
                }
            }
            self.hs.drain(..4 + mlen);
        }
        Ok(())
    }

    /// Act on an alert from the peer.
    fn alert(&mut self, at: usize, n: usize) -> io::Result<()> {
        use rustls::AlertDescription as A;
        if !self.hs.is_empty() {
            return Err(self.violation(A::UnexpectedMessage, "handshake message interrupted"));
        }
        if n != 2 {
            return Err(self.violation(A::DecodeError, "bad alert"));
        }
        let (level, desc) = (self.buf[at], A::from(self.buf[at + 1]));
        if level != 1 && level != 2 {
            return Err(self.violation(A::IllegalParameter, "bad alert level"));
        }
        if desc == A::CloseNotify {
            self.closed = true;
            return Ok(());
        }
        let e = rustls::Error::AlertReceived(desc);
        if level == 1 {
            // A warning: TLS 1.3 has none but user_canceled.
            if self.warnings == 0 || (self.sh.tls13 && desc != A::UserCanceled) {
                return Err(self.fail(
                    Some(A::DecodeError),
                    io::ErrorKind::InvalidData,
                    describe_tls(&e),
                ));
            }
            self.warnings -= 1;
            return Ok(());
        }
        Err(self.fail(None, io::ErrorKind::InvalidData, describe_tls(&e)))
    }

    /// Read more records from the socket, after what is left of a partial one.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.start > 0 {
            // Move the partial record to the front, in pieces (ascending, so that
            // overlapping pieces are safe).
            let mut from = self.start;
            let mut to = 0;
            while from < self.end {
                let n = (self.end - from).min(PIECE);
                self.buf.copy_within(from..from + n, to);
                from += n;
                to += n;
            }
            self.end -= self.start;
            self.start = 0;
        }
        loop {
            std::task::ready!(self.sh.sock.poll_read_ready(cx))?;
            match self.sh.sock.try_read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(n) => {
                    self.end += n;
                    if self.end == self.buf.len() && self.buf.len() < RECV_MAX {
                        // Reads fill the buffer: more room next time.
                        let grown = (2 * self.buf.len()).min(RECV_MAX);
                        self.buf.resize(grown, 0);
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
        let before = out.filled().len();
        loop {
            if me.early_at < me.early.len() {
                let n = (me.early.len() - me.early_at).min(out.remaining());
                put(out, &me.early[me.early_at..me.early_at + n]);
                me.early_at += n;
            }
            if !me.plain.is_empty() {
                let n = me.plain.len().min(out.remaining());
                put(out, &me.buf[me.plain.start..me.plain.start + n]);
                me.plain.start += n;
            }
            let got = out.filled().len() > before;
            if out.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Some((kind, msg)) = &me.failed {
                return Poll::Ready(if got {
                    Ok(())
                } else {
                    Err(io::Error::new(*kind, msg.clone()))
                });
            }
            if me.closed {
                // The end of the stream, once what came before close_notify is out.
                return Poll::Ready(Ok(()));
            }
            match me.open() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => return Poll::Ready(if got { Ok(()) } else { Err(e) }),
            }
            if got {
                return Poll::Ready(Ok(()));
            }
            if me.eof {
                let msg = if me.start < me.end {
                    "tls: the connection ended in the middle of a record"
                } else {
                    "tls: the connection ended without close_notify"
                };
                return Poll::Ready(Err(me.fail(None, io::ErrorKind::UnexpectedEof, msg)));
            }
            std::task::ready!(me.poll_fill(cx))?;
        }
    }
}

/// The writing half: seals plaintext into records and sends them.
struct Writer {
    sh: Arc<Shared>,
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
        let sh = &*self.sh;
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        let mut tx = lock(&sh.tx);
        // What was sealed before goes first: nothing more is taken while the socket
        // cannot keep up.
        std::task::ready!(tx.poll_send(&sh.sock, cx))?;
        // Full records, each gathered from the caller's buffers; one may end early so
        // that rustls's copies into the records after it go at full speed.
        let mut slices: Vec<&[u8]> = Vec::with_capacity(4);
        let (mut taken, mut in_rec) = (0, 0);
        'all: for b in bufs {
            let mut b: &[u8] = b;
            while !b.is_empty() {
                if in_rec == 0 && taken >= SEND_BATCH {
                    break 'all;
                }
                let mut n = b.len().min(MAX_PLAIN - in_rec);
                let mut end = in_rec + n == MAX_PLAIN;
                if n > PIECE {
                    match tx.steer(b, in_rec) {
                        Some(0) if in_rec > 0 => (n, end) = (0, true),
                        Some(k) if k > 0 && k < n => (n, end) = (k, true),
                        _ => {}
                    }
                }
                if n > 0 {
                    slices.push(&b[..n]);
                }
                b = &b[n..];
                in_rec += n;
                taken += n;
                if end {
                    tx.renew(sh)?;
                    tx.seal_data(&slices)?;
                    slices.clear();
                    in_rec = 0;
                }
            }
        }
        if in_rec > 0 {
            tx.renew(sh)?;
            tx.seal_data(&slices)?;
        }
        // Start sending at once; what the socket does not take now goes next time.
        tx.send(&sh.sock)?;
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        lock(&self.sh.tx).poll_send(&self.sh.sock, cx)
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let sh = &*self.sh;
        {
            let mut tx = lock(&sh.tx);
            tx.alert(false, rustls::AlertDescription::CloseNotify);
            std::task::ready!(tx.poll_send(&sh.sock, cx))?;
        }
        // The reading half goes on: the peer may still have something to say.
        use std::os::fd::AsRawFd;
        // SAFETY: shutdown(2) of the writing direction of a socket we hold.
        if unsafe { libc::shutdown(sh.sock.as_raw_fd(), libc::SHUT_WR) } < 0 {
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

    // The connection's record layer, over loopback sockets: against itself, against
    // rustls's own (buffered) connection, and through a relay that cuts, splits and
    // spoils records.

    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const LIMIT: Duration = Duration::from_secs(60);
    static TLS12_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn identity() -> Identity {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        Identity {
            certs: vec![ck.cert.der().clone()],
            key: PrivateKeyDer::try_from(ck.signing_key.serialize_der()).expect("key"),
        }
    }

    /// A server configuration and a client configuration pinning its certificate.
    fn configs(
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let id = identity();
        let fp = id.fingerprint();
        let server = server_config(id, None, rustls::DEFAULT_VERSIONS).expect("server config");
        let verifier = Arc::new(Pinned {
            pins: vec![fp],
            tofu: false,
            seen: Mutex::new(None),
            algs: provider().signature_verification_algorithms,
        });
        let client = client_config(verifier, None, versions).expect("client config");
        (Arc::new(server), Arc::new(client))
    }

    fn sni() -> ServerName<'static> {
        ServerName::try_from("localhost").expect("name")
    }

    async fn listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let a = l.local_addr().expect("addr");
        (l, a)
    }

    /// A client and a server connected through `relay` (see [`relay`]), or directly.
    async fn pair_with(
        versions: &[&'static rustls::SupportedProtocolVersion],
        relay: Option<(Rule, Rule)>,
    ) -> (crate::dial::Conn, crate::dial::Conn) {
        let (server, client) = configs(versions);
        let (l, a) = listener().await;
        let dial = match relay {
            None => a,
            Some((up, down)) => relay_to(a, up, down).await,
        };
        let acc = tokio::spawn(async move {
            let (s, _) = l.accept().await.expect("accept");
            Acceptor::new(server)
                .accept(s)
                .await
                .expect("server handshake")
        });
        let tcp = tokio::net::TcpStream::connect(dial).await.expect("connect");
        let c = client_handshake(tcp, client, sni())
            .await
            .expect("client handshake");
        let s = acc.await.expect("join");
        (c.into_conn("client"), s.into_conn("server"))
    }

    async fn pair() -> (crate::dial::Conn, crate::dial::Conn) {
        pair_with(rustls::DEFAULT_VERSIONS, None).await
    }

    fn data(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 13) as u8)
            .collect()
    }

    /// What a relay does to each record going one way: `Some(k)` sends its first `k`
    /// bytes, waits, then the rest; the last rule may cut the connection.
    type Rule = Box<dyn FnMut(usize, &mut Vec<u8>) -> Act + Send>;

    enum Act {
        Pass,
        Split(usize),
        /// Send this many bytes of the record, then close both ways.
        Cut(usize),
    }

    fn pass() -> Rule {
        Box::new(|_, _| Act::Pass)
    }

    /// Listen for one client and relay it to `to`, record by record, through the rules.
    async fn relay_to(to: std::net::SocketAddr, up: Rule, down: Rule) -> std::net::SocketAddr {
        let (l, a) = listener().await;
        tokio::spawn(async move {
            let Ok((c, _)) = l.accept().await else { return };
            let Ok(s) = tokio::net::TcpStream::connect(to).await else {
                return;
            };
            let _ = c.set_nodelay(true);
            let _ = s.set_nodelay(true);
            let (cr, cw) = c.into_split();
            let (sr, sw) = s.into_split();
            tokio::spawn(forward(cr, sw, up));
            tokio::spawn(forward(sr, cw, down));
        });
        a
    }

    async fn forward(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        mut rule: Rule,
    ) {
        let mut i = 0;
        loop {
            let mut rec = vec![0u8; HEADER];
            if r.read_exact(&mut rec).await.is_err() {
                let _ = w.shutdown().await;
                return;
            }
            let len = u16::from_be_bytes([rec[3], rec[4]]) as usize;
            rec.resize(HEADER + len, 0);
            if r.read_exact(&mut rec[HEADER..]).await.is_err() {
                let _ = w.shutdown().await;
                return;
            }
            let act = rule(i, &mut rec);
            i += 1;
            let ok = match act {
                Act::Pass => w.write_all(&rec).await.is_ok(),
                Act::Split(k) => {
                    let k = k.min(rec.len());
                    let first = w.write_all(&rec[..k]).await.is_ok();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    first && w.write_all(&rec[k..]).await.is_ok()
                }
                Act::Cut(k) => {
                    let _ = w.write_all(&rec[..k.min(rec.len())]).await;
                    let _ = w.shutdown().await;
                    return;
                }
            };
            if !ok {
                return;
            }
        }
    }

    #[test]
    fn aes_128_gcm_in_tls_1_3_is_agreed() {
        rt().block_on(async {
            let (server, client) = configs(rustls::DEFAULT_VERSIONS);
            let (l, a) = listener().await;
            let acc = tokio::spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                Acceptor::new(server)
                    .accept(s)
                    .await
                    .expect("server handshake")
            });
            let tcp = tokio::net::TcpStream::connect(a).await.expect("connect");
            let c = client_handshake(tcp, client, sni())
                .await
                .expect("handshake");
            let s = acc.await.expect("join");
            for st in [&c, &s] {
                assert_eq!(
                    st.cipher_suite(),
                    rustls::CipherSuite::TLS13_AES_128_GCM_SHA256
                );
                assert_eq!(st.protocol_version(), rustls::ProtocolVersion::TLSv1_3);
            }
        });
    }

    /// Large messages, many records each, both ways at once: the server echoes what
    /// comes, the client writes and reads concurrently, in writes of odd sizes.
    fn echo(versions: &'static [&'static rustls::SupportedProtocolVersion]) {
        rt().block_on(async {
            let (c, s) = tokio::time::timeout(LIMIT, pair_with(versions, None))
                .await
                .expect("pair");
            let (mut sr, mut sw) = (s.read, s.write);
            let server = tokio::spawn(async move {
                let mut buf = vec![0u8; 100_000];
                loop {
                    let n = sr.read(&mut buf).await.expect("server read");
                    if n == 0 {
                        break;
                    }
                    sw.write_all(&buf[..n]).await.expect("server write");
                }
                sw.shutdown().await.expect("server shutdown");
            });
            let want = data(5 << 20, 1);
            let (mut cr, mut cw) = (c.read, c.write);
            let w = want.clone();
            let writer = tokio::spawn(async move {
                let mut at = 0;
                let mut step = 1;
                while at < w.len() {
                    // 1, 3, 9, ... bytes, up to a few hundred KiB, several slices at once.
                    let n = step.min(w.len() - at);
                    let (a, b) = w[at..at + n].split_at(n / 3);
                    let bufs = [io::IoSlice::new(a), io::IoSlice::new(b)];
                    let k = cw.write_vectored(&bufs).await.expect("client write");
                    at += k;
                    step = if step > 300_000 { 1 } else { step * 3 };
                }
                cw.flush().await.expect("flush");
                cw.shutdown().await.expect("client shutdown");
            });
            let mut got = Vec::new();
            tokio::time::timeout(LIMIT, cr.read_to_end(&mut got))
                .await
                .expect("in time")
                .expect("client read");
            assert!(got == want, "echoed {} bytes of {}", got.len(), want.len());
            writer.await.expect("writer");
            server.await.expect("server");
        });
    }

    #[test]
    fn large_messages_both_ways_tls13() {
        echo(rustls::DEFAULT_VERSIONS);
    }

    #[test]
    fn large_messages_both_ways_tls12() {
        echo(TLS12_ONLY);
    }

    #[test]
    fn tls12_is_agreed_when_the_client_asks() {
        rt().block_on(async {
            let (server, client) = configs(TLS12_ONLY);
            let (l, a) = listener().await;
            let acc = tokio::spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                Acceptor::new(server)
                    .accept(s)
                    .await
                    .expect("server handshake")
            });
            let tcp = tokio::net::TcpStream::connect(a).await.expect("connect");
            let c = client_handshake(tcp, client, sni())
                .await
                .expect("handshake");
            let s = acc.await.expect("join");
            assert_eq!(c.protocol_version(), rustls::ProtocolVersion::TLSv1_2);
            assert_eq!(s.protocol_version(), rustls::ProtocolVersion::TLSv1_2);
            assert_eq!(
                c.cipher_suite(),
                rustls::CipherSuite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            );
        });
    }

    /// Every record, handshake and data, arrives in two parts, cut at every position
    /// in turn; the data is read back through a buffer of a few bytes.
    #[test]
    fn records_split_at_every_byte() {
        rt().block_on(async {
            let down: Rule = Box::new(|i, rec| Act::Split(1 + i % rec.len()));
            let up: Rule = Box::new(|i, rec| Act::Split(1 + (7 * i) % rec.len()));
            let (c, s) =
                tokio::time::timeout(LIMIT, pair_with(rustls::DEFAULT_VERSIONS, Some((up, down))))
                    .await
                    .expect("pair");
            let (mut sr, mut sw) = (s.read, s.write);
            let (mut cr, mut cw) = (c.read, c.write);
            // Small messages of one record each, then one of three records.
            let mut sizes: Vec<usize> = (0..160).map(|i| 1 + i * 3).collect();
            sizes.push(40_000);
            let msgs: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| data(n, i as u32))
                .collect();
            let m = msgs.clone();
            let server = tokio::spawn(async move {
                for msg in &m {
                    sw.write_all(msg).await.expect("write");
                    // One record each: wait for the client's word before the next.
                    let mut ack = [0u8; 1];
                    sr.read_exact(&mut ack).await.expect("ack");
                }
            });
            for msg in &msgs {
                let mut got = vec![0u8; msg.len()];
                let mut at = 0;
                while at < got.len() {
                    let end = (at + 5).min(got.len());
                    let n = tokio::time::timeout(LIMIT, cr.read(&mut got[at..end]))
                        .await
                        .expect("in time")
                        .expect("read");
                    assert!(n > 0, "early end");
                    at += n;
                }
                assert!(&got == msg, "message of {} bytes", msg.len());
                cw.write_all(b"k").await.expect("ack");
            }
            server.await.expect("server");
        });
    }

    /// The peer goes away in the middle of a record: the read fails, and says so.
    #[test]
    fn peer_closing_mid_record_is_an_error() {
        rt().block_on(async {
            // Once armed (the handshake done), the relay cuts the next record in two
            // and the connection after its first half.
            let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let a = Arc::clone(&armed);
            let down: Rule = Box::new(move |_, rec| {
                if a.load(std::sync::atomic::Ordering::SeqCst) {
                    Act::Cut(rec.len() / 2)
                } else {
                    Act::Pass
                }
            });
            let (c, s) = tokio::time::timeout(
                LIMIT,
                pair_with(rustls::DEFAULT_VERSIONS, Some((pass(), down))),
            )
            .await
            .expect("pair");
            // The server's session tickets come after the handshake: let them by first.
            tokio::time::sleep(Duration::from_millis(100)).await;
            armed.store(true, std::sync::atomic::Ordering::SeqCst);
            let mut sw = s.write;
            sw.write_all(&data(5000, 3)).await.expect("write");
            sw.flush().await.expect("flush");
            let mut cr = c.read;
            let mut buf = vec![0u8; 10_000];
            let r = tokio::time::timeout(LIMIT, cr.read(&mut buf))
                .await
                .expect("in time");
            let e = r.expect_err("a cut record is not data");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert!(e.to_string().contains("middle of a record"), "{e}");
            // And again, not a hang.
            let e = cr.read(&mut buf).await.expect_err("still an error");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        });
    }

    /// A connection closed without close_notify between records is an error too (a
    /// truncation), one closed with it the end of the stream.
    #[test]
    fn close_notify_ends_the_stream_and_its_absence_is_an_error() {
        rt().block_on(async {
            let (c, s) = tokio::time::timeout(LIMIT, pair()).await.expect("pair");
            let mut sw = s.write;
            sw.write_all(b"last words").await.expect("write");
            sw.shutdown().await.expect("shutdown");
            let mut got = Vec::new();
            let mut cr = c.read;
            cr.read_to_end(&mut got).await.expect("clean end");
            assert_eq!(got, b"last words");

            // Once armed, the relay cuts the connection before the next record.
            let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let a = Arc::clone(&armed);
            let down: Rule = Box::new(move |_, _| {
                if a.load(std::sync::atomic::Ordering::SeqCst) {
                    Act::Cut(0)
                } else {
                    Act::Pass
                }
            });
            let (c, s) = tokio::time::timeout(
                LIMIT,
                pair_with(rustls::DEFAULT_VERSIONS, Some((pass(), down))),
            )
            .await
            .expect("pair");
            let mut sw = s.write;
            sw.write_all(&data(300, 1)).await.expect("write");
            sw.flush().await.expect("flush");
            let mut cr = c.read;
            let mut got = vec![0u8; 300];
            cr.read_exact(&mut got).await.expect("the first record");
            armed.store(true, std::sync::atomic::Ordering::SeqCst);
            sw.write_all(&data(300, 2)).await.expect("write");
            let e = tokio::time::timeout(LIMIT, cr.read(&mut got))
                .await
                .expect("in time")
                .expect_err("cut");
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
            assert!(e.to_string().contains("without close_notify"), "{e}");
        });
    }

    /// A record changed on the way fails its check; the side that finds it says so to
    /// the other with an alert, which the other reports.
    #[test]
    fn a_spoilt_record_is_refused_and_the_peer_told() {
        rt().block_on(async {
            let mut n = 0;
            let up: Rule = Box::new(move |_, rec| {
                if rec.len() > 1000 {
                    n += 1;
                    if n == 2 {
                        let at = rec.len() / 2;
                        rec[at] ^= 1;
                    }
                }
                Act::Pass
            });
            let (c, s) = tokio::time::timeout(
                LIMIT,
                pair_with(rustls::DEFAULT_VERSIONS, Some((up, pass()))),
            )
            .await
            .expect("pair");
            let (mut cr, mut cw) = (c.read, c.write);
            let (mut sr, _sw) = (s.read, s.write);
            cw.write_all(&data(2000, 1)).await.expect("write");
            cw.flush().await.expect("flush");
            let mut got = vec![0u8; 2000];
            sr.read_exact(&mut got).await.expect("the first record");
            assert_eq!(got, data(2000, 1));
            cw.write_all(&data(2000, 2)).await.expect("write");
            cw.flush().await.expect("flush");
            let e = tokio::time::timeout(LIMIT, sr.read(&mut got))
                .await
                .expect("in time")
                .expect_err("spoilt");
            assert!(e.to_string().contains("integrity"), "{e}");
            let e = tokio::time::timeout(LIMIT, cr.read(&mut got))
                .await
                .expect("in time")
                .expect_err("told");
            assert!(e.to_string().contains("BadRecordMac"), "{e}");
        });
    }

    /// rustls's own connection on the other end, in a thread with a blocking socket.
    fn rustls_server(
        versions: &'static [&'static rustls::SupportedProtocolVersion],
        f: impl FnOnce(&mut rustls::StreamOwned<rustls::ServerConnection, std::net::TcpStream>)
        + Send
        + 'static,
    ) -> (
        std::net::SocketAddr,
        Arc<rustls::ClientConfig>,
        std::thread::JoinHandle<()>,
    ) {
        let id = identity();
        let fp = id.fingerprint();
        let server = Arc::new(server_config(id, None, versions).expect("server config"));
        let verifier = Arc::new(Pinned {
            pins: vec![fp],
            tofu: false,
            seen: Mutex::new(None),
            algs: provider().signature_verification_algorithms,
        });
        let client =
            Arc::new(client_config(verifier, None, rustls::DEFAULT_VERSIONS).expect("client"));
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = l.local_addr().expect("addr");
        let h = std::thread::spawn(move || {
            let (tcp, _) = l.accept().expect("accept");
            tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
            let conn = rustls::ServerConnection::new(server).expect("connection");
            let mut s = rustls::StreamOwned::new(conn, tcp);
            f(&mut s);
        });
        (a, client, h)
    }

    /// Against rustls's connection: data both ways; a key update rustls asks for is
    /// followed and answered; and ours, when our keys have sealed their share, follow
    /// one another every few records, each read by rustls.
    fn against_rustls(versions: &'static [&'static rustls::SupportedProtocolVersion]) {
        use std::io::{Read, Write};
        let tls13 = versions.contains(&&rustls::version::TLS13);
        let (a, client, h) = rustls_server(versions, move |s| {
            let mut buf = vec![0u8; 100_000];
            s.read_exact(&mut buf).expect("read");
            assert!(buf == data(100_000, 1));
            s.write_all(&data(70_000, 2)).expect("write");
            if tls13 {
                s.conn.refresh_traffic_keys().expect("key update");
            }
            s.write_all(&data(70_000, 3)).expect("write");
            s.flush().expect("flush");
            if tls13 {
                let mut one = [0u8; 1];
                s.read_exact(&mut one).expect("read after the key update");
                assert_eq!(&one, b"!");
            }
            let mut buf = vec![0u8; 300_000];
            s.read_exact(&mut buf).expect("read after key updates");
            assert!(buf == data(300_000, 4));
            s.conn.send_close_notify();
            s.flush().expect("flush");
        });
        rt().block_on(async {
            let tcp = tokio::net::TcpStream::connect(a).await.expect("connect");
            let st = client_handshake(tcp, client, sni())
                .await
                .expect("handshake");
            let sh = Arc::clone(&st.writer.sh);
            let c = st.into_conn("rustls");
            let (mut cr, mut cw) = (c.read, c.write);
            cw.write_all(&data(100_000, 1)).await.expect("write");
            let mut got = vec![0u8; 70_000];
            cr.read_exact(&mut got).await.expect("read");
            assert!(got == data(70_000, 2));
            cr.read_exact(&mut got)
                .await
                .expect("read after the key update");
            assert!(got == data(70_000, 3));
            if tls13 {
                // The update asked for is made before our next record: a KeyUpdate under
                // the old keys, the record under the new, the first they seal.
                assert!(lock(&sh.tx).update, "update asked for not noted");
                cw.write_all(b"!").await.expect("write");
                let mut tx = lock(&sh.tx);
                assert!(!tx.update && tx.seq == 1, "not renewed: seq {}", tx.seq);
                // From now on, new keys every two records.
                tx.limit = 3;
            }
            cw.write_all(&data(300_000, 4)).await.expect("write");
            cw.flush().await.expect("flush");
            if tls13 {
                let tx = lock(&sh.tx);
                assert!(tx.seq < 3, "keys not renewed: seq {}", tx.seq);
            }
            let mut rest = Vec::new();
            tokio::time::timeout(LIMIT, cr.read_to_end(&mut rest))
                .await
                .expect("in time")
                .expect("close_notify");
            assert!(rest.is_empty());
        });
        h.join().expect("rustls side");
    }

    #[test]
    fn against_rustls_tls13_with_key_updates() {
        against_rustls(rustls::DEFAULT_VERSIONS);
    }

    #[test]
    fn against_rustls_tls12() {
        against_rustls(TLS12_ONLY);
    }

    /// Our server against rustls's client, in both versions.
    #[test]
    fn server_against_rustls_client() {
        use std::io::{Read, Write};
        for versions in [rustls::DEFAULT_VERSIONS, TLS12_ONLY] {
            let (server, client) = configs(versions);
            let runtime = rt();
            let (l, a) = runtime.block_on(listener());
            let srv = runtime.spawn(async move {
                let (s, _) = l.accept().await.expect("accept");
                let st = Acceptor::new(server).accept(s).await.expect("handshake");
                let c = st.into_conn("rustls");
                let (mut r, mut w) = (c.read, c.write);
                let mut buf = vec![0u8; 200_000];
                r.read_exact(&mut buf).await.expect("read");
                w.write_all(&buf).await.expect("write");
                w.shutdown().await.expect("shutdown");
            });
            let tcp = std::net::TcpStream::connect(a).expect("connect");
            tcp.set_read_timeout(Some(LIMIT)).expect("timeout");
            let conn = rustls::ClientConnection::new(client, sni()).expect("client");
            let mut s = rustls::StreamOwned::new(conn, tcp);
            s.write_all(&data(200_000, 9)).expect("write");
            s.flush().expect("flush");
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("read to close_notify");
            assert!(got == data(200_000, 9), "{} bytes", got.len());
            runtime.block_on(srv).expect("server");
        }
    }

    /// Records steered to start where rustls's copy into them goes at full speed.
    #[test]
    fn steering_lands_copies_2k_off() {
        for rec_at in (0..4096).step_by(13) {
            for src in (1_000_000..1_008_192).step_by(37) {
                for at in [0, 11, 100, 4096, 16_000] {
                    let d = copy_offset(rec_at, src, at);
                    let k = steer_cut(d, at);
                    assert!(k < 4096);
                    assert_eq!(copy_offset(rec_at, src + k, 0), 2048, "{rec_at} {src} {at}");
                    if at == 0 && slow_copy(d) {
                        assert!(k > 0, "an empty record would not help");
                    }
                }
            }
        }
        assert!(slow_copy(5) && slow_copy(63) && !slow_copy(0) && !slow_copy(64));
    }
}

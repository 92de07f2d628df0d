//! The server's TLS material: a CA made on first start in the data
//! directory (`ca.pem`, `ca.key`), and a server certificate it signs
//! (`server.pem`, `server.key`) naming localhost, this host's name and the
//! extra names given with `--san`. Operators with their own PKI pass
//! `--tls-cert`/`--tls-key` instead and give agents their own CA.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// PEM certificate chain and key the server presents.
pub struct ServerIdentity {
    /// Certificate (chain) in PEM.
    pub cert_pem: String,
    /// Private key in PEM.
    pub key_pem: String,
    /// Where the CA certificate agents need is, when the server made it.
    pub ca_file: Option<PathBuf>,
}

/// Loads `--tls-cert`/`--tls-key`, or the CA and certificate in `dir`,
/// making them on first start. Returns whether anything was created.
pub fn load_or_create(
    dir: &Path,
    own: Option<(&Path, &Path)>,
    sans: &[String],
) -> Result<(ServerIdentity, bool)> {
    if let Some((cert, key)) = own {
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("cannot read --tls-cert {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("cannot read --tls-key {}", key.display()))?;
        return Ok((
            ServerIdentity {
                cert_pem,
                key_pem,
                ca_file: None,
            },
            false,
        ));
    }
    let (ca_pem, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let (srv_pem, srv_key) = (dir.join("server.pem"), dir.join("server.key"));
    let mut created = false;
    if !ca_pem.exists() || !ca_key.exists() {
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = ca_params()?.self_signed(&key)?;
        kestrel_control::write_private(&ca_key, &key.serialize_pem())?;
        std::fs::write(&ca_pem, cert.pem())
            .with_context(|| format!("writing {}", ca_pem.display()))?;
        let _ = std::fs::remove_file(&srv_pem);
        created = true;
    }
    if !srv_pem.exists() || !srv_key.exists() {
        let ca_key_pem = std::fs::read_to_string(&ca_key)?;
        // The issuer is the CA's own parameters (same name, same key, so
        // the same key identifier) with its key: no certificate parsing.
        let issuer = Issuer::new(
            ca_params()?,
            KeyPair::from_pem(&ca_key_pem).context("reading ca.key")?,
        );
        let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
        if let Some(h) = hostname() {
            names.push(h);
        }
        names.extend(sans.iter().cloned());
        names.dedup();
        let mut params = CertificateParams::new(names)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Kestrel control server");
        params.distinguished_name = dn;
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        kestrel_control::write_private(&srv_key, &key.serialize_pem())?;
        std::fs::write(&srv_pem, cert.pem())?;
        created = true;
    }
    Ok((
        ServerIdentity {
            cert_pem: std::fs::read_to_string(&srv_pem)?,
            key_pem: std::fs::read_to_string(&srv_key)?,
            ca_file: Some(ca_pem),
        },
        created,
    ))
}

/// The CA's certificate parameters; fixed, so that they can be rebuilt to
/// sign with the stored key.
fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Kestrel control CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its length.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let h = String::from_utf8_lossy(&buf[..n]).into_owned();
    (!h.is_empty()).then_some(h)
}

/// A rustls server configuration from PEM, offering the `alpn` protocols
/// (gRPC needs `h2`).
pub fn rustls_server(id: &ServerIdentity, alpn: &[&[u8]]) -> Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("bad server certificate PEM")?;
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).context("bad server key PEM")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// A rustls client configuration trusting only the CA in `ca_pem`.
pub fn rustls_client(ca_pem: &[u8]) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(c.context("bad CA PEM")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

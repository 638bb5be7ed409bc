//! TLS on a client listener: loads the certificate chain and private key named in the
//! configuration into a rustls server configuration, with a clear error naming the file. The
//! PEM readers are shared with the MD's own TLS (`runtime::md_tls`).

use crate::config::TlsConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;

/// The certificates in a PEM file (at least one); errors name `key`, the setting that named it.
pub(crate) fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{key}: {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key}: {} holds no PEM certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// The private key in a PEM file; errors name `key`, the setting that named it.
pub(crate) fn read_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem =
        std::fs::read(path).map_err(|e| format!("{key}: cannot read {}: {e}", path.display()))?;
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| format!("{key}: {}: {e}", path.display()))?
        .ok_or_else(|| format!("{key}: {} holds no PEM private key", path.display()))
}

/// Builds the rustls configuration for a listener (TLS 1.2 and 1.3, no client certificates).
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = read_certs(&tls.certificate, "tls.certificate")?;
    let key = read_key(&tls.key, "tls.key")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "tls: certificate {} and key {} do not make a usable pair: {e}",
                tls.certificate.display(),
                tls.key.display()
            )
        })?;
    Ok(Arc::new(config))
}

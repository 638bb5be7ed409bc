//! TLS on a client listener: loads the certificate chain and private key named in the
//! configuration into a rustls server configuration, with a clear error naming the file.

use crate::config::TlsConfig;
use std::sync::Arc;

/// Builds the rustls configuration for a listener (TLS 1.2 and 1.3, no client certificates).
pub fn server_config(tls: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, String> {
    let read = |path: &std::path::Path, what: &str| -> Result<Vec<u8>, String> {
        std::fs::read(path).map_err(|e| format!("tls.{what}: cannot read {}: {e}", path.display()))
    };
    let cert_pem = read(&tls.certificate, "certificate")?;
    let key_pem = read(&tls.key, "key")?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut &cert_pem[..])
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls.certificate: {}: {e}", tls.certificate.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "tls.certificate: {} holds no PEM certificate",
            tls.certificate.display()
        ));
    }
    let key = rustls_pemfile::private_key(&mut &key_pem[..])
        .map_err(|e| format!("tls.key: {}: {e}", tls.key.display()))?
        .ok_or_else(|| format!("tls.key: {} holds no PEM private key", tls.key.display()))?;
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

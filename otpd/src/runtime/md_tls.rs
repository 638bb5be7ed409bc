//! TLS on MD links: the rustls configurations built at start-up from `messagedirector.tls`
//! (the listener: its certificate, and the CA participants' certificates must chain to) and
//! `messagedirector.upstream_tls` (the link to the upstream MD), and how a listener tells a
//! TLS participant from a plain one by its first bytes. The core's side (reading, handshakes,
//! refusals) is `core/md_tls_io.rs`.

use crate::clientagent::tls::{read_certs, read_key};
use crate::config::{MdTlsConfig, TlsParticipants, UpstreamTlsConfig};
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Bytes of a connection looked at to tell TLS from plain (`first_bytes`).
pub(super) const SNIFF_BYTES: usize = 3;
/// rustls's own buffers (plaintext waiting for the handshake, records waiting for the
/// socket) per MD link; the connection's queue (`max_queued_bytes_per_participant`) is
/// counted apart.
pub(super) const TLS_BUFFER: usize = 256 * 1024;

/// The MD listener's TLS, ready to use.
pub(crate) struct ListenerTls {
    pub config: Arc<rustls::ServerConfig>,
    pub participants: TlsParticipants,
    pub handshake_timeout: Duration,
}

/// The upstream link's TLS, ready to use.
pub(crate) struct UpstreamTls {
    pub config: Arc<rustls::ClientConfig>,
    pub server_name: ServerName<'static>,
    pub handshake_timeout: Duration,
}

/// What a connection's first bytes say it speaks.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FirstBytes {
    /// A TLS handshake record (0x16, then a record version 0x0300-0x0304): a ClientHello.
    Tls,
    /// Anything else: an Astron datagram's length tag. (A plain participant whose first
    /// datagram is 790 bytes long with 0 to 4 recipients would be taken for TLS; no stock
    /// participant begins so: its first datagram is a short control message.)
    Plain,
}

pub(super) fn first_bytes(b: &[u8; SNIFF_BYTES]) -> FirstBytes {
    if b[0] == 0x16 && b[1] == 0x03 && b[2] <= 0x04 {
        FirstBytes::Tls
    } else {
        FirstBytes::Plain
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(path: &Path, key: &str) -> Result<Arc<rustls::RootCertStore>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path, key)? {
        roots.add(cert).map_err(|e| {
            format!(
                "{key}: {}: not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// Builds the listener's configuration: TLS 1.2 and 1.3, a client certificate required.
pub(crate) fn listener(tls: &MdTlsConfig) -> Result<ListenerTls, String> {
    const K: &str = "messagedirector.tls";
    let certs = read_certs(&tls.certificate, &format!("{K}.certificate"))?;
    let key = read_key(&tls.key, &format!("{K}.key"))?;
    let roots = roots(&tls.client_ca, &format!("{K}.client_ca"))?;
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider())
        .build()
        .map_err(|e| format!("{K}.client_ca: {}: {e}", tls.client_ca.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{K}: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| {
            format!(
                "{K}: certificate {} and key {} do not make a usable pair: {e}",
                tls.certificate.display(),
                tls.key.display()
            )
        })?;
    let mut config = config;
    // With TLS 1.3 a client's certificate is judged after the client has finished its
    // handshake; the session tickets sent once it is accepted are how a child MD learns that
    // it was (`md_tls_io`). rustls's default, stated here because the link depends on it.
    config.send_tls13_tickets = 2;
    Ok(ListenerTls {
        config: Arc::new(config),
        participants: tls.participants,
        handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms),
    })
}

/// Builds the upstream link's configuration; `connect` is `messagedirector.connect`, whose
/// host is the name verified when `server_name` is not given.
pub(crate) fn upstream(tls: &UpstreamTlsConfig, connect: &str) -> Result<UpstreamTls, String> {
    const K: &str = "messagedirector.upstream_tls";
    let roots = roots(&tls.ca, &format!("{K}.ca"))?;
    let name = match &tls.server_name {
        Some(n) => n.clone(),
        None => {
            let hp = crate::config::addr::split_address(connect, 7199)
                .map_err(|e| format!("messagedirector.connect: {e}"))?;
            match hp.host {
                crate::config::addr::Host::Ip(ip, _) => ip.to_string(),
                crate::config::addr::Host::Name(n) | crate::config::addr::Host::ScopedV6(n) => n,
            }
        }
    };
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| format!("{K}.server_name: {name:?} is not a DNS name or IP address: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("{K}: {e}"))?
        .with_root_certificates(roots);
    let config = match (&tls.certificate, &tls.key) {
        (Some(cert), Some(key)) => {
            let certs = read_certs(cert, &format!("{K}.certificate"))?;
            let key_der = read_key(key, &format!("{K}.key"))?;
            builder.with_client_auth_cert(certs, key_der).map_err(|e| {
                format!(
                    "{K}: certificate {} and key {} do not make a usable pair: {e}",
                    cert.display(),
                    key.display()
                )
            })?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(format!("{K}: give both certificate and key, or neither")),
    };
    Ok(UpstreamTls {
        config: Arc::new(config),
        server_name,
        handshake_timeout: Duration::from_millis(tls.handshake_timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_hello_is_tls_and_astron_datagrams_are_plain() {
        // rustls and OpenSSL open with record version 0x0301; some clients with 0x0303.
        assert_eq!(first_bytes(&[0x16, 0x03, 0x01]), FirstBytes::Tls);
        assert_eq!(first_bytes(&[0x16, 0x03, 0x03]), FirstBytes::Tls);
        // A 22-byte datagram (0x16 0x00): a CONTROL_SET_CON_NAME of a 9-letter name.
        assert_eq!(first_bytes(&[0x16, 0x00, 0x01]), FirstBytes::Plain);
        // CONTROL_ADD_CHANNEL: 19 bytes, one recipient.
        assert_eq!(first_bytes(&[0x13, 0x00, 0x01]), FirstBytes::Plain);
        // 0x0316 = 790 bytes, with 5 recipients: plain.
        assert_eq!(first_bytes(&[0x16, 0x03, 0x05]), FirstBytes::Plain);
    }
}

//! TLS configurations: the upstream client config that trusts the RDS certificate authorities
//! (embedded bundle or `--ca-bundle`), and the local server config with an ephemeral self-signed
//! certificate for clients that insist on TLS to 127.0.0.1.
//!
//! Upstream verification is always on: rustls checks the chain against the bundle and the endpoint
//! hostname against the certificate's SAN, over TLS 1.3 or 1.2 only. There is no switch to turn it
//! off; a lab database with its own CA is reached by passing that CA as `--ca-bundle`.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The RDS root certificates (87 RDS G1 roots and 5 Amazon Trust roots for RDS Proxy), embedded.
/// Source and licence: `data/README.md`.
pub const EMBEDDED_RDS_CA_BUNDLE: &str = include_str!("../data/rds-ca-bundle.pem");

/// Where the trusted certificate authorities come from; named in every TLS error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// The RDS bundle compiled into the binary.
    Embedded,
    /// A PEM file given with `--ca-bundle`.
    File(PathBuf),
}

impl fmt::Display for CaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaSource::Embedded => f.write_str("the embedded RDS CA bundle"),
            CaSource::File(p) => write!(f, "the CA bundle {}", p.display()),
        }
    }
}

/// A TLS setup failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The `--ca-bundle` file could not be read.
    #[error("cannot read the CA bundle {path}: {source}")]
    ReadCaBundle {
        /// The file.
        path: PathBuf,
        /// Why (shown in the message, so not chained as a source too).
        source: std::io::Error,
    },
    /// The bundle held no usable certificate.
    #[error(
        "{source_name} holds no usable PEM certificate; pass a PEM file such as AWS's global-bundle.pem"
    )]
    EmptyCaBundle {
        /// Which bundle.
        source_name: String,
    },
    /// The endpoint name cannot be used for TLS verification (for example it is not a DNS name).
    #[error("`{host}` is not a valid TLS server name: {reason}")]
    InvalidServerName {
        /// The endpoint host.
        host: String,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    /// The local certificate could not be generated.
    #[error("cannot generate the local TLS certificate: {0}")]
    LocalCertificate(#[from] rcgen::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Parses every certificate in a PEM text into a root store; returns the store and how many were
/// added.
pub fn root_store_from_pem(pem: &[u8], source: &CaSource) -> Result<RootCertStore, Error> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem).flatten() {
        // A malformed entry is skipped rather than failing the whole bundle.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(Error::EmptyCaBundle {
            source_name: source.to_string(),
        });
    }
    Ok(roots)
}

/// The only TLS versions the upstream leg speaks; anything older is refused in the handshake.
pub const UPSTREAM_TLS_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The rustls error inside the `io::Error` of a failed handshake, when rustls is what failed.
pub fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// True when a handshake failed on the server certificate (not trusted, expired, or not for the
/// endpoint name).
pub fn is_certificate_error(e: &rustls::Error) -> bool {
    matches!(e, rustls::Error::InvalidCertificate(_))
}

/// True when a handshake failed because client and server share no TLS version (the server sent
/// a `protocol_version` alert, or chose a version the proxy does not speak).
pub fn is_version_mismatch(e: &rustls::Error) -> bool {
    use rustls::PeerIncompatible as P;
    matches!(
        e,
        rustls::Error::AlertReceived(rustls::AlertDescription::ProtocolVersion)
            | rustls::Error::PeerIncompatible(
                P::ServerDoesNotSupportTls12Or13
                    | P::ServerTlsVersionIsDisabledByOurConfig
                    | P::SupportedVersionsExtensionRequired
            )
    )
}

/// The client config for the upstream leg: TLS 1.2 or 1.3 only, the given CAs, no client
/// certificate.
pub fn upstream_client_config(source: &CaSource) -> Result<Arc<ClientConfig>, Error> {
    let pem = match source {
        CaSource::Embedded => EMBEDDED_RDS_CA_BUNDLE.as_bytes().to_vec(),
        CaSource::File(path) => std::fs::read(path).map_err(|source| Error::ReadCaBundle {
            path: path.clone(),
            source,
        })?,
    };
    let roots = root_store_from_pem(&pem, source)?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(UPSTREAM_TLS_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The name rustls sends as SNI and verifies: the RDS endpoint host, never the dial address.
pub fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(host.to_owned()).map_err(|e| Error::InvalidServerName {
        host: host.to_owned(),
        reason: e.to_string(),
    })
}

/// A server config with a fresh self-signed certificate for `localhost`, `127.0.0.1` and `::1`,
/// generated in memory at start-up; the key never touches disk.
pub fn local_server_config() -> Result<Arc<ServerConfig>, Error> {
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).map_err(|e| {
        Error::Rustls(rustls::Error::General(format!(
            "generated key unusable: {e}"
        )))
    })?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_bundle_loads_all_92_certificates() {
        let roots =
            root_store_from_pem(EMBEDDED_RDS_CA_BUNDLE.as_bytes(), &CaSource::Embedded).unwrap();
        assert_eq!(roots.len(), 92);
        upstream_client_config(&CaSource::Embedded).unwrap();
    }

    #[test]
    fn empty_or_missing_bundles_are_clear_errors() {
        let err = root_store_from_pem(b"not a pem", &CaSource::File("/x.pem".into())).unwrap_err();
        assert!(err.to_string().contains("/x.pem"), "{err}");
        let err =
            upstream_client_config(&CaSource::File("/nonexistent/ca.pem".into())).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    /// The upstream ClientHello as it goes on the wire.
    fn upstream_client_hello() -> Vec<u8> {
        let config = upstream_client_config(&CaSource::Embedded).unwrap();
        let name = server_name("db.cluster-x.eu-west-1.rds.amazonaws.com").unwrap();
        let mut conn = rustls::ClientConnection::new(config, name).unwrap();
        let mut wire = Vec::new();
        conn.write_tls(&mut wire).unwrap();
        wire
    }

    /// Walks a ClientHello record to the body of extension `wanted`.
    fn extension(wire: &[u8], wanted: u16) -> Option<&[u8]> {
        let u16_at = |i: usize| u16::from_be_bytes([wire[i], wire[i + 1]]) as usize;
        assert_eq!(
            (wire[0], wire[5]),
            (0x16, 0x01),
            "a handshake record with a ClientHello"
        );
        let mut i = 9 + 2 + 32; // record and handshake headers, legacy_version, random
        i += 1 + wire[i] as usize; // session id
        i += 2 + u16_at(i); // cipher suites
        i += 1 + wire[i] as usize; // compression methods
        let end = i + 2 + u16_at(i);
        i += 2;
        while i < end {
            let (ty, len) = (u16_at(i) as u16, u16_at(i + 2));
            if ty == wanted {
                return Some(&wire[i + 4..i + 4 + len]);
            }
            i += 4 + len;
        }
        None
    }

    #[test]
    fn upstream_offers_exactly_tls_1_3_and_1_2() {
        let wire = upstream_client_hello();
        // legacy_version stays 1.2 (RFC 8446 §4.1.2); supported_versions lists the real offer.
        assert_eq!(&wire[9..11], &[0x03, 0x03]);
        let versions = extension(&wire, 0x002b).expect("supported_versions");
        assert_eq!(
            versions,
            &[4, 0x03, 0x04, 0x03, 0x03],
            "TLS 1.3 and 1.2, nothing older"
        );
        assert_eq!(UPSTREAM_TLS_VERSIONS.len(), 2);
    }

    #[test]
    fn version_mismatches_are_recognised() {
        assert!(is_version_mismatch(&rustls::Error::AlertReceived(
            rustls::AlertDescription::ProtocolVersion
        )));
        assert!(is_version_mismatch(&rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig
        )));
        assert!(!is_version_mismatch(&rustls::Error::AlertReceived(
            rustls::AlertDescription::HandshakeFailure
        )));
    }

    #[test]
    fn local_certificate_generates() {
        local_server_config().unwrap();
    }
}

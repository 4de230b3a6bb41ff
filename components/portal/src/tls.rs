//! The TLS client configuration of the link: rustls with the webpki
//! (Mozilla) roots and the operating system's store, plus the CAs of
//! `ca_file` for a portal behind a private CA.
//!
//! Certificates are always verified: there is deliberately no switch that
//! turns the check off. A box that cannot verify its portal does not
//! connect, and says why in its log.

use std::{path::Path, sync::Arc};

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{pem::PemObject, CertificateDer};

use crate::PortalError;

/// The client configuration for `wss://` links. `ca_file` (already resolved
/// against the home) adds its PEM certificates to the trusted roots.
pub fn client_config(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, PortalError> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    // The operating system's store too, as operators behind an internal CA
    // expect; a store that cannot be read leaves the webpki roots.
    let native = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    tracing::debug!(
        certificates = added,
        errors = native.errors.len(),
        "system trust store"
    );
    if let Some(path) = ca_file {
        let added = add_ca_file(&mut roots, path)?;
        tracing::info!(ca_file = %path.display(), certificates = added, "trusting the CA file for the portal");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| PortalError::Tls {
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<usize, PortalError> {
    let text = std::fs::read(path).map_err(|e| PortalError::CaFileRead {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let mut added = 0;
    for (index, cert) in CertificateDer::pem_slice_iter(&text).enumerate() {
        let cert = cert.map_err(|e| PortalError::CaCertificate {
            path: path.to_owned(),
            index,
            reason: e.to_string(),
        })?;
        roots.add(cert).map_err(|e| PortalError::CaCertificate {
            path: path.to_owned(),
            index,
            reason: e.to_string(),
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(PortalError::CaFileEmpty {
            path: path.to_owned(),
        });
    }
    Ok(added)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let err = client_config(Some(&path)).unwrap_err();
        assert!(matches!(err, PortalError::CaFileEmpty { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let err = client_config(Some(&dir.path().join("missing.pem"))).unwrap_err();
        assert!(matches!(err, PortalError::CaFileRead { .. }), "{err}");
    }

    #[test]
    fn without_a_ca_file_the_webpki_roots_are_trusted() {
        assert!(client_config(None).is_ok());
    }
}

//! A private CA for tests of https and wss: a CA certificate, and a leaf
//! for `localhost` and `127.0.0.1` signed by it, as an operator behind an
//! internal CA has. The box trusts the CA only through `ca_file`.

use std::path::Path;

use anyhow::Result;
use banalytics_portal::TlsFiles;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

/// A CA and a server certificate it signed, in PEM.
pub struct PrivateCa {
    /// The CA's certificate: what `ca_file` names.
    pub ca_pem: String,
    /// The server's certificate (`localhost`, `127.0.0.1`).
    pub cert_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

impl PrivateCa {
    /// A fresh CA named `name` and a server certificate from it.
    pub fn new(name: &str) -> Result<PrivateCa> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name.push(DnType::CommonName, name);
        let ca_cert = ca.self_signed(&ca_key)?;

        let key = KeyPair::generate()?;
        let mut leaf =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])?;
        leaf.distinguished_name.push(DnType::CommonName, "portal");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
        Ok(PrivateCa {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Writes `ca.pem`, `cert.pem` and `key.pem` into `dir`; the server's
    /// two files for `serve --tls-cert --tls-key`.
    pub fn write(&self, dir: &Path) -> Result<TlsFiles> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("ca.pem"), &self.ca_pem)?;
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        std::fs::write(&files.cert, &self.cert_pem)?;
        std::fs::write(&files.key, &self.key_pem)?;
        Ok(files)
    }
}

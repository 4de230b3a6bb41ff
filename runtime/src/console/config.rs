//! `[console]` in `box.toml`: where the box's web console listens and
//! with which certificate. No table, no console.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use banalytics_sdk::ConfigError;
use toml::de::DeValue;

/// Where the console listens when `listen` is not given: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";

const KEYS: &str = "listen, tls_cert, tls_key, allow_insecure_http";

/// The parsed `[console]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// The address and port it listens on.
    pub listen: SocketAddr,
    /// The certificate chain and key (PEM, relative to the home) it serves
    /// https with; `None`: plain http.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain http on an address other than loopback was accepted
    /// (`allow_insecure_http = true`): warned about at every start.
    pub insecure: bool,
}

impl ConsoleConfig {
    /// Whether it serves https.
    pub fn https(&self) -> bool {
        self.tls.is_some()
    }

    /// Its base URL as a browser on this machine or the network reaches it
    /// (an unspecified address is written `localhost`).
    pub fn base_url(&self) -> String {
        let scheme = if self.https() { "https" } else { "http" };
        let host = match self.listen.ip() {
            ip if ip.is_unspecified() => "localhost".to_owned(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        format!("{scheme}://{host}:{}", self.listen.port())
    }
}

/// Parses `[console]`, the value at `value` of `file` (whose text is
/// `text`); `home` resolves the certificate paths.
pub fn parse(
    file: &Path,
    text: &str,
    home: &Path,
    value: &toml::Spanned<DeValue<'_>>,
) -> Result<ConsoleConfig, ConfigError> {
    let at = |offset: usize, msg: String| ConfigError::at(file, text, offset, msg);
    let table = value
        .get_ref()
        .as_table()
        .ok_or_else(|| at(value.span().start, "console must be a table".into()))?;
    let string = |key: &str| -> Result<Option<(String, usize)>, ConfigError> {
        match table.get(key) {
            None => Ok(None),
            Some(v) => match v.get_ref().as_str() {
                Some(s) => Ok(Some((s.to_owned(), v.span().start))),
                None => Err(at(
                    v.span().start,
                    format!("console.{key} must be a string"),
                )),
            },
        }
    };
    for (key, _) in table.iter() {
        let key_name: &str = key.get_ref().as_ref();
        if !KEYS.split(", ").any(|k| k == key_name) {
            return Err(at(
                key.span().start,
                format!("unknown key console.{key_name}; accepted keys: {KEYS}"),
            ));
        }
    }
    let (listen_text, listen_at) =
        string("listen")?.unwrap_or((DEFAULT_LISTEN.to_owned(), value.span().start));
    let listen: SocketAddr = listen_text.parse().map_err(|_| {
        at(
            listen_at,
            format!("console.listen = {listen_text:?} is not accepted; accepted: an address and port such as \"{DEFAULT_LISTEN}\" or \"0.0.0.0:8443\""),
        )
    })?;
    let insecure = match table.get("allow_insecure_http") {
        None => false,
        Some(v) => match v.get_ref() {
            DeValue::Boolean(b) => *b,
            _ => {
                return Err(at(
                    v.span().start,
                    "console.allow_insecure_http must be true or false".into(),
                ))
            }
        },
    };
    let tls = match (string("tls_cert")?, string("tls_key")?) {
        (None, None) => None,
        (Some((cert, _)), Some((key, _))) => Some((home.join(cert), home.join(key))),
        (Some((_, offset)), None) | (None, Some((_, offset))) => {
            return Err(at(
                offset,
                "console.tls_cert and console.tls_key go together: give both (PEM files relative to the home) or neither".into(),
            ))
        }
    };
    if tls.is_none() && !listen.ip().is_loopback() && !insecure {
        return Err(at(
            listen_at,
            format!("console.listen = {listen_text:?} is not a loopback address: the console needs tls_cert and tls_key there (its token and session would cross the network in clear), or allow_insecure_http = true"),
        ));
    }
    let insecure = tls.is_none() && !listen.ip().is_loopback();
    Ok(ConsoleConfig {
        listen,
        tls,
        insecure,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use toml::de::DeTable;

    fn parse_text(text: &str) -> Result<ConsoleConfig, ConfigError> {
        let root = DeTable::parse(text).unwrap();
        let value = root.get_ref().get("console").unwrap();
        parse(
            Path::new("/b/config/box.toml"),
            text,
            Path::new("/b"),
            value,
        )
    }

    #[test]
    fn an_empty_table_listens_on_loopback_without_tls() {
        let c = parse_text("[console]\n").unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN.parse().unwrap());
        assert_eq!(c.tls, None);
        assert_eq!(c.base_url(), "http://127.0.0.1:8480");
    }

    #[test]
    fn a_network_address_needs_tls_or_the_insecure_switch() {
        let err = parse_text("[console]\nlisten = \"0.0.0.0:8480\"\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
        assert!(err.message.contains("tls_cert and tls_key"), "{err}");
        let c = parse_text("[console]\nlisten = \"0.0.0.0:8480\"\nallow_insecure_http = true\n")
            .unwrap();
        assert!(c.insecure);
        let c = parse_text(
            "[console]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.tls, Some(("/b/c.pem".into(), "/b/k.pem".into())));
        assert!(!c.insecure);
        let err = parse_text("[console]\ntls_cert = \"c.pem\"\n").unwrap_err();
        assert_eq!(err.line, 2, "{err}");
    }

    #[test]
    fn unknown_keys_and_bad_addresses_are_refused_with_their_line() {
        let err = parse_text("[console]\nport = 1\n").unwrap_err();
        assert!(err.message.contains("accepted keys"), "{err}");
        let err = parse_text("[console]\n\nlisten = \"here\"\n").unwrap_err();
        assert_eq!(err.line, 3, "{err}");
    }
}

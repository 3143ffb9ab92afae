//! TLS to Redis: `rediss://` URLs (and `rediss+cluster://` for a cluster),
//! verified against the system's roots or a CA file, with an optional client
//! certificate, all named in the URL so that every component (client,
//! relay, workers, CLI) takes them the same way:
//!
//! `rediss://[user:password@]host:port[/db][?ca_file=PATH][&cert_file=PATH&key_file=PATH]`
//!
//! The files are read when a connection opens (a renewed certificate is
//! picked up by the next connection). Certificates are verified with rustls
//! (no system TLS library), and nothing here ever turns verification off.

use std::sync::Once;

use redis::{ClientTlsConfig, TlsCertificates};

use crate::error::{Error, Result};

/// The query parameters this module takes out of a Redis URL.
const PARAMS: [&str; 3] = ["ca_file", "cert_file", "key_file"];

/// Splits a `rediss://` URL into the URL Redis' client reads and the
/// certificates its parameters name (`None` when it names none: the
/// system's roots, no client certificate). URLs without TLS pass unchanged.
pub fn split(url: &str) -> Result<(String, Option<TlsCertificates>)> {
    install_provider();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), None));
    };
    let mut kept = Vec::new();
    let mut files: [Option<String>; 3] = [None, None, None];
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match PARAMS.iter().position(|p| *p == key) {
            Some(i) => files[i] = Some(value.to_owned()),
            None => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let [ca, cert, key] = files;
    if ca.is_none() && cert.is_none() && key.is_none() {
        return Ok((url, None));
    }
    if !base.starts_with("rediss") {
        return Err(Error::Config(
            "ca_file, cert_file and key_file need a rediss:// URL".to_owned(),
        ));
    }
    let client_tls = match (cert, key) {
        (Some(cert), Some(key)) => Some(ClientTlsConfig {
            client_cert: read("cert_file", &cert)?,
            client_key: read("key_file", &key)?,
        }),
        (None, None) => None,
        _ => {
            return Err(Error::Config(
                "a client certificate needs both cert_file and key_file".to_owned(),
            ))
        }
    };
    let root_cert = ca.map(|ca| read("ca_file", &ca)).transpose()?;
    Ok((
        url,
        Some(TlsCertificates {
            client_tls,
            root_cert,
        }),
    ))
}

fn read(what: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Config(format!("Redis TLS {what} {path:?}: {e}")))
}

/// rustls needs one crypto provider for the process; ring is the one built in.
pub(crate) fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only when another part of the process installed one first.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_without_tls_files_pass_unchanged() {
        let (url, certs) = split("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!(url, "redis://127.0.0.1:6379/0");
        assert!(certs.is_none());
        let (url, certs) = split("rediss://h:1/0?protocol=resp3").unwrap();
        assert_eq!(url, "rediss://h:1/0?protocol=resp3");
        assert!(certs.is_none());
    }

    #[test]
    fn tls_files_are_taken_out_and_read() {
        let dir = std::env::temp_dir().join(format!("cv-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, b"CA").unwrap();
        let url = format!("rediss://h:1/0?ca_file={}&protocol=resp3", ca.display());
        let (clean, certs) = split(&url).unwrap();
        assert_eq!(clean, "rediss://h:1/0?protocol=resp3");
        let certs = certs.unwrap();
        assert_eq!(certs.root_cert.as_deref(), Some(&b"CA"[..]));
        assert!(certs.client_tls.is_none());
    }

    #[test]
    fn half_a_client_certificate_or_files_without_tls_are_refused() {
        assert!(split("rediss://h:1/0?cert_file=/x").is_err());
        assert!(split("redis://h:1/0?ca_file=/x").is_err());
        let err = split("rediss://h:1/0?ca_file=/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("ca_file"), "{err}");
    }
}

//! HTTPS for the gate: a certificate chain and key from PEM files, put in
//! force again without a restart (a renewed certificate) when asked; a file
//! that cannot be read or does not hold a key matching its certificate
//! leaves the one in force, with the reason returned.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::error::{Error, Result};

/// Where the gate's certificate and key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain (PEM), the gate's own certificate first.
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

/// The TLS configuration in force, swapped whole on reload.
pub(super) struct Https {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl Https {
    /// Reads the files; refuses the gate's start when they are not usable.
    pub fn new(files: TlsFiles) -> Result<Self> {
        let config = load(&files)?;
        Ok(Self {
            files,
            config: RwLock::new(config),
        })
    }

    /// The configuration for the next connection.
    pub fn current(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Reads the files again; connections already open keep theirs.
    pub fn reload(&self) -> Result<()> {
        let config = load(&self.files)?;
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
        Ok(())
    }
}

fn load(files: &TlsFiles) -> Result<Arc<ServerConfig>> {
    crate::store::install_tls_provider();
    let bad = |what: &str, path: &PathBuf, e: &dyn std::fmt::Display| {
        Error::Config(format!("gate TLS {what} {}: {e}", path.display()))
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| bad("certificate", &files.cert, &e))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| bad("certificate", &files.cert, &e))?;
    if chain.is_empty() {
        return Err(bad(
            "certificate",
            &files.cert,
            &"no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| bad("key", &files.key, &e))?;
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad("certificate and key", &files.cert, &e))?;
    Ok(Arc::new(config))
}

//! TLS served directly: the certificate and key from `[tls]`, re-read on SIGHUP.
//!
//! New connections take whatever configuration is current when they are accepted; connections
//! already established keep theirs. A reload that fails (missing file, garbage, a key that does
//! not fit the certificate) is logged and changes nothing, so a botched renewal never takes the
//! server down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSettings;

/// Why the certificate or key could not be used; names the config key and the file.
#[derive(Debug, thiserror::Error)]
#[error("tls.{key} {}: {reason}", path.display())]
pub struct TlsError {
    /// `cert_file` or `key_file`.
    pub key: &'static str,
    /// The file at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// The TLS configuration in force, and the files it is re-read from.
#[derive(Debug)]
pub struct TlsFiles {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsFiles {
    /// Read the files named by `settings`; `None` when TLS is off (plain HTTP).
    ///
    /// # Errors
    /// When a file cannot be read, holds no usable PEM item, or the key does not fit.
    pub fn load(settings: &TlsSettings) -> Result<Option<Arc<TlsFiles>>, TlsError> {
        if !settings.enabled() {
            return Ok(None);
        }
        let config = server_config(&settings.cert_file, &settings.key_file)?;
        Ok(Some(Arc::new(TlsFiles {
            cert_file: settings.cert_file.clone(),
            key_file: settings.key_file.clone(),
            current: RwLock::new(Arc::new(config)),
        })))
    }

    /// An acceptor with the configuration in force now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        TlsAcceptor::from(Arc::clone(&current))
    }

    /// Re-read both files and, if they are good, use them for new connections.
    ///
    /// # Errors
    /// As [`TlsFiles::load`]; the configuration in force is then kept.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(server_config(&self.cert_file, &self.key_file)?);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = config;
        Ok(())
    }
}

/// Reload `files` on every SIGHUP, until the runtime ends. The signal handler is installed
/// before this returns, so a SIGHUP sent after it cannot kill the process; without TLS a
/// SIGHUP (a `systemctl reload`, a closed terminal) is logged and otherwise ignored.
///
/// # Errors
/// When the signal handler cannot be installed.
#[cfg(unix)]
pub fn reload_on_sighup(
    files: Option<Arc<TlsFiles>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let Some(files) = &files else {
                tracing::info!("SIGHUP: TLS is off, nothing to reload");
                continue;
            };
            match files.reload() {
                Ok(()) => tracing::info!(
                    cert_file = %files.cert_file.display(),
                    "SIGHUP: TLS certificate reloaded"
                ),
                Err(err) => tracing::error!(
                    error = %err,
                    "SIGHUP: TLS reload failed; still serving the previous certificate"
                ),
            }
        }
    }))
}

/// A rustls server configuration (ring provider, HTTP/1.1 only) from PEM files.
fn server_config(cert_file: &Path, key_file: &Path) -> Result<ServerConfig, TlsError> {
    let cert_error = |reason: String| TlsError {
        key: "cert_file",
        path: cert_file.to_owned(),
        reason,
    };
    let key_error = |reason: String| TlsError {
        key: "key_file",
        path: key_file.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|items| items.collect::<Result<Vec<_>, _>>())
        .map_err(|e| cert_error(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_error("holds no PEM certificate".to_owned()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| key_error(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| key_error(format!("does not fit the certificate: {e}")))?;
    // tusk speaks HTTP/1.1 only (tus relies on its framing: 100-continue, trailers).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

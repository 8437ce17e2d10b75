//! HTTPS: the hub's TLS configuration (rustls), with a certificate that can be replaced while
//! the hub runs.
//!
//! The certificate and key are PEM files (the chain may follow the certificate). They are read
//! at start, where a missing, unreadable, empty or mismatched pair is an error that names the
//! file; and again on [`Tls::reload`] (`herald serve` calls it on SIGHUP) and whenever
//! [`Tls::watch`] sees either file change. A reload only changes what new handshakes present:
//! connections open keep theirs. A reload that fails keeps the certificate in use and says why.
//!
//! ALPN offers `h2` and `http/1.1`; TLS 1.3 and 1.2 (rustls's safe defaults) with the `ring`
//! provider.

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Why a certificate or key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// `certificate` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .0.display())]
    NoCertificate(PathBuf),
    /// The key file holds no PEM private key.
    #[error(
        "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC PRIVATE KEY)",
        .0.display()
    )]
    NoKey(PathBuf),
    /// A PEM file could not be parsed.
    #[error("{} is not valid PEM: {detail}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The key is not usable, or not the certificate's.
    #[error("the private key {} does not go with the certificate {}: {source}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        #[source]
        source: rustls::Error,
    },
}

/// The hub's TLS configuration: what a TLS listener accepts with.
#[derive(Debug, Clone)]
pub struct Tls {
    config: Arc<ServerConfig>,
    current: Arc<Current>,
}

/// The certificate new handshakes present, and where it comes from.
#[derive(Debug)]
struct Current {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    key: Mutex<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(crate::lock(&self.key).clone())
    }
}

impl Tls {
    /// Reads the certificate (chain) and key from PEM files.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Tls, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let (cert_path, key_path) = (cert.as_ref().to_owned(), key.as_ref().to_owned());
        let certified = load(&cert_path, &key_path, &provider)?;
        let current = Arc::new(Current {
            cert_path,
            key_path,
            provider: provider.clone(),
            key: Mutex::new(Arc::new(certified)),
        });
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // A streamed subscription over TLS 1.3 takes its session over from rustls
        // (`tls_record.rs`), for its memory.
        config.enable_secret_extraction = true;
        Ok(Tls {
            config: Arc::new(config),
            current,
        })
    }

    /// Reads the files again; new handshakes present what they hold from now on. On an error
    /// the certificate in use stays. (The caller logs it, saying why it reloaded.)
    pub fn reload(&self) -> Result<(), TlsError> {
        let current = &self.current;
        let certified = load(&current.cert_path, &current.key_path, &current.provider)?;
        *crate::lock(&current.key) = Arc::new(certified);
        Ok(())
    }

    /// The certificate chain new handshakes present (DER), the end-entity certificate first.
    pub fn certificates(&self) -> Vec<CertificateDer<'static>> {
        crate::lock(&self.current.key).cert.clone()
    }

    /// Reloads whenever the certificate or key file changes (looked at every `period`), for
    /// as long as the returned task runs. A tool that writes the two files one after the other
    /// may be seen half-way: that reload fails, keeps the old pair, and the next look, which
    /// sees both, succeeds.
    pub fn watch(&self, period: Duration) -> tokio::task::JoinHandle<()> {
        let tls = self.clone();
        tokio::spawn(async move {
            let mut seen = tls.stamps();
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let now = tls.stamps();
                if now == seen {
                    continue;
                }
                match tls.reload() {
                    Ok(()) => {
                        tracing::info!(
                            cert = %tls.current.cert_path.display(),
                            "TLS files changed: certificate reloaded"
                        );
                        seen = now;
                    }
                    Err(err) => {
                        tracing::warn!(%err, "TLS files changed but cannot be used; keeping the certificate in use");
                        seen = now;
                        // Try again at the next look even if nothing changes meanwhile: the
                        // other file of the pair may be written next.
                        seen.0 = None;
                    }
                }
            }
        })
    }

    /// What identifies the files' contents cheaply: modification time and length of each.
    fn stamps(&self) -> (Stamp, Stamp) {
        let stamp = |path: &Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        (
            stamp(&self.current.cert_path),
            stamp(&self.current.key_path),
        )
    }

    /// The acceptor for one listener's connections.
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.config.clone())
    }
}

/// A file's modification time and length, if it can be read.
type Stamp = Option<(SystemTime, u64)>;

/// Reads and checks a certificate chain and its key.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |what, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            what,
            path: path.to_owned(),
            source,
        })
    };
    let pem = |path: &Path, err: rustls_pki_types::pem::Error| TlsError::Pem {
        path: path.to_owned(),
        detail: err.to_string(),
    };
    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate(cert.to_owned()));
    }
    let key_pem = read("private key", key)?;
    let private = match PrivateKeyDer::from_pem_slice(&key_pem) {
        Ok(private) => private,
        Err(rustls_pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoKey(key.to_owned()));
        }
        Err(err) => return Err(pem(key, err)),
    };
    CertifiedKey::from_der(chain, private, provider).map_err(|source| TlsError::Mismatch {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        (cert, key)
    }

    fn error(cert: &Path, key: &Path) -> String {
        Tls::from_pem_files(cert, key).unwrap_err().to_string()
    }

    #[test]
    fn a_bad_pair_is_refused_with_a_message_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "a");
        let (_, other_key) = pair(dir.path(), "b");
        assert!(Tls::from_pem_files(&cert, &key).is_ok());
        let missing = dir.path().join("missing.pem");
        let err = error(&missing, &key);
        assert!(
            err.starts_with("cannot read certificate") && err.contains("missing.pem"),
            "{err}"
        );
        let err = error(&cert, &missing);
        assert!(err.starts_with("cannot read private key"), "{err}");
        // The two swapped: no certificate in the key file.
        let err = error(&key, &cert);
        assert!(err.contains("holds no PEM certificate"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = error(&cert, &empty);
        assert!(err.contains("holds no PEM private key"), "{err}");
        let err = error(&cert, &other_key);
        assert!(err.contains("does not go with the certificate"), "{err}");
    }

    #[tokio::test]
    async fn changed_files_are_picked_up_by_the_watch() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "live");
        let tls = Tls::from_pem_files(&cert, &key).unwrap();
        let first = tls.certificates();
        let watch = tls.watch(Duration::from_millis(20));
        tokio::time::sleep(Duration::from_millis(60)).await;
        let (new_cert, new_key) = pair(dir.path(), "next");
        // The certificate first, the key a moment later, as a renewal tool might.
        std::fs::copy(&new_cert, &cert).unwrap();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(tls.certificates(), first, "half a pair is not used");
        std::fs::copy(&new_key, &key).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tls.certificates() == first {
            assert!(tokio::time::Instant::now() < deadline, "not reloaded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        watch.abort();
    }

    #[test]
    fn a_reload_changes_the_certificate_and_a_failed_one_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pair(dir.path(), "live");
        let tls = Tls::from_pem_files(&cert, &key).unwrap();
        let first = tls.certificates();
        let (new_cert, new_key) = pair(dir.path(), "next");
        std::fs::copy(&new_cert, &cert).unwrap();
        // Half-way: a new certificate with the old key.
        assert!(tls.reload().is_err());
        assert_eq!(tls.certificates(), first, "the old pair stays");
        std::fs::copy(&new_key, &key).unwrap();
        tls.reload().unwrap();
        assert_ne!(tls.certificates(), first);
        assert_eq!(
            tls.certificates()[0].as_ref(),
            CertificateDer::from_pem_file(&new_cert).unwrap().as_ref()
        );
    }
}

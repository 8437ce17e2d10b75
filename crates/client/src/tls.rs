//! HTTPS for the client: which servers it trusts, and the connector that speaks HTTP/2 or
//! HTTP/1.1 over TLS as the server's ALPN chooses (rustls with the `ring` provider).
//!
//! Trusted by default: the system's roots (`rustls-native-certs`). A development hub's
//! self-signed certificate is trusted by adding it ([`TlsOptions::add_root_pem`], `herald sub
//! --ca-file`), or, for a quick look only, by not checking certificates at all
//! ([`TlsOptions::accept_invalid_certificates`], `--insecure`).

use crate::error::Error;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// Which servers to trust.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    extra_roots: Vec<Vec<u8>>,
    insecure: bool,
}

impl TlsOptions {
    /// Also trusts the certificates in this PEM text (a CA, or a self-signed certificate).
    pub fn add_root_pem(mut self, pem: &[u8]) -> Self {
        self.extra_roots.push(pem.to_vec());
        self
    }

    /// Accepts any certificate, so any server or anyone in between: for development only.
    pub fn accept_invalid_certificates(mut self, yes: bool) -> Self {
        self.insecure = yes;
        self
    }

    /// The rustls configuration these options make: the system's roots and the added ones.
    /// (The connector offers ALPN `h2` and `http/1.1` itself.)
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        // A system without a certificate store still gets the added roots.
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        for pem in &self.extra_roots {
            let certs = CertificateDer::pem_slice_iter(pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| Error::Certificate(e.to_string()))?;
            if certs.is_empty() {
                return Err(Error::Certificate(
                    "no PEM certificate (-----BEGIN CERTIFICATE-----) in what was given".into(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| Error::Certificate(e.to_string()))?;
            }
        }
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Certificate(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        if self.insecure {
            config
                .dangerous()
                .set_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)));
        }
        Ok(config)
    }

    /// A configuration that trusts nothing, for a connector that only ever makes plaintext
    /// connections (no reading of the system's store).
    pub(crate) fn client_config_without_roots(&self) -> ClientConfig {
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("the ring provider supports the default versions")
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth()
    }

    /// A connector for hyper-util's client: `http://` in plaintext, `https://` with these
    /// options, HTTP/2 where the server offers it.
    pub fn connector(&self) -> Result<HttpsConnector<HttpConnector>, Error> {
        Ok(connector(Arc::new(self.client_config()?)))
    }
}

/// A connector with a ready configuration.
pub(crate) fn connector(config: Arc<ClientConfig>) -> HttpsConnector<HttpConnector> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    HttpsConnectorBuilder::new()
        .with_tls_config((*config).clone())
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http)
}

/// `--insecure`: every certificate is accepted; signatures are still checked, so the
/// connection is encrypted to whoever answered.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

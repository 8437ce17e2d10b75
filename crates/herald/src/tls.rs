//! `herald serve`'s certificate: the configured PEM files, or for development a self-signed
//! certificate for this machine, made once and kept beside the store.

use crate::config::{ServeConfig, Store};
use anyhow::Context;
use base64::Engine;
use herald_hub::tls::Tls;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The certificate the hub serves, and what the banner says about it.
pub struct Certificate {
    pub tls: Tls,
    /// For the self-signed certificate: where it is and how to trust it.
    pub self_signed: Option<SelfSigned>,
}

pub struct SelfSigned {
    pub cert: PathBuf,
    /// Made at this start (else read back from an earlier one).
    pub made: bool,
    /// SHA-256 of the certificate (DER), hex pairs with colons, as browsers show it.
    pub fingerprint: String,
    /// SHA-256 of its public key (SPKI), base64: what Chromium's
    /// `--ignore-certificate-errors-spki-list` takes.
    pub spki_sha256: String,
}

/// The certificate `config` asks for, if any.
pub fn certificate(config: &ServeConfig, store: &Store) -> anyhow::Result<Option<Certificate>> {
    if let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) {
        let tls = Tls::from_pem_files(cert, key).context("cannot serve HTTPS")?;
        return Ok(Some(Certificate {
            tls,
            self_signed: None,
        }));
    }
    if config.tls_self_signed != Some(true) {
        return Ok(None);
    }
    let dir = match store {
        Store::File(path) => path.join("tls"),
        _ => PathBuf::from("herald-tls"),
    };
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = !cert.exists() || !key.exists();
    if made {
        make_self_signed(&dir, &cert, &key)?;
    }
    let tls = Tls::from_pem_files(&cert, &key).with_context(|| {
        format!(
            "cannot use the self-signed certificate in {} (delete the directory to make a new one)",
            dir.display()
        )
    })?;
    let der = tls.certificates()[0].clone();
    let key_pem = std::fs::read_to_string(&key)?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(
        &rcgen::KeyPair::from_pem(&key_pem).context("reading the self-signed certificate's key")?,
    );
    let fingerprint = Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(Some(Certificate {
        tls,
        self_signed: Some(SelfSigned {
            cert,
            made,
            fingerprint,
            spki_sha256: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(&spki)),
        }),
    }))
}

fn make_self_signed(dir: &Path, cert: &Path, key: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create {} for the certificate", dir.display()))?;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    let made = rcgen::generate_simple_self_signed(names).context("making a certificate")?;
    crate::serve::write_private(key, &made.signing_key.serialize_pem())
        .with_context(|| format!("cannot write {}", key.display()))?;
    std::fs::write(cert, made.cert.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok(())
}

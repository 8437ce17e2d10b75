//! `--ca-file` and `--insecure` of the commands that reach a hub (`pub`, `sub`): which HTTPS
//! hubs they trust besides those the system's roots vouch for.

use anyhow::Context;
use clap::Args;
use herald_client::TlsOptions;
use std::path::PathBuf;

#[derive(Args, Debug, Clone)]
pub struct TrustArgs {
    /// PEM certificate (a CA, or a hub's self-signed one such as herald-data/tls/cert.pem) to
    /// trust for https:// besides the system's roots.
    #[arg(long, env = "HERALD_CA_FILE", value_name = "PEM_FILE")]
    ca_file: Option<PathBuf>,
    /// Accept any certificate over https:// (development only: anyone in between could read
    /// and change what is sent).
    #[arg(long)]
    insecure: bool,
}

impl TrustArgs {
    pub fn options(&self) -> anyhow::Result<TlsOptions> {
        let mut options = TlsOptions::default().accept_invalid_certificates(self.insecure);
        if let Some(path) = &self.ca_file {
            let pem = std::fs::read(path)
                .with_context(|| format!("cannot read --ca-file {}", path.display()))?;
            options = options.add_root_pem(&pem);
        }
        Ok(options)
    }
}

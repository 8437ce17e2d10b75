//! `herald token`: prints a signed JWT carrying the `mercure` claim.

use anyhow::Context;
use clap::Args;
use herald_hub::auth::{Claims, MercureClaim, sign_hmac};
use jsonwebtoken::Algorithm;

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// HMAC secret to sign with (the hub's --jwt-key or role key).
    #[arg(long, env = "HERALD_JWT_KEY", hide_env_values = true)]
    key: String,
    /// Selector the bearer may publish to (repeatable).
    #[arg(long = "publish", value_name = "SELECTOR")]
    publish: Vec<String>,
    /// Selector whose private updates the bearer may receive (repeatable).
    #[arg(long = "subscribe", value_name = "SELECTOR")]
    subscribe: Vec<String>,
    /// JSON value for the `mercure.payload` claim.
    #[arg(long)]
    payload: Option<String>,
    /// Lifetime in seconds; 0 for a token that never expires.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// HS256, HS384 or HS512.
    #[arg(long, default_value = "HS256")]
    alg: String,
}

/// Seconds since the epoch, `ttl` from now.
pub fn expiry(ttl: u64) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    now + ttl
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let alg: Algorithm = args
        .alg
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown --alg {:?}", args.alg))?;
    if !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        anyhow::bail!("herald token signs with HMAC only (HS256, HS384, HS512); got {alg:?}");
    }
    let payload = args
        .payload
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .context("--payload is not valid JSON")?;
    let claims = Claims {
        mercure: Some(MercureClaim {
            publish: (!args.publish.is_empty()).then_some(args.publish),
            subscribe: (!args.subscribe.is_empty()).then_some(args.subscribe),
            payload,
        }),
        exp: (args.ttl > 0).then(|| expiry(args.ttl)),
    };
    println!("{}", sign_hmac(alg, args.key.as_bytes(), &claims)?);
    Ok(())
}

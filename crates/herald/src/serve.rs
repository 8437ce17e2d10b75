//! `herald serve`: builds the hub from the configuration and runs it until SIGINT/SIGTERM.

use crate::config::{ServeConfig, Store};
use anyhow::{Context, bail};
use herald_hub::auth::{Claims, KeySource, MercureClaim, Verifier, sign_hmac};
use herald_hub::history::{FileHistory, FileOptions, History, MemoryHistory, StoreError};
use jsonwebtoken::Algorithm;
use std::sync::Arc;

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let config = config.merge_file()?;
    config.validate()?;
    let alg: Algorithm = config
        .jwt_alg
        .as_deref()
        .unwrap_or("HS256")
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown --jwt-alg {:?}", config.jwt_alg))?;
    let keys = keys(&config, alg)?;
    let verifier = Verifier::new(alg, &keys.publisher, &keys.subscriber)
        .context("invalid JWT key for the chosen --jwt-alg")?;
    let history: Arc<dyn History> = match config.store()? {
        Store::Memory if config.history_max_age().is_some() => bail!(
            "--history-max-age applies to the file store; the memory store keeps the newest \
             --history-size updates"
        ),
        Store::Memory => Arc::new(MemoryHistory::new(config.history_size())),
        Store::File(path) => Arc::new(
            FileHistory::open(
                &path,
                FileOptions {
                    max_updates: config.history_size(),
                    max_age: config.history_max_age(),
                    accept_loss: config.accept_history_loss(),
                    memory: config.store_memory(),
                },
            )
            .map_err(|err| match err {
                StoreError::Damaged(_) => anyhow::Error::new(err).context(
                    "refusing to start on a history store that lost acknowledged updates \
                     (restore the store directory and its record from a backup, or start once \
                     with --accept-history-loss to serve what is left)",
                ),
                _ => anyhow::Error::new(err).context(format!(
                    "cannot open the history store in {}",
                    path.display()
                )),
            })?,
        ),
        Store::Redis(url) => Arc::new(
            herald_cluster::RedisHistory::open(
                &url,
                herald_cluster::RedisOptions {
                    max_updates: config.history_size(),
                    max_age: config.history_max_age(),
                },
            )
            .await
            .with_context(|| format!("cannot use the redis store {url}"))?,
        ),
        Store::Nats(url) => Arc::new(
            herald_cluster::NatsHistory::open(
                &url,
                herald_cluster::NatsOptions {
                    max_updates: config.history_size(),
                    max_age: config.history_max_age(),
                },
            )
            .await
            .with_context(|| format!("cannot use the nats store {url}"))?,
        ),
    };
    // Every subscriber is a socket: the default soft limit (often 1024) would cap the hub far
    // below what the machine can hold, so take what the hard limit allows.
    let nofile = crate::bench::procstat::raise_nofile_limit();
    tracing::info!(nofile, "open file limit");
    let hub = herald_hub::Hub::start(history, verifier, config.settings(nofile));
    let listener = herald_hub::server::bind(config.listen())
        .await
        .with_context(|| format!("cannot listen on {}", config.listen()))?;
    let addr = listener.local_addr()?;
    if keys.generated {
        print_first_use_tokens(alg, &keys.publisher, &addr)?;
    }
    eprintln!("herald listening on http://{addr}");
    herald_hub::server::serve(hub, listener, shutdown_signal()).await?;
    Ok(())
}

struct Keys {
    publisher: KeySource,
    subscriber: KeySource,
    /// No key was configured: a random one was made for this run.
    generated: bool,
}

fn keys(config: &ServeConfig, alg: Algorithm) -> anyhow::Result<Keys> {
    let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    let role_key = |file: &Option<std::path::PathBuf>, secret: &Option<String>, role: &str| {
        if let Some(path) = file {
            let pem = std::fs::read(path)
                .with_context(|| format!("reading the {role} JWT key file {}", path.display()))?;
            return Ok(Some(KeySource::Pem(pem)));
        }
        match secret.as_ref().or(config.jwt_key.as_ref()) {
            Some(_) if !hmac => bail!(
                "--jwt-alg {alg:?} verifies with a public key: give --{role}-jwt-key-file PEM_FILE"
            ),
            Some(secret) => Ok(Some(KeySource::Secret(secret.as_bytes().to_vec()))),
            None => Ok(None),
        }
    };
    let publisher = role_key(
        &config.publisher_jwt_key_file,
        &config.publisher_jwt_key,
        "publisher",
    )?;
    let subscriber = role_key(
        &config.subscriber_jwt_key_file,
        &config.subscriber_jwt_key,
        "subscriber",
    )?;
    match (publisher, subscriber) {
        (Some(publisher), Some(subscriber)) => Ok(Keys {
            publisher,
            subscriber,
            generated: false,
        }),
        (None, None) if hmac => {
            let secret: [u8; 32] = rand::random();
            let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let key = KeySource::Secret(secret.into_bytes());
            Ok(Keys {
                publisher: key.clone(),
                subscriber: key,
                generated: true,
            })
        }
        (None, None) => {
            bail!("--jwt-alg {alg:?} needs --publisher-jwt-key-file and --subscriber-jwt-key-file")
        }
        (Some(_), None) => bail!(
            "a publisher key is set but no subscriber key: set --subscriber-jwt-key or --jwt-key"
        ),
        (None, Some(_)) => bail!(
            "a subscriber key is set but no publisher key: set --publisher-jwt-key or --jwt-key"
        ),
    }
}

fn print_first_use_tokens(
    alg: Algorithm,
    key: &KeySource,
    addr: &std::net::SocketAddr,
) -> anyhow::Result<()> {
    let KeySource::Secret(secret) = key else {
        return Ok(());
    };
    let exp = crate::token::expiry(24 * 3600);
    let token = |publish: bool| {
        sign_hmac(
            alg,
            secret,
            &Claims {
                mercure: Some(MercureClaim {
                    publish: publish.then(|| vec!["*".to_owned()]),
                    subscribe: (!publish).then(|| vec!["*".to_owned()]),
                    payload: None,
                }),
                exp: Some(exp),
            },
        )
    };
    eprintln!("no JWT key configured: using a random key for this run (set --jwt-key to keep one)");
    eprintln!("publisher token (24 h):  {}", token(true)?);
    eprintln!("subscriber token (24 h): {}", token(false)?);
    eprintln!("console: http://{addr}/");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

//! `herald serve`: builds the hub from the configuration and runs it until SIGINT/SIGTERM.

use crate::config::{ServeConfig, Store};
use anyhow::{Context, bail};
use herald_hub::auth::{Claims, KeySource, Role, Verifier, sign_hmac};
use herald_hub::history::{FileHistory, FileOptions, History, MemoryHistory, StoreError};
use herald_hub::server::Listener;
use jsonwebtoken::Algorithm;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub async fn run(config: ServeConfig) -> anyhow::Result<()> {
    let config = config.merge_file()?;
    config.validate()?;
    let listen = config.listen()?;
    let alg: Algorithm = config
        .jwt_alg
        .as_deref()
        .unwrap_or("HS256")
        .parse()
        .map_err(|_| anyhow::anyhow!("unknown --jwt-alg {:?}", config.jwt_alg))?;
    let configured = keys(&config, alg)?;
    let store = config.store()?;
    let retention = config.retention();
    for (flag, selectors) in [
        ("--retain", &config.retain),
        ("--conflate", &config.conflate),
    ] {
        for selector in selectors {
            herald_hub::topic::Selector::parse(selector)
                .with_context(|| format!("invalid {flag} selector {selector:?}"))?;
        }
    }
    let history: Arc<dyn History> = match store.clone() {
        Store::Memory if config.history_max_age().is_some() => bail!(
            "--history-max-age applies to the file store; the memory store keeps the newest \
             --history-size updates"
        ),
        Store::Memory => Arc::new(MemoryHistory::with_retention(retention)),
        Store::File(path) => Arc::new(
            FileHistory::open(
                &path,
                FileOptions {
                    retention,
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
        Store::Redis(url) => herald_cluster::RedisHistory::open(&url, retention)
            .await
            .with_context(|| format!("cannot use the redis store {url}"))?,
        Store::Nats(url) => herald_cluster::NatsHistory::open(&url, retention)
            .await
            .with_context(|| format!("cannot use the nats store {url}"))?,
    };
    // With no key configured, the hub makes one; kept with a file store, so that tokens survive
    // restarts as the history does.
    let keys = match configured {
        Some(keys) => keys,
        None => generated_keys(&store)?,
    };
    let verifier = Verifier::new(alg, &keys.publisher, &keys.subscriber)
        .context("invalid JWT key for the chosen --jwt-alg")?
        .with_leeway(config.jwt_leeway.unwrap_or(0))
        .with_audience(config.jwt_audience.clone())
        .with_issuer(config.jwt_issuer.clone());
    // Every subscriber is a socket: the default soft limit (often 1024) would cap the hub far
    // below what the machine can hold, so take what the hard limit allows.
    let nofile = crate::limits::raise_nofile_limit();
    tracing::debug!(nofile, "open file limit");
    let mut settings = config.settings(nofile);
    // A key the hub made is a development setup: its console may mint tokens for this machine.
    if keys.generated.is_some()
        && let KeySource::Secret(secret) = &keys.publisher
    {
        settings.mint_key = Some(herald_hub::console::MintKey {
            alg,
            secret: secret.as_slice().into(),
        });
    }
    // After the store: a self-signed certificate is kept in its directory.
    let certificate = crate::tls::certificate(&config, &store)?;
    let hub = herald_hub::Hub::start(history, verifier, settings);
    crate::trim::start();
    let mut listeners = Vec::new();
    let mut urls = Vec::new();
    for (addr, https) in listen {
        let listener = herald_hub::server::bind(addr).await.map_err(|err| {
            let hint = match err.kind() {
                std::io::ErrorKind::AddrInUse => {
                    ": another program (another herald?) listens there; stop it, or pick \
                     another address with --listen HOST:PORT"
                }
                _ => "",
            };
            anyhow::Error::new(err).context(format!("cannot listen on {addr}{hint}"))
        })?;
        let bound = listener.local_addr()?;
        match (&certificate, https) {
            (Some(certificate), true) => {
                urls.push(format!("https://{}", url_host(bound)));
                listeners.push(Listener::tls(listener, certificate.tls.clone()));
            }
            _ => {
                urls.push(format!("http://{bound}"));
                listeners.push(Listener::plain(listener));
            }
        }
    }
    print_banner(&config, &store, alg, &keys, &urls, certificate.as_ref())?;
    if let Some(certificate) = &certificate {
        // A renewed certificate (certbot, cert-manager) is picked up without a restart:
        // when its files change, and on SIGHUP.
        certificate.tls.watch(TLS_WATCH_PERIOD);
        reload_on_sighup(certificate.tls.clone());
    }
    for url in &urls {
        eprintln!("herald listening on {url}");
    }
    herald_hub::server::serve_all(hub, listeners, shutdown_signal()).await?;
    Ok(())
}

/// How often the certificate's files are looked at for a change.
const TLS_WATCH_PERIOD: std::time::Duration = std::time::Duration::from_secs(5);

/// The host part of an HTTPS URL for `addr`: `localhost` for a loopback address, the name the
/// certificates made for development carry (a browser checks the name).
fn url_host(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_loopback() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    }
}

/// Reloads the certificate on every SIGHUP.
fn reload_on_sighup(tls: herald_hub::tls::Tls) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                Err(err) => tracing::error!(%err, "SIGHUP: keeping the certificate in use"),
            }
        }
    });
}

struct Keys {
    publisher: KeySource,
    subscriber: KeySource,
    /// No key was configured: the hub made one.
    generated: Option<Generated>,
}

/// Where a key the hub made comes from.
enum Generated {
    /// Made for this run only (no file store to keep it in).
    ForThisRun,
    /// Made now and kept in this file.
    Kept(PathBuf),
    /// Made at an earlier start and read back from this file.
    Reused(PathBuf),
}

/// The file, in the file store's directory, that keeps the key the hub made.
const KEY_FILE: &str = "jwt.key";

/// The HMAC key of a hub with no key configured: read back from the file store's directory, or
/// made and kept there (readable by its owner only); made for this run with other stores.
fn generated_keys(store: &Store) -> anyhow::Result<Keys> {
    let (secret, generated) = match store {
        Store::File(dir) => {
            let path = dir.join(KEY_FILE);
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => {
                    (text.trim().to_owned(), Generated::Reused(path))
                }
                Ok(_) => bail!(
                    "the key file {} is empty: delete it (a new key is made, and tokens made \
                     with the old one stop working) or set --jwt-key",
                    path.display()
                ),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    let secret = random_secret();
                    write_private(&path, &secret).with_context(|| {
                        format!("cannot keep the generated JWT key in {}", path.display())
                    })?;
                    (secret, Generated::Kept(path))
                }
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!("cannot read the JWT key kept in {}", path.display())
                    });
                }
            }
        }
        _ => (random_secret(), Generated::ForThisRun),
    };
    let key = KeySource::Secret(secret.into_bytes());
    Ok(Keys {
        publisher: key.clone(),
        subscriber: key,
        generated: Some(generated),
    })
}

fn random_secret() -> String {
    let secret: [u8; 32] = rand::random();
    secret.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes a new file that only its owner may read (0600 on Unix).
pub(crate) fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

/// The keys configured by flags; `None` when there are none and the algorithm is HMAC (the hub
/// then makes its own).
fn keys(config: &ServeConfig, alg: Algorithm) -> anyhow::Result<Option<Keys>> {
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
        (Some(publisher), Some(subscriber)) => Ok(Some(Keys {
            publisher,
            subscriber,
            generated: None,
        })),
        (None, None) if hmac => Ok(None),
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

/// What a user needs first, before any log line: where the hub is, what it keeps, and with a key
/// the hub made, where that key is and tokens for it.
fn print_banner(
    config: &ServeConfig,
    store: &Store,
    alg: Algorithm,
    keys: &Keys,
    urls: &[String],
    certificate: Option<&crate::tls::Certificate>,
) -> anyhow::Result<()> {
    let store = match store {
        Store::Memory => "memory (lost when the hub stops)".to_owned(),
        Store::File(path) => format!("file:{} (durable)", path.display()),
        Store::Redis(url) | Store::Nats(url) => url.clone(),
    };
    eprintln!(
        "herald {}, a Mercure hub; history: {store}, newest {} updates",
        env!("CARGO_PKG_VERSION"),
        config.history_size()
    );
    let url = &urls[0];
    eprintln!("console: {url}/");
    eprintln!("hub:     {url}/.well-known/mercure");
    eprintln!("health:  {url}/healthz, /readyz; metrics: /metrics");
    for other in &urls[1..] {
        eprintln!("also:    {other}/");
    }
    if let Some(signed) = certificate.and_then(|c| c.self_signed.as_ref()) {
        eprintln!(
            "TLS: a self-signed certificate for localhost, 127.0.0.1 and ::1 ({}): {}",
            if signed.made {
                "made now"
            } else {
                "made at an earlier start"
            },
            signed.cert.display()
        );
        eprintln!("  SHA-256 fingerprint: {}", signed.fingerprint);
        eprintln!(
            "  trust it with curl --cacert {}, or Chromium --ignore-certificate-errors-spki-list={}",
            signed.cert.display(),
            signed.spki_sha256
        );
    }
    let Some(generated) = &keys.generated else {
        return Ok(());
    };
    let KeySource::Secret(secret) = &keys.publisher else {
        return Ok(());
    };
    match generated {
        Generated::ForThisRun => eprintln!(
            "JWT key: none configured, so a random one for this run: tokens stop working when \
             it ends (set --jwt-key to keep one)"
        ),
        Generated::Kept(path) => eprintln!(
            "JWT key: none configured, so one was made and kept in {} (owner-only): later \
             starts reuse it and tokens stay valid (set --jwt-key to use your own)",
            path.display()
        ),
        Generated::Reused(path) => eprintln!(
            "JWT key: the one this hub made earlier, kept in {} (delete it for a new one; set \
             --jwt-key to use your own)",
            path.display()
        ),
    }
    let exp = crate::token::expiry(24 * 3600);
    let token = |role| {
        sign_hmac(
            alg,
            secret,
            &Claims::for_role(role, vec!["*".into()], Some(exp)),
        )
    };
    eprintln!("publisher token (24 h):  {}", token(Role::Publisher)?);
    eprintln!("subscriber token (24 h): {}", token(Role::Subscriber)?);
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

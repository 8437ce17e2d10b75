//! `herald serve` configuration: one struct, read from command-line flags, `HERALD_*`
//! environment variables and an optional TOML file (`--config`), in that order of precedence,
//! then completed with documented defaults.

use anyhow::{Context, bail};
use clap::Args;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Every setting of `herald serve`. Each field is a flag, an env var `HERALD_<NAME>`, and a key
/// of the TOML file (the flag's name with `_` for `-`). Unset fields take the defaults below.
#[derive(Args, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// TOML file with any of these settings (flags and env vars take precedence).
    #[arg(long, env = "HERALD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (an IP address or a name such as `localhost`); port 0
    /// picks a free port; `0.0.0.0:PORT` listens on every interface. Repeatable. HTTPS when a
    /// certificate is configured (--tls-cert and --tls-key, or --tls-self-signed), else
    /// plaintext; `http://HOST:PORT` is plaintext and `https://HOST:PORT` HTTPS whatever the
    /// others are (e.g. HTTPS for the world, plaintext on an internal address)
    /// [default: 127.0.0.1:8080].
    #[arg(long, env = "HERALD_LISTEN", value_delimiter = ',')]
    #[serde(default, deserialize_with = "one_or_many")]
    pub listen: Vec<String>,
    /// PEM file of the TLS certificate, its chain after it; re-read on SIGHUP and when it
    /// changes (with --tls-key).
    #[arg(long, env = "HERALD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM file of the TLS certificate's private key (with --tls-cert).
    #[arg(long, env = "HERALD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// For development: serve HTTPS with a self-signed certificate for localhost, 127.0.0.1
    /// and ::1, made once and kept in the file store's directory (`tls/`, or ./herald-tls with
    /// another store); its path and fingerprints are printed at start.
    #[arg(long, env = "HERALD_TLS_SELF_SIGNED", num_args = 0..=1, default_missing_value = "true")]
    pub tls_self_signed: Option<bool>,
    /// Most streams (requests, subscriptions) one HTTP/2 connection may have open at once
    /// [default: 128].
    #[arg(long, env = "HERALD_HTTP2_MAX_STREAMS")]
    pub http2_max_streams: Option<u32>,
    /// HMAC secret for publisher and subscriber JWTs. With no key at all the hub makes a random
    /// one and prints tokens for first use.
    #[arg(long, env = "HERALD_JWT_KEY", hide_env_values = true)]
    pub jwt_key: Option<String>,
    /// HMAC secret for publisher JWTs (overrides --jwt-key).
    #[arg(long, env = "HERALD_PUBLISHER_JWT_KEY", hide_env_values = true)]
    pub publisher_jwt_key: Option<String>,
    /// HMAC secret for subscriber JWTs (overrides --jwt-key).
    #[arg(long, env = "HERALD_SUBSCRIBER_JWT_KEY", hide_env_values = true)]
    pub subscriber_jwt_key: Option<String>,
    /// PEM public key file for publisher JWTs (with --jwt-alg RS256/ES256/...).
    #[arg(long, env = "HERALD_PUBLISHER_JWT_KEY_FILE")]
    pub publisher_jwt_key_file: Option<PathBuf>,
    /// PEM public key file for subscriber JWTs (with --jwt-alg RS256/ES256/...).
    #[arg(long, env = "HERALD_SUBSCRIBER_JWT_KEY_FILE")]
    pub subscriber_jwt_key_file: Option<PathBuf>,
    /// JWT signature algorithm: HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384,
    /// EdDSA [default: HS256].
    #[arg(long, env = "HERALD_JWT_ALG")]
    pub jwt_alg: Option<String>,
    /// Seconds a JWT is still accepted after its `exp`, or before its `nbf`, for clocks that
    /// disagree [default: 0].
    #[arg(long, env = "HERALD_JWT_LEEWAY")]
    pub jwt_leeway: Option<u64>,
    /// What a Mercure 1.0 access token's `aud` must name: the hub's URL, e.g.
    /// `https://hub.example/.well-known/mercure` [default: the URL each request was sent to,
    /// in either scheme].
    #[arg(long, env = "HERALD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// What a Mercure 1.0 access token's `iss` must be [default: not checked].
    #[arg(long, env = "HERALD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Let subscribers without a token receive public updates.
    #[arg(long, env = "HERALD_ANONYMOUS", num_args = 0..=1, default_missing_value = "true")]
    pub anonymous: Option<bool>,
    /// History store: `file:PATH` (durable, embedded), `memory` (lost on restart), or for a
    /// cluster `redis://HOST:PORT/DB[?stream=KEY]` or `nats://HOST:PORT[?stream=NAME]`
    /// [default: file:./herald-data].
    #[arg(long, env = "HERALD_STORE")]
    pub store: Option<String>,
    /// Start even if the file store holds less than it acknowledged (a truncated journal, deleted
    /// files, a deleted store directory, an older backup): log what is lost, serve what is left,
    /// and record the loss so later starts go on normally. Without it such a start fails.
    #[arg(long, env = "HERALD_ACCEPT_HISTORY_LOSS", num_args = 0..=1, default_missing_value = "true")]
    pub accept_history_loss: Option<bool>,
    /// Bytes of memory the file store may use for its caches and write buffers: a quarter each
    /// for the newest updates, older updates read back for catch-up (shared by the subscribers
    /// reading them), the database's block cache and its write buffers; at least 4194304
    /// [default: 67108864].
    #[arg(long, env = "HERALD_STORE_MEMORY")]
    pub store_memory: Option<usize>,
    /// Updates kept in history [default: 10000].
    #[arg(long, env = "HERALD_HISTORY_SIZE")]
    pub history_size: Option<usize>,
    /// Bytes of updates kept in history (each counted as stored: its data, fields and a little
    /// overhead); the oldest beyond are dropped, the newest always kept; 0 for no limit but
    /// --history-size (the memory store stops at 536870912) [default: 0].
    #[arg(long, env = "HERALD_HISTORY_MAX_BYTES")]
    pub history_max_bytes: Option<u64>,
    /// Seconds an update is kept in history; 0 keeps them until --history-size drops them
    /// [default: 0].
    #[arg(long, env = "HERALD_HISTORY_MAX_AGE")]
    pub history_max_age: Option<u64>,
    /// Topics whose retained (latest-value) update the store keeps, at most (a Herald
    /// extension: updates published with `retain=on`); the oldest beyond are dropped
    /// [default: 10000].
    #[arg(long, env = "HERALD_RETAINED_TOPICS")]
    pub retained_topics: Option<usize>,
    /// Bytes of retained updates the store keeps, at most; the oldest beyond are dropped
    /// [default: 67108864].
    #[arg(long, env = "HERALD_RETAINED_BYTES")]
    pub retained_bytes: Option<usize>,
    /// Seconds a retained update is kept; 0 keeps it until a newer one replaces it or the
    /// bounds drop it [default: 0].
    #[arg(long, env = "HERALD_RETAINED_AGE")]
    pub retained_age: Option<u64>,
    /// Selector whose topics' retained updates every new subscription matching them receives
    /// first, as if it asked with `retained=1` (repeatable).
    #[arg(long = "retain", env = "HERALD_RETAIN", value_delimiter = ',')]
    #[serde(default)]
    pub retain: Vec<String>,
    /// Selector of latest-value topics (repeatable): a subscriber that falls behind (slow, or
    /// resuming) gets only the newest update of each such topic it is owed; other topics are
    /// delivered exactly.
    #[arg(long = "conflate", env = "HERALD_CONFLATE", value_delimiter = ',')]
    #[serde(default)]
    pub conflate: Vec<String>,
    /// Seconds between heartbeat comments on idle streams; 0 turns them off [default: 15].
    #[arg(long, env = "HERALD_HEARTBEAT")]
    pub heartbeat: Option<u64>,
    /// Origin allowed by CORS, with credentials (repeatable; `*` allows any).
    #[arg(
        long = "cors-origin",
        env = "HERALD_CORS_ORIGIN",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub cors_origin: Vec<String>,
    /// Publish subscription events and serve the subscriptions API.
    #[arg(long, env = "HERALD_SUBSCRIPTIONS", num_args = 0..=1, default_missing_value = "true")]
    pub subscriptions: Option<bool>,
    /// Largest publish request body in bytes [default: 1048576].
    #[arg(long, env = "HERALD_MAX_BODY")]
    pub max_body: Option<usize>,
    /// Updates queued per subscriber before it catches up from history [default: 1024].
    #[arg(long, env = "HERALD_QUEUE_SIZE")]
    pub queue_size: Option<usize>,
    /// Bytes of updates queued per subscriber before it catches up from history
    /// [default: 4194304].
    #[arg(long, env = "HERALD_QUEUE_BYTES")]
    pub queue_bytes: Option<usize>,
    /// Seconds a subscriber's socket may take no byte before the stream is closed (the client
    /// resumes with Last-Event-ID) [default: 60].
    #[arg(long, env = "HERALD_WRITE_TIMEOUT")]
    pub write_timeout: Option<u64>,
    /// Most bytes owed to all subscribers together (taken for them, not yet written); beyond,
    /// subscribers whose writes are blocked are closed [default: 67108864].
    #[arg(long, env = "HERALD_MAX_OWED_BYTES")]
    pub max_owed_bytes: Option<usize>,
    /// Seconds a client has to send each request head; also how long a keep-alive connection
    /// may idle between requests [default: 30].
    #[arg(long, env = "HERALD_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds a client has to send a publish body, before --body-min-rate extends it
    /// [default: 30].
    #[arg(long, env = "HERALD_BODY_TIMEOUT")]
    pub body_timeout: Option<u64>,
    /// Bytes per second a slow publish body must keep up: every this many bytes received add a
    /// second to --body-timeout; 0 makes --body-timeout the limit for the whole body
    /// [default: 1024].
    #[arg(long, env = "HERALD_BODY_MIN_RATE")]
    pub body_min_rate: Option<usize>,
    /// Seconds of silence before TCP keepalive probes look for a vanished peer; 0 turns them
    /// off [default: 60].
    #[arg(long, env = "HERALD_TCP_KEEPALIVE")]
    pub tcp_keepalive: Option<u64>,
    /// Most bytes a connection's socket holds not yet sent (TCP_NOTSENT_LOWAT); 0 leaves the
    /// system's default. Lower: a slow subscriber's updates wait in its queue, where
    /// --conflate skips superseded ones, rather than stale in the kernel [default: 16384].
    #[arg(long, env = "HERALD_TCP_NOTSENT_LOWAT")]
    pub tcp_notsent_lowat: Option<u32>,
    /// Most `topic` selectors in one subscribe request, as the reference hub [default: 1000].
    #[arg(long, env = "HERALD_MAX_TOPICS")]
    pub max_topics: Option<usize>,
    /// Most connections open at once; beyond, new ones get 503 [default: the open-file limit
    /// minus 128, kept for the store's files and for accepting].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Connections kept for health checks, publishers and the API: subscriptions get 503 with
    /// Retry-After once the others are taken [default: 64].
    #[arg(long, env = "HERALD_RESERVED_CONNECTIONS")]
    pub reserved_connections: Option<usize>,
    /// Most connections from one client address; 0 for no limit (behind a proxy every client
    /// has the proxy's address) [default: 0].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Bytes all distinct compiled URI template selectors may take together; a subscription
    /// that would compile one more gets 503 [default: 268435456].
    #[arg(long, env = "HERALD_TEMPLATE_BUDGET")]
    pub template_budget: Option<usize>,
    /// Which generations of Mercure to serve: `0` (topic= subscriptions, JWTs with a mercure
    /// claim), `1` (match= subscriptions, at+jwt access tokens) or `both` [default: both].
    #[arg(long, env = "HERALD_PROTOCOL", value_enum)]
    pub protocol: Option<ProtocolArg>,
}

/// `--protocol`: which generations of Mercure `herald serve` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
pub enum ProtocolArg {
    #[value(name = "0")]
    #[serde(rename = "0")]
    Zero,
    #[value(name = "1")]
    #[serde(rename = "1")]
    One,
    #[value(name = "both")]
    #[serde(rename = "both")]
    Both,
}

/// Which history backend to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    Memory,
    File(PathBuf),
    /// `redis://HOST:PORT/DB[?stream=KEY]` (or `rediss://`), the whole URL.
    Redis(String),
    /// `nats://HOST:PORT[?stream=NAME]`, the whole URL.
    Nats(String),
}

impl ServeConfig {
    /// Fills every unset field from the `--config` file, if one was given.
    pub fn merge_file(mut self) -> anyhow::Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let file: ServeConfig =
            toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))?;
        macro_rules! fill {
            ($($field:ident),*) => { $( if self.$field.is_none() { self.$field = file.$field; } )* };
        }
        fill!(
            tls_cert,
            tls_key,
            tls_self_signed,
            http2_max_streams,
            jwt_key,
            publisher_jwt_key,
            subscriber_jwt_key,
            publisher_jwt_key_file,
            subscriber_jwt_key_file,
            jwt_alg,
            jwt_leeway,
            jwt_audience,
            jwt_issuer,
            anonymous,
            store,
            accept_history_loss,
            store_memory,
            history_size,
            history_max_bytes,
            history_max_age,
            retained_topics,
            retained_bytes,
            retained_age,
            heartbeat,
            subscriptions,
            max_body,
            queue_size,
            queue_bytes,
            write_timeout,
            max_owed_bytes,
            header_timeout,
            body_timeout,
            body_min_rate,
            tcp_keepalive,
            tcp_notsent_lowat,
            max_topics,
            max_connections,
            reserved_connections,
            max_connections_per_ip,
            template_budget,
            protocol
        );
        if self.cors_origin.is_empty() {
            self.cors_origin = file.cors_origin;
        }
        if self.retain.is_empty() {
            self.retain = file.retain;
        }
        if self.conflate.is_empty() {
            self.conflate = file.conflate;
        }
        if self.listen.is_empty() {
            self.listen = file.listen;
        }
        Ok(self)
    }

    /// Whether a certificate is configured (files, or the self-signed one).
    pub fn tls_configured(&self) -> bool {
        self.tls_cert.is_some() || self.tls_key.is_some() || self.tls_self_signed == Some(true)
    }

    /// The addresses to listen on, each resolved (the first IPv4 address of a name, as
    /// `localhost` is both `127.0.0.1` and `::1`) and with whether it serves HTTPS; or the
    /// default.
    pub fn listen(&self) -> anyhow::Result<Vec<(SocketAddr, bool)>> {
        let tls = self.tls_configured();
        if self.listen.is_empty() {
            return Ok(vec![(SocketAddr::from(([127, 0, 0, 1], 8080)), tls)]);
        }
        self.listen
            .iter()
            .map(|entry| {
                let (https, address) = if let Some(rest) = entry.strip_prefix("https://") {
                    if !tls {
                        bail!(
                            "--listen {entry:?} serves HTTPS: give it a certificate with \
                             --tls-cert FILE --tls-key FILE, or --tls-self-signed for development"
                        );
                    }
                    (true, rest)
                } else if let Some(rest) = entry.strip_prefix("http://") {
                    (false, rest)
                } else {
                    (tls, entry.as_str())
                };
                Ok((resolve(address.trim_end_matches('/'))?, https))
            })
            .collect()
    }
}

/// A `--listen` address resolved.
fn resolve(listen: &str) -> anyhow::Result<SocketAddr> {
    let usage = "--listen takes HOST:PORT, such as 127.0.0.1:8080, localhost:8080, \
                 0.0.0.0:8080 (every interface) or [::1]:8080, optionally after http:// \
                 or https://";
    if let Ok(addr) = listen.parse() {
        return Ok(addr);
    }
    if !listen.contains(':') {
        bail!("--listen {listen:?} has no port: {usage}");
    }
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(listen)
        .with_context(|| {
            format!("--listen {listen:?} is not an address this machine has: {usage}")
        })?
        .collect();
    resolved
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(resolved.first())
        .copied()
        .with_context(|| format!("--listen {listen:?} resolves to no address: {usage}"))
}

/// A TOML value that is one string or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

impl ServeConfig {
    pub fn store(&self) -> anyhow::Result<Store> {
        let store = self.store.as_deref().unwrap_or("file:./herald-data");
        match store.split_once(':') {
            _ if store == "memory" => Ok(Store::Memory),
            Some(("file", path)) if !path.is_empty() => Ok(Store::File(PathBuf::from(path))),
            Some(("redis" | "rediss", rest)) if rest.starts_with("//") => {
                Ok(Store::Redis(store.to_owned()))
            }
            Some(("nats", rest)) if rest.starts_with("//") => Ok(Store::Nats(store.to_owned())),
            _ => bail!(
                "unknown --store {store:?}: use `file:PATH`, `memory`, \
                 `redis://HOST:PORT/DB[?stream=KEY]` or `nats://HOST:PORT[?stream=NAME]`"
            ),
        }
    }

    /// The hub's settings; `nofile` is the process's open-file limit.
    pub fn settings(&self, nofile: u64) -> herald_hub::Settings {
        let defaults = herald_hub::Settings::default();
        let fd_bound = usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(128)
            .max(16);
        herald_hub::Settings {
            anonymous: self.anonymous.unwrap_or(defaults.anonymous),
            heartbeat: match self.heartbeat {
                Some(0) => None,
                Some(secs) => Some(std::time::Duration::from_secs(secs)),
                None => defaults.heartbeat,
            },
            cors_origins: self.cors_origin.clone(),
            retain: self.retain.clone(),
            conflate: self.conflate.clone(),
            subscriptions: self.subscriptions.unwrap_or(defaults.subscriptions),
            max_body: self.max_body.unwrap_or(defaults.max_body),
            queue_size: self.queue_size.unwrap_or(defaults.queue_size),
            max_topics: self.max_topics.unwrap_or(defaults.max_topics),
            queue_bytes: self.queue_bytes.unwrap_or(defaults.queue_bytes),
            write_timeout: secs(self.write_timeout).unwrap_or(defaults.write_timeout),
            max_owed_bytes: self.max_owed_bytes.unwrap_or(defaults.max_owed_bytes),
            header_timeout: secs(self.header_timeout).unwrap_or(defaults.header_timeout),
            body_timeout: secs(self.body_timeout).unwrap_or(defaults.body_timeout),
            body_min_rate: self.body_min_rate.unwrap_or(defaults.body_min_rate),
            tcp_keepalive: match self.tcp_keepalive {
                Some(0) => None,
                Some(s) => Some(std::time::Duration::from_secs(s)),
                None => defaults.tcp_keepalive,
            },
            tcp_notsent_lowat: match self.tcp_notsent_lowat {
                Some(0) => None,
                Some(bytes) => Some(bytes),
                None => defaults.tcp_notsent_lowat,
            },
            max_connections: self.max_connections.unwrap_or(fd_bound),
            reserved_connections: self
                .reserved_connections
                .unwrap_or(defaults.reserved_connections),
            max_connections_per_ip: self.max_connections_per_ip.filter(|&n| n > 0),
            template_budget: self.template_budget.unwrap_or(defaults.template_budget),
            http2_max_streams: self.http2_max_streams.unwrap_or(defaults.http2_max_streams),
            protocol: match self.protocol {
                Some(ProtocolArg::Zero) => herald_hub::Protocol::V0,
                Some(ProtocolArg::One) => herald_hub::Protocol::V1,
                Some(ProtocolArg::Both) | None => defaults.protocol,
            },
            mint_key: None,
        }
    }

    /// Checks what `settings` cannot express: a zero timeout would close every connection.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (flag, value) in [
            ("--write-timeout", self.write_timeout),
            ("--header-timeout", self.header_timeout),
            ("--body-timeout", self.body_timeout),
        ] {
            if value == Some(0) {
                bail!("{flag} must be at least 1 second");
            }
        }
        match (
            &self.tls_cert,
            &self.tls_key,
            self.tls_self_signed == Some(true),
        ) {
            (Some(_), None, _) => {
                bail!("--tls-cert needs --tls-key, the certificate's private key")
            }
            (None, Some(_), _) => bail!("--tls-key needs --tls-cert, the key's certificate"),
            (Some(_), Some(_), true) => bail!(
                "--tls-self-signed makes a certificate of its own: leave out --tls-cert and \
                 --tls-key, or --tls-self-signed"
            ),
            _ => {}
        }
        if self.http2_max_streams == Some(0) {
            bail!("--http2-max-streams must be at least 1");
        }
        if self.store_memory.is_some() && !matches!(self.store()?, Store::File(_)) {
            bail!("--store-memory applies to the file store (--store file:PATH)");
        }
        if let Some(bytes) = self.store_memory
            && bytes < herald_hub::history::file::MIN_MEMORY
        {
            bail!(
                "--store-memory {bytes} is too small: the file store needs at least {} bytes",
                herald_hub::history::file::MIN_MEMORY
            );
        }
        Ok(())
    }

    pub fn store_memory(&self) -> usize {
        self.store_memory
            .unwrap_or(herald_hub::history::file::DEFAULT_MEMORY)
    }

    pub fn accept_history_loss(&self) -> bool {
        self.accept_history_loss.unwrap_or(false)
    }

    pub fn history_size(&self) -> usize {
        self.history_size.unwrap_or(10_000)
    }

    /// How much history the store keeps (`--history-size`, `--history-max-bytes`,
    /// `--history-max-age`).
    pub fn retention(&self) -> herald_hub::history::Retention {
        herald_hub::history::Retention {
            max_updates: self.history_size(),
            max_bytes: self.history_max_bytes.filter(|&bytes| bytes > 0),
            max_age: self.history_max_age(),
            retained: herald_hub::history::RetainedLimits {
                max_topics: self.retained_topics.unwrap_or(10_000),
                max_bytes: self.retained_bytes.unwrap_or(64 << 20),
                max_age: self
                    .retained_age
                    .filter(|&secs| secs > 0)
                    .map(std::time::Duration::from_secs),
            },
        }
    }

    pub fn history_max_age(&self) -> Option<std::time::Duration> {
        self.history_max_age
            .filter(|&secs| secs > 0)
            .map(std::time::Duration::from_secs)
    }
}

fn secs(value: Option<u64>) -> Option<std::time::Duration> {
    value.map(std::time::Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_toml(text: &str) -> ServeConfig {
        toml::from_str(text).expect("valid TOML")
    }

    #[test]
    fn protocol_is_read_from_the_file_and_defaults_to_both() {
        assert_eq!(
            from_toml(r#"protocol = "1""#).settings(1024).protocol,
            herald_hub::Protocol::V1
        );
        assert_eq!(
            from_toml(r#"protocol = "0""#).settings(1024).protocol,
            herald_hub::Protocol::V0
        );
        assert_eq!(
            from_toml("").settings(1024).protocol,
            herald_hub::Protocol::Both
        );
    }

    #[test]
    fn listen_takes_one_address_or_several() {
        assert_eq!(
            from_toml(r#"listen = "127.0.0.1:1""#).listen,
            ["127.0.0.1:1"]
        );
        let many = from_toml(r#"listen = ["127.0.0.1:1", "http://127.0.0.1:2"]"#);
        assert_eq!(many.listen, ["127.0.0.1:1", "http://127.0.0.1:2"]);
        assert!(from_toml("").listen.is_empty());
    }

    #[test]
    fn listen_schemes_choose_https_or_plaintext() {
        let config = |listen: &[&str], tls: bool| ServeConfig {
            listen: listen.iter().map(|s| s.to_string()).collect(),
            tls_self_signed: tls.then_some(true),
            ..ServeConfig::default()
        };
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(config(&[], false).listen().unwrap(), [(addr(8080), false)]);
        assert_eq!(config(&[], true).listen().unwrap(), [(addr(8080), true)]);
        assert_eq!(
            config(
                &["127.0.0.1:1", "http://127.0.0.1:2", "https://127.0.0.1:3/"],
                true
            )
            .listen()
            .unwrap(),
            [(addr(1), true), (addr(2), false), (addr(3), true)]
        );
        let err = config(&["https://127.0.0.1:3"], false)
            .listen()
            .unwrap_err();
        assert!(err.to_string().contains("--tls-self-signed"), "{err}");
        let err = config(&["127.0.0.1"], false).listen().unwrap_err();
        assert!(err.to_string().contains("has no port"), "{err}");
    }
}

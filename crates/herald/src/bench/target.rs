//! The servers the bench measures, and how each is asked to subscribe and publish: herald with
//! the Mercure protocol (form POST with a publisher JWT; subscribers carry a subscriber JWT, as
//! users run it, auth on), nchan with its own locations (`/sub?id=` EventSource subscriber,
//! `/pub?id=` publisher whose body is the message, as configured in `bench/nchan/nginx.conf`).

use anyhow::Context;
use herald_hub::auth::{Claims, MercureClaim, sign_hmac};
use std::sync::Arc;

/// The topic every bench subscriber listens to (a URL, as Mercure topics usually are).
pub const TOPIC: &str = "https://bench.herald.invalid/topic";
/// nchan's channel id for the same topic.
const CHANNEL: &str = "bench";

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Herald,
    Nchan,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Herald => "herald",
            Kind::Nchan => "nchan",
        }
    }
}

/// Where and how to talk to the server under test.
#[derive(Clone, Debug)]
pub struct Target {
    pub kind: Kind,
    /// `host:port` to connect to.
    pub addr: std::net::SocketAddr,
    /// The `Host` header value.
    host: String,
    subscriber_token: Option<String>,
    publisher_token: Option<String>,
    /// For an `https://` URL: the bench's TLS client (any certificate accepted: the bench
    /// measures the server, it does not authenticate it), ALPN `http/1.1` for its raw
    /// subscribers.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl Target {
    /// `url` is the server's base (`http://127.0.0.1:8080`); a path in it is ignored, since each
    /// kind has its fixed paths. `jwt_key` signs herald's tokens (none: anonymous subscribers
    /// and no publishing).
    pub fn new(kind: Kind, url: &str, jwt_key: Option<&str>) -> anyhow::Result<Self> {
        let uri: http::Uri = url
            .parse()
            .with_context(|| format!("invalid --url {url:?}"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("--url must be http://HOST:PORT or https://HOST:PORT, got {url:?}"),
        };
        let authority = uri.authority().context("--url has no host")?;
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let mut config = herald_client::TlsOptions::default()
                .accept_invalid_certificates(true)
                .client_config()?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(config))
        } else {
            None
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(authority.host(), port))?
            .next()
            .with_context(|| format!("cannot resolve {}", authority.host()))?;
        let token = |claim: MercureClaim| -> anyhow::Result<Option<String>> {
            jwt_key.map(|key| sign(key, claim)).transpose()
        };
        let (subscriber_token, publisher_token) = match kind {
            Kind::Herald => (
                token(MercureClaim {
                    subscribe: Some(vec![TOPIC.into()]),
                    ..Default::default()
                })?,
                token(MercureClaim {
                    publish: Some(vec![TOPIC.into()]),
                    ..Default::default()
                })?,
            ),
            Kind::Nchan => (None, None),
        };
        Ok(Target {
            kind,
            addr,
            host: authority.to_string(),
            subscriber_token,
            publisher_token,
            tls,
        })
    }

    /// The path and query that subscribe.
    pub fn subscribe_path(&self) -> String {
        match self.kind {
            Kind::Herald => format!(
                "/.well-known/mercure?topic={}",
                form_urlencoded::byte_serialize(TOPIC.as_bytes()).collect::<String>()
            ),
            Kind::Nchan => format!("/sub?id={CHANNEL}"),
        }
    }

    /// The subscriber's `Authorization` header value, if it has a token.
    pub fn subscriber_authorization(&self) -> Option<String> {
        self.subscriber_token
            .as_ref()
            .map(|t| format!("Bearer {t}"))
    }

    /// The `Host` header value (the `:authority` of HTTP/2).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The complete HTTP/1.1 request that opens one SSE subscription.
    pub fn subscribe_request(&self) -> Vec<u8> {
        let path = self.subscribe_path();
        let auth = self
            .subscriber_authorization()
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{auth}\r\n",
            self.host
        )
        .into_bytes()
    }

    /// The URL, content type, body and authorization of one publish of `data`.
    pub fn publish_request(&self, data: &str) -> http::Request<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let builder = http::Request::post(match self.kind {
            Kind::Herald => format!("{scheme}://{}/.well-known/mercure", self.host),
            Kind::Nchan => format!("{scheme}://{}/pub?id={CHANNEL}", self.host),
        });
        match self.kind {
            Kind::Herald => {
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("topic", TOPIC)
                    .append_pair("data", data)
                    .finish();
                let mut builder =
                    builder.header("content-type", "application/x-www-form-urlencoded");
                if let Some(token) = &self.publisher_token {
                    builder = builder.header("authorization", format!("Bearer {token}"));
                }
                builder.body(body)
            }
            Kind::Nchan => builder
                .header("content-type", "text/plain")
                .body(data.to_owned()),
        }
        .expect("a valid request")
    }

    /// Whether a publish answer means "accepted".
    pub fn publish_accepted(&self, status: http::StatusCode) -> bool {
        match self.kind {
            Kind::Herald => status == http::StatusCode::OK,
            // 201: stored with subscribers waiting, 202: stored with none.
            Kind::Nchan => status.is_success(),
        }
    }

    /// The host name a TLS client sends (SNI) and checks.
    pub fn server_name(&self) -> rustls::pki_types::ServerName<'static> {
        let host = self
            .host
            .rsplit_once(':')
            .map_or(self.host.as_str(), |(h, _)| h);
        rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
            .unwrap_or_else(|_| rustls::pki_types::ServerName::try_from("localhost").unwrap())
    }

    /// The publisher's `Authorization` header value, if it has a token.
    pub fn publisher_authorization(&self) -> Option<String> {
        self.publisher_token.as_ref().map(|t| format!("Bearer {t}"))
    }

    pub fn needs_publisher_token(&self) -> bool {
        self.kind == Kind::Herald && self.publisher_token.is_none()
    }
}

/// A token for `claim`, signed with `key` (HS256). Tokens expire, as deployed tokens do, so the
/// hub's per-subscriber expiry timer is part of what is measured.
pub fn sign(key: &str, claim: MercureClaim) -> anyhow::Result<String> {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + 24 * 3600;
    let claims = Claims {
        mercure: Some(claim),
        exp: Some(exp),
    };
    Ok(sign_hmac(
        jsonwebtoken::Algorithm::HS256,
        key.as_bytes(),
        &claims,
    )?)
}

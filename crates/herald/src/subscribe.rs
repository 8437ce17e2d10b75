//! `herald sub`: subscribes to selectors and prints every event, reconnecting like a browser
//! (with `Last-Event-ID`) until a fatal error.

use crate::publish::DEFAULT_HUB;
use anyhow::Context;
use clap::Args;
use futures_util::StreamExt;
use herald_client::{EventSource, Item};
use std::io::Write;

#[derive(Args, Debug)]
pub struct SubArgs {
    /// Topic selectors: topics, URI templates or `*`.
    #[arg(required = true, value_name = "SELECTOR")]
    selectors: Vec<String>,
    /// Resume after this update id (`earliest` for all history).
    #[arg(long)]
    last_event_id: Option<String>,
    /// First receive the latest retained value of every matching topic (`retained=1`, a
    /// Herald extension); a reconnection resumes with `Last-Event-ID` instead.
    #[arg(long)]
    retained: bool,
    /// Print one JSON object a line instead of SSE text.
    #[arg(long)]
    json: bool,
    /// The hub's URL.
    #[arg(long, env = "HERALD_HUB", default_value = DEFAULT_HUB)]
    hub: String,
    /// Subscriber JWT (needed for private updates, or when the hub is not anonymous).
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    trust: crate::trust::TrustArgs,
}

pub async fn run(args: SubArgs) -> anyhow::Result<()> {
    let mut url = url_with_topics(&args.hub, &args.selectors);
    if args.retained {
        url.push_str("&retained=1");
    }
    url.shrink_to_fit();
    let mut builder = EventSource::builder(&url).tls(args.trust.options()?);
    if let Some(token) = &args.token {
        builder = builder.header("authorization", &format!("Bearer {token}"));
    }
    if let Some(id) = &args.last_event_id {
        builder = builder.last_event_id(id);
    }
    let mut source = builder
        .build()
        .with_context(|| format!("invalid hub URL {url:?}"))?;
    let mut stdout = std::io::stdout().lock();
    while let Some(item) = source.next().await {
        match item {
            Ok(Item::Open) => tracing::debug!("connected to {url}"),
            Ok(Item::Message(m)) => {
                if args.json {
                    let line = serde_json::json!({
                        "id": m.last_event_id,
                        "type": m.event_type,
                        "data": m.data,
                    });
                    writeln!(stdout, "{line}")?;
                } else {
                    let mut event = herald_sse::Event::new(m.data).id(m.last_event_id);
                    if m.event_type != "message" {
                        event = event.event(m.event_type);
                    }
                    stdout.write_all(&event.encode()?)?;
                }
                stdout.flush()?;
            }
            Err(err) if err.is_fatal() => {
                let unauthorized = matches!(
                    &err,
                    herald_client::Error::Status { status, .. } if status.as_u16() == 401
                );
                let failed = Err(err).context("subscription failed");
                return match (unauthorized, &args.token) {
                    (true, None) => failed.context(
                        "the hub needs a subscriber token: pass --token JWT (or set \
                         HERALD_TOKEN). `herald serve` prints one when it made its own key; \
                         `herald token --subscribe '*' --key KEY` makes one for a configured key",
                    ),
                    (true, Some(_)) => {
                        failed.context("the hub refused the token given with --token")
                    }
                    _ => failed,
                };
            }
            Err(err) => eprintln!("herald sub: {err}; reconnecting"),
        }
    }
    Ok(())
}

/// The hub URL with one `topic` query parameter per selector.
fn url_with_topics(hub: &str, selectors: &[String]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for selector in selectors {
        query.append_pair("topic", selector);
    }
    let sep = if hub.contains('?') { '&' } else { '?' };
    format!("{hub}{sep}{}", query.finish())
}

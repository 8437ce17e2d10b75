//! `herald pub`: publishes one update with a Mercure POST and prints its id.

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncReadExt;

/// The hub URL used when neither `--hub` nor `HERALD_HUB` is given.
pub const DEFAULT_HUB: &str = "http://127.0.0.1:8080/.well-known/mercure";

#[derive(Args, Debug)]
pub struct PubArgs {
    /// Topic(s) of the update; the first is the canonical one.
    #[arg(required = true, value_name = "TOPIC")]
    topics: Vec<String>,
    /// The update's data, or `-` to read it from standard input.
    #[arg(long)]
    data: String,
    /// Update id (the hub makes one when absent).
    #[arg(long)]
    id: Option<String>,
    /// SSE event type.
    #[arg(long = "type", value_name = "TYPE")]
    event_type: Option<String>,
    /// Reconnection time for subscribers, in milliseconds.
    #[arg(long)]
    retry: Option<u64>,
    /// Only subscribers authorized for one of the topics receive it.
    #[arg(long)]
    private: bool,
    /// The hub's URL.
    #[arg(long, env = "HERALD_HUB", default_value = DEFAULT_HUB)]
    hub: String,
    /// Publisher JWT.
    #[arg(long, env = "HERALD_TOKEN", hide_env_values = true)]
    token: String,
    #[command(flatten)]
    trust: crate::trust::TrustArgs,
}

pub async fn run(args: PubArgs) -> anyhow::Result<()> {
    let data = if args.data == "-" {
        let mut data = String::new();
        tokio::io::stdin()
            .read_to_string(&mut data)
            .await
            .context("reading the data from standard input")?;
        data
    } else {
        args.data
    };
    let mut form = form_urlencoded_body();
    for topic in &args.topics {
        form.append_pair("topic", topic);
    }
    form.append_pair("data", &data);
    if let Some(id) = &args.id {
        form.append_pair("id", id);
    }
    if let Some(t) = &args.event_type {
        form.append_pair("type", t);
    }
    if let Some(retry) = args.retry {
        form.append_pair("retry", &retry.to_string());
    }
    if args.private {
        form.append_pair("private", "on");
    }
    let request = http::Request::post(&args.hub)
        .header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        )
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", args.token),
        )
        .body(Full::new(Bytes::from(form.finish())))
        .with_context(|| format!("invalid hub URL {:?}", args.hub))?;
    let connector = args.trust.options()?.connector()?;
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let response = client
        .request(request)
        .await
        .with_context(|| format!("cannot reach the hub at {}", args.hub))?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body);
    if !status.is_success() {
        bail!("the hub answered {status}: {}", body.trim());
    }
    println!("{}", body.trim());
    Ok(())
}

fn form_urlencoded_body() -> form_urlencoded::Serializer<'static, String> {
    form_urlencoded::Serializer::new(String::new())
}

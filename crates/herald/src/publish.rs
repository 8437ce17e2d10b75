//! `herald pub`: publishes one update with a Mercure POST and prints its id; with `--stream`,
//! every event of an event stream read from standard input, in one request, printing each id
//! as the hub stores it.

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
    #[arg(long, required_unless_present = "stream")]
    data: Option<String>,
    /// Publish every event of the `text/event-stream` read from standard input (`data`, `id`,
    /// `event` as the type, `retry`, `topic`), in one request as it is read (a model's output
    /// piped into a topic); prints each id as the hub stores it. The topics are those of the
    /// events without a `topic` field of their own.
    #[arg(long, conflicts_with_all = ["data", "id", "event_type", "retry"])]
    stream: bool,
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
    /// Keep it as its topics' latest value, which subscribers asking with `retained=1` get
    /// first (a Herald extension).
    #[arg(long)]
    retain: bool,
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
    if args.stream {
        return stream(args).await;
    }
    let data = args.data.clone().unwrap_or_default();
    let data = if data == "-" {
        let mut data = String::new();
        tokio::io::stdin()
            .read_to_string(&mut data)
            .await
            .context("reading the data from standard input")?;
        data
    } else {
        data
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
    if args.retain {
        form.append_pair("retain", "on");
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

/// `herald pub --stream`: standard input as the body of one streaming publish, sent as it is
/// read; the hub's answer (an event stream of `accepted` ids, then `done` or `refused`) is
/// printed as it comes, one id per line.
async fn stream(args: PubArgs) -> anyhow::Result<()> {
    let mut query = form_urlencoded_body();
    for topic in &args.topics {
        query.append_pair("topic", topic);
    }
    if args.private {
        query.append_pair("private", "on");
    }
    if args.retain {
        query.append_pair("retain", "on");
    }
    let url = format!("{}?{}", args.hub, query.finish());
    let stdin = Box::pin(stdin_frames::chunks(tokio::io::stdin()));
    let body = http_body_util::StreamBody::new(stdin);
    let request = http::Request::post(&url)
        .header(http::header::CONTENT_TYPE, "text/event-stream")
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", args.token),
        )
        .body(body)
        .with_context(|| format!("invalid hub URL {:?}", args.hub))?;
    let connector = args.trust.options()?.connector()?;
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let response = client
        .request(request)
        .await
        .with_context(|| format!("cannot reach the hub at {}", args.hub))?;
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        let text = body.collect().await?.to_bytes();
        bail!(
            "the hub answered {status}: {}",
            String::from_utf8_lossy(&text).trim()
        );
    }
    let mut decoder = herald_sse::Decoder::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the hub's answer")?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        decoder.feed(&data).context("reading the hub's answer")?;
        while let Some(event) = decoder.next_event() {
            match &*event.event_type {
                "accepted" => println!("{}", event.data),
                "done" => return Ok(()),
                "refused" => bail!("the hub refused an event: {}", event.data),
                _ => {}
            }
        }
    }
    bail!("the hub's answer ended before it said the stream was done")
}

/// Standard input as a stream of body frames.
mod stdin_frames {
    use bytes::Bytes;
    use futures_util::Stream;
    use hyper::body::Frame;
    use tokio::io::{AsyncRead, AsyncReadExt};

    pub fn chunks<R: AsyncRead + Unpin + Send + 'static>(
        reader: R,
    ) -> impl Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Send + 'static {
        futures_util::stream::unfold(reader, |mut reader| async move {
            let mut buf = vec![0u8; 16 * 1024];
            match reader.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Frame::data(Bytes::from(buf))), reader))
                }
                Err(err) => Some((Err(err), reader)),
            }
        })
    }
}

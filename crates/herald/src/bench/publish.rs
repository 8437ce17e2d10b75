//! `herald bench publish`: how many updates per second one publisher gets accepted and
//! delivered, one request per update (sequential, over one keep-alive connection) against one
//! streamed request (`Content-Type: text/event-stream`, every update an event of one body), on
//! the same hub in one run, with one subscriber counting deliveries.

use super::procstat::{machine_times, own_cpu_us, sample};
use super::target::TOPIC;
use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One mode's figures.
#[derive(Debug, serde::Serialize)]
struct Figures {
    mode: &'static str,
    updates: u64,
    /// Seconds from the first byte sent to the last acknowledgement.
    accepted_s: f64,
    /// Seconds from the first byte sent to the last delivery to the subscriber.
    delivered_s: f64,
    accepted_per_s: f64,
    delivered_per_s: f64,
    /// The server's CPU per update (µs), with --server-pid.
    server_cpu_us_per_update: Option<f64>,
    /// The bench's own CPU (µs) per update: the load generator's cost.
    bench_cpu_us_per_update: f64,
    /// The machine's CPU busy share over the mode (0-100 % of all cores).
    machine_busy_percent: f64,
}

type Client<C> = hyper_util::client::legacy::Client<C, Full<Bytes>>;

pub async fn run(args: super::PublishArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let target = common.herald_target(
        "bench publish measures herald (its streaming publish is a Herald extension)",
    )?;
    anyhow::ensure!(
        !target.needs_publisher_token(),
        "bench publish needs --jwt-key to sign a publisher token"
    );
    let connector = herald_client::TlsOptions::default()
        .accept_invalid_certificates(true)
        .connector()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let mut results = Vec::new();
    for mode in ["request-per-update", "streamed"] {
        results.push(measure(&client, &target, mode, &args).await?);
    }
    if common.json {
        println!("{}", serde_json::to_string(&results)?);
        return Ok(());
    }
    println!(
        "{:<20} {:>8} {:>12} {:>13} {:>14} {:>14} {:>10}",
        "mode",
        "updates",
        "accepted/s",
        "delivered/s",
        "server µs/upd",
        "bench µs/upd",
        "machine %"
    );
    for f in &results {
        println!(
            "{:<20} {:>8} {:>12.0} {:>13.0} {:>14} {:>14.1} {:>10.0}",
            f.mode,
            f.updates,
            f.accepted_per_s,
            f.delivered_per_s,
            f.server_cpu_us_per_update
                .map_or("-".into(), |v| format!("{v:.1}")),
            f.bench_cpu_us_per_update,
            f.machine_busy_percent
        );
    }
    println!(
        "streamed / request-per-update: {:.1}x accepted, {:.1}x delivered",
        results[1].accepted_per_s / results[0].accepted_per_s,
        results[1].delivered_per_s / results[0].delivered_per_s
    );
    Ok(())
}

/// Publishes `--messages` updates in `mode` while one subscriber counts them.
async fn measure<C>(
    client: &Client<C>,
    target: &super::target::Target,
    mode: &'static str,
    args: &super::PublishArgs,
) -> anyhow::Result<Figures>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let n = args.messages;
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let hub = format!("{scheme}://{}/.well-known/mercure", target.host());
    // The subscriber, on the bench topic, from now on.
    let mut subscribe = http::Request::get(format!(
        "{scheme}://{}{}",
        target.host(),
        target.subscribe_path()
    ));
    if let Some(auth) = target.subscriber_authorization() {
        subscribe = subscribe.header("authorization", auth);
    }
    let response = client
        .request(subscribe.body(Full::default())?)
        .await
        .context("subscribing")?;
    anyhow::ensure!(
        response.status().is_success(),
        "subscribe: HTTP {}",
        response.status()
    );
    let delivered = Arc::new(AtomicU64::new(0));
    let (all_in, all_in_rx) = tokio::sync::oneshot::channel::<Instant>();
    let counter = delivered.clone();
    let reader = tokio::spawn(async move {
        let mut body = response.into_body();
        let mut decoder = herald_sse::Decoder::new();
        let mut all_in = Some(all_in);
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(data) = frame.into_data() {
                if decoder.feed(&data).is_err() {
                    break;
                }
                while decoder.next_event().is_some() {
                    if counter.fetch_add(1, Ordering::Relaxed) + 1 == n
                        && let Some(tx) = all_in.take()
                    {
                        let _ = tx.send(Instant::now());
                    }
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await; // registered
    let data = "x".repeat(args.size);
    let pids = &args.common.server_pids;
    let server_before = (!pids.is_empty()).then(|| sample(pids)).transpose()?;
    let bench_before = own_cpu_us();
    let machine_before = machine_times()?;
    let started = Instant::now();
    let token = target
        .publisher_authorization()
        .context("a publisher token")?;
    match mode {
        "request-per-update" => {
            for i in 0..n {
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("topic", TOPIC)
                    .append_pair("data", &format!("{i} {data}"))
                    .finish();
                let request = http::Request::post(&hub)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .header("authorization", &token)
                    .body(Full::new(Bytes::from(body)))?;
                let response = client.request(request).await?;
                anyhow::ensure!(
                    response.status().is_success(),
                    "publish: HTTP {}",
                    response.status()
                );
                response.into_body().collect().await?;
            }
        }
        _ => {
            let mut body = String::with_capacity(n as usize * (args.size + 16));
            for i in 0..n {
                body.push_str(&format!("data: {i} {data}\n\n"));
            }
            let topic: String = form_urlencoded::byte_serialize(TOPIC.as_bytes()).collect();
            let request = http::Request::post(format!("{hub}?topic={topic}"))
                .header("content-type", "text/event-stream")
                .header("authorization", &token)
                .body(Full::new(Bytes::from(body)))?;
            let response = client.request(request).await?;
            anyhow::ensure!(
                response.status().is_success(),
                "publish: HTTP {}",
                response.status()
            );
            let answer = response.into_body().collect().await?.to_bytes();
            let answer = String::from_utf8_lossy(&answer);
            anyhow::ensure!(
                answer.contains(&format!("event: done\ndata: {n}\n")),
                "the streamed publish did not store all {n} updates: {}",
                answer.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
            );
        }
    }
    let accepted_s = started.elapsed().as_secs_f64();
    let finished = tokio::time::timeout(Duration::from_secs(args.timeout), all_in_rx)
        .await
        .ok()
        .and_then(Result::ok);
    let bench_cpu = own_cpu_us() - bench_before;
    let machine_after = machine_times()?;
    let server_cpu = match server_before {
        Some(before) => Some(sample(pids)?.cpu_us - before.cpu_us),
        None => None,
    };
    reader.abort();
    let got = delivered.load(Ordering::Relaxed);
    let finished = finished.with_context(|| format!("{mode}: {got} of {n} delivered in time"))?;
    let delivered_s = finished.duration_since(started).as_secs_f64();
    let (busy, total) = (
        machine_after.0 - machine_before.0,
        machine_after.1 - machine_before.1,
    );
    Ok(Figures {
        mode,
        updates: n,
        accepted_s,
        delivered_s,
        accepted_per_s: n as f64 / accepted_s,
        delivered_per_s: n as f64 / delivered_s,
        server_cpu_us_per_update: server_cpu.map(|c| c / n as f64),
        bench_cpu_us_per_update: bench_cpu / n as f64,
        machine_busy_percent: 100.0 * busy as f64 / total.max(1) as f64,
    })
}

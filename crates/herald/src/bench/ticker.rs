//! `herald bench ticker`: latest-value topics under load, the measurement of conflation. A
//! ticker of `--symbols` topics, each updated `--rate` times a second (a tick of every symbol
//! at once, all ticks through one streamed publish request), goes to `--subscribers`
//! subscribers that each watch `--watch` symbols. The first `--slow` of them read slowly: they
//! stop reading for `--pause` seconds, then read for `--read` seconds at most
//! `--slow-bandwidth` bytes/s on a socket with a small receive buffer, in turn, each at its
//! own phase. The others read as fast as they can.
//!
//! Every update carries its symbol, its tick and its send time, so that the bench reports:
//! - fast readers: updates lost (a gap in a symbol's ticks, or a tick never received),
//!   duplicates, and publish->receive latency;
//! - slow readers: how long after reading again they hold a current price of every symbol
//!   they watch (an update sent after they resumed), the share of the published updates they
//!   received, and any duplicate or out-of-order tick (never allowed, conflated or not);
//! - the server's RSS every second (with `--server-pid`), and its conflation counters.
//!
//! Run it against a hub with `--conflate 'https://bench.herald.invalid/prices/{symbol}'` and
//! without, to compare (`bench/ticker.sh` does both).

use super::idle::round;
use super::procstat::{machine_times, own_cpu_us, sample};
use super::target::Target;
use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The symbols' topics: `PRICES/0`, `PRICES/1`, …
pub const PRICES: &str = "https://bench.herald.invalid/prices";

/// What every reader and the publisher share.
struct Shared {
    start: Instant,
    /// Ticks sent so far (every symbol's update of tick N carries N).
    ticks_sent: AtomicU64,
    fast: Counts,
    slow: Counts,
    /// Publish->receive latency of fast readers, microseconds.
    fast_latency_us: Mutex<Histogram<u64>>,
    /// Milliseconds from a slow reader reading again to holding a current price of every
    /// symbol it watches.
    current_after_ms: Mutex<Histogram<u64>>,
    /// Slow readers' resumptions that were not current before the reader paused again.
    never_current: AtomicU64,
}

#[derive(Default)]
struct Counts {
    received: AtomicU64,
    /// Ticks skipped in a symbol's sequence (for slow readers: conflated, as expected).
    skipped: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    bytes: AtomicU64,
}

impl Counts {
    /// Counts the tick `data` carries against what `watch` last saw of its symbol: malformed,
    /// a duplicate (or out of order), or received after `skipped` ones. Received: its
    /// symbol's slot in `watch` and its send time.
    fn count(&self, watch: &mut Watch, data: &str) -> Option<(usize, u64)> {
        let Some((symbol, tick, sent)) = parse(data) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let Some(slot) = watch.slot(symbol) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let expected = watch.last[slot].map_or(0, |t| t + 1);
        if tick < expected {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.skipped.fetch_add(tick - expected, Ordering::Relaxed);
        watch.last[slot] = Some(tick);
        self.received.fetch_add(1, Ordering::Relaxed);
        Some((slot, sent))
    }
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// The update's data: `{"s":SYMBOL,"tick":N,"t":NANOS,"pad":"xxx…"}`, padded to `size` bytes
/// when it fits.
fn payload(symbol: usize, tick: u64, sent_ns: u64, size: usize) -> String {
    let mut data = format!("{{\"s\":{symbol},\"tick\":{tick},\"t\":{sent_ns},\"pad\":\"");
    let pad = size.saturating_sub(data.len() + 2);
    data.extend(std::iter::repeat_n('x', pad));
    data.push_str("\"}");
    data
}

/// Symbol, tick and send time of a payload.
fn parse(data: &str) -> Option<(usize, u64, u64)> {
    let rest = data.strip_prefix("{\"s\":")?;
    let (symbol, rest) = rest.split_once(",\"tick\":")?;
    let (tick, rest) = rest.split_once(",\"t\":")?;
    let sent = rest.split([',', '}']).next()?;
    Some((symbol.parse().ok()?, tick.parse().ok()?, sent.parse().ok()?))
}

/// The symbols subscriber `index` watches: `watch` consecutive ones from `index * watch`,
/// wrapping, so that every symbol has about as many watchers.
fn watchlist(index: usize, watch: usize, symbols: usize) -> Vec<usize> {
    (0..watch.min(symbols))
        .map(|k| (index * watch + k) % symbols)
        .collect()
}

/// The HTTP/1.1 request that subscribes to `symbols` (one `topic` each, or the template of
/// all when it watches every symbol).
fn subscribe_request(target: &Target, symbols: &[usize], all: bool) -> Vec<u8> {
    let mut query = form_urlencoded::Serializer::new(String::new());
    if all {
        query.append_pair("topic", &format!("{PRICES}/{{symbol}}"));
    } else {
        for symbol in symbols {
            query.append_pair("topic", &format!("{PRICES}/{symbol}"));
        }
    }
    let auth = target
        .subscriber_authorization()
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /.well-known/mercure?{} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\n{auth}\r\n",
        query.finish(),
        target.host()
    )
    .into_bytes()
}

/// One reader's view of its symbols: the last tick of each (by position in its watchlist).
struct Watch {
    first: usize,
    symbols: usize,
    last: Vec<Option<u64>>,
}

impl Watch {
    fn new(list: &[usize], symbols: usize) -> Self {
        Watch {
            first: list.first().copied().unwrap_or(0),
            symbols,
            last: vec![None; list.len()],
        }
    }

    /// The slot of `symbol`, if watched.
    fn slot(&self, symbol: usize) -> Option<usize> {
        let slot = (symbol + self.symbols - self.first % self.symbols) % self.symbols;
        (slot < self.last.len()).then_some(slot)
    }
}

pub async fn run(args: super::TickerArgs) -> anyhow::Result<()> {
    let common = &args.common;
    anyhow::ensure!(
        args.symbols > 0 && args.rate > 0 && args.subscribers > 0 && args.watch > 0,
        "--symbols, --rate, --subscribers and --watch must be positive"
    );
    anyhow::ensure!(
        args.slow <= args.subscribers,
        "--slow is at most --subscribers"
    );
    let limit = crate::limits::raise_nofile_limit();
    let target =
        common.herald_target("bench ticker measures herald (conflation is a Herald extension)")?;
    let key = common
        .jwt_key
        .as_deref()
        .context("bench ticker needs --jwt-key to sign a publisher token")?;
    let all = args.watch >= args.symbols;

    // Subscribers first, all of them before the first tick.
    let requests: Vec<Arc<[u8]>> = (0..args.subscribers.min(args.symbols.max(1)))
        .map(|i| subscribe_request(&target, &watchlist(i, args.watch, args.symbols), all).into())
        .collect();
    let slow_buffer = (args.slow_buffer > 0).then_some(args.slow_buffer);
    let swarm = super::swarm::connect_each(
        std::slice::from_ref(&target),
        args.subscribers,
        common.sources,
        "ticker",
        |index| {
            let request =
                requests[watch_key(index, args.watch, args.symbols) % requests.len()].clone();
            (request, if index < args.slow { slow_buffer } else { None })
        },
    )
    .await;
    eprintln!(
        "ticker: {} subscriptions open, {} failed, in {:.1} s",
        swarm.open.len(),
        swarm.failed(),
        swarm.took.as_secs_f64()
    );
    anyhow::ensure!(
        !swarm.open.is_empty(),
        "no subscription opened: {:?}",
        swarm.failures
    );
    let connect_failed = swarm.failed();
    let histogram = |high| Mutex::new(Histogram::new_with_bounds(1, high, 3).expect("bounds"));
    let shared = Arc::new(Shared {
        start: Instant::now(),
        ticks_sent: AtomicU64::new(0),
        fast: Counts::default(),
        slow: Counts::default(),
        fast_latency_us: histogram(600_000_000),
        current_after_ms: histogram(3_600_000),
        never_current: AtomicU64::new(0),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let cycle = args.pause + args.read;
    let mut readers = Vec::new();
    for (index, subscription) in swarm.indexes.into_iter().zip(swarm.open) {
        let list = watchlist(index, args.watch, args.symbols);
        let (shared, stop) = (shared.clone(), stop_rx.clone());
        readers.push(if index < args.slow {
            // Phases spread over one cycle, so that slow readers do not all pause at once.
            let phase = cycle * index as f64 / args.slow.max(1) as f64;
            tokio::spawn(slow_reader(
                subscription,
                Watch::new(&list, args.symbols),
                shared,
                stop,
                SlowPlan {
                    first_read: Duration::from_secs_f64(phase.min(args.read)),
                    pause: Duration::from_secs_f64(args.pause),
                    read: Duration::from_secs_f64(args.read),
                    bandwidth: args.slow_bandwidth,
                },
            ))
        } else {
            tokio::spawn(fast_reader(
                subscription,
                Watch::new(&list, args.symbols),
                shared,
                stop,
            ))
        });
    }
    // Let the hub finish registering the last subscribers.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let pids = &common.server_pids;
    let rss = Arc::new(Mutex::new(Vec::<(f64, u64)>::new()));
    let sampler = (!pids.is_empty()).then(|| {
        let (pids, rss, shared) = (pids.clone(), rss.clone(), shared.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                if let Ok(s) = sample(&pids) {
                    let t = shared.now_ns() as f64 / 1e9;
                    super::lock(&rss).push((t, s.rss));
                }
            }
        })
    });
    let server_before = (!pids.is_empty()).then(|| sample(pids)).transpose()?;
    let bench_before = own_cpu_us();
    let machine_before = machine_times()?;
    let publish_started = shared.now_ns();
    let publisher = publish(&target, key, &args, &shared).await;
    let published_s = (shared.now_ns() - publish_started) as f64 / 1e9;
    let server_after = (!pids.is_empty()).then(|| sample(pids)).transpose()?;
    let bench_cpu_us = own_cpu_us() - bench_before;
    let machine_after = machine_times()?;
    // The last tick's deliveries: fast readers stop counting losses at the end.
    tokio::time::sleep(Duration::from_secs(args.drain)).await;
    let _ = stop_tx.send(true);
    let mut dropped = 0;
    for reader in readers {
        if reader.await?.is_some() {
            dropped += 1;
        }
    }
    if let Some(sampler) = sampler {
        sampler.abort();
    }
    let metrics = hub_metrics(&target).await.unwrap_or_default();

    let ticks = shared.ticks_sent.load(Ordering::Relaxed);
    let slow_open = args.slow.min(args.subscribers);
    let watched = args.watch.min(args.symbols) as u64;
    let fast_expected = (args.subscribers - slow_open) as u64 * watched * ticks;
    let slow_published = slow_open as u64 * watched * ticks;
    let fast_latency = super::lock(&shared.fast_latency_us).clone();
    let current = super::lock(&shared.current_after_ms).clone();
    let rss = std::mem::take(&mut *super::lock(&rss));
    let counts = |c: &Counts| {
        serde_json::json!({
            "received": c.received.load(Ordering::Relaxed),
            "skipped": c.skipped.load(Ordering::Relaxed),
            "duplicates_or_reordered": c.duplicates.load(Ordering::Relaxed),
            "malformed": c.malformed.load(Ordering::Relaxed),
            "bytes": c.bytes.load(Ordering::Relaxed),
        })
    };
    let (busy, total) = (
        machine_after.0 - machine_before.0,
        machine_after.1 - machine_before.1,
    );
    let rss_mb: Vec<f64> = rss.iter().map(|&(_, b)| round(b as f64 / 1e6, 1)).collect();
    // After warm-up: from the end of the first pause-and-read cycle.
    let warm: Vec<f64> = rss
        .iter()
        .filter(|&&(t, _)| t >= cycle + 0.5)
        .map(|&(_, b)| b as f64 / 1e6)
        .collect();
    let report = serde_json::json!({
        "mode": "ticker",
        "symbols": args.symbols,
        "rate_per_symbol": args.rate,
        "updates_per_s": args.symbols as u64 * args.rate,
        "size": args.size,
        "subscribers": args.subscribers,
        "connect_failed": connect_failed,
        "watch": watched,
        "slow": slow_open,
        "slow_pause_s": args.pause,
        "slow_read_s": args.read,
        "slow_bandwidth": args.slow_bandwidth,
        "slow_buffer": args.slow_buffer,
        "ticks": ticks,
        "published": ticks * args.symbols as u64,
        "published_s": round(published_s, 2),
        "publisher": publisher.as_ref().err().map(|e| format!("{e:#}")),
        "fast": {
            "expected": fast_expected,
            "lost": fast_expected.saturating_sub(shared.fast.received.load(Ordering::Relaxed)),
            "counts": counts(&shared.fast),
            "latency_ms": {
                "p50": round(fast_latency.value_at_quantile(0.5) as f64 / 1000.0, 1),
                "p99": round(fast_latency.value_at_quantile(0.99) as f64 / 1000.0, 1),
                "max": round(fast_latency.max() as f64 / 1000.0, 1),
            },
        },
        "slow_readers": {
            "published_for_them": slow_published,
            "received_share": round(
                shared.slow.received.load(Ordering::Relaxed) as f64 / slow_published.max(1) as f64, 3),
            "counts": counts(&shared.slow),
            "resumptions": current.len(),
            "never_current": shared.never_current.load(Ordering::Relaxed),
            "current_after_ms": {
                "p50": current.value_at_quantile(0.5),
                "p99": current.value_at_quantile(0.99),
                "max": current.max(),
            },
        },
        "dropped": dropped,
        "server": server_before.zip(server_after).map(|(before, after)| serde_json::json!({
            "cpu_us_per_update_published": round(
                (after.cpu_us - before.cpu_us) / (ticks * args.symbols as u64).max(1) as f64, 1),
            "cpu_percent": round(100.0 * (after.cpu_us - before.cpu_us) / 1e6 / published_s.max(1e-9), 0),
            "rss_mb_every_s": rss_mb,
            "rss_mb_after_warm_up": {
                "min": round(warm.iter().copied().fold(f64::INFINITY, f64::min), 1),
                "max": round(warm.iter().copied().fold(0.0, f64::max), 1),
            },
        })),
        "hub_metrics": metrics,
        "bench_cpu_percent": round(100.0 * bench_cpu_us / 1e6 / published_s.max(1e-9), 0),
        "machine_busy_percent": round(100.0 * busy as f64 / total.max(1) as f64, 0),
        "nofile_limit": limit,
    });
    if common.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Which watchlist subscriber `index` has (the requests are built once per watchlist).
fn watch_key(index: usize, watch: usize, symbols: usize) -> usize {
    // Watchlists repeat every symbols / gcd(watch, symbols) subscribers; the request table has
    // one per subscriber up to the number of symbols, which covers every repeat.
    let period = symbols / gcd(watch % symbols, symbols).max(1);
    index % period.max(1)
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Reads as fast as it can; counts every tick of its symbols, losses and latency.
async fn fast_reader(
    mut subscription: super::conn::Subscription,
    mut watch: Watch,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Option<String> {
    let mut latencies = Vec::new();
    loop {
        let mut on_event = |data: &str| {
            if let Some((_, sent)) = shared.fast.count(&mut watch, data) {
                latencies.push(sent);
            }
        };
        let read = tokio::select! {
            read = subscription.read_counted(&mut on_event) => read,
            _ = stop.changed() => break None,
        };
        if !latencies.is_empty() {
            let now = shared.now_ns();
            let mut histogram = super::lock(&shared.fast_latency_us);
            for sent in latencies.drain(..) {
                let _ = histogram.record(now.saturating_sub(sent) / 1000);
            }
        }
        match read {
            Ok(Some(n)) => {
                shared.fast.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(None) => break Some("closed by the server".to_owned()),
            Err(err) => break Some(err),
        }
    }
}

/// How a slow reader reads.
struct SlowPlan {
    /// Its first read phase (its phase in the cycle).
    first_read: Duration,
    pause: Duration,
    read: Duration,
    /// Bytes/s at most while reading; 0: as fast as it can.
    bandwidth: u64,
}

/// Reads for a while, stops reading, reads again: measures how soon after reading again it
/// holds a price of every watched symbol sent after it resumed.
async fn slow_reader(
    mut subscription: super::conn::Subscription,
    mut watch: Watch,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    plan: SlowPlan,
) -> Option<String> {
    let mut read_for = plan.first_read;
    // Since when it reads again, and which symbols it still lacks a current price of.
    let mut resumed: Option<u64> = None;
    let mut lacking = vec![false; watch.last.len()];
    let mut lacking_count = 0usize;
    loop {
        let deadline = tokio::time::Instant::now() + read_for;
        loop {
            let mut on_event = |data: &str| {
                let Some((slot, sent)) = shared.slow.count(&mut watch, data) else {
                    return;
                };
                if let Some(since) = resumed
                    && sent >= since
                    && std::mem::take(&mut lacking[slot])
                {
                    lacking_count -= 1;
                    if lacking_count == 0 {
                        let ms = shared.now_ns().saturating_sub(since) / 1_000_000;
                        let _ = super::lock(&shared.current_after_ms).record(ms.max(1));
                        resumed = None;
                    }
                }
            };
            let read = tokio::select! {
                read = subscription.read_counted(&mut on_event) => read,
                _ = tokio::time::sleep_until(deadline) => break,
                // A resumption still under way at the end is left uncounted.
                _ = stop.changed() => return None,
            };
            match read {
                Ok(Some(n)) => {
                    shared.slow.bytes.fetch_add(n as u64, Ordering::Relaxed);
                    if plan.bandwidth > 0 {
                        let pace = Duration::from_secs_f64(n as f64 / plan.bandwidth as f64);
                        tokio::time::sleep(pace).await;
                    }
                }
                Ok(None) => return Some("closed by the server".to_owned()),
                Err(err) => return Some(err),
            }
        }
        // Stop reading; the socket's buffers fill and the hub holds the rest.
        if resumed.is_some() {
            // Still not current when it paused again.
            shared.never_current.fetch_add(1, Ordering::Relaxed);
        }
        tokio::select! {
            _ = tokio::time::sleep(plan.pause) => {}
            _ = stop.changed() => return None,
        }
        resumed = Some(shared.now_ns());
        lacking.iter_mut().for_each(|l| *l = true);
        lacking_count = lacking.len();
        read_for = plan.read;
    }
}

/// Publishes the ticks through one streamed request, `--rate` ticks a second for
/// `--seconds`; returns when the hub has answered the last event.
async fn publish(
    target: &Target,
    key: &str,
    args: &super::TickerArgs,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    let token = super::target::sign(
        key,
        herald_hub::auth::MercureClaim {
            publish: Some(vec![format!("{PRICES}/{{symbol}}")]),
            ..Default::default()
        },
    )?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let body = http_body_util::StreamBody::new(
        frames(rx)
            .map(|b| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(b)))
            .boxed(),
    );
    let connector = herald_client::TlsOptions::default()
        .accept_invalid_certificates(true)
        .connector()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(connector);
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let request = http::Request::post(format!("{scheme}://{}/.well-known/mercure", target.host()))
        .header("content-type", "text/event-stream")
        .header("authorization", format!("Bearer {token}"))
        .body(body)?;
    let symbols = args.symbols;
    let (ticks, rate, size) = (args.seconds * args.rate, args.rate, args.size);
    let sender = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
            let mut last_report = Instant::now();
            for tick in 0..ticks {
                interval.tick().await;
                let sent = shared.now_ns();
                let mut events = String::with_capacity(symbols * (size + 64));
                for symbol in 0..symbols {
                    events.push_str(&format!("topic: {PRICES}/{symbol}\ndata: "));
                    events.push_str(&payload(symbol, tick, sent, size));
                    events.push_str("\n\n");
                }
                if tx.send(Bytes::from(events)).await.is_err() {
                    return;
                }
                shared.ticks_sent.store(tick + 1, Ordering::Relaxed);
                if last_report.elapsed() >= Duration::from_secs(5) {
                    last_report = Instant::now();
                    eprintln!(
                        "ticker: tick {}/{ticks}; fast readers received {}, slow {}",
                        tick + 1,
                        shared.fast.received.load(Ordering::Relaxed),
                        shared.slow.received.load(Ordering::Relaxed)
                    );
                }
            }
        })
    };
    let response = client.request(request).await.context("publishing")?;
    anyhow::ensure!(
        response.status().is_success(),
        "publish: HTTP {}",
        response.status()
    );
    // The answer: `event: accepted` per update, `event: done` at the end, or `refused`.
    let mut body = response.into_body();
    let mut decoder = herald_sse::Decoder::new();
    let mut accepted = 0u64;
    let mut outcome = None;
    while outcome.is_none() {
        let Some(frame) = body.frame().await else {
            break;
        };
        if let Ok(data) = frame?.into_data() {
            decoder.feed(&data).map_err(|e| anyhow::anyhow!("{e}"))?;
            while let Some(event) = decoder.next_event() {
                match event.event_type.as_str() {
                    "accepted" => accepted += 1,
                    "done" => outcome = Some(Ok(())),
                    "refused" => outcome = Some(Err(anyhow::anyhow!("refused: {}", event.data))),
                    _ => {}
                }
            }
        }
    }
    sender.await?;
    let expected = ticks * symbols as u64;
    outcome.unwrap_or_else(|| Err(anyhow::anyhow!("the answer ended without `done`")))?;
    anyhow::ensure!(
        accepted == expected,
        "{accepted} of {expected} updates accepted"
    );
    Ok(())
}

/// The receiver as a stream of its messages.
fn frames(rx: tokio::sync::mpsc::Receiver<Bytes>) -> impl futures_util::Stream<Item = Bytes> {
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}

/// The hub's conflation and delivery counters, from `/metrics`.
async fn hub_metrics(target: &Target) -> anyhow::Result<serde_json::Value> {
    let connector = herald_client::TlsOptions::default()
        .accept_invalid_certificates(true)
        .connector()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, http_body_util::Empty<Bytes>>(connector);
    let scheme = if target.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let response = client
        .get(format!("{scheme}://{}/metrics", target.host()).parse()?)
        .await?;
    let text = response.into_body().collect().await?.to_bytes();
    let text = String::from_utf8_lossy(&text);
    let mut out = serde_json::Map::new();
    for name in [
        "herald_updates_delivered_total",
        "herald_updates_conflated_total",
        "herald_subscriber_lagged_total",
        "herald_subscriber_closed_stalled_total",
        "herald_subscriber_closed_budget_total",
        "herald_subscriber_closed_slow_total",
        "herald_owed_bytes",
    ] {
        if let Some(value) = text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
        {
            out.insert(
                name.into(),
                value.trim().parse::<f64>().unwrap_or(f64::NAN).into(),
            );
        }
    }
    Ok(out.into())
}

fn print_table(r: &serde_json::Value) {
    println!(
        "ticker: {} symbols x {}/s ({} updates/s of {} B, {} ticks) to {} subscribers watching {} each ({} failed to connect)",
        r["symbols"],
        r["rate_per_symbol"],
        r["updates_per_s"],
        r["size"],
        r["ticks"],
        r["subscribers"],
        r["watch"],
        r["connect_failed"]
    );
    if let Some(err) = r["publisher"].as_str() {
        println!("  PUBLISHER FAILED: {err}");
    }
    let f = &r["fast"];
    println!(
        "  fast readers: {} of {} received, lost {} (skipped ticks {}), duplicates {}; latency ms p50 {} p99 {} max {}",
        f["counts"]["received"],
        f["expected"],
        f["lost"],
        f["counts"]["skipped"],
        f["counts"]["duplicates_or_reordered"],
        f["latency_ms"]["p50"],
        f["latency_ms"]["p99"],
        f["latency_ms"]["max"]
    );
    let s = &r["slow_readers"];
    println!(
        "  {} slow readers (pause {} s, read {} s at {} B/s, receive buffer {} B): received {} of {} published for them ({}), duplicates {}",
        r["slow"],
        r["slow_pause_s"],
        r["slow_read_s"],
        r["slow_bandwidth"],
        r["slow_buffer"],
        s["counts"]["received"],
        s["published_for_them"],
        s["received_share"],
        s["counts"]["duplicates_or_reordered"]
    );
    println!(
        "  current after reading again, ms: p50 {} p99 {} max {} ({} resumptions, {} never current)",
        s["current_after_ms"]["p50"],
        s["current_after_ms"]["p99"],
        s["current_after_ms"]["max"],
        s["resumptions"],
        s["never_current"]
    );
    let sv = &r["server"];
    if sv.is_object() {
        println!(
            "  server: {} % CPU, {} µs per update published; RSS after warm-up {}-{} MB",
            sv["cpu_percent"],
            sv["cpu_us_per_update_published"],
            sv["rss_mb_after_warm_up"]["min"],
            sv["rss_mb_after_warm_up"]["max"]
        );
    }
    println!(
        "  bench {} % CPU; machine {} % busy; hub: {}",
        r["bench_cpu_percent"], r["machine_busy_percent"], r["hub_metrics"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_size_and_parses_back() {
        let data = payload(42, 7, 123456789, 100);
        assert_eq!(data.len(), 100);
        assert_eq!(parse(&data), Some((42, 7, 123456789)));
        assert!(serde_json::from_str::<serde_json::Value>(&data).is_ok());
        assert_eq!(parse(&payload(1, 2, 3, 0)), Some((1, 2, 3)));
        assert_eq!(parse("{\"seq\":1}"), None);
    }

    #[test]
    fn watchlists_cover_every_symbol_evenly() {
        let (symbols, watch, subscribers) = (500, 10, 2000);
        let mut watchers = vec![0; symbols];
        for i in 0..subscribers {
            let list = watchlist(i, watch, symbols);
            assert_eq!(
                list,
                watchlist(watch_key(i, watch, symbols), watch, symbols)
            );
            let w = Watch::new(&list, symbols);
            for (slot, &symbol) in list.iter().enumerate() {
                assert_eq!(w.slot(symbol), Some(slot));
                watchers[symbol] += 1;
            }
            assert_eq!(w.slot((list[0] + watch) % symbols), None);
        }
        assert!(watchers.iter().all(|&n| n == 40), "{watchers:?}");
        // A watchlist of every symbol.
        let all = watchlist(3, 600, 500);
        assert_eq!(all.len(), 500);
        assert_eq!(Watch::new(&all, 500).slot(299), Some(499));
    }
}

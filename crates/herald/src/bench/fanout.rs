//! `herald bench fanout`: N subscribers on one topic and a publisher at a fixed rate. Every
//! update carries its sequence number and send time, so each subscriber counts what it got
//! (losses, duplicates and reorderings are reported, never hidden) and the publish->receive
//! latency of every delivery goes into an HDR histogram. With `--server-pid`, the server's CPU
//! time over the measured phase gives the CPU per delivery, also as a multiple of the floor.

use super::FanoutArgs;
use super::idle::round;
use super::procstat::{own_cpu_us, sample};
use crate::limits::raise_nofile_limit;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Socket pairs of the floor measurement at most (each holds two descriptors).
const FLOOR_MAX_SOCKETS: usize = 9000;

/// Latency histograms are sharded so that readers on different threads rarely share a lock.
const SHARDS: usize = 16;

/// What every reader and the publisher share.
struct Shared {
    start: Instant,
    delivered: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    malformed: AtomicU64,
    /// Nanoseconds since `start` of the latest delivery.
    last_delivery: AtomicU64,
    latency_us: Vec<Mutex<Histogram<u64>>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
}

/// The update's data: `{"seq":N,"t":NANOS,"pad":"xxx…"}`, padded to `size` bytes when it fits.
pub fn payload(seq: u64, sent_ns: u64, size: usize) -> String {
    let mut data = format!("{{\"seq\":{seq},\"t\":{sent_ns},\"pad\":\"");
    let pad = size.saturating_sub(data.len() + 2);
    data.extend(std::iter::repeat_n('x', pad));
    data.push_str("\"}");
    data
}

/// Sequence number and send time of a payload.
pub fn parse(data: &str) -> Option<(u64, u64)> {
    let rest = data.strip_prefix("{\"seq\":")?;
    let (seq, rest) = rest.split_once(',')?;
    let rest = rest.strip_prefix("\"t\":")?;
    let sent = rest.split([',', '}']).next()?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

pub async fn run(args: FanoutArgs) -> anyhow::Result<()> {
    let common = &args.common;
    anyhow::ensure!(
        args.conns > 0 && args.rate > 0 && args.messages > 0,
        "--conns, --rate and --messages must be positive"
    );
    let limit = raise_nofile_limit();
    let targets = common.targets()?;
    let target = &targets[0];
    anyhow::ensure!(
        !target.needs_publisher_token(),
        "publishing to herald needs a JWT: pass the hub's key with --jwt-key (or HERALD_JWT_KEY)"
    );
    let floor_us = match args.floor_us {
        Some(floor) => floor,
        None => {
            // The kernel's cost per write grows with the number of sockets (cache footprint),
            // so the yardstick uses as many as the run (up to what one process may open: two
            // descriptors per socket pair) and the run's update size.
            let sockets = args.conns.min(FLOOR_MAX_SOCKETS);
            let rounds = (200_000 / sockets).clamp(10, 100);
            eprintln!(
                "fanout: measuring the floor ({sockets} sockets x {rounds} writes of {} B)...",
                args.size
            );
            super::floor::measure(sockets, rounds, args.size.max(1))
                .await?
                .per_write_us
        }
    };

    let (swarm, transport) = super::swarm::open(
        &targets,
        args.conns,
        args.h2_streams,
        common.sources,
        "fanout",
    )
    .await?;
    let subscribers = swarm.open.len();
    let connect_failed = swarm.failed();
    // The tasks of the shared HTTP/2 connections, if any: they run until the streams end.
    let _connections = swarm.connections;
    anyhow::ensure!(
        subscribers > 0,
        "no subscription opened: {:?}",
        swarm.failures
    );

    let shared = Arc::new(Shared {
        start: Instant::now(),
        delivered: AtomicU64::new(0),
        duplicates: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        malformed: AtomicU64::new(0),
        last_delivery: AtomicU64::new(0),
        latency_us: (0..SHARDS)
            .map(|_| Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")))
            .collect(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let messages = args.messages;
    let readers: Vec<_> = swarm
        .open
        .into_iter()
        .enumerate()
        .map(|(index, mut subscription)| {
            let (shared, mut stop) = (shared.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let mut seen = vec![0u64; messages.div_ceil(64) as usize];
                let mut highest: Option<u64> = None;
                let mut latencies = Vec::new();
                loop {
                    let read = {
                        let mut on_event = |data: &str| {
                            let Some((seq, sent)) = parse(data) else {
                                shared.malformed.fetch_add(1, Ordering::Relaxed);
                                return;
                            };
                            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
                            match seen.get_mut(word) {
                                Some(w) if *w & bit != 0 => {
                                    shared.duplicates.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                                Some(w) => *w |= bit,
                                None => {
                                    shared.malformed.fetch_add(1, Ordering::Relaxed);
                                    return;
                                }
                            }
                            if highest.is_some_and(|h| seq < h) {
                                shared.reordered.fetch_add(1, Ordering::Relaxed);
                            }
                            highest = highest.max(Some(seq));
                            latencies.push(sent);
                        };
                        tokio::select! {
                            read = subscription.read_events(&mut on_event) => read,
                            _ = stop.changed() => return None,
                        }
                    };
                    if !latencies.is_empty() {
                        let now = shared.now_ns();
                        let mut histogram = super::lock(&shared.latency_us[index % SHARDS]);
                        for sent in latencies.drain(..) {
                            let _ = histogram.record(now.saturating_sub(sent) / 1000);
                            shared.delivered.fetch_add(1, Ordering::Relaxed);
                        }
                        drop(histogram);
                        shared.last_delivery.fetch_max(now, Ordering::Relaxed);
                    }
                    match read {
                        Ok(true) => {}
                        Ok(false) => return Some("closed by the server".to_owned()),
                        Err(err) => return Some(err),
                    }
                }
            })
        })
        .collect();

    // Give the server a moment to finish registering the last subscribers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let observed = !common.server_pids.is_empty();
    let before = observed.then(|| sample(&common.server_pids)).transpose()?;
    let bench_before = own_cpu_us();
    let first_publish = shared.now_ns();
    let publish_errors = Arc::new(Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    // Publishes over TLS too when the target is https:// (any certificate accepted).
    let connector = herald_client::TlsOptions::default()
        .accept_invalid_certificates(true)
        .connector()?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Full<Bytes>>(connector);
    let mut publishes = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    let expected = subscribers as u64 * messages;
    let mut last_report = Instant::now();
    for seq in 0..messages {
        tick.tick().await;
        // Round robin over the nodes: in a cluster every node publishes, and every update
        // reaches subscribers on the other nodes through the engine.
        let target = &targets[seq as usize % targets.len()];
        let request = target
            .publish_request(&payload(seq, shared.now_ns(), args.size))
            .map(|body| Full::new(Bytes::from(body)));
        let (client, target, errors) = (client.clone(), target.clone(), publish_errors.clone());
        publishes.spawn(async move {
            let problem = match client.request(request).await {
                Ok(response) if target.publish_accepted(response.status()) => {
                    let _ = response.into_body().collect().await;
                    return;
                }
                Ok(response) => format!("HTTP {}", response.status()),
                Err(err) => format!("{err}"),
            };
            *super::lock(&errors).entry(problem).or_insert(0) += 1;
        });
        while publishes.try_join_next().is_some() {}
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            eprintln!(
                "fanout: published {}/{messages}, delivered {}/{expected}",
                seq + 1,
                shared.delivered.load(Ordering::Relaxed)
            );
        }
    }
    while publishes.join_next().await.is_some() {}

    // Wait for the stragglers: until everything arrived, or nothing moved for --timeout.
    let mut last = shared.delivered.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while last < expected && still_since.elapsed() < Duration::from_secs(args.timeout) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = shared.delivered.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let after = observed.then(|| sample(&common.server_pids)).transpose()?;
    let bench_cpu_us = own_cpu_us() - bench_before;
    let _ = stop_tx.send(true);
    let mut dropped = 0;
    for reader in readers {
        if reader.await?.is_some() {
            dropped += 1;
        }
    }

    let delivered = shared.delivered.load(Ordering::Relaxed);
    let span_s = (shared
        .last_delivery
        .load(Ordering::Relaxed)
        .saturating_sub(first_publish)) as f64
        / 1e9;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for shard in &shared.latency_us {
        latency.add(&*super::lock(shard))?;
    }
    let ms = |q: f64| round(latency.value_at_quantile(q) as f64 / 1000.0, 3);
    let per_delivery = |cpu: f64| round(cpu / delivered.max(1) as f64, 3);
    let server = before.zip(after).map(|(before, after)| {
        let cpu = after.cpu_us - before.cpu_us;
        serde_json::json!({
            "cpu_us": round(cpu, 0),
            "cpu_us_per_delivery": per_delivery(cpu),
            "cpu_floor_multiple": round(cpu / delivered.max(1) as f64 / floor_us, 2),
            "rss_before": before.rss,
            "rss_after": after.rss,
        })
    });
    let publish_errors = std::mem::take(&mut *super::lock(&publish_errors));
    let mut report = serde_json::json!({
        "mode": "fanout",
        "target": target.kind.name(),
        "nodes": targets.len(),
        "conns": args.conns,
        "subscribers": subscribers,
        "connect_failed": connect_failed,
        "connect_failures": swarm.failures,
        "rate": args.rate,
        "messages": messages,
        "size": args.size,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "duplicates": shared.duplicates.load(Ordering::Relaxed),
        "reordered": shared.reordered.load(Ordering::Relaxed),
        "malformed": shared.malformed.load(Ordering::Relaxed),
        "dropped": dropped,
        "deliveries_per_s": round(delivered as f64 / span_s.max(1e-9), 0),
        "latency_ms": {
            "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99),
            "max": round(latency.max() as f64 / 1000.0, 3),
        },
        "floor_us": round(floor_us, 2),
        "server": server,
        "bench_cpu_us": round(bench_cpu_us, 0),
        "bench_cpu_us_per_delivery": per_delivery(bench_cpu_us),
        "publish_errors": publish_errors.values().sum::<u64>(),
        "publish_error_kinds": publish_errors,
        "nofile_limit": limit,
    });
    if let (Some(report), Some(transport)) = (report.as_object_mut(), transport.as_object()) {
        report.extend(transport.clone());
    }
    if common.json {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(r: &serde_json::Value) {
    println!(
        "fanout against {} ({} node(s)): {} subscribers ({} failed to connect), {} updates of {} B at {}/s",
        r["target"].as_str().unwrap_or("?"),
        r["nodes"],
        r["subscribers"],
        r["connect_failed"],
        r["messages"],
        r["size"],
        r["rate"]
    );
    println!(
        "  delivered {} of {} (lost {}, duplicates {}, reordered {}, malformed {}, dropped connections {}), publish errors {}",
        r["delivered"],
        r["expected"],
        r["lost"],
        r["duplicates"],
        r["reordered"],
        r["malformed"],
        r["dropped"],
        r["publish_errors"]
    );
    let l = &r["latency_ms"];
    println!(
        "  {} deliveries/s; publish->receive latency ms: p50 {} p90 {} p99 {} max {}",
        r["deliveries_per_s"], l["p50"], l["p90"], l["p99"], l["max"]
    );
    let s = &r["server"];
    if s.is_object() {
        println!(
            "  server CPU {} µs: {} µs per delivery = {}x the floor ({} µs per write)",
            s["cpu_us"], s["cpu_us_per_delivery"], s["cpu_floor_multiple"], r["floor_us"]
        );
    } else {
        println!("  (no --server-pid: server CPU not observed)");
    }
    println!(
        "  bench CPU {} µs ({} µs per delivery)",
        r["bench_cpu_us"], r["bench_cpu_us_per_delivery"]
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_the_size_and_parses_back() {
        for size in [100, 1000] {
            let data = payload(12345, 987654321, size);
            assert_eq!(data.len(), size);
            assert_eq!(parse(&data), Some((12345, 987654321)));
            assert!(serde_json::from_str::<serde_json::Value>(&data).is_ok());
        }
        // Too small to pad: still valid and parseable.
        assert_eq!(parse(&payload(1, 2, 0)), Some((1, 2)));
        assert_eq!(parse("hello"), None);
    }
}

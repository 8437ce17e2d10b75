//! Opening many subscriptions at once, with bounded concurrency (so the server's listen backlog
//! does not overflow into SYN retries that look like latency) and progress on stderr.

use super::conn::{OpenError, Subscription, source_address};
use super::target::Target;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Connections being opened at the same time.
const CONCURRENCY: usize = 128;

pub struct Swarm {
    pub open: Vec<Subscription>,
    /// The index each open subscription was asked for, in the same order (HTTP/1.1 only).
    pub indexes: Vec<usize>,
    /// Failures by kind ("HTTP 503", "connect: Too many open files", …) with their counts.
    pub failures: BTreeMap<String, usize>,
    pub took: Duration,
    /// The tasks that drive shared HTTP/2 connections (none over HTTP/1.1).
    pub connections: Vec<tokio::task::JoinHandle<()>>,
}

impl Swarm {
    pub fn failed(&self) -> usize {
        self.failures.values().sum()
    }
}

/// Opens `conns` subscriptions: over HTTP/1.1 (`h2_streams` 0) to each of `targets` in turn,
/// spread over `sources` loopback source addresses; else as HTTP/2 streams of the first
/// target, `h2_streams` per connection. Says on stderr what opened; returns the subscriptions
/// and the transport, for the report.
pub async fn open(
    targets: &[Target],
    conns: usize,
    h2_streams: usize,
    sources: usize,
    label: &str,
) -> anyhow::Result<(Swarm, serde_json::Value)> {
    if h2_streams == 0 {
        let swarm = connect(targets, conns, sources, label).await;
        eprintln!(
            "{label}: {} open, {} failed, in {:.1} s",
            swarm.open.len(),
            swarm.failed(),
            swarm.took.as_secs_f64()
        );
        return Ok((swarm, serde_json::json!({})));
    }
    let swarm = super::h2::open(&targets[0], conns, h2_streams).await?;
    eprintln!(
        "{label}: {} HTTP/2 streams open ({h2_streams} per connection), {} failed, in {:.1} s",
        swarm.open.len(),
        swarm.failed(),
        swarm.took.as_secs_f64()
    );
    let transport = serde_json::json!({
        "transport": "h2",
        "h2_streams_per_conn": h2_streams,
        // Only the first --url is used over HTTP/2.
        "nodes": 1,
    });
    Ok((swarm, transport))
}

/// Opens `conns` subscriptions, to each of `targets` in turn, spread over `sources` loopback
/// source addresses.
pub async fn connect(targets: &[Target], conns: usize, sources: usize, label: &str) -> Swarm {
    let requests: Vec<Arc<[u8]>> = targets
        .iter()
        .map(|t| t.subscribe_request().into())
        .collect();
    connect_each(targets, conns, sources, label, |index| {
        (requests[index % targets.len()].clone(), None)
    })
    .await
}

/// Opens `conns` subscriptions, to each of `targets` in turn, spread over `sources` loopback
/// source addresses; `request(index)` gives each its request and, if set, its socket's
/// receive buffer. The subscriptions are returned in index order (failed ones left out).
pub async fn connect_each(
    targets: &[Target],
    conns: usize,
    sources: usize,
    label: &str,
    request: impl Fn(usize) -> (Arc<[u8]>, Option<u32>),
) -> Swarm {
    let started = Instant::now();
    let semaphore = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let done = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..conns {
        let (request, recv_buffer) = request(index);
        let (target, semaphore, done) = (
            targets[index % targets.len()].clone(),
            semaphore.clone(),
            done.clone(),
        );
        tasks.spawn(async move {
            let _permit = semaphore.acquire_owned().await;
            let source = source_address(index, sources);
            let result = tokio::time::timeout(
                Duration::from_secs(30),
                Subscription::open(&target, source, &request, recv_buffer),
            )
            .await
            .unwrap_or_else(|_| Err(OpenError::Response("no answer within 30 s".into())));
            done.fetch_add(1, Ordering::Relaxed);
            (index, result)
        });
    }
    let progress = {
        let done = done.clone();
        let label = label.to_owned();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "{label}: {}/{conns} connections answered",
                    done.load(Ordering::Relaxed)
                );
            }
        })
    };
    let mut open = Vec::with_capacity(conns);
    let mut failures = BTreeMap::new();
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok((index, Ok(subscription))) => open.push((index, subscription)),
            Ok((_, Err(err))) => *failures.entry(err.to_string()).or_insert(0) += 1,
            Err(err) => *failures.entry(format!("task: {err}")).or_insert(0) += 1,
        }
    }
    progress.abort();
    open.sort_unstable_by_key(|(index, _)| *index);
    let (indexes, open): (Vec<usize>, Vec<Subscription>) = open.into_iter().unzip();
    Swarm {
        open,
        indexes,
        failures,
        took: started.elapsed(),
        connections: Vec::new(),
    }
}

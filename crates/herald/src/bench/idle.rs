//! `herald bench idle`: opens N subscriptions, holds them, and reports what they cost the server
//! in memory (RSS and PSS of the observed PIDs before and after, per subscriber).

use super::IdleArgs;
use super::procstat::{Sample, own_cpu_us, sample};
use crate::limits::raise_nofile_limit;
use std::collections::BTreeMap;
use std::time::Duration;

pub async fn run(args: IdleArgs) -> anyhow::Result<()> {
    let common = &args.common;
    let limit = raise_nofile_limit();
    if (args.conns as u64) + 64 > limit {
        eprintln!(
            "warning: RLIMIT_NOFILE is {limit}: this process cannot hold {} connections",
            args.conns
        );
    }
    let targets = common.targets()?;
    let target = &targets[0];
    let observed = !common.server_pids.is_empty();
    let before = observed.then(|| sample(&common.server_pids)).transpose()?;
    let bench_before = own_cpu_us();

    // Every subscription keeps being read (heartbeats) so none is dropped for not reading.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (swarm, transport) = super::swarm::open(
        &targets,
        args.conns,
        args.h2_streams,
        common.sources,
        "idle",
    )
    .await?;
    let held = readers(swarm, &stop_rx);
    let connected = held.connected;

    // Let the server settle (allocations after the response head) before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = observed.then(|| sample(&common.server_pids)).transpose()?;
    for left in (1..=args.hold).rev() {
        eprintln!("idle: holding {connected} subscriptions, {left} s left");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let _ = stop_tx.send(true);
    let took = held.took;
    let mut failures = held.failures.clone();
    let dropped_by = held.finish().await?;
    let dropped: usize = dropped_by.values().sum();
    failures.extend(dropped_by);
    let bench_cpu_us = own_cpu_us() - bench_before;

    let server = match (before, after) {
        (Some(before), Some(after)) => Some(memory_report(before, after, connected)),
        _ => None,
    };
    let mut report = serde_json::json!({
        "mode": "idle",
        "target": target.kind.name(),
        "nodes": targets.len(),
        "conns": args.conns,
        "connected": connected,
        "failed": args.conns - connected,
        "dropped": dropped,
        "failures": failures,
        "connect_s": round(took.as_secs_f64(), 2),
        "nofile_limit": limit,
        "server": server,
        "bench_cpu_us": bench_cpu_us.round(),
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

/// Subscriptions open and being read until `stop` turns true, whatever the transport.
pub struct Held {
    pub connected: usize,
    /// Failures to open, by kind.
    pub failures: BTreeMap<String, usize>,
    pub took: Duration,
    /// One per subscription: why the server ended it while held, if it did.
    pub readers: Vec<tokio::task::JoinHandle<Option<String>>>,
    /// The connections' own tasks (HTTP/2), ended with the readers.
    pub connections: Vec<tokio::task::JoinHandle<()>>,
}

impl Held {
    /// Waits for the readers (stopped by then) and ends the connections; the subscriptions
    /// the server ended (or broke) while they were held, by reason.
    async fn finish(self) -> anyhow::Result<BTreeMap<String, usize>> {
        let mut dropped = BTreeMap::new();
        for reader in self.readers {
            if let Some(reason) = reader.await? {
                *dropped.entry(format!("dropped: {reason}")).or_insert(0) += 1;
            }
        }
        for connection in self.connections {
            connection.abort();
        }
        Ok(dropped)
    }
}

/// A reader per subscription of `swarm`.
fn readers(swarm: super::swarm::Swarm, stop: &tokio::sync::watch::Receiver<bool>) -> Held {
    let readers = swarm
        .open
        .into_iter()
        .map(|mut subscription| {
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let mut ignore = |_: &str| {};
                loop {
                    tokio::select! {
                        read = subscription.read_events(&mut ignore) => match read {
                            Ok(true) => {}
                            Ok(false) => return Some("closed by the server".to_owned()),
                            Err(err) => return Some(err),
                        },
                        _ = stop.changed() => return None,
                    }
                }
            })
        })
        .collect::<Vec<_>>();
    Held {
        connected: readers.len(),
        failures: swarm.failures,
        took: swarm.took,
        readers,
        connections: swarm.connections,
    }
}

fn memory_report(before: Sample, after: Sample, connected: usize) -> serde_json::Value {
    let per = |a: u64, b: u64| round((b as f64 - a as f64) / connected.max(1) as f64, 0);
    serde_json::json!({
        "rss_before": before.rss,
        "rss_after": after.rss,
        "pss_before": before.pss,
        "pss_after": after.pss,
        "rss_per_conn": per(before.rss, after.rss),
        "pss_per_conn": per(before.pss, after.pss),
        "cpu_us": round(after.cpu_us - before.cpu_us, 0),
    })
}

pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn print_table(report: &serde_json::Value) {
    println!(
        "idle against {}: {} of {} subscriptions open ({} failed, {} dropped while held), connected in {} s",
        report["target"].as_str().unwrap_or("?"),
        report["connected"],
        report["conns"],
        report["failed"],
        report["dropped"],
        report["connect_s"],
    );
    if let Some(failures) = report["failures"].as_object() {
        for (reason, count) in failures {
            println!("  {count} x {reason}");
        }
    }
    let server = &report["server"];
    if server.is_object() {
        let mib = |v: &serde_json::Value| v.as_f64().unwrap_or(0.0) / 1048576.0;
        println!(
            "  server RSS {:.1} -> {:.1} MiB: {} bytes per subscriber",
            mib(&server["rss_before"]),
            mib(&server["rss_after"]),
            server["rss_per_conn"]
        );
        println!(
            "  server PSS {:.1} -> {:.1} MiB: {} bytes per subscriber",
            mib(&server["pss_before"]),
            mib(&server["pss_after"]),
            server["pss_per_conn"]
        );
        println!(
            "  server CPU while connecting and holding: {} µs",
            server["cpu_us"]
        );
    } else {
        println!("  (no --server-pid: server memory not observed)");
    }
    println!("  bench CPU: {} µs", report["bench_cpu_us"]);
}

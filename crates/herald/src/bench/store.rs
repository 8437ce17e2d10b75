//! `herald bench store`: the file history store alone, without HTTP: durable appends/s under
//! concurrent publishers, and replay from the middle of a large history.

use super::StoreArgs;
use anyhow::Context;
use herald_hub::history::{FileHistory, FileOptions, History, Retention};
use herald_hub::update::NewUpdate;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn open(dir: &std::path::Path, name: &str, max_updates: usize) -> anyhow::Result<Arc<FileHistory>> {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    // Its record too: a fresh store, not a lost one.
    let _ = std::fs::remove_file(FileHistory::record_path(&path)?);
    let history = FileHistory::open(
        &path,
        FileOptions {
            retention: Retention {
                max_updates,
                ..Retention::default()
            },
            ..FileOptions::default()
        },
    )
    .with_context(|| format!("opening a store in {}", path.display()))?;
    Ok(Arc::new(history))
}

fn update(data: &str, n: u64) -> NewUpdate {
    let mut update = NewUpdate::new(vec!["https://example.com/bench".into()], data);
    update.id = format!("urn:uuid:00000000-0000-4000-8000-{n:012}");
    update
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let data = "x".repeat(args.size);
    let mut results = serde_json::Map::new();
    for publishers in [1u64, 8, 64] {
        let history = open(&args.dir, &format!("appends-{publishers}"), usize::MAX)?;
        let count = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let started = Instant::now();
        let tasks: Vec<_> = (0..publishers)
            .map(|p| {
                let (history, count, data) = (history.clone(), count.clone(), data.clone());
                tokio::spawn(async move {
                    let mut k = 0;
                    while Instant::now() < deadline {
                        history.append(update(&data, p << 40 | k)).await?;
                        k += 1;
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for task in tasks {
            task.await??;
        }
        let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        eprintln!("durable appends, {publishers:>2} publishers: {rate:>9.0} updates/s");
        results.insert(
            format!("appends_per_s_{publishers}_publishers"),
            rate.round().into(),
        );
    }

    eprintln!("filling a history of {} updates...", args.history);
    let history = open(&args.dir, "replay", usize::MAX)?;
    let filled = Arc::new(AtomicU64::new(0));
    let fillers: Vec<_> = (0..256u64)
        .map(|f| {
            let (history, filled, data, total) =
                (history.clone(), filled.clone(), data.clone(), args.history);
            tokio::spawn(async move {
                loop {
                    let n = filled.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        return anyhow::Ok(());
                    }
                    history.append(update(&data, n)).await?;
                    let _ = f;
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.await??;
    }
    let middle = args.history / 2;
    let mut timings = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let mut after = middle;
        let mut read = 0;
        while read < args.replay {
            let batch = history.read_after(after, 256).await?;
            let Some(last) = batch.last() else { break };
            after = last.position;
            read += batch.len() as u64;
        }
        anyhow::ensure!(
            read >= args.replay,
            "history holds fewer than {} updates after the middle",
            args.replay
        );
        timings.push(started.elapsed());
    }
    timings.sort();
    let median = timings[timings.len() / 2].as_secs_f64() * 1000.0;
    eprintln!(
        "replay of {} updates from the middle of {}: {median:.1} ms (median of 5)",
        args.replay, args.history
    );
    results.insert(
        "replay_ms".into(),
        ((median * 1000.0).round() / 1000.0).into(),
    );
    if args.json {
        println!("{}", serde_json::Value::Object(results));
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    Ok(())
}

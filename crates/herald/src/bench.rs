//! `herald bench`: measurements that users can repeat. `store` measures the durable history
//! alone; the connection and fan-out modes arrive with the performance work.

use anyhow::Context;
use clap::{Args, Subcommand};
use herald_hub::history::{FileHistory, FileOptions, History};
use herald_hub::update::NewUpdate;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// The file history store alone: durable appends/s with 1, 8 and 64 concurrent publishers,
    /// and replay of 10,000 updates from the middle of a large history.
    Store(StoreArgs),
    /// Idle SSE connections held against a hub (not built yet).
    Idle(crate::Planned),
    /// Fan-out throughput and latency against a hub (not built yet).
    Fanout(crate::Planned),
    /// The machine's floor: the CPU cost of one small write to a loopback TCP socket (kernel
    /// receive path included), the yardstick for CPU per delivery.
    Floor(FloorArgs),
}

#[derive(Args, Debug)]
struct FloorArgs {
    /// Loopback connections written to.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Rounds: one write per connection per round.
    #[arg(long, default_value_t = 100)]
    rounds: usize,
    /// Bytes per write.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StoreArgs {
    /// Directory for the bench's stores (on the disk to measure); emptied first.
    #[arg(long, default_value = "./herald-bench-store")]
    dir: PathBuf,
    /// Seconds each append measurement runs.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Updates in the history that replay reads from.
    #[arg(long, default_value_t = 1_000_000)]
    history: u64,
    /// Updates replayed from the middle.
    #[arg(long, default_value_t = 10_000)]
    replay: u64,
    /// Bytes of data per update.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.mode {
        Mode::Store(args) => store(args).await,
        Mode::Floor(args) => floor(args).await,
        Mode::Idle(_) | Mode::Fanout(_) => Err(crate::NotImplemented.into()),
    }
}

fn open(dir: &std::path::Path, name: &str, max_updates: usize) -> anyhow::Result<Arc<FileHistory>> {
    let path = dir.join(name);
    let _ = std::fs::remove_dir_all(&path);
    let history = FileHistory::open(
        &path,
        FileOptions {
            max_updates,
            max_age: None,
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

async fn store(args: StoreArgs) -> anyhow::Result<()> {
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

/// CPU time used so far by the calling thread, in nanoseconds (user + system). The kernel's
/// `CLOCK_THREAD_CPUTIME_ID` is exact; `/proc/thread-self/schedstat` only moves on ticks.
fn thread_cpu_ns() -> anyhow::Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    anyhow::ensure!(rc == 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

async fn floor(args: FloorArgs) -> anyhow::Result<()> {
    use std::io::Write;
    use tokio::io::AsyncReadExt;
    anyhow::ensure!(
        args.conns > 0 && args.rounds > 0,
        "--conns and --rounds must be positive"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Readers drain every connection on the runtime, so writes never block on a full buffer.
    let mut readers = Vec::with_capacity(args.conns);
    let mut writers = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let client = tokio::net::TcpStream::connect(addr).await?;
        let (server, _) = listener.accept()?;
        server.set_nodelay(true)?;
        writers.push(server);
        readers.push(tokio::spawn(async move {
            let mut client = client;
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => return total,
                    Ok(n) => total += n as u64,
                }
            }
        }));
    }
    let (conns, rounds, size) = (args.conns, args.rounds, args.size);
    // The writes run on a thread of their own, so its CPU time is theirs alone.
    let (cpu_ns, wall) = tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, Duration)> {
        let payload = vec![b'x'; size];
        let started = Instant::now();
        let before = thread_cpu_ns()?;
        for _ in 0..rounds {
            for socket in &mut writers {
                socket.write_all(&payload)?;
            }
        }
        let cpu = thread_cpu_ns()? - before;
        let wall = started.elapsed();
        drop(writers); // ends the readers
        Ok((cpu, wall))
    })
    .await??;
    let mut received = 0;
    for reader in readers {
        received += reader.await?;
    }
    let writes = (conns * rounds) as u64;
    anyhow::ensure!(
        received == writes * size as u64,
        "readers got {received} bytes, expected {}",
        writes * size as u64
    );
    let per_write_us = cpu_ns as f64 / writes as f64 / 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "conns": conns, "rounds": rounds, "size": size, "writes": writes,
                "cpu_us_per_write": (per_write_us * 100.0).round() / 100.0,
                "wall_ms": wall.as_millis() as u64,
            })
        );
    } else {
        println!(
            "floor: {writes} writes of {size} B to {conns} loopback sockets: {per_write_us:.2} CPU-µs per write \
             (writer thread, kernel receive path included), {} ms wall",
            wall.as_millis()
        );
    }
    Ok(())
}

//! `herald bench floor`: the machine's floor, the CPU cost of one small write to a loopback
//! TCP socket (the kernel's receive path included), measured on the writing thread alone. Every
//! CPU-per-delivery figure is also printed as a multiple of it.

use super::FloorArgs;
use super::procstat::thread_cpu_ns;
use std::time::{Duration, Instant};

pub async fn run(args: FloorArgs) -> anyhow::Result<()> {
    let floor = measure(args.conns, args.rounds, args.size).await?;
    let Floor {
        conns,
        rounds,
        size,
        writes,
        per_write_us,
        wall,
    } = floor;
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "mode": "floor",
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

pub struct Floor {
    pub conns: usize,
    pub rounds: usize,
    pub size: usize,
    pub writes: u64,
    /// CPU time of the writing thread per write, µs.
    pub per_write_us: f64,
    pub wall: Duration,
}

/// Writes `size` bytes to each of `conns` loopback sockets, `rounds` times, and returns the CPU
/// time of the writing thread per write.
pub async fn measure(conns: usize, rounds: usize, size: usize) -> anyhow::Result<Floor> {
    use std::io::Write;
    use tokio::io::AsyncReadExt;
    anyhow::ensure!(
        conns > 0 && rounds > 0,
        "--conns and --rounds must be positive"
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    // Readers drain every connection on the runtime, so writes never block on a full buffer.
    let mut readers = Vec::with_capacity(conns);
    let mut writers = Vec::with_capacity(conns);
    for _ in 0..conns {
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
    Ok(Floor {
        conns,
        rounds,
        size,
        writes,
        per_write_us,
        wall,
    })
}

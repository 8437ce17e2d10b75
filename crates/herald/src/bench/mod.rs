//! `herald bench`: measurements that users can repeat, against herald or, for comparison,
//! nginx with the nchan module (`--target`). `idle` holds many subscriptions and reports the
//! server's memory per subscriber; `fanout` measures delivery cost and publish->receive latency;
//! `floor` is the machine's own cost of a small socket write, the yardstick; `store` measures the
//! durable history alone. The server is observed from outside through `/proc` (`--server-pid`).

mod conn;
mod fanout;
mod floor;
mod h2;
mod idle;
pub(crate) mod procstat;
mod publish;
mod store;
mod swarm;
mod target;
mod ticker;

use clap::{Args, Subcommand};
use std::path::PathBuf;

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
    /// Opens many SSE subscriptions and holds them: connect failures, and the server's memory
    /// per idle subscriber (with --server-pid).
    Idle(IdleArgs),
    /// Many subscribers on one topic, a publisher at a fixed rate: losses, duplicates,
    /// deliveries/s, publish->receive latency, and the server's CPU per delivery.
    Fanout(FanoutArgs),
    /// One publisher's updates/s, accepted and delivered to a subscriber: one request per
    /// update (sequential, keep-alive) against one streamed request (`text/event-stream`
    /// body, an update per event), side by side in one run.
    Publish(PublishArgs),
    /// Latest-value topics under load: a ticker of many symbols to many subscribers, some
    /// of them slow readers; fast readers' losses and latency, how soon slow readers hold
    /// current prices after reading again, and the server's memory every second. Run against
    /// a hub with and without `--conflate` to compare (`bench/ticker.sh`).
    Ticker(TickerArgs),
    /// The machine's floor: the CPU cost of one small write to a loopback TCP socket (kernel
    /// receive path included), the yardstick for CPU per delivery.
    Floor(FloorArgs),
}

/// What is measured and how the result is printed; shared by `idle` and `fanout`.
#[derive(Args, Debug)]
struct TargetArgs {
    /// The kind of server under test.
    #[arg(long, value_enum, default_value = "herald")]
    target: target::Kind,
    /// The server's base URL, http:// or https:// (TLS: any certificate is accepted; the raw
    /// subscribers speak HTTP/1.1, one connection each); herald is reached at
    /// /.well-known/mercure, nchan at /sub and /pub.
    /// Repeat for a cluster: subscriptions (and fanout's publishes) go to each node in turn.
    #[arg(
        long = "url",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    urls: Vec<String>,
    /// herald's HMAC key: the bench signs a subscriber and a publisher JWT with it.
    #[arg(long, env = "HERALD_JWT_KEY", hide_env_values = true)]
    jwt_key: Option<String>,
    /// Loopback source addresses to spread connections over (127.0.0.2, 127.0.0.3, ...).
    #[arg(long, default_value_t = 8)]
    sources: usize,
    /// A server process to observe (CPU time, RSS, PSS); repeat for several (nginx's master
    /// and worker).
    #[arg(long = "server-pid", value_name = "PID")]
    server_pids: Vec<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

impl TargetArgs {
    /// One target per `--url`, in order.
    fn targets(&self) -> anyhow::Result<Vec<target::Target>> {
        self.urls
            .iter()
            .map(|url| target::Target::new(self.target, url, self.jwt_key.as_deref()))
            .collect()
    }

    /// The first `--url`, which must be a herald hub: `why` says what only herald has.
    fn herald_target(&self, why: &str) -> anyhow::Result<target::Target> {
        let target = self
            .targets()?
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("give the hub's --url"))?;
        anyhow::ensure!(target.kind == target::Kind::Herald, "{why}");
        Ok(target)
    }
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    common: TargetArgs,
    /// Subscriptions to open.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Seconds to hold them open once all answered.
    #[arg(long, default_value_t = 10)]
    hold: u64,
    /// Over HTTP/2 (an https:// --url): this many subscription streams per connection
    /// (at most the server's limit of concurrent streams, 128 for herald by default); 0:
    /// HTTP/1.1, one connection per subscription.
    #[arg(long, default_value_t = 0)]
    h2_streams: usize,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    #[command(flatten)]
    common: TargetArgs,
    /// Subscribers, all on one topic.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Updates published per second.
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// Updates published in all.
    #[arg(long, default_value_t = 1000)]
    messages: u64,
    /// Bytes of data per update (it carries its sequence number and send time).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds to wait for missing deliveries after the last publish.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// The floor in CPU-µs per write, if already measured; otherwise the bench measures it
    /// first, with as many sockets as --conns (at most 9000) and writes of --size bytes.
    #[arg(long)]
    floor_us: Option<f64>,
    /// Over HTTP/2 (an https:// --url): this many subscription streams per connection; 0:
    /// HTTP/1.1, one connection per subscriber.
    #[arg(long, default_value_t = 0)]
    h2_streams: usize,
}

#[derive(Args, Debug)]
struct PublishArgs {
    #[command(flatten)]
    common: TargetArgs,
    /// Updates published in each mode.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Bytes of data per update (a model's token is a few).
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Seconds to wait for the last delivery after the last acknowledgement.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

#[derive(Args, Debug)]
struct TickerArgs {
    #[command(flatten)]
    common: TargetArgs,
    /// Symbols (topics `https://bench.herald.invalid/prices/N`).
    #[arg(long, default_value_t = 500)]
    symbols: usize,
    /// Updates per symbol per second (a tick updates every symbol).
    #[arg(long, default_value_t = 10)]
    rate: u64,
    /// Seconds of ticks.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Bytes of data per update.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Subscribers.
    #[arg(long, default_value_t = 2000)]
    subscribers: usize,
    /// Symbols each subscriber watches (consecutive ones, so that all have as many
    /// watchers); as many as --symbols: all, through one URI template.
    #[arg(long, default_value_t = 10)]
    watch: usize,
    /// Subscribers that read slowly (the first ones); the others read as fast as they can.
    #[arg(long, default_value_t = 200)]
    slow: usize,
    /// Seconds a slow reader stops reading, each time.
    #[arg(long, default_value_t = 10.0)]
    pause: f64,
    /// Seconds a slow reader then reads, each time.
    #[arg(long, default_value_t = 10.0)]
    read: f64,
    /// Bytes/s a slow reader reads at most (a weak mobile link); 0: as fast as it can.
    #[arg(long, default_value_t = 65_536)]
    slow_bandwidth: u64,
    /// A slow reader's socket receive buffer, bytes (0: the system's default).
    #[arg(long, default_value_t = 4096)]
    slow_buffer: u32,
    /// Seconds to wait for the last deliveries after the last tick.
    #[arg(long, default_value_t = 3)]
    drain: u64,
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
        Mode::Store(args) => store::run(args).await,
        Mode::Floor(args) => floor::run(args).await,
        Mode::Idle(args) => idle::run(args).await,
        Mode::Fanout(args) => fanout::run(args).await,
        Mode::Publish(args) => publish::run(args).await,
        Mode::Ticker(args) => ticker::run(args).await,
    }
}

/// Locks a mutex, ignoring poisoning: a reader that panicked has already failed the run.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

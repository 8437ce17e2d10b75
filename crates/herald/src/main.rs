//! `herald`: the command line. It only wires the library crates together: `herald-hub` for
//! `serve`, `herald-client` for `sub`, `herald-sse` for the wire format.

mod bench;
mod config;
mod limits;
mod publish;
mod serve;
mod subscribe;
mod tls;
mod token;
mod trim;
mod trust;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Herald: a Mercure-compatible Server-Sent Events hub.
#[derive(Parser, Debug)]
#[command(name = "herald", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the hub (Mercure protocol on /.well-known/mercure).
    Serve(Box<config::ServeConfig>),
    /// Publish an update to one or more topics and print its id.
    Pub(publish::PubArgs),
    /// Subscribe to topic selectors and print the events as they arrive.
    Sub(subscribe::SubArgs),
    /// Print a signed JWT granting publish/subscribe rights.
    Token(token::TokenArgs),
    /// Measure: idle subscriptions, fan-out, the machine's floor, the history store.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Token(args) => token::run(args),
        Command::Bench(args) => block_on(bench::run(args)),
        Command::Serve(config) => block_on(serve::run(*config)),
        Command::Pub(args) => block_on(publish::run(args)),
        Command::Sub(args) => block_on(subscribe::run(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("herald: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn block_on(task: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(task)
}

/// Logs go to stderr; `RUST_LOG` chooses what (default: info for herald, warn for the rest).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,herald=info,herald_hub=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

//! `herald`: the command line. It only wires the library crates together: `herald-hub` for
//! `serve`, `herald-client` for `sub`, `herald-sse` for the wire format.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Herald: a Mercure-compatible Server-Sent Events hub.
#[derive(Parser, Debug)]
#[command(name = "herald", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Arguments of a command that is not built yet; accepted so that `--help` works and the
/// message below is what the user sees, not a parse error.
#[derive(clap::Args, Debug)]
struct Planned {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    args: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the hub (Mercure protocol on /.well-known/mercure).
    Serve(Planned),
    /// Publish an update to one or more topics.
    Pub(Planned),
    /// Subscribe to topic selectors and print the events as they arrive.
    Sub(Planned),
    /// Print a signed JWT granting publish/subscribe rights.
    Token(Planned),
    /// Measure a hub: idle connections, fan-out throughput and latency.
    Bench(Planned),
}

/// Exit code of a command that exists in the plan but not yet in the code.
const NOT_IMPLEMENTED: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let name = match cli.command {
        Command::Serve(_) => "serve",
        Command::Pub(_) => "pub",
        Command::Sub(_) => "sub",
        Command::Token(_) => "token",
        Command::Bench(_) => "bench",
    };
    eprintln!("herald {name}: not implemented yet (planned; see ARCHITECTURE.md)");
    ExitCode::from(NOT_IMPLEMENTED)
}

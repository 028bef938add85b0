//! The `nagare` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nagare_gateway::config::{self, Overrides, ProcessEnv};
use nagare_gateway::{server, telemetry};

#[derive(Parser)]
#[command(
    name = "nagare",
    version,
    about = "Nagare: a streaming gateway for generative AI"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway: REST and SSE chat on --listen.
    Serve {
        /// TOML config file; NAGARE__SECTION__KEY environment variables and flags override it.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on, e.g. 127.0.0.1:8080 (port 0 picks a free port).
        #[arg(long)]
        listen: Option<String>,
        /// Model provider: mock (embedded, the default) or bedrock.
        #[arg(long)]
        provider: Option<String>,
    },
}

fn main() -> ExitCode {
    let Command::Serve {
        config: file,
        listen,
        provider,
    } = Cli::parse().command;
    let config = match config::load(
        file.as_deref(),
        &ProcessEnv,
        &Overrides { listen, provider },
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("nagare: {e}");
            return ExitCode::from(2);
        }
    };
    let _log_guard = telemetry::init(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("nagare: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(server::run(config, server::shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "nagare serve failed");
            eprintln!("nagare: {e}");
            ExitCode::FAILURE
        }
    }
}

//! The `zenrelay` command line (for now: the simulator only).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use zenrelay::sim::{SimConfig, Simulator};

#[derive(Parser)]
#[command(name = "zenrelay", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the local Zendesk Apps API simulator.
    Sim {
        /// Address to listen on (overrides `sim.listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Config file with a `[sim]` table.
        #[arg(long, env = "ZENRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let Command::Sim { listen, config } = Cli::parse().command;
    let mut cfg = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            SimConfig::from_toml(&text).map_err(anyhow::Error::msg)?
        }
        None => SimConfig::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    cfg.validate().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let scheme = if cfg.tls.is_some() { "https" } else { "http" };
    tracing::info!(addr = %listener.local_addr()?, "simulator listening on {scheme}://{}", listener.local_addr()?);
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    Simulator::new(cfg).serve(listener, shutdown).await
}

//! The command line: parses arguments, loads config, runs a subcommand (`serve`, `sim`,
//! `demo`, `check-config`); the work itself lives in the library modules. `sim` and `demo`
//! exist only in a build with the `sim` feature (the default).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::Gateway;
use crate::config::{Config, Scope};
#[cfg(feature = "sim")]
use crate::demo::{self, DemoOptions};
#[cfg(feature = "sim")]
use crate::sim::{SimConfig, Simulator};

/// zenrelay: notification relay gateway for the Zendesk Apps API.
#[derive(Debug, Parser)]
#[command(name = "zenrelay", version, about)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: ingress, delivery workers, health (reads every table but `[sim]`).
    Serve {
        /// Config file (default: $ZENRELAY_CONFIG, else config/zenrelay.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the local Zendesk Apps API simulator (reads only `[sim]` and `[log]`).
    #[cfg(feature = "sim")]
    Sim {
        /// Address to listen on (overrides `sim.listen`).
        #[arg(long)]
        listen: Option<String>,
        /// Config file with a `[sim]` table (default: $ZENRELAY_CONFIG, else
        /// config/zenrelay.toml, else the sample account).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run the gateway and a Zendesk simulator in one process, with sample accounts and a
    /// client key (Redis if it answers, else an in-memory queue that is not durable).
    #[cfg(feature = "sim")]
    Demo {
        /// Gateway address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Simulator address.
        #[arg(long, default_value = "127.0.0.1:9090")]
        sim_listen: String,
        /// Config file for `[redis]`, `[delivery]` and `[log]` (default: demo settings).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Send a steady sample load that shows the limiter, a retry and a dead letter.
        #[arg(long)]
        traffic: bool,
    },
    /// Load and validate a whole config, `[sim]` included; print the first problem and exit
    /// non-zero if any.
    CheckConfig {
        /// Config file (default: $ZENRELAY_CONFIG, else config/zenrelay.toml).
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(config.as_deref()) {
            Ok(config) => {
                let partitions = if config.redis.partitions_set || config.redis.is_memory() {
                    config.redis.partitions.to_string()
                } else {
                    format!(
                        "{} (not set: a store written with another count keeps its own)",
                        config.redis.partitions
                    )
                };
                println!(
                    "config OK: {} account(s), {} client(s), redis partitions {partitions}",
                    config.accounts.len(),
                    config.clients.len(),
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("config error: {e}");
                ExitCode::from(2)
            }
        },
        #[cfg(feature = "sim")]
        Command::Sim { listen, config } => {
            let config = match Config::load_scoped(config.as_deref(), Scope::Sim) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("config error: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::telemetry::init(&config.log);
            let mut sim = config.sim.unwrap_or_default();
            if let Some(listen) = listen {
                sim.listen = listen;
            }
            if let Err(e) = sim.validate() {
                eprintln!("config error: {e}");
                return ExitCode::from(2);
            }
            run_async(run_sim(sim))
        }
        #[cfg(feature = "sim")]
        Command::Demo {
            listen,
            sim_listen,
            config,
            traffic,
        } => {
            let options = DemoOptions {
                listen,
                sim_listen,
                config,
                traffic,
            };
            let config = match demo::load_config(&options) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("config error: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::telemetry::init(&config.log);
            run_async(demo::run(config, options, shutdown_signal()))
        }
        Command::Serve { config } => {
            let config = match Config::load_scoped(config.as_deref(), Scope::Gateway) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("config error: {e}");
                    return ExitCode::from(2);
                }
            };
            crate::telemetry::init(&config.log);
            run_async(serve(config))
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.server.listen).await?;
    let addr = listener.local_addr()?;
    let gateway = Gateway::build(config).await?;
    tracing::info!(%addr, "zenrelay listening");
    gateway.run(listener, shutdown_signal()).await
}

#[cfg(feature = "sim")]
async fn run_sim(config: SimConfig) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(&config.listen).await?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(%addr, "simulator listening on {scheme}://{addr}");
    Simulator::new(config)
        .serve(listener, shutdown_signal())
        .await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

//! The `tusk` binary: parse flags, load settings, serve until SIGTERM/SIGINT.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;

use tusk::config::{Overrides, Settings};
use tusk::{server, telemetry, AppState};

/// A resumable upload server speaking the tus protocol 1.0.0.
#[derive(Debug, Parser)]
#[command(name = "tusk", version, about)]
struct Cli {
    /// Config file (TOML); see config/tusk.toml for every key.
    #[arg(long, env = "TUSK_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long, env = "TUSK_HOST")]
    host: Option<IpAddr>,
    /// Port to listen on; 0 picks a free one [default: 1080].
    #[arg(long, env = "TUSK_PORT")]
    port: Option<u16>,
    /// Directory for upload data and the session database [default: ./data].
    #[arg(long, env = "TUSK_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// URL path of the upload endpoint [default: /files/].
    #[arg(long, env = "TUSK_BASE_PATH")]
    base_path: Option<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = Overrides {
        host: cli.host,
        port: cli.port,
        data_dir: cli.data_dir.clone(),
        base_path: cli.base_path.clone(),
    };
    let settings = match Settings::load(cli.config.as_deref(), std::env::vars(), &overrides) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("tusk: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        match toml::to_string_pretty(&settings) {
            Ok(text) => print!("{text}"),
            Err(err) => eprintln!("tusk: {err}"),
        }
        return ExitCode::SUCCESS;
    }
    telemetry::init(&settings.log.level);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tusk: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tusk: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    let address = SocketAddr::new(settings.server.host, settings.server.port);
    let base_path = settings.server.base_path.clone();
    let state = AppState::open(settings).await?;
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("cannot listen on {address}: {e}"))?;
    let bound = listener.local_addr()?;
    // Scripts and the protocol tests read this line to find the port.
    println!("tusk listening on http://{bound}{base_path}");
    tracing::info!(%bound, %base_path, "tusk listening");
    server::run(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

//! The `wishcast` binary: reads an optional config file, starts the gateway, stops on ctrl-c or
//! SIGTERM.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wishcast::{Config, Gateway};

/// WebRTC broadcast gateway: publish with WHIP, watch with WHEP.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file; without it the embedded defaults are used.
    #[arg(long, short)]
    config: Option<String>,
    /// Serve HTTPS and HTTP/3 with a self-signed certificate for localhost (development).
    #[arg(long)]
    dev_tls: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => match Config::from_file(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("wishcast: {e}");
                return std::process::ExitCode::from(2);
            }
        },
        None => Config::default(),
    };
    if args.dev_tls {
        config.tls.self_signed = true;
    }
    let gateway = match Gateway::start(config).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("wishcast: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let mut http = gateway.http_addr();
    let scheme = if gateway.tls_identity().is_some() {
        "https"
    } else {
        "http"
    };
    let host = if http.ip().is_unspecified() {
        // A wildcard is not an address to paste into OBS: show the local one.
        http.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        format!("localhost:{}", http.port())
    } else {
        http.to_string()
    };
    println!("wishcast: WHIP  {scheme}://{host}/whip/{{stream}}  (OBS: Settings > Stream > WHIP)");
    println!("wishcast: WHEP  {scheme}://{host}/whep/{{stream}}");
    if let Some(h3) = gateway.h3_addr() {
        println!("wishcast: HTTP/3 on UDP {h3}, announced with Alt-Svc");
    }
    if let Some(spki) = gateway
        .tls_identity()
        .and_then(|i| i.spki_sha256.as_deref())
    {
        println!("wishcast: self-signed certificate, SPKI sha256 {spki}");
        println!(
            "wishcast: chromium --origin-to-force-quic-on={host} \
             --ignore-certificate-errors-spki-list={spki} {scheme}://{host}/api/streams"
        );
    }
    println!("wishcast: media {:?}", gateway.media_addrs());
    wait_for_signal().await;
    gateway.shutdown().await;
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
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
    {
        let _ = ctrl_c.await;
    }
}

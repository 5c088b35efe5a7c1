//! The `wishcast` binary: reads an optional config file, starts the gateway, reloads the file on
//! SIGHUP, stops on ctrl-c or SIGTERM.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wishcast::{Config, Gateway};

/// mimalloc: see Cargo.toml for why, and [`purge_at_once`].
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// WebRTC broadcast gateway: publish with WHIP, watch with WHEP.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file; without it the embedded defaults are used. Also read from
    /// `WISHCAST_CONFIG`, so a container's server and its health check find the same file.
    #[arg(long, short, env = "WISHCAST_CONFIG")]
    config: Option<String>,
    /// Serve HTTPS and HTTP/3 with a self-signed certificate for localhost (development).
    #[arg(long)]
    dev_tls: bool,
    /// HTTP listen address (`http.listen`).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// First UDP media port (`media.udp_base_port`).
    #[arg(long)]
    udp_port: Option<u16>,
    /// Data-plane shards, 0 for one per core (`media.shards`).
    #[arg(long)]
    shards: Option<usize>,
    /// Address to announce as host candidate, repeatable (`media.public_ips`).
    #[arg(long = "public-ip")]
    public_ips: Vec<std::net::IpAddr>,
    /// Ask the gateway configured here (same file, environment and flags) for /healthz and exit
    /// 0 if it answers 200: a container HEALTHCHECK without curl in the image.
    #[arg(long)]
    healthcheck: bool,
    /// Log lines as text or as JSON (for log shippers); the level comes from RUST_LOG.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    purge_at_once();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("wishcast: no async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// mimalloc hands freed memory back to the kernel only after a delay (10 ms by default), and
/// only when the thread that freed it allocates again: a shard whose viewers left, then idle,
/// kept it. Purging at once returned memory as glibc with `malloc_trim` did (43 MiB after
/// 1,000 viewers left, from 23.5 at start; 131 MiB with the defaults), at no cost the bench
/// could see (BENCHMARKS.md). Under join/leave churn it still keeps about 20 MB more than
/// glibc with `malloc_trim` did, flat over 10,000 cycles (`scripts/soak-churn.sh`, README).
fn purge_at_once() {
    /// `mi_option_purge_delay` in mimalloc 3's `mi_option_t` (`mimalloc.h`); the Rust
    /// bindings name no constant for it.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: sets an integer option before any other thread exists (mimalloc asks for that:
    // its option setter is not thread-safe).
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

async fn run() -> std::process::ExitCode {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        // Colour only for a terminal: log files and `docker logs` get plain text.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
    }
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wishcast: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.healthcheck {
        return healthcheck(&config).await;
    }
    // Before the gateway announces itself, so a SIGHUP right after start reloads rather than
    // ending the process (the default action).
    #[cfg(unix)]
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(|e| tracing::warn!(error = %e, "no SIGHUP handler: the configuration cannot be reloaded"))
        .ok();
    trim_heap_periodically();
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
    #[cfg(unix)]
    serve_until_stopped(&gateway, &args, hup).await;
    #[cfg(not(unix))]
    wait_for_signal().await;
    gateway.shutdown().await;
    std::process::ExitCode::SUCCESS
}

/// The configuration from every source: defaults < file < `WISHCAST_*` environment < flags.
/// Read again, the same way, on each reload.
fn load_config(args: &Args) -> Result<wishcast::Config, wishcast::config::ConfigError> {
    let mut config = Config::load(args.config.as_deref(), std::env::vars())?;
    if args.dev_tls {
        config.tls.self_signed = true;
    }
    if let Some(listen) = args.listen {
        config.http.listen = listen;
    }
    if let Some(port) = args.udp_port {
        config.media.udp_base_port = port;
    }
    if let Some(shards) = args.shards {
        config.media.shards = shards;
    }
    if !args.public_ips.is_empty() {
        config.media.public_ips = args.public_ips.clone();
    }
    config.validate()?;
    Ok(config)
}

/// Waits for ctrl-c or SIGTERM; each SIGHUP meanwhile reloads the configuration. A file that
/// does not load is logged and the running configuration stays.
#[cfg(unix)]
async fn serve_until_stopped(
    gateway: &Gateway,
    args: &Args,
    hup: Option<tokio::signal::unix::Signal>,
) {
    let Some(mut hup) = hup else {
        wait_for_signal().await;
        return;
    };
    let stop = wait_for_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                let result = load_config(args)
                    .map_err(wishcast::reload::ReloadError::from)
                    .and_then(|c| gateway.reload(c));
                wishcast::reload::log_reload(&result);
            }
        }
    }
}

/// How often freed heap memory is handed back to the kernel.
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The C libraries still allocate from glibc's malloc: OpenSSL's DTLS state is about 42 KiB
/// per session. glibc keeps what sessions free in its per-thread arenas, fragmented, and gives
/// little of it back by itself: when every allocation went there, after 2,000 viewers joined
/// and left, RSS stood at 87 MB with 2 MB of heap in use, and it kept growing with more churn.
/// `malloc_trim` every few seconds returns the free pages. Figures and commands:
/// `scripts/soak-churn.sh` and the README.
fn trim_heap_periodically() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let spawned = std::thread::Builder::new()
            .name("wishcast-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_INTERVAL);
                // SAFETY: malloc_trim takes the arenas' locks and only releases free memory.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no heap trimming thread: freed memory stays with the process");
        }
    }
}

async fn healthcheck(config: &Config) -> std::process::ExitCode {
    let mut addr = config.http.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/healthz");
    let result = if config.tls.enabled() {
        // With TLS (often a certificate this probe cannot verify), liveness is the listener
        // accepting connections.
        tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| 200)
            .map_err(|e| e.to_string())
    } else {
        get_status(&url).await
    };
    match result {
        Ok(200) => std::process::ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("wishcast: {url} answered {status}");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("wishcast: {url}: {e}");
            std::process::ExitCode::from(1)
        }
    }
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

/// The status of a plain HTTP/1.1 `GET url`, for the health probe: the probe only needs the
/// status, and the test kits' HTTP client is not part of the binary.
async fn get_status(url: &str) -> Result<u16, String> {
    /// Upper bound for the probe, so a stuck listener fails it instead of hanging it.
    const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    match tokio::time::timeout(PROBE_TIMEOUT, client.get(uri)).await {
        Ok(Ok(response)) => Ok(response.status().as_u16()),
        // The chain of causes (connect refused, reset) is in the debug form only.
        Ok(Err(e)) => Err(format!("HTTP: {e:?}")),
        Err(_) => Err("timed out".into()),
    }
}

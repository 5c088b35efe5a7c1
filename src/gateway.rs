//! Starting and stopping a gateway: binds the shards' UDP sockets and the HTTP listener, spawns
//! one thread per shard and serves signalling on the caller's tokio runtime.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::info;

use crate::config::Config;
use crate::http::{router, serve, AppState};
use crate::hub::Hub;
use crate::reload::{ReloadError, Reloadable, Reloaded};
use crate::shard::counters::Counters;
use crate::shard::engine::Engine;
use crate::shard::io::{self, ShardLink, SharedCounters};
use crate::shard::Command;
use crate::tls::{self, Identity};

/// How long shutdown waits for the shard threads to say goodbye to their peers.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot bind UDP {addr}: {source}")]
    BindUdp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for ICE-TCP on {addr}: {source}")]
    BindTcp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for HTTP on {addr}: {source}")]
    BindHttp {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start shard thread: {0}")]
    Thread(std::io::Error),
    #[error("auth: {0}")]
    Auth(#[from] crate::auth::AuthError),
    #[error("no network interface matches media.interfaces ({0})")]
    NoInterface(String),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot serve HTTP/3 on {addr}: {reason}")]
    Http3 { addr: SocketAddr, reason: String },
}

/// A running gateway. Dropping it without [`Gateway::shutdown`] leaves its threads running until
/// the process ends.
pub struct Gateway {
    http_addr: SocketAddr,
    media_addrs: Vec<SocketAddr>,
    hub: Arc<Hub>,
    shards: Arc<Vec<ShardLink>>,
    threads: Vec<JoinHandle<()>>,
    counters: Vec<Arc<SharedCounters>>,
    stop_http: watch::Sender<bool>,
    http_tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Accepts ICE-TCP connections; stopped at shutdown.
    tcp_task: Option<tokio::task::JoinHandle<()>>,
    tcp_addr: Option<SocketAddr>,
    identity: Option<Identity>,
    h3_addr: Option<SocketAddr>,
    live: Reloadable,
    router: axum::Router,
}

impl Gateway {
    /// Binds everything and starts serving. Must be called inside a tokio runtime.
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let config = Arc::new(config);
        let n = config.shard_count();
        let hub = Arc::new(Hub::new(n));

        let mut sockets = Vec::with_capacity(n);
        for k in 0..n {
            let port = match config.media.udp_base_port {
                0 => 0,
                base => base.saturating_add(k as u16),
            };
            let addr = SocketAddr::new(config.media.bind_ip, port);
            let socket = io::bind(addr).map_err(|source| StartError::BindUdp { addr, source })?;
            let local = socket
                .local_addr()
                .map_err(|source| StartError::BindUdp { addr, source })?;
            sockets.push((socket, local.port()));
        }
        let ips = candidate_ips(&config)?;
        // ICE-TCP: one port for the node; the engines announce it as passive candidates.
        let tcp_listener = if config.media.ice_tcp {
            let addr = SocketAddr::new(config.media.bind_ip, config.media.ice_tcp_port());
            let l = listen_tcp(addr).map_err(|source| StartError::BindTcp { addr, source })?;
            let bound = l
                .local_addr()
                .map_err(|source| StartError::BindTcp { addr, source })?;
            Some((l, bound))
        } else {
            None
        };
        let tcp_addr = tcp_listener.as_ref().map(|(_, bound)| *bound);
        let tcp_candidates: Vec<SocketAddr> = match tcp_addr {
            Some(bound) => ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, bound.port()))
                .collect(),
            None => Vec::new(),
        };
        let (links, chans): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| io::channels(config.media.shard_queue_packets))
            .unzip();
        let links = Arc::new(links);
        let mut threads = Vec::with_capacity(n);
        let mut media_addrs = Vec::new();
        let counters: Vec<Arc<SharedCounters>> = (0..n)
            .map(|_| Arc::new(SharedCounters::default()))
            .collect();
        for (k, ((socket, port), chans)) in sockets.into_iter().zip(chans).enumerate() {
            let candidates: Vec<SocketAddr> =
                ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect();
            media_addrs.extend(candidates.iter().copied());
            let engine_config = config.clone();
            let tcp_candidates = tcp_candidates.clone();
            let new_engine = move |seed| {
                let mut engine = Engine::new(
                    k,
                    engine_config.clone(),
                    candidates.clone(),
                    Instant::now(),
                    seed,
                );
                engine.set_tcp_candidates(tcp_candidates.clone());
                engine
            };
            let parts = io::ShardParts {
                socket,
                chans,
                peers: links.as_ref().clone(),
                hub: hub.clone(),
                counters: counters[k].clone(),
                set_source_ip: config.media.bind_ip.is_unspecified()
                    && config.media.public_ips.is_empty(),
            };
            let t = std::thread::Builder::new()
                .name(format!("wishcast-shard-{k}"))
                .spawn(move || io::supervise(new_engine, parts))
                .map_err(StartError::Thread)?;
            threads.push(t);
        }

        let listen = config.http.listen;
        let listener = listen_tcp(listen).map_err(|source| StartError::BindHttp {
            addr: listen,
            source,
        })?;
        let http_addr = listener
            .local_addr()
            .map_err(|source| StartError::BindHttp {
                addr: listen,
                source,
            })?;
        // The parts a reload may change, read per request.
        let live = Reloadable::new((*config).clone())?;
        let state = AppState {
            config: live.config.clone(),
            hub: hub.clone(),
            shards: links.clone(),
        };
        let app = router(state.clone()).merge(crate::http::api::routes(state));
        // Operations endpoints beside the signalling API, and every request counted.
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let ops = Arc::new(crate::http::ops::Ops {
            metrics: metrics.clone(),
            hub: hub.clone(),
            counters: counters.clone(),
            shards: links.clone(),
        });
        // Inside out: bearer auth (it lets CORS preflights and health through), the rate of new
        // sessions per client address (outside auth, so a flood costs no webhook call), the
        // request timeout (a body sent slowly gets 408), and the request counter, so refusals
        // are counted too; CORS around all of it, so browsers can read every answer, refusals
        // included.
        let mut app = crate::auth::layer(
            app.merge(crate::http::ops::routes(ops)),
            live.auth.clone(),
            hub.clone(),
        );
        // The browser pages are public (their API calls carry the token), so they join outside
        // auth; merged into the guarded router, whose fallback (unknown paths) stays guarded.
        app = crate::web::routes().merge(app);
        let app = app
            .layer(axum::middleware::from_fn_with_state(
                live.post_rate.clone(),
                crate::reload::limit_posts,
            ))
            .layer(axum::middleware::from_fn_with_state(
                config.http.request_timeout(),
                crate::http::request_timeout,
            ))
            .layer(axum::middleware::from_fn_with_state(
                metrics,
                crate::http::ops::track,
            ))
            .layer(axum::middleware::from_fn(crate::http::cors));
        let in_process = app.clone();
        let (stop_http, stopped) = watch::channel(false);
        let identity = tls_identity(&config)?;
        let mut http_tasks = Vec::new();
        let tcp_task = tcp_listener
            .map(|(l, _)| tokio::spawn(crate::shard::tcp::accept(l, hub.clone(), links.clone())));
        let mut h3_addr = None;
        let serve_opts = serve::ServeOptions {
            header_read: config.http.header_read_timeout(),
            drain: Duration::from_secs(config.http3.shutdown_drain_secs),
        };
        match &identity {
            None => http_tasks.push(tokio::spawn(serve::serve_plain(
                listener, app, stopped, serve_opts,
            ))),
            Some(id) => {
                let app = if config.http3.enabled {
                    serve::with_alt_svc(app, http_addr.port())
                } else {
                    app
                };
                if config.http3.enabled {
                    let (addr, task) =
                        start_h3(&config, http_addr, id, app.clone(), stopped.clone())?;
                    h3_addr = Some(addr);
                    http_tasks.push(task);
                }
                let tls = id.server_config(tls::ALPN_TCP)?;
                http_tasks.push(tokio::spawn(serve::serve_tls(
                    listener, tls, app, stopped, serve_opts,
                )));
            }
        }
        info!(%http_addr, ?h3_addr, tls = identity.is_some(), shards = n, media = ?media_addrs, ice_tcp = ?tcp_addr, "wishcast started");
        Ok(Gateway {
            http_addr,
            media_addrs,
            hub,
            shards: links,
            threads,
            counters,
            stop_http,
            http_tasks,
            tcp_task,
            tcp_addr,
            identity,
            h3_addr,
            live,
            router: in_process,
        })
    }

    /// Applies a new configuration's tokens and other `[auth]` rules, `[limits]` (but the shard
    /// load thresholds), ICE servers and `http.retry_after_secs` to the requests that follow;
    /// live sessions are not touched. Options that need a restart are listed in the result and
    /// keep their running values. On an error (an invalid configuration, an unreadable key
    /// file) nothing changes.
    pub fn reload(&self, config: Config) -> Result<Reloaded, ReloadError> {
        self.live.reload(config)
    }

    /// Where signalling is served.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The TLS certificate and key in use, if signalling is HTTPS (and HTTP/3).
    pub fn tls_identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }

    /// Where ICE-TCP connections are taken, if they are (`media.ice_tcp`).
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Where HTTP/3 is served (UDP), if it is.
    pub fn h3_addr(&self) -> Option<SocketAddr> {
        self.h3_addr
    }

    /// The HTTP service with all its middleware, as the listeners serve it (without `Alt-Svc`),
    /// for driving requests in-process: a request needs a `ConnectInfo<SocketAddr>` extension
    /// for the per-address limits to see it.
    pub fn router(&self) -> axum::Router {
        self.router.clone()
    }

    /// Every announced media address (host candidates of all shards).
    pub fn media_addrs(&self) -> &[SocketAddr] {
        &self.media_addrs
    }

    /// Sessions registered, publishers and viewers.
    pub fn session_count(&self) -> usize {
        self.hub.session_count()
    }

    /// Counters summed over all shards.
    pub fn stats(&self) -> Counters {
        let mut s = Counters::default();
        for c in &self.counters {
            s.add(&c.load());
        }
        s
    }

    /// Makes shard `k` panic outside any session's isolation, for tests of its restart.
    #[cfg(feature = "testkit")]
    pub fn crash_shard(&self, k: usize) {
        if let Some(link) = self.shards.get(k) {
            let _ = link.commands.try_send(crate::shard::Command::Crash);
        }
    }

    /// Sends `reconnect` on every viewer's event streams and ends them, stops accepting requests
    /// (in-flight ones get the drain deadline), ends every session with
    /// an RTCP BYE and DTLS close_notify to its peer, and joins the shard threads, waiting at
    /// most `SHUTDOWN_DEADLINE` for them.
    pub async fn shutdown(self) {
        // Players following events reconnect (elsewhere, or here after a restart) rather than
        // wait to notice their media stop; their long pulls end once that is sent.
        self.hub.reconnect_all();
        let _ = self.stop_http.send(true);
        if let Some(t) = &self.tcp_task {
            t.abort();
        }
        for task in self.http_tasks {
            let _ = task.await;
        }
        for link in self.shards.iter() {
            // Waits for room: the shard reads its commands first.
            let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, link.commands.send(Command::Shutdown))
                .await;
        }
        let threads = self.threads;
        let join = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        if tokio::time::timeout(SHUTDOWN_DEADLINE, join).await.is_err() {
            tracing::warn!("shards did not stop within {SHUTDOWN_DEADLINE:?}");
        }
    }
}

/// The signalling listener; on `[::]` it takes IPv4 too, whatever the system's default for
/// new sockets (`net.ipv6.bindv6only`) says.
fn listen_tcp(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        socket.set_only_v6(false)?;
    }
    // As std's and tokio's listeners do: a restart can bind while old connections linger.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// The configured certificate, a generated one, or none (plain HTTP).
fn tls_identity(config: &Config) -> Result<Option<Identity>, StartError> {
    let tls = &config.tls;
    match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Ok(Some(Identity::from_pem_files(cert, key)?)),
        _ if tls.self_signed => Ok(Some(Identity::self_signed()?)),
        _ => Ok(None),
    }
}

/// HTTP/3 on the HTTPS port number over UDP: on `[::]` (both families) when signalling listens
/// on a wildcard, else on the same address.
fn start_h3(
    config: &Config,
    http_addr: SocketAddr,
    identity: &Identity,
    app: axum::Router,
    stopped: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), StartError> {
    let ip = if http_addr.ip().is_unspecified() {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        http_addr.ip()
    };
    let addr = SocketAddr::new(ip, http_addr.port());
    let opts = crate::http3::H3Options {
        max_concurrent_streams: config.http3.max_concurrent_streams,
        idle_timeout: Duration::from_secs(config.http3.idle_timeout_secs),
        max_body_bytes: config.http.max_body_bytes,
    };
    let endpoint =
        crate::http3::endpoint(addr, identity, &opts).map_err(|e| StartError::Http3 {
            addr,
            reason: e.to_string(),
        })?;
    let drain = Duration::from_secs(config.http3.shutdown_drain_secs);
    let task = tokio::spawn(crate::http3::serve(endpoint, app, stopped, drain));
    Ok((addr, task))
}

/// The IPs to announce as host candidates: configured public IPs, else the bound IP, else every
/// interface address of the bound family, of both on a dual-stack `::` (loopback last, and
/// only if configured).
fn candidate_ips(config: &Config) -> Result<Vec<IpAddr>, StartError> {
    if !config.media.public_ips.is_empty() {
        return Ok(config.media.public_ips.clone());
    }
    let bind = config.media.bind_ip;
    if !bind.is_unspecified() {
        return Ok(vec![bind]);
    }
    let dual = config.media.dual_stack();
    let filter = &config.media.interfaces;
    let mut ips: Vec<IpAddr> = Vec::new();
    let mut loopback: Vec<IpAddr> = Vec::new();
    if let Ok(ifaces) = if_addrs::get_if_addrs() {
        for iface in ifaces {
            let ip = iface.ip();
            if !dual && ip.is_ipv4() != bind.is_ipv4() {
                continue;
            }
            if !filter.is_empty()
                && !filter
                    .iter()
                    .any(|g| crate::auth::glob_match(g, &iface.name))
            {
                continue;
            }
            if let IpAddr::V6(v6) = ip {
                // Link-local needs a scope id a candidate cannot carry.
                if (v6.segments()[0] & 0xffc0) == 0xfe80 {
                    continue;
                }
            }
            if ip.is_loopback() {
                loopback.push(ip);
            } else {
                ips.push(ip);
            }
        }
    }
    if config.media.include_loopback || ips.is_empty() {
        ips.extend(loopback);
    }
    if ips.is_empty() && !filter.is_empty() {
        return Err(StartError::NoInterface(filter.join(", ")));
    }
    if ips.is_empty() {
        if bind.is_ipv4() || dual {
            ips.push(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
        }
        if bind.is_ipv6() {
            ips.push(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST));
        }
    }
    ips.dedup();
    Ok(ips)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wildcard(interfaces: &[&str]) -> Config {
        let mut c = Config::default();
        c.media.interfaces = interfaces.iter().map(|s| s.to_string()).collect();
        c
    }

    #[test]
    fn interface_filter_picks_announced_addresses() {
        // Loopback is named "lo" on Linux and always present.
        let ips = candidate_ips(&wildcard(&["lo"])).expect("lo matches");
        assert_eq!(ips, vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)]);
        let err = candidate_ips(&wildcard(&["nosuchif*"])).expect_err("nothing matches");
        assert!(err.to_string().contains("nosuchif*"), "{err}");
        let all = candidate_ips(&wildcard(&[])).expect("no filter");
        assert!(all.contains(&IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)));
    }

    #[test]
    fn a_dual_stack_bind_announces_both_families() {
        let mut c = wildcard(&["lo"]);
        c.media.bind_ip = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
        let ips = candidate_ips(&c).expect("lo matches");
        assert!(
            ips.contains(&IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            "{ips:?}"
        );
        // Without IPv6 on the machine there is no ::1 to announce.
        if std::net::UdpSocket::bind("[::1]:0").is_ok() {
            assert!(
                ips.contains(&IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)),
                "{ips:?}"
            );
        }
    }
}

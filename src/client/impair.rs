//! Bad networks on loopback, for tests and the loss matrix: real kernel packet loss from an
//! iptables `statistic` rule, a real rate limit from a `hashlimit` one, and jitter from a
//! userspace UDP relay.
//!
//! The kernel here has no netem, so delay cannot come from `tc`; the [`Relay`] delays each
//! datagram by its own random time instead, which also reorders them, as jitter on a real path
//! does.

use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Why a network impairment could not be set up. Tests skip on it rather than fail.
#[derive(Debug, thiserror::Error)]
pub enum ImpairError {
    #[error("iptables needs root (running as uid {0})")]
    NotRoot(u32),
    #[error("iptables is not installed: {0}")]
    NoIptables(String),
    #[error("iptables {args}: {stderr}")]
    Iptables { args: String, stderr: String },
    #[error("relay socket: {0}")]
    Io(#[from] std::io::Error),
}

/// Random loss of every UDP datagram from or to one address, by an iptables rule in a chain
/// of its own; removed on drop, whatever the test did.
///
/// Peers that should suffer bind `addr` (any 127.x.y.z works on Linux loopback); the rest of
/// the machine's traffic does not match.
#[derive(Debug)]
pub struct IptablesLoss {
    chain: String,
    jumps: Vec<Vec<String>>,
}

impl IptablesLoss {
    /// Drops each UDP datagram sent from or to `addr` with probability `probability`.
    /// `chain` names the rule's chain (at most 28 characters; one per concurrent test).
    pub fn new(chain: &str, addr: IpAddr, probability: f64) -> Result<IptablesLoss, ImpairError> {
        let addr = addr.to_string();
        let jumps = vec![
            vec!["-p", "udp", "-s", addr.as_str()],
            vec!["-p", "udp", "-d", addr.as_str()],
        ];
        IptablesLoss::install(chain, jumps, probability)
    }

    /// Every UDP datagram from or to one of `ports` (on any address) dropped: a network that
    /// blocks UDP to a server, as corporate firewalls do. Same clean-up as [`IptablesLoss::new`].
    pub fn block_udp_ports(chain: &str, ports: &[u16]) -> Result<IptablesLoss, ImpairError> {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        let mut jumps = Vec::new();
        for p in &ports {
            jumps.push(vec!["-p", "udp", "--dport", p.as_str()]);
            jumps.push(vec!["-p", "udp", "--sport", p.as_str()]);
        }
        IptablesLoss::install(chain, jumps, 1.0)
    }

    fn install(
        chain: &str,
        jumps: Vec<Vec<&str>>,
        probability: f64,
    ) -> Result<IptablesLoss, ImpairError> {
        let rule = if probability >= 1.0 {
            vec!["-j".to_string(), "DROP".to_string()]
        } else {
            let p = format!("{probability:.4}");
            ["-m", "statistic", "--mode", "random", "--probability", &p]
                .iter()
                .chain(&["-j", "DROP"])
                .map(|a| a.to_string())
                .collect()
        };
        IptablesLoss::install_rule(chain, jumps, &rule)
    }

    /// A chain `chain` holding one `rule` (the arguments after `-A chain`), which each of
    /// `jumps` (matches in OUTPUT) leads to.
    fn install_rule(
        chain: &str,
        jumps: Vec<Vec<&str>>,
        rule: &[String],
    ) -> Result<IptablesLoss, ImpairError> {
        available()?;
        let mut loss = IptablesLoss {
            chain: chain.to_string(),
            jumps: jumps
                .into_iter()
                .map(|v| v.into_iter().map(String::from).collect())
                .collect(),
        };
        // A run killed before its drop leaves its chain behind: start clean.
        loss.remove();
        iptables(&["-N", chain])?;
        let mut append = vec!["-A", chain];
        append.extend(rule.iter().map(String::as_str));
        iptables(&append)?;
        // Loopback datagrams pass OUTPUT once: one chance of loss per datagram.
        for jump in &loss.jumps {
            let mut args = vec!["-I", "OUTPUT"];
            args.extend(jump.iter().map(String::as_str));
            args.extend(["-j", chain]);
            iptables(&args)?;
        }
        Ok(loss)
    }

    /// Datagrams the rule dropped so far.
    pub fn dropped(&self) -> u64 {
        let Ok(out) = Command::new("iptables")
            .args(["-w", "-L", &self.chain, "-v", "-n", "-x"])
            .output()
        else {
            return 0;
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("DROP"))
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }

    fn remove(&mut self) {
        for jump in &self.jumps {
            let mut args = vec!["-D", "OUTPUT"];
            args.extend(jump.iter().map(String::as_str));
            args.extend(["-j", &self.chain]);
            // Each rule may have been inserted more than once by killed runs.
            while iptables(&args).is_ok() {}
        }
        let _ = iptables(&["-F", &self.chain]);
        let _ = iptables(&["-X", &self.chain]);
    }
}

impl Drop for IptablesLoss {
    fn drop(&mut self) {
        self.remove();
    }
}

/// A narrow link towards one address: UDP datagrams to `addr` beyond a byte rate dropped by an
/// iptables `hashlimit` rule in a chain of its own, as a policer drops what exceeds a link's
/// rate; removed on drop, like [`IptablesLoss`].
///
/// Only datagrams whose destination is `addr` match (the peer that suffers binds it, as for
/// [`IptablesLoss::new`]), or with [`IptablesRateCap::flow`] those from given addresses to one
/// address and port: what that peer sends, and all other traffic, passes untouched. The
/// burst allowed over the rate is one second of it, the least `hashlimit` accepts. Loopback
/// sends may be segmentation-offloaded, so a datagram the rule sees can be several packets of
/// one send (a video frame's, say), passed or dropped together.
#[derive(Debug)]
pub struct IptablesRateCap {
    rule: IptablesLoss,
}

impl IptablesRateCap {
    /// Drops UDP datagrams to `addr` above `bytes_per_sec`. `chain` names the rule's chain
    /// and its `hashlimit` table (at most 28 characters; one per concurrent test).
    pub fn new(
        chain: &str,
        addr: IpAddr,
        bytes_per_sec: u64,
    ) -> Result<IptablesRateCap, ImpairError> {
        let addr = addr.to_string();
        IptablesRateCap::install(
            chain,
            vec![vec!["-p", "udp", "-d", addr.as_str()]],
            bytes_per_sec,
        )
    }

    /// Drops UDP datagrams from any of `from` to `to` above `bytes_per_sec`: one direction
    /// of one peer's path, for a peer that cannot be made to bind an address of its own (a
    /// browser). `from` is typically every media address of the gateway, `to` the address
    /// the gateway reports for the peer.
    pub fn flow(
        chain: &str,
        from: &[SocketAddr],
        to: SocketAddr,
        bytes_per_sec: u64,
    ) -> Result<IptablesRateCap, ImpairError> {
        let from: Vec<(String, String)> = from
            .iter()
            .map(|a| (a.ip().to_string(), a.port().to_string()))
            .collect();
        let (to_ip, to_port) = (to.ip().to_string(), to.port().to_string());
        let jumps = from
            .iter()
            .map(|(ip, port)| {
                vec![
                    "-p",
                    "udp",
                    "-s",
                    ip.as_str(),
                    "--sport",
                    port.as_str(),
                    "-d",
                    to_ip.as_str(),
                    "--dport",
                    to_port.as_str(),
                ]
            })
            .collect();
        IptablesRateCap::install(chain, jumps, bytes_per_sec)
    }

    fn install(
        chain: &str,
        jumps: Vec<Vec<&str>>,
        bytes_per_sec: u64,
    ) -> Result<IptablesRateCap, ImpairError> {
        let rate = format!("{bytes_per_sec}b/s");
        let burst = format!("{bytes_per_sec}b");
        let rule: Vec<String> = [
            "-m",
            "hashlimit",
            "--hashlimit-above",
            &rate,
            "--hashlimit-burst",
            &burst,
            "--hashlimit-mode",
            "dstip",
            "--hashlimit-name",
            chain,
            "-j",
            "DROP",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        let rule = IptablesLoss::install_rule(chain, jumps, &rule)?;
        Ok(IptablesRateCap { rule })
    }

    /// Datagrams the rule dropped so far.
    pub fn dropped(&self) -> u64 {
        self.rule.dropped()
    }
}

/// Whether rules can be installed here: running as root, with iptables. A test that sets up a
/// rule only once its peers are connected asks this first, so it can skip before starting
/// them.
pub fn available() -> Result<(), ImpairError> {
    use std::os::unix::fs::MetadataExt;
    // The owner of /proc/self is the process's effective user.
    let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |m| m.uid());
    if uid != 0 {
        return Err(ImpairError::NotRoot(uid));
    }
    if let Err(e) = Command::new("iptables").arg("--version").output() {
        return Err(ImpairError::NoIptables(e.to_string()));
    }
    Ok(())
}

fn iptables(args: &[&str]) -> Result<(), ImpairError> {
    // -w: other users of the machine may hold the xtables lock for a moment.
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| ImpairError::NoIptables(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ImpairError::Iptables {
            args: args.join(" "),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// A UDP relay that delays every datagram by a random time up to `max_delay`, both ways, and
/// optionally passes what goes to the client through a bottleneck ([`Relay::bottleneck`]).
///
/// Give it to a client ([`super::ClientOptions::relay`]): the client then reaches each of the
/// gateway's candidates through a link of its own, a front socket the client sends to and a
/// back socket that sends to the gateway, so the gateway sees the back socket as the client's
/// address. Links end when the relay is dropped.
pub struct Relay {
    max_delay: Duration,
    bind_ip: IpAddr,
    bottleneck: Option<(f64, Duration)>,
    shared: Arc<RelayShared>,
    scheduler: Option<JoinHandle<()>>,
    links: Mutex<Vec<JoinHandle<()>>>,
}

struct RelayShared {
    stop: AtomicBool,
    queue: Mutex<BinaryHeap<Due>>,
    wake: Condvar,
    seed: AtomicU64,
    relayed: AtomicU64,
    /// When each datagram came to the bottleneck, and what it waited in its queue; `None`
    /// for one dropped for want of room.
    waits: Mutex<Vec<(Instant, Option<Duration>)>>,
}

/// A datagram waiting for its time.
struct Due {
    at: Instant,
    order: u64,
    socket: Arc<UdpSocket>,
    to: SocketAddr,
    data: Vec<u8>,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.at, other.order).cmp(&(self.at, self.order))
    }
}

/// How long a link's receive waits before it looks at the stop flag.
const LINK_POLL: Duration = Duration::from_millis(50);

impl Relay {
    /// A relay on `bind_ip` delaying each datagram by a uniform random 0..=`max_delay`,
    /// drawn from `seed`.
    pub fn new(bind_ip: IpAddr, max_delay: Duration, seed: u64) -> Relay {
        let shared = Arc::new(RelayShared {
            stop: AtomicBool::new(false),
            queue: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
            seed: AtomicU64::new(seed),
            relayed: AtomicU64::new(0),
            waits: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let scheduler = std::thread::Builder::new()
            .name("relay-send".into())
            .spawn(move || s.send_loop())
            .ok();
        Relay {
            max_delay,
            bind_ip,
            bottleneck: None,
            shared,
            scheduler,
            links: Mutex::new(Vec::new()),
        }
    }

    /// Datagrams relayed so far, both ways.
    pub fn relayed(&self) -> u64 {
        self.shared.relayed.load(Ordering::Relaxed)
    }

    /// Each link's datagrams to the client pass a bottleneck of `bps` with a drop-tail queue:
    /// a datagram waits until those before it have gone at that rate, and one that would wait
    /// longer than `depth` is dropped, as a home router's buffer does. Set before any link.
    pub fn bottleneck(mut self, bps: f64, depth: Duration) -> Relay {
        self.bottleneck = Some((bps, depth));
        self
    }

    /// When each datagram so far came to the bottleneck, and what it waited in its queue;
    /// `None` for one dropped for want of room.
    pub fn waits(&self) -> Vec<(Instant, Option<Duration>)> {
        self.shared
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A new link to `target`: returns the front address a client sends to instead.
    pub fn link(&self, target: SocketAddr) -> Result<SocketAddr, ImpairError> {
        let front = Arc::new(UdpSocket::bind(SocketAddr::new(self.bind_ip, 0))?);
        let back = Arc::new(UdpSocket::bind(SocketAddr::new(self.bind_ip, 0))?);
        front.set_read_timeout(Some(LINK_POLL))?;
        back.set_read_timeout(Some(LINK_POLL))?;
        let front_addr = front.local_addr()?;
        // The client's address, learned from its first datagram.
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let seed = self.shared.seed.fetch_add(0x9e37_79b9, Ordering::Relaxed);
        let max = self.max_delay;
        let mut threads = Vec::new();
        {
            let (shared, front, back, client) = (
                self.shared.clone(),
                front.clone(),
                back.clone(),
                client.clone(),
            );
            let mut rng = fastrand::Rng::with_seed(seed);
            threads.push(
                std::thread::Builder::new()
                    .name("relay-in".into())
                    .spawn(move || {
                        shared.receive_loop(&front, |from, _| {
                            *client.lock().unwrap_or_else(|p| p.into_inner()) = Some(from);
                            Some((back.clone(), target, delay(&mut rng, max)))
                        })
                    })?,
            );
        }
        {
            let shared = self.shared.clone();
            let mut rng = fastrand::Rng::with_seed(seed ^ 0x5555);
            let bottleneck = self.bottleneck;
            // When the bottleneck's queue is empty again.
            let mut free_at = Instant::now();
            threads.push(std::thread::Builder::new().name("relay-out".into()).spawn(
                move || {
                    shared.receive_loop(&back, |_, len| {
                        let to = (*client.lock().unwrap_or_else(|p| p.into_inner()))?;
                        let mut after = delay(&mut rng, max);
                        if let Some((bps, depth)) = bottleneck {
                            let now = Instant::now();
                            let wait = free_at.saturating_duration_since(now);
                            let room = wait <= depth;
                            shared
                                .waits
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((now, room.then_some(wait)));
                            if !room {
                                return None;
                            }
                            let sending = Duration::from_secs_f64(len as f64 * 8.0 / bps);
                            free_at = free_at.max(now) + sending;
                            after += wait + sending;
                        }
                        Some((front.clone(), to, after))
                    })
                },
            )?);
        }
        self.links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(threads);
        Ok(front_addr)
    }

    /// `sdp` with every candidate's address replaced by a new link's front address.
    pub fn rewrite_candidates(&self, sdp: &str) -> Result<String, ImpairError> {
        let mut out = String::with_capacity(sdp.len());
        for line in sdp.split_inclusive('\n') {
            let body = line.trim_end_matches(['\r', '\n']);
            let ending = &line[body.len()..];
            let fields: Vec<&str> = body.split(' ').collect();
            let target = body
                .starts_with("a=candidate:")
                .then(|| fields.get(4)?.parse::<IpAddr>().ok())
                .flatten()
                .and_then(|ip| Some(SocketAddr::new(ip, fields.get(5)?.parse().ok()?)));
            match target {
                Some(target) => {
                    let front = self.link(target)?;
                    let mut fields = fields;
                    let (ip, port) = (front.ip().to_string(), front.port().to_string());
                    fields[4] = &ip;
                    fields[5] = &port;
                    out.push_str(&fields.join(" "));
                    out.push_str(ending);
                }
                None => out.push_str(line),
            }
        }
        Ok(out)
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("max_delay", &self.max_delay)
            .field("bind_ip", &self.bind_ip)
            .finish()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.wake.notify_all();
        if let Some(t) = self.scheduler.take() {
            let _ = t.join();
        }
        for t in self
            .links
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            let _ = t.join();
        }
    }
}

fn delay(rng: &mut fastrand::Rng, max: Duration) -> Duration {
    let micros = max.as_micros() as u64;
    Duration::from_micros(rng.u64(0..=micros))
}

type Route = (Arc<UdpSocket>, SocketAddr, Duration);

impl RelayShared {
    /// Reads `socket` until stopped; `route` says where each datagram (from whom, how long)
    /// goes and after how long, or that it is dropped.
    fn receive_loop(
        &self,
        socket: &UdpSocket,
        mut route: impl FnMut(SocketAddr, usize) -> Option<Route>,
    ) {
        let mut buf = vec![0u8; 65536];
        let mut order = 0u64;
        while !self.stop.load(Ordering::SeqCst) {
            let (n, from) = match socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue
                }
                // ICMP port unreachable from a peer that left: keep relaying for the rest.
                Err(_) => continue,
            };
            let Some((out, to, after)) = route(from, n) else {
                continue;
            };
            order += 1;
            let due = Due {
                at: Instant::now() + after,
                order,
                socket: out,
                to,
                data: buf[..n].to_vec(),
            };
            self.queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(due);
            self.wake.notify_one();
        }
    }

    fn send_loop(&self) {
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            match queue.peek() {
                Some(d) if d.at <= now => {
                    if let Some(d) = queue.pop() {
                        // Sent outside the lock: a full socket buffer must not hold the queue.
                        drop(queue);
                        let _ = d.socket.send_to(&d.data, d.to);
                        self.relayed.fetch_add(1, Ordering::Relaxed);
                        queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                    }
                }
                Some(d) => {
                    let wait = d.at - now;
                    queue = self
                        .wake
                        .wait_timeout(queue, wait)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                None => {
                    queue = self
                        .wake
                        .wait_timeout(queue, LINK_POLL)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }
}

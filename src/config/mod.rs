//! Gateway configuration: every option has an embedded default, so the binary runs with no file.
//!
//! `config/wishcast.example.toml` lists every option with its default and what it is for.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

mod auth;

pub use auth::{AuthConfig, AuthError, JwtConfig, StreamRule, WebhookConfig};

/// The whole configuration. `Config::default()` is what `wishcast` runs with when given no file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub http: HttpConfig,
    pub media: MediaConfig,
    pub limits: LimitsConfig,
    pub timeouts: TimeoutsConfig,
    pub tls: TlsConfig,
    pub http3: Http3Config,
    /// STUN/TURN servers announced to clients as `Link: <uri>; rel="ice-server"` (RFC 9725 §4.6).
    pub ice_servers: Vec<IceServer>,
    /// Bearer-token authorization of signalling and the API; off by default.
    pub auth: AuthConfig,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the HTTP signalling listener (WHIP, WHEP, session resources); `[::]:port`
    /// listens on IPv4 and IPv6.
    pub listen: SocketAddr,
    /// Largest accepted request body (SDP offers, sdpfrags), in bytes; larger gets 413.
    pub max_body_bytes: usize,
    /// Seconds advised in `Retry-After` on 409 (WHEP before a publisher) and 503 (limits).
    pub retry_after_secs: u32,
    /// An HTTP/1 connection whose request line and headers have not all arrived this long after
    /// it opened (or after its previous response) is closed: a slow client cannot hold a
    /// connection by trickling its headers.
    pub header_read_timeout_secs: f64,
    /// A request not answered this long after its headers arrived (its body still coming, say)
    /// gets 408 and its HTTP/1 connection is closed. Longer than the 10 s a handler waits for a
    /// shard, so a busy shard still answers 503.
    pub request_timeout_secs: f64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8080),
            max_body_bytes: 64 * 1024,
            retry_after_secs: 2,
            header_read_timeout_secs: 10.0,
            request_timeout_secs: 30.0,
        }
    }
}

impl HttpConfig {
    pub fn header_read_timeout(&self) -> Duration {
        bounded_secs(self.header_read_timeout_secs)
    }
    pub fn request_timeout(&self) -> Duration {
        bounded_secs(self.request_timeout_secs)
    }
}

/// `secs` from 0.1 s to a day; NaN (which `validate` refuses) as the least, never a panic.
fn bounded_secs(secs: f64) -> Duration {
    Duration::try_from_secs_f64(secs.clamp(0.1, 86_400.0)).unwrap_or(Duration::from_millis(100))
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// IP the shards' UDP sockets bind to. `::` binds both families on one socket per shard
    /// (dual-stack) and announces IPv4 and IPv6 host candidates; `0.0.0.0` is IPv4 only.
    pub bind_ip: IpAddr,
    /// First UDP port; shard `k` binds `udp_base_port + k`. 0 picks free ports (tests).
    pub udp_base_port: u16,
    /// ICE over TCP (RFC 6544, framed per RFC 4571): every answer also carries passive TCP
    /// host candidates on one TCP port per node, for clients whose UDP is blocked.
    pub ice_tcp: bool,
    /// That TCP port. 0 means the number of `udp_base_port` (a free port when that is 0 too).
    pub tcp_port: u16,
    /// Data-plane shards (threads, one UDP socket each). 0 means one per available core.
    pub shards: usize,
    /// Addresses announced as host candidates instead of the interface addresses: the public
    /// IPs of a 1:1 NAT or a Docker host. The candidate must equal where packets arrive.
    pub public_ips: Vec<IpAddr>,
    /// Announce loopback addresses too when binding a wildcard address (local testing).
    pub include_loopback: bool,
    /// With a wildcard bind and no `public_ips`, announce only the addresses of interfaces
    /// whose names match one of these globs (`eth*`, `ens?`); empty means every interface.
    pub interfaces: Vec<String>,
    /// ICE-lite instead of full ICE. RFC 9725 §4.4.5 allows it only when every client can reach
    /// the announced address directly.
    pub ice_lite: bool,
    /// Serve a joining viewer the packets since the last keyframe, so its first frame does not
    /// wait for the encoder's next keyframe.
    pub gop_cache: bool,
    /// Upper bound of packets kept per stream for the GOP cache; a longer GOP is not cached.
    pub gop_cache_max_packets: usize,
    /// Rate at which a joining viewer is sent the cached GOP, in kbit/s: fast enough that it
    /// catches up with live quickly, paced so the burst does not overflow its path or socket.
    pub gop_replay_kbps: u32,
    /// Video packets kept to answer viewers' NACKs with retransmissions: with the own egress
    /// in one history per stream and shard, shared by its viewers; on str0m's send path per
    /// viewer track (also at most 3 s old, and at least 10 whatever this says).
    pub resend_buffer_packets: usize,
    /// Send viewers' media from the gateway's own SRTP egress (header, SRTP, sender reports,
    /// NACK answers) instead of through str0m's send path, which costs several times more
    /// per packet and keeps a copy of every packet per viewer. str0m keeps ICE, DTLS and RTCP
    /// either way.
    pub direct_egress: bool,
    /// Least time between two keyframe requests (PLI) sent to one publisher, in milliseconds.
    /// When a PLI has had no keyframe after it, one retry may go after 300 ms when this is
    /// longer (the PLI or its keyframe may have been lost).
    pub keyframe_request_interval_ms: u64,
    /// Simulcast: the largest layer a viewer gets automatically is the largest whose measured
    /// bitrate is at most this, in kbit/s; 0 for no cap. It holds for every viewer, also one
    /// whose receiver reports say nothing of its path. A layer the viewer picks itself (WHEP
    /// layer selection) is not capped.
    pub max_viewer_kbps: u64,
    /// The largest playout delay viewers' players are told to keep, in milliseconds, by the
    /// playout-delay header extension (min 0) on video, where the viewer negotiated it; unset
    /// for none. 0 asks a browser to render each frame as soon as it is decoded, the lowest
    /// latency, with no smoothing of network jitter.
    pub playout_delay_max_ms: Option<u64>,
    /// Number the simulcast video the own egress sends with transport-wide sequence numbers,
    /// where the viewer negotiated them, and read the viewer's transport-wide feedback: a
    /// simulcast viewer whose path queues is moved to a smaller layer before the path drops
    /// packets. Costs such a viewer 4 KiB (what was sent, for the feedback to refer to) and
    /// the numbering; viewers of single-layer streams pay nothing.
    pub transport_cc: bool,
    /// How often each session's statistics (RTT, loss, bytes, packets, bit rates, NACKs and
    /// PLIs) are refreshed for the API and the feedback metrics, in seconds; 0 turns them off.
    /// They cost CPU per session: in one fan-out bench run, every second took up to 1.7x the
    /// engine time per packet; every 5 s was within run-to-run noise of off.
    pub stats_interval_secs: u64,
    /// Queue of media packets between shards; a full queue drops packets (and counts them)
    /// rather than blocking the sending shard.
    pub shard_queue_packets: usize,
}

impl MediaConfig {
    /// The ICE-TCP listener's port (see [`MediaConfig::tcp_port`]).
    pub fn ice_tcp_port(&self) -> u16 {
        match self.tcp_port {
            0 => self.udp_base_port,
            p => p,
        }
    }

    /// The shards' sockets take IPv4 and IPv6 (bound to `::`).
    pub fn dual_stack(&self) -> bool {
        self.bind_ip == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    }
}

impl Default for MediaConfig {
    fn default() -> Self {
        MediaConfig {
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            udp_base_port: 8189,
            ice_tcp: true,
            tcp_port: 0,
            shards: 0,
            public_ips: Vec::new(),
            include_loopback: true,
            interfaces: Vec::new(),
            ice_lite: false,
            gop_cache: true,
            gop_cache_max_packets: 4096,
            gop_replay_kbps: 16_000,
            resend_buffer_packets: 512,
            direct_egress: true,
            keyframe_request_interval_ms: 500,
            max_viewer_kbps: 0,
            playout_delay_max_ms: None,
            transport_cc: true,
            shard_queue_packets: 8192,
            stats_interval_secs: 5,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Sessions (publishers + viewers) the gateway serves at once; more get 503 + Retry-After.
    pub max_sessions: usize,
    /// Publishers at once, over all streams.
    pub max_publishers: usize,
    /// Viewers at once, over all streams.
    pub max_viewers: usize,
    /// Viewers of one stream at once.
    pub max_viewers_per_stream: usize,
    /// WHIP/WHEP POSTs one client IP may make per minute (0: no limit); more get 429.
    pub posts_per_minute_per_ip: u32,
    /// POSTs one client IP may make in a burst above that rate.
    pub post_burst_per_ip: u32,
    /// Admission control: a shard whose thread was busy this fraction of its last measurement
    /// window (0.5 s) takes no new session; when every shard is that busy, POSTs get 503 +
    /// Retry-After. 1 or more turns it off.
    pub max_shard_load: f64,
    /// Load shedding: a shard busy at least this fraction for `shed_after_secs` closes its
    /// newest viewers (DTLS close_notify, one in 32 per 0.5 s window) until it is below
    /// `max_shard_load` and 90 % of this, so the others keep the whole stream instead of every viewer losing
    /// packets. 1 or more turns it off.
    pub shed_shard_load: f64,
    /// How long a shard must stay at `shed_shard_load` before it sheds viewers, in seconds.
    pub shed_after_secs: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_sessions: 10_000,
            max_publishers: 1_000,
            max_viewers: 10_000,
            max_viewers_per_stream: 10_000,
            posts_per_minute_per_ip: 120,
            post_burst_per_ip: 30,
            max_shard_load: 0.85,
            shed_shard_load: 0.97,
            shed_after_secs: 2.0,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimeoutsConfig {
    /// A session that has not completed ICE + DTLS this long after its 201 is removed.
    pub connect_secs: f64,
    /// A session from whose peer nothing (media, RTCP, STUN) arrived this long is removed:
    /// consent freshness, RFC 7675 (30 s there).
    pub consent_secs: f64,
    /// Viewers of a stream whose publisher left wait this long for the next publisher's
    /// media, in the sessions they have; then they get the stream's end (RTCP BYE and DTLS
    /// close_notify) and are removed.
    pub publisher_grace_secs: f64,
    /// How long a WHEP counter-offer waits for the player's answer (its `valid-until`); an
    /// unanswered one is then removed. The draft's default when none is given is 30 s.
    pub counter_offer_secs: f64,
}

impl Default for TimeoutsConfig {
    fn default() -> Self {
        TimeoutsConfig {
            connect_secs: 20.0,
            consent_secs: 30.0,
            publisher_grace_secs: 10.0,
            counter_offer_secs: 30.0,
        }
    }
}

impl TimeoutsConfig {
    pub fn connect(&self) -> Duration {
        Duration::from_secs_f64(self.connect_secs.max(0.1))
    }
    pub fn consent(&self) -> Duration {
        Duration::from_secs_f64(self.consent_secs.max(0.1))
    }
    /// At least a second (a valid-until has a second's resolution), up to an hour; NaN as
    /// the draft's default of 30 s, never a panic.
    pub fn counter_offer(&self) -> Duration {
        let secs = if self.counter_offer_secs.is_nan() {
            30.0
        } else {
            self.counter_offer_secs.clamp(1.0, 3600.0)
        };
        Duration::from_secs_f64(secs)
    }
    /// Up to a day; NaN (which `validate` refuses) as none, never a panic.
    pub fn publisher_grace(&self) -> Duration {
        Duration::try_from_secs_f64(self.publisher_grace_secs.clamp(0.0, 86_400.0))
            .unwrap_or_default()
    }
}

/// HTTPS on the HTTP port (HTTP/1.1 and HTTP/2) and HTTP/3 on the same UDP port number.
/// Without a certificate (and without `self_signed`) signalling is plain HTTP/1.1.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: Option<String>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Option<String>,
    /// Generate a self-signed certificate for localhost at start (development only); its
    /// SHA-256 SPKI hash is printed for Chromium's `--ignore-certificate-errors-spki-list`.
    pub self_signed: bool,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        self.self_signed || (self.cert.is_some() && self.key.is_some())
    }
}

/// The HTTP/3 listener (only with TLS).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Http3Config {
    /// Serve HTTP/3 and announce it with `Alt-Svc` when TLS is on.
    pub enabled: bool,
    /// Requests one QUIC connection may have open at once.
    pub max_concurrent_streams: u32,
    /// A connection idle this long is closed, in seconds.
    pub idle_timeout_secs: u64,
    /// How long in-flight requests may take to finish at shutdown, in seconds.
    pub shutdown_drain_secs: u64,
}

impl Default for Http3Config {
    fn default() -> Self {
        Http3Config {
            enabled: true,
            max_concurrent_streams: 100,
            idle_timeout_secs: 30,
            shutdown_drain_secs: 5,
        }
    }
}

/// One STUN or TURN server for the `Link` header.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IceServer {
    /// `stun:host:port`, `turn:host:port?transport=udp`, `turns:…` (RFC 7064 / 7065).
    pub url: String,
    pub username: Option<String>,
    pub credential: Option<String>,
    /// Shared secret of a TURN server using the TURN REST API (coturn `use-auth-secret`): each
    /// answer then carries a fresh username `<expiry>:wishcast` and its HMAC-SHA1 credential.
    pub secret: Option<String>,
    /// Lifetime of such credentials, in seconds.
    #[serde(default = "default_turn_ttl")]
    pub ttl_secs: u64,
}

fn default_turn_ttl() -> u64 {
    86_400
}

impl IceServer {
    /// The username and credential to announce now: static ones, or ephemeral ones derived
    /// from the shared secret.
    pub fn credentials(&self, now_unix: u64) -> (Option<String>, Option<String>) {
        use base64::Engine as _;
        match &self.secret {
            Some(secret) => {
                let username = format!("{}:wishcast", now_unix + self.ttl_secs);
                let key = aws_lc_rs::hmac::Key::new(
                    aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
                    secret.as_bytes(),
                );
                let tag = aws_lc_rs::hmac::sign(&key, username.as_bytes());
                let credential = base64::engine::general_purpose::STANDARD.encode(tag.as_ref());
                (Some(username), Some(credential))
            }
            None => (self.username.clone(), self.credential.clone()),
        }
    }
}

/// A configuration file that cannot be used; the message names the key. A message about a key
/// that holds a secret (tokens, the JWT secret, the webhook URL, TURN secrets and credentials)
/// never shows its value, since startup errors end up in logs.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error("invalid configuration: {0}")]
    Auth(#[from] AuthError),
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

/// Prefix of environment variables that override options: `WISHCAST_MEDIA__SHARDS=4` sets
/// `[media] shards`, `WISHCAST_MEDIA__PUBLIC_IPS='["203.0.113.7"]'` a list.
pub const ENV_PREFIX: &str = "WISHCAST_";

impl Config {
    /// The configuration from an optional file with environment overrides on top; every value
    /// is checked and an unknown key or bad value names the file key or the variable.
    pub fn load(
        path: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_string(),
                source,
            })?,
            None => String::new(),
        };
        let mut table = parse_table(&text)?;
        // Checked file first, so an error there is not blamed on a variable.
        Config::from_table(table.clone())?;
        let mut vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        vars.sort();
        for (var, value) in vars {
            let path: Vec<String> = var[ENV_PREFIX.len()..]
                .split("__")
                .map(|p| p.to_ascii_lowercase())
                .collect();
            let env_err = |message: String| ConfigError::Env {
                var: var.clone(),
                message,
            };
            let (last, sections) = path
                .split_last()
                .ok_or_else(|| env_err("names no option".into()))?;
            let mut at = &mut table;
            for section in sections {
                at = at
                    .entry(section.clone())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                    .as_table_mut()
                    .ok_or_else(|| env_err(format!("{section} is not a section")))?;
            }
            at.insert(last.clone(), env_value(&value));
            Config::from_table(table.clone()).map_err(|e| env_err(e.to_string()))?;
        }
        Config::from_table(table)
    }

    /// Deserializes from a table rather than from text: toml's errors about text quote the
    /// offending line, whatever it holds, while errors about a table only name the key.
    fn from_table(table: toml::Table) -> Result<Config, ConfigError> {
        check_secret_types(&table)?;
        let config: Config = toml::Value::Table(table).try_into()?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::from_table(parse_table(text)?)
    }

    pub fn from_file(path: &str) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_string(),
            source,
        })?;
        Config::from_toml_str(&text)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if self.media.shards > 64 {
            return bad("media.shards: at most 64");
        }
        if self.media.gop_cache_max_packets == 0 {
            return bad("media.gop_cache_max_packets: must be at least 1");
        }
        if self.media.gop_replay_kbps < 100 {
            return bad("media.gop_replay_kbps: must be at least 100");
        }
        if self.media.shard_queue_packets == 0 {
            return bad("media.shard_queue_packets: must be at least 1");
        }
        let bind = self.media.bind_ip;
        let dual = self.media.dual_stack();
        if let Some(ip) = self
            .media
            .public_ips
            .iter()
            .find(|ip| !dual && ip.is_ipv4() != bind.is_ipv4())
        {
            return Err(ConfigError::Invalid(format!(
                "media.public_ips: {ip} cannot be reached on a socket bound to {bind}; \
                 bind_ip = \"::\" serves both families"
            )));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return bad("tls.cert and tls.key: give both or neither");
        }
        if self.http3.max_concurrent_streams == 0 {
            return bad("http3.max_concurrent_streams: must be at least 1");
        }
        if self.http.max_body_bytes < 1024 {
            return bad("http.max_body_bytes: must be at least 1024");
        }
        for (name, secs) in [
            (
                "http.header_read_timeout_secs",
                self.http.header_read_timeout_secs,
            ),
            ("http.request_timeout_secs", self.http.request_timeout_secs),
        ] {
            if !(0.1..=86_400.0).contains(&secs) {
                return Err(ConfigError::Invalid(format!(
                    "{name}: must be from 0.1 to 86400 seconds"
                )));
            }
        }
        let grace = self.timeouts.publisher_grace_secs;
        if !(0.0..=86_400.0).contains(&grace) {
            return bad("timeouts.publisher_grace_secs: must be from 0 to 86400 seconds");
        }
        if !(1.0..=3600.0).contains(&self.timeouts.counter_offer_secs) {
            return bad("timeouts.counter_offer_secs: must be from 1 to 3600 seconds");
        }
        self.auth.validate()?;
        for s in &self.ice_servers {
            let scheme = s.url.split(':').next().unwrap_or("");
            if !matches!(scheme, "stun" | "stuns" | "turn" | "turns") {
                return Err(ConfigError::Invalid(format!(
                    "ice_servers.url: {:?} is not a stun:, stuns:, turn: or turns: URI",
                    s.url
                )));
            }
        }
        Ok(())
    }

    /// Shard count with 0 resolved to the number of cores.
    pub fn shard_count(&self) -> usize {
        if self.media.shards > 0 {
            return self.media.shards;
        }
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(64)
    }
}

/// The text as a TOML table. A syntax error gives its line, column and message, and quotes the
/// line only outside the `auth` and `ice_servers` sections, where no secret can be.
fn parse_table(text: &str) -> Result<toml::Table, ConfigError> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let message = e.message().trim_end().replace('\n', "; ");
        let Some(start) = e.span().map(|s| s.start) else {
            return ConfigError::Invalid(format!("TOML syntax error: {message}"));
        };
        let before = text.get(..start).unwrap_or(text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = text[line_start..].lines().next().unwrap_or("");
        let number = before.matches('\n').count() + 1;
        let column = before[line_start..].chars().count() + 1;
        let section = before[..line_start]
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| l.starts_with('['));
        let quoted = if line_may_be_quoted(section, line) {
            format!(" in `{}`", line.trim())
        } else {
            String::new()
        };
        ConfigError::Invalid(format!(
            "TOML syntax error at line {number}, column {column}{quoted}: {message}"
        ))
    })
}

/// Whether a line may appear in an error: a table header or a `key = value` line, not inside
/// or about the sections that hold secrets. Continuation lines of a multi-line value are not
/// shown, since their key is elsewhere.
fn line_may_be_quoted(section: Option<&str>, line: &str) -> bool {
    let secret_section = |name: &str| {
        let name = name.trim_matches(|c: char| c == '[' || c == ']' || c.is_whitespace());
        let top = name
            .split('.')
            .next()
            .unwrap_or("")
            .trim_matches(['"', '\'']);
        top == "auth" || top == "ice_servers"
    };
    if section.is_some_and(secret_section) {
        return false;
    }
    let line = line.trim();
    if line.starts_with('[') {
        return !secret_section(line);
    }
    let Some((key, _)) = line.split_once('=') else {
        return false;
    };
    let bare = key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c));
    bare && !secret_section(key)
}

/// Where secrets sit in the configuration, and the TOML type each must have.
enum Shape {
    Str,
    /// One token or a list of them.
    Tokens,
}

/// Checks the type of every secret-bearing key before deserializing, so that a wrong type is
/// reported by key alone: serde's message would show the value (`invalid type: integer
/// `12345``). The tables that hold them must be tables, for the same reason.
fn check_secret_types(root: &toml::Table) -> Result<(), ConfigError> {
    use toml::Value;
    fn wrong(path: &str, expected: &str) -> ConfigError {
        ConfigError::Invalid(format!("{path}: expected {expected} (value not shown)"))
    }
    fn keys(t: &toml::Table, at: &str, list: &[(&str, Shape)]) -> Result<(), ConfigError> {
        for (key, shape) in list {
            let ok = match (t.get(*key), shape) {
                (None, _) | (Some(Value::String(_)), _) => true,
                (Some(Value::Array(a)), Shape::Tokens) => a.iter().all(Value::is_str),
                _ => false,
            };
            if !ok {
                let expected = match shape {
                    Shape::Str => "a string",
                    Shape::Tokens => "a token or a list of tokens",
                };
                return Err(wrong(&format!("{at}.{key}"), expected));
            }
        }
        Ok(())
    }
    fn table<'a>(v: Option<&'a Value>, path: &str) -> Result<Option<&'a toml::Table>, ConfigError> {
        match v {
            None => Ok(None),
            Some(Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(wrong(path, "a table")),
        }
    }
    fn tables<'a>(v: Option<&'a Value>, path: &str) -> Result<Vec<&'a toml::Table>, ConfigError> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|e| {
                    e.as_table()
                        .ok_or_else(|| wrong(path, "an array of tables"))
                })
                .collect(),
            Some(_) => Err(wrong(path, "an array of tables")),
        }
    }
    if let Some(auth) = table(root.get("auth"), "auth")? {
        keys(auth, "auth", &[("admin_tokens", Shape::Tokens)])?;
        for (i, rule) in tables(auth.get("streams"), "auth.streams")?
            .into_iter()
            .enumerate()
        {
            let tokens = [
                ("publish_tokens", Shape::Tokens),
                ("play_tokens", Shape::Tokens),
            ];
            keys(rule, &format!("auth.streams[{i}]"), &tokens)?;
        }
        if let Some(jwt) = table(auth.get("jwt"), "auth.jwt")? {
            keys(jwt, "auth.jwt", &[("hs256_secret", Shape::Str)])?;
        }
        if let Some(hook) = table(auth.get("webhook"), "auth.webhook")? {
            keys(hook, "auth.webhook", &[("url", Shape::Str)])?;
        }
    }
    for (i, server) in tables(root.get("ice_servers"), "ice_servers")?
        .into_iter()
        .enumerate()
    {
        let secrets = [("secret", Shape::Str), ("credential", Shape::Str)];
        keys(server, &format!("ice_servers[{i}]"), &secrets)?;
    }
    Ok(())
}

/// A variable's value as TOML (numbers, booleans, lists, quoted strings), else as a string.
fn env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn environment_overrides_the_file_and_names_bad_variables() {
        let c = Config::load(
            None,
            vars(&[
                ("WISHCAST_MEDIA__SHARDS", "3"),
                ("WISHCAST_MEDIA__PUBLIC_IPS", "[\"203.0.113.7\"]"),
                ("WISHCAST_HTTP__LISTEN", "127.0.0.1:9000"),
                ("WISHCAST_MEDIA__ICE_LITE", "true"),
                (
                    "WISHCAST_SOMETHING_ELSE",
                    "ignored without a section separator",
                ),
            ]),
        )
        .expect("overrides apply");
        assert_eq!(c.media.shards, 3);
        assert_eq!(
            c.media.public_ips,
            vec!["203.0.113.7".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(c.http.listen.port(), 9000);
        assert!(c.media.ice_lite);
        let e = Config::load(None, vars(&[("WISHCAST_MEDIA__SHARDZ", "2")])).expect_err("unknown");
        assert!(e.to_string().contains("WISHCAST_MEDIA__SHARDZ"), "{e}");
        let e = Config::load(None, vars(&[("WISHCAST_MEDIA__SHARDS", "many")])).expect_err("bad");
        assert!(e.to_string().contains("WISHCAST_MEDIA__SHARDS"), "{e}");
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = Config::from_toml_str("").expect("defaults");
        assert_eq!(c.http.listen.port(), 8080);
        assert_eq!(c.media.udp_base_port, 8189);
        assert!(!c.media.ice_lite);
    }

    /// The annotated example lists every option with its default: it parses to `default()`.
    #[test]
    fn example_file_is_the_defaults() {
        let text = include_str!("../../config/wishcast.example.toml");
        let c = Config::from_toml_str(text).expect("example parses");
        assert_eq!(format!("{c:?}"), format!("{:?}", Config::default()));
        // ...and names every key the configuration has.
        let listed: toml::Table = toml::from_str(text).expect("toml");
        let all: toml::Table =
            toml::from_str(&toml::to_string(&Config::default()).expect("serialize")).expect("toml");
        for (section, keys) in &all {
            let Some(keys) = keys.as_table() else {
                continue;
            };
            for key in keys.keys() {
                let found = listed
                    .get(section)
                    .and_then(|s| s.as_table())
                    .is_some_and(|s| s.contains_key(key));
                assert!(
                    found,
                    "config/wishcast.example.toml lacks [{section}] {key}"
                );
            }
        }
    }

    /// coturn's TURN REST scheme: HMAC-SHA1 over the username, base64. Checked against the
    /// RFC 2202-style vector HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog").
    #[test]
    fn turn_rest_credentials() {
        let s = IceServer {
            url: "turn:turn.example.net".into(),
            username: None,
            credential: None,
            secret: Some("key".into()),
            ttl_secs: 3600,
        };
        let (user, cred) = s.credentials(1_000);
        assert_eq!(user.as_deref(), Some("4600:wishcast"));
        // Computed independently: base64(hmac.new(b"key", b"4600:wishcast", sha1).digest()).
        assert_eq!(cred.as_deref(), Some("t/hYPq7eC0sUCjwXKkfm3gSV+Ik="));
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, b"key");
        let tag = aws_lc_rs::hmac::sign(&key, b"The quick brown fox jumps over the lazy dog");
        let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml_str("[media]\nshardz = 2\n").expect_err("unknown key");
        assert!(e.to_string().contains("shardz"), "{e}");
    }

    #[test]
    fn public_ips_must_be_of_a_family_the_socket_takes() {
        let e = Config::from_toml_str(
            "[media]\nbind_ip = \"0.0.0.0\"\npublic_ips = [\"2001:db8::7\"]\n",
        )
        .expect_err("IPv6 on an IPv4 socket");
        assert!(
            e.to_string().contains("media.public_ips: 2001:db8::7"),
            "{e}"
        );
        let dual = Config::from_toml_str(
            "[media]\nbind_ip = \"::\"\npublic_ips = [\"203.0.113.7\", \"2001:db8::7\"]\n",
        )
        .expect("both families on a dual-stack socket");
        assert!(dual.media.dual_stack());
    }

    #[test]
    fn http_timeouts_out_of_range_are_refused_by_name() {
        for (text, key) in [
            (
                "[http]\nheader_read_timeout_secs = 0.0\n",
                "header_read_timeout_secs",
            ),
            (
                "[http]\nrequest_timeout_secs = nan\n",
                "request_timeout_secs",
            ),
            (
                "[http]\nrequest_timeout_secs = 1e9\n",
                "request_timeout_secs",
            ),
        ] {
            let e = Config::from_toml_str(text).expect_err(text);
            assert!(e.to_string().contains(key), "{e}");
        }
        let ok = Config::from_toml_str("[http]\nheader_read_timeout_secs = 2.5\n").expect("ok");
        assert_eq!(ok.http.header_read_timeout(), Duration::from_millis(2500));
        // Built in code, past validation: still a duration, never a panic.
        let mut c = Config::default();
        c.http.request_timeout_secs = f64::NAN;
        assert_eq!(c.http.request_timeout(), Duration::from_millis(100));
    }

    /// A secret written with the wrong type, in the file or in the environment: the error
    /// names the key (and the variable) but never shows the value.
    #[test]
    fn errors_about_secrets_name_the_key_not_the_value() {
        let files = [
            (
                "[auth.jwt]\nhs256_secret = 918273645546372819\n",
                "auth.jwt.hs256_secret",
                "918273645546372819",
            ),
            (
                "[auth]\njwt = { hs256_secret = 31415926535 }\n",
                "auth.jwt.hs256_secret",
                "31415926535",
            ),
            (
                "[auth]\nadmin_tokens = 55443322\n",
                "auth.admin_tokens",
                "55443322",
            ),
            (
                "[auth]\nadmin_tokens = [\"ok-token\", 66778899]\n",
                "auth.admin_tokens",
                "ok-token",
            ),
            (
                "[[auth.streams]]\npattern = \"x\"\npublish_tokens = 77665544\n",
                "auth.streams[0].publish_tokens",
                "77665544",
            ),
            (
                "[[auth.streams]]\npattern = \"x\"\nplay_tokens = 2020.5\n",
                "auth.streams[0].play_tokens",
                "2020.5",
            ),
            (
                "[auth.webhook]\nurl = 12121212\n",
                "auth.webhook.url",
                "12121212",
            ),
            (
                "[[ice_servers]]\nurl = \"turn:t.example\"\ncredential = 99887766\n",
                "ice_servers[0].credential",
                "99887766",
            ),
            (
                "[[ice_servers]]\nurl = \"turn:t.example\"\nsecret = 1979-05-27\n",
                "ice_servers[0].secret",
                "1979",
            ),
            ("[auth]\njwt = 4242424242\n", "auth.jwt", "4242424242"),
        ];
        for (text, key, value) in files {
            let e = Config::from_toml_str(text)
                .expect_err("wrong type")
                .to_string();
            assert!(e.contains(key), "{text:?}: {e}");
            assert!(!e.contains(value), "{text:?} shows the value: {e}");
        }
        let envs = [
            (
                "WISHCAST_AUTH__JWT__HS256_SECRET",
                "918273645546372819",
                "auth.jwt.hs256_secret",
            ),
            (
                "WISHCAST_AUTH__ADMIN_TOKENS",
                "[\"t-1\", 31337]",
                "auth.admin_tokens",
            ),
            (
                "WISHCAST_AUTH__JWT",
                "{ hs256_secret = 27182818284 }",
                "auth.jwt.hs256_secret",
            ),
        ];
        for (var, value, key) in envs {
            let e = Config::load(None, vars(&[(var, value)]))
                .expect_err("wrong type")
                .to_string();
            assert!(e.contains(var) && e.contains(key), "{e}");
            for part in ["918273645546372819", "31337", "27182818284", "t-1"] {
                assert!(!e.contains(part), "{var} shows the value: {e}");
            }
        }
        // Secrets of the right type still load.
        let c = Config::load(
            None,
            vars(&[("WISHCAST_AUTH__ADMIN_TOKENS", "[\"t-1\", \"t-2\"]")]),
        )
        .expect("tokens");
        assert_eq!(c.auth.admin_tokens, ["t-1", "t-2"]);
    }

    /// toml quotes the line of a syntax error; under `[auth]` or `[[ice_servers]]` the message
    /// gives its position only, elsewhere the line too.
    #[test]
    fn syntax_errors_quote_no_line_that_may_hold_a_secret() {
        let cases = [
            "[auth]\nenabled = true\nadmin_tokens = [\"s3cret-0a9b\n",
            "[auth]\nadmin_tokens = [\n  \"s3cret-0a9b\",\n  s3cret-0a9b\n]\n",
            "[[ice_servers]]\nurl = \"turn:x\"\ncredential = s3cret-0a9b\n",
            "auth.jwt.hs256_secret = s3cret-0a9b\n",
            "[media]\nshards = 2\n[auth.webhook]\nurl = \"http://h/?k=s3cret-0a9b\n",
        ];
        for text in cases {
            let e = Config::from_toml_str(text).expect_err("syntax").to_string();
            assert!(e.contains("line "), "{text:?}: {e}");
            assert!(!e.contains("s3cret-0a9b"), "{text:?} shows the secret: {e}");
        }
        let e = Config::from_toml_str("[media]\nshards = 2x\n").expect_err("syntax");
        let e = e.to_string();
        assert!(e.contains("line 2") && e.contains("shards = 2x"), "{e}");
        let e = Config::load(None, vars(&[("WISHCAST_MEDIA__SHARDS", "\"x\"")]));
        assert!(e.expect_err("type").to_string().contains("media.shards"));
    }

    #[test]
    fn bad_ice_server_scheme_is_rejected() {
        let e = Config::from_toml_str("[[ice_servers]]\nurl = \"http://x\"\n").expect_err("bad");
        assert!(e.to_string().contains("ice_servers.url"), "{e}");
    }
}

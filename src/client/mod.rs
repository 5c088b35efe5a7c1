//! WHIP/WHEP client on str0m over real UDP, for integration tests and examples.
//!
//! Each [`Peer`] is a [`PeerCore`] on one UDP socket, run by one std thread on the real clock.
//! The async API talks to that thread through a command channel; a one-byte datagram the socket
//! sends to itself wakes the loop, so commands never wait for a socket read timeout.

pub mod h3;
pub mod http;
pub mod impair;
pub mod load;

use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use str0m::media::{KeyframeRequestKind, MediaKind};
use tokio::sync::{mpsc, watch};

pub use crate::peer::{LinkState, PeerOptions, PeerStats, ReceivedFrame, VideoCodec};
use crate::peer::{PeerCore, PeerError};
use crate::sdp::Fragment;
use crate::session::Role;

/// Received frames kept for [`Peer::next_frame`]; newer frames are dropped
/// (and counted) when a test does not read them.
pub const FRAME_QUEUE: usize = 8192;
/// Longest the IO loop sleeps in a socket read; commands wake it earlier.
const MAX_WAIT: Duration = Duration::from_millis(50);
/// Receive buffer; larger than any WebRTC datagram.
const RECV_BUF: usize = 4096;

/// How a client peer reaches the endpoint, around what it offers.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// What the peer offers and keeps.
    pub peer: PeerOptions,
    /// Local address for the UDP socket and the host candidate. If unspecified
    /// (`0.0.0.0`/`::`), the address routing to the endpoint host is used,
    /// because a host candidate cannot be a wildcard.
    pub bind_ip: IpAddr,
    /// Sent as `Authorization: Bearer <token>` on POST, PATCH and DELETE.
    pub bearer: Option<String>,
    /// Signalling (POST, PATCH, DELETE) over HTTP/3 through this client, for `https://` URLs
    /// of a gateway's QUIC listener; plain HTTP/1.1 if `None`.
    pub h3: Option<Arc<h3::H3Client>>,
    /// Reach the endpoint's media candidates through this relay (delay and reordering).
    pub relay: Option<Arc<impair::Relay>>,
    /// Offer without `a=group:BUNDLE`, as GStreamer's webrtcbin offers a single track. The
    /// peer's str0m wants a group in the answer, which must have none (RFC 8843 §7.3): it
    /// reads the answer with a group of its m-section added, while [`Peer::answer_sdp`]
    /// keeps the answer as it came.
    pub unbundled: bool,
    /// The peer's DTLS certificate, e.g. [`crate::dtls::rsa_certificate`] to connect as
    /// GStreamer's webrtcbin does; str0m makes an ECDSA one if `None`.
    pub dtls_cert: Option<str0m::config::DtlsCert>,
    /// ICE over TCP only: one active TCP candidate (RFC 6544) and no UDP one, as a client
    /// whose UDP is blocked offers. Media then runs over one TCP connection to the endpoint's
    /// passive candidate, framed per RFC 4571.
    pub tcp: bool,
    /// Viewer: video codecs it also accepts when it answers a counter-offer (a WHEP 406),
    /// beyond the one it offered.
    pub answer_codecs: Vec<VideoCodec>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions::from(PeerOptions::default())
    }
}

impl From<PeerOptions> for ClientOptions {
    /// `peer` over plain HTTP/1.1 from the routing address, without a token.
    fn from(peer: PeerOptions) -> Self {
        ClientOptions {
            peer,
            bind_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            bearer: None,
            h3: None,
            relay: None,
            unbundled: false,
            dtls_cert: None,
            tcp: false,
            answer_codecs: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Non-success status where one was required.
    #[error("HTTP status {status}: {body}")]
    Http { status: u16, body: String },
    #[error("SDP: {0}")]
    Sdp(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebRTC: {0}")]
    Rtc(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Malformed URL, method or header given by the caller.
    #[error("invalid request: {0}")]
    Url(String),
    /// Connection-level HTTP failure (refused, reset, malformed response).
    #[error("HTTP transport: {0}")]
    Transport(String),
    /// Unusable TLS setup on the client side (e.g. an invalid root certificate).
    #[error("TLS: {0}")]
    Tls(String),
    /// A 201 that breaks the WHIP/WHEP contract (e.g. no `Location`).
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// `send_frame` before ICE+DTLS completed (str0m would drop the frame).
    #[error("not connected")]
    NotConnected,
    /// The IO loop has ended (stopped, closed by remote, or failed).
    #[error("peer closed: {0}")]
    Closed(String),
}

impl From<PeerError> for ClientError {
    fn from(e: PeerError) -> Self {
        match e {
            PeerError::NotConnected => ClientError::NotConnected,
            PeerError::Closed(reason) => ClientError::Closed(reason),
            PeerError::NoPendingOffer => ClientError::Protocol("no ICE restart in progress".into()),
            PeerError::NoOffer | PeerError::Answer(_) => ClientError::Sdp(e.to_string()),
            e => ClientError::Rtc(e.to_string()),
        }
    }
}

enum Command {
    Write {
        kind: MediaKind,
        rid: Option<String>,
        rtp_time: u64,
        data: Arc<[u8]>,
    },
    RequestKeyframe(KeyframeRequestKind),
    /// Start an ICE restart: reply with the new local fragment (credentials and candidates).
    RestartIce(tokio::sync::oneshot::Sender<Result<Fragment, ClientError>>),
    /// Finish it with the remote's new fragment.
    RestartIceAnswer {
        fragment: Fragment,
        reply: tokio::sync::oneshot::Sender<Result<(), ClientError>>,
    },
    Stop {
        graceful: bool,
    },
    /// Stop reading the socket and sending, until stopped.
    Freeze,
}

/// State shared between the IO loop and the handle, copied from the core after every step.
struct Shared {
    connected: AtomicBool,
    stats: Mutex<PeerStats>,
    state: watch::Sender<LinkState>,
}

impl Shared {
    fn set_state(&self, s: LinkState) {
        self.connected
            .store(s == LinkState::Connected, Ordering::SeqCst);
        self.state.send_replace(s);
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, PeerStats> {
        // Plain counters: a panic elsewhere cannot leave them half-written.
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A WHIP publisher or WHEP viewer session.
pub struct Peer {
    role: Role,
    location: String,
    etag: Option<String>,
    offer_sdp: String,
    answer_sdp: String,
    posted_at: Instant,
    bearer: Option<String>,
    h3: Option<Arc<h3::H3Client>>,
    local_addr: SocketAddr,
    has_video: bool,
    has_audio: bool,
    commands: std_mpsc::Sender<Command>,
    waker: UdpSocket,
    frames: mpsc::Receiver<ReceivedFrame>,
    shared: Arc<Shared>,
    state: watch::Receiver<LinkState>,
    thread: Option<JoinHandle<()>>,
    stopped: bool,
}

impl Peer {
    /// POST a sendonly offer (video then audio per `opts`) to a WHIP endpoint,
    /// apply the 201 answer and start media IO.
    pub async fn publish(
        endpoint_url: &str,
        opts: impl Into<ClientOptions>,
    ) -> Result<Peer, ClientError> {
        Peer::start(Role::Publish, endpoint_url, opts.into()).await
    }

    /// POST a recvonly offer to a WHEP endpoint. A counter-offer (406) is answered by PATCH,
    /// as the WHEP draft requires of players, with the codecs of the options and
    /// [`ClientOptions::answer_codecs`].
    pub async fn play(
        endpoint_url: &str,
        opts: impl Into<ClientOptions>,
    ) -> Result<Peer, ClientError> {
        Peer::start(Role::Play, endpoint_url, opts.into()).await
    }

    async fn start(
        role: Role,
        endpoint_url: &str,
        opts: ClientOptions,
    ) -> Result<Peer, ClientError> {
        let (has_video, has_audio) = (opts.peer.video.is_some(), opts.peer.audio);
        if !has_video && !has_audio {
            return Err(ClientError::Rtc(
                "options request neither video nor audio".into(),
            ));
        }
        let socket = bind_socket(endpoint_url, opts.bind_ip)?;
        let local_addr = socket.local_addr()?;
        let Negotiated {
            core,
            location,
            etag,
            offer_sdp,
            answer_sdp,
            posted_at,
        } = negotiate(role, endpoint_url, &opts, local_addr).await?;

        let (state_tx, state_rx) = watch::channel(LinkState::Connecting);
        let shared = Arc::new(Shared {
            connected: AtomicBool::new(false),
            stats: Mutex::new(PeerStats::default()),
            state: state_tx,
        });
        let (cmd_tx, cmd_rx) = std_mpsc::channel();
        let (frame_tx, frame_rx) = mpsc::channel(FRAME_QUEUE);
        let waker = socket.try_clone()?;
        let io = IoLoop {
            core,
            socket,
            local_addr,
            tcp: opts.tcp.then(|| TcpLink {
                local: SocketAddr::new(local_addr.ip(), crate::peer::TCP_ACTIVE_PORT),
                conn: None,
                buf: Vec::new(),
            }),
            commands: cmd_rx,
            frames: frame_tx,
            frames_dropped: 0,
            shared: shared.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("peer-{}", local_addr.port()))
            .spawn(move || io.run())?;

        Ok(Peer {
            role,
            location,
            etag,
            offer_sdp,
            answer_sdp,
            posted_at,
            bearer: opts.bearer,
            h3: opts.h3,
            local_addr,
            has_video,
            has_audio,
            commands: cmd_tx,
            waker,
            frames: frame_rx,
            shared,
            state: state_rx,
            thread: Some(thread),
            stopped: false,
        })
    }

    /// Absolute session URL (a relative `Location` resolved against the endpoint).
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The offer as it was POSTed.
    pub fn offer_sdp(&self) -> &str {
        &self.offer_sdp
    }

    pub fn answer_sdp(&self) -> &str {
        &self.answer_sdp
    }

    /// When the 201 response arrived.
    pub fn posted_at(&self) -> Instant {
        self.posted_at
    }

    /// Local UDP address (also the only ICE host candidate).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Current link state.
    pub fn state(&self) -> LinkState {
        self.state.borrow().clone()
    }

    /// Wait until ICE and DTLS are up (`Event::Connected`).
    pub async fn wait_connected(&self, timeout: Duration) -> Result<(), ClientError> {
        let reached = self
            .wait_state(timeout, |s| {
                matches!(s, LinkState::Connected | LinkState::Closed(_))
            })
            .await
            .ok_or(ClientError::Timeout("ICE/DTLS connection"))?;
        match reached {
            LinkState::Closed(reason) => Err(ClientError::Closed(reason)),
            _ => Ok(()),
        }
    }

    /// Wait until the link leaves `Connected` (ICE disconnect or close), e.g.
    /// after the gateway ends the session.
    pub async fn wait_disconnected(&self, timeout: Duration) -> Result<LinkState, ClientError> {
        self.wait_state(timeout, |s| {
            matches!(s, LinkState::Disconnected | LinkState::Closed(_))
        })
        .await
        .ok_or(ClientError::Timeout("disconnect"))
    }

    /// First state matching `pred`, or `None` on timeout.
    async fn wait_state(
        &self,
        timeout: Duration,
        pred: impl FnMut(&LinkState) -> bool,
    ) -> Option<LinkState> {
        let mut rx = self.state.clone();
        let reached = tokio::time::timeout(timeout, rx.wait_for(pred)).await;
        match reached {
            Err(_) => None,
            Ok(Ok(state)) => Some(state.clone()),
            // The sender lives in `Shared`, which this handle keeps alive.
            Ok(Err(_)) => Some(LinkState::Closed("IO loop gone".into())),
        }
    }

    /// Publisher: queue one encoded frame; str0m packetizes it.
    ///
    /// `rtp_time` is in the codec clock (90 kHz video, 48 kHz Opus); the wire carries its low
    /// 32 bits.
    /// Fails with [`ClientError::NotConnected`] before `Event::Connected`,
    /// because str0m silently drops earlier writes. The write itself happens
    /// on the IO thread; its failures are counted in [`PeerStats::write_errors`].
    pub fn send_frame(
        &self,
        kind: MediaKind,
        rtp_time: u64,
        data: impl Into<Arc<[u8]>>,
    ) -> Result<(), ClientError> {
        self.send_layer_frame(kind, None, rtp_time, data)
    }

    /// [`Peer::send_frame`] on one simulcast layer, by rid (`PeerOptions::simulcast`).
    pub fn send_layer_frame(
        &self,
        kind: MediaKind,
        rid: Option<String>,
        rtp_time: u64,
        data: impl Into<Arc<[u8]>>,
    ) -> Result<(), ClientError> {
        if self.role != Role::Publish {
            return Err(ClientError::Rtc(
                "a WHEP viewer has no sending track".into(),
            ));
        }
        let has_track = match kind {
            MediaKind::Video => self.has_video,
            MediaKind::Audio => self.has_audio,
        };
        if !has_track {
            return Err(ClientError::Rtc(format!("no {kind:?} track negotiated")));
        }
        self.ensure_running()?;
        if !self.is_connected() {
            return Err(ClientError::NotConnected);
        }
        self.command(Command::Write {
            kind,
            rid,
            rtp_time,
            data: data.into(),
        })
    }

    /// Viewer: ask the sender for a keyframe (RTCP PLI) on the video track.
    pub fn request_keyframe(&self) -> Result<(), ClientError> {
        self.request_keyframe_kind(KeyframeRequestKind::Pli)
    }

    /// Viewer: ask for a keyframe with PLI or FIR.
    pub fn request_keyframe_kind(&self, kind: KeyframeRequestKind) -> Result<(), ClientError> {
        if self.role != Role::Play || !self.has_video {
            return Err(ClientError::Rtc(
                "keyframe requests need a receiving video track".into(),
            ));
        }
        self.ensure_running()?;
        if !self.is_connected() {
            return Err(ClientError::NotConnected);
        }
        self.command(Command::RequestKeyframe(kind))
    }

    /// Viewer: next depacketized frame, or `None` on timeout or after the loop ended
    /// and the queue is empty.
    pub async fn next_frame(&mut self, timeout: Duration) -> Option<ReceivedFrame> {
        tokio::time::timeout(timeout, self.frames.recv())
            .await
            .ok()
            .flatten()
    }

    /// Frames already queued, without waiting.
    pub fn try_next_frame(&mut self) -> Option<ReceivedFrame> {
        self.frames.try_recv().ok()
    }

    /// Publisher: keyframe requests (PLI/FIR) received from the gateway.
    pub fn keyframe_requests(&self) -> u64 {
        self.shared.stats().keyframe_requests
    }

    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::SeqCst)
    }

    pub fn stats(&self) -> PeerStats {
        *self.shared.stats()
    }

    /// DELETE the session URL and return the HTTP status (any status, no
    /// error for 4xx/5xx). Then closes the WebRTC session gracefully (RTCP BYE,
    /// DTLS close_notify), after the DELETE so the gateway sees the DELETE first.
    pub async fn delete(mut self) -> Result<u16, ClientError> {
        let auth = self.bearer.as_ref().map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("authorization", a)])
            .unwrap_or_default();
        let result = signal(
            self.h3.as_deref(),
            "DELETE",
            &self.location,
            &headers,
            Vec::new(),
        )
        .await;
        self.stop(true);
        result.map(|r| r.status)
    }

    /// ICE restart over WHIP/WHEP (RFC 9725 §4.3.3): new local credentials PATCHed with
    /// `If-Match: "*"`; the 200's fragment becomes the remote side and its ETag the session's.
    pub async fn restart_ice(&mut self) -> Result<(), ClientError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.command(Command::RestartIce(tx))?;
        let local = rx
            .await
            .map_err(|_| ClientError::Closed("IO loop ended".into()))??;
        let mut body = String::new();
        if let (Some(u), Some(p)) = (&local.ufrag, &local.pwd) {
            body.push_str(&format!("a=ice-ufrag:{u}\r\na=ice-pwd:{p}\r\n"));
        }
        for c in &local.candidates {
            body.push_str(&format!("a={c}\r\n"));
        }
        let auth = self.bearer.as_ref().map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("content-type", "application/trickle-ice-sdpfrag"),
            ("if-match", "*"),
        ];
        if let Some(a) = auth.as_deref() {
            headers.push(("authorization", a));
        }
        let resp = signal(
            self.h3.as_deref(),
            "PATCH",
            &self.location,
            &headers,
            body.into_bytes(),
        )
        .await?;
        if resp.status != 200 {
            return Err(ClientError::Http {
                status: resp.status,
                body: resp.text(),
            });
        }
        self.etag = resp.header("etag").map(str::to_string);
        let remote = Fragment::parse(&resp.text()).map_err(|e| ClientError::Sdp(e.to_string()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.command(Command::RestartIceAnswer {
            fragment: remote,
            reply: tx,
        })?;
        rx.await
            .map_err(|_| ClientError::Closed("IO loop ended".into()))?
    }

    /// End the session with DTLS close_notify / RTCP BYE but no DELETE.
    pub fn close(mut self) {
        self.stop(true);
        self.join();
    }

    /// Stop reading the socket and sending anything, consent answers included, until the
    /// peer is dropped: a hung client whose socket buffer fills up.
    pub fn freeze(&self) -> Result<(), ClientError> {
        self.command(Command::Freeze)
    }

    /// Stop the IO loop abruptly: no DELETE, no BYE, no close_notify (a
    /// crashed client). Returns once the loop has stopped sending.
    pub fn kill(mut self) {
        self.stop(false);
        self.join();
    }

    fn stop(&mut self, graceful: bool) {
        if !self.stopped {
            self.stopped = true;
            // Ignored if the loop has already ended.
            let _ = self.command(Command::Stop { graceful });
        }
    }

    fn join(&mut self) {
        if let Some(t) = self.thread.take() {
            // A panic was already reported as LinkState::Closed.
            let _ = t.join();
        }
    }

    fn ensure_running(&self) -> Result<(), ClientError> {
        match &*self.state.borrow() {
            LinkState::Closed(reason) => Err(ClientError::Closed(reason.clone())),
            _ => Ok(()),
        }
    }

    fn command(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands
            .send(cmd)
            .map_err(|_| ClientError::Closed("IO loop gone".into()))?;
        // Wake the loop out of its socket read; loss only delays the command.
        let _ = self.waker.send_to(&[0], self.local_addr);
        Ok(())
    }
}

impl Drop for Peer {
    /// Dropping without `delete` behaves like `kill`, minus waiting for the thread.
    fn drop(&mut self) {
        self.stop(false);
    }
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("role", &self.role)
            .field("location", &self.location)
            .field("local_addr", &self.local_addr)
            .field("state", &*self.state.borrow())
            .finish()
    }
}

/// One signalling request, over HTTP/3 if the peer has a client for it.
async fn signal(
    h3: Option<&h3::H3Client>,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Result<http::Response, ClientError> {
    match h3 {
        Some(client) => client.request(method, url, headers, body).await,
        None => http::request(method, url, headers, body).await,
    }
}

/// A UDP socket on `bind_ip`, or on the address routing to the endpoint's host if that is
/// unspecified, because a host candidate cannot be a wildcard.
pub(crate) fn bind_socket(endpoint_url: &str, bind_ip: IpAddr) -> Result<UdpSocket, ClientError> {
    let ip = if bind_ip.is_unspecified() {
        route_ip(endpoint_url, bind_ip)?
    } else {
        bind_ip
    };
    Ok(UdpSocket::bind(SocketAddr::new(ip, 0))?)
}

/// A session the endpoint accepted: the core with the answer applied, and what the 201 said.
pub(crate) struct Negotiated {
    pub core: PeerCore,
    /// Absolute session URL.
    pub location: String,
    pub etag: Option<String>,
    /// The offer as POSTed.
    pub offer_sdp: String,
    /// The endpoint's SDP: its answer, or its counter-offer.
    pub answer_sdp: String,
    /// When the 201 arrived (the 204 to the answer of a counter-offer).
    pub posted_at: Instant,
}

/// POSTs the offer of `opts` for a peer on `local_addr` to `endpoint_url` and applies the
/// 201's answer; ICE and DTLS are then up to whoever drives the core.
pub(crate) async fn negotiate(
    role: Role,
    endpoint_url: &str,
    opts: &ClientOptions,
    local_addr: SocketAddr,
) -> Result<Negotiated, ClientError> {
    let mut config = PeerCore::rtc_config(&opts.peer);
    if let Some(cert) = &opts.dtls_cert {
        config = config.set_dtls_cert(cert.clone());
    }
    let mut core = PeerCore::new(role, opts.peer.clone(), config, Instant::now());
    let mut offer = if opts.tcp {
        core.offer_tcp(Instant::now(), local_addr.ip())?
    } else {
        core.offer(Instant::now(), local_addr)?
    };
    if opts.unbundled {
        offer = crate::sdp::strip_bundle_group(&offer);
    }

    let mut headers = vec![("content-type", "application/sdp".to_string())];
    if let Some(token) = &opts.bearer {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let header_refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let resp = signal(
        opts.h3.as_deref(),
        "POST",
        endpoint_url,
        &header_refs,
        offer.clone().into_bytes(),
    )
    .await?;
    let posted_at = Instant::now();
    if role == Role::Play && resp.status == 406 {
        return answer_counter_offer(endpoint_url, opts, local_addr, offer, resp).await;
    }
    if resp.status != 201 {
        return Err(ClientError::Http {
            status: resp.status,
            body: resp.text(),
        });
    }
    let location = resp
        .header("location")
        .ok_or_else(|| ClientError::Protocol("201 without Location header".into()))?;
    let location = http::resolve_url(endpoint_url, location)?;
    let etag = resp.header("etag").map(str::to_string);
    let mut answer_sdp =
        String::from_utf8(resp.body).map_err(|_| ClientError::Sdp("answer is not UTF-8".into()))?;
    if let Some(relay) = &opts.relay {
        answer_sdp = relay
            .rewrite_candidates(&answer_sdp)
            .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
    }
    let grouped = crate::sdp::Offer::parse(&answer_sdp)
        .map(|a| a.for_str0m(&answer_sdp).into_owned())
        .map_err(|e| ClientError::Sdp(e.to_string()))?;
    core.accept_answer(Instant::now(), &grouped)?;
    Ok(Negotiated {
        core,
        location,
        etag,
        offer_sdp: offer,
        answer_sdp,
        posted_at,
    })
}

/// A viewer's answer to the endpoint's counter-offer in `resp` (a 406), PATCHed to the
/// session it names: a new core, since the one that made the refused offer is spent.
async fn answer_counter_offer(
    endpoint_url: &str,
    opts: &ClientOptions,
    local_addr: SocketAddr,
    posted_offer: String,
    resp: http::Response,
) -> Result<Negotiated, ClientError> {
    let location = resp
        .header("location")
        .ok_or_else(|| ClientError::Protocol("406 without Location header".into()))?;
    let location = http::resolve_url(endpoint_url, location)?;
    let etag = resp.header("etag").map(str::to_string);
    let mut offer_sdp = String::from_utf8(resp.body)
        .map_err(|_| ClientError::Sdp("counter-offer is not UTF-8".into()))?;
    if let Some(relay) = &opts.relay {
        offer_sdp = relay
            .rewrite_candidates(&offer_sdp)
            .map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))?;
    }
    let mut config = PeerCore::rtc_config(&opts.peer);
    for codec in &opts.answer_codecs {
        config = PeerCore::with_video(config, *codec);
    }
    if let Some(cert) = &opts.dtls_cert {
        config = config.set_dtls_cert(cert.clone());
    }
    let mut core = PeerCore::new(Role::Play, opts.peer.clone(), config, Instant::now());
    let answer = core.answer(Instant::now(), local_addr, opts.tcp, &offer_sdp)?;
    let mut headers = vec![("content-type", "application/sdp".to_string())];
    if let Some(token) = &opts.bearer {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    let header_refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let patched = signal(
        opts.h3.as_deref(),
        "PATCH",
        &location,
        &header_refs,
        answer.into_bytes(),
    )
    .await?;
    if patched.status != 204 {
        return Err(ClientError::Http {
            status: patched.status,
            body: patched.text(),
        });
    }
    Ok(Negotiated {
        core,
        location,
        etag,
        offer_sdp: posted_offer,
        answer_sdp: offer_sdp,
        // The session starts with the answer, as another starts with its 201.
        posted_at: Instant::now(),
    })
}

/// Local address the OS would use to reach the endpoint host.
fn route_ip(endpoint_url: &str, unspecified: IpAddr) -> Result<IpAddr, ClientError> {
    let (host, port) = http::host_port(endpoint_url)?;
    // An IPv6 endpoint is reached from an IPv6 address whatever family the wildcard named.
    let unspecified = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) if unspecified.is_ipv4() => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        Ok(IpAddr::V4(_)) if unspecified.is_ipv6() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => unspecified,
    };
    let probe = UdpSocket::bind(SocketAddr::new(unspecified, 0))?;
    probe.connect((host.as_str(), port))?;
    Ok(probe.local_addr()?.ip())
}

/// The IO thread: the core on the socket and the real clock.
struct IoLoop {
    core: PeerCore,
    socket: UdpSocket,
    local_addr: SocketAddr,
    /// ICE over TCP only ([`ClientOptions::tcp`]): the UDP socket then only wakes the loop.
    tcp: Option<TcpLink>,
    commands: std_mpsc::Receiver<Command>,
    frames: mpsc::Sender<ReceivedFrame>,
    /// Frames the handle's queue had no room for.
    frames_dropped: u64,
    shared: Arc<Shared>,
}

enum Flow {
    Continue,
    Exit(String),
}

/// Longest a TCP-only peer blocks in a read before it looks at its commands.
const TCP_POLL: Duration = Duration::from_millis(10);

/// A TCP-only peer's one connection to the endpoint's passive candidate, opened by its first
/// check; every datagram is an RFC 4571 frame (16-bit length, then the bytes).
struct TcpLink {
    /// The active candidate's address, where str0m expects what the connection brings.
    local: SocketAddr,
    conn: Option<(SocketAddr, std::net::TcpStream)>,
    /// Bytes read and not yet a whole frame.
    buf: Vec<u8>,
}

impl TcpLink {
    fn send(&mut self, to: SocketAddr, data: &[u8]) {
        use std::io::Write;
        if self.conn.as_ref().is_none_or(|(r, _)| *r != to) {
            match std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    self.buf.clear();
                    self.conn = Some((to, s));
                }
                Err(e) => {
                    tracing::debug!("peer TCP connect to {to}: {e}");
                    return;
                }
            }
        }
        let Some((_, s)) = &mut self.conn else {
            return;
        };
        let Ok(len) = u16::try_from(data.len()) else {
            return;
        };
        let mut frame = Vec::with_capacity(2 + data.len());
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(data);
        if let Err(e) = s.write_all(&frame) {
            tracing::debug!("peer TCP send to {to}: {e}");
            self.conn = None;
        }
    }

    /// The whole frames that arrive within `wait`, with the connection's remote address.
    fn read(&mut self, wait: Duration) -> Vec<(SocketAddr, Vec<u8>)> {
        use std::io::Read;
        let Some((remote, s)) = &mut self.conn else {
            std::thread::sleep(wait);
            return Vec::new();
        };
        let remote = *remote;
        let _ = s.set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let mut chunk = [0u8; RECV_BUF];
        match s.read(&mut chunk) {
            Ok(0) => {
                self.conn = None;
                return Vec::new();
            }
            Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) => {
                tracing::debug!("peer TCP read: {e}");
                self.conn = None;
                return Vec::new();
            }
        }
        let mut frames = Vec::new();
        let mut at = 0;
        while self.buf.len() >= at + 2 {
            let len = u16::from_be_bytes([self.buf[at], self.buf[at + 1]]) as usize;
            if self.buf.len() < at + 2 + len {
                break;
            }
            frames.push((remote, self.buf[at + 2..at + 2 + len].to_vec()));
            at += 2 + len;
        }
        self.buf.drain(..at);
        frames
    }
}

impl IoLoop {
    fn run(mut self) {
        let shared = self.shared.clone();
        let reason = match catch_unwind(AssertUnwindSafe(|| self.run_inner())) {
            Ok(reason) => reason,
            Err(_) => "IO loop panicked".to_string(),
        };
        tracing::debug!(%reason, "peer IO loop ended");
        shared.set_state(LinkState::Closed(reason));
    }

    fn run_inner(&mut self) -> String {
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            self.flush();
            if let LinkState::Closed(reason) = self.core.state() {
                return reason.clone();
            }

            match self.commands.try_recv() {
                Ok(cmd) => {
                    if let Flow::Exit(reason) = self.handle_command(cmd) {
                        self.flush();
                        return reason;
                    }
                    continue;
                }
                Err(std_mpsc::TryRecvError::Empty) => {}
                Err(std_mpsc::TryRecvError::Disconnected) => return "handle dropped".into(),
            }

            let now = Instant::now();
            let deadline = self.core.timeout().unwrap_or(now + MAX_WAIT);
            if deadline <= now {
                self.core.handle_timeout(now);
                continue;
            }
            let wait = (deadline - now).min(MAX_WAIT);
            if let Some(tcp) = &mut self.tcp {
                // Commands are looked at between reads, at least every TCP_POLL.
                let frames = tcp.read(wait.min(TCP_POLL));
                if frames.is_empty() {
                    // As a UDP read that timed out: str0m's agent starts on a timeout.
                    self.core.handle_timeout(Instant::now());
                }
                for (source, frame) in frames {
                    let local = tcp.local;
                    self.core
                        .handle_tcp_frame(Instant::now(), source, local, &frame);
                }
                continue;
            }
            if let Err(e) = self.socket.set_read_timeout(Some(wait)) {
                return format!("socket: {e}");
            }
            match self.socket.recv_from(&mut buf) {
                Ok((_, source)) if source == self.local_addr => {} // wake-up
                Ok((n, source)) => {
                    // Anything that is not STUN/DTLS/RTP is ignored.
                    self.core
                        .handle_datagram(Instant::now(), source, self.local_addr, &buf[..n]);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    self.core.handle_timeout(Instant::now());
                }
                Err(e) => {
                    // ICMP errors surface here on some platforms; keep going.
                    tracing::debug!("peer socket error: {e}");
                }
            }
        }
    }

    /// Sends what the core has to send and shows the handle what changed.
    fn flush(&mut self) {
        for t in self.core.transmits() {
            if t.proto == str0m::net::Protocol::Tcp {
                if let Some(tcp) = &mut self.tcp {
                    tcp.send(t.destination, &t.contents);
                }
            } else if let Err(e) = self.socket.send_to(&t.contents, t.destination) {
                tracing::debug!("peer send to {}: {e}", t.destination);
            }
        }
        for frame in self.core.take_frames() {
            if self.frames.try_send(frame).is_err() {
                self.frames_dropped += 1;
            }
        }
        let stats = PeerStats {
            frames_dropped: self.frames_dropped,
            ..self.core.stats()
        };
        *self.shared.stats() = stats;
        if *self.shared.state.borrow() != *self.core.state() {
            self.shared.set_state(self.core.state().clone());
        }
    }

    fn handle_command(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Write {
                kind,
                rid,
                rtp_time,
                data,
            } => {
                // Counted in the core's write errors, which the handle reads.
                let now = Instant::now();
                if let Err(e) = self
                    .core
                    .write_layer(now, kind, rid.as_deref(), rtp_time, data)
                {
                    tracing::warn!("peer write {kind:?}: {e}");
                }
                Flow::Continue
            }
            Command::RequestKeyframe(kind) => {
                if let Err(e) = self.core.request_keyframe(Instant::now(), kind) {
                    tracing::warn!("peer keyframe request: {e}");
                }
                Flow::Continue
            }
            Command::RestartIce(reply) => {
                let begun = self.core.begin_restart(Instant::now());
                let _ = reply.send(begun.map_err(ClientError::from));
                Flow::Continue
            }
            Command::RestartIceAnswer { fragment, reply } => {
                let finished = self.core.finish_restart(Instant::now(), &fragment);
                let _ = reply.send(finished.map_err(ClientError::from));
                Flow::Continue
            }
            Command::Stop { graceful: false } => Flow::Exit("stopped".into()),
            Command::Freeze => loop {
                // Only a stop (or the handle going away) ends it; the socket is left unread.
                match self.commands.recv() {
                    Ok(Command::Stop { .. }) | Err(_) => return Flow::Exit("frozen".into()),
                    Ok(_) => {}
                }
            },
            Command::Stop { graceful: true } => {
                self.core.close(Instant::now());
                Flow::Exit("closed".into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Peer-to-peer tests against a minimal in-process WHIP/WHEP answerer:
    //! one str0m `Rtc` per session (ICE-lite, frame mode) relaying publisher
    //! frames to every viewer, behind a tiny blocking HTTP server.

    use super::*;
    use crate::peer::media::{self, frame_index, opus_frame, video_frame};
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::Mutex;
    use str0m::format::{Codec, PayloadParams};
    use str0m::media::{MediaTime, Mid};
    use str0m::net::{Protocol, Receive};
    use str0m::{Candidate, Event, Input, Output, Rtc};

    const SECRET: &str = "s3cret";

    enum ToServer {
        Media {
            params: PayloadParams,
            time: MediaTime,
            network_time: Instant,
            data: Arc<[u8]>,
        },
        Keyframe(KeyframeRequestKind),
        Stop,
    }

    #[derive(Default)]
    struct Hub {
        publisher: Option<std_mpsc::Sender<ToServer>>,
        viewers: Vec<std_mpsc::Sender<ToServer>>,
        sessions: HashMap<u64, std_mpsc::Sender<ToServer>>,
        next_id: u64,
    }

    /// Start the answerer; returns its base URL.
    fn start_gateway() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hub = Arc::new(Mutex::new(Hub::default()));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let hub = hub.clone();
                std::thread::spawn(move || serve(stream, hub));
            }
        });
        base
    }

    fn serve(mut stream: TcpStream, hub: Arc<Mutex<Hub>>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            reader.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        reader.read_exact(&mut body).unwrap();

        let (status, extra, body) = route(&method, &path, &headers, body, &hub);
        let mut resp = format!(
            "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
            body.len()
        );
        for (k, v) in extra {
            resp.push_str(&format!("{k}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        stream.write_all(resp.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    }

    type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);

    fn route(
        method: &str,
        path: &str,
        headers: &HashMap<String, String>,
        body: Vec<u8>,
        hub: &Arc<Mutex<Hub>>,
    ) -> Reply {
        let not_found = (404, vec![], b"no such resource".to_vec());
        if method == "DELETE" {
            let id = path
                .strip_prefix("/session/")
                .and_then(|s| s.parse::<u64>().ok());
            let tx = id.and_then(|id| hub.lock().unwrap().sessions.remove(&id));
            return match tx {
                Some(tx) => {
                    let _ = tx.send(ToServer::Stop);
                    (200, vec![], vec![])
                }
                None => not_found,
            };
        }
        let (publisher, relative) = match path {
            "/whip/demo" | "/whip/secure" | "/whip/blackhole" => (true, false),
            "/whep/demo" => (false, true),
            _ => return not_found,
        };
        if path == "/whip/secure"
            && headers.get("authorization").map(String::as_str) != Some(&format!("Bearer {SECRET}"))
        {
            return (401, vec![], b"bad token".to_vec());
        }
        let offer =
            str0m::change::SdpOffer::from_sdp_string(&String::from_utf8(body).unwrap()).unwrap();
        let mut rtc = Rtc::builder().set_ice_lite(true).build(Instant::now());
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let answer = rtc.sdp_api().accept_offer(offer).unwrap().to_sdp_string();

        let (tx, rx) = std_mpsc::channel();
        let id = {
            let mut h = hub.lock().unwrap();
            h.next_id += 1;
            let id = h.next_id;
            h.sessions.insert(id, tx.clone());
            if path == "/whip/blackhole" {
                // Answer, but never run ICE: the client can never connect.
                std::thread::spawn(move || {
                    let _keep = (rtc, socket, rx);
                    std::thread::sleep(Duration::from_secs(5));
                });
            } else {
                if publisher {
                    h.publisher = Some(tx);
                } else {
                    h.viewers.push(tx);
                }
                let hub = hub.clone();
                std::thread::spawn(move || server_peer(rtc, socket, rx, hub, publisher));
            }
            id
        };
        let location = if relative {
            format!("../session/{id}")
        } else {
            format!("/session/{id}")
        };
        (
            201,
            vec![
                ("content-type", "application/sdp".to_string()),
                ("location", location),
                ("etag", format!("\"tag-{id}\"")),
            ],
            answer.into_bytes(),
        )
    }

    fn server_peer(
        mut rtc: Rtc,
        socket: UdpSocket,
        inbox: std_mpsc::Receiver<ToServer>,
        hub: Arc<Mutex<Hub>>,
        publisher: bool,
    ) {
        let local = socket.local_addr().unwrap();
        let mut buf = vec![0u8; RECV_BUF];
        let mut mids: Vec<(MediaKind, Mid)> = Vec::new();
        loop {
            let deadline = loop {
                match rtc.poll_output().unwrap() {
                    Output::Timeout(t) => break t,
                    Output::Transmit(t) => {
                        let _ = socket.send_to(&t.contents, t.destination);
                    }
                    Output::Event(Event::MediaAdded(m)) => mids.push((m.kind, m.mid)),
                    Output::Event(Event::MediaData(d)) if publisher => {
                        for v in &hub.lock().unwrap().viewers {
                            let _ = v.send(ToServer::Media {
                                params: d.params,
                                time: d.time,
                                network_time: d.network_time,
                                data: d.data.clone(),
                            });
                        }
                    }
                    Output::Event(Event::KeyframeRequest(r)) if !publisher => {
                        if let Some(p) = &hub.lock().unwrap().publisher {
                            let _ = p.send(ToServer::Keyframe(r.kind));
                        }
                    }
                    Output::Event(_) => {}
                }
            };
            if !rtc.is_alive() {
                return;
            }
            let mid_of = |kind| mids.iter().find(|(k, _)| *k == kind).map(|(_, m)| *m);
            match inbox.try_recv() {
                Ok(ToServer::Stop) | Err(std_mpsc::TryRecvError::Disconnected) => return,
                Ok(ToServer::Media {
                    params,
                    time,
                    network_time,
                    data,
                }) => {
                    let kind = if params.spec().codec.is_audio() {
                        MediaKind::Audio
                    } else {
                        MediaKind::Video
                    };
                    if let Some(w) = mid_of(kind).and_then(|m| rtc.writer(m)) {
                        if let Some(pt) = w.match_params(params) {
                            w.write(pt, network_time, time, data).unwrap();
                        }
                    }
                    continue;
                }
                Ok(ToServer::Keyframe(kind)) => {
                    if let Some(mut w) = mid_of(MediaKind::Video).and_then(|m| rtc.writer(m)) {
                        let _ = w.request_keyframe(None, kind);
                    }
                    continue;
                }
                Err(std_mpsc::TryRecvError::Empty) => {}
            }
            let now = Instant::now();
            let wait = deadline
                .saturating_duration_since(now)
                .clamp(Duration::from_millis(1), Duration::from_millis(5));
            socket.set_read_timeout(Some(wait)).unwrap();
            let input = match socket.recv_from(&mut buf) {
                Ok((n, source)) => match Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                    Ok(r) => Input::Receive(Instant::now(), r),
                    Err(_) => continue,
                },
                Err(_) => Input::Timeout(Instant::now()),
            };
            rtc.handle_input(input).unwrap();
        }
    }

    const CONNECT: Duration = Duration::from_secs(5);

    /// Publish `frames` video frames at ~100 fps (plus two Opus frames each)
    /// and check the viewer gets them back byte-identical with their RTP times.
    async fn roundtrip(codec: VideoCodec, audio: bool) {
        let base = start_gateway();
        let opts = PeerOptions {
            video: Some(codec),
            audio,
            ..PeerOptions::default()
        };
        let publisher = Peer::publish(&format!("{base}/whip/demo"), opts.clone())
            .await
            .unwrap();
        let mut viewer = Peer::play(&format!("{base}/whep/demo"), opts)
            .await
            .unwrap();
        assert!(publisher
            .location()
            .starts_with(&format!("{base}/session/")));
        assert!(viewer.location().starts_with(&format!("{base}/session/")));
        assert!(publisher.etag().unwrap().starts_with("\"tag-"));
        assert!(publisher.answer_sdp().starts_with("v=0"));
        publisher.wait_connected(CONNECT).await.unwrap();
        viewer.wait_connected(CONNECT).await.unwrap();
        assert!(publisher.is_connected() && viewer.is_connected());

        let frames = 60u64;
        for i in 0..frames {
            let key = i % 20 == 0;
            let data = video_frame(codec, i, key, 4000);
            publisher
                .send_frame(MediaKind::Video, i * 3000, data)
                .unwrap();
            if audio {
                for j in [2 * i, 2 * i + 1] {
                    publisher
                        .send_frame(MediaKind::Audio, j * 960, opus_frame(j))
                        .unwrap();
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        let (mut video, mut audio_frames) = (Vec::new(), Vec::new());
        while let Some(f) = viewer.next_frame(Duration::from_millis(700)).await {
            let index = frame_index(f.codec, &f.data).expect("generated frame");
            match f.kind {
                MediaKind::Video => {
                    assert_eq!(f.codec, codec.codec());
                    assert_eq!(
                        f.data[..],
                        video_frame(codec, index, index % 20 == 0, 4000)[..]
                    );
                    assert_eq!(f.rtp_time, index * 3000);
                    video.push(index);
                }
                MediaKind::Audio => {
                    assert_eq!(f.codec, Codec::Opus);
                    assert_eq!(f.data[..], opus_frame(index)[..]);
                    assert_eq!(f.rtp_time, index * 960);
                    audio_frames.push(index);
                }
            }
            if video.last() == Some(&(frames - 1))
                && (!audio || audio_frames.last() == Some(&(2 * frames - 1)))
            {
                break;
            }
        }
        // The relay may miss the first frames while it learns the viewer's mids.
        assert!(video.len() >= 40, "video frames {video:?}");
        assert!(video.windows(2).all(|w| w[0] < w[1]), "order {video:?}");
        assert_eq!(video.last(), Some(&(frames - 1)));
        if audio {
            assert!(audio_frames.len() >= 80, "audio frames {audio_frames:?}");
        }
        let stats = viewer.stats();
        assert_eq!(stats.frames_dropped, 0);
        assert!(stats.bytes_received >= 40 * 4000);
        assert_eq!(publisher.stats().write_errors, 0);

        // Viewer PLI travels through the relay to the publisher.
        let before = publisher.keyframe_requests();
        viewer.request_keyframe().unwrap();
        let deadline = Instant::now() + Duration::from_secs(3);
        while publisher.keyframe_requests() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            publisher.keyframe_requests() > before,
            "no keyframe request arrived"
        );

        assert_eq!(viewer.delete().await.unwrap(), 200);
        assert_eq!(publisher.delete().await.unwrap(), 200);
    }

    #[tokio::test]
    async fn roundtrip_h264_opus() {
        roundtrip(VideoCodec::H264, true).await;
    }

    #[tokio::test]
    async fn roundtrip_vp8() {
        roundtrip(VideoCodec::Vp8, false).await;
    }

    #[tokio::test]
    async fn roundtrip_vp9() {
        roundtrip(VideoCodec::Vp9, false).await;
    }

    #[tokio::test]
    async fn roundtrip_av1() {
        roundtrip(VideoCodec::Av1, false).await;
    }

    #[tokio::test]
    async fn http_errors_and_bearer() {
        let base = start_gateway();
        match Peer::publish(&format!("{base}/whip/nope"), PeerOptions::default()).await {
            Err(ClientError::Http { status: 404, body }) => assert_eq!(body, "no such resource"),
            other => panic!("unexpected {other:?}"),
        }
        let url = format!("{base}/whip/secure");
        match Peer::publish(&url, PeerOptions::default()).await {
            Err(ClientError::Http { status: 401, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
        let opts = ClientOptions {
            bearer: Some(SECRET.into()),
            ..ClientOptions::from(PeerOptions {
                audio: false,
                ..PeerOptions::default()
            })
        };
        let p = Peer::publish(&url, opts).await.unwrap();
        p.wait_connected(CONNECT).await.unwrap();
        let err = p
            .send_frame(MediaKind::Audio, 0, opus_frame(0))
            .unwrap_err();
        assert!(matches!(err, ClientError::Rtc(_)), "{err:?}");
        let location = p.location().to_string();
        assert_eq!(p.delete().await.unwrap(), 200);
        let again = http::request("DELETE", &location, &[], Vec::new())
            .await
            .unwrap();
        assert_eq!(again.status, 404);
        assert_eq!(again.text(), "no such resource");
    }

    #[tokio::test]
    async fn unreachable_answer_never_connects() {
        let base = start_gateway();
        let p = Peer::publish(&format!("{base}/whip/blackhole"), PeerOptions::default())
            .await
            .unwrap();
        let err = p
            .send_frame(MediaKind::Video, 0, media::h264_frame(0, true, 100))
            .unwrap_err();
        assert!(matches!(err, ClientError::NotConnected), "{err:?}");
        let err = p
            .wait_connected(Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Timeout(_)), "{err:?}");
        assert_eq!(p.state(), LinkState::Connecting);
        let started = Instant::now();
        p.kill();
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// The same answerer behind the HTTP/3 bridge; returns its `https://` base URL, the
    /// certificate to trust, and the handle that keeps it running.
    async fn start_h3_gateway() -> (String, crate::tls::Identity, watch::Sender<bool>) {
        use axum::body::{Body, Bytes};
        use axum::http::{HeaderMap, Method, Uri};

        let hub = Arc::new(Mutex::new(Hub::default()));
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let hub = hub.clone();
                async move {
                    let headers: HashMap<String, String> = headers
                        .iter()
                        .map(|(k, v)| {
                            let v = v.to_str().unwrap_or_default().to_string();
                            (k.as_str().to_string(), v)
                        })
                        .collect();
                    let (status, extra, body) = tokio::task::spawn_blocking(move || {
                        route(method.as_str(), uri.path(), &headers, body.to_vec(), &hub)
                    })
                    .await
                    .expect("answerer thread");
                    let mut resp = axum::http::Response::builder().status(status);
                    for (k, v) in extra {
                        resp = resp.header(k, v);
                    }
                    resp.body(Body::from(body)).expect("response")
                }
            },
        );
        let identity = crate::tls::Identity::self_signed().expect("identity");
        let opts = crate::http3::H3Options {
            max_concurrent_streams: 16,
            idle_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
        };
        let endpoint =
            crate::http3::endpoint("127.0.0.1:0".parse().expect("addr"), &identity, &opts)
                .expect("endpoint");
        let port = endpoint.local_addr().expect("local address").port();
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(crate::http3::serve(
            endpoint,
            app,
            stopped,
            Duration::from_secs(1),
        ));
        (format!("https://localhost:{port}"), identity, stop)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn signalling_over_http3() {
        let (base, identity, _stop) = start_h3_gateway().await;
        let client = Arc::new(h3::H3Client::new(&identity.certs).expect("client"));
        let opts = ClientOptions {
            h3: Some(client.clone()),
            bearer: Some(SECRET.into()),
            ..ClientOptions::from(PeerOptions {
                audio: false,
                ..PeerOptions::default()
            })
        };
        assert!(format!("{opts:?}").contains("H3Client"));
        let publisher = Peer::publish(&format!("{base}/whip/secure"), opts.clone())
            .await
            .expect("publish over HTTP/3");
        let mut viewer = Peer::play(&format!("{base}/whep/demo"), opts)
            .await
            .expect("play over HTTP/3");
        assert!(publisher
            .location()
            .starts_with(&format!("{base}/session/")));
        assert!(viewer.location().starts_with(&format!("{base}/session/")));
        publisher
            .wait_connected(CONNECT)
            .await
            .expect("publisher connects");
        viewer
            .wait_connected(CONNECT)
            .await
            .expect("viewer connects");
        for i in 0..5u64 {
            let data = video_frame(VideoCodec::H264, i, i == 0, 1000);
            publisher
                .send_frame(MediaKind::Video, i * 3000, data)
                .expect("send frame");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(viewer.next_frame(Duration::from_secs(2)).await.is_some());

        // Without the token the WHIP POST is refused, over HTTP/3 as over TCP.
        let anonymous = ClientOptions {
            h3: Some(client.clone()),
            ..ClientOptions::default()
        };
        match Peer::publish(&format!("{base}/whip/secure"), anonymous).await {
            Err(ClientError::Http { status: 401, .. }) => {}
            other => panic!("unexpected {other:?}"),
        }

        let location = publisher.location().to_string();
        assert_eq!(viewer.delete().await.expect("viewer DELETE"), 200);
        assert_eq!(publisher.delete().await.expect("publisher DELETE"), 200);
        let again = client
            .request("DELETE", &location, &[], Vec::new())
            .await
            .expect("second DELETE");
        assert_eq!(again.status, 404);
        assert_eq!(again.version, axum::http::Version::HTTP_3);
        client.close().await;
    }

    #[test]
    fn peer_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Peer>();
    }

    #[tokio::test]
    async fn refused_connection_is_transport_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/whip/x");
        let err = Peer::publish(&url, PeerOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err:?}");
        let err = http::request("GET", "https://127.0.0.1/", &[], Vec::new())
            .await
            .unwrap_err();
        assert!(matches!(err, ClientError::Url(_)), "{err:?}");
    }
}

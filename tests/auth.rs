//! Bearer-token authorization against a running gateway, over real HTTP with real str0m peers:
//! every protected route allowed, 401 and 403 for each way of granting (static tokens per stream
//! pattern, public play, admin tokens, HS256 and RS256 JWTs, a webhook), sessions controlled only
//! by the token that created them (or an admin), a webhook timeout denying, the same answers
//! over HTTPS and HTTP/3, and no token ever written to the logs, which every test here captures
//! at `debug`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use str0m::media::{Direction, MediaKind};
use str0m::{Candidate, Rtc};
use wishcast::client::h3::H3Client;
use wishcast::client::http::{request, request_tls_alpn, resolve_url, Response};
use wishcast::client::{ClientError, ClientOptions, Peer, VideoCodec};
use wishcast::{Config, Gateway};

const ADMIN: &str = "adm-5c1e0f3b9a77d2";
const TEACHER: &str = "pub-class-8d2f71e4";
const STUDENT: &str = "play-class-4b9e06c1";
const HOST: &str = "pub-lobby-71c3aa90";
const BOGUS: &str = "bogus-token-93e1d5";
const SECRET: &str = "jwt-secret-0f9e8d7c6b5a4938271605f4e3d2c1b0";
/// Webhook tokens: `hook-allow-*` get 204, `hook-deny-*` 403, `hook-slow` an answer after 3 s,
/// anything else 401.
const HOOK_ALLOW: &str = "hook-allow-2e7b41";
const HOOK_DENY: &str = "hook-deny-6a0c93";
const HOOK_SLOW: &str = "hook-slow";

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
const CANDIDATE: &str = "a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n";

/// The gateway with the test settings and `auth` as its `[auth]` section, logging into
/// [`captured_logs`].
async fn gateway(auth: &str) -> Gateway {
    captured_logs("debug");
    let mut c: Config = test_config(2);
    c.auth = toml::from_str(auth).expect("[auth] parses");
    start(c).await
}

const STATIC: &str = r#"
enabled = true
admin_tokens = ["adm-5c1e0f3b9a77d2"]
[[streams]]
pattern = "class-*"
publish_tokens = ["pub-class-8d2f71e4"]
play_tokens = ["play-class-4b9e06c1"]
[[streams]]
pattern = "lobby"
publish_tokens = ["pub-lobby-71c3aa90"]
public_play = true
"#;

fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{path}", gw.http_addr())
}

/// A real str0m offer: video and audio in `dir`, one host candidate.
fn offer(dir: Direction) -> String {
    let mut rtc = Rtc::builder().build(Instant::now());
    let addr = "127.0.0.1:40000".parse().expect("candidate address");
    rtc.add_local_candidate(Candidate::host(addr, "udp").expect("host candidate"));
    let mut api = rtc.sdp_api();
    for kind in [MediaKind::Video, MediaKind::Audio] {
        api.add_media(kind, dir, Some("wishcast-test".into()), None, None);
    }
    let (offer, _pending) = api.apply().expect("str0m produces an offer");
    offer.to_sdp_string()
}

/// One request with an optional bearer token; any status.
async fn send(
    method: &str,
    url: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    request(method, url, &headers, body.as_bytes().to_vec())
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: no HTTP response: {e}"))
}

/// A WHIP (`/whip/…`) or WHEP POST with a matching real offer.
async fn post_offer(gw: &Gateway, path: &str, token: Option<&str>) -> Response {
    let dir = if path.starts_with("/whip/") {
        Direction::SendOnly
    } else {
        Direction::RecvOnly
    };
    send(
        "POST",
        &url(gw, path),
        token,
        &[("content-type", SDP)],
        &offer(dir),
    )
    .await
}

fn with_token(token: Option<&str>) -> ClientOptions {
    ClientOptions {
        bearer: token.map(str::to_string),
        ..ClientOptions::from(opts(Some(VideoCodec::H264), true))
    }
}

async fn connected(peer: Result<Peer, ClientError>, what: &str) -> Peer {
    let p = peer.unwrap_or_else(|e| panic!("{what}: accepted: {e}"));
    p.wait_connected(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("{what}: connects: {e}"));
    p
}

async fn live_publisher(gw: &Gateway, stream: &str, token: Option<&str>) -> Peer {
    let p = Peer::publish(&whip(gw, stream), with_token(token)).await;
    connected(p, &format!("publisher of {stream}")).await
}

async fn live_viewer(gw: &Gateway, stream: &str, token: Option<&str>) -> Peer {
    let p = Peer::play(&whep(gw, stream), with_token(token)).await;
    connected(p, &format!("viewer of {stream}")).await
}

/// A refused peer: the status the gateway answered its POST with.
fn refused(peer: Result<Peer, ClientError>) -> u16 {
    match peer {
        Err(ClientError::Http { status, .. }) => status,
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(p) => {
            let at = p.location().to_string();
            p.close();
            panic!("expected a refusal, got a session at {at}")
        }
    }
}

/// 401 with the RFC 6750 challenge (`invalid`: with `error="invalid_token"`) and a problem body.
fn assert_401(r: &Response, invalid: bool, what: &str) {
    assert_eq!(r.status, 401, "{what}: {}", r.text());
    let challenge = r.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer realm=\"wishcast\""),
        "{what}: challenge {challenge:?}"
    );
    assert_eq!(
        challenge.contains("error=\"invalid_token\""),
        invalid,
        "{what}: challenge {challenge:?}"
    );
    assert_problem(r, what);
}

fn assert_403(r: &Response, what: &str) {
    assert_eq!(r.status, 403, "{what}: {}", r.text());
    assert_problem(r, what);
}

fn assert_problem(r: &Response, what: &str) {
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("*"),
        "{what}: readable by browsers on other origins"
    );
    // A HEAD response has no body to check.
    if what.starts_with("HEAD ") {
        return;
    }
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let json: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(json["status"].as_u64(), Some(u64::from(r.status)), "{what}");
    assert!(
        !json["detail"].as_str().unwrap_or_default().is_empty(),
        "{what}: detail in {json}"
    );
}

/// Checks one route with no token (401), an unknown token (401 invalid_token), a valid token
/// without the right (403) and the right token (`allowed`).
async fn route(gw: &Gateway, method: &str, path: &str, wrong: &str, right: &str, allowed: u16) {
    let u = url(gw, path);
    let what = format!("{method} {path}");
    assert_401(&send(method, &u, None, &[], "").await, false, &what);
    assert_401(&send(method, &u, Some(BOGUS), &[], "").await, true, &what);
    assert_403(&send(method, &u, Some(wrong), &[], "").await, &what);
    let r = send(method, &u, Some(right), &[], "").await;
    assert_eq!(
        r.status,
        allowed,
        "{what} with the right token: {}",
        r.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_tokens_admin_and_public_play_on_every_route() {
    let gw = gateway(STATIC).await;

    // WHIP POST: 401, 401 invalid_token, 403 for play tokens and other streams' tokens.
    assert_401(
        &post_offer(&gw, "/whip/class-1", None).await,
        false,
        "WHIP no token",
    );
    assert_401(
        &post_offer(&gw, "/whip/class-1", Some(BOGUS)).await,
        true,
        "WHIP bogus",
    );
    assert_403(
        &post_offer(&gw, "/whip/class-1", Some(STUDENT)).await,
        "WHIP play token",
    );
    assert_403(
        &post_offer(&gw, "/whip/class-1", Some(HOST)).await,
        "WHIP lobby token",
    );
    let publisher = live_publisher(&gw, "class-1", Some(TEACHER)).await;

    // WHEP POST: the publish token does not play.
    assert_401(
        &post_offer(&gw, "/whep/class-1", None).await,
        false,
        "WHEP no token",
    );
    assert_401(
        &post_offer(&gw, "/whep/class-1", Some(BOGUS)).await,
        true,
        "WHEP bogus",
    );
    assert_403(
        &post_offer(&gw, "/whep/class-1", Some(TEACHER)).await,
        "WHEP publish token",
    );
    let viewer = live_viewer(&gw, "class-1", Some(STUDENT)).await;
    assert_eq!(
        refused(Peer::play(&whep(&gw, "class-1"), with_token(None)).await),
        401
    );

    // GET and HEAD on the endpoints need the same right as POST.
    route(&gw, "GET", "/whip/class-1", STUDENT, TEACHER, 204).await;
    route(&gw, "HEAD", "/whip/class-1", STUDENT, TEACHER, 204).await;
    route(&gw, "GET", "/whep/class-1", TEACHER, STUDENT, 204).await;
    route(&gw, "HEAD", "/whep/class-1", TEACHER, STUDENT, 200).await;

    // The API is for admins only.
    route(&gw, "GET", "/api/streams", STUDENT, ADMIN, 200).await;
    route(&gw, "GET", "/api/streams/class-1", TEACHER, ADMIN, 200).await;

    // CORS preflights and plain OPTIONS carry no token and pass, on endpoints and sessions.
    let preflight = [
        ("origin", "https://player.example"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    for path in ["/whip/class-1", "/whep/class-1"] {
        let r = send("OPTIONS", &url(&gw, path), None, &preflight, "").await;
        assert_eq!(r.status, 200, "preflight {path}");
        let allowed = r
            .header("access-control-allow-headers")
            .unwrap_or_default()
            .to_ascii_lowercase();
        assert!(allowed.contains("authorization"), "{path}: {allowed}");
    }
    for session in [publisher.location(), viewer.location()] {
        let r = send("OPTIONS", session, None, &[], "").await;
        assert_eq!(r.status, 200, "OPTIONS {session}");
    }

    // Health, readiness and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = send("GET", &url(&gw, path), None, &[], "").await;
        assert_eq!(r.status, 200, "GET {path} without a token");
    }

    // Admin tokens publish and play anywhere, even where no rule matches.
    assert_403(
        &post_offer(&gw, "/whip/unlisted", Some(TEACHER)).await,
        "no rule matches",
    );
    let admin_pub = live_publisher(&gw, "unlisted", Some(ADMIN)).await;
    let admin_view = live_viewer(&gw, "class-1", Some(ADMIN)).await;

    // Public play: no token needed to watch, one still needed to publish.
    assert_401(
        &post_offer(&gw, "/whip/lobby", None).await,
        false,
        "lobby publish",
    );
    let lobby = live_publisher(&gw, "lobby", Some(HOST)).await;
    let anonymous = live_viewer(&gw, "lobby", None).await;
    // Its session was created without a token: it is as open as its creation.
    assert_eq!(anonymous.delete().await.expect("DELETE"), 200);

    for p in [viewer, admin_view, admin_pub, lobby, publisher] {
        assert_eq!(p.delete().await.expect("DELETE by the creator"), 200);
    }
    gw.shutdown().await;
}

/// A trickle PATCH of `session` with its ETag.
async fn trickle(session: &Peer, token: Option<&str>) -> Response {
    let etag = session.etag().unwrap_or("*");
    send(
        "PATCH",
        session.location(),
        token,
        &[("content-type", SDPFRAG), ("if-match", etag)],
        CANDIDATE,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_answer_only_their_creator_or_an_admin() {
    let gw = gateway(STATIC).await;
    let publisher = live_publisher(&gw, "class-2", Some(TEACHER)).await;
    let viewer = live_viewer(&gw, "class-2", Some(STUDENT)).await;
    let other_viewer = live_viewer(&gw, "class-2", Some(ADMIN)).await;

    for (session, owner, stranger) in [(&publisher, TEACHER, STUDENT), (&viewer, STUDENT, TEACHER)]
    {
        let at = session.location();
        assert_401(&trickle(session, None).await, false, "PATCH no token");
        assert_401(&trickle(session, Some(BOGUS)).await, true, "PATCH bogus");
        assert_403(
            &trickle(session, Some(stranger)).await,
            "PATCH by a stranger",
        );
        assert_403(
            &trickle(session, Some(HOST)).await,
            "PATCH by another rule's token",
        );
        assert_eq!(
            trickle(session, Some(owner)).await.status,
            204,
            "PATCH by the creator"
        );
        assert_eq!(
            trickle(session, Some(ADMIN)).await.status,
            204,
            "PATCH by an admin"
        );
        assert_401(&send("GET", at, None, &[], "").await, false, "GET session");
        assert_403(
            &send("GET", at, Some(stranger), &[], "").await,
            "GET by a stranger",
        );
        assert_eq!(send("GET", at, Some(owner), &[], "").await.status, 204);
        assert_401(
            &send("DELETE", at, None, &[], "").await,
            false,
            "DELETE no token",
        );
        assert_401(
            &send("DELETE", at, Some(BOGUS), &[], "").await,
            true,
            "DELETE bogus",
        );
        assert_403(
            &send("DELETE", at, Some(stranger), &[], "").await,
            "DELETE by a stranger",
        );
    }
    // The admin's own viewer session is not the student's to end.
    assert_403(
        &send("DELETE", other_viewer.location(), Some(STUDENT), &[], "").await,
        "DELETE someone else's viewer",
    );
    assert_eq!(
        viewer.delete().await.expect("DELETE"),
        200,
        "the creator ends it"
    );
    // An admin may end any session.
    let at = publisher.location().to_string();
    assert_eq!(send("DELETE", &at, Some(ADMIN), &[], "").await.status, 200);
    assert_eq!(
        send("DELETE", &at, Some(TEACHER), &[], "").await.status,
        404,
        "gone for its creator too"
    );
    // An unknown session: 401 without a token, else the ordinary 404.
    let unknown = format!("{}/{:032x}", whip(&gw, "class-2"), 7u128);
    assert_401(
        &send("DELETE", &unknown, None, &[], "").await,
        false,
        "unknown session",
    );
    assert_eq!(
        send("DELETE", &unknown, Some(TEACHER), &[], "")
            .await
            .status,
        404
    );
    publisher.close();
    other_viewer.close();
    gw.shutdown().await;
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn hs256(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("sign HS256")
}

/// A file under the temp directory, removed when dropped.
struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_and_rs256_jwts() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    let public =
        TempFile(std::env::temp_dir().join(format!("wishcast-auth-{}.pem", rand::random::<u64>())));
    std::fs::write(&public.0, key.public_key_pem()).expect("write key");
    let gw = gateway(&format!(
        "enabled = true\n[jwt]\nhs256_secret = \"{SECRET}\"\nrs256_public_key = {:?}\n",
        public.0.display().to_string()
    ))
    .await;

    let publish = hs256(json!({"exp": now() + 600, "streams": ["cast-*"], "rights": ["publish"]}));
    let play = hs256(json!({"exp": now() + 600, "streams": ["cast-1"], "rights": ["play"]}));
    let expired = hs256(json!({"exp": now() - 3600, "streams": ["*"], "rights": ["publish"]}));
    let admin = hs256(json!({"exp": now() + 600, "rights": ["admin"]}));
    let rsa = EncodingKey::from_rsa_pem(key.serialize_pem().as_bytes()).expect("RSA pem");
    let rs_play = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"exp": now() + 600, "streams": ["cast-?"], "rights": ["play"]}),
        &rsa,
    )
    .expect("sign RS256");

    assert_401(
        &post_offer(&gw, "/whip/cast-1", Some(&expired)).await,
        true,
        "expired JWT",
    );
    assert_403(
        &post_offer(&gw, "/whip/cast-1", Some(&play)).await,
        "JWT without publish",
    );
    assert_403(
        &post_offer(&gw, "/whip/other", Some(&publish)).await,
        "JWT for other streams",
    );
    let p = live_publisher(&gw, "cast-1", Some(&publish)).await;
    assert_403(
        &post_offer(&gw, "/whep/cast-1", Some(&publish)).await,
        "JWT without play",
    );
    let v = live_viewer(&gw, "cast-1", Some(&play)).await;
    let rv = live_viewer(&gw, "cast-1", Some(&rs_play)).await;
    route(&gw, "GET", "/api/streams", &play, &admin, 200).await;
    // Ownership works for JWT-created sessions as for any token.
    assert_403(
        &send("DELETE", v.location(), Some(&rs_play), &[], "").await,
        "other JWT",
    );
    for peer in [rv, v, p] {
        assert_eq!(peer.delete().await.expect("DELETE"), 200);
    }
    gw.shutdown().await;
}

/// A webhook on loopback that counts its calls and keeps their bodies.
struct Hook {
    url: String,
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
}

async fn hook() -> Hook {
    let calls = Arc::new(AtomicUsize::new(0));
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (c, b) = (calls.clone(), bodies.clone());
    let app = axum::Router::new().route(
        "/auth",
        post(move |axum::Json(v): axum::Json<Value>| {
            let (c, b) = (c.clone(), b.clone());
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                let token = v["token"].as_str().unwrap_or_default().to_string();
                b.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                if token == HOOK_SLOW {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                }
                if token.starts_with("hook-allow-") {
                    StatusCode::NO_CONTENT
                } else if token.starts_with("hook-deny-") {
                    StatusCode::FORBIDDEN
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind webhook");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Hook {
        url: format!("http://{addr}/auth"),
        calls,
        bodies,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_decides_caches_and_a_timeout_denies() {
    let h = hook().await;
    let gw = gateway(&format!(
        "enabled = true\n[webhook]\nurl = \"{}\"\ntimeout_ms = 300\ncache_secs = 30\n",
        h.url
    ))
    .await;
    let calls = || h.calls.load(Ordering::SeqCst);

    let p = live_publisher(&gw, "hooked", Some(HOOK_ALLOW)).await;
    let body = h.bodies.lock().unwrap_or_else(|e| e.into_inner())[0].clone();
    assert_eq!(body["stream"], "hooked");
    assert_eq!(body["action"], "publish");
    assert_eq!(body["token"], HOOK_ALLOW);
    let client: SocketAddr = body["client"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("client address in {body}"));
    assert!(client.ip().is_loopback(), "{client}");

    assert_403(
        &post_offer(&gw, "/whep/hooked", Some(HOOK_DENY)).await,
        "webhook denies",
    );
    assert_401(
        &post_offer(&gw, "/whep/hooked", None).await,
        false,
        "no token, no webhook call",
    );
    let before = calls();
    let v1 = live_viewer(&gw, "hooked", Some(HOOK_ALLOW)).await;
    let v2 = live_viewer(&gw, "hooked", Some(HOOK_ALLOW)).await;
    assert_eq!(
        calls(),
        before + 1,
        "the second viewer's check came from the cache"
    );
    assert_403(
        &post_offer(&gw, "/whep/hooked", Some(HOOK_DENY)).await,
        "denial cached",
    );
    assert_eq!(calls(), before + 1, "denials are cached too");

    // A webhook that does not answer in time denies, within about its timeout.
    let started = Instant::now();
    assert_401(
        &post_offer(&gw, "/whip/slow", Some(HOOK_SLOW)).await,
        true,
        "webhook timeout",
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "denied after {:?}",
        started.elapsed()
    );

    route(
        &gw,
        "GET",
        "/api/streams",
        HOOK_DENY,
        "hook-allow-admin",
        200,
    )
    .await;
    let admin_ask = h
        .bodies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .find(|b| b["token"] == "hook-allow-admin")
        .cloned()
        .expect("admin check reached the webhook");
    assert_eq!(admin_ask["action"], "admin");
    assert_eq!(admin_ask["stream"], Value::Null);

    for peer in [v2, v1, p] {
        assert_eq!(peer.delete().await.expect("DELETE"), 200);
    }
    gw.shutdown().await;
}

/// One request over TLS: HTTPS with HTTP/1.1 only, or HTTP/3 through `h3`.
async fn send_tls(
    h3: Option<&H3Client>,
    roots: &[rustls::pki_types::CertificateDer<'static>],
    method: &str,
    url: &str,
    token: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = extra.to_vec();
    if let Some(a) = auth.as_deref() {
        headers.push(("authorization", a));
    }
    let body = body.as_bytes().to_vec();
    let r = match h3 {
        Some(h3) => h3.request(method, url, &headers, body).await,
        None => request_tls_alpn(roots, &[b"http/1.1"], method, url, &headers, body).await,
    };
    r.unwrap_or_else(|e| panic!("{method} {url}: no response: {e}"))
}

/// Auth is the same over HTTPS and HTTP/3 as over plain HTTP: a WHIP POST with no token or an
/// unknown one gets 401 with the Bearer challenge, a play token 403, the publish token 201;
/// the session's DELETE needs the token too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_auth_over_https_and_http3() {
    captured_logs("debug");
    let mut c: Config = test_config(2);
    c.auth = toml::from_str(STATIC).expect("[auth] parses");
    c.tls.self_signed = true;
    let gw = start(c).await;
    assert!(gw.h3_addr().is_some(), "HTTP/3 is served");
    let roots = gw.tls_identity().expect("TLS on").certs.clone();
    let h3 = H3Client::new(&roots).expect("HTTP/3 client");
    let port = gw.http_addr().port();
    let offer = offer(Direction::SendOnly);
    let sdp = [("content-type", SDP)];
    for (name, client, version) in [
        ("https1", None, hyper::Version::HTTP_11),
        ("h3", Some(&h3), hyper::Version::HTTP_3),
    ] {
        let url = format!("https://localhost:{port}/whip/class-{name}");
        let post = |token| send_tls(client, &roots, "POST", &url, token, &sdp, &offer);
        let what = format!("POST over {version:?}");
        let r = post(None).await;
        assert_eq!(r.version, version, "{what}");
        assert_401(&r, false, &what);
        assert_401(&post(Some(BOGUS)).await, true, &what);
        assert_403(&post(Some(STUDENT)).await, &what);
        let r = post(Some(TEACHER)).await;
        assert_eq!(
            (r.status, r.version),
            (201, version),
            "{what}: {}",
            r.text()
        );
        let location = r.header("location").expect("Location");
        let session = resolve_url(&url, location).expect("session URL");
        let delete = |token| send_tls(client, &roots, "DELETE", &session, token, &[], "");
        assert_401(
            &delete(None).await,
            false,
            &format!("DELETE over {version:?}"),
        );
        assert_eq!(
            delete(Some(TEACHER)).await.status,
            200,
            "DELETE over {version:?}"
        );
    }
    assert_eq!(gw.session_count(), 0);
    h3.close().await;
    gw.shutdown().await;
    // Nor do the TLS and QUIC layers log the header at `debug`.
    let text = captured_text("debug");
    for token in [TEACHER, STUDENT, BOGUS] {
        assert!(!text.contains(token), "a token appears in the logs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_never_reach_the_logs() {
    let h = hook().await;
    let gw = gateway(&format!(
        "{STATIC}\n[jwt]\nhs256_secret = \"{SECRET}\"\n[webhook]\nurl = \"{}\"\ntimeout_ms = 300\n",
        h.url
    ))
    .await;
    let jwt = hs256(json!({"exp": now() + 600, "streams": ["jwt-*"], "rights": ["publish"]}));
    // Every way in and every way out, with debug logging on.
    let p = live_publisher(&gw, "class-9", Some(TEACHER)).await;
    let v = live_viewer(&gw, "class-9", Some(STUDENT)).await;
    let j = live_publisher(&gw, "jwt-1", Some(&jwt)).await;
    let w = live_publisher(&gw, "hook-1", Some(HOOK_ALLOW)).await;
    let a = live_viewer(&gw, "class-9", Some(ADMIN)).await;
    post_offer(&gw, "/whip/class-9", Some(BOGUS)).await;
    post_offer(&gw, "/whip/class-9", Some(STUDENT)).await;
    post_offer(&gw, "/whip/x", Some(HOOK_DENY)).await;
    post_offer(&gw, "/whip/x", Some(HOOK_SLOW)).await;
    trickle(&p, Some(STUDENT)).await;
    trickle(&p, Some(TEACHER)).await;
    send("GET", &url(&gw, "/api/streams"), Some(ADMIN), &[], "").await;
    send("GET", &url(&gw, "/api/streams"), Some(&jwt), &[], "").await;
    for peer in [a, w, j, v, p] {
        peer.delete().await.expect("DELETE");
    }
    gw.shutdown().await;

    let text = captured_text("debug");
    assert!(
        text.contains("request denied") && text.contains("auth webhook timed out"),
        "the capture holds the gateway's debug output ({} bytes)",
        text.len()
    );
    for token in [
        ADMIN,
        TEACHER,
        STUDENT,
        HOST,
        BOGUS,
        SECRET,
        HOOK_ALLOW,
        HOOK_DENY,
        HOOK_SLOW,
        jwt.as_str(),
    ] {
        assert!(!text.contains(token), "a token appears in the logs");
    }
    // The JWT's signature alone, in case a log line showed only part of it.
    let signature = jwt.rsplit('.').next().unwrap_or_default();
    assert!(
        !text.contains(signature),
        "a JWT signature appears in the logs"
    );
}

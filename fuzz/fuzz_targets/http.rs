//! HTTP request handling: the gateway's whole signalling service (routes, auth, the per-address
//! POST limit, CORS, the API, the operations endpoints and the pages) driven in-process with
//! arbitrary methods, paths, headers and bodies, each request from a chosen client address.
//! Behind it run real shard threads on loopback UDP, so a POST with a valid offer is answered by
//! str0m. A sequence of requests can PATCH and DELETE the sessions its POSTs created.
//!
//! What must hold: no panic, no 5xx but the documented 503 (limits, a shard that does not
//! answer, `/readyz`), problem+json on every WHIP/WHEP refusal, and a 201 that says where its
//! session is.
#![no_main]

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderName, HeaderValue, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;
use wishcast::config::StreamRule;
use wishcast::peer::VideoCodec;
use wishcast::session::Role;
use wishcast::{Config, Gateway};
use wishcast_fuzz::offer;

const ADMIN: &str = "fuzz-admin-token";
const PUBLISH: &str = "fuzz-publish-token";
const PLAY: &str = "fuzz-play-token";
const JWT_SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";

#[derive(Arbitrary, Debug)]
enum Method {
    Get,
    Head,
    Post,
    Patch,
    Delete,
    Options,
    Put,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Path {
    Whip(String),
    Whep(String),
    /// A session resource: one this sequence created (by index), or made up.
    Session {
        whip: bool,
        created: u8,
        stream: Option<String>,
        id: Option<String>,
        tail: Option<String>,
    },
    Fixed(u8),
    Raw(String),
}

const FIXED: &[&str] = &[
    "/",
    "/api/streams",
    "/api/streams/live",
    "/api/openapi.json",
    "/metrics",
    "/healthz",
    "/readyz",
    "/watch/live",
    "/publish/live",
    "/whep/live",
    "/whip/live",
    "/whip/fuzz",
    "/whip/live?x=1",
    "/api/sessions/00000000000000000000000000000001",
];

#[derive(Arbitrary, Debug)]
enum Header {
    ContentType(u8),
    ContentTypeRaw(String),
    Bearer(u8),
    AuthorizationRaw(Vec<u8>),
    IfMatchEtag,
    IfMatch(String),
    ContentLength(String),
    Other(String, Vec<u8>),
}

const CONTENT_TYPES: &[&str] = &[
    "application/sdp",
    "application/trickle-ice-sdpfrag",
    "Application/SDP; charset=utf-8",
    "application/json",
    "text/plain",
];

#[derive(Arbitrary, Debug)]
enum BodyKind {
    Raw(Vec<u8>),
    /// A real offer (by index), with bytes overwritten at some offsets.
    Offer {
        which: u8,
        edits: Vec<(u16, u8)>,
    },
    Text(String),
}

#[derive(Arbitrary, Debug)]
struct Req {
    /// Which gateway: the open one or the one with auth on.
    authed: bool,
    client: u8,
    method: Method,
    path: Path,
    headers: Vec<Header>,
    body: BodyKind,
}

struct Created {
    location: String,
    etag: Option<String>,
}

struct Fixture {
    runtime: tokio::runtime::Runtime,
    open: Gateway,
    authed: Gateway,
    offers: Vec<String>,
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(fixture());
}

fn config(authed: bool) -> Config {
    let mut c = Config::default();
    c.http.listen = "127.0.0.1:0".parse().expect("addr");
    c.media.bind_ip = "127.0.0.1".parse().expect("ip");
    c.media.udp_base_port = 0;
    c.media.shards = 2;
    // Sessions that never connect stay until the sequence that made them deletes them.
    c.timeouts.connect_secs = 86_400.0;
    // Sequences come back to back and each creates sessions: the shards' measured load can
    // pass the admission threshold, and then the fixture's own publisher gets 503. Admission
    // and shedding have their own tests (tests/overload*.rs); here they would only turn the
    // requests being fuzzed away.
    c.limits.max_shard_load = 1.0;
    c.limits.shed_shard_load = 1.0;
    if authed {
        c.auth.enabled = true;
        c.auth.admin_tokens = vec![ADMIN.into()];
        c.auth.streams = vec![StreamRule {
            pattern: "li*".into(),
            publish_tokens: vec![PUBLISH.into()],
            play_tokens: vec![PLAY.into()],
            public_play: false,
        }];
        c.auth.jwt.hs256_secret = Some(JWT_SECRET.into());
    } else {
        // The limiter runs either way; here it does not stop the POSTs from reaching shards.
        c.limits.posts_per_minute_per_ip = 60_000_000;
        c.limits.post_burst_per_ip = 1_000_000;
    }
    c
}

fn fixture() -> Fixture {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (open, authed) = runtime.block_on(async {
        let open = Gateway::start(config(false)).await.expect("gateway starts");
        let authed = Gateway::start(config(true)).await.expect("gateway starts");
        (open, authed)
    });
    let offers = vec![
        offer(Role::Publish, Some(VideoCodec::H264), true),
        offer(Role::Publish, Some(VideoCodec::Vp8), false),
        offer(Role::Play, Some(VideoCodec::H264), true),
        offer(Role::Play, Some(VideoCodec::Vp9), true),
        offer(Role::Play, None, true),
    ];
    Fixture {
        runtime,
        open,
        authed,
        offers,
    }
}

/// A fresh address for each of the fixture's own POSTs, so the per-address limit that the
/// inputs run into never refuses them.
fn fixture_client() -> SocketAddr {
    thread_local! {
        static NEXT: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }
    let n = NEXT.with(|c| {
        c.set(c.get().wrapping_add(1));
        c.get()
    });
    let ip = Ipv4Addr::from(0x0a80_0000 | (n & 0x007f_ffff));
    SocketAddr::new(IpAddr::V4(ip), 1)
}

fn method(m: &Method) -> Option<axum::http::Method> {
    use axum::http::Method as M;
    Some(match m {
        Method::Get => M::GET,
        Method::Head => M::HEAD,
        Method::Post => M::POST,
        Method::Patch => M::PATCH,
        Method::Delete => M::DELETE,
        Method::Options => M::OPTIONS,
        Method::Put => M::PUT,
        Method::Other(s) => M::from_bytes(s.as_bytes()).ok()?,
    })
}

fn path(p: &Path, created: &[Created]) -> String {
    match p {
        Path::Whip(s) => format!("/whip/{s}"),
        Path::Whep(s) => format!("/whep/{s}"),
        Path::Session {
            whip,
            created: n,
            stream,
            id,
            tail,
        } => {
            let mut out = match created.get(usize::from(*n) % created.len().max(1)) {
                Some(c) if stream.is_none() && id.is_none() => c.location.clone(),
                _ => format!(
                    "/{}/{}/{}",
                    if *whip { "whip" } else { "whep" },
                    stream.as_deref().unwrap_or("live"),
                    id.as_deref().unwrap_or("0")
                ),
            };
            if let Some(t) = tail {
                out.push_str(t);
            }
            out
        }
        Path::Fixed(i) => FIXED[usize::from(*i) % FIXED.len()].to_string(),
        Path::Raw(s) => s.clone(),
    }
}

fn body(b: &BodyKind, offers: &[String]) -> Vec<u8> {
    match b {
        BodyKind::Raw(v) => v.clone(),
        BodyKind::Text(s) => s.clone().into_bytes(),
        BodyKind::Offer { which, edits } => {
            let mut sdp = offers[usize::from(*which) % offers.len()]
                .clone()
                .into_bytes();
            for &(at, byte) in edits {
                let len = sdp.len();
                sdp[usize::from(at) % len] = byte;
            }
            sdp
        }
    }
}

async fn send(gw: &Gateway, req: Request<Body>) -> (u16, axum::http::HeaderMap, Vec<u8>) {
    let res = gw
        .router()
        .oneshot(req)
        .await
        .expect("the router is infallible");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("a response body reads");
    (status, headers, bytes.to_vec())
}

fn request(r: &Req, created: &[Created], offers: &[String]) -> Option<(String, Request<Body>)> {
    let m = method(&r.method)?;
    let target = path(&r.path, created);
    let mut builder = Request::builder().method(m).uri(target.as_str());
    for h in &r.headers {
        let (name, value): (HeaderName, HeaderValue) = match h {
            Header::ContentType(i) => (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static(CONTENT_TYPES[usize::from(*i) % CONTENT_TYPES.len()]),
            ),
            Header::ContentTypeRaw(s) => (
                HeaderName::from_static("content-type"),
                HeaderValue::from_str(s).ok()?,
            ),
            Header::Bearer(i) => {
                let token = [ADMIN, PUBLISH, PLAY, "wrong"][usize::from(*i) % 4];
                (
                    HeaderName::from_static("authorization"),
                    HeaderValue::from_str(&format!("Bearer {token}")).ok()?,
                )
            }
            Header::AuthorizationRaw(v) => (
                HeaderName::from_static("authorization"),
                HeaderValue::from_bytes(v).ok()?,
            ),
            Header::IfMatchEtag => {
                let etag = created.last().and_then(|c| c.etag.clone())?;
                (
                    HeaderName::from_static("if-match"),
                    HeaderValue::from_str(&etag).ok()?,
                )
            }
            Header::IfMatch(s) => (
                HeaderName::from_static("if-match"),
                HeaderValue::from_str(s).ok()?,
            ),
            Header::ContentLength(s) => (
                HeaderName::from_static("content-length"),
                HeaderValue::from_str(s).ok()?,
            ),
            Header::Other(n, v) => (
                HeaderName::from_bytes(n.as_bytes()).ok()?,
                HeaderValue::from_bytes(v).ok()?,
            ),
        };
        builder = builder.header(name, value);
    }
    let client = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, r.client)), 50_000);
    let mut req = builder.body(Body::from(body(&r.body, offers))).ok()?;
    req.extensions_mut().insert(ConnectInfo(client));
    Some((target, req))
}

fn check(target: &str, status: u16, headers: &axum::http::HeaderMap) {
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    if status >= 500 {
        assert_eq!(
            status, 503,
            "{target}: only the documented 503 is a server error"
        );
        assert!(
            header("retry-after").is_some() || target.starts_with("/readyz"),
            "{target}: a 503 says when to retry"
        );
    }
    let signalling = target.starts_with("/whip/") || target.starts_with("/whep/");
    if signalling && status >= 400 {
        assert_eq!(
            header("content-type"),
            Some("application/problem+json"),
            "{target}: a refusal {status} explains itself"
        );
    }
    if status == 201 {
        assert!(
            header("location").is_some(),
            "{target}: a 201 has a Location"
        );
        assert!(header("etag").is_some(), "{target}: a 201 has an ETag");
    }
}

fuzz_target!(|reqs: Vec<Req>| {
    FIXTURE.with(|cell| {
        let fx = cell.borrow();
        fx.runtime.block_on(async {
            // Stream `live` has a publisher on both gateways (again, if a request ended it).
            for gw in [&fx.open, &fx.authed] {
                let req = Request::post("/whip/live")
                    .header("content-type", "application/sdp")
                    .header("authorization", format!("Bearer {ADMIN}"))
                    .body(Body::from(fx.offers[0].clone()))
                    .expect("request");
                let mut req = req;
                req.extensions_mut().insert(ConnectInfo(fixture_client()));
                let (status, _, body) = send(gw, req).await;
                assert!(
                    status == 201 || status == 409,
                    "live publisher: {status} {}",
                    String::from_utf8_lossy(&body)
                );
            }
            let mut created: [Vec<Created>; 2] = [Vec::new(), Vec::new()];
            for r in reqs.iter().take(8) {
                let (gw, made) = if r.authed {
                    (&fx.authed, &mut created[1])
                } else {
                    (&fx.open, &mut created[0])
                };
                let Some((target, req)) = request(r, made, &fx.offers) else {
                    continue;
                };
                let (status, headers, _) = send(gw, req).await;
                check(&target, status, &headers);
                if status == 201 {
                    if let Some(location) = headers.get("location").and_then(|v| v.to_str().ok()) {
                        made.push(Created {
                            location: location.to_string(),
                            etag: headers
                                .get("etag")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string),
                        });
                    }
                }
            }
            // What this sequence created goes, so the gateways start the next one alike.
            for (gw, made) in [(&fx.open, &created[0]), (&fx.authed, &created[1])] {
                for c in made {
                    let mut req = Request::delete(c.location.as_str())
                        .header("authorization", format!("Bearer {ADMIN}"))
                        .body(Body::empty())
                        .expect("request");
                    req.extensions_mut()
                        .insert(ConnectInfo(SocketAddr::from(([10, 1, 0, 1], 1))));
                    let (status, _, _) = send(gw, req).await;
                    assert!(status == 200 || status == 404, "cleanup DELETE: {status}");
                }
            }
            assert_eq!(fx.open.stats().panics, 0);
            assert_eq!(fx.authed.stats().panics, 0);
        });
    });
});

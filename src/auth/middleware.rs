//! The axum middleware in front of every route: it works out the right a request needs from
//! its method and path, asks the [`Authorizer`], and answers a refusal itself (as an
//! [`ApiError`]), so the handlers behind it never see a request that was not allowed.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tracing::debug;

use super::token::{same, token_hash};
use super::{Action, Authorizer, Decision};
use crate::http::error::ApiError;
use crate::hub::Hub;
use crate::live::Live;
use crate::session::SessionId;

/// What the middleware needs to decide: the rules, and the sessions' owners.
#[derive(Clone)]
pub struct Guard {
    /// Read once per request: a reload (SIGHUP) swaps the rules for the next ones.
    pub auth: Arc<Live<Authorizer>>,
    pub hub: Arc<Hub>,
}

/// Puts [`require`] in front of every route. It is there with auth off too, since a reload
/// may turn auth on.
pub fn layer(router: Router, auth: Arc<Live<Authorizer>>, hub: Arc<Hub>) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Guard { auth, hub },
        require,
    ))
}

/// The right a request needs, from its method and path.
#[derive(Debug, PartialEq, Eq)]
enum Need {
    Open,
    /// `/whip/{s}` or `/whep/{s}`: publish or play `s`.
    Endpoint(Action, String),
    /// `/whip/{s}/{id}`, `/whep/{s}/{id}`, and a WHEP session's event streams under
    /// `/whep/{s}/{id}/sse`: the creating token or an admin.
    Session(String),
    /// `/api/*` and anything unknown.
    Admin,
}

fn need(method: &Method, path: &str) -> Need {
    // CORS preflights carry no credentials (Fetch standard), and OPTIONS reveals nothing.
    if method == Method::OPTIONS {
        return Need::Open;
    }
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        ["healthz"] | ["readyz"] | ["metrics"] => Need::Open,
        ["whip", s] => Need::Endpoint(Action::Publish, percent_decode(s)),
        ["whep", s] => Need::Endpoint(Action::Play, percent_decode(s)),
        ["whip" | "whep", _, id] => Need::Session(percent_decode(id)),
        ["whep", _, id, "sse" | "layer"] | ["whep", _, id, "sse", _] => {
            Need::Session(percent_decode(id))
        }
        // Everything else, `/api/*` included, is for admins: a route added later is protected
        // until someone decides otherwise.
        _ => Need::Admin,
    }
}

/// The stream name as the router's `Path` extractor will see it, so a pattern is matched against
/// the same name the handler serves (`%61` is `a` to both).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then(|| token.to_string())
}

/// The middleware: lets a request through only with the right it needs, and records the hash of
/// the token that created a session so only that token (or an admin) may control it.
pub async fn require(State(guard): State<Guard>, req: Request, next: Next) -> Response {
    let auth = guard.auth.get();
    if !auth.enabled() {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let need = need(&method, req.uri().path());
    let token = bearer(req.headers());
    let client = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match need {
        Need::Open => next.run(req).await,
        Need::Admin => {
            match auth
                .check(token.as_deref(), Action::Admin, None, client)
                .await
            {
                Decision::Allow => next.run(req).await,
                d => deny(d, "admin access"),
            }
        }
        Need::Endpoint(action, stream) => {
            match auth
                .check(token.as_deref(), action, Some(&stream), client)
                .await
            {
                Decision::Allow => {}
                d => {
                    let what = format!("{} on stream {stream:?}", action.name());
                    return deny(d, &what);
                }
            }
            let res = next.run(req).await;
            // A 406 created a session too: the one a counter-offer's answer is PATCHed to.
            let created = matches!(
                res.status(),
                StatusCode::CREATED | StatusCode::NOT_ACCEPTABLE
            );
            if method == Method::POST && created {
                if let (Some(t), Some(id)) = (&token, created_session(&res)) {
                    guard.hub.set_owner(id, token_hash(t));
                }
            }
            res
        }
        Need::Session(id) => {
            let entry = id
                .parse::<SessionId>()
                .ok()
                .and_then(|id| guard.hub.session(id));
            let decision = match (&entry, &token) {
                // Nothing to protect: the handler answers 404.
                (None, Some(_)) => Decision::Allow,
                (None, None) => Decision::NoToken,
                // Created without a token (public play): as open as its creation was.
                (Some(e), _) if e.owner.is_none() => Decision::Allow,
                (Some(e), Some(t)) if e.owner.is_some_and(|o| same(&o, &token_hash(t))) => {
                    Decision::Allow
                }
                (Some(e), t) => {
                    auth.check(t.as_deref(), Action::Admin, Some(&e.stream), client)
                        .await
                }
            };
            match decision {
                Decision::Allow => next.run(req).await,
                d => deny(
                    d,
                    "control of this session: only the token that created it, or an admin token",
                ),
            }
        }
    }
}

/// The session a 201 created, from its `Location` (`/whip/{stream}/{id}`).
fn created_session(res: &Response) -> Option<SessionId> {
    let location = res.headers().get(header::LOCATION)?.to_str().ok()?;
    let id = location.rsplit('/').next()?;
    id.parse().ok()
}

/// A 401 or 403 through the project's error mapping, readable by browsers on other origins:
/// this layer sits outside the router's CORS middleware.
fn deny(d: Decision, what: &str) -> Response {
    debug!(right = what, decision = ?d, "request denied");
    let err = match d {
        Decision::Forbidden => ApiError::Forbidden(what.to_string()),
        Decision::InvalidToken => ApiError::Unauthorized {
            invalid_token: true,
        },
        Decision::NoToken | Decision::Allow => ApiError::Unauthorized {
            invalid_token: false,
        },
    };
    err.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::any;
    use serde_json::Value;
    use tower::ServiceExt;

    use crate::auth::testing::*;
    use crate::session::Role;

    #[test]
    fn requests_map_to_the_right_they_need() {
        use Need::*;
        let m = |method: Method, path: &str| need(&method, path);
        assert_eq!(
            m(Method::POST, "/whip/s"),
            Endpoint(Action::Publish, "s".into())
        );
        assert_eq!(
            m(Method::GET, "/whip/s"),
            Endpoint(Action::Publish, "s".into())
        );
        assert_eq!(
            m(Method::HEAD, "/whep/s"),
            Endpoint(Action::Play, "s".into())
        );
        assert_eq!(m(Method::OPTIONS, "/whip/s"), Open);
        assert_eq!(m(Method::OPTIONS, "/whep/s/abc"), Open);
        assert_eq!(m(Method::DELETE, "/whep/s/abc"), Session("abc".into()));
        assert_eq!(m(Method::PATCH, "/whip/s/abc"), Session("abc".into()));
        assert_eq!(m(Method::POST, "/whep/s/abc/sse"), Session("abc".into()));
        assert_eq!(m(Method::GET, "/whep/s/abc/sse/e1"), Session("abc".into()));
        assert_eq!(
            m(Method::DELETE, "/whep/s/abc/sse/e1"),
            Session("abc".into())
        );
        assert_eq!(m(Method::GET, "/whip/s/abc/sse"), Admin);
        assert_eq!(m(Method::GET, "/api/streams"), Admin);
        assert_eq!(m(Method::GET, "/api"), Admin);
        assert_eq!(m(Method::GET, "/healthz"), Open);
        assert_eq!(m(Method::GET, "/readyz"), Open);
        assert_eq!(m(Method::GET, "/metrics"), Open);
        assert_eq!(m(Method::GET, "/"), Admin);
        assert_eq!(m(Method::GET, "/whip/a/b/c"), Admin);
        // Matched against the decoded name the handler serves.
        assert_eq!(
            m(Method::POST, "/whip/%61bcd"),
            Endpoint(Action::Publish, "abcd".into())
        );
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    #[test]
    fn bearer_tokens_are_read_from_authorization() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(
                header::AUTHORIZATION,
                axum::http::HeaderValue::from_str(v).expect("value"),
            );
            bearer(&m)
        };
        assert_eq!(h("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(h("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(h("Basic abc"), None);
        assert_eq!(h("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }

    /// The middleware on a router standing in for the gateway's: POST registers a session in the
    /// hub and answers 201 with its Location; everything else answers 204.
    fn app(auth: &str) -> (Router, Arc<Hub>) {
        let hub = Arc::new(Hub::new(1));
        let h = hub.clone();
        let create = move |axum::extract::Path(stream): axum::extract::Path<String>,
                           method: Method| {
            let h = h.clone();
            async move {
                if method != Method::POST {
                    return StatusCode::NO_CONTENT.into_response();
                }
                let id = SessionId::random();
                let none = (Vec::new(), Vec::new());
                // Stand-in: publishers and viewers alike register as publishers of their own
                // stream name, which is all ownership needs.
                let name = format!("{stream}-{id}");
                if h.register(id, &name, Role::Publish, &Default::default(), none)
                    .is_err()
                {
                    return StatusCode::CONFLICT.into_response();
                }
                let location = format!("/whip/{stream}/{id}");
                (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
            }
        };
        let router = Router::new()
            .route("/whip/{stream}", any(create.clone()))
            .route("/whep/{stream}", any(create))
            .route(
                "/whip/{stream}/{id}",
                any(|| async { StatusCode::NO_CONTENT }),
            )
            .route("/api/streams", any(|| async { StatusCode::OK }))
            .route("/healthz", any(|| async { StatusCode::OK }));
        let auth = Arc::new(Live::new(authorizer(auth)));
        // CORS around auth, as the gateway stacks them.
        let app =
            layer(router, auth, hub.clone()).layer(axum::middleware::from_fn(crate::http::cors));
        (app, hub)
    }

    async fn send(app: &Router, method: Method, path: &str, token: Option<&str>) -> Response {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(axum::body::Body::empty()).expect("request");
        app.clone().oneshot(req).await.expect("infallible")
    }

    async fn problem(res: Response) -> Value {
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .expect("body");
        serde_json::from_slice(&body).expect("problem+json")
    }

    #[tokio::test]
    async fn middleware_statuses_and_challenges() {
        let (app, _) = app(STATIC);
        let r = send(&app, Method::POST, "/whip/class-1", None).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"wishcast\"")
        );
        assert_eq!(
            r.headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
            Some("application/problem+json")
        );
        assert_eq!(
            r.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .and_then(|v| v.to_str().ok()),
            Some("*")
        );
        let p = problem(r).await;
        assert_eq!(p["status"], 401);
        assert!(
            p["detail"].as_str().unwrap_or_default().contains("Bearer"),
            "{p}"
        );

        let r = send(&app, Method::POST, "/whip/class-1", Some("wrong")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.headers()
                .get(header::WWW_AUTHENTICATE)
                .and_then(|v| v.to_str().ok()),
            Some("Bearer realm=\"wishcast\", error=\"invalid_token\"")
        );
        let r = send(&app, Method::POST, "/whip/class-1", Some("student")).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let p = problem(r).await;
        assert!(
            p["detail"].as_str().unwrap_or_default().contains("publish"),
            "{p}"
        );

        assert_eq!(
            send(&app, Method::POST, "/whip/class-1", Some("teacher"))
                .await
                .status(),
            StatusCode::CREATED
        );
        assert_eq!(
            send(&app, Method::GET, "/whip/class-1", Some("teacher"))
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            send(&app, Method::HEAD, "/whip/class-1", None)
                .await
                .status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::OPTIONS, "/whip/class-1", None)
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        assert_eq!(
            send(&app, Method::POST, "/whep/lobby", None).await.status(),
            StatusCode::CREATED
        );
        assert_eq!(
            send(&app, Method::GET, "/api/streams", None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::GET, "/api/streams", Some("teacher"))
                .await
                .status(),
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            send(&app, Method::GET, "/api/streams", Some("root-token"))
                .await
                .status(),
            StatusCode::OK
        );
        assert_eq!(
            send(&app, Method::GET, "/healthz", None).await.status(),
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn sessions_answer_only_their_creator_or_an_admin() {
        let (app, hub) = app(&format!(
            "{STATIC}\n[[streams]]\npattern = \"*\"\npublish_tokens = [\"other\"]\n"
        ));
        let r = send(&app, Method::POST, "/whip/class-1", Some("teacher")).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("Location")
            .to_string();
        let id: SessionId = location
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("id");
        assert_eq!(
            hub.session(id).and_then(|s| s.owner),
            Some(token_hash("teacher")),
            "the creator's token hash is recorded"
        );
        for method in [Method::PATCH, Method::DELETE, Method::GET] {
            let status = |t| {
                let (app, location, method) = (app.clone(), location.clone(), method.clone());
                async move { send(&app, method, &location, t).await.status() }
            };
            assert_eq!(status(None).await, StatusCode::UNAUTHORIZED, "{method}");
            assert_eq!(
                status(Some("student")).await,
                StatusCode::FORBIDDEN,
                "{method}"
            );
            assert_eq!(
                status(Some("other")).await,
                StatusCode::FORBIDDEN,
                "{method}"
            );
            assert_eq!(
                status(Some("garbage")).await,
                StatusCode::UNAUTHORIZED,
                "{method}"
            );
            assert_eq!(
                status(Some("teacher")).await,
                StatusCode::NO_CONTENT,
                "{method}"
            );
            assert_eq!(
                status(Some("root-token")).await,
                StatusCode::NO_CONTENT,
                "{method}"
            );
        }
        assert_eq!(
            send(&app, Method::OPTIONS, &location, None).await.status(),
            StatusCode::NO_CONTENT
        );
        // Unknown sessions: 401 without a token, else on to the handler (404 in the gateway).
        let unknown = format!("/whip/class-1/{}", SessionId::random());
        assert_eq!(
            send(&app, Method::DELETE, &unknown, None).await.status(),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            send(&app, Method::DELETE, &unknown, Some("teacher"))
                .await
                .status(),
            StatusCode::NO_CONTENT
        );
        // A public viewer's session, created without a token, is as open as its creation.
        let r = send(&app, Method::POST, "/whep/lobby", None).await;
        let location = r
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .expect("Location")
            .to_string();
        assert_eq!(
            send(&app, Method::DELETE, &location, None).await.status(),
            StatusCode::NO_CONTENT
        );
    }

    #[tokio::test]
    async fn auth_off_adds_no_layer() {
        let (app, hub) = app("");
        let r = send(&app, Method::POST, "/whip/x", None).await;
        assert_eq!(r.status(), StatusCode::CREATED);
        assert!(hub.lock().sessions.values().all(|s| s.owner.is_none()));
        assert_eq!(
            send(&app, Method::GET, "/api/streams", None).await.status(),
            StatusCode::OK
        );
    }
}

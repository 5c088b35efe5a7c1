//! A WHEP event stream's long pull as a player reads it (the server-sent events extension):
//! each message must be exactly an `event:` line and one `data:` line of compact JSON.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// An open long pull: the response head, and its body read message by message.
pub struct Sse {
    pub status: u16,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    body: hyper::body::Incoming,
    buf: Vec<u8>,
    ended: bool,
}

/// GETs `url` over HTTP/1.1 and returns as soon as the head arrived.
pub async fn open(url: &str, token: Option<&str>) -> Sse {
    let uri: hyper::Uri = url.parse().expect("URL");
    let authority = uri.authority().expect("authority").to_string();
    let tcp = tokio::net::TcpStream::connect(&authority)
        .await
        .expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .expect("HTTP/1.1 handshake");
    tokio::spawn(conn);
    let mut req = hyper::Request::get(uri.path())
        .header("host", authority)
        .header("accept", "text/event-stream");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .expect("request");
    let res = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("the head within 10 s")
        .expect("a response");
    let header = |n: &str| {
        res.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Sse {
        status: res.status().as_u16(),
        content_type: header("content-type"),
        cache_control: header("cache-control"),
        buf: Vec::new(),
        ended: false,
        body: res.into_body(),
    }
}

impl Sse {
    /// The next message within `wait`, comments skipped: `None` if the body ended first.
    /// Each message must be exactly an `event:` line and one `data:` line of JSON.
    pub async fn next(&mut self, wait: Duration) -> Option<(String, Value)> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).expect("UTF-8 event stream");
                let lines: Vec<&str> = text.trim_end_matches('\n').split('\n').collect();
                if lines.iter().all(|l| l.starts_with(':')) {
                    continue;
                }
                assert_eq!(lines.len(), 2, "one event line and one data line: {text:?}");
                let name = lines[0]
                    .strip_prefix("event: ")
                    .unwrap_or_else(|| panic!("event line first: {text:?}"));
                let data = lines[1]
                    .strip_prefix("data: ")
                    .unwrap_or_else(|| panic!("then the data line: {text:?}"));
                let value: Value = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("data is JSON ({e}): {text:?}"));
                // Compact: as long as its re-serialisation (which may order keys otherwise).
                assert_eq!(value.to_string().len(), data.len(), "compact JSON: {data}");
                return Some((name.to_string(), value));
            }
            if self.ended {
                assert!(self.buf.is_empty(), "a partial message at the end");
                return None;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let frame = tokio::time::timeout(left, self.body.frame())
                .await
                .unwrap_or_else(|_| panic!("an event within {wait:?}"));
            match frame {
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                _ => self.ended = true,
            }
        }
    }

    /// The next message, which must be `name` with `data`.
    pub async fn expect(&mut self, name: &str, data: Value) {
        let got = self.next(Duration::from_secs(10)).await;
        assert_eq!(got, Some((name.to_string(), data)));
    }

    /// The body ends within `wait` with no further message.
    pub async fn expect_end(&mut self, wait: Duration) {
        assert_eq!(self.next(wait).await, None, "the long pull ends");
    }
}

//! Per-client-IP rate limit on session creation (WHIP/WHEP POSTs): a token bucket per address,
//! so one client cannot flood the shards with offers. Other requests are not limited.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;

/// Buckets kept before idle (full) ones are dropped, bounding memory under address churn.
const MAX_TRACKED: usize = 65_536;

pub struct PostRate {
    per_sec: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl PostRate {
    /// `None` when the limit is off (`per_minute == 0`).
    pub fn new(per_minute: u32, burst: u32) -> Option<Arc<PostRate>> {
        (per_minute > 0).then(|| {
            Arc::new(PostRate {
                per_sec: f64::from(per_minute) / 60.0,
                burst: f64::from(burst.max(1)),
                buckets: Mutex::new(HashMap::new()),
            })
        })
    }

    /// Takes one token for `ip`; `Err(seconds)` until the next one if none is left.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Result<(), u32> {
        let mut b = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if b.len() >= MAX_TRACKED {
            let (per_sec, burst) = (self.per_sec, self.burst);
            b.retain(|_, (tokens, at)| {
                *tokens + now.saturating_duration_since(*at).as_secs_f64() * per_sec < burst
            });
        }
        let (tokens, at) = b.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / self.per_sec).ceil().max(1.0) as u32)
        }
    }
}

/// Refuses a POST to `/whip/{s}` or `/whep/{s}` beyond the client's rate with 429.
pub async fn limit_posts(State(rate): State<Arc<PostRate>>, req: Request, next: Next) -> Response {
    let creates = req.method() == Method::POST && {
        let segs: Vec<&str> = req.uri().path().trim_matches('/').split('/').collect();
        segs.len() == 2 && (segs[0] == "whip" || segs[0] == "whep")
    };
    let ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    if let (true, Some(ip)) = (creates, ip) {
        if let Err(retry) = rate.take(ip, Instant::now()) {
            return ApiError::TooManyRequests(retry).into_response();
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_rate() {
        let r = PostRate::new(60, 3).expect("on");
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        let t = Instant::now();
        for _ in 0..3 {
            assert_eq!(r.take(ip, t), Ok(()));
        }
        assert_eq!(r.take(ip, t), Err(1), "one per second after the burst");
        assert_eq!(r.take(other, t), Ok(()), "each address has its own bucket");
        assert_eq!(r.take(ip, t + Duration::from_millis(1100)), Ok(()));
        assert!(PostRate::new(0, 3).is_none());
    }
}

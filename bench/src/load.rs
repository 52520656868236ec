//! The load loops of `pg-load` and their report.
//!
//! Every connection has at most one request in flight. Closed loop: each connection sends the
//! next request as soon as the previous answer is complete; throughput counts the answers that
//! complete inside the measured window. Open loop: request `k` (over all connections) is due at
//! `start + k / rate`, whatever the answers do, and its latency runs from when it was due, so a
//! slow answer that delays the next sends on its connection is charged to the server (no
//! coordinated omission, as wrk2 does it). When a connection is idle at a due time, the timer's
//! own lateness (tokio sleeps round up to the millisecond) is the generator's, not the server's:
//! latency then runs from the moment the send actually starts.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::client::{ClientError, Conn, Response, Target};

/// Highest latency the histograms hold (one hour, in microseconds); above it values saturate.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Significant decimal digits of the histograms.
const HISTOGRAM_DIGITS: u8 = 3;
/// Pause after a failed connect, so a dead server is not hammered in a hot loop.
const RECONNECT_PAUSE: Duration = Duration::from_millis(10);

/// Closed or open loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Mode {
    /// Back-to-back on every connection.
    Closed,
    /// A fixed offered rate in requests per second over all connections.
    Open {
        /// Requests per second.
        rate: f64,
    },
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open { .. } => "open",
        }
    }
}

/// Everything a run needs.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Free-form name of the leg, echoed in the report.
    pub label: String,
    /// Where to send.
    pub target: Target,
    /// Bearer token, if any.
    pub token: Option<String>,
    /// Form body (`amount=...&currency=...`).
    pub body: String,
    /// Number of keep-alive connections.
    pub connections: usize,
    /// Unmeasured time before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// Closed or open loop.
    pub mode: Mode,
    /// Statuses that count as success.
    pub expect_status: Vec<u16>,
    /// Longest wait for one response.
    pub request_timeout: Duration,
}

/// A request rendered into a reused buffer: the fixed bytes around a unique `Idempotency-Key`.
#[derive(Debug)]
struct RequestTemplate {
    before_key: Vec<u8>,
    after_key: Vec<u8>,
    key_prefix: String,
}

impl RequestTemplate {
    fn new(cfg: &LoadConfig, run_id: &str, conn: usize) -> RequestTemplate {
        let mut before = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\n",
            cfg.target.path, cfg.target.authority
        );
        if let Some(token) = &cfg.token {
            before.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        before.push_str("Idempotency-Key: ");
        let after = format!(
            "\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{}",
            cfg.body.len(),
            cfg.body
        );
        RequestTemplate {
            before_key: before.into_bytes(),
            after_key: after.into_bytes(),
            key_prefix: format!("bench-{run_id}-{conn}-"),
        }
    }

    fn render(&self, seq: u64, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&self.before_key);
        out.extend_from_slice(self.key_prefix.as_bytes());
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{seq}");
        out.extend_from_slice(&self.after_key);
    }
}

/// A run id that differs between invocations, so keys never repeat across legs of one agent.
fn run_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// What one connection saw inside the measured window.
#[derive(Debug)]
struct ConnStats {
    latency_us: Histogram<u64>,
    requests: u64,
    errors: u64,
    statuses: BTreeMap<u16, u64>,
    transport_errors: u64,
    first_error: Option<String>,
}

impl ConnStats {
    fn new() -> ConnStats {
        ConnStats {
            latency_us: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_DIGITS)
                .expect("constant histogram bounds are valid"),
            requests: 0,
            errors: 0,
            statuses: BTreeMap::new(),
            transport_errors: 0,
            first_error: None,
        }
    }

    fn record(&mut self, outcome: &Result<Response, String>, latency: Duration, expect: &[u16]) {
        self.requests += 1;
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_us.saturating_record(us);
        match outcome {
            Ok(r) => {
                *self.statuses.entry(r.status).or_default() += 1;
                if !expect.contains(&r.status) {
                    self.errors += 1;
                    self.first_error
                        .get_or_insert_with(|| format!("unexpected status {}", r.status));
                }
            }
            Err(e) => {
                self.errors += 1;
                self.transport_errors += 1;
                self.first_error.get_or_insert_with(|| e.clone());
            }
        }
    }

    fn merge(&mut self, other: ConnStats) {
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.requests += other.requests;
        self.errors += other.errors;
        self.transport_errors += other.transport_errors;
        for (s, n) in other.statuses {
            *self.statuses.entry(s).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }
}

/// Send one request on `conn`, connecting first if needed; drops the connection on failure or
/// when the server will not reuse it.
async fn exchange(
    conn: &mut Option<Conn>,
    addr: std::net::SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<Response, String> {
    let attempt = async {
        if conn.is_none() {
            *conn = Some(Conn::connect(addr).await?);
        }
        match conn.as_mut() {
            Some(c) => c.exchange(request).await,
            None => Err(ClientError::Closed),
        }
    };
    let result = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no response within {} ms", timeout.as_millis())),
    };
    if !matches!(
        result,
        Ok(Response {
            keep_alive: true,
            ..
        })
    ) {
        *conn = None;
    }
    result
}

/// The loop of connection `idx` of `n`.
async fn connection_loop(
    cfg: Arc<LoadConfig>,
    run_id: Arc<str>,
    idx: usize,
    start: Instant,
) -> ConnStats {
    let template = RequestTemplate::new(&cfg, &run_id, idx);
    let window_start = start + cfg.warmup;
    let end = window_start + cfg.duration;
    let hard_end = end + cfg.request_timeout;
    let mut stats = ConnStats::new();
    let mut conn: Option<Conn> = None;
    let mut buf = Vec::with_capacity(512);
    let mut seq: u64 = 0;
    loop {
        let (origin, due) = match cfg.mode {
            Mode::Closed => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                (now, now)
            }
            Mode::Open { rate } => {
                let k = seq as f64 * cfg.connections as f64 + idx as f64;
                let due = start + Duration::from_secs_f64(k / rate);
                if due >= end {
                    break;
                }
                if Instant::now() < due {
                    tokio::time::sleep_until(due).await;
                    (Instant::now().max(due), due)
                } else {
                    (due, due)
                }
            }
        };
        seq += 1;
        template.render(seq, &mut buf);
        let timeout = cfg
            .request_timeout
            .min(hard_end.saturating_duration_since(Instant::now()));
        let outcome = exchange(&mut conn, cfg.target.addr, &buf, timeout).await;
        let done = Instant::now();
        let in_window = match cfg.mode {
            Mode::Closed => done >= window_start && done <= end,
            Mode::Open { .. } => due >= window_start,
        };
        if in_window {
            stats.record(
                &outcome,
                done.saturating_duration_since(origin),
                &cfg.expect_status,
            );
        }
        if outcome.is_err() && conn.is_none() && done < end {
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
        if done >= hard_end {
            break;
        }
    }
    stats
}

/// Run the load and return the one-line JSON report.
pub async fn run(cfg: LoadConfig) -> Value {
    assert!(cfg.connections > 0, "at least one connection");
    let cfg = Arc::new(cfg);
    let run_id: Arc<str> = run_id().into();
    let start = Instant::now();
    let tasks: Vec<_> = (0..cfg.connections)
        .map(|i| tokio::spawn(connection_loop(cfg.clone(), run_id.clone(), i, start)))
        .collect();
    let mut total = ConnStats::new();
    let mut panicked = 0u64;
    for t in tasks {
        match t.await {
            Ok(s) => total.merge(s),
            Err(_) => panicked += 1,
        }
    }
    report(&cfg, &total, panicked)
}

fn report(cfg: &LoadConfig, s: &ConnStats, panicked: u64) -> Value {
    let secs = cfg.duration.as_secs_f64();
    let ok = s.requests - s.errors;
    let h = &s.latency_us;
    let q = |p: f64| {
        if s.requests == 0 {
            0
        } else {
            h.value_at_quantile(p)
        }
    };
    let statuses: serde_json::Map<String, Value> = s
        .statuses
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "label": cfg.label,
        "mode": cfg.mode.name(),
        "url": format!("http://{}{}", cfg.target.authority, cfg.target.path),
        "connections": cfg.connections,
        "warmup_secs": cfg.warmup.as_secs_f64(),
        "duration_secs": secs,
        "offered_rps": match cfg.mode { Mode::Open { rate } => json!(rate), Mode::Closed => Value::Null },
        "requests": s.requests,
        "ok": ok,
        "errors": s.errors,
        "transport_errors": s.transport_errors,
        "rps": (ok as f64 / secs * 10.0).round() / 10.0,
        "mean_us": (h.mean() * 10.0).round() / 10.0,
        "p50_us": q(0.50),
        "p90_us": q(0.90),
        "p99_us": q(0.99),
        "p999_us": q(0.999),
        "max_us": if s.requests == 0 { 0 } else { h.max() },
        "statuses": statuses,
        "first_error": s.first_error,
        "panicked_connections": panicked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn config(target: Target, mode: Mode) -> LoadConfig {
        LoadConfig {
            label: "t".into(),
            target,
            token: Some("pg_agent_x".into()),
            body: "amount=1000&currency=usd".into(),
            connections: 2,
            warmup: Duration::from_millis(0),
            duration: Duration::from_millis(300),
            mode,
            expect_status: vec![200],
            request_timeout: Duration::from_secs(2),
        }
    }

    #[test]
    fn keys_are_unique_per_request() {
        let target = Target::parse("http://127.0.0.1:9/v1/payment_intents").unwrap();
        let t = RequestTemplate::new(&config(target, Mode::Closed), "r", 3);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        t.render(1, &mut a);
        t.render(2, &mut b);
        let a = String::from_utf8(a).unwrap();
        assert!(a.contains("Idempotency-Key: bench-r-3-1\r\n"), "{a}");
        assert!(a.ends_with("\r\n\r\namount=1000&currency=usd"));
        assert_ne!(a.as_bytes(), b.as_slice());
    }

    /// A server that answers chunked, then length-framed with a wrong status, then garbage.
    async fn odd_server(listener: TcpListener) {
        let answers: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
            b"HTTP/1.1 500 Oops\r\nContent-Length: 2\r\n\r\nno",
            b"garbage\r\n\r\n",
        ];
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        for a in answers {
            let mut got = Vec::new();
            while !got.windows(24).any(|w| w == b"amount=1000&currency=usd") {
                let n = s.read(&mut buf).await.unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(a).await.unwrap();
        }
    }

    #[tokio::test]
    async fn unexpected_answers_are_counted_as_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(odd_server(listener));
        let mut conn = None;
        let req =
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\namount=1000&currency=usd";
        let t = Duration::from_secs(2);
        assert_eq!(
            exchange(&mut conn, addr, req, t).await,
            Ok(Response {
                status: 200,
                keep_alive: true
            })
        );
        assert_eq!(
            exchange(&mut conn, addr, req, t).await,
            Ok(Response {
                status: 500,
                keep_alive: true
            })
        );
        assert!(exchange(&mut conn, addr, req, t).await.is_err());
        assert!(conn.is_none(), "a broken connection is dropped");
    }

    #[tokio::test]
    async fn closed_loop_against_nothing_reports_errors_without_panicking() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let target = Target::parse(&format!("http://{addr}/")).unwrap();
        let report = run(config(target, Mode::Open { rate: 100.0 })).await;
        assert_eq!(report["ok"], 0);
        assert!(report["errors"].as_u64().unwrap() > 0, "{report}");
        assert_eq!(report["panicked_connections"], 0);
    }
}

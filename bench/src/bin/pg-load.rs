//! `pg-load`: the project's own load generator (PERFORMANCE.md). Closed loop for throughput,
//! open loop at a fixed rate for latency (from the scheduled send time, HDR histogram in µs).
//! Prints one JSON line.

use std::time::Duration;

use anyhow::{Context, bail};
use bench::client::Target;
use bench::load::{LoadConfig, Mode};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Closed,
    Open,
}

/// Load generator: keep-alive HTTP/1.1, one request in flight per connection, a unique
/// Idempotency-Key on every request.
#[derive(Debug, Parser)]
#[command(name = "pg-load")]
struct Args {
    /// Target, e.g. http://127.0.0.1:8080/v1/payment_intents.
    #[arg(long)]
    url: String,
    /// Agent token sent as `Authorization: Bearer`.
    #[arg(long)]
    token: Option<String>,
    /// Amount in minor units (form field `amount`).
    #[arg(long, default_value_t = 1000)]
    amount: i64,
    /// Currency (form field `currency`).
    #[arg(long, default_value = "usd")]
    currency: String,
    /// Keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Measured window.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Unmeasured warm-up before the window.
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// closed (back-to-back) or open (fixed --rate).
    #[arg(long, value_enum, default_value = "closed")]
    mode: ModeArg,
    /// Offered requests per second over all connections (open loop).
    #[arg(long)]
    rate: Option<f64>,
    /// Statuses that count as success, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "200")]
    expect_status: Vec<u16>,
    /// Longest wait for one response.
    #[arg(long, default_value_t = 10.0)]
    timeout_secs: f64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Name of the leg, echoed in the report.
    #[arg(long, default_value = "")]
    label: String,
}

/// Longest run accepted, so a typo cannot start an hour-long load.
const MAX_RUN_SECS: f64 = 600.0;

fn config(args: &Args) -> anyhow::Result<LoadConfig> {
    let secs = |name: &str, v: f64| -> anyhow::Result<Duration> {
        if !(0.0..=MAX_RUN_SECS).contains(&v) {
            bail!("--{name} must be within 0..={MAX_RUN_SECS} seconds");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let mode = match (args.mode, args.rate) {
        (ModeArg::Closed, _) => Mode::Closed,
        (ModeArg::Open, Some(rate)) if rate > 0.0 && rate.is_finite() => Mode::Open { rate },
        (ModeArg::Open, _) => bail!("--mode open needs a positive --rate"),
    };
    if args.connections == 0 || args.connections > 10_000 {
        bail!("--connections must be within 1..=10000");
    }
    let duration = secs("duration-secs", args.duration_secs)?;
    if duration.is_zero() {
        bail!("--duration-secs must be positive");
    }
    Ok(LoadConfig {
        label: args.label.clone(),
        target: Target::parse(&args.url).map_err(anyhow::Error::msg)?,
        token: args.token.clone(),
        body: format!("amount={}&currency={}", args.amount, args.currency),
        connections: args.connections,
        warmup: secs("warmup-secs", args.warmup_secs)?,
        duration,
        mode,
        expect_status: args.expect_status.clone(),
        request_timeout: secs("timeout-secs", args.timeout_secs)?.max(Duration::from_millis(1)),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = config(&args)?;
    let report = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the runtime")?
        .block_on(bench::load::run(cfg));
    println!("{report}");
    Ok(())
}

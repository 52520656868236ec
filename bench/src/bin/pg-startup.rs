//! `pg-startup`: startup time of a server, from process start to its port accepting TCP
//! connections, over several runs (PERFORMANCE.md). Each run starts the command, probes the port
//! every millisecond, then stops the process with SIGTERM (so the store closes cleanly and the
//! next start is not a recovery) and waits for it.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;

/// Gap between two connection probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(1);
/// Longest wait for a probe's connect.
const PROBE_TIMEOUT: Duration = Duration::from_millis(100);
/// Longest wait for the process to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// Measure process start → port accepting.
#[derive(Debug, Parser)]
#[command(name = "pg-startup")]
struct Args {
    /// Address the server listens on.
    #[arg(long)]
    addr: SocketAddr,
    /// Number of starts.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Longest wait for the port, per run.
    #[arg(long, default_value_t = 30.0)]
    timeout_secs: f64,
    /// Where the server's stdout and stderr go (appended); discarded when absent.
    #[arg(long)]
    log: Option<std::path::PathBuf>,
    /// The server command and its arguments.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn output(log: Option<&std::path::Path>) -> anyhow::Result<(Stdio, Stdio)> {
    Ok(match log {
        None => (Stdio::null(), Stdio::null()),
        Some(p) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open {}", p.display()))?;
            (Stdio::from(f.try_clone()?), Stdio::from(f))
        }
    })
}

fn stop(child: &mut Child) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if child.try_wait()?.is_some() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    child.wait()?;
    bail!(
        "the server ignored SIGTERM for {} s",
        STOP_TIMEOUT.as_secs()
    )
}

fn one_run(args: &Args) -> anyhow::Result<f64> {
    if TcpStream::connect_timeout(&args.addr, PROBE_TIMEOUT).is_ok() {
        bail!("{} already accepts connections before the start", args.addr);
    }
    let (out, err) = output(args.log.as_deref())?;
    let t0 = Instant::now();
    let mut child = Command::new(&args.command[0])
        .args(&args.command[1..])
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot start {}", args.command[0]))?;
    let deadline = t0 + Duration::from_secs_f64(args.timeout_secs);
    let ready = loop {
        if TcpStream::connect_timeout(&args.addr, PROBE_TIMEOUT).is_ok() {
            break Ok(t0.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            break Err(anyhow::anyhow!(
                "the server exited before accepting: {status}"
            ));
        }
        if Instant::now() >= deadline {
            break Err(anyhow::anyhow!(
                "{} not accepting after {} s",
                args.addr,
                args.timeout_secs
            ));
        }
        std::thread::sleep(PROBE_INTERVAL);
    };
    stop(&mut child)?;
    Ok(ready?.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 || args.runs > 100 {
        bail!("--runs must be within 1..=100");
    }
    let mut ms = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        ms.push(one_run(&args)?);
    }
    let mut sorted = ms.clone();
    sorted.sort_by(f64::total_cmp);
    let round = |v: f64| (v * 10.0).round() / 10.0;
    println!(
        "{}",
        json!({
            "runs_ms": ms.iter().map(|v| round(*v)).collect::<Vec<_>>(),
            "min_ms": round(sorted[0]),
            "median_ms": round(sorted[sorted.len() / 2]),
            "max_ms": round(sorted[sorted.len() - 1]),
        })
    );
    Ok(())
}

//! `pg-audit-bench`: audit-chain verification speed over the real store (PERFORMANCE.md: events/s
//! over 1,000,000 events), and the store's size per event.
//!
//! The chain is filled through the store's public API the way the guard fills it: per simulated
//! payment one decision (a `decision` event) and one settlement (an `intent.succeeded` event),
//! submitted to the group-commit writer ([`Committer`]) by many concurrent tasks so they are
//! committed in batches. The store has no bulk append; the data directory is put on tmpfs
//! (`/dev/shm`) by default so the commits do not wait for the disk. Verification reads the whole
//! chain, which is in the page cache either way. When the fill budget runs out before the target
//! count, the chain that was built is verified and the report says `"extrapolated": true`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use policies::FormLimits;
use serde_json::json;
use sha2::Digest as _;
use store::{
    Actor, CapSpec, Committer, Decision, DecisionRequest, MasterKey, OrgId, Store, StoredResponse,
    UpstreamOutcome, WriterLimits,
};

/// The guard's allocator, so the fill measures what the guard does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Audit-chain verification benchmark.
#[derive(Debug, Parser)]
#[command(name = "pg-audit-bench")]
struct Args {
    /// Events to append before verifying.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Longest time spent appending; past it the chain built so far is verified.
    #[arg(long, default_value_t = 150.0)]
    fill_budget_secs: f64,
    /// Parent of the temporary data directory (default: /dev/shm when present).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Cedar policy set to activate (default: the organization's default set).
    #[arg(long)]
    policies: Option<PathBuf>,
    /// Number of timed verifications (the median is reported).
    #[arg(long, default_value_t = 3)]
    verify_runs: usize,
    /// Events held in memory for the per-step breakdown of verification.
    #[arg(long, default_value_t = 200_000)]
    breakdown_events: usize,
}

const BODY: &[u8] = b"amount=1000&currency=usd";
const PATH: &str = "/v1/payment_intents";
/// What `pg-stub` answers, stored as the upstream response of every payment.
const STUB_BODY: &[u8] = br#"{"id":"pi_bench000000000000000001","object":"payment_intent","amount":1000,"currency":"usd","status":"succeeded"}"#;
/// Payments in flight during the fill.
const FILL_CONCURRENCY: usize = 256;

/// The bench organization: policies, the three caps of `bench/run.sh`, an agent, a rail key.
fn prepare(
    store: &Store,
    policies: Option<&std::path::Path>,
) -> anyhow::Result<(OrgId, store::AgentId)> {
    let actor = Actor::System("bench".into());
    let (org, _) =
        store.init_org_with_owner("Audit bench", "bench@example.com", "bench-password-1")?;
    if let Some(p) = policies {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        store.set_policy(&org.id, &text, &actor)?;
    }
    let (agent, _token) = store.create_agent(&org.id, "bench-agent", vec![], &actor)?;
    let caps = [
        json!({"scope": "org", "currency": "usd", "interval": "daily", "limit": 1_000_000_000_000i64, "on_exceed": "hold"}),
        json!({"scope": format!("agent:{}", agent.id), "currency": "usd", "interval": "monthly", "limit": 1_000_000_000_000i64, "on_exceed": "hold"}),
        json!({"scope": "org", "currency": "usd", "interval": "per_transaction", "limit": 500_000, "on_exceed": "hold"}),
    ];
    for cap in caps {
        store.add_cap(&org.id, serde_json::from_value::<CapSpec>(cap)?, &actor)?;
    }
    store.set_rail_key(&org.id, "sk_test_bench", &actor)?;
    Ok((org.id, agent.id))
}

/// One simulated payment through the group-commit writer: decide (allow) and settle (200).
/// Two audit events.
async fn payment(
    store: &Store,
    committer: &Committer,
    agent: &store::Agent,
    n: u64,
) -> anyhow::Result<()> {
    let (org, agent_record, agent) = (&agent.org, agent, &agent.id);
    let facts = policies::classify("POST", PATH, BODY, &FormLimits::default())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    // As the proxy does: the policies that do not read `context` outside the writer.
    let prepared = store.prepare_decision(agent_record, &facts)?;
    let req = DecisionRequest {
        org: org.clone(),
        agent: agent.clone(),
        idempotency_key: format!("audit-bench-{n}"),
        method: "POST".into(),
        path: PATH.into(),
        query: String::new(),
        headers: Vec::new(),
        body: BODY.to_vec(),
        facts,
        hold_expiry_secs: 86_400,
        prepared,
    };
    let Decision::Forward { intent, .. } = committer.decide(req).await? else {
        bail!("the bench payment was not allowed: check the policies and caps");
    };
    let response = StoredResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: STUB_BODY.to_vec(),
    };
    let upstream_id = Some("pi_bench000000000000000001".into());
    committer
        .settle(
            org.clone(),
            intent.id,
            UpstreamOutcome::Response {
                response,
                upstream_id,
            },
        )
        .await?;
    Ok(())
}

/// Append payments (two events each) until `target` events or the budget; returns the number of
/// payments. `FILL_CONCURRENCY` payments are in flight so the writer commits them in batches,
/// as it does under load in the guard.
fn fill(
    store: &Arc<Store>,
    org: &OrgId,
    agent: &store::AgentId,
    target: u64,
    budget: Duration,
) -> anyhow::Result<u64> {
    let first_seq = store.audit_head(org)?.seq;
    let payments_wanted = target.saturating_sub(first_seq).div_ceil(2);
    let committer = Committer::start(store.clone(), WriterLimits::default());
    let agent = store
        .agent(org, agent)?
        .context("the bench agent is missing")?;
    let next = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + budget;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..FILL_CONCURRENCY {
            let (store, committer, agent, next) = (
                store.clone(),
                committer.clone(),
                agent.clone(),
                next.clone(),
            );
            workers.spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= payments_wanted || Instant::now() >= deadline {
                        return anyhow::Ok(());
                    }
                    payment(&store, &committer, &agent, n).await?;
                    if n > 0 && n % (payments_wanted / 20).max(1) == 0 {
                        eprintln!("pg-audit-bench: {} payments", n);
                    }
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done??;
        }
        anyhow::Ok(())
    })?;
    Ok(next.load(Ordering::Relaxed).min(payments_wanted))
}

/// Where verification time goes, step by step, over the first `limit` events held in memory:
/// reading them out of redb (all events), then per event JSON parsing alone, SHA-256 alone, and
/// the whole public `check_event` (fast path: links read from the canonical tail, SHA-256, compare;
/// the full parse + RFC 8785 check runs only when that does not vouch for the event).
fn breakdown(store: &Store, org: &OrgId, limit: usize) -> anyhow::Result<serde_json::Value> {
    let mut raw: Vec<Vec<u8>> = Vec::with_capacity(limit);
    let mut read = 0u64;
    let t = Instant::now();
    store.audit_export(org, |line| {
        read += 1;
        if raw.len() < limit {
            raw.push(line.to_vec());
        }
        Ok(())
    })?;
    let read_secs = t.elapsed().as_secs_f64();
    let n = raw.len() as f64;
    let bytes: usize = raw.iter().map(Vec::len).sum();

    let t = Instant::now();
    for r in &raw {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(r)?);
    }
    let parse_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    for r in &raw {
        std::hint::black_box(sha2::Sha256::digest(r));
    }
    let sha_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut prev = store::GENESIS.to_string();
    for (i, r) in raw.iter().enumerate() {
        prev = store::check_event(r, i as u64 + 1, &prev)
            .map_err(|e| anyhow::anyhow!("event {}: {e}", i + 1))?;
    }
    let check_secs = t.elapsed().as_secs_f64();
    let per_s = |count: f64, secs: f64| {
        if secs > 0.0 {
            (count / secs).round()
        } else {
            0.0
        }
    };
    Ok(json!({
        "events": raw.len(),
        "avg_event_bytes": (bytes as f64 / n.max(1.0)).round(),
        "read_events_per_s": per_s(read as f64, read_secs),
        "json_parse_events_per_s": per_s(n, parse_secs),
        "sha256_events_per_s": per_s(n, sha_secs),
        "check_event_events_per_s": per_s(n, check_secs),
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.verify_runs == 0 || args.verify_runs > 20 {
        bail!("--verify-runs must be within 1..=20");
    }
    let parent = args.dir.clone().unwrap_or_else(|| {
        let shm = PathBuf::from("/dev/shm");
        if shm.is_dir() {
            shm
        } else {
            std::env::temp_dir()
        }
    });
    let tmp = tempfile::Builder::new()
        .prefix("pg-audit-bench")
        .tempdir_in(&parent)?;
    let store = Arc::new(Store::open(tmp.path(), MasterKey::generate())?);
    let (org, agent) = prepare(&store, args.policies.as_deref())?;

    let fill_start = Instant::now();
    let payments = fill(
        &store,
        &org,
        &agent,
        args.events,
        Duration::from_secs_f64(args.fill_budget_secs),
    )?;
    let seq = store.audit_head(&org)?.seq;
    let fill_secs = fill_start.elapsed().as_secs_f64();

    let mut runs = Vec::with_capacity(args.verify_runs);
    let mut events = 0u64;
    for _ in 0..args.verify_runs {
        let t = Instant::now();
        let report = store.audit_verify(&org)?;
        runs.push(t.elapsed().as_secs_f64());
        match report {
            store::VerifyReport::Ok { events: n, .. } => events = n,
            broken => bail!("the freshly built chain does not verify: {broken:?}"),
        }
    }
    assert_eq!(
        events,
        store.audit_head(&org)?.seq,
        "verify counted every event of the chain"
    );
    let mut sorted = runs.clone();
    sorted.sort_by(f64::total_cmp);
    let verify_secs = sorted[sorted.len() / 2];
    let events_per_s = events as f64 / verify_secs;

    let steps = breakdown(&store, &org, args.breakdown_events)?;
    let meta = std::fs::metadata(store.path())?;
    let file_bytes = meta.len();
    let allocated_bytes = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    println!(
        "{}",
        json!({
            "target_events": args.events,
            "events": events,
            "extrapolated": events < args.events,
            "payments": payments,
            "fill_secs": (fill_secs * 100.0).round() / 100.0,
            "fill_events_per_s": (seq as f64 / fill_secs).round(),
            "verify_runs_secs": runs.iter().map(|s| (s * 1e4).round() / 1e4).collect::<Vec<_>>(),
            "verify_secs": (verify_secs * 1e4).round() / 1e4,
            "events_per_s": events_per_s.round(),
            "verify_secs_at_target": (args.events as f64 / events_per_s * 100.0).round() / 100.0,
            "file_bytes": file_bytes,
            "allocated_bytes": allocated_bytes,
            "bytes_per_event": (file_bytes as f64 / events as f64).round(),
            "allocated_bytes_per_event": (allocated_bytes as f64 / events as f64).round(),
            "verify_breakdown": steps,
            "dir": parent.display().to_string(),
        })
    );
    Ok(())
}

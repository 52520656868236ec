//! Where the store's bytes per decision go (issue #13, "Small": ≤ 1.5 KB of store per decision).
//!
//! Decides N allowed payments through the public store API the way the guard does under
//! `make bench` (the bench's policy set and three caps, `POST /v1/payment_intents`
//! `amount=1000&currency=usd`, a unique Idempotency-Key each, 32 in flight through the
//! group-commit writer), settles each with the stub's 200 answer (but, as Stripe does and
//! `pg-stub` does not, with a distinct PaymentIntent id each), closes the store (a clean stop
//! checkpoints), reopens it and prints the file size per decision and, per redb table, the
//! entries and key + value bytes the run added, per decision.
//!
//! ```text
//! cargo run --release -p store --example bytes_per_decision [-- N [DIR]]
//! ```
//!
//! N defaults to 20,000; DIR (the parent of the temporary data directory) to the system's
//! temporary directory.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use policies::FormLimits;
use serde_json::json;
use store::{
    Actor, CapSpec, Committer, Decision, DecisionRequest, MasterKey, Store, StoreOptions,
    StoredResponse, TableUsage, UpstreamOutcome, WriterLimits,
};

const POLICIES: &str = include_str!("../../bench/policies.cedar");
const PATH: &str = "/v1/payment_intents";
const BODY: &[u8] = b"amount=1000&currency=usd";
/// What `pg-stub` answers, with the payment's own id.
fn stub_body(n: u64) -> Vec<u8> {
    format!(r#"{{"id":"pi_bench{n:024}","object":"payment_intent","amount":1000,"currency":"usd","status":"succeeded"}}"#).into_bytes()
}
/// Payments in flight, as `make bench`'s 32 connections.
const IN_FLIGHT: usize = 32;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let n: u64 = match args.next() {
        Some(a) => a
            .parse()
            .map_err(|_| format!("N must be a count, not {a:?}"))?,
        None => 20_000,
    };
    let parent = args.next().map_or_else(std::env::temp_dir, Into::into);
    let tmp = tempfile::Builder::new()
        .prefix("bytes-per-decision")
        .tempdir_in(&parent)?;
    let key = MasterKey::generate();
    let options = StoreOptions::default();
    let store = Arc::new(Store::open_with(tmp.path(), key.clone(), &options)?);
    let agent = prepare(&store)?;
    let before = store.table_stats()?;
    let file_before = file_bytes(store.path())?;

    fill(&store, &agent, n)?;
    let open_after = store.table_stats()?;
    // Close (the writer's threads hold the store until they have stopped), then reopen: the
    // figures of a stopped guard, as bench/run.sh measures them.
    let store = close(store);
    let db_path = store.path().to_path_buf();
    drop(store);
    let file_after = file_bytes(&db_path)?;
    let reopened = Store::open_with(tmp.path(), key, &options)?;
    let after = reopened.table_stats()?;
    assert_eq!(after, open_after, "a clean stop keeps every entry");
    report(n, &before, &after, file_before, file_after);
    Ok(())
}

/// The bench organization of `bench/run.sh`: its policies, its three caps, an agent, a rail key.
fn prepare(store: &Store) -> Result<store::Agent, Error> {
    let actor = Actor::System("bytes-per-decision".into());
    let (org, _) = store.init_org_with_owner("Bytes", "bytes@example.com", "bench-password-1")?;
    store.set_policy(&org.id, POLICIES, &actor)?;
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
    Ok(store
        .agent(&org.id, &agent.id)?
        .ok_or("the agent just created is missing")?)
}

/// One payment as the proxy makes it: decide (allowed), then settle with the stub's answer.
async fn payment(
    store: &Store,
    committer: &Committer,
    agent: &store::Agent,
    n: u64,
) -> Result<(), Error> {
    let facts = policies::classify("POST", PATH, BODY, &FormLimits::default())
        .map_err(|e| format!("classify: {e}"))?;
    let prepared = store.prepare_decision(agent, &facts)?;
    let req = DecisionRequest {
        org: agent.org.clone(),
        agent: agent.id.clone(),
        idempotency_key: format!("bench-r-{}-{}", n % IN_FLIGHT as u64, n),
        method: "POST".into(),
        path: PATH.into(),
        query: String::new(),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: BODY.to_vec(),
        facts,
        hold_expiry_secs: 86_400,
        prepared,
    };
    let Decision::Forward { intent, .. } = committer.decide(req).await? else {
        return Err(format!("payment {n} was not allowed").into());
    };
    let outcome = UpstreamOutcome::Response {
        response: StoredResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: stub_body(n),
        },
        upstream_id: Some(format!("pi_bench{n:024}")),
    };
    committer.settle(intent.org, intent.id, outcome).await?;
    Ok(())
}

/// `n` payments, `IN_FLIGHT` at a time, through one group-commit writer.
fn fill(store: &Arc<Store>, agent: &store::Agent, n: u64) -> Result<(), Error> {
    let committer = Committer::start(store.clone(), WriterLimits::default());
    let next = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    runtime.block_on(async {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..IN_FLIGHT {
            let (store, committer, agent, next) = (
                store.clone(),
                committer.clone(),
                agent.clone(),
                next.clone(),
            );
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<(), Error>(());
                    }
                    payment(&store, &committer, &agent, i).await?;
                }
            });
        }
        while let Some(done) = workers.join_next().await {
            done??;
        }
        Ok::<(), Error>(())
    })
}

/// The store alone, once the writer's threads (which stop when their channel closes, after
/// `fill` dropped the last `Committer`) have released their handles.
fn close(mut store: Arc<Store>) -> Store {
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => return s,
            Err(shared) => {
                store = shared;
                std::thread::yield_now();
            }
        }
    }
}

/// `(file length, bytes allocated on disk)`.
fn file_bytes(path: &Path) -> Result<(u64, u64), Error> {
    let meta = std::fs::metadata(path)?;
    Ok((
        meta.len(),
        std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
    ))
}

fn report(
    n: u64,
    before: &[TableUsage],
    after: &[TableUsage],
    file_before: (u64, u64),
    file_after: (u64, u64),
) {
    let per = |bytes: u64| bytes as f64 / n as f64;
    println!(
        "{n} decisions (allowed, settled 200), redb cache {} MiB",
        StoreOptions::DEFAULT_CACHE_MB
    );
    println!(
        "store file: {} → {} bytes = {:.0} B per decision (allocated on disk: {} → {} = {:.0} B per decision)",
        file_before.0,
        file_after.0,
        per(file_after.0.saturating_sub(file_before.0)),
        file_before.1,
        file_after.1,
        per(file_after.1.saturating_sub(file_before.1)),
    );
    println!();
    println!(
        "| table | entries added | per decision | key+value B per decision | B per entry | page B per decision |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    let mut rows: Vec<(&TableUsage, u64, u64, u64)> = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.name == a.name);
            let entries = a.entries.saturating_sub(b.map_or(0, |b| b.entries));
            let stored = a
                .stored_bytes
                .saturating_sub(b.map_or(0, |b| b.stored_bytes));
            let pages = a.page_bytes.saturating_sub(b.map_or(0, |b| b.page_bytes));
            (a, entries, stored, pages)
        })
        .filter(|(_, entries, stored, _)| *entries > 0 || *stored > 0)
        .collect();
    rows.sort_by_key(|row| std::cmp::Reverse(row.2));
    let (mut total_stored, mut total_pages) = (0, 0);
    for (t, entries, stored, pages) in &rows {
        total_stored += stored;
        total_pages += pages;
        println!(
            "| `{}` | {} | {:.2} | {:.0} | {:.0} | {:.0} |",
            t.name,
            entries,
            *entries as f64 / n as f64,
            per(*stored),
            if *entries > 0 {
                *stored as f64 / *entries as f64
            } else {
                0.0
            },
            per(*pages),
        );
    }
    println!(
        "| **all tables** | | | **{:.0}** | | **{:.0}** |",
        per(total_stored),
        per(total_pages)
    );
}

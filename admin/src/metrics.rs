//! `GET /metrics` in Prometheus text format (OPERATIONS.md "Observability").

use std::fmt::Write;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

use crate::AppState;

/// Render the store's counters.
pub async fn render(State(state): State<AppState>) -> impl IntoResponse {
    let m = state.store.metrics.snapshot();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP guard_store_commits_total Store write transactions committed."
    );
    let _ = writeln!(out, "# TYPE guard_store_commits_total counter");
    let _ = writeln!(out, "guard_store_commits_total {}", m.commits);
    let _ = writeln!(
        out,
        "# HELP guard_store_checkpoints_total Batches committed durably to redb (the others through the write-ahead log)."
    );
    let _ = writeln!(out, "# TYPE guard_store_checkpoints_total counter");
    let _ = writeln!(out, "guard_store_checkpoints_total {}", m.checkpoints);
    let _ = writeln!(
        out,
        "# HELP guard_store_jobs_total Decisions and settlements committed."
    );
    let _ = writeln!(out, "# TYPE guard_store_jobs_total counter");
    let _ = writeln!(out, "guard_store_jobs_total {}", m.jobs);
    let _ = writeln!(
        out,
        "# HELP guard_store_commit_seconds Store commit latency."
    );
    let _ = writeln!(out, "# TYPE guard_store_commit_seconds histogram");
    for (bound, count) in store::COMMIT_BUCKETS_US.iter().zip(&m.buckets) {
        let _ = writeln!(
            out,
            "guard_store_commit_seconds_bucket{{le=\"{}\"}} {count}",
            *bound as f64 / 1e6
        );
    }
    let _ = writeln!(
        out,
        "guard_store_commit_seconds_bucket{{le=\"+Inf\"}} {}",
        m.commits
    );
    let _ = writeln!(
        out,
        "guard_store_commit_seconds_sum {}",
        m.commit_us_sum as f64 / 1e6
    );
    let _ = writeln!(out, "guard_store_commit_seconds_count {}", m.commits);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

//! Store counters for `/metrics` (OPERATIONS.md: store commit latency). Lock-free atomics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (microseconds) of the commit latency histogram buckets.
pub const COMMIT_BUCKETS_US: [u64; 10] = [
    250, 500, 1_000, 2_000, 5_000, 10_000, 25_000, 50_000, 100_000, 1_000_000,
];

/// Commit statistics of the group-commit writer.
#[derive(Debug, Default)]
pub struct StoreMetrics {
    commits: AtomicU64,
    checkpoints: AtomicU64,
    jobs: AtomicU64,
    commit_us_sum: AtomicU64,
    buckets: [AtomicU64; COMMIT_BUCKETS_US.len()],
}

/// A copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreMetricsSnapshot {
    /// Committed transactions (batches).
    pub commits: u64,
    /// Batches committed durably to redb (the others are durable through the writer's log).
    pub checkpoints: u64,
    /// Jobs committed (decisions + settlements).
    pub jobs: u64,
    /// Sum of commit latencies in microseconds.
    pub commit_us_sum: u64,
    /// Cumulative counts per bucket of [`COMMIT_BUCKETS_US`].
    pub buckets: Vec<u64>,
}

impl StoreMetrics {
    pub(crate) fn record_commit(&self, jobs: usize, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.jobs.fetch_add(jobs as u64, Ordering::Relaxed);
        self.commit_us_sum.fetch_add(us, Ordering::Relaxed);
        for (i, bound) in COMMIT_BUCKETS_US.iter().enumerate() {
            if us <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn record_checkpoint(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    /// Read the counters.
    pub fn snapshot(&self) -> StoreMetricsSnapshot {
        StoreMetricsSnapshot {
            commits: self.commits.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
            jobs: self.jobs.load(Ordering::Relaxed),
            commit_us_sum: self.commit_us_sum.load(Ordering::Relaxed),
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

//! Benchmark tooling of `make bench` (PERFORMANCE.md). The binaries are thin: `pg-stub` (a fast
//! Stripe-shaped upstream), `pg-load` (the project's own open/closed-loop load generator with
//! HDR histograms), `pg-startup` (process start → port accepting) and `pg-audit-bench` (audit
//! chain verification over the real store). The shared pieces live here: a minimal HTTP/1.1
//! client ([`client`]) and the load loops with their report ([`load`]).

pub mod client;
pub mod load;

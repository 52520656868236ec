//! `payment-guard`: the binary. CLI (clap), configuration, and the wiring of the proxy service.
//! `main` is synchronous: pingora owns its runtimes (ARCHITECTURE.md).

mod cli;
mod config;
mod secrets;
mod serve;
mod services;
mod shutdown;
mod tls;
mod webhook_worker;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: the data path allocates many small short-lived
/// values (JSON, Cedar entities, redb pages) and glibc malloc was ~20 % of the writer thread's
/// time in the profile (bench/RESULTS.md, notes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // ARCHITECTURE.md: one rustls provider (ring) for the whole process, installed first.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    cli::init_logging(&args);
    match cli::run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

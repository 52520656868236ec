//! A command-line face of the SDK, for interoperability tests against other Standard Webhooks
//! implementations (`tests/e2e/test_webhook_sdk_interop.py`). The body is read from stdin.
//!
//! ```text
//! sdk_cli secret
//!     prints a newly generated whsec_ secret
//! sdk_cli sign <secret>[,<secret>...] <id> <timestamp>
//!     prints the webhook-signature value (one entry per secret, as during a rotation)
//! sdk_cli verify <secret> <id> <timestamp> <signature-header> <now> <tolerance-secs>
//!     exits 0 printing the event type, or 1 printing `error: <Variant>: <message>` to stderr
//! ```
//!
//! Usage errors exit 2.

use std::io::Read;
use std::process::ExitCode;

use payment_guard_sdk::{Error, Headers, Secret, signature_header, verify};

const USAGE: &str = "usage:
  sdk_cli secret
  sdk_cli sign <secret>[,<secret>...] <id> <timestamp>    (body on stdin)
  sdk_cli verify <secret> <id> <timestamp> <signature-header> <now> <tolerance-secs>    (body on stdin)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["secret"] => {
            println!("{}", Secret::generate());
            ExitCode::SUCCESS
        }
        ["sign", secrets, id, timestamp] => run_sign(secrets, id, timestamp),
        ["verify", secret, id, timestamp, signature, now, tolerance] => run_verify(
            secret,
            Headers {
                id,
                timestamp,
                signature,
            },
            now,
            tolerance,
        ),
        _ => usage(""),
    }
}

fn run_sign(secrets: &str, id: &str, timestamp: &str) -> ExitCode {
    let secrets: Result<Vec<Secret>, Error> = secrets.split(',').map(Secret::parse).collect();
    let (Ok(secrets), Ok(timestamp)) = (secrets, timestamp.parse::<i64>()) else {
        return usage("a secret or the timestamp does not parse");
    };
    let Some(body) = read_body() else {
        return usage("cannot read the body from stdin");
    };
    let refs: Vec<&Secret> = secrets.iter().collect();
    println!("{}", signature_header(&refs, id, timestamp, &body));
    ExitCode::SUCCESS
}

fn run_verify(secret: &str, headers: Headers<'_>, now: &str, tolerance: &str) -> ExitCode {
    let (Ok(now), Ok(tolerance)) = (now.parse::<i64>(), tolerance.parse::<i64>()) else {
        return usage("now and tolerance must be integers");
    };
    let Some(body) = read_body() else {
        return usage("cannot read the body from stdin");
    };
    let verified =
        Secret::parse(secret).and_then(|secret| verify(&secret, &headers, &body, now, tolerance));
    match verified {
        Ok(event) => {
            println!("{}", event.kind);
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {}: {err}", variant(&err));
            ExitCode::FAILURE
        }
    }
}

/// The variant name alone, so tests can assert the exact reason.
fn variant(err: &Error) -> String {
    let debug = format!("{err:?}");
    match debug.split_once('(') {
        Some((name, _)) => name.to_string(),
        None => debug,
    }
}

fn read_body() -> Option<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body).ok()?;
    Some(body)
}

fn usage(reason: &str) -> ExitCode {
    if !reason.is_empty() {
        eprintln!("sdk_cli: {reason}");
    }
    eprintln!("{USAGE}");
    ExitCode::from(2)
}

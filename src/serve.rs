//! `payment-guard serve`: open the store, bootstrap on first start, and run the pingora server
//! with the proxy service until SIGTERM (graceful) or SIGINT.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use proxy::{Guard, ProxySettings, Upstream};
use store::IntentEvents;

use pingora::services::background::background_service;

use crate::cli::open_store;
use crate::services::{AdminService, ExecutorService, ExpiryService, PruneService};

/// How often undecided holds are checked for expiry.
const HOLD_EXPIRY_CHECK_SECS: u64 = 5;
/// How often idempotency records past their retention are pruned.
const PRUNE_EVERY_SECS: u64 = 3_600;
use crate::config::Config;

/// A random password that satisfies the password rules (letters and digits, 20 characters).
pub fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    let mut p: String = bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    // Guarantee a letter and a digit whatever the draw.
    p.replace_range(0..2, "a7");
    p
}

/// Run the guard.
pub fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    cfg.check_listeners()?;
    let tls = crate::tls::ListenerCerts::load(&cfg)?;
    let store = Arc::new(open_store(&cfg)?);
    bootstrap_if_empty(&store, &cfg)?;
    for org in store.upgrade_default_policies(policies::PREVIOUS_DEFAULT_POLICY_TEXTS)? {
        tracing::warn!(org = %org, "the organization ran the previous default policy set; the current default is now active");
    }
    let upstream = Arc::new(Upstream::parse(&cfg.upstream.base_url).map_err(anyhow::Error::msg)?);
    let settings = ProxySettings {
        max_body_bytes: cfg.proxy.max_body_bytes,
        max_hold_wait_secs: cfg.proxy.max_hold_wait_secs,
        upstream_timeout_secs: cfg.upstream.timeout_secs,
        hold_expiry_secs: cfg.holds.expire_after_secs,
        in_flight_wait_ms: cfg.proxy.in_flight_wait_ms,
        ..ProxySettings::default()
    };
    let events = IntentEvents::default();

    let conf = ServerConf {
        threads: cfg.proxy.threads,
        // shutdown.rs waits for the requests in flight (at most `shutdown_grace_secs`) before
        // pingora sees SIGTERM; pingora's own grace period would then only delay the exit.
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(10),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let limits = store::WriterLimits {
        checkpoint_interval: std::time::Duration::from_millis(cfg.store.checkpoint_interval_ms),
        ..store::WriterLimits::default()
    };
    let committer = store::Committer::start(store.clone(), limits);
    // Before anything is served: the first command of the writer.
    let recovered = committer.recover_blocking()?;
    if recovered > 0 {
        tracing::warn!(
            recovered,
            "intents left forwarding by the previous process are now unknown"
        );
    }
    let forwarder = proxy::Forwarder::new(
        &cfg.upstream.base_url,
        std::time::Duration::from_secs(cfg.upstream.timeout_secs),
        settings.max_stored_response_bytes,
    )
    .map_err(anyhow::Error::msg)?;
    let guard = Guard::new(
        store.clone(),
        committer.clone(),
        forwarder,
        upstream,
        settings.clone(),
        events.clone(),
    );
    let in_flight = guard.in_flight();
    let mut proxy_service = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        guard,
        "payment-guard proxy",
    );
    match &tls.proxy {
        Some(cert) => proxy_service.add_tls_with_settings(
            &cfg.proxy.listen,
            None,
            crate::tls::pingora_settings(cert.clone())?,
        ),
        None => proxy_service.add_tcp(&cfg.proxy.listen),
    }
    server.add_service(proxy_service);

    let admin_settings = admin::AdminSettings {
        origin: cfg.admin.origin.clone(),
        production: cfg.admin.production,
        allow_private_webhook_targets: cfg.webhooks.allow_private_targets,
        webhook_test_hosts_file: cfg.webhooks.unsafe_test_hosts_file.clone(),
        session_idle_secs: cfg.admin.session_idle_secs,
        session_absolute_secs: cfg.admin.session_absolute_secs,
        trusted_proxies: cfg.admin.trusted_proxy_nets()?,
        ..admin::AdminSettings::default()
    };
    let admin_state = admin::AppState::new(
        store.clone(),
        committer.clone(),
        admin_settings,
        events.clone(),
    );
    let admin_service = AdminService {
        listen: cfg.admin.listen.clone(),
        state: admin_state,
        tls: tls
            .admin
            .clone()
            .map(crate::tls::admin_server_config)
            .transpose()?,
    };
    server.add_service(background_service("admin API", admin_service));
    let executor = ExecutorService {
        store: store.clone(),
        committer: committer.clone(),
        events: events.clone(),
        base_url: cfg.upstream.base_url.clone(),
        timeout: std::time::Duration::from_secs(cfg.upstream.timeout_secs),
        max_response_bytes: settings.max_stored_response_bytes,
    };
    server.add_service(background_service("executor", executor));
    let webhooks = crate::webhook_worker::WebhookService {
        store: store.clone(),
        policy: store::RetryPolicy {
            base_ms: cfg.webhooks.retry_base_ms,
            max_delay_ms: cfg.webhooks.max_delay_ms,
            max_attempts: cfg.webhooks.max_attempts,
            disable_after_failures: cfg.webhooks.disable_after_failures,
        },
        targets: admin::webhook_target::TargetPolicy {
            allow_private: cfg.webhooks.allow_private_targets,
            test_hosts_file: cfg.webhooks.unsafe_test_hosts_file.clone(),
        },
        timeout: std::time::Duration::from_secs(cfg.webhooks.timeout_secs),
        concurrency: cfg.webhooks.concurrency,
        poll: std::time::Duration::from_millis(cfg.webhooks.poll_ms),
    };
    server.add_service(background_service("webhook delivery", webhooks));
    let expiry = ExpiryService {
        committer: committer.clone(),
        events,
        every: std::time::Duration::from_secs(HOLD_EXPIRY_CHECK_SECS),
    };
    server.add_service(background_service("hold expiry", expiry));
    let prune = PruneService {
        committer: committer.clone(),
        retention: std::time::Duration::from_secs(cfg.store.idempotency_retention_hours * 3600),
        every: std::time::Duration::from_secs(PRUNE_EVERY_SECS),
    };
    server.add_service(background_service("idempotency pruning", prune));
    crate::tls::reload_on_sighup(tls.all())?;
    tracing::info!(proxy = %cfg.proxy.listen, proxy_tls = tls.proxy.is_some(), admin = %cfg.admin.listen, admin_tls = tls.admin.is_some(), upstream = %cfg.upstream.base_url, data_dir = %cfg.store.data_dir.display(), "payment guard starting");
    if let Some(f) = &cfg.webhooks.unsafe_test_hosts_file {
        tracing::warn!(file = %f.display(), "webhooks.unsafe_test_hosts_file is set: webhook hosts under .invalid resolve from this file (tests only)");
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(crate::shutdown::DrainThenTerminate {
            in_flight,
            grace: std::time::Duration::from_secs(cfg.proxy.shutdown_grace_secs),
        }),
    });
    tracing::info!("payment guard stopped");
    Ok(ExitCode::SUCCESS)
}

/// OPERATIONS.md: first start on an empty store creates an organization and an owner and prints
/// the credentials once.
fn bootstrap_if_empty(store: &store::Store, cfg: &Config) -> anyhow::Result<()> {
    if !store.is_empty()? {
        return Ok(());
    }
    let password = generate_password();
    let (org, user) = store
        .init_org_with_owner("My organization", "owner@example.com", &password)
        .context("first-start bootstrap failed")?;
    println!(
        "First start: created organization {} and its owner.",
        org.id
    );
    println!("  email:    {}", user.email);
    println!("  password: {password}   (shown once; change it after signing in)");
    println!("  console:  {}/", cfg.admin.origin);
    Ok(())
}

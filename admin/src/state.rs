//! Shared state of the admin API.

use std::sync::Arc;

use store::{IntentEvents, Store};

/// Settings from the `[admin]` and `[holds]` configuration sections.
#[derive(Clone, Debug)]
pub struct AdminSettings {
    /// Allowed `Origin` for state-changing cookie requests (CSRF).
    pub origin: String,
    /// Production: `Secure` cookies.
    pub production: bool,
    /// A session ends after this long without a request.
    pub session_idle_secs: i64,
    /// A session ends this long after sign-in, whatever its use.
    pub session_absolute_secs: i64,
    /// Largest JSON body accepted.
    pub max_body_bytes: usize,
    /// `webhooks.allow_private_targets`.
    pub allow_private_webhook_targets: bool,
    /// `admin.trusted_proxies`: peers whose `X-Forwarded-For` names the client (throttling).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `webhooks.unsafe_test_hosts_file` (tests only; see `webhook_target::TargetPolicy`).
    pub webhook_test_hosts_file: Option<std::path::PathBuf>,
}

impl Default for AdminSettings {
    fn default() -> Self {
        Self {
            origin: "http://127.0.0.1:8081".into(),
            production: false,
            session_idle_secs: 30 * 60,
            session_absolute_secs: 12 * 3600,
            max_body_bytes: 256 * 1024,
            allow_private_webhook_targets: false,
            trusted_proxies: Vec::new(),
            webhook_test_hosts_file: None,
        }
    }
}

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<Store>,
    /// The ledger writer: human decisions on holds are ledger commands.
    pub committer: store::Committer,
    /// Settings.
    pub settings: Arc<AdminSettings>,
    /// Intent change notifications (approvals wake the executor and waiting agents).
    pub events: IntentEvents,
    /// Login throttling.
    pub throttle: Arc<crate::auth::Throttle>,
}

impl AppState {
    /// State over `store`.
    pub fn new(
        store: Arc<Store>,
        committer: store::Committer,
        settings: AdminSettings,
        events: IntentEvents,
    ) -> Self {
        Self {
            store,
            committer,
            settings: Arc::new(settings),
            events,
            throttle: Arc::new(crate::auth::Throttle::default()),
        }
    }

    /// Run a blocking store call off the async workers (bcrypt and redb commits block).
    pub async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> store::Result<T> + Send + 'static,
    ) -> Result<T, crate::ApiError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(crate::ApiError::from),
            Err(_) => Err(crate::ApiError::Internal),
        }
    }
}

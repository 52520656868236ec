//! Every answer the guard makes itself, in Stripe's error shape (PROXY.md "Responses the guard
//! makes itself"), rendered in one place. Rendering is deterministic so replays are byte-identical.

use serde::Serialize;
use store::{Intent, IntentStatus};

/// A guard-made error response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardError {
    /// 400: mutation without `Idempotency-Key`.
    IdempotencyKeyRequired,
    /// 400: the key was used for a different request.
    IdempotencyKeyReused,
    /// 400: body or path that cannot be parsed.
    Unparseable(String),
    /// 401: no, malformed, unknown or revoked token.
    AuthenticationRequired,
    /// 402: held for approval.
    ApprovalRequired(Box<Intent>),
    /// 403: a policy or cap denied it.
    PolicyDenied(Box<Intent>),
    /// 403: a mutation the operation table does not know, and no policy names it.
    UnknownOperation(Box<Intent>),
    /// 400: a query string on a POST (Stripe would merge it into the body unseen).
    QueryNotAllowed,
    /// 400: `Stripe-Account` / `Stripe-Context` that is not an account id, or both disagreeing.
    BadAccountHeader(String),
    /// 415: a non-empty body of a content type the API version does not take.
    UnsupportedContentType(String),
    /// 403: a read denied by policy (reads create no intent).
    ReadDenied {
        policies: Vec<String>,
        reason: String,
    },
    /// 403: a human denied the hold.
    ApprovalDenied(Box<Intent>),
    /// 403: agent or organization frozen.
    AgentFrozen,
    /// 404: not found (the agent's own view).
    NotFound,
    /// 405: method the guard does not accept.
    MethodNotAllowed(String),
    /// 409: the same key is in flight.
    InProgress(String),
    /// 410: the hold expired.
    ApprovalExpired(Box<Intent>),
    /// 408: the body did not arrive in time.
    RequestTimeout(u64),
    /// 413: body over the limit.
    BodyTooLarge(usize),
    /// 431: request headers over the limit.
    HeadersTooLarge(usize),
    /// 502: the rail could not be reached.
    UpstreamUnavailable(Option<String>),
    /// 503: no Stripe key for the organization.
    RailNotConfigured,
    /// 503: the store failed; nothing was decided (fail closed).
    StoreUnavailable,
    /// 503: SIGTERM was received; the request was not looked at (nothing decided).
    ShuttingDown,
}

#[derive(Serialize)]
struct Body<'a> {
    error: ErrorObj<'a>,
}

#[derive(Serialize)]
struct ErrorObj<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    code: &'a str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    guard: Option<GuardInfo<'a>>,
}

#[derive(Serialize)]
struct GuardInfo<'a> {
    intent: Option<&'a str>,
    decision: &'a str,
    policies: &'a [String],
    caps: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    approvals_required: Option<u32>,
}

fn info(intent: &Intent) -> GuardInfo<'_> {
    GuardInfo {
        intent: Some(intent.id.as_str()),
        decision: intent.decision.as_str(),
        policies: &intent.policies,
        caps: &intent.caps,
        status: Some(intent.status.as_str()),
        approvals_required: (intent.approvals_required > 0).then_some(intent.approvals_required),
    }
}

fn denial_message(intent: &Intent) -> String {
    match intent.policies.as_slice() {
        [] => format!("Denied: {}", intent.reason),
        ps => format!("Denied by policy '{}': {}", ps.join("', '"), intent.reason),
    }
}

impl GuardError {
    /// HTTP status.
    pub fn status(&self) -> u16 {
        use GuardError::*;
        match self {
            IdempotencyKeyRequired
            | IdempotencyKeyReused
            | Unparseable(_)
            | QueryNotAllowed
            | BadAccountHeader(_) => 400,
            UnsupportedContentType(_) => 415,
            AuthenticationRequired => 401,
            ApprovalRequired(_) => 402,
            PolicyDenied(_)
            | UnknownOperation(_)
            | ReadDenied { .. }
            | ApprovalDenied(_)
            | AgentFrozen => 403,
            NotFound => 404,
            MethodNotAllowed(_) => 405,
            InProgress(_) => 409,
            ApprovalExpired(_) => 410,
            RequestTimeout(_) => 408,
            BodyTooLarge(_) => 413,
            HeadersTooLarge(_) => 431,
            UpstreamUnavailable(_) => 502,
            RailNotConfigured | StoreUnavailable | ShuttingDown => 503,
        }
    }

    /// `error.code`.
    pub fn code(&self) -> &'static str {
        use GuardError::*;
        match self {
            IdempotencyKeyRequired => "guard_idempotency_key_required",
            IdempotencyKeyReused => "guard_idempotency_key_reused",
            Unparseable(_) => "guard_unparseable_request",
            AuthenticationRequired => "guard_authentication_required",
            ApprovalRequired(_) => "guard_approval_required",
            PolicyDenied(_) | ReadDenied { .. } => "guard_policy_denied",
            UnknownOperation(_) => "guard_unknown_operation",
            QueryNotAllowed => "guard_query_string_not_allowed",
            BadAccountHeader(_) => "guard_invalid_account_header",
            UnsupportedContentType(_) => "guard_unsupported_content_type",
            ApprovalDenied(_) => "guard_approval_denied",
            AgentFrozen => "guard_agent_frozen",
            NotFound => "resource_missing",
            MethodNotAllowed(_) => "guard_method_not_allowed",
            InProgress(_) => "guard_request_in_progress",
            ApprovalExpired(_) => "guard_approval_expired",
            RequestTimeout(_) => "guard_request_timeout",
            BodyTooLarge(_) => "guard_body_too_large",
            HeadersTooLarge(_) => "guard_headers_too_large",
            UpstreamUnavailable(_) => "guard_upstream_unavailable",
            RailNotConfigured => "guard_rail_not_configured",
            StoreUnavailable => "guard_store_unavailable",
            ShuttingDown => "guard_shutting_down",
        }
    }

    /// The guard's own decisions must not be retried by SDKs (PROXY.md); 409/5xx invite a retry.
    pub fn should_retry(&self) -> Option<bool> {
        match self.status() {
            400 | 402 | 403 | 404 | 405 | 408 | 410 | 413 | 415 | 431 => Some(false),
            _ => None,
        }
    }

    /// `Guard-Intent` and `Guard-Decision` values, when decided.
    pub fn intent_headers(&self) -> (Option<&str>, Option<&'static str>) {
        use GuardError::*;
        match self {
            ApprovalRequired(i) | PolicyDenied(i) | UnknownOperation(i) | ApprovalDenied(i)
            | ApprovalExpired(i) => (Some(i.id.as_str()), Some(i.decision.as_str())),
            ReadDenied { .. } => (None, Some("deny")),
            InProgress(id) => (Some(id.as_str()), None),
            UpstreamUnavailable(Some(id)) => (Some(id.as_str()), Some("allow")),
            _ => (None, None),
        }
    }

    /// The JSON body.
    pub fn body(&self) -> Vec<u8> {
        use GuardError::*;
        let (kind, message, guard) = match self {
            IdempotencyKeyRequired => ("invalid_request_error", "Every POST and DELETE needs an Idempotency-Key header.".to_string(), None),
            IdempotencyKeyReused => ("idempotency_error", "This Idempotency-Key was already used for a different request.".to_string(), None),
            Unparseable(why) => ("invalid_request_error", format!("The request cannot be parsed: {why}"), None),
            AuthenticationRequired => ("invalid_request_error", "A valid agent token is required (Authorization: Bearer pg_agent_...).".to_string(), None),
            ApprovalRequired(i) => ("invalid_request_error", format!("Held for human approval: {}", i.reason), Some(info(i))),
            PolicyDenied(i) => ("invalid_request_error", denial_message(i), Some(info(i))),
            UnknownOperation(i) => (
                "invalid_request_error",
                format!("Unknown operation: {}", i.reason),
                Some(info(i)),
            ),
            QueryNotAllowed => (
                "invalid_request_error",
                "A POST must not carry a query string; send every parameter in the body.".to_string(),
                None,
            ),
            BadAccountHeader(why) => ("invalid_request_error", format!("Invalid connected account header: {why}"), None),
            UnsupportedContentType(why) => ("invalid_request_error", format!("Unsupported content type: {why}"), None),
            ReadDenied { policies, reason } => (
                "invalid_request_error",
                format!("Denied: {reason}"),
                Some(GuardInfo { intent: None, decision: "deny", policies, caps: &[], status: None, approvals_required: None }),
            ),
            ApprovalDenied(i) => ("invalid_request_error", "A human approver denied this request.".to_string(), Some(info(i))),
            AgentFrozen => ("invalid_request_error", "This agent or its organization is frozen.".to_string(), None),
            NotFound => ("invalid_request_error", "No such object.".to_string(), None),
            MethodNotAllowed(m) => ("invalid_request_error", format!("Method {m} is not supported."), None),
            InProgress(_) => ("invalid_request_error", "A request with this Idempotency-Key is still in progress; retry shortly with the same key.".to_string(), None),
            ApprovalExpired(i) => ("invalid_request_error", "The hold expired before a human decided.".to_string(), Some(info(i))),
            RequestTimeout(secs) => (
                "invalid_request_error",
                format!("The request body did not arrive within {secs} seconds."),
                None,
            ),
            BodyTooLarge(max) => ("invalid_request_error", format!("The request body is larger than {max} bytes."), None),
            HeadersTooLarge(max) => ("invalid_request_error", format!("The request headers are larger than {max} bytes."), None),
            UpstreamUnavailable(_) => ("api_error", "The payment rail could not be reached; retry with the same Idempotency-Key.".to_string(), None),
            RailNotConfigured => ("api_error", "The organization has no payment rail key configured.".to_string(), None),
            StoreUnavailable => ("api_error", "The guard could not record a decision; nothing was sent.".to_string(), None),
            ShuttingDown => ("api_error", "The guard is shutting down; nothing was decided. Retry with the same Idempotency-Key.".to_string(), None),
        };
        let body = Body {
            error: ErrorObj {
                kind,
                code: self.code(),
                message,
                guard,
            },
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// The error that replays an intent's decided outcome, or `None` when it has a stored
    /// upstream response (or is still moving).
    pub fn for_intent(intent: &Intent) -> Option<GuardError> {
        let boxed = || Box::new(intent.clone());
        match intent.status {
            IntentStatus::PendingApproval => Some(GuardError::ApprovalRequired(boxed())),
            IntentStatus::Denied if intent.approvals.iter().any(|a| a.verdict == "deny") => {
                Some(GuardError::ApprovalDenied(boxed()))
            }
            IntentStatus::Denied if intent.class == policies::OperationClass::Unknown => {
                Some(GuardError::UnknownOperation(boxed()))
            }
            IntentStatus::Denied => Some(GuardError::PolicyDenied(boxed())),
            IntentStatus::Expired => Some(GuardError::ApprovalExpired(boxed())),
            IntentStatus::Forwarding | IntentStatus::Approved => {
                Some(GuardError::InProgress(intent.id.to_string()))
            }
            IntentStatus::Unknown => {
                Some(GuardError::UpstreamUnavailable(Some(intent.id.to_string())))
            }
            IntentStatus::Succeeded | IntentStatus::Failed => None,
        }
    }
}

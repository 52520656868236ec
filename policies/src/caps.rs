//! POLICIES.md "Spending caps": which caps a request counts toward, whether it would exceed
//! them, and where each calendar window starts. The store sums the spend; this module decides.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;
use time::{Duration, OffsetDateTime};

use crate::classify::{OperationClass, RequestFacts};
use crate::money::Currency;

/// A cap field that could not be parsed (`"fortnightly"`, `"agent:"`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("invalid {field}: `{value}`")]
pub struct CapFieldError {
    /// Which field: `"interval"`, `"scope"` or `"on_exceed"`.
    pub field: &'static str,
    /// The value given, shortened.
    pub value: String,
}

fn field_error(field: &'static str, value: &str) -> CapFieldError {
    CapFieldError {
        field,
        value: crate::classify::truncate(value),
    }
}

/// The window a cap counts spend over (calendar windows, UTC; weeks start Monday).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapInterval {
    /// Each request on its own.
    PerTransaction,
    /// Since 00:00 UTC today.
    Daily,
    /// Since Monday 00:00 UTC this ISO week.
    Weekly,
    /// Since the 1st of this month, 00:00 UTC.
    Monthly,
    /// Since the beginning.
    AllTime,
}

impl CapInterval {
    /// Every interval, in order of window length.
    pub const ALL: [CapInterval; 5] = [
        CapInterval::PerTransaction,
        CapInterval::Daily,
        CapInterval::Weekly,
        CapInterval::Monthly,
        CapInterval::AllTime,
    ];

    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            CapInterval::PerTransaction => "per_transaction",
            CapInterval::Daily => "daily",
            CapInterval::Weekly => "weekly",
            CapInterval::Monthly => "monthly",
            CapInterval::AllTime => "all_time",
        }
    }
}

impl FromStr for CapInterval {
    type Err = CapFieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CapInterval::ALL
            .into_iter()
            .find(|i| i.as_str() == s)
            .ok_or_else(|| field_error("interval", s))
    }
}

impl fmt::Display for CapInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whose spend a cap counts: the whole organization's, one agent's, or what every agent does on
/// one connected account.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CapScope {
    /// Every agent of the organization together (`"org"`).
    Org,
    /// One agent (`"agent:<agent id>"`).
    Agent(String),
    /// Requests acting on one connected account (`"account:<acct id>"`, from `Stripe-Account`
    /// or `Stripe-Context`).
    Account(String),
}

impl fmt::Display for CapScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CapScope::Org => f.write_str("org"),
            CapScope::Agent(id) => write!(f, "agent:{id}"),
            CapScope::Account(id) => write!(f, "account:{id}"),
        }
    }
}

impl FromStr for CapScope {
    type Err = CapFieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let id_ok = |id: &str| {
            !id.is_empty()
                && id.len() <= 255
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        if s == "org" {
            return Ok(CapScope::Org);
        }
        match (s.strip_prefix("agent:"), s.strip_prefix("account:")) {
            (Some(id), _) if !id.is_empty() => Ok(CapScope::Agent(id.to_owned())),
            (_, Some(id)) if id_ok(id) => Ok(CapScope::Account(id.to_owned())),
            _ => Err(field_error("scope", s)),
        }
    }
}

impl Serialize for CapScope {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CapScope {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What exceeding a cap does to the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExceed {
    /// Ask a human (the default).
    #[default]
    Hold,
    /// Refuse.
    Deny,
}

impl OnExceed {
    /// The snake_case name used in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            OnExceed::Hold => "hold",
            OnExceed::Deny => "deny",
        }
    }
}

impl FromStr for OnExceed {
    type Err = CapFieldError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "hold" => Ok(OnExceed::Hold),
            "deny" => Ok(OnExceed::Deny),
            _ => Err(field_error("on_exceed", s)),
        }
    }
}

/// A spending cap, as the admin API stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cap {
    /// Cap id, named in verdicts.
    pub id: String,
    /// Whose spend counts.
    pub scope: CapScope,
    /// The one currency the cap counts; other currencies do not count toward it.
    pub currency: Currency,
    /// The window.
    pub interval: CapInterval,
    /// Most spend allowed in the window, in minor units.
    pub limit: i64,
    /// What exceeding does.
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// Operations counted; `None` means every `move_money` operation.
    #[serde(default)]
    pub operations: Option<Vec<String>>,
}

/// The result of checking one cap against one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapCheck {
    /// The cap's id.
    pub cap_id: String,
    /// `Some(action)` when the request would exceed the cap.
    pub exceeded: Option<OnExceed>,
    /// Spend in the window before this request, minor units.
    pub spent_before: i64,
    /// The cap's limit, minor units.
    pub limit: i64,
}

impl Cap {
    /// Whether this request counts toward this cap (POLICIES.md: one currency, the scope's
    /// agents, the listed operations or else every money operation).
    pub fn applies_to(&self, facts: &RequestFacts, agent_id: &str) -> bool {
        let Some(amount) = &facts.amount else {
            return false;
        };
        let scope_matches = match &self.scope {
            CapScope::Org => true,
            CapScope::Agent(id) => id == agent_id,
            CapScope::Account(id) => *id == facts.account,
        };
        let operation_matches = match &self.operations {
            None => facts.class == OperationClass::MoveMoney,
            Some(list) => list.contains(&facts.operation),
        };
        facts.counts_toward_caps()
            && amount.currency == self.currency
            && scope_matches
            && operation_matches
    }

    /// Whether `amount_minor` on top of `spent_before` exceeds the limit. A sum that overflows
    /// counts as exceeded.
    pub fn check(&self, amount_minor: i64, spent_before: i64) -> CapCheck {
        let total = match self.interval {
            CapInterval::PerTransaction => Some(amount_minor),
            _ => spent_before.checked_add(amount_minor),
        };
        let exceeded = match total {
            Some(total) if total <= self.limit => None,
            _ => Some(self.on_exceed),
        };
        CapCheck {
            cap_id: self.id.clone(),
            exceeded,
            spent_before,
            limit: self.limit,
        }
    }
}

/// Unix seconds at which the calendar window containing `now_unix` starts (UTC): midnight for
/// `Daily`, Monday midnight for `Weekly`, the 1st at midnight for `Monthly`, 0 for `AllTime` and
/// `PerTransaction`. A time outside the calendar's range gives `i64::MIN`: counting all spend
/// is the safe reading.
pub fn window_start(interval: CapInterval, now_unix: i64) -> i64 {
    let Ok(now) = OffsetDateTime::from_unix_timestamp(now_unix) else {
        return i64::MIN;
    };
    let today = now.date();
    let first_day = match interval {
        CapInterval::PerTransaction | CapInterval::AllTime => return 0,
        CapInterval::Daily => Some(today),
        CapInterval::Weekly => today.checked_sub(Duration::days(i64::from(
            today.weekday().number_days_from_monday(),
        ))),
        CapInterval::Monthly => today.replace_day(1).ok(),
    };
    first_day.map_or(i64::MIN, |day| day.midnight().assume_utc().unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::form::FormLimits;
    use time::macros::datetime;

    fn ts(dt: time::PrimitiveDateTime) -> i64 {
        dt.assume_utc().unix_timestamp()
    }

    #[test]
    fn windows_at_utc_boundaries() {
        use CapInterval::*;
        #[rustfmt::skip]
        let cases = [
            (Daily, ts(datetime!(2024-03-10 23:59:59)), ts(datetime!(2024-03-10 00:00:00))),
            (Daily, ts(datetime!(2024-03-11 00:00:00)), ts(datetime!(2024-03-11 00:00:00))),
            (Daily, ts(datetime!(2024-02-29 12:00:00)), ts(datetime!(2024-02-29 00:00:00))),
            // 2024-03-10 is a Sunday, 2024-03-11 a Monday.
            (Weekly, ts(datetime!(2024-03-10 23:59:59)), ts(datetime!(2024-03-04 00:00:00))),
            (Weekly, ts(datetime!(2024-03-11 00:00:00)), ts(datetime!(2024-03-11 00:00:00))),
            (Weekly, ts(datetime!(2024-03-13 08:30:00)), ts(datetime!(2024-03-11 00:00:00))),
            // 2025-01-01 is a Wednesday: its ISO week started Monday 2024-12-30.
            (Weekly, ts(datetime!(2025-01-01 00:00:00)), ts(datetime!(2024-12-30 00:00:00))),
            (Monthly, ts(datetime!(2024-12-31 23:59:59)), ts(datetime!(2024-12-01 00:00:00))),
            (Monthly, ts(datetime!(2025-01-01 00:00:00)), ts(datetime!(2025-01-01 00:00:00))),
            (Monthly, ts(datetime!(2024-02-29 23:59:59)), ts(datetime!(2024-02-01 00:00:00))),
            (Monthly, ts(datetime!(2024-03-01 00:00:00)), ts(datetime!(2024-03-01 00:00:00))),
            (Daily, 0, 0),
            // 1970-01-01 was a Thursday.
            (Weekly, 0, ts(datetime!(1969-12-29 00:00:00))),
            (AllTime, 1_700_000_000, 0),
            (PerTransaction, 1_700_000_000, 0),
            (Daily, i64::MAX, i64::MIN),
            (Monthly, i64::MIN, i64::MIN),
        ];
        for (interval, now, want) in cases {
            assert_eq!(window_start(interval, now), want, "{interval} at {now}");
        }
    }

    fn cap(interval: CapInterval, limit: i64, on_exceed: OnExceed) -> Cap {
        Cap {
            id: "cap_1".into(),
            scope: CapScope::Org,
            currency: Currency::parse("usd").unwrap(),
            interval,
            limit,
            on_exceed,
            operations: None,
        }
    }

    #[test]
    fn check_compares_window_spend() {
        use CapInterval::*;
        let cases = [
            (PerTransaction, 100, 100, 1_000_000, None),
            (PerTransaction, 100, 101, 0, Some(OnExceed::Deny)),
            (Daily, 100, 40, 60, None),
            (Daily, 100, 41, 60, Some(OnExceed::Deny)),
            (Monthly, 100, 0, 100, None),
            (AllTime, i64::MAX, 1, i64::MAX, Some(OnExceed::Deny)),
        ];
        for (interval, limit, amount, spent, want) in cases {
            let check = cap(interval, limit, OnExceed::Deny).check(amount, spent);
            assert_eq!(check.exceeded, want, "{interval} {limit} {amount} {spent}");
            assert_eq!(
                (check.spent_before, check.limit, check.cap_id.as_str()),
                (spent, limit, "cap_1")
            );
        }
        let held = cap(Daily, 10, OnExceed::default()).check(11, 0);
        assert_eq!(held.exceeded, Some(OnExceed::Hold));
    }

    #[test]
    fn applies_to_matching_requests_only() {
        let facts = |method, path, body: &str| {
            crate::classify::classify(method, path, body.as_bytes(), &FormLimits::default())
                .unwrap()
        };
        let pay = facts("POST", "/v1/payment_intents", "amount=100&currency=usd");
        let eur = facts("POST", "/v1/payment_intents", "amount=100&currency=eur");
        // Offline, a confirm is not valued: it has no amount to count.
        let confirm = facts("POST", "/v1/payment_intents/pi_1/confirm", "");
        // A refund to a customer balance states its own currency (no charge to look up).
        let refund = facts(
            "POST",
            "/v1/refunds",
            "amount=100&currency=usd&customer=cus_1",
        );
        let read = facts("GET", "/v1/charges", "");
        let subscription = facts(
            "POST",
            "/v1/subscriptions",
            "customer=cus_1&items[0][price_data][unit_amount]=100&items[0][price_data][currency]=usd&items[0][price_data][product]=prod_1&items[0][price_data][recurring][interval]=month",
        );
        // Seen by policies but counted when the intent was created (a normal capture).
        let seen = RequestFacts {
            counted: None,
            ..pay.clone()
        };
        let org = cap(CapInterval::Daily, 1, OnExceed::Hold);
        let agent = Cap {
            scope: CapScope::Agent("agt_1".into()),
            ..org.clone()
        };
        let refunds_only = Cap {
            operations: Some(vec!["refunds.create".into()]),
            ..org.clone()
        };
        let subscriptions = Cap {
            operations: Some(vec!["subscriptions.create".into()]),
            ..org.clone()
        };
        let cases = [
            (&org, &pay, "agt_1", true),
            (&org, &eur, "agt_1", false),
            (&org, &confirm, "agt_1", false),
            (&org, &seen, "agt_1", false),
            (&org, &read, "agt_1", false),
            // Commitments count only toward caps that list them.
            (&org, &subscription, "agt_1", false),
            (&subscriptions, &subscription, "agt_1", true),
            (&subscriptions, &pay, "agt_1", false),
            (&agent, &pay, "agt_1", true),
            (&agent, &pay, "agt_2", false),
            (&refunds_only, &pay, "agt_1", false),
            (&refunds_only, &refund, "agt_1", true),
        ];
        for (cap, facts, agent_id, want) in cases {
            assert_eq!(
                cap.applies_to(facts, agent_id),
                want,
                "{} {} {agent_id}",
                cap.scope,
                facts.operation
            );
        }
    }

    #[test]
    fn account_scope_matches_the_connected_account() {
        let on = |account: &str| {
            let raw = crate::classify::RawRequest {
                method: "POST",
                path: "/v1/payment_intents",
                query: "",
                content_type: Some("application/x-www-form-urlencoded"),
                body: b"amount=100&currency=usd",
                account,
            };
            crate::classify::classify_request(
                &raw,
                &FormLimits::default(),
                &crate::valuation::Lookups::offline(),
            )
            .unwrap()
        };
        let acct_1 = Cap {
            scope: "account:acct_1".parse().unwrap(),
            ..cap(CapInterval::Daily, 1, OnExceed::Hold)
        };
        assert_eq!(acct_1.scope, CapScope::Account("acct_1".into()));
        assert!(acct_1.applies_to(&on("acct_1"), "agt_1"));
        assert!(acct_1.applies_to(&on("acct_1"), "agt_2"), "every agent");
        assert!(!acct_1.applies_to(&on("acct_2"), "agt_1"));
        assert!(!acct_1.applies_to(&on(""), "agt_1"), "not the platform");
        // Org and agent caps count connected-account requests too.
        let org = cap(CapInterval::Daily, 1, OnExceed::Hold);
        assert!(org.applies_to(&on("acct_1"), "agt_1"));
    }

    proptest::proptest! {
        #[test]
        fn window_contains_now(now in proptest::prelude::any::<i64>()) {
            for interval in CapInterval::ALL {
                let start = window_start(interval, now);
                proptest::prop_assert!(start <= now || start == 0, "{interval} {now} {start}");
            }
        }
    }

    #[test]
    fn text_forms_round_trip() {
        for scope in ["org", "agent:agt_1", "account:acct_1"] {
            assert_eq!(scope.parse::<CapScope>().unwrap().to_string(), scope);
        }
        let long = format!("account:{}", "a".repeat(256));
        for bad in [
            "",
            "agent:",
            "Org",
            "user:x",
            "account:",
            "account:acct-1",
            "account:acct_1/x",
            "account: acct_1",
            long.as_str(),
        ] {
            assert!(bad.parse::<CapScope>().is_err(), "{bad}");
        }
        for interval in CapInterval::ALL {
            assert_eq!(interval.as_str().parse::<CapInterval>(), Ok(interval));
            assert_eq!(serde_json::to_value(interval).unwrap(), interval.as_str());
        }
        assert!("fortnightly".parse::<CapInterval>().is_err());
        assert_eq!("deny".parse::<OnExceed>(), Ok(OnExceed::Deny));
        let json = r#"{"id":"cap_1","scope":"agent:agt_7","currency":"usd","interval":"daily","limit":500}"#;
        let cap: Cap = serde_json::from_str(json).unwrap();
        assert_eq!(cap.scope, CapScope::Agent("agt_7".into()));
        assert_eq!(
            (cap.on_exceed, cap.operations.clone()),
            (OnExceed::Hold, None)
        );
        let again: Cap = serde_json::from_value(serde_json::to_value(&cap).unwrap()).unwrap();
        assert_eq!(again, cap);
        assert!(serde_json::from_str::<Cap>(&json.replace("agent:agt_7", "team")).is_err());
        let account: Cap =
            serde_json::from_str(&json.replace("agent:agt_7", "account:acct_9")).unwrap();
        assert_eq!(account.scope, CapScope::Account("acct_9".into()));
        assert_eq!(
            serde_json::to_value(&account).unwrap()["scope"],
            "account:acct_9"
        );
    }
}

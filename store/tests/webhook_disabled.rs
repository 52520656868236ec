//! Issue #12 item 5, "retries keep going to a disabled endpoint": a disabled endpoint gets no
//! further attempt. Its pending deliveries are abandoned, with the reason, in the transaction that
//! disables it; an attempt in flight at that moment is recorded without being rescheduled; an
//! explicit retry is refused until the endpoint is enabled again.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use store::{Actor, Attempt, MasterKey, OrgId, RetryPolicy, Store, StoreError};

struct Setup {
    _dir: tempfile::TempDir,
    store: Store,
    org: OrgId,
    endpoint: String,
}

/// An organization with one endpoint and `n` pending deliveries to it (one per agent created).
fn setup(n: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), MasterKey::generate()).unwrap();
    let actor = Actor::System("test".into());
    let (org, _) = store
        .init_org_with_owner("wh-org", "w@example.com", "w-Password-12345")
        .unwrap();
    let ep = store
        .create_webhook(&org.id, "https://8.8.8.8/hook", None, "whsec_test", &actor)
        .unwrap();
    for i in 0..n {
        store
            .create_agent(&org.id, &format!("agent-{i}"), vec![], &actor)
            .unwrap();
    }
    assert_eq!(store.fan_out_outbox(100).unwrap(), n);
    Setup {
        _dir: dir,
        store,
        org: org.id,
        endpoint: ep.id,
    }
}

fn failed(at_ms: i64) -> Attempt {
    Attempt {
        at_ms,
        status: Some(500),
        duration_ms: 1,
        error: Some("HTTP 500".into()),
    }
}

fn states(s: &Setup) -> Vec<(String, Option<String>, Option<i64>)> {
    s.store
        .list_deliveries(&s.org, &s.endpoint, 100)
        .unwrap()
        .into_iter()
        .map(|d| (d.state, d.reason, d.next_attempt_ms))
        .collect()
}

#[test]
fn disabling_abandons_pending_deliveries_and_an_in_flight_failure_is_not_rescheduled() {
    let s = setup(2);
    let admin = Actor::System("admin".into());
    let now = store::now_ms();
    let due = s.store.claim_due_deliveries(now, 10).unwrap();
    assert_eq!(due.len(), 2);

    // Both claimed (in flight); the administrator disables the endpoint.
    s.store
        .update_webhook(&s.org, &s.endpoint, None, None, Some(false), &admin)
        .unwrap();
    let why = Some("endpoint disabled by an administrator".to_string());
    assert_eq!(states(&s), vec![("abandoned".into(), why.clone(), None); 2]);

    // The in-flight attempts finish: one failed (stays abandoned, not rescheduled), one 2xx
    // (it did arrive: delivered).
    let policy = RetryPolicy::default();
    let [a, b] = [&due[0].delivery, &due[1].delivery];
    let d = s
        .store
        .record_attempt(&s.org, &s.endpoint, &a.id, failed(now), &policy, 0)
        .unwrap();
    assert_eq!((d.state.as_str(), d.reason.clone()), ("abandoned", why));
    assert_eq!((d.attempts.len(), d.next_attempt_ms), (1, None));
    let ok = Attempt {
        status: Some(200),
        error: None,
        ..failed(now)
    };
    let d = s
        .store
        .record_attempt(&s.org, &s.endpoint, &b.id, ok, &policy, 0)
        .unwrap();
    assert_eq!((d.state.as_str(), d.reason), ("delivered", None));

    // Nothing is due, ever: the queue holds nothing for this endpoint.
    assert!(
        s.store
            .claim_due_deliveries(i64::MAX / 2, 10)
            .unwrap()
            .is_empty()
    );

    // A retry is refused while disabled, and changes nothing.
    let err = s
        .store
        .retry_delivery(&s.org, &s.endpoint, &a.id, &admin)
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict(_)), "{err:?}");
    assert_eq!(states(&s)[0].0, "abandoned");

    // Re-enabling resurrects nothing; an explicit retry does, for that one delivery.
    s.store
        .update_webhook(&s.org, &s.endpoint, None, None, Some(true), &admin)
        .unwrap();
    assert!(
        s.store
            .claim_due_deliveries(i64::MAX / 2, 10)
            .unwrap()
            .is_empty()
    );
    let d = s
        .store
        .retry_delivery(&s.org, &s.endpoint, &a.id, &admin)
        .unwrap();
    assert_eq!((d.state.as_str(), d.reason), ("pending", None));
    let due = s.store.claim_due_deliveries(i64::MAX / 2, 10).unwrap();
    assert_eq!(
        due.iter()
            .map(|d| d.delivery.id.as_str())
            .collect::<Vec<_>>(),
        [a.id.as_str()]
    );
}

#[test]
fn automatic_disable_abandons_the_failing_delivery_and_the_rest_of_the_queue() {
    let s = setup(3);
    let policy = RetryPolicy {
        disable_after_failures: 1,
        ..RetryPolicy::default()
    };
    let now = store::now_ms();
    let due = s.store.claim_due_deliveries(now, 1).unwrap();
    assert_eq!(due.len(), 1);
    let d = s
        .store
        .record_attempt(
            &s.org,
            &s.endpoint,
            &due[0].delivery.id,
            failed(now),
            &policy,
            0,
        )
        .unwrap();
    let why = Some("endpoint disabled after repeated failures".to_string());
    assert_eq!(
        (d.state.as_str(), d.reason.clone()),
        ("abandoned", why.clone())
    );
    assert_eq!(states(&s), vec![("abandoned".into(), why, None); 3]);
    let ep = s.store.list_webhooks(&s.org).unwrap().remove(0);
    assert!(!ep.enabled);
    assert_eq!(
        ep.disabled_reason.as_deref(),
        Some("1 failed attempts in a row")
    );
    assert!(
        s.store
            .claim_due_deliveries(i64::MAX / 2, 10)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn deleting_an_endpoint_leaves_nothing_to_attempt() {
    let s = setup(1);
    let admin = Actor::System("admin".into());
    let now = store::now_ms();
    assert_eq!(s.store.claim_due_deliveries(now, 10).unwrap().len(), 1);
    s.store.delete_webhook(&s.org, &s.endpoint, &admin).unwrap();
    assert!(
        s.store
            .claim_due_deliveries(i64::MAX / 2, 10)
            .unwrap()
            .is_empty()
    );
}

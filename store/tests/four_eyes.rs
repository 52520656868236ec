//! Issue 12, "four eyes that are really four", at the store: memberships begin at an accepted
//! invitation, a hold's quorum counts only members accepted before it, and the kill switch is
//! re-checked in the decision's and the executor claim's own transactions.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{PASSWORD, TestOrg};
use store::{
    Actor, AgentStatus, Claim, Decision, HumanVerdict, IntentId, IntentStatus, Role, Store,
    StoreError, UserId,
};

const POLICY: &str = r#"@id("pay") permit (principal, action in Action::"move_money", resource);
@id("two-humans") @hold("two humans") @approvals("2")
forbid (principal, action in Action::"move_money", resource) when { resource.amount > 100 };"#;

type Setup = TestOrg;

fn no_second_factor(_: &Store, _: &UserId) -> store::Result<bool> {
    Ok(false)
}

fn setup() -> Setup {
    common::org("four-eyes", POLICY, "sk_test_fourEyes")
}

/// Invite `email` as `role` (by the owner) and accept with a new password; the new user.
fn join(s: &Setup, email: &str, role: Role) -> UserId {
    let (inv, token) = s
        .store
        .create_invitation(&s.org, email, role, Role::Owner, &s.owner)
        .unwrap();
    assert_eq!(inv.status, store::InvitationStatus::Pending);
    let accepted = s
        .store
        .accept_invitation(&token, PASSWORD, &no_second_factor)
        .unwrap();
    assert!(accepted.new_account);
    assert!(matches!(
        s.store
            .accept_invitation(&token, PASSWORD, &no_second_factor),
        Err(StoreError::Refused {
            status: 404,
            code: "invitation_invalid",
            ..
        })
    ));
    accepted.user_id
}

fn hold(s: &Setup, key: &str) -> IntentId {
    match s.pay(key, "amount=5000&currency=usd") {
        Decision::Respond(i) if i.status == IntentStatus::PendingApproval => i.id,
        other => panic!("expected a hold, got {other:?}"),
    }
}

fn decide(s: &Setup, id: &IntentId, user: &UserId, v: HumanVerdict) -> store::Result<IntentStatus> {
    decide_hold(s, id, user, v, false).map(|i| i.status)
}

fn decide_hold(
    s: &Setup,
    id: &IntentId,
    user: &UserId,
    verdict: HumanVerdict,
    stepped_up: bool,
) -> store::Result<store::Intent> {
    let cmd = store::Command::DecideHold {
        org: s.org.clone(),
        intent: id.clone(),
        user: user.clone(),
        verdict,
        comment: None,
        stepped_up,
    };
    s.committer.apply_blocking(cmd).map(|a| a.intent().unwrap())
}

fn claim(s: &Setup, id: &IntentId) -> Claim {
    let cmd = store::Command::Claim {
        org: s.org.clone(),
        intent: id.clone(),
    };
    s.committer.apply_blocking(cmd).unwrap().claim().unwrap()
}

fn code(e: store::Result<IntentStatus>) -> &'static str {
    match e {
        Err(StoreError::Refused { code, .. }) => code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_member_accepted_after_the_hold_does_not_count_toward_its_quorum() {
    let s = setup();
    let early = join(&s, "early@example.com", Role::Approver);
    let id = hold(&s, "k1");
    let late = join(&s, "late@example.com", Role::Approver);
    assert_eq!(
        decide(&s, &id, &early, HumanVerdict::Approve).unwrap(),
        IntentStatus::PendingApproval
    );
    assert_eq!(
        code(decide(&s, &id, &late, HumanVerdict::Approve)),
        "joined_after_hold"
    );
    assert_eq!(
        code(decide(&s, &id, &late, HumanVerdict::Deny)),
        "joined_after_hold"
    );
    let i = s.store.intent(&s.org, &id).unwrap().unwrap();
    assert_eq!(
        (i.status, i.approvals.len()),
        (IntentStatus::PendingApproval, 1)
    );
    // A later hold is the late member's to decide.
    let later = hold(&s, "k2");
    assert_eq!(
        decide(&s, &later, &late, HumanVerdict::Deny).unwrap(),
        IntentStatus::Denied
    );
    assert_eq!(
        decide(&s, &id, &s.owner, HumanVerdict::Approve).unwrap(),
        IntentStatus::Approved
    );
    let ctx = s.store.hold_context(&s.org, &i).unwrap();
    assert_eq!(ctx["agent"]["created_by"]["email"], "four-eyes@example.com");
    assert_eq!(
        ctx["decisions"][0]["invited_by"]["email"],
        "four-eyes@example.com"
    );
}

#[test]
fn decisions_refuse_frozen_organizations_and_agents_and_missing_step_up() {
    let s = setup();
    let id = hold(&s, "k1");
    let actor = Actor::User(s.owner.clone());
    s.store.set_org_frozen(&s.org, true, &actor).unwrap();
    assert_eq!(
        code(decide(&s, &id, &s.owner, HumanVerdict::Approve)),
        "organization_frozen"
    );
    s.store.set_org_frozen(&s.org, false, &actor).unwrap();
    s.store
        .set_agent_status(&s.org, &s.agent, AgentStatus::Frozen, &actor)
        .unwrap();
    assert_eq!(
        code(decide(&s, &id, &s.owner, HumanVerdict::Deny)),
        "agent_frozen"
    );
    s.store
        .set_agent_status(&s.org, &s.agent, AgentStatus::Active, &actor)
        .unwrap();
    s.store
        .update_org(&s.org, None, Some(true), &actor)
        .unwrap();
    assert_eq!(
        code(decide(&s, &id, &s.owner, HumanVerdict::Approve)),
        "step_up_required"
    );
    let i = decide_hold(&s, &id, &s.owner, HumanVerdict::Approve, true).unwrap();
    assert_eq!(i.approvals.len(), 1);
}

#[test]
fn the_claim_cancels_an_approved_hold_once_the_kill_switch_is_on() {
    let s = setup();
    let second = join(&s, "second@example.com", Role::Admin);
    let id = hold(&s, "k1");
    decide(&s, &id, &s.owner, HumanVerdict::Approve).unwrap();
    assert_eq!(
        decide(&s, &id, &second, HumanVerdict::Approve).unwrap(),
        IntentStatus::Approved
    );
    let reserved = s
        .store
        .intent(&s.org, &id)
        .unwrap()
        .unwrap()
        .reservation
        .unwrap();
    assert!(!reserved.released);
    s.store
        .set_agent_status(
            &s.org,
            &s.agent,
            AgentStatus::Revoked,
            &Actor::User(s.owner.clone()),
        )
        .unwrap();
    let Claim::Cancelled(i) = claim(&s, &id) else {
        panic!("the claim must cancel");
    };
    assert_eq!(i.status, IntentStatus::Denied);
    assert!(i.reason.contains("revoked"), "{}", i.reason);
    assert!(i.reservation.unwrap().released, "the reservation goes back");
    assert!(s.store.approved_queue().unwrap().is_empty());
    assert!(matches!(claim(&s, &id), Claim::Gone));
    assert!(s.store.audit_verify(&s.org).unwrap().is_ok());
}

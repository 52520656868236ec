//! Issue 11: an organization nobody customized keeps the safe default when operations gain
//! names; a customized policy set is never touched.
#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

use store::{Actor, MasterKey, Store};

#[test]
fn an_untouched_previous_default_is_replaced_and_a_custom_set_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), MasterKey::generate()).unwrap();
    let actor = Actor::System("test".into());
    // The shipped previous default names groups with `==`, which `set_policy` now refuses (it
    // only exists in stores written by earlier versions, and still loads there); a stand-in
    // previous default exercises the same upgrade.
    let shipped_previous = policies::PREVIOUS_DEFAULT_POLICY_TEXTS[0];
    assert!(policies::compile(shipped_previous).is_err());
    assert!(policies::compile_stored(shipped_previous).is_ok());
    let previous = "@id(\"old\") permit (principal, action in Action::\"move_money\", resource);\n";
    let previous_defaults = [shipped_previous, previous];
    let (old, _) = store
        .init_org_with_owner("old-default", "a@example.com", "a-Password-12345")
        .unwrap();
    store.set_policy(&old.id, previous, &actor).unwrap();
    let (custom, _) = store
        .init_org_with_owner("custom", "b@example.com", "b-Password-12345")
        .unwrap();
    let custom_text = format!("{previous}\n// ours\n");
    let custom_version = store.set_policy(&custom.id, &custom_text, &actor).unwrap();

    let upgraded = store.upgrade_default_policies(&previous_defaults).unwrap();

    assert_eq!(upgraded, vec![old.id.clone()]);
    let active = store.active_policy(&old.id).unwrap();
    assert_eq!(active.text, policies::DEFAULT_POLICY_TEXT);
    assert_eq!(active.author, "system:upgrade");
    let kept = store.active_policy(&custom.id).unwrap();
    assert_eq!((kept.version, kept.text), (custom_version, custom_text));
    // Idempotent: a second start changes nothing.
    assert!(
        store
            .upgrade_default_policies(&previous_defaults)
            .unwrap()
            .is_empty()
    );
}

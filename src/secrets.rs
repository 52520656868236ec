//! Where the master key lives (OPERATIONS.md "Secrets and files") and
//! `payment-guard secrets rotate-master-key`.
//!
//! Rotation, with the guard stopped (the store is locked while it runs):
//! 1. open the store with the current key (the key-check value proves it is the right one);
//! 2. the new key — generated, or read from stdin — is written to `<key file>.new` (0600, synced);
//! 3. every sealed secret is re-sealed under the new key and the key-check value replaced, in one
//!    durable store transaction, with a `secrets.master_key_rotated` audit event per organization;
//! 4. `<key file>.new` is renamed over the key file (atomic, directory synced).
//!
//! Interrupted before 3 commits: the store still opens with the old key; the next run removes
//! the stale `.new` file and starts over. Interrupted between 3 and 4: the old key no longer
//! opens the store, the new one is in `.new`; the next run sees that and only does step 4.
//! A key given in `GUARD_SECRETS_MASTER_KEY` is not written anywhere: the operator supplies the
//! new one on stdin (keeping it in their secret store first) and sets the variable to it.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::json;
use store::{Actor, KeyLocation, MasterKey, Store, StoreError};

use crate::config::Config;

/// The master key and where it came from, after the data directory was made private.
pub fn load_key(cfg: &Config) -> anyhow::Result<(MasterKey, KeyLocation)> {
    let dir = &cfg.store.data_dir;
    store::secure_data_dir(dir)
        .with_context(|| format!("cannot prepare the data directory {}", dir.display()))?;
    let loaded = store::load_master_key(
        dir,
        cfg.secrets.master_key.as_deref(),
        cfg.secrets.master_key_file.as_deref(),
        cfg.admin.production,
    )?;
    Ok(loaded)
}

/// The file a rotation writes the new key to before renaming it over `key_file`.
fn pending_path(key_file: &Path) -> PathBuf {
    let mut name = key_file.as_os_str().to_owned();
    name.push(".new");
    PathBuf::from(name)
}

/// Open the store with the configured key; a wrong key names the way out.
pub fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let (key, location) = load_key(cfg)?;
    match Store::open_with(&cfg.store.data_dir, key, &cfg.store.options()) {
        Ok(s) => Ok(s),
        Err(StoreError::WrongMasterKey) => {
            let hint = match &location {
                KeyLocation::File(p) | KeyLocation::DataDir(p) if pending_path(p).exists() => {
                    format!(
                        "; {} exists: a rotation was interrupted after its commit, run \
                         `payment-guard secrets rotate-master-key` again to finish it",
                        pending_path(p).display()
                    )
                }
                _ => String::new(),
            };
            bail!("{}{hint}", StoreError::WrongMasterKey)
        }
        Err(e) => bail!("{e}"),
    }
}

/// `payment-guard secrets rotate-master-key`.
pub fn rotate_master_key(
    cfg: &Config,
    new_key_stdin: bool,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let (old, location) = load_key(cfg)?;
    let given = if new_key_stdin {
        let mut text = String::new();
        std::io::stdin().take(1024).read_to_string(&mut text)?;
        Some(MasterKey::from_base64(&text).context("the new key on stdin")?)
    } else {
        None
    };
    let dir = &cfg.store.data_dir;
    let options = cfg.store.options();
    let key_file = match &location {
        KeyLocation::File(p) | KeyLocation::DataDir(p) => Some(p.clone()),
        KeyLocation::Value => None,
    };
    let Some(key_file) = key_file else {
        let Some(new) = given else {
            bail!(
                "the master key comes from GUARD_SECRETS_MASTER_KEY: create the new key yourself \
                 (e.g. `openssl rand -base64 32`), keep it where the current one is kept, and \
                 pass it with --new-key-stdin"
            );
        };
        let store = Store::open_with(dir, old, &options).map_err(|e| anyhow::anyhow!("{e}"))?;
        let report = store.rotate_master_key(&new, &Actor::System("cli".into()))?;
        print_report(&report, None, json)?;
        if !json {
            println!("set GUARD_SECRETS_MASTER_KEY to the new key before the next start");
        }
        return Ok(ExitCode::SUCCESS);
    };
    let pending = pending_path(&key_file);
    let store = match Store::open_with(dir, old, &options) {
        Ok(s) => s,
        Err(StoreError::WrongMasterKey) if pending.exists() => {
            return finish_interrupted(dir, &options, &pending, &key_file, json);
        }
        Err(e) => bail!("{e}"),
    };
    if pending.exists() {
        // The store still opens with the current key: that earlier attempt never committed.
        tracing::warn!(path = %pending.display(), "removing the new key of an interrupted rotation that did not commit");
        std::fs::remove_file(&pending)?;
    }
    let new = given.unwrap_or_else(MasterKey::generate);
    store::write_key_file(&pending, &new)
        .with_context(|| format!("cannot write {}", pending.display()))?;
    let report = store.rotate_master_key(&new, &Actor::System("cli".into()))?;
    drop(store);
    store::replace_key_file(&pending, &key_file).with_context(|| {
        format!(
            "cannot rename {} to {}",
            pending.display(),
            key_file.display()
        )
    })?;
    print_report(&report, Some(&key_file), json)?;
    Ok(ExitCode::SUCCESS)
}

/// Step 4 of a rotation whose store transaction committed: the new key is in `pending`.
fn finish_interrupted(
    dir: &Path,
    options: &store::StoreOptions,
    pending: &Path,
    key_file: &Path,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(pending)
        .with_context(|| format!("cannot read {}", pending.display()))?;
    let new = MasterKey::from_base64(&text)?;
    let store = Store::open_with(dir, new, options).map_err(|e| {
        anyhow::anyhow!(
            "neither the current key nor {} opens the store: {e}",
            pending.display()
        )
    })?;
    drop(store);
    store::replace_key_file(pending, key_file)?;
    if json {
        println!(
            "{}",
            json!({"finished_interrupted_rotation": true, "key_file": key_file})
        );
    } else {
        println!(
            "finished a rotation interrupted after its commit: {} now holds the new key",
            key_file.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_report(
    report: &store::RekeyReport,
    key_file: Option<&Path>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let mut v = serde_json::to_value(report)?;
        v["key_file"] = json!(key_file);
        println!("{v}");
    } else {
        println!(
            "re-sealed {} rail keys, {} TOTP secrets and {} webhook secrets under the new master \
             key ({} organizations audited)",
            report.rail_keys, report.totp_secrets, report.webhook_secrets, report.organizations
        );
        if let Some(p) = key_file {
            println!(
                "the new key is in {}; the old key no longer opens the store",
                p.display()
            );
        }
    }
    Ok(())
}

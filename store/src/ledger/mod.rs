//! The ledger: the one state machine that changes intents (docs/ARCHITECTURE.md).
//!
//! Every change of an intent, of its status indexes, of idempotency records and of spend is a
//! [`Command`], applied only by the writer thread (`writer.rs`) inside a ledger transaction
//! ([`Tx`], `tx.rs`) that records each write for the write-ahead log (`wal.rs`). A command is
//! deterministic given the store's state and the batch's clock, so replaying its recorded
//! writes after a crash rebuilds exactly the state it left (the recovery-equivalence test in
//! `writer.rs` runs every command).
//!
//! The model is TigerBeetle's `state_machine.zig`: `prepare` on the caller's thread (here: the
//! Cedar policies that do not read `context` are evaluated before the request reaches the
//! queue, [`Committer::decide`]), then `commit` of a whole batch on one thread, one durable log
//! append for the batch, answers only after it.
//!
//! Control-plane records (orgs, members, agents, policies, caps, webhooks, sessions, TOTP,
//! tokens) are not ledger state: they are durable `Store::write` commits, which may not write a
//! ledger table (`tx.rs` refuses it).

pub(crate) mod approvals;
pub(crate) mod decide;
pub(crate) mod hot;
pub(crate) mod record;
pub(crate) mod spend;
pub(crate) mod tx;
pub(crate) mod wal;
pub(crate) mod writer;

use crate::Store;
use crate::error::Result;
use crate::ids::{IntentId, OrgId, UserId};
use crate::ledger::approvals::{Claim, HumanVerdict};
use crate::ledger::decide::{Decision, DecisionRequest, UpstreamOutcome};
use crate::model::Intent;
use crate::time_util::Clock;

pub(crate) use tx::{Mode, Tx, TxTable};
pub use writer::{Committer, WriterLimits};

/// A change of ledger state, applied by the writer thread in a ledger transaction.
#[derive(Clone, Debug)]
pub enum Command {
    /// Decide an agent's request (PROXY.md steps 3–4): idempotency, caps, policies, the
    /// intent, its reservation and its `decision` event.
    Decide(Box<DecisionRequest>),
    /// Record the upstream outcome of a forwarded intent (PROXY.md step 5).
    Settle {
        /// Organization.
        org: OrgId,
        /// Intent.
        intent: IntentId,
        /// What the rail answered, or that it did not.
        outcome: UpstreamOutcome,
    },
    /// A human approves or denies a hold (ADMIN_API.md "Approvals").
    DecideHold {
        /// Organization.
        org: OrgId,
        /// Intent.
        intent: IntentId,
        /// The deciding human.
        user: UserId,
        /// Approve or deny.
        verdict: HumanVerdict,
        /// Their comment.
        comment: Option<String>,
        /// Whether the decision carried a fresh TOTP code (checked by the caller).
        stepped_up: bool,
    },
    /// The executor claims an approved hold (`approved → forwarding`) before sending it.
    Claim {
        /// Organization.
        org: OrgId,
        /// Intent.
        intent: IntentId,
    },
    /// Expire undecided holds whose time has come, at most `max`.
    Expire {
        /// Holds expiring at or before this second expire.
        now_unix: i64,
        /// At most this many (bounded transaction).
        max: usize,
    },
    /// At start: intents left `forwarding` by a previous process become `unknown`.
    Recover,
    /// Remove idempotency records older than the retention, scanning at most `max_scan`
    /// records after `after` (the pruner walks the table in rounds).
    Prune {
        /// Records created before this second are removed.
        created_before_unix: i64,
        /// Resume after this record key (`None`: from the start).
        after: Option<String>,
        /// Records looked at in this round at most.
        max_scan: usize,
    },
}

impl Command {
    /// A name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Decide(_) => "decide",
            Command::Settle { .. } => "settle",
            Command::DecideHold { .. } => "decide_hold",
            Command::Claim { .. } => "claim",
            Command::Expire { .. } => "expire",
            Command::Recover => "recover",
            Command::Prune { .. } => "prune",
        }
    }
}

/// What a command did, one variant per command.
#[derive(Debug)]
pub enum Applied {
    /// [`Command::Decide`].
    Decided(Decision),
    /// [`Command::Settle`]: the settled intent.
    Settled(Box<Intent>),
    /// [`Command::DecideHold`]: the intent after the human's decision.
    HoldDecided(Box<Intent>),
    /// [`Command::Claim`].
    Claimed(Claim),
    /// [`Command::Expire`]: the holds that expired.
    Expired(Vec<IntentId>),
    /// [`Command::Recover`]: how many intents became `unknown`.
    Recovered(usize),
    /// [`Command::Prune`].
    Pruned(Pruned),
}

impl Applied {
    /// The decision of an [`Applied::Decided`].
    pub fn decision(self) -> Option<Decision> {
        match self {
            Applied::Decided(d) => Some(d),
            _ => None,
        }
    }

    /// The intent of an [`Applied::Settled`] or [`Applied::HoldDecided`].
    pub fn intent(self) -> Option<Intent> {
        match self {
            Applied::Settled(i) | Applied::HoldDecided(i) => Some(*i),
            _ => None,
        }
    }

    /// The claim of an [`Applied::Claimed`].
    pub fn claim(self) -> Option<Claim> {
        match self {
            Applied::Claimed(c) => Some(c),
            _ => None,
        }
    }

    /// The count of a [`Applied::Recovered`].
    pub fn recovered(&self) -> Option<usize> {
        match self {
            Applied::Recovered(n) => Some(*n),
            _ => None,
        }
    }
}

/// One pruning round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Records removed.
    pub removed: usize,
    /// Where the next round starts; `None` when the round reached the end of the table.
    pub next: Option<String>,
}

/// Apply one command in the writer's transaction. The only caller is the writer thread.
pub(crate) fn apply(store: &Store, tx: &Tx<'_>, cmd: &Command, clock: &Clock) -> Result<Applied> {
    debug_assert_eq!(tx.mode(), Mode::Ledger);
    Ok(match cmd {
        Command::Decide(req) => Applied::Decided(store.decide_in(tx, req, clock)?),
        Command::Settle {
            org,
            intent,
            outcome,
        } => Applied::Settled(Box::new(crate::ledger::decide::settle_in(
            tx,
            org,
            intent,
            outcome.clone(),
            clock,
        )?)),
        Command::DecideHold {
            org,
            intent,
            user,
            verdict,
            comment,
            stepped_up,
        } => Applied::HoldDecided(Box::new(store.decide_hold_in(
            tx,
            org,
            intent,
            user,
            *verdict,
            comment.clone(),
            *stepped_up,
            clock,
        )?)),
        Command::Claim { org, intent } => {
            Applied::Claimed(store.claim_approved_in(tx, org, intent, clock)?)
        }
        Command::Expire { now_unix, max } => Applied::Expired(
            crate::ledger::approvals::expire_holds_in(tx, *now_unix, *max, clock)?,
        ),
        Command::Recover => {
            Applied::Recovered(crate::ledger::decide::recover_in_flight_in(tx, clock)?)
        }
        Command::Prune {
            created_before_unix,
            after,
            max_scan,
        } => Applied::Pruned(crate::ledger::decide::prune_idempotency_in(
            tx,
            *created_before_unix,
            after.as_deref(),
            *max_scan,
        )?),
    })
}

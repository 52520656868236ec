//! The one error type of the store crate.

use policies::Diagnostic;

/// Everything that can go wrong in the store. Callers map it to HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database file is held by another process (a running guard).
    #[error("the store at {0} is in use by another process (stop the guard first)")]
    Locked(String),
    /// An I/O or database failure: the operation did not happen.
    #[error("store failure: {0}")]
    Db(String),
    /// The object does not exist (or belongs to another organization).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with current state.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller may not do this (a rule of the organization, not a role).
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The input is invalid; nothing was changed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A rule refused the request, with the HTTP status and the stable error code the API
    /// answers (e.g. 403 `step_up_required`, 409 `organization_frozen`).
    #[error("{message}")]
    Refused {
        /// HTTP status to answer.
        status: u16,
        /// Stable machine-readable code.
        code: &'static str,
        /// Human-readable message.
        message: String,
    },
    /// A policy set failed validation; nothing was changed.
    #[error("policy set rejected ({} diagnostics)", .0.len())]
    PolicyRejected(Vec<Diagnostic>),
    /// A sealed secret could not be opened (wrong master key or corrupt data).
    #[error("cannot decrypt a stored secret: wrong master key or corrupt data")]
    Crypto,
    /// The master key is not the one this store's secrets were sealed with (checked at open).
    #[error(
        "the master key does not open this store's secrets: it is not the key they were sealed with (after `secrets rotate-master-key`, start with the new key)"
    )]
    WrongMasterKey,
    /// Stored data does not decode: the file was changed outside the guard.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::Db(e.to_string())
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    std::io::Error
);

impl From<redb::DatabaseError> for StoreError {
    fn from(e: redb::DatabaseError) -> Self {
        match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked("data dir".into()),
            other => StoreError::Db(other.to_string()),
        }
    }
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Result alias for store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

impl StoreError {
    /// A refusal of the request as it stands (not found, conflict, forbidden, invalid, a coded
    /// refusal), as opposed to a failure of the store itself.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::NotFound(_)
                | StoreError::Conflict(_)
                | StoreError::Forbidden(_)
                | StoreError::Invalid(_)
                | StoreError::Refused { .. }
        )
    }

    /// A refusal with its status and code.
    pub fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        StoreError::Refused {
            status,
            code,
            message: message.into(),
        }
    }
}

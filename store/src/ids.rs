//! Newtype identifiers. A function taking `(OrgId, AgentId)` cannot be called with them swapped.

use serde::{Deserialize, Serialize};

/// Random hex of `n` bytes from the OS generator.
/// Lower-case hex SHA-256 of a text: how token ids, session ids and recovery codes are stored.
pub(crate) fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(s.as_bytes()))
}

pub(crate) fn random_hex(n: usize) -> String {
    hex::encode(random_bytes(n))
}

/// `n` random bytes from the OS generator. The OS generator failing is not recoverable.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the operating system's random generator failed");
    buf
}

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        #[doc = concat!("Identifier with the `", $prefix, "` prefix.")]
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The prefix every id of this kind starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A new random id.
            pub fn generate() -> Self {
                Self(format!("{}{}", $prefix, random_hex(12)))
            }

            /// Parse an id from untrusted text: the prefix and 1..=64 `[a-z0-9]` characters.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = !rest.is_empty()
                    && rest.len() <= 64
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
                ok.then(|| Self(s.to_string()))
            }

            /// An id read back from the store's own records (not checked again: the store
            /// only ever wrote ids it generated or parsed).
            #[allow(dead_code)] // not every kind of id is in a binary record
            pub(crate) fn from_stored(s: String) -> Self {
                Self(s)
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(OrgId, "org_");
id_type!(UserId, "usr_");
id_type!(AgentId, "agt_");
id_type!(IntentId, "int_");
id_type!(CapId, "cap_");

impl IntentId {
    /// A new id that sorts by creation time: 12 hex digits of Unix milliseconds, then 16 random
    /// hex digits. Intents are keyed `{org}|{id}`, so new intents (and their `in_flight` index
    /// entries) go to the right edge of their B-trees instead of a random leaf each: a group
    /// commit dirties a few pages rather than one per intent. The random part keeps ids
    /// unguessable; every read is checked against the caller's organization anyway.
    pub fn generate_time_ordered() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let ms = (ms as u64) & 0xffff_ffff_ffff; // 48 bits: until the year 10889
        Self(format!("{}{ms:012x}{}", Self::PREFIX, random_hex(8)))
    }
}

/// Who caused an audit event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Actor {
    /// An agent, by its id.
    Agent(AgentId),
    /// A human user, by id.
    User(UserId),
    /// The guard itself (recovery, expiry, CLI bootstrap).
    System(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_generated_and_refuses_junk() {
        let id = IntentId::generate();
        assert_eq!(IntentId::parse(id.as_str()), Some(id));
        for bad in ["", "int_", "org_abc", "int_ABC", "int_a|b", "int_../x"] {
            assert_eq!(IntentId::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn time_ordered_ids_parse_and_sort_by_creation() {
        let a = IntentId::generate_time_ordered();
        // Ids of a later millisecond sort after it (spin until the clock moves on).
        let b = loop {
            let b = IntentId::generate_time_ordered();
            if b.as_str()[..16] != a.as_str()[..16] {
                break b;
            }
        };
        assert_eq!(IntentId::parse(a.as_str()), Some(a.clone()));
        assert_eq!(a.as_str().len(), "int_".len() + 12 + 16);
        assert!(a < b, "{a} !< {b}");
        assert_ne!(a.as_str()[16..], b.as_str()[16..]);
    }

    #[test]
    fn actor_serializes_as_audit_md_says() {
        let a = Actor::Agent(AgentId("agt_1".into()));
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"type":"agent","id":"agt_1"}"#
        );
    }
}

//! The three Standard Webhooks headers of a delivery.

use crate::Error;

/// Name of the header carrying the message id (the event id, stable across retries).
pub const ID_HEADER: &str = "webhook-id";
/// Name of the header carrying the send time in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// Name of the header carrying the space-separated `v1,<base64>` signatures.
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// The signed headers of one delivery, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    /// `webhook-id`.
    pub id: &'a str,
    /// `webhook-timestamp`, as received (verification parses it).
    pub timestamp: &'a str,
    /// `webhook-signature`, as received (verification parses it).
    pub signature: &'a str,
}

impl<'a> Headers<'a> {
    /// Picks `webhook-id`, `webhook-timestamp` and `webhook-signature` out of `(name, value)`
    /// pairs, comparing names case-insensitively, as HTTP does.
    ///
    /// If a name occurs more than once the first occurrence is used; this cannot weaken
    /// verification, which recomputes the HMAC over whichever values were picked.
    ///
    /// # Errors
    ///
    /// [`Error::MissingHeader`] if any of the three is absent or empty.
    pub fn from_pairs<I, K>(pairs: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, &'a str)>,
        K: AsRef<str>,
    {
        let (mut id, mut timestamp, mut signature) = (None, None, None);
        for (name, value) in pairs {
            let name = name.as_ref();
            let slot = if name.eq_ignore_ascii_case(ID_HEADER) {
                &mut id
            } else if name.eq_ignore_ascii_case(TIMESTAMP_HEADER) {
                &mut timestamp
            } else if name.eq_ignore_ascii_case(SIGNATURE_HEADER) {
                &mut signature
            } else {
                continue;
            };
            slot.get_or_insert(value);
        }
        let headers = Headers {
            id: id.ok_or(Error::MissingHeader)?,
            timestamp: timestamp.ok_or(Error::MissingHeader)?,
            signature: signature.ok_or(Error::MissingHeader)?,
        };
        headers.check_present()?;
        Ok(headers)
    }

    /// An empty value counts as missing, as in the reference implementation.
    pub(crate) fn check_present(&self) -> Result<(), Error> {
        if self.id.is_empty() || self.timestamp.is_empty() || self.signature.is_empty() {
            return Err(Error::MissingHeader);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_case_insensitive_and_first_wins() {
        let pairs = [
            ("content-type", "application/json"),
            ("WEBHOOK-ID", "evt_1"),
            ("Webhook-Timestamp", "1764000000"),
            ("webhook-signature", "v1,first"),
            ("webhook-signature", "v1,second"),
        ];
        let headers = Headers::from_pairs(pairs).expect("all three present");
        assert_eq!(
            headers,
            Headers {
                id: "evt_1",
                timestamp: "1764000000",
                signature: "v1,first"
            }
        );
    }

    #[test]
    fn absent_or_empty_header_is_missing() {
        let absent = [("webhook-id", "evt_1"), ("webhook-timestamp", "1")];
        assert_eq!(Headers::from_pairs(absent), Err(Error::MissingHeader));
        let empty = [
            ("webhook-id", ""),
            ("webhook-timestamp", "1"),
            ("webhook-signature", "v1,x"),
        ];
        assert_eq!(Headers::from_pairs(empty), Err(Error::MissingHeader));
    }

    #[test]
    fn accepts_owned_names() {
        let pairs = vec![
            (String::from("webhook-id"), "evt_1"),
            (String::from("webhook-timestamp"), "1"),
            (String::from("webhook-signature"), "v1,x"),
        ];
        assert!(Headers::from_pairs(pairs).is_ok());
    }
}

//! Wall-clock time, read in one place so tests can pin it.

use time::OffsetDateTime;
use time::format_description::FormatItem;
use time::macros::format_description;

pub(crate) const RFC3339_MICROS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// A point in time: unix seconds and its RFC 3339 text with microseconds (UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Unix seconds.
    pub unix: i64,
    /// RFC 3339, e.g. `2026-11-24T09:15:02.123456Z`.
    pub text: String,
}

impl Clock {
    /// The clock at a given moment.
    pub fn at(t: OffsetDateTime) -> Clock {
        let t = t.to_offset(time::UtcOffset::UTC);
        let text = t
            .format(RFC3339_MICROS)
            .unwrap_or_else(|_| t.unix_timestamp().to_string());
        Clock {
            unix: t.unix_timestamp(),
            text,
        }
    }
}

/// Now, UTC.
pub fn now() -> Clock {
    Clock::at(OffsetDateTime::now_utc())
}

/// The unix second of an RFC 3339 text the store wrote; `None` when it is not one.
pub(crate) fn unix_of(text: &str) -> Option<i64> {
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

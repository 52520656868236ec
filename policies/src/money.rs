//! Money as Stripe counts it: integer minor units of a lower-case ISO 4217 currency.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::classify::FactsError;

/// Stripe's zero-decimal currencies: the amount *is* the number of units (JPY 100 = ¥100).
/// <https://docs.stripe.com/currencies#zero-decimal>
const ZERO_DECIMAL: [&str; 16] = [
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv",
    "xaf", "xof", "xpf",
];

/// Stripe's three-decimal currencies (minor unit = 1/1000).
/// <https://docs.stripe.com/currencies#three-decimal>
const THREE_DECIMAL: [&str; 5] = ["bhd", "jod", "kwd", "omr", "tnd"];

/// A currency code: exactly three lower-case ASCII letters, as Stripe writes them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency(String);

impl Currency {
    /// Parses a currency code given in upper or lower case (`"USD"`, `"usd"`).
    pub fn parse(code: &str) -> Result<Currency, FactsError> {
        if code.len() == 3 && code.bytes().all(|b| b.is_ascii_alphabetic()) {
            Ok(Currency(code.to_ascii_lowercase()))
        } else {
            Err(FactsError::BadCurrency(crate::classify::truncate(code)))
        }
    }

    /// The lower-case code, e.g. `"usd"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether Stripe counts this currency without a fractional minor unit.
    pub fn is_zero_decimal(&self) -> bool {
        ZERO_DECIMAL.contains(&self.0.as_str())
    }

    /// Number of decimal places one major unit has in Stripe minor units (0, 2 or 3).
    pub fn decimals(&self) -> u32 {
        if self.is_zero_decimal() {
            0
        } else if THREE_DECIMAL.contains(&self.0.as_str()) {
            3
        } else {
            2
        }
    }

    /// Formats an amount of minor units for people: `"500.00 usd"`, `"500 jpy"`.
    pub fn format_minor(&self, minor: i64) -> String {
        let sign = if minor < 0 { "-" } else { "" };
        let units = minor.unsigned_abs();
        let decimals = self.decimals();
        let scale = 10u64.pow(decimals);
        let (major, fraction) = (units / scale, units % scale);
        if decimals == 0 {
            format!("{sign}{major} {}", self.0)
        } else {
            let width = decimals as usize;
            format!("{sign}{major}.{fraction:0width$} {}", self.0)
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = FactsError;

    fn try_from(code: String) -> Result<Self, Self::Error> {
        Currency::parse(&code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An amount of money in Stripe minor units (cents for USD; units for zero-decimal currencies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Amount {
    /// Minor units, never rescaled: JPY 100 is ¥100, USD 100 is $1.00.
    pub minor: i64,
    /// The currency the amount is counted in.
    pub currency: Currency,
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.currency.format_minor(self.minor))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_either_case_and_stores_lower() {
        for (input, want) in [("usd", "usd"), ("USD", "usd"), ("JpY", "jpy")] {
            assert_eq!(Currency::parse(input).unwrap().as_str(), want);
        }
    }

    #[test]
    fn parse_rejects_non_codes() {
        for input in ["", "us", "usdd", "us1", "u$d", "ü12", "   "] {
            assert!(
                matches!(Currency::parse(input), Err(FactsError::BadCurrency(_))),
                "{input:?}"
            );
        }
    }

    #[test]
    fn formats_minor_units() {
        let cases = [
            ("usd", 50000, "500.00 usd"),
            ("usd", 5, "0.05 usd"),
            ("usd", -1234, "-12.34 usd"),
            ("jpy", 500, "500 jpy"),
            ("kwd", 1500, "1.500 kwd"),
            ("eur", i64::MIN, "-92233720368547758.08 eur"),
        ];
        for (code, minor, want) in cases {
            assert_eq!(Currency::parse(code).unwrap().format_minor(minor), want);
        }
    }

    #[test]
    fn zero_decimal_list() {
        assert!(Currency::parse("JPY").unwrap().is_zero_decimal());
        assert!(Currency::parse("krw").unwrap().is_zero_decimal());
        assert!(!Currency::parse("usd").unwrap().is_zero_decimal());
    }

    #[test]
    fn serde_validates_currency() {
        let amount: Amount = serde_json::from_str(r#"{"minor":100,"currency":"USD"}"#).unwrap();
        assert_eq!(amount.currency.as_str(), "usd");
        assert_eq!(amount.to_string(), "1.00 usd");
        assert!(serde_json::from_str::<Currency>(r#""dollars""#).is_err());
        assert_eq!(serde_json::to_string(&amount.currency).unwrap(), r#""usd""#);
    }
}

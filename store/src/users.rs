//! Human accounts shared by every organization: password rules and account creation (the
//! rest of a human's credentials is in humans.rs).

use redb::ReadableTable;

use crate::error::{Result, StoreError};
use crate::ids::UserId;
use crate::model::User;
use crate::tables::*;
use crate::time_util::now;

/// bcrypt cost for human passwords (ADMIN_API.md).
pub const BCRYPT_COST: u32 = 10;

/// ADMIN_API.md password rules: ≥ 10 characters, a letter and a digit, ≤ 72 bytes (bcrypt's limit).
pub fn validate_password(password: &str) -> Result<()> {
    if password.chars().count() < 10 {
        return Err(StoreError::Invalid(
            "password must have at least 10 characters".into(),
        ));
    }
    if password.len() > 72 {
        return Err(StoreError::Invalid(
            "password must be at most 72 bytes".into(),
        ));
    }
    if !password.chars().any(char::is_alphabetic) || !password.chars().any(|c| c.is_ascii_digit()) {
        return Err(StoreError::Invalid(
            "password needs at least one letter and one digit".into(),
        ));
    }
    Ok(())
}

pub(crate) fn create_user_in(
    txn: &crate::ledger::Tx<'_>,
    email: &str,
    hash: String,
) -> Result<User> {
    let email = email.trim().to_ascii_lowercase();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(StoreError::Invalid("not an email address".into()));
    }
    let mut by_email = txn.open_table(USERS_BY_EMAIL)?;
    if by_email.get(email.as_str())?.is_some() {
        return Err(StoreError::Conflict("a user with this email exists".into()));
    }
    let user = User {
        id: UserId::generate(),
        email: email.clone(),
        password_hash: hash,
        created_at: now().text,
    };
    by_email.insert(email.as_str(), user.id.as_str().as_bytes())?;
    put_json(&mut txn.open_table(USERS)?, user.id.as_str(), &user)?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_rules_match_admin_api_md() {
        assert!(validate_password("abcdefgh1").is_err(), "9 chars");
        assert!(validate_password("abcdefghij").is_err(), "no digit");
        assert!(validate_password("1234567890").is_err(), "no letter");
        assert!(validate_password("abcdefghi1").is_ok());
        let long = format!("a1{}", "x".repeat(71));
        assert_eq!(long.len(), 73);
        assert!(validate_password(&long).is_err(), "73 bytes");
    }
}

//! Google test accounts: the people on the sign-in page. Each has a stable numeric `sub`
//! derived from its email, so replicas and restarts agree without coordination.

use crate::error::IdpError;
use crate::util::{numeric_id, valid_email};
use gatehouse_store::{Row, Store};
use serde_json::{Map, Value, json};

/// Bounds on what a test account may carry.
const MAX_NAME: usize = 200;
const MAX_URL: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub picture: Option<String>,
    pub hd: Option<String>,
}

/// What someone typed in "use another account" (or an API call).
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub email: String,
    pub name: Option<String>,
    pub hd: Option<String>,
    pub email_verified: Option<bool>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AccountError {
    #[error("that is not a valid email address")]
    BadEmail,
    #[error("name is too long")]
    BadName,
    #[error("hosted domain must be the email's domain")]
    BadHostedDomain,
}

/// `sub` for an email: 21 digits, like Google's account ids.
pub fn sub_for(email: &str) -> String {
    numeric_id(&format!("account:{}", email.to_ascii_lowercase()), 21)
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(first) => first.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

impl NewAccount {
    /// Checks and completes the input: lowercased email, a name from the local part when
    /// none was given ("alice.smith" -> "Alice Smith").
    pub fn build(&self, base_url: &str) -> Result<Account, AccountError> {
        let email = self.email.trim().to_ascii_lowercase();
        if !valid_email(&email) {
            return Err(AccountError::BadEmail);
        }
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty());
        if name.is_some_and(|n| n.len() > MAX_NAME || n.chars().any(char::is_control)) {
            return Err(AccountError::BadName);
        }
        let local = email.split('@').next().unwrap_or_default();
        let name = name.map_or_else(
            || {
                local
                    .split(['.', '_', '-', '+'])
                    .filter(|p| !p.is_empty())
                    .map(capitalize)
                    .collect::<Vec<_>>()
                    .join(" ")
            },
            str::to_owned,
        );
        let mut parts = name.split_whitespace();
        let given_name = parts.next().map(str::to_owned);
        let rest: Vec<&str> = parts.collect();
        let family_name = (!rest.is_empty()).then(|| rest.join(" "));
        let domain = email.rsplit('@').next().unwrap_or_default();
        let hd = match self.hd.as_deref().map(str::trim).filter(|h| !h.is_empty()) {
            Some(hd) if hd.eq_ignore_ascii_case(domain) => Some(domain.to_owned()),
            Some(_) => return Err(AccountError::BadHostedDomain),
            None => None,
        };
        let sub = sub_for(&email);
        let picture = format!("{base_url}/avatar/{sub}.svg");
        debug_assert!(picture.len() <= MAX_URL);
        Ok(Account {
            sub,
            email,
            email_verified: self.email_verified.unwrap_or(true),
            name,
            given_name,
            family_name,
            picture: Some(picture),
            hd,
        })
    }
}

impl Account {
    fn from_row(row: &Row) -> Result<Account, IdpError> {
        Ok(Account {
            sub: row.text(0)?,
            email: row.text(1)?,
            email_verified: row.bool(2)?,
            name: row.text(3)?,
            given_name: row.opt_text(4)?,
            family_name: row.opt_text(5)?,
            picture: row.opt_text(6)?,
            hd: row.opt_text(7)?,
        })
    }

    /// The profile claims an ID token or userinfo carries for this account.
    pub fn profile_claims(&self, scope_profile: bool, scope_email: bool) -> Map<String, Value> {
        let mut m = Map::new();
        if scope_email {
            m.insert("email".into(), json!(self.email));
            m.insert("email_verified".into(), json!(self.email_verified));
        }
        if let Some(hd) = &self.hd {
            m.insert("hd".into(), json!(hd));
        }
        if scope_profile {
            m.insert("name".into(), json!(self.name));
            if let Some(p) = &self.picture {
                m.insert("picture".into(), json!(p));
            }
            if let Some(g) = &self.given_name {
                m.insert("given_name".into(), json!(g));
            }
            if let Some(f) = &self.family_name {
                m.insert("family_name".into(), json!(f));
            }
        }
        m
    }
}

const COLUMNS: &str = "sub, email, email_verified, name, given_name, family_name, picture, hd";

pub async fn list(store: &Store) -> Result<Vec<Account>, IdpError> {
    let rows = store
        .fetch_all(
            &format!("SELECT {COLUMNS} FROM idp_accounts ORDER BY created_at, email LIMIT 1000"),
            &[],
        )
        .await?;
    rows.iter().map(Account::from_row).collect()
}

pub async fn by_email(store: &Store, email: &str) -> Result<Option<Account>, IdpError> {
    let row = store
        .fetch_optional(
            &format!("SELECT {COLUMNS} FROM idp_accounts WHERE email = $1"),
            &[email.trim().to_ascii_lowercase().into()],
        )
        .await?;
    row.as_ref().map(Account::from_row).transpose()
}

pub async fn by_sub(store: &Store, sub: &str) -> Result<Option<Account>, IdpError> {
    let row = store
        .fetch_optional(
            &format!("SELECT {COLUMNS} FROM idp_accounts WHERE sub = $1"),
            &[sub.into()],
        )
        .await?;
    row.as_ref().map(Account::from_row).transpose()
}

/// Adds the account unless its email exists; returns the stored one either way.
pub async fn upsert(store: &Store, account: &Account, now: i64) -> Result<Account, IdpError> {
    store
        .execute(
            "INSERT INTO idp_accounts (sub, email, email_verified, name, given_name, family_name, picture, hd, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            &[
                account.sub.clone().into(),
                account.email.clone().into(),
                account.email_verified.into(),
                account.name.clone().into(),
                account.given_name.clone().into(),
                account.family_name.clone().into(),
                account.picture.clone().into(),
                account.hd.clone().into(),
                now.into(),
            ],
        )
        .await?;
    by_email(store, &account.email)
        .await?
        .ok_or(IdpError::Corrupt("account vanished after insert"))
}

/// A small SVG avatar with the account's initial (what `picture` points at).
pub fn avatar_svg(account: &Account) -> String {
    let initial: String = account
        .name
        .chars()
        .find(|c| c.is_alphanumeric())
        .map(|c| c.to_uppercase().collect())
        .unwrap_or_else(|| "?".into());
    let hue = account
        .sub
        .bytes()
        .fold(0u32, |a, b| (a * 31 + u32::from(b)) % 360);
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="96" height="96" viewBox="0 0 96 96"><circle cx="48" cy="48" r="48" fill="hsl({hue},55%,45%)"/><text x="48" y="62" font-family="sans-serif" font-size="44" fill="#fff" text-anchor="middle">{}</text></svg>"##,
        crate::util::html_escape(&initial)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_names_and_checks_hd() {
        let a = NewAccount {
            email: " Alice.Smith@Example.com ".into(),
            ..Default::default()
        }
        .build("http://x")
        .unwrap();
        assert_eq!(a.email, "alice.smith@example.com");
        assert_eq!(a.name, "Alice Smith");
        assert_eq!(a.given_name.as_deref(), Some("Alice"));
        assert_eq!(a.family_name.as_deref(), Some("Smith"));
        assert_eq!(a.sub, sub_for("alice.smith@example.com"));
        assert!(a.hd.is_none());
        let b = NewAccount {
            email: "c@corp.example".into(),
            hd: Some("corp.example".into()),
            ..Default::default()
        }
        .build("http://x")
        .unwrap();
        assert_eq!(b.hd.as_deref(), Some("corp.example"));
        assert_eq!(
            NewAccount {
                email: "c@corp.example".into(),
                hd: Some("other.example".into()),
                ..Default::default()
            }
            .build("x"),
            Err(AccountError::BadHostedDomain)
        );
        assert_eq!(
            NewAccount {
                email: "nope".into(),
                ..Default::default()
            }
            .build("x"),
            Err(AccountError::BadEmail)
        );
    }
}

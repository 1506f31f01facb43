//! IAM principals and policies, as Cloud Run writes them: `user:`, `serviceAccount:`,
//! `group:`, `domain:`, `allAuthenticatedUsers`, `allUsers`, and the policy JSON that
//! `gcloud run services get-iam-policy --format=json` prints.

use crate::profile::ProfileKind;
use crate::verifier::Identity;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// The Cloud Run invoker role.
pub const RUN_INVOKER: &str = "roles/run.invoker";

/// One principal. Emails and domains are kept lowercase; comparison is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Member {
    User(String),
    ServiceAccount(String),
    Group(String),
    Domain(String),
    AllAuthenticatedUsers,
    AllUsers,
    /// A principal Gatehouse cannot hold a token for (`deleted:...`, workforce and workload
    /// identity `principal://` / `principalSet://`): kept so a real policy file loads and
    /// round-trips, and never matches anyone.
    Unmatchable(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid IAM member {0:?}: expected user:EMAIL, serviceAccount:EMAIL, group:NAME, domain:DOMAIN, allAuthenticatedUsers or allUsers"
)]
pub struct MemberParseError(pub String);

impl FromStr for Member {
    type Err = MemberParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MemberParseError(s.chars().take(128).collect());
        let email = |v: &str| -> Result<String, MemberParseError> {
            let (local, domain) = v.rsplit_once('@').ok_or_else(err)?;
            if local.is_empty() || domain.is_empty() || v.contains(char::is_whitespace) {
                return Err(err());
            }
            Ok(v.to_ascii_lowercase())
        };
        if s.starts_with("deleted:")
            || s.starts_with("principal://")
            || s.starts_with("principalSet://")
        {
            return Ok(Member::Unmatchable(s.to_owned()));
        }
        match s {
            "allUsers" => Ok(Member::AllUsers),
            "allAuthenticatedUsers" => Ok(Member::AllAuthenticatedUsers),
            _ => {
                let (kind, value) = s.split_once(':').ok_or_else(err)?;
                match kind {
                    "user" => Ok(Member::User(email(value)?)),
                    "serviceAccount" => Ok(Member::ServiceAccount(email(value)?)),
                    "group" if !value.is_empty() => Ok(Member::Group(value.to_ascii_lowercase())),
                    "domain"
                        if !value.is_empty()
                            && !value.contains(['@', ' '])
                            && !value.starts_with('.') =>
                    {
                        Ok(Member::Domain(value.to_ascii_lowercase()))
                    }
                    _ => Err(err()),
                }
            }
        }
    }
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Member::User(e) => write!(f, "user:{e}"),
            Member::ServiceAccount(e) => write!(f, "serviceAccount:{e}"),
            Member::Group(g) => write!(f, "group:{g}"),
            Member::Domain(d) => write!(f, "domain:{d}"),
            Member::AllAuthenticatedUsers => f.write_str("allAuthenticatedUsers"),
            Member::AllUsers => f.write_str("allUsers"),
            Member::Unmatchable(s) => f.write_str(s),
        }
    }
}

impl Serialize for Member {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Named groups (`group:NAME`) and their members, from configuration. Groups may not
/// contain groups (no cycles to guard against).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups(HashMap<String, Vec<Member>>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("group {0:?} may not contain group or all* members")]
pub struct GroupError(pub String);

impl Groups {
    pub fn new() -> Self {
        Groups::default()
    }
    pub fn insert(&mut self, name: &str, members: Vec<Member>) -> Result<(), GroupError> {
        if members.iter().any(|m| {
            matches!(
                m,
                Member::Group(_) | Member::AllUsers | Member::AllAuthenticatedUsers
            )
        }) {
            return Err(GroupError(name.to_owned()));
        }
        self.0.insert(name.to_ascii_lowercase(), members);
        Ok(())
    }
    fn get(&self, name: &str) -> Option<&[Member]> {
        self.0.get(name).map(Vec::as_slice)
    }
    /// Whether `name` (as in `group:NAME`, any case) is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(&name.to_ascii_lowercase())
    }
}

fn email_domain(email: &str) -> Option<&str> {
    email.rsplit_once('@').map(|(_, d)| d)
}

impl Member {
    /// Whether this member covers `who` (`None`: an unauthenticated caller).
    pub fn matches(&self, who: Option<&Identity>, groups: &Groups) -> bool {
        let Some(id) = who else {
            return matches!(self, Member::AllUsers);
        };
        let verified_email = id.email().filter(|_| id.email_verified());
        match self {
            Member::Unmatchable(_) => false,
            Member::AllUsers | Member::AllAuthenticatedUsers => true,
            Member::User(email) => {
                !id.is_service_account()
                    && verified_email.is_some_and(|e| e.eq_ignore_ascii_case(email))
            }
            Member::ServiceAccount(email) => {
                verified_email.is_some_and(|e| e.eq_ignore_ascii_case(email))
            }
            // The whole domain only: `example.com` does not cover `evil-example.com` or
            // `sub.example.com`.
            Member::Domain(domain) => {
                verified_email
                    .and_then(email_domain)
                    .is_some_and(|d| d.eq_ignore_ascii_case(domain))
                    // `hd` is Google's word for the Workspace domain; from another
                    // issuer it is only a claim of that name.
                    || (id.email_verified()
                        && matches!(id.profile_kind(), ProfileKind::Google | ProfileKind::Iap)
                        && id
                            .claims()
                            .hosted_domain()
                            .is_some_and(|hd| hd.eq_ignore_ascii_case(domain)))
            }
            Member::Group(name) => groups
                .get(name)
                .is_some_and(|members| members.iter().any(|m| m.matches(who, groups))),
        }
    }
}

/// One `{"role", "members"}` entry of a policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub role: String,
    #[serde(default)]
    pub members: Vec<Member>,
    /// IAM conditions are not evaluated: a conditional `roles/run.invoker` binding (the
    /// role Gatehouse decides on) is refused at parse time rather than granted
    /// unconditionally; conditions on other roles do not concern us.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    condition: Option<serde_json::Value>,
}

/// An IAM policy in the exact shape of `gcloud run services get-iam-policy --format=json`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default)]
    pub bindings: Vec<Binding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("policy is not valid JSON of the get-iam-policy shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error("binding for {0:?} has a condition; IAM conditions are not supported")]
    Condition(String),
    #[error("policy must be a JSON object with a \"bindings\" array")]
    NotAnObject,
}

impl Policy {
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        // serde would also read a struct from a JSON array; a policy is only ever an object.
        let value: serde_json::Value = serde_json::from_str(text)?;
        if !value.is_object() {
            return Err(PolicyError::NotAnObject);
        }
        let policy: Policy = serde_json::from_value(value)?;
        if let Some(b) = policy
            .bindings
            .iter()
            .find(|b| b.condition.is_some() && b.role == RUN_INVOKER)
        {
            return Err(PolicyError::Condition(b.role.clone()));
        }
        Ok(policy)
    }

    /// A policy granting `role` to `members`.
    pub fn granting(role: &str, members: impl IntoIterator<Item = Member>) -> Self {
        Policy {
            bindings: vec![Binding {
                role: role.to_owned(),
                members: members.into_iter().collect(),
                condition: None,
            }],
            etag: None,
            version: Some(1),
        }
    }

    pub fn members_of<'a>(&'a self, role: &'a str) -> impl Iterator<Item = &'a Member> + 'a {
        self.bindings
            .iter()
            .filter(move |b| b.role == role)
            .flat_map(|b| b.members.iter())
    }

    /// Whether `who` holds `role`.
    pub fn is_granted(&self, role: &str, who: Option<&Identity>, groups: &Groups) -> bool {
        self.members_of(role).any(|m| m.matches(who, groups))
    }

    /// Whether the role is granted to everyone (`allUsers`): a public route.
    pub fn is_public(&self, role: &str) -> bool {
        self.members_of(role).any(|m| *m == Member::AllUsers)
    }
}

//! The GCE/Cloud Run metadata server (`/computeMetadata/v1/...`), as the official clients
//! use it (PROTOCOLS.md "Metadata server"). [`route`] maps a path and query to what is
//! asked; the handler answers it for the service account its listener speaks for.

use crate::config::IdpConfig;
use crate::util::numeric_id;
use serde_json::{Value, json};

/// What a metadata request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRequest {
    /// A directory listing (text, one entry per line).
    Listing(&'static [&'static str]),
    ProjectId,
    NumericProjectId,
    InstanceId,
    InstanceName,
    Hostname,
    Zone,
    Region,
    /// The root tree, `?recursive=true`.
    RootRecursive,
    /// `instance/service-accounts/` listing.
    ServiceAccounts,
    /// `instance/service-accounts/ACCOUNT/` with `recursive=true`.
    AccountInfo {
        account: String,
    },
    AccountListing {
        account: String,
    },
    Email {
        account: String,
    },
    Aliases {
        account: String,
    },
    Scopes {
        account: String,
    },
    Token {
        account: String,
        /// Canonical: see [`token_scopes`].
        scopes: String,
    },
    Identity {
        account: String,
        audience: String,
        full: bool,
    },
}

/// Why a metadata request has no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataError {
    NotFound,
    /// 400 with this text (e.g. identity without audience).
    BadRequest(&'static str),
}

pub const DEFAULT_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
];

/// Most scopes one token request may name, and the longest `scopes` value.
pub const MAX_SCOPES: usize = 50;
pub const MAX_SCOPES_LEN: usize = 4096;

/// The scopes of a `.../token?scopes=` request (comma-separated, as google-auth,
/// gcp-metadata and Go's client send them; the default scopes without one) as the token
/// records them: each an RFC 6749 scope-token, sorted and without repeats so that one set
/// is one cache entry, joined by spaces as Google reports scopes.
pub fn token_scopes(value: Option<&str>) -> Result<String, MetadataError> {
    let Some(value) = value else {
        let mut scopes = DEFAULT_SCOPES.to_vec();
        scopes.sort_unstable();
        return Ok(scopes.join(" "));
    };
    if value.len() > MAX_SCOPES_LEN {
        return Err(MetadataError::BadRequest("scopes parameter is too long"));
    }
    let mut scopes: Vec<&str> = value.split(',').collect();
    if scopes.len() > MAX_SCOPES {
        return Err(MetadataError::BadRequest("too many scopes"));
    }
    // RFC 6749 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
    let scope_token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E))
    };
    if !scopes.iter().all(|s| scope_token(s)) {
        return Err(MetadataError::BadRequest("invalid scopes parameter"));
    }
    scopes.sort_unstable();
    scopes.dedup();
    Ok(scopes.join(" "))
}

/// A stable numeric instance id for this emulator's project.
pub fn instance_id(config: &IdpConfig) -> String {
    numeric_id(&format!("instance:{}", config.project_id), 19)
}

fn query_get<'a>(query: &'a [(String, String)], key: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Maps `path` (after `/computeMetadata/v1/`, trailing slash significant as listings) and
/// the query pairs to a request.
pub fn route(path: &str, query: &[(String, String)]) -> Result<MetadataRequest, MetadataError> {
    use MetadataRequest as R;
    let recursive = is_true(query_get(query, "recursive"));
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(if recursive {
            R::RootRecursive
        } else {
            R::Listing(&["instance/", "project/"])
        });
    }
    let parts: Vec<&str> = trimmed.split('/').collect();
    match parts.as_slice() {
        ["project"] => Ok(R::Listing(&["numeric-project-id", "project-id"])),
        ["project", "project-id"] => Ok(R::ProjectId),
        ["project", "numeric-project-id"] => Ok(R::NumericProjectId),
        ["instance"] => Ok(R::Listing(&[
            "hostname",
            "id",
            "name",
            "region",
            "service-accounts/",
            "zone",
        ])),
        ["instance", "id"] => Ok(R::InstanceId),
        ["instance", "name"] => Ok(R::InstanceName),
        ["instance", "hostname"] => Ok(R::Hostname),
        ["instance", "zone"] => Ok(R::Zone),
        ["instance", "region"] => Ok(R::Region),
        ["instance", "service-accounts"] => Ok(R::ServiceAccounts),
        ["instance", "service-accounts", account] => {
            let account = (*account).to_owned();
            Ok(if recursive {
                R::AccountInfo { account }
            } else {
                R::AccountListing { account }
            })
        }
        ["instance", "service-accounts", account, leaf] => {
            let account = (*account).to_owned();
            match *leaf {
                "email" => Ok(R::Email { account }),
                "aliases" => Ok(R::Aliases { account }),
                "scopes" => Ok(R::Scopes { account }),
                "token" => Ok(R::Token {
                    account,
                    scopes: token_scopes(query_get(query, "scopes"))?,
                }),
                "identity" => {
                    let audience = query_get(query, "audience").unwrap_or("");
                    if audience.is_empty() {
                        return Err(MetadataError::BadRequest(
                            "non-empty audience parameter required",
                        ));
                    }
                    if !crate::service_accounts::valid_audience(audience) {
                        return Err(MetadataError::BadRequest("invalid audience"));
                    }
                    Ok(R::Identity {
                        account,
                        audience: audience.to_owned(),
                        full: query_get(query, "format") == Some("full"),
                    })
                }
                _ => Err(MetadataError::NotFound),
            }
        }
        _ => Err(MetadataError::NotFound),
    }
}

/// Whether `account` (as written in a path) names the listener's account `email`.
pub fn names_account(account: &str, email: &str) -> bool {
    account == "default" || account.eq_ignore_ascii_case(email)
}

/// `{"aliases":["default"],"email":...,"scopes":[...]}`.
pub fn account_info(email: &str) -> Value {
    json!({"aliases": ["default"], "email": email, "scopes": DEFAULT_SCOPES})
}

/// The `?recursive=true` root tree, camelCase as the real server answers.
pub fn root_tree(config: &IdpConfig, email: &str) -> Value {
    let info = account_info(email);
    json!({
        "instance": {
            "hostname": "gatehouse.internal",
            "id": instance_id(config).parse::<u64>().unwrap_or(0),
            "name": "gatehouse",
            "region": format!("projects/{}/regions/{}", config.project_number, config.region),
            "zone": format!("projects/{}/zones/{}", config.project_number, config.zone),
            "serviceAccounts": {"default": info, email: info},
        },
        "project": {
            "numericProjectId": config.project_number.parse::<u64>().unwrap_or(0),
            "projectId": config.project_id,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_scopes_are_scope_tokens_sorted_and_space_separated() {
        assert_eq!(
            token_scopes(None).unwrap(),
            "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"
        );
        assert_eq!(token_scopes(Some("b,a,b")).unwrap(), "a b");
        let fifty = (0..MAX_SCOPES).map(|i| format!("s{i}")).collect::<Vec<_>>();
        assert!(token_scopes(Some(&fifty.join(","))).is_ok());
        let too_many = (0..=MAX_SCOPES)
            .map(|i| format!("s{i}"))
            .collect::<Vec<_>>();
        assert!(token_scopes(Some(&too_many.join(","))).is_err());
        assert!(token_scopes(Some(&"a".repeat(MAX_SCOPES_LEN))).is_ok());
        assert!(token_scopes(Some(&"a".repeat(MAX_SCOPES_LEN + 1))).is_err());
        for bad in ["", ",", "a,", "a,,b", "a b", "a\nb", "a\"b", "a\\b", "é"] {
            assert!(token_scopes(Some(bad)).is_err(), "{bad:?}");
        }
    }

    fn q(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn routes() {
        assert_eq!(
            route("project/project-id", &[]),
            Ok(MetadataRequest::ProjectId)
        );
        assert_eq!(
            route("", &q(&[("recursive", "true")])),
            Ok(MetadataRequest::RootRecursive)
        );
        assert_eq!(
            route(
                "instance/service-accounts/default/",
                &q(&[("recursive", "true")])
            ),
            Ok(MetadataRequest::AccountInfo {
                account: "default".into()
            })
        );
        assert_eq!(
            route(
                "instance/service-accounts/default/identity",
                &q(&[("audience", "https://a"), ("format", "full")])
            ),
            Ok(MetadataRequest::Identity {
                account: "default".into(),
                audience: "https://a".into(),
                full: true
            })
        );
        assert!(matches!(
            route("instance/service-accounts/default/identity", &[]),
            Err(MetadataError::BadRequest(_))
        ));
        assert_eq!(
            route(
                "instance/service-accounts/default/token",
                &q(&[("scopes", "b,a,b")])
            ),
            Ok(MetadataRequest::Token {
                account: "default".into(),
                scopes: "a b".into()
            })
        );
        assert_eq!(route("nope", &[]), Err(MetadataError::NotFound));
        assert_eq!(
            route("universe/universe-domain", &[]),
            Err(MetadataError::NotFound)
        );
    }
}

//! IAM members and the policy JSON of `gcloud run services get-iam-policy --format=json`.

use crate::support::*;
use gatehouse_verify::members::PolicyError;
use gatehouse_verify::{Groups, Identity, Member, Policy, RUN_INVOKER};
use serde_json::{Value, json};

async fn identity(edit: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Identity {
    google_verifier()
        .verify(&sign(&RSA, &claims_with(edit)), NOW)
        .await
        .unwrap()
}

async fn person(email: &str, verified: bool) -> Identity {
    identity(|c| {
        c.insert("email".into(), json!(email));
        c.insert("email_verified".into(), json!(verified));
    })
    .await
}

fn member(s: &str) -> Member {
    s.parse().unwrap()
}

const GCLOUD_PUBLIC: &str = r#"{
  "bindings": [
    {
      "members": [
        "allUsers"
      ],
      "role": "roles/run.invoker"
    }
  ],
  "etag": "BwYU3cs3rzM=",
  "version": 1
}
"#;

const GCLOUD_MIXED: &str = r#"{"bindings":[{"members":["user:Alice@Example.com","serviceAccount:ci@proj.iam.gserviceaccount.com","group:admins@example.com","domain:example.org"],"role":"roles/run.invoker"},{"members":["allAuthenticatedUsers"],"role":"roles/run.viewer"}],"etag":"BwX1a2b3c4d=","version":1}"#;

#[tokio::test]
async fn parses_the_exact_gcloud_output() {
    let policy = Policy::from_json(GCLOUD_PUBLIC).unwrap();
    assert_eq!(policy.etag.as_deref(), Some("BwYU3cs3rzM="));
    assert_eq!(policy.version, Some(1));
    assert!(policy.is_public(RUN_INVOKER));
    assert!(policy.is_granted(RUN_INVOKER, None, &Groups::new()));
    assert!(!policy.is_granted("roles/run.admin", None, &Groups::new()));

    let policy = Policy::from_json(GCLOUD_MIXED).unwrap();
    assert!(!policy.is_public(RUN_INVOKER));
    let members: Vec<String> = policy
        .members_of(RUN_INVOKER)
        .map(|m| m.to_string())
        .collect();
    assert_eq!(
        members,
        [
            "user:alice@example.com",
            "serviceAccount:ci@proj.iam.gserviceaccount.com",
            "group:admins@example.com",
            "domain:example.org"
        ]
    );
    // It round-trips in the same shape.
    let again: Value = serde_json::to_value(&policy).unwrap();
    assert_eq!(again["etag"], "BwX1a2b3c4d=");
    assert_eq!(
        again["bindings"][1]["members"],
        json!(["allAuthenticatedUsers"])
    );
    assert_eq!(Policy::from_json(&again.to_string()).unwrap(), policy);
    // An empty policy (a fresh service) grants nothing.
    let empty = Policy::from_json(r#"{"etag":"ACAB"}"#).unwrap();
    assert!(!empty.is_granted(RUN_INVOKER, None, &Groups::new()));
    assert!(!empty.is_granted(
        RUN_INVOKER,
        Some(&person("a@example.com", true).await),
        &Groups::new()
    ));
}

#[test]
fn conditions_are_refused() {
    let text = r#"{"bindings":[{"condition":{"expression":"request.time < timestamp(\"2020-10-01T00:00:00.000Z\")","title":"expires"},"members":["user:a@example.com"],"role":"roles/run.invoker"}],"etag":"BwX=","version":3}"#;
    assert!(matches!(
        Policy::from_json(text),
        Err(PolicyError::Condition(role)) if role == RUN_INVOKER
    ));
    for bad in [
        r#"{"bindings":[{"members":["user:"],"role":"r"}]}"#,
        r#"{"bindings":[{"members":["someone"],"role":"r"}]}"#,
        r#"{"bindings":[{"members":[1],"role":"r"}]}"#,
        r#"{"bindings":"x"}"#,
        "null",
    ] {
        assert!(Policy::from_json(bad).is_err(), "{bad}");
    }
}

#[test]
fn member_syntax() {
    for (text, shown) in [
        ("allUsers", "allUsers"),
        ("allAuthenticatedUsers", "allAuthenticatedUsers"),
        ("user:Alice@Example.COM", "user:alice@example.com"),
        (
            "serviceAccount:SA@p.iam.gserviceaccount.com",
            "serviceAccount:sa@p.iam.gserviceaccount.com",
        ),
        ("group:Admins", "group:admins"),
        ("domain:Example.com", "domain:example.com"),
    ] {
        assert_eq!(member(text).to_string(), shown);
    }
    for bad in [
        "",
        "allusers",
        "AllUsers",
        "user:",
        "user:alice",
        "user:@example.com",
        "user:alice@",
        "user:a b@example.com",
        "serviceAccount:nobody",
        "group:",
        "domain:",
        "domain:@example.com",
        "domain:.example.com",
        "domain:a b.com",
        "owner:alice@example.com",
        "alice@example.com",
    ] {
        assert!(bad.parse::<Member>().is_err(), "{bad:?}");
    }
}

#[tokio::test]
async fn user_needs_a_verified_email_compared_case_insensitively() {
    let groups = Groups::new();
    let m = member("user:alice@example.com");
    assert!(m.matches(Some(&person("alice@example.com", true).await), &groups));
    assert!(m.matches(Some(&person("ALICE@Example.Com", true).await), &groups));
    assert!(!m.matches(Some(&person("alice@example.com", false).await), &groups));
    assert!(!m.matches(Some(&person("alice@example.co", true).await), &groups));
    assert!(!m.matches(Some(&person("xalice@example.com", true).await), &groups));
    assert!(!m.matches(None, &groups));
    let no_email = identity(|c| {
        c.remove("email");
    })
    .await;
    assert!(!m.matches(Some(&no_email), &groups));
    // A service account is not a user, even with the same address.
    let sa = member("user:ci@proj.iam.gserviceaccount.com");
    assert!(!sa.matches(
        Some(&person("ci@proj.iam.gserviceaccount.com", true).await),
        &groups
    ));
}

#[tokio::test]
async fn service_account_members() {
    let groups = Groups::new();
    let m = member("serviceAccount:ci@proj.iam.gserviceaccount.com");
    let sa = person("CI@proj.iam.gserviceaccount.com", true).await;
    assert!(sa.is_service_account());
    assert!(m.matches(Some(&sa), &groups));
    assert!(!m.matches(
        Some(&person("ci@proj.iam.gserviceaccount.com", false).await),
        &groups
    ));
    assert!(!m.matches(
        Some(&person("other@proj.iam.gserviceaccount.com", true).await),
        &groups
    ));
}

#[tokio::test]
async fn domain_matches_the_whole_verified_domain_only() {
    let groups = Groups::new();
    let m = member("domain:example.com");
    assert!(m.matches(Some(&person("bob@example.com", true).await), &groups));
    assert!(m.matches(Some(&person("Bob@EXAMPLE.COM", true).await), &groups));
    for (email, verified) in [
        ("bob@example.com", false),
        ("bob@evil-example.com", true),
        ("bob@sub.example.com", true),
        ("bob@example.com.evil.org", true),
        ("bob@notexample.com", true),
        ("example.com@evil.org", true),
    ] {
        assert!(
            !m.matches(Some(&person(email, verified).await), &groups),
            "{email} verified={verified}"
        );
    }
    // `hd` (Workspace hosted domain) counts when the email is verified.
    let hd = |hd: &'static str, verified: bool| {
        identity(move |c| {
            c.insert("email".into(), json!("carol@gmail.com"));
            c.insert("email_verified".into(), json!(verified));
            c.insert("hd".into(), json!(hd));
        })
    };
    assert!(m.matches(Some(&hd("example.com", true).await), &groups));
    assert!(m.matches(Some(&hd("EXAMPLE.com", true).await), &groups));
    assert!(!m.matches(Some(&hd("example.com", false).await), &groups));
    assert!(!m.matches(Some(&hd("sub.example.com", true).await), &groups));
    assert!(!m.matches(None, &groups));
}

#[tokio::test]
async fn groups_are_defined_in_configuration() {
    let mut groups = Groups::new();
    groups
        .insert(
            "Admins@Example.com",
            vec![
                member("user:alice@example.com"),
                member("domain:example.org"),
            ],
        )
        .unwrap();
    let m = member("group:admins@example.com");
    assert!(m.matches(Some(&person("alice@example.com", true).await), &groups));
    assert!(m.matches(Some(&person("dave@example.org", true).await), &groups));
    assert!(!m.matches(Some(&person("alice@example.com", false).await), &groups));
    assert!(!m.matches(Some(&person("eve@example.com", true).await), &groups));
    assert!(!m.matches(None, &groups));
    assert!(
        !member("group:unknown").matches(Some(&person("alice@example.com", true).await), &groups)
    );
    // No nesting, no everyone-groups.
    for inner in [
        "group:admins@example.com",
        "allUsers",
        "allAuthenticatedUsers",
    ] {
        assert!(groups.insert("g", vec![member(inner)]).is_err(), "{inner}");
    }
    let policy = Policy::from_json(GCLOUD_MIXED).unwrap();
    let mut groups = Groups::new();
    groups
        .insert("admins@example.com", vec![member("user:frank@example.net")])
        .unwrap();
    let frank = person("frank@example.net", true).await;
    assert!(policy.is_granted(RUN_INVOKER, Some(&frank), &groups));
    assert!(!policy.is_granted(RUN_INVOKER, Some(&frank), &Groups::new()));
}

#[tokio::test]
async fn all_users_and_all_authenticated_users() {
    let groups = Groups::new();
    let anyone = person("x@y.z", false).await;
    assert!(Member::AllUsers.matches(None, &groups));
    assert!(Member::AllUsers.matches(Some(&anyone), &groups));
    assert!(!Member::AllAuthenticatedUsers.matches(None, &groups));
    assert!(Member::AllAuthenticatedUsers.matches(Some(&anyone), &groups));

    let policy = Policy::from_json(GCLOUD_MIXED).unwrap();
    assert!(policy.is_granted("roles/run.viewer", Some(&anyone), &groups));
    assert!(!policy.is_granted("roles/run.viewer", None, &groups));
    assert!(!policy.is_public("roles/run.viewer"));
    let alice = person("alice@example.com", true).await;
    assert!(policy.is_granted(RUN_INVOKER, Some(&alice), &groups));
    assert!(!policy.is_granted(RUN_INVOKER, Some(&anyone), &groups));
    assert!(!policy.is_granted(RUN_INVOKER, None, &groups));
    let granting = Policy::granting(RUN_INVOKER, [Member::AllAuthenticatedUsers]);
    assert!(granting.is_granted(RUN_INVOKER, Some(&anyone), &groups));
    assert!(!granting.is_granted(RUN_INVOKER, None, &groups));
}

#[test]
fn a_policy_is_a_json_object_only() {
    assert!(matches!(
        Policy::from_json(r#"[[{"role":"roles/run.invoker","members":["allUsers"]}]]"#),
        Err(PolicyError::NotAnObject)
    ));
    assert!(matches!(
        Policy::from_json("[]"),
        Err(PolicyError::NotAnObject)
    ));
    assert!(Policy::from_json(r#"{"bindings":[]}"#).is_ok());
}

#[tokio::test]
async fn a_real_policy_with_deleted_and_federated_principals_loads_and_they_match_nobody() {
    let text = r#"{"bindings":[
        {"members":["deleted:user:gone@example.com?uid=123456789","principal://iam.googleapis.com/locations/global/workforcePools/p/subject/alice@example.com","principalSet://iam.googleapis.com/projects/1/locations/global/workloadIdentityPools/p/*","user:alice@example.com"],"role":"roles/run.invoker"},
        {"condition":{"expression":"true","title":"t"},"members":["user:bob@example.com"],"role":"roles/run.admin"}
    ],"etag":"BwX=","version":3}"#;
    let policy = Policy::from_json(text).unwrap();
    assert_eq!(policy.members_of(RUN_INVOKER).count(), 4);
    assert!(
        policy
            .members_of(RUN_INVOKER)
            .take(3)
            .all(|m| matches!(m, Member::Unmatchable(_)))
    );
    let gone = person("gone@example.com", true).await;
    let alice = person("alice@example.com", true).await;
    for m in policy.members_of(RUN_INVOKER).take(3) {
        assert!(!m.matches(Some(&gone), &Groups::new()), "{m}");
        assert!(!m.matches(Some(&alice), &Groups::new()), "{m}");
        assert!(!m.matches(None, &Groups::new()), "{m}");
    }
    assert!(policy.is_granted(RUN_INVOKER, Some(&alice), &Groups::new()));
    // Round trip keeps them as written.
    let again = Policy::from_json(&serde_json::to_string(&policy).unwrap()).unwrap();
    assert_eq!(again, policy);
    // A typo is still refused.
    assert!("usr:alice@example.com".parse::<Member>().is_err());
}

/// IAP's assertion carries no `email_verified`: its `email` is the account IAP signed in,
/// so it matches `user:` and `domain:` members (an app behind IAP, or behind the gateway's
/// IAP-shaped assertion, admits by email). An Identity Platform identity (`gcip`) is judged
/// by its own `email_verified`.
#[tokio::test]
async fn an_iap_assertion_email_is_verified_unless_identity_platform_says_not() {
    const IAP_AUD: &str = "/projects/123/global/backendServices/456";
    let v = verifier(
        gatehouse_verify::IssuerProfile::iap()
            .with_audiences([IAP_AUD])
            .with_static_keys(keyset(&[&EC])),
    );
    let assertion = |gcip: Option<Value>| {
        let mut claims = json!({
            "iss": "https://cloud.google.com/iap",
            "aud": IAP_AUD,
            "sub": "accounts.google.com:110169484474386276334",
            "email": "alice@example.com",
            "hd": "example.com",
            "iat": NOW,
            "exp": NOW + 600,
        });
        if let Some(gcip) = gcip {
            claims["gcip"] = gcip;
        }
        sign(&EC, &claims)
    };
    let groups = Groups::new();
    let google = v.verify(&assertion(None), NOW).await.unwrap();
    assert!(google.email_verified());
    assert!(member("user:alice@example.com").matches(Some(&google), &groups));
    assert!(member("domain:example.com").matches(Some(&google), &groups));
    let unverified = v
        .verify(&assertion(Some(json!({"email_verified": false}))), NOW)
        .await
        .unwrap();
    assert!(!member("user:alice@example.com").matches(Some(&unverified), &groups));
    let verified = v
        .verify(&assertion(Some(json!({"email_verified": true}))), NOW)
        .await
        .unwrap();
    assert!(member("user:alice@example.com").matches(Some(&verified), &groups));
}

/// `hd` is Google's claim; another issuer's token naming an `hd` does not join that domain.
#[tokio::test]
async fn hd_counts_only_from_google_and_iap() {
    let v = verifier(
        gatehouse_verify::IssuerProfile::literal(
            "https://op.example",
            gatehouse_verify::KeySource::Static(std::sync::Arc::new(keyset(&[&RSA]))),
        )
        .with_audiences([AUD]),
    );
    let token = sign(
        &RSA,
        &claims_with(|c| {
            c.insert("iss".into(), json!("https://op.example"));
            c.insert("email".into(), json!("carol@gmail.com"));
            c.insert("email_verified".into(), json!(true));
            c.insert("hd".into(), json!("example.com"));
        }),
    );
    let id = v.verify(&token, NOW).await.unwrap();
    assert!(!member("domain:example.com").matches(Some(&id), &Groups::new()));
    assert!(member("domain:gmail.com").matches(Some(&id), &Groups::new()));
}

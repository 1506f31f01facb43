use super::*;

fn err(text: &str) -> ConfigError {
    Config::from_toml(text, Some(Path::new("gw.toml"))).unwrap_err()
}

const GOOD: &str = r#"
listen = "127.0.0.1:9000"
client_ids = ["123-abc.apps.googleusercontent.com"]

[groups]
admins = ["user:alice@example.com", "serviceAccount:ci@p.iam.gserviceaccount.com"]

[[route]]
name = "vote"
upstream = "http://127.0.0.1:8081"
allow = ["allUsers"]

[[route]]
name = "secure"
host = "Secure.Example.com"
path_prefix = "/api/"
upstream = "http://127.0.0.1:8082/base"
url = "https://secure.example.com"
audiences = ["custom-aud"]
issuers = ["google", { profile = "https://idp.test", jwks = "http://127.0.0.1:9099/oauth2/v3/certs" }]
forward_token = "strip"
policy = { bindings = [{ role = "roles/run.invoker", members = ["group:admins", "domain:example.com"] }] }
rate_limit = { per_second = 5.0, burst = 10 }
[route.cors]
allow_origins = ["https://app.example.com"]
allow_credentials = true
"#;

#[test]
fn a_full_file_parses() {
    let c = Config::from_toml(GOOD, None).unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:9000");
    assert_eq!(c.routes.len(), 2);
    let secure = &c.routes[1];
    assert_eq!(secure.host.as_deref(), Some("secure.example.com"));
    assert_eq!(secure.path_prefix, "/api");
    assert_eq!(
        secure.audiences,
        [
            "https://secure.example.com",
            "custom-aud",
            "123-abc.apps.googleusercontent.com"
        ]
    );
    assert_eq!(secure.assertion_audience, "https://secure.example.com");
    assert_eq!(secure.issuers.len(), 2);
    assert_eq!(secure.forward_token, ForwardToken::Strip);
    assert_eq!(secure.cors.mode, CorsMode::Answer);
    assert!(secure.rate_limit.is_some());
    assert!(c.routes[0].policy.is_public(RUN_INVOKER));
}

#[test]
fn policy_as_gcloud_json_string_and_file() {
    let dir = std::env::temp_dir().join(format!("gw-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.json"),
        r#"{"bindings":[{"members":["user:bob@example.com"],"role":"roles/run.invoker"}],"etag":"BwYz","version":1}"#,
    )
    .unwrap();
    let text = r#"
[[route]]
upstream = "http://127.0.0.1:1"
url = "https://a.example"
policy_file = "policy.json"
[[route]]
path_prefix = "/b"
upstream = "http://127.0.0.1:2"
url = "https://b.example"
policy = '{"bindings":[{"role":"roles/run.invoker","members":["allAuthenticatedUsers"]}]}'
"#;
    let path = dir.join("gw.toml");
    std::fs::write(&path, text).unwrap();
    let c = Config::from_file(&path).unwrap();
    assert_eq!(c.routes.len(), 2);
    assert!(c.sources.files.contains(&dir.join("policy.json")));
    assert!(c.watch_interval.is_some());
}

#[test]
fn syntax_error_has_line_and_column() {
    let e = err("listen = \"127.0.0.1:1\"\n[[route]\nupstream = 1\n");
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.to_string().starts_with("gw.toml:2:"), "{e}");
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let e = err(
        "[[route]]\nupstream = \"http://127.0.0.1:1\"\nallow = [\"allUsers\"]\nupstrem = \"x\"\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.reason.contains("upstrem"), "{e}");
}

#[test]
fn bad_member_is_refused_with_its_line() {
    let e = err(
        "[[route]]\nupstream = \"http://127.0.0.1:1\"\nurl = \"https://a\"\n\nallow = [\"user:nobody\"]\n",
    );
    assert_eq!(e.line, Some(5), "{e}");
    assert!(e.reason.contains("invalid IAM member"), "{e}");
}

#[test]
fn bad_upstream_issuer_policy_and_cors_are_located() {
    let e = err("[[route]]\nallow = [\"allUsers\"]\nupstream = \"ftp://x\"\n");
    assert_eq!(e.line, Some(3), "{e}");
    // h2c is cleartext: not an https upstream's protocol.
    let e = err(
        "[[route]]\nallow = [\"allUsers\"]\nupstream_h2c = true\nupstream = \"https://x.example\"\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    assert!(e.reason.contains("upstream_h2c"), "{e}");
    let c = Config::from_toml(
        "upstream_ca = \"ca.pem\"\n[[route]]\nallow = [\"allUsers\"]\nupstream = \"https://x.example/base\"\n",
        Some(Path::new("/etc/gw/gw.toml")),
    )
    .unwrap();
    assert_eq!(c.upstream_ca.as_deref(), Some(Path::new("/etc/gw/ca.pem")));
    assert_eq!(c.routes[0].upstream.scheme_str(), Some("https"));
    let e = err(
        "trusted_proxies = [\"10.0.0.0/8\",\n  \"10.0.0.0/33\"]\n[[route]]\nallow = [\"allUsers\"]\nupstream = \"http://x\"\n",
    );
    assert_eq!(e.line, Some(2), "{e}");
    assert!(e.reason.contains("trusted_proxies"), "{e}");
    let c = Config::from_toml(
        "trusted_proxies = [\"10.0.0.0/8\", \"::1\", \"192.0.2.7\"]\n[[route]]\nallow = [\"allUsers\"]\nupstream = \"http://x\"\n",
        None,
    )
    .unwrap();
    let nets: Vec<String> = c.trusted_proxies.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "::1/128", "192.0.2.7/32"]);
    let e = err(
        "[[route]]\nupstream = \"http://127.0.0.1:1\"\nurl = \"https://a\"\nallow = [\"allAuthenticatedUsers\"]\nissuers = [\"firebase:\"]\n",
    );
    assert_eq!(e.line, Some(5), "{e}");
    let e = err(
        "[[route]]\nupstream = \"http://127.0.0.1:1\"\nurl = \"https://a\"\npolicy = '{\"bindings\": 3}'\n",
    );
    assert_eq!(e.line, Some(4), "{e}");
    let e = err(
        "[[route]]\nupstream = \"http://127.0.0.1:1\"\nallow = [\"allUsers\"]\n[route.cors]\nallow_origins = [\"*\"]\nallow_credentials = true\n",
    );
    assert!(e.reason.contains("allow_credentials"), "{e}");
    assert_eq!(e.line, Some(4), "{e}");
}

#[test]
fn a_routes_upstream_timeout_overrides_the_global_one_and_is_checked() {
    let c = Config::from_toml(
        "[timeouts]\nupstream_seconds = 10\n[[route]]\nallow = [\"allUsers\"]\nupstream = \"http://x\"\nupstream_seconds = 3600\n[[route]]\npath_prefix = \"/b\"\nallow = [\"allUsers\"]\nupstream = \"http://y\"\n",
        None,
    )
    .unwrap();
    assert_eq!(c.timeouts.upstream, Duration::from_secs(10));
    assert_eq!(
        c.routes[0].upstream_timeout,
        Some(Duration::from_secs(3600))
    );
    assert_eq!(c.routes[1].upstream_timeout, None);
    // The first waits past the idle timeout (300 s by default): said at load.
    let name = c.routes[0].name.as_str();
    assert_eq!(
        waits_past_idle(&c.routes, &c.timeouts),
        vec![(name, Duration::from_secs(3600))]
    );
    for bad in ["0", "-1", "nan", "inf"] {
        let e = err(&format!(
            "[[route]]\nallow = [\"allUsers\"]\nupstream = \"http://x\"\nupstream_seconds = {bad}\n"
        ));
        assert_eq!(e.line, Some(4), "{bad}: {e}");
        assert!(e.reason.contains("upstream_seconds"), "{e}");
    }
}

#[test]
fn semantic_mistakes_point_at_the_route() {
    // Checked route without audience.
    let e = err(
        "listen = \"127.0.0.1:1\"\n\n[[route]]\nupstream = \"http://127.0.0.1:1\"\nallow = [\"allAuthenticatedUsers\"]\n",
    );
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.reason.contains("audience"), "{e}");
    // No policy at all: refused rather than defaulting open or closed silently.
    let e = err("[[route]]\nupstream = \"http://127.0.0.1:1\"\nurl = \"https://a\"\n");
    assert!(e.reason.contains("exactly one of policy"), "{e}");
    // IAM conditions are not evaluated, so they are refused.
    let e = err(
        "[[route]]\nupstream = \"http://127.0.0.1:1\"\nurl = \"https://a\"\npolicy = { bindings = [{ role = \"roles/run.invoker\", members = [\"allUsers\"], condition = { expression = \"true\" } }] }\n",
    );
    assert!(e.reason.contains("condition"), "{e}");
    assert!(err("").reason.contains("no routes"));
    let e = err(
        "[[route]]\nupstream = \"http://127.0.0.1:1\"\nallow = [\"allUsers\"]\n[[route]]\nupstream = \"http://127.0.0.1:2\"\nallow = [\"allUsers\"]\n",
    );
    assert!(e.reason.contains("same host and path prefix"), "{e}");
}

#[test]
fn flags_form_builds_one_route() {
    let c = Config::from_flags(&Flags {
        upstream: "http://127.0.0.1:8081".into(),
        audiences: vec!["https://svc.example".into()],
        allow: vec!["user:alice@example.com".into()],
        issuer: Some("https://idp.test".into()),
        jwks: Some("http://127.0.0.1:9099/oauth2/v3/certs".into()),
        ..Flags::default()
    })
    .unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.routes[0].audiences, ["https://svc.example"]);
    assert!(!c.routes[0].policy.is_public(RUN_INVOKER));
    let e = Config::from_flags(&Flags {
        upstream: "http://127.0.0.1:8081".into(),
        ..Flags::default()
    })
    .unwrap_err();
    assert!(e.reason.contains("--audience"));
    let e = Config::from_flags(&Flags {
        upstream: "http://127.0.0.1:8081".into(),
        audiences: vec!["a".into()],
        allow: vec!["bogus".into()],
        ..Flags::default()
    })
    .unwrap_err();
    assert!(e.reason.contains("invalid IAM member"));
}

#[test]
fn undefined_groups_are_found_case_insensitively() {
    let config = Config::from_toml(GOOD, None).unwrap();
    assert!(undefined_groups(&config.routes, &config.groups).is_empty());
    let text = GOOD.replace(
        "\"group:admins\"",
        "\"group:Admins\", \"group:ops@example.com\"",
    );
    let config = Config::from_toml(&text, None).unwrap();
    assert_eq!(
        undefined_groups(&config.routes, &config.groups),
        vec![("secure", "ops@example.com")]
    );
}

#[test]
fn workers_default_to_the_cpus_and_a_bad_count_is_refused_where_it_is() {
    let c = Config::from_toml(GOOD, None).unwrap();
    assert_eq!(c.workers, default_workers());
    assert!(c.workers >= 1);
    let c = Config::from_toml(&format!("workers = 3\n{GOOD}"), None).unwrap();
    assert_eq!(c.workers, 3);
    for bad in ["workers = 0", "workers = 257"] {
        let e = err(&format!("{bad}\n{GOOD}"));
        assert_eq!((e.line, e.column), (Some(1), Some(11)), "{bad}: {e}");
        assert!(e.reason.contains("workers must be 1 to 256"), "{e}");
    }
}

#[test]
fn prefixes_take_the_spelling_paths_are_routed_by() {
    let prefix = |p: &str| {
        let text = format!(
            "[[route]]\npath_prefix = \"{p}\"\nupstream = \"http://x\"\nallow = [\"allUsers\"]\n"
        );
        Config::from_toml(&text, None).map(|c| c.routes[0].path_prefix.clone())
    };
    assert_eq!(prefix("/café/").unwrap(), "/caf%C3%A9");
    assert_eq!(prefix("/caf%c3%a9").unwrap(), "/caf%C3%A9");
    assert_eq!(prefix("/%7Eadmin").unwrap(), "/~admin");
    assert_eq!(prefix("/a//b/../c").unwrap(), "/a/c");
    for bad in ["/a%2fb", "/a%zz", "/a\\\\b"] {
        let error = prefix(bad).unwrap_err();
        assert!(error.to_string().contains("path_prefix"), "{bad}: {error}");
    }
}

#[test]
fn sources_tell_a_change_made_after_they_were_read() {
    let dir = std::env::temp_dir().join(format!("gw-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.json");
    let write_policy = |member: &str| {
        std::fs::write(
            &policy,
            format!(r#"{{"bindings":[{{"role":"roles/run.invoker","members":["{member}"]}}]}}"#),
        )
        .unwrap();
    };
    write_policy("user:a@example.com");
    let path = dir.join("gw.toml");
    std::fs::write(
        &path,
        "[[route]]\nupstream = \"http://x\"\nurl = \"https://a.example\"\npolicy_file = \"policy.json\"\n",
    )
    .unwrap();
    let sources = Config::from_file(&path).unwrap().sources;
    assert_eq!(sources.files, [path.clone(), policy.clone()]);
    assert_eq!(sources.fingerprint_now(), sources.fingerprint);
    // A change to a file named by the main one, or its removal, is seen.
    write_policy("user:b@example.com");
    assert_ne!(sources.fingerprint_now(), sources.fingerprint);
    write_policy("user:a@example.com");
    assert_eq!(sources.fingerprint_now(), sources.fingerprint);
    std::fs::remove_file(&policy).unwrap();
    assert_ne!(sources.fingerprint_now(), sources.fingerprint);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_route_host_is_a_bare_ascii_host_name() {
    let host = |h: &str| {
        let text =
            format!("[[route]]\nhost = \"{h}\"\nupstream = \"http://x\"\nallow = [\"allUsers\"]\n");
        Config::from_toml(&text, None).map(|c| c.routes[0].host.clone())
    };
    assert_eq!(
        host("Admin.Example.").unwrap().as_deref(),
        Some("admin.example")
    );
    assert_eq!(
        host("xn--caf-dma.example").unwrap().as_deref(),
        Some("xn--caf-dma.example")
    );
    for bad in [
        "café.example",
        "admin.example:8080",
        "https://admin.example",
        "a b",
        "a@b",
        "",
    ] {
        let error = host(bad).unwrap_err();
        assert!(
            error.to_string().contains("bare host name"),
            "{bad}: {error}"
        );
    }
}

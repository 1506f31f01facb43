//! Application Default Credentials: the order, and the error that says what was tried.

use crate::key_file::TokenEndpoint;
use crate::metadata::Stand;
use crate::support::{TempFile, clock, dead_addr, key_file_json};
use gatehouse_client::{AdcOptions, Env, Error, application_default};
use std::time::Duration;

fn emulator_only(hosts: Vec<String>) -> AdcOptions {
    AdcOptions {
        probe_default_metadata: false,
        fallback_metadata_hosts: hosts,
        ping_timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn google_application_credentials_comes_first() {
    let (pinned, _) = clock();
    let token_uri = TokenEndpoint::new(pinned.clone()).start().await;
    let file =
        TempFile::with_contents("adc.json", key_file_json(&token_uri).to_string().as_bytes());
    let metadata = Stand::new(pinned).start().await;
    let env = Env::from_pairs([
        ("GOOGLE_APPLICATION_CREDENTIALS", file.path().to_owned()),
        ("GCE_METADATA_HOST", metadata.to_string()),
    ]);
    let source = application_default(&env, &AdcOptions::default())
        .await
        .unwrap();
    assert!(
        source.describe().starts_with("service-account key"),
        "{}",
        source.describe()
    );
    source.mint("https://a.example").await.unwrap();
}

#[tokio::test]
async fn a_bad_google_application_credentials_is_an_error_not_a_fall_through() {
    let (pinned, _) = clock();
    let metadata = Stand::new(pinned).start().await;
    let env = Env::from_pairs([
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            "/nonexistent/adc.json".to_owned(),
        ),
        ("GCE_METADATA_HOST", metadata.to_string()),
    ]);
    let error = application_default(&env, &AdcOptions::default())
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("/nonexistent/adc.json"),
        "{error}"
    );
}

#[tokio::test]
async fn then_the_metadata_server_of_gce_metadata_host() {
    let (pinned, _) = clock();
    let metadata = Stand::new(pinned).start().await;
    let env = Env::from_pairs([("GCE_METADATA_HOST", metadata.to_string())]);
    let source = application_default(&env, &AdcOptions::default())
        .await
        .unwrap();
    assert_eq!(
        source.describe(),
        format!("metadata server at http://{metadata}")
    );
    source.mint("https://a.example").await.unwrap();
}

#[tokio::test]
async fn then_the_fallback_metadata_host() {
    let (pinned, _) = clock();
    let emulator = Stand::new(pinned).start().await;
    let dead = dead_addr().await;
    let env = Env::from_pairs([("GCE_METADATA_HOST", dead.to_string())]);
    let source = application_default(&env, &emulator_only(vec![emulator.to_string()]))
        .await
        .unwrap();
    assert_eq!(
        source.describe(),
        format!("metadata server at http://{emulator}")
    );
}

#[tokio::test]
async fn nothing_found_lists_what_was_tried() {
    let dead = dead_addr().await;
    let emulator = dead_addr().await;
    let env = Env::from_pairs([("GCE_METADATA_HOST", dead.to_string())]);
    let error = application_default(&env, &emulator_only(vec![emulator.to_string()]))
        .await
        .unwrap_err();
    let Error::NoCredentials { tried } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert!(tried[0].contains("GOOGLE_APPLICATION_CREDENTIALS"));
    assert!(tried[1].contains(&dead.to_string()));
    assert!(tried[2].contains(&emulator.to_string()));
    let text = error.to_string();
    assert!(
        text.starts_with(
            "no credentials found; tried: GOOGLE_APPLICATION_CREDENTIALS (unset); cannot reach the metadata server at"
        ),
        "{text}"
    );

    let nothing = Env::from_pairs::<[(&str, &str); 0], _, _>([]);
    let error = application_default(&nothing, &emulator_only(vec![]))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "no credentials found; tried: GOOGLE_APPLICATION_CREDENTIALS (unset); GCE_METADATA_HOST (unset)"
    );
}

#[tokio::test]
async fn the_default_probe_uses_gce_metadata_ip() {
    // With GCE_METADATA_HOST unset, the ping goes to GCE_METADATA_IP (as python's does).
    let dead = dead_addr().await;
    let env = Env::from_pairs([("GCE_METADATA_IP", dead.to_string())]);
    let error = application_default(&env, &AdcOptions::default())
        .await
        .unwrap_err();
    assert!(error.to_string().contains(&dead.to_string()), "{error}");
}

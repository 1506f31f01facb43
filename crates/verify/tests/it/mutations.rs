//! Property tests: random mutations of valid tokens never panic and are never accepted;
//! arbitrary input never panics any entry point. 10,000 cases per property.

use crate::support::*;
use gatehouse_verify::{IssuerProfile, KeyLimits, KeySet, KeySource, Verifier, unverified};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::json;
use std::sync::{Arc, LazyLock};

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
});

/// Both algorithms allowed, so every mutation reaches as far as it can.
static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    verifier(
        IssuerProfile::literal(
            GOOGLE_ISS,
            KeySource::Static(Arc::new(keyset(&[&RSA, &EC]))),
        )
        .with_audiences([AUD]),
    )
});

/// Valid tokens to mutate: RS256, ES256, and one with nested and non-ASCII claims.
static TOKENS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let tokens = vec![
        sign(&RSA, &google_claims()),
        sign(&EC, &google_claims()),
        sign(
            &RSA,
            &claims_with(|c| {
                c.insert("name".into(), json!("Zoë Ñandú 🦀"));
                c.insert("nested".into(), json!({"a": [1, {"b": null}], "c": 1.5}));
                c.insert("aud".into(), json!([AUD]));
            }),
        ),
    ];
    for t in &tokens {
        assert!(verify(t).is_ok(), "fixture token must verify");
    }
    tokens
});

fn verify(token: &str) -> Result<gatehouse_verify::Identity, gatehouse_verify::Error> {
    RUNTIME.block_on(VERIFIER.verify(token, NOW))
}

fn config() -> Config {
    Config {
        cases: 10_000,
        failure_persistence: None,
        ..Config::default()
    }
}

/// Refused by `verify`, and no other entry point panics on it.
fn assert_refused(original: &str, mutated: &str) -> Result<(), TestCaseError> {
    let _ = unverified::danger_decode_unverified(mutated);
    let _ = unverified::trusted_front_door_claims(mutated);
    if mutated != original {
        let result = verify(mutated);
        prop_assert!(result.is_err(), "accepted a mutation: {mutated}");
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub(crate) enum Edit {
    FlipBit { at: usize, bit: u8 },
    Insert { at: usize, byte: u8 },
    Delete { at: usize, len: usize },
    Replace { at: usize, byte: u8 },
    Alphabet { at: usize, to: u8 },
    Truncate { keep: usize },
}

/// Characters that trip parsers: separators, the standard base64 alphabet, padding,
/// whitespace, quotes, percent-encoding.
const TRICKY: &[u8] = b".+/=-_ \t\n\r%\"\\{}:,0Aa~";

pub(crate) fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0u8..7).prop_map(|(at, bit)| Edit::FlipBit { at, bit }),
        (any::<usize>(), 0x20u8..0x7f).prop_map(|(at, byte)| Edit::Insert { at, byte }),
        (any::<usize>(), prop::sample::select(TRICKY))
            .prop_map(|(at, byte)| Edit::Insert { at, byte }),
        (any::<usize>(), 1usize..5).prop_map(|(at, len)| Edit::Delete { at, len }),
        (any::<usize>(), 0x20u8..0x7f).prop_map(|(at, byte)| Edit::Replace { at, byte }),
        (any::<usize>(), prop::sample::select(b"+/=".as_slice()))
            .prop_map(|(at, to)| Edit::Alphabet { at, to }),
        any::<usize>().prop_map(|keep| Edit::Truncate { keep }),
    ]
}

pub(crate) fn apply(token: &str, edit: &Edit) -> String {
    let mut bytes = token.as_bytes().to_vec();
    let n = bytes.len();
    match *edit {
        Edit::FlipBit { at, bit } => bytes[at % n] ^= 1 << bit,
        Edit::Insert { at, byte } => bytes.insert(at % (n + 1), byte),
        Edit::Delete { at, len } => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
        Edit::Replace { at, byte } => bytes[at % n] = byte,
        Edit::Alphabet { at, to } => {
            // Swap a URL-safe character for its standard-alphabet twin where there is
            // one, else put in the given standard character.
            let at = at % n;
            bytes[at] = match bytes[at] {
                b'-' => b'+',
                b'_' => b'/',
                _ => to,
            };
        }
        Edit::Truncate { keep } => bytes.truncate(keep % n),
    }
    // Every edit keeps ASCII ASCII; the non-ASCII fixture may split a character only
    // inside base64 text, which is ASCII too.
    String::from_utf8(bytes).unwrap()
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn single_edits_are_never_accepted(which in 0usize..3, e in edit()) {
        let original = &TOKENS[which];
        assert_refused(original, &apply(original, &e))?;
    }

    #[test]
    fn several_edits_are_never_accepted(which in 0usize..3, edits in prop::collection::vec(edit(), 2..6)) {
        let original = &TOKENS[which];
        let mut token = original.clone();
        for e in &edits {
            if token.is_empty() {
                break;
            }
            token = apply(&token, e);
        }
        assert_refused(original, &token)?;
    }

    #[test]
    fn segments_swapped_or_spliced_are_never_accepted(
        picks in prop::collection::vec((0usize..3, 0usize..3), 1..5),
    ) {
        // Segments taken from any of the valid tokens, in any order and number.
        let segments: Vec<Vec<&str>> = TOKENS.iter().map(|t| t.split('.').collect()).collect();
        let token = picks
            .iter()
            .map(|(t, s)| segments[*t][*s])
            .collect::<Vec<_>>()
            .join(".");
        if !TOKENS.contains(&token) {
            assert_refused("", &token)?;
        }
    }

    #[test]
    fn signatures_moved_between_tokens_are_never_accepted(from in 0usize..3, offset in 1usize..3, flip in any::<usize>()) {
        let to = (from + offset) % 3;
        let (input, _) = TOKENS[to].rsplit_once('.').unwrap();
        let (_, sig) = TOKENS[from].rsplit_once('.').unwrap();
        let token = format!("{input}.{sig}");
        assert_refused(&TOKENS[to], &token)?;
        // With a flipped bit in the signature as well.
        assert_refused(&TOKENS[to], &apply(&token, &Edit::FlipBit { at: input.len() + 1 + flip % sig.len(), bit: (flip % 6) as u8 }))?;
    }

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,300}") {
        let _ = verify(&s);
        let _ = unverified::danger_decode_unverified(&s);
        let _ = unverified::trusted_front_door_claims(&s);
    }

    #[test]
    fn three_base64ish_segments_never_panic(
        h in "[A-Za-z0-9_=+/-]{0,80}",
        p in "[A-Za-z0-9_=+/-]{0,200}",
        s in "[A-Za-z0-9_=+/-]{0,400}",
    ) {
        let token = format!("{h}.{p}.{s}");
        prop_assert!(verify(&token).is_err());
        let _ = unverified::danger_decode_unverified(&token);
        let _ = unverified::trusted_front_door_claims(&token);
    }

    #[test]
    fn json_headers_and_claims_of_any_shape_never_panic_or_pass_unsigned(
        header in json_value(),
        claims in json_value(),
        sig in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let token = format!("{}.{}.{}", b64(header.to_string()), b64(claims.to_string()), b64(&sig));
        prop_assert!(verify(&token).is_err());
        let _ = unverified::danger_decode_unverified(&token);
        let _ = unverified::trusted_front_door_claims(&token);
    }

    #[test]
    fn key_documents_of_any_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = KeySet::from_document(&bytes, KeyLimits::default());
    }
}

/// JSON values biased toward the members a header or claims set has.
pub(crate) fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(json!(null)),
        any::<bool>().prop_map(|b| json!(b)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "RS256", "ES256", "none", "HS256", "rsa-1", "ec-1", "JWT", GOOGLE_ISS, AUD,
        ])
        .prop_map(|s| json!(s)),
        ".{0,12}".prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec![
                    "alg",
                    "kid",
                    "typ",
                    "crit",
                    "jwk",
                    "iss",
                    "aud",
                    "exp",
                    "iat",
                    "nbf",
                    "sub",
                    "email",
                    "email_verified",
                    "x",
                ]),
                inner,
                0..8,
            )
            .prop_map(|m| serde_json::Value::Object(
                m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
            )),
        ]
    })
}

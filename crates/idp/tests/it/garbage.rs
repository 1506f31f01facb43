//! Random input to every endpoint that reads one: never a panic, never a 5xx, and nothing
//! written.

use crate::*;
use axum::body::Body;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = (self.next() as usize) % max;
        let alphabet = b"=&%.-_~+/:?#{}[]\",abcXYZ019 \x00\xff\xc3";
        (0..n)
            .map(|_| alphabet[(self.next() as usize) % alphabet.len()])
            .collect()
    }
}

#[tokio::test]
async fn random_input_never_breaks_anything() {
    let h = harness().await;
    let tables = [
        "idp_accounts",
        "idp_clients",
        "idp_codes",
        "idp_refresh_tokens",
        "idp_access_tokens",
        "idp_fb_users",
        "idp_sa_keys",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.push(count(&h.state, t).await);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let posts = [
        "/token",
        "/o/oauth2/v2/auth",
        "/revoke",
        "/identitytoolkit.googleapis.com/v1/accounts:signUp",
        "/identitytoolkit.googleapis.com/v1/accounts:signInWithPassword",
        "/identitytoolkit.googleapis.com/v1/accounts:signInWithIdp",
        "/identitytoolkit.googleapis.com/v1/accounts:lookup",
        "/identitytoolkit.googleapis.com/v1/accounts:update",
        "/securetoken.googleapis.com/v1/token",
        "/emulator/v1/clients",
        "/oauth2/v3/tokeninfo",
    ];
    for i in 0..400 {
        let body = rng.bytes(600);
        let path = posts[i % posts.len()];
        let ct = if i % 3 == 0 {
            "application/json"
        } else {
            "application/x-www-form-urlencoded"
        };
        let r = h
            .send(
                Request::post(path)
                    .header("content-type", ct)
                    .body(Body::from(body))
                    .unwrap(),
            )
            .await;
        assert!(r.status.as_u16() < 500, "{path}: {} {}", r.status, r.text());
        // Random query strings on the GET endpoints.
        let q: String = rng
            .bytes(200)
            .iter()
            .filter(|b| b.is_ascii_graphic() && **b != b'#')
            .map(|b| *b as char)
            .collect();
        for get in [
            format!("/o/oauth2/v2/auth?{q}"),
            format!("/computeMetadata/v1/instance/service-accounts/default/identity?{q}"),
            format!("/v1/userinfo?{q}"),
        ] {
            let Ok(req) = Request::get(&get)
                .header("Metadata-Flavor", "Google")
                .body(Body::empty())
            else {
                continue;
            };
            let r = h.send(req).await;
            assert!(r.status.as_u16() < 500, "{get}: {}", r.status);
        }
    }
    for (t, n) in tables.iter().zip(before) {
        assert_eq!(count(&h.state, t).await, n, "{t} changed");
    }
}

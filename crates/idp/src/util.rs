//! Small shared pieces: randomness, hashing, encodings, dates, HTML escaping.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};

/// `n` random bytes from the system's CSPRNG.
pub(crate) fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    // aws-lc's RNG does not fail on supported platforms; if it ever did, the zero buffer
    // would be caught by the caller's uniqueness constraints rather than silently reused.
    let _ = aws_lc_rs::rand::fill(&mut buf);
    buf
}

/// A random URL-safe token with `bytes` bytes of entropy.
pub(crate) fn random_token(bytes: usize) -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(bytes))
}

/// Lowercase hex of random bytes.
pub(crate) fn random_hex(bytes: usize) -> String {
    hex(&random_bytes(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn sha256(data: &[u8]) -> Vec<u8> {
    digest::digest(&digest::SHA256, data).as_ref().to_vec()
}

/// What the database stores for a bearer secret (codes, refresh and access tokens): its
/// SHA-256, so a leaked database does not leak usable tokens.
pub(crate) fn secret_hash(secret: &str) -> String {
    URL_SAFE_NO_PAD.encode(sha256(secret.as_bytes()))
}

pub(crate) fn b64url(data: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(data)
}

pub(crate) fn b64std(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Constant-time equality for secrets of public length.
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A stable decimal id of `digits` digits (first digit 1) derived from `seed`, shaped like
/// Google's numeric account ids (21 digits) or project numbers (12 digits).
pub(crate) fn numeric_id(seed: &str, digits: usize) -> String {
    let h = sha256(seed.as_bytes());
    let mut out = String::from("1");
    let mut i = 0usize;
    while out.len() < digits {
        let byte = h[i % h.len()] ^ (i / h.len()) as u8;
        out.push(char::from(b'0' + byte % 10));
        i += 1;
    }
    out
}

/// Days since 1970-01-01 -> (year, month, day), proleptic Gregorian (Howard Hinnant's
/// `civil_from_days`).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Unix seconds -> RFC 3339 UTC (`2026-01-02T03:04:05Z`).
pub(crate) fn rfc3339(unix: i64) -> String {
    let (y, m, d) = civil_from_days(unix.div_euclid(86_400));
    let s = unix.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        (s % 3600) / 60,
        s % 60
    )
}

/// Escapes text for HTML element content and double-quoted attributes.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A plausible email: one `@`, non-empty local part, a dotted or `localhost` domain, no
/// spaces or control characters, at most 254 bytes.
pub(crate) fn valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.contains('@')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && (domain.contains('.') || domain == "localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn numeric_ids_are_stable_and_sized() {
        let a = numeric_id("alice@example.com", 21);
        assert_eq!(a.len(), 21);
        assert!(a.chars().all(|c| c.is_ascii_digit()));
        assert_eq!(a, numeric_id("alice@example.com", 21));
        assert_ne!(a, numeric_id("bob@example.com", 21));
        assert_eq!(numeric_id("p", 40).len(), 40);
    }

    #[test]
    fn escaping_and_emails() {
        assert_eq!(
            html_escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert!(valid_email("a@example.com"));
        for bad in [
            "",
            "a",
            "@x.com",
            "a@",
            "a b@x.com",
            "a@b@c.com",
            "a@.com",
            "a@com",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }
}

//! Request paths as routing reads them. A route's policy covers the resources under its
//! prefix, so the path it is chosen by must be the one the upstream acts on:
//!
//! - one spelling per resource (RFC 3986 §6.2.2): percent-encoded unreserved characters
//!   decoded, other escapes in upper case, bytes past ASCII (which `http::Uri` lets through
//!   raw) percent-encoded, dot segments removed (§5.2.4), repeated slashes merged (nginx's
//!   `merge_slashes`); the upstream is sent this path, not the client's, and route
//!   prefixes are read the same way;
//! - no spelling whose meaning servers disagree on: an encoded `/`, `\` or NUL, a literal
//!   `\`, or a malformed escape is refused;
//! - readings some servers make of a path (path parameters dropped, as Tomcat, Jetty and
//!   Spring do; letters compared without case, as IIS does) are [`Readings`] for the caller
//!   to route too: a path they would route elsewhere is refused rather than judged by a
//!   route its upstream may not be serving.

use std::borrow::Cow;

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PathError {
    #[error("the path does not begin with '/'")]
    NotAbsolute,
    #[error("a '%' not followed by two hex digits")]
    BadEscape,
    #[error("an encoded '/', '\\' or NUL, or a '\\', which servers read differently")]
    Ambiguous,
}

/// The path routing and the upstream see: `path` itself (borrowed) when it already is in
/// that form, as nearly every path is.
pub(crate) fn normalize(path: &str) -> Result<Cow<'_, str>, PathError> {
    // `OPTIONS *` asks about the server, not a resource.
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let b = path.as_bytes();
    let plain = b.iter().enumerate().all(|(i, &c)| match c {
        b'%' | b'\\' | 0x80.. => false,
        b'/' => !matches!(b.get(i + 1), Some(b'/' | b'.')),
        _ => true,
    });
    if plain {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let normal = remove_dot_segments(&decoded);
    if normal == path {
        Ok(Cow::Borrowed(path))
    } else {
        Ok(Cow::Owned(normal))
    }
}

/// `%XX` of an unreserved character decoded, other escapes upper-cased, bytes past ASCII
/// encoded (`/café` and `/caf%c3%a9` are one resource to the upstream); an encoded `/`,
/// `\` or NUL, a literal `\`, or a malformed escape refused.
fn decode_unreserved(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => return Err(PathError::Ambiguous),
            b'%' => {
                let (hi, lo) = match (b.get(i + 1), b.get(i + 2)) {
                    (Some(&h), Some(&l)) if h.is_ascii_hexdigit() && l.is_ascii_hexdigit() => {
                        (h, l)
                    }
                    _ => return Err(PathError::BadEscape),
                };
                let value = (hex(hi) << 4) | hex(lo);
                match value {
                    b'/' | b'\\' | 0 => return Err(PathError::Ambiguous),
                    v if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') => {
                        out.push(char::from(v));
                    }
                    _ => {
                        out.push('%');
                        out.push(char::from(hi.to_ascii_uppercase()));
                        out.push(char::from(lo.to_ascii_uppercase()));
                    }
                }
                i += 3;
            }
            c @ 0x80.. => {
                out.push('%');
                out.push(char::from(HEX_UPPER[usize::from(c >> 4)]));
                out.push(char::from(HEX_UPPER[usize::from(c & 0xf)]));
                i += 1;
            }
            _ => {
                // Copy up to the next byte of interest in one go (an ASCII byte, so the
                // cut is on a character boundary).
                let run = b[i..]
                    .iter()
                    .position(|&c| c == b'%' || c == b'\\' || c >= 0x80)
                    .unwrap_or(b.len() - i);
                out.push_str(&path[i..i + run]);
                i += run;
            }
        }
    }
    Ok(out)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

/// RFC 3986 §5.2.4 for an absolute path, with empty segments (`//`) merged: `.` dropped,
/// `..` removes the segment before it (never above the root), a path that ended in a
/// directory (`/`, `/.`, `/..`) still does.
fn remove_dot_segments(path: &str) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut directory = false;
    for segment in path.split('/').skip(1) {
        directory = true;
        match segment {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => {
                kept.push(s);
                directory = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &kept {
        out.push('/');
        out.push_str(s);
    }
    if directory || kept.is_empty() {
        out.push('/');
    }
    out
}

/// How other servers may read a normalized path, where that differs from how it reads
/// here.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Readings {
    /// With each segment's parameters (`;...`) dropped and dot segments removed again:
    /// Tomcat, Jetty and Spring read `/public/..;/admin` as `/admin`.
    pub without_params: Option<String>,
    /// Whether the path has upper-case letters, which servers that compare paths without
    /// case (IIS, ASP.NET) may route as their lower-case twin.
    pub has_upper_case: bool,
}

/// The other readings of `path` (already normalized) worth routing too.
pub(crate) fn readings(path: &str) -> Readings {
    let without_params = path.contains(';').then(|| {
        let stripped: Vec<&str> = path
            .split('/')
            .map(|s| s.split(';').next().unwrap_or(s))
            .collect();
        remove_dot_segments(&stripped.join("/"))
    });
    Readings {
        without_params,
        has_upper_case: path.bytes().any(|c| c.is_ascii_uppercase()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(path: &str) -> Result<String, PathError> {
        normalize(path).map(Cow::into_owned)
    }

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for p in [
            "/",
            "/a",
            "/a/b/",
            "/.well-known/openid-configuration",
            "/a.b/c..d",
            "*",
        ] {
            assert!(
                matches!(normalize(p), Ok(Cow::Borrowed(q)) if q == p),
                "{p}"
            );
        }
    }

    #[test]
    fn one_spelling_per_resource() {
        for (raw, normal) in [
            ("/%61dmin/users", "/admin/users"),
            ("/%41%2D%2e%5f%7E", "/A-._~"),
            ("/a%2fb", "err"),
            ("/static/../admin", "/admin"),
            ("/static/%2e%2e/admin", "/admin"),
            ("/static/%2E./admin", "/admin"),
            ("/a/./b", "/a/b"),
            ("/caf\u{e9}/x", "/caf%C3%A9/x"),
            ("/caf%c3%a9/x", "/caf%C3%A9/x"),
            ("/caf%C3%A9/x", "/caf%C3%A9/x"),
            ("/%E2%82%AC\u{20ac}", "/%E2%82%AC%E2%82%AC"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/a/", "/a/"),
            ("//", "/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
        ] {
            let got = n(raw).unwrap_or_else(|_| "err".into());
            assert_eq!(got, normal, "{raw}");
        }
    }

    #[test]
    fn spellings_servers_disagree_on_are_refused() {
        for p in ["/a%2Fb", "/a%2fb", "/a%5Cb", "/a\\b", "/a%00b"] {
            assert_eq!(n(p), Err(PathError::Ambiguous), "{p}");
        }
        for p in ["/a%", "/a%4", "/a%zz", "/a%4g"] {
            assert_eq!(n(p), Err(PathError::BadEscape), "{p}");
        }
        assert_eq!(n(""), Err(PathError::NotAbsolute));
        assert_eq!(n("a/b"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn readings_drop_parameters_and_note_case() {
        assert_eq!(readings("/admin/users"), Readings::default());
        assert_eq!(
            readings("/public/..;/admin").without_params.as_deref(),
            Some("/admin")
        );
        assert_eq!(
            readings("/admin;jsessionid=1/users")
                .without_params
                .as_deref(),
            Some("/admin/users")
        );
        assert!(readings("/ADMIN").has_upper_case);
    }
}

//! Which names the emulator answers to. It hands out private keys, tokens for any user and
//! admin calls to whoever reaches it, which is fine for the processes of this machine but not
//! for a web page: a page on `attacker.example` whose DNS answer flips to 127.0.0.1 (DNS
//! rebinding) is same-origin with the emulator and may read every answer. Browsers always
//! send the name they resolved, so answering only to names the attacker cannot point here
//! closes that door, and the same rule for `Origin` keeps other sites from making the
//! emulator's own API act for them (a `text/plain` POST needs no preflight).

/// The names always answered to: this machine's, the metadata server's, and Google's own
/// (which only the user's hosts file can point here).
fn always(name: &str) -> bool {
    const GOOGLE: [&str; 3] = ["google.com", "googleapis.com", "google.internal"];
    name == "localhost"
        || name.ends_with(".localhost")
        || name == "metadata"
        || GOOGLE
            .iter()
            .any(|g| name == *g || name.strip_suffix(g).is_some_and(|s| s.ends_with('.')))
}

/// The names an emulator answers to: any IP address (a rebinding page is reached by name,
/// never by address), the names in [`always`], its base URL's host, and `extra` (each a
/// name, or `.suffix` for a domain and its subdomains).
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
}

impl AllowedHosts {
    pub fn new(base_url: &str, extra: &[String]) -> AllowedHosts {
        let mut names: Vec<String> = extra.iter().map(|n| normalize(n)).collect();
        if let Some(host) = url::Url::parse(base_url)
            .ok()
            .and_then(|u| u.host_str().map(normalize))
        {
            names.push(host);
        }
        AllowedHosts { names }
    }

    /// Whether a `Host` value (`name[:port]`, `[v6]:port`) names this emulator.
    pub fn allows_host_header(&self, value: &str) -> bool {
        match split_host(value) {
            Some(HostName::Address) => true,
            Some(HostName::Name(name)) => self.allows_name(&name),
            None => false,
        }
    }

    /// Whether an `Origin` (`scheme://host[:port]`) is a page of a host this emulator answers
    /// to. `null` (sandboxed frames, `data:` pages) is not.
    pub fn allows_origin(&self, origin: &str) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        matches!(scheme, "http" | "https") && self.allows_host_header(authority)
    }

    fn allows_name(&self, name: &str) -> bool {
        always(name)
            || self
                .names
                .iter()
                .any(|allowed| match allowed.strip_prefix('.') {
                    Some(domain) => {
                        name == domain
                            || name.strip_suffix(domain).is_some_and(|s| s.ends_with('.'))
                    }
                    None => name == allowed,
                })
    }
}

enum HostName {
    Address,
    Name(String),
}

/// Lower case, without the root's trailing dot.
fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The host of a `Host` header value, port removed; `None` when it is not one.
fn split_host(value: &str) -> Option<HostName> {
    if let Some(rest) = value.strip_prefix('[') {
        let (address, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) {
            return None;
        }
        return address
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| HostName::Address);
    }
    let name = match value.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => value,
    };
    if name.is_empty() || name.contains(['/', '@', '\\', ' ']) {
        return None;
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return Some(HostName::Address);
    }
    Some(HostName::Name(normalize(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_local_and_google_names_and_the_base_url_are_answered() {
        let hosts = AllowedHosts::new("http://idp.test:9099", &[".corp.example".to_owned()]);
        for host in [
            "127.0.0.1:9099",
            "10.1.2.3",
            "[::1]:9099",
            "localhost:9099",
            "LOCALHOST.",
            "app.localhost",
            "metadata.google.internal",
            "metadata",
            "oauth2.googleapis.com",
            "accounts.google.com",
            "idp.test:9099",
            "IDP.test",
            "corp.example",
            "idp.corp.example:443",
        ] {
            assert!(hosts.allows_host_header(host), "{host}");
        }
        for host in [
            "attacker.example:9099",
            "localhost.attacker.example",
            "evilgoogle.com",
            "google.com.attacker.example",
            "notcorp.example",
            "idp.test.attacker.example",
            "",
            "[::1",
            "[::1]x",
            "127.0.0.1:port",
            "user@127.0.0.1",
        ] {
            assert!(!hosts.allows_host_header(host), "{host}");
        }
    }

    #[test]
    fn origins_are_judged_by_their_host() {
        let hosts = AllowedHosts::new("http://127.0.0.1:9099", &[]);
        assert!(hosts.allows_origin("http://127.0.0.1:8080"));
        assert!(hosts.allows_origin("http://localhost:3000"));
        assert!(!hosts.allows_origin("https://attacker.example"));
        assert!(!hosts.allows_origin("null"));
        assert!(!hosts.allows_origin("chrome-extension://abcdefghijklmnopabcdefghijklmnop"));
    }
}

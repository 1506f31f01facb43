//! Which names the emulator answers to. It hands out private keys, tokens for any user and
//! admin calls to whoever reaches it, which is fine for the processes of this machine but not
//! for a web page: a page on `attacker.example` whose DNS answer flips to 127.0.0.1 (DNS
//! rebinding) is same-origin with the emulator and may read every answer. Browsers always
//! send the name they resolved, so answering only to names the attacker cannot point here
//! closes that door. `Origin` keeps other sites from making the emulator's own API act for
//! them (a `text/plain` POST needs no preflight); it is judged more strictly, because it
//! says where a page came from: a page served from a public or LAN address, or by Google,
//! is another site's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// This machine's names: a page on one of them is a page of this machine.
fn local_name(name: &str) -> bool {
    name == "localhost" || name.ends_with(".localhost")
}

/// The metadata server's and Google's names, which only the user's hosts file can point here:
/// answered as `Host`, but a page on one of them is Google's (another site), not this
/// emulator's.
fn google_name(name: &str) -> bool {
    const GOOGLE: [&str; 3] = ["google.com", "googleapis.com", "google.internal"];
    name == "metadata"
        || GOOGLE
            .iter()
            .any(|g| name == *g || name.strip_suffix(g).is_some_and(|s| s.ends_with('.')))
}

/// The names an emulator answers to: any IP address (a rebinding page is reached by name,
/// never by address), this machine's and Google's names, its base URL's host, and `extra`
/// (each a name, or `.suffix` for a domain and its subdomains).
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    names: Vec<String>,
    /// The base URL's host and `extra` entries that are IP addresses: pages served from
    /// them are the operator's own.
    addresses: Vec<IpAddr>,
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
        let addresses = names
            .iter()
            .filter_map(|n| {
                n.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .ok()
            })
            .collect();
        AllowedHosts { names, addresses }
    }

    /// Whether a `Host` value (`name[:port]`, `[v6]:port`) names this emulator.
    pub fn allows_host_header(&self, value: &str) -> bool {
        match split_host(value) {
            Some(HostName::Address(_)) => true,
            Some(HostName::Name(name)) => google_name(&name) || self.allows_page_name(&name),
            None => false,
        }
    }

    /// Whether an `Origin` (`scheme://host[:port]`) is a page of this machine or of a name
    /// the operator gave, for a request that named `host` (its `Host` header). Unlike
    /// `Host`, an address here is where the page came from, and a page served from any
    /// address but this machine's is another site's: only loopback, the address the request
    /// itself was sent to, and addresses the operator gave count. `null` (sandboxed frames,
    /// `data:` pages) is not a page of anyone's.
    pub fn allows_origin(&self, origin: &str, host: Option<&str>) -> bool {
        let Some((scheme, authority)) = origin.split_once("://") else {
            return false;
        };
        if !matches!(scheme, "http" | "https") {
            return false;
        }
        match split_host(authority) {
            Some(HostName::Address(ip)) => {
                // `::ffff:127.0.0.1` is 127.0.0.1.
                let ip = ip.to_canonical();
                let requested = match host.and_then(split_host) {
                    Some(HostName::Address(a)) => Some(a.to_canonical()),
                    _ => None,
                };
                ip.is_loopback()
                    || requested == Some(ip)
                    || self.addresses.iter().any(|a| a.to_canonical() == ip)
            }
            Some(HostName::Name(name)) => self.allows_page_name(&name),
            None => false,
        }
    }

    fn allows_page_name(&self, name: &str) -> bool {
        local_name(name)
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
    Address(IpAddr),
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
            .parse::<Ipv6Addr>()
            .ok()
            .map(|a| HostName::Address(IpAddr::V6(a)));
    }
    let name = match value.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => value,
    };
    if name.is_empty() || name.contains(['/', '@', '\\', ' ']) {
        return None;
    }
    if let Ok(address) = name.parse::<Ipv4Addr>() {
        return Some(HostName::Address(IpAddr::V4(address)));
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
        let local = Some("127.0.0.1:9099");
        assert!(hosts.allows_origin("http://127.0.0.1:8080", local));
        assert!(hosts.allows_origin("http://[::1]:8080", local));
        assert!(hosts.allows_origin("http://[::ffff:127.0.0.1]", local));
        assert!(hosts.allows_origin("http://localhost:3000", local));
        assert!(hosts.allows_origin("http://app.localhost:3000", None));
        assert!(!hosts.allows_origin("https://attacker.example", local));
        assert!(!hosts.allows_origin("null", local));
        assert!(!hosts.allows_origin("chrome-extension://abcdefghijklmnopabcdefghijklmnop", local));
        // A page served from an address is that address's site, not this emulator's.
        assert!(!hosts.allows_origin("http://203.0.113.7", local));
        assert!(!hosts.allows_origin("http://203.0.113.7", None));
        assert!(!hosts.allows_origin("http://[2001:db8::1]:8080", local));
        assert!(!hosts.allows_origin("http://192.168.1.20", local));
        assert!(!hosts.allows_origin("http://0.0.0.0:8080", local));
        // Unless the request itself went to that address (an emulator reached on the LAN).
        assert!(hosts.allows_origin("http://192.168.1.20:3000", Some("192.168.1.20:9099")));
        assert!(hosts.allows_origin("http://[2001:db8::1]", Some("[2001:db8::1]:9099")));
        assert!(!hosts.allows_origin("http://192.168.1.20", Some("192.168.1.21:9099")));
        // Google's names are answered as Host, but their pages are Google's.
        assert!(!hosts.allows_origin("https://accounts.google.com", local));
        assert!(!hosts.allows_origin("http://metadata.google.internal", local));
        assert!(!hosts.allows_origin("http://metadata", local));
        // Names and addresses the operator gave.
        let hosts = AllowedHosts::new(
            "http://10.0.0.5:9099",
            &[".corp.example".to_owned(), "idp".to_owned()],
        );
        assert!(hosts.allows_origin("http://10.0.0.5:8080", None));
        assert!(hosts.allows_origin("https://app.corp.example", None));
        assert!(hosts.allows_origin("http://idp:3000", None));
        assert!(!hosts.allows_origin("http://10.0.0.6", None));
    }
}

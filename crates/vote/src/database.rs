//! Where the votes live: `--database`/`DATABASE_URL`, else the Cloud SQL credentials of
//! seed 001 (`CLOUD_SQL_CREDENTIALS_SECRET` JSON, or the same names as separate variables),
//! else a SQLite file under the data directory. Passwords never reach a log: every type
//! here that holds one prints `<hidden>` (a URL's, `REDACTED`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The SQLite file's name under the data directory.
pub const SQLITE_FILE: &str = "vote.sqlite3";

/// Where Cloud Run mounts Cloud SQL sockets unless `DB_SOCKET_DIR` says otherwise.
pub const DEFAULT_SOCKET_DIR: &str = "/cloudsql";

/// A database URL that may hold a password.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        DatabaseUrl(url.into())
    }
    /// The URL itself, for the connection only; never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// The URL with any credentials replaced, for logs (the store's reading: the
    /// userinfo's password and every query parameter naming one, `sslpassword` too).
    pub fn redacted(&self) -> String {
        gatehouse_store::redact(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Where to open the vote store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseTarget {
    /// A SQLite file (the default: `<data>/vote.sqlite3`).
    Sqlite(PathBuf),
    /// `postgres://...` (or `sqlite:...`) given explicitly or built from credentials.
    Url(DatabaseUrl),
}

impl DatabaseTarget {
    /// For logs: never shows a password.
    pub fn describe(&self) -> String {
        match self {
            DatabaseTarget::Sqlite(path) => format!("sqlite:{}", path.display()),
            DatabaseTarget::Url(url) => url.redacted(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsError {
    #[error(
        "CLOUD_SQL_CREDENTIALS_SECRET is not a JSON object of strings; make sure the secret is JSON formatted"
    )]
    NotJson,
    #[error("database credentials lack {0}")]
    Missing(&'static str),
    #[error("DB_HOST {0:?} is not host or host:port")]
    BadHost(String),
}

/// Seed 001's Cloud SQL credentials. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct CloudSqlCredentials {
    pub user: String,
    password: String,
    pub database: String,
    /// `host:port` for TCP.
    pub host: Option<String>,
    /// `PROJECT:REGION:INSTANCE` for the unix socket.
    pub connection_name: Option<String>,
    /// Directory holding `<connection_name>/.s.PGSQL.5432` (default `/cloudsql`).
    pub socket_dir: Option<String>,
}

impl fmt::Debug for CloudSqlCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudSqlCredentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .field("database", &self.database)
            .field("host", &self.host)
            .field("connection_name", &self.connection_name)
            .field("socket_dir", &self.socket_dir)
            .finish()
    }
}

const NAMES: [&str; 6] = [
    "DB_USER",
    "DB_PASSWORD",
    "DB_NAME",
    "DB_HOST",
    "CLOUD_SQL_CONNECTION_NAME",
    "DB_SOCKET_DIR",
];

impl CloudSqlCredentials {
    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CredentialsError> {
        let non_empty = |name: &str| get(name).filter(|v| !v.is_empty());
        let creds = CloudSqlCredentials {
            user: non_empty("DB_USER").ok_or(CredentialsError::Missing("DB_USER"))?,
            password: get("DB_PASSWORD").unwrap_or_default(),
            database: non_empty("DB_NAME").ok_or(CredentialsError::Missing("DB_NAME"))?,
            host: non_empty("DB_HOST"),
            connection_name: non_empty("CLOUD_SQL_CONNECTION_NAME"),
            socket_dir: non_empty("DB_SOCKET_DIR"),
        };
        if creds.host.is_none() && creds.connection_name.is_none() {
            return Err(CredentialsError::Missing(
                "DB_HOST or CLOUD_SQL_CONNECTION_NAME",
            ));
        }
        Ok(creds)
    }

    /// The secret's JSON (`{"DB_USER":..., "DB_PASSWORD":..., "DB_NAME":..., "DB_HOST" |
    /// "CLOUD_SQL_CONNECTION_NAME":..., "DB_SOCKET_DIR"?}`). `DB_SOCKET_DIR` may also come
    /// from the environment (`env`), as the samples read it there.
    pub fn from_secret_json(
        json: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, CredentialsError> {
        let map: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(json).map_err(|_| CredentialsError::NotJson)?;
        let text = |name: &str| match map.get(name) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        CloudSqlCredentials::from_lookup(|name| {
            text(name).or_else(|| (name == "DB_SOCKET_DIR").then(|| env(name)).flatten())
        })
    }

    /// The same names as separate environment variables; `None` when none is set.
    pub fn from_env(
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, CredentialsError> {
        if !NAMES.iter().any(|n| env(n).is_some_and(|v| !v.is_empty())) {
            return Ok(None);
        }
        CloudSqlCredentials::from_lookup(env).map(Some)
    }

    /// The unix socket this would connect to, when it uses one.
    pub fn socket_path(&self) -> Option<PathBuf> {
        if self.host.is_some() {
            return None;
        }
        let name = self.connection_name.as_deref()?;
        let dir = self.socket_dir.as_deref().unwrap_or(DEFAULT_SOCKET_DIR);
        Some(Path::new(dir).join(name).join(".s.PGSQL.5432"))
    }

    /// A `postgres://` URL: TCP to `DB_HOST` when set, else the unix socket directory
    /// `<DB_SOCKET_DIR>/<CLOUD_SQL_CONNECTION_NAME>` (the driver appends `.s.PGSQL.5432`).
    pub fn url(&self) -> Result<DatabaseUrl, CredentialsError> {
        let mut url = url::Url::parse("postgres://localhost/")
            .map_err(|_| CredentialsError::Missing("a URL"))?;
        let bad_host = |h: &str| CredentialsError::BadHost(h.to_owned());
        if let Some(host) = &self.host {
            // Parse `host[:port]` (IPv6 in brackets) by letting the URL parser read it.
            let probe =
                url::Url::parse(&format!("postgres://{host}/")).map_err(|_| bad_host(host))?;
            let name = probe.host_str().ok_or_else(|| bad_host(host))?;
            if probe.path() != "/" || probe.query().is_some() || !probe.username().is_empty() {
                return Err(bad_host(host));
            }
            url.set_host(Some(name)).map_err(|_| bad_host(host))?;
            url.set_port(Some(probe.port().unwrap_or(5432)))
                .map_err(|_| bad_host(host))?;
        }
        url.set_username(&self.user)
            .map_err(|_| CredentialsError::Missing("a valid DB_USER"))?;
        if !self.password.is_empty() {
            url.set_password(Some(&self.password))
                .map_err(|_| CredentialsError::Missing("a valid DB_PASSWORD"))?;
        }
        url.path_segments_mut()
            .map_err(|_| CredentialsError::Missing("a URL"))?
            .clear()
            .push(&self.database);
        if self.host.is_none() {
            let name = self
                .connection_name
                .as_deref()
                .ok_or(CredentialsError::Missing("CLOUD_SQL_CONNECTION_NAME"))?;
            let dir = self.socket_dir.as_deref().unwrap_or(DEFAULT_SOCKET_DIR);
            let socket_dir = Path::new(dir).join(name);
            url.query_pairs_mut()
                .append_pair("host", &socket_dir.to_string_lossy());
        }
        Ok(DatabaseUrl(url.to_string()))
    }
}

/// Picks the database: `explicit` (`--database`/`DATABASE_URL`) first, then
/// `CLOUD_SQL_CREDENTIALS_SECRET`, then `DB_*` variables, else SQLite under `data_dir`.
pub fn resolve(
    explicit: Option<&str>,
    data_dir: &Path,
    env: impl Fn(&str) -> Option<String>,
) -> Result<DatabaseTarget, CredentialsError> {
    if let Some(url) = explicit.filter(|u| !u.is_empty()) {
        return Ok(DatabaseTarget::Url(DatabaseUrl::new(url)));
    }
    if let Some(secret) = env("CLOUD_SQL_CREDENTIALS_SECRET").filter(|s| !s.trim().is_empty()) {
        let creds = CloudSqlCredentials::from_secret_json(&secret, &env)?;
        return Ok(DatabaseTarget::Url(creds.url()?));
    }
    if let Some(creds) = CloudSqlCredentials::from_env(&env)? {
        return Ok(DatabaseTarget::Url(creds.url()?));
    }
    Ok(DatabaseTarget::Sqlite(data_dir.join(SQLITE_FILE)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn secret_over_tcp() {
        let secret = r#"{"DB_USER":"votes","DB_PASSWORD":"p@ss:/word#1","DB_NAME":"pets","DB_HOST":"10.0.0.5:6543"}"#;
        let creds = CloudSqlCredentials::from_secret_json(secret, env_of(&[])).unwrap();
        let url = creds.url().unwrap();
        assert_eq!(
            url.expose(),
            "postgres://votes:p%40ss%3A%2Fword%231@10.0.0.5:6543/pets"
        );
        assert!(!format!("{creds:?}").contains("p@ss"));
        assert!(!format!("{url:?}").contains("p%40ss"));
        assert!(!url.redacted().contains("ss"));
    }

    #[test]
    fn every_password_in_a_url_is_hidden_from_logs() {
        let url = DatabaseUrl::new(
            "postgres://u:pw-secret@db/x?sslmode=require&sslpassword=ssl-secret&Password=q-secret",
        );
        for shown in [
            url.redacted(),
            format!("{url:?}"),
            DatabaseTarget::Url(url.clone()).describe(),
        ] {
            for secret in ["pw-secret", "ssl-secret", "q-secret"] {
                assert!(!shown.contains(secret), "{secret} in {shown}");
            }
            assert!(shown.contains("sslmode=require"), "{shown}");
        }
    }

    #[test]
    fn secret_over_unix_socket() {
        let secret = r#"{"CLOUD_SQL_CONNECTION_NAME":"proj:us-central1:db","DB_NAME":"postgres","DB_USER":"postgres","DB_PASSWORD":"x"}"#;
        let creds = CloudSqlCredentials::from_secret_json(secret, env_of(&[])).unwrap();
        assert_eq!(
            creds.socket_path().unwrap(),
            PathBuf::from("/cloudsql/proj:us-central1:db/.s.PGSQL.5432")
        );
        let url = creds.url().unwrap();
        let parsed = url::Url::parse(url.expose()).unwrap();
        let host: Vec<_> = parsed.query_pairs().filter(|(k, _)| k == "host").collect();
        assert_eq!(host[0].1, "/cloudsql/proj:us-central1:db");
        // DB_SOCKET_DIR from the environment, as the samples read it.
        let creds =
            CloudSqlCredentials::from_secret_json(secret, env_of(&[("DB_SOCKET_DIR", "/tmp/s")]))
                .unwrap();
        assert_eq!(
            creds.socket_path().unwrap(),
            PathBuf::from("/tmp/s/proj:us-central1:db/.s.PGSQL.5432")
        );
    }

    #[test]
    fn resolution_order() {
        let dir = Path::new("/data");
        assert_eq!(
            resolve(None, dir, env_of(&[])).unwrap(),
            DatabaseTarget::Sqlite(PathBuf::from("/data/vote.sqlite3"))
        );
        let flag = resolve(
            Some("postgres://a@b/c"),
            dir,
            env_of(&[("CLOUD_SQL_CREDENTIALS_SECRET", "{}")]),
        )
        .unwrap();
        assert_eq!(
            flag,
            DatabaseTarget::Url(DatabaseUrl::new("postgres://a@b/c"))
        );
        let vars = resolve(
            None,
            dir,
            env_of(&[("DB_USER", "u"), ("DB_NAME", "n"), ("DB_HOST", "h")]),
        )
        .unwrap();
        assert_eq!(
            vars,
            DatabaseTarget::Url(DatabaseUrl::new("postgres://u@h:5432/n"))
        );
        assert_eq!(
            resolve(
                None,
                dir,
                env_of(&[("CLOUD_SQL_CREDENTIALS_SECRET", "not json")])
            ),
            Err(CredentialsError::NotJson)
        );
        assert_eq!(
            resolve(None, dir, env_of(&[("DB_USER", "u"), ("DB_NAME", "n")])),
            Err(CredentialsError::Missing(
                "DB_HOST or CLOUD_SQL_CONNECTION_NAME"
            ))
        );
    }

    #[test]
    fn ipv6_and_bad_hosts() {
        let mk = |host: &str| CloudSqlCredentials {
            user: "u".into(),
            password: String::new(),
            database: "d".into(),
            host: Some(host.into()),
            connection_name: None,
            socket_dir: None,
        };
        assert_eq!(
            mk("[::1]:5433").url().unwrap().expose(),
            "postgres://u@[::1]:5433/d"
        );
        assert!(mk("h/x").url().is_err());
        assert!(mk("a@h").url().is_err());
    }
}

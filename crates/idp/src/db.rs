//! The emulator's schema. Bearer secrets (codes, refresh and access tokens) are stored as
//! their SHA-256 only.

use gatehouse_store::Migration;

pub const COMPONENT: &str = "idp";

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        description: "keys, accounts, clients, service accounts, codes, tokens, firebase users",
        sqlite: r#"
CREATE TABLE idp_keys (
    ring TEXT NOT NULL, generation INTEGER NOT NULL, kid TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL, signs_from INTEGER NOT NULL,
    pkcs8 BLOB NOT NULL, cert_pem TEXT NOT NULL,
    PRIMARY KEY (ring, generation));
CREATE TABLE idp_accounts (
    sub TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, email_verified INTEGER NOT NULL,
    name TEXT NOT NULL, given_name TEXT, family_name TEXT, picture TEXT, hd TEXT,
    created_at INTEGER NOT NULL);
CREATE TABLE idp_clients (
    client_id TEXT PRIMARY KEY, client_secret TEXT, kind TEXT NOT NULL,
    redirect_uris TEXT NOT NULL, extension_id TEXT, name TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE idp_service_accounts (
    email TEXT PRIMARY KEY, unique_id TEXT NOT NULL, project_id TEXT NOT NULL,
    created_at INTEGER NOT NULL);
CREATE TABLE idp_sa_keys (
    key_id TEXT PRIMARY KEY, email TEXT NOT NULL REFERENCES idp_service_accounts(email),
    spki BLOB NOT NULL, created_at INTEGER NOT NULL);
CREATE TABLE idp_codes (
    code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    sub TEXT NOT NULL, scope TEXT NOT NULL, nonce TEXT, code_challenge TEXT,
    expires_at INTEGER NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE idp_refresh_tokens (
    token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, audience TEXT NOT NULL,
    subject TEXT NOT NULL, scope TEXT NOT NULL, auth_time INTEGER NOT NULL,
    created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE idp_access_tokens (
    token_hash TEXT PRIMARY KEY, subject_kind TEXT NOT NULL, subject TEXT NOT NULL,
    client_id TEXT NOT NULL, scope TEXT NOT NULL, expires_at INTEGER NOT NULL);
CREATE INDEX idp_access_tokens_exp ON idp_access_tokens (expires_at);
CREATE TABLE idp_fb_users (
    project TEXT NOT NULL, uid TEXT NOT NULL, email TEXT, email_verified INTEGER NOT NULL,
    display_name TEXT, photo_url TEXT, password_hash TEXT, google_sub TEXT, google_email TEXT,
    created_at INTEGER NOT NULL, last_login_at INTEGER NOT NULL,
    password_updated_at INTEGER, valid_since INTEGER NOT NULL,
    PRIMARY KEY (project, uid));
CREATE UNIQUE INDEX idp_fb_users_email ON idp_fb_users (project, email);
CREATE UNIQUE INDEX idp_fb_users_google ON idp_fb_users (project, google_sub);
"#,
        postgres: r#"
CREATE TABLE idp_keys (
    ring TEXT NOT NULL, generation BIGINT NOT NULL, kid TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL, signs_from BIGINT NOT NULL,
    pkcs8 BYTEA NOT NULL, cert_pem TEXT NOT NULL,
    PRIMARY KEY (ring, generation));
CREATE TABLE idp_accounts (
    sub TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, email_verified BIGINT NOT NULL,
    name TEXT NOT NULL, given_name TEXT, family_name TEXT, picture TEXT, hd TEXT,
    created_at BIGINT NOT NULL);
CREATE TABLE idp_clients (
    client_id TEXT PRIMARY KEY, client_secret TEXT, kind TEXT NOT NULL,
    redirect_uris TEXT NOT NULL, extension_id TEXT, name TEXT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE TABLE idp_service_accounts (
    email TEXT PRIMARY KEY, unique_id TEXT NOT NULL, project_id TEXT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE TABLE idp_sa_keys (
    key_id TEXT PRIMARY KEY, email TEXT NOT NULL REFERENCES idp_service_accounts(email),
    spki BYTEA NOT NULL, created_at BIGINT NOT NULL);
CREATE TABLE idp_codes (
    code_hash TEXT PRIMARY KEY, client_id TEXT NOT NULL, redirect_uri TEXT NOT NULL,
    sub TEXT NOT NULL, scope TEXT NOT NULL, nonce TEXT, code_challenge TEXT,
    expires_at BIGINT NOT NULL, used BIGINT NOT NULL DEFAULT 0);
CREATE TABLE idp_refresh_tokens (
    token_hash TEXT PRIMARY KEY, kind TEXT NOT NULL, audience TEXT NOT NULL,
    subject TEXT NOT NULL, scope TEXT NOT NULL, auth_time BIGINT NOT NULL,
    created_at BIGINT NOT NULL, revoked BIGINT NOT NULL DEFAULT 0);
CREATE TABLE idp_access_tokens (
    token_hash TEXT PRIMARY KEY, subject_kind TEXT NOT NULL, subject TEXT NOT NULL,
    client_id TEXT NOT NULL, scope TEXT NOT NULL, expires_at BIGINT NOT NULL);
CREATE INDEX idp_access_tokens_exp ON idp_access_tokens (expires_at);
CREATE TABLE idp_fb_users (
    project TEXT NOT NULL, uid TEXT NOT NULL, email TEXT, email_verified BIGINT NOT NULL,
    display_name TEXT, photo_url TEXT, password_hash TEXT, google_sub TEXT, google_email TEXT,
    created_at BIGINT NOT NULL, last_login_at BIGINT NOT NULL,
    password_updated_at BIGINT, valid_since BIGINT NOT NULL,
    PRIMARY KEY (project, uid));
CREATE UNIQUE INDEX idp_fb_users_email ON idp_fb_users (project, email);
CREATE UNIQUE INDEX idp_fb_users_google ON idp_fb_users (project, google_sub);
"#,
    },
    Migration {
        version: 2,
        description: "tokens remember the authorization code they were issued for",
        // A replayed code is a stolen one (RFC 6749 4.1.2): what its first use issued is revoked.
        sqlite: "ALTER TABLE idp_refresh_tokens ADD COLUMN code_hash TEXT;
ALTER TABLE idp_access_tokens ADD COLUMN code_hash TEXT;",
        postgres: "ALTER TABLE idp_refresh_tokens ADD COLUMN IF NOT EXISTS code_hash TEXT;
ALTER TABLE idp_access_tokens ADD COLUMN IF NOT EXISTS code_hash TEXT;",
    },
    Migration {
        version: 3,
        description: "tokens name their grant: refresh-minted access tokens join it too",
        // A grant is one code exchange, named by the code's hash (what migration 2 stored),
        // and holds the refresh token and every access token minted from the code or by
        // that refresh token: revoking any of them revokes it all. A refresh token from
        // before migration 2 knows no code and is a grant of its own.
        sqlite: "ALTER TABLE idp_refresh_tokens RENAME COLUMN code_hash TO grant_hash;
ALTER TABLE idp_access_tokens RENAME COLUMN code_hash TO grant_hash;
UPDATE idp_refresh_tokens SET grant_hash = token_hash WHERE grant_hash IS NULL AND kind = 'google';
CREATE INDEX idp_refresh_tokens_grant ON idp_refresh_tokens (grant_hash);
CREATE INDEX idp_access_tokens_grant ON idp_access_tokens (grant_hash);",
        postgres: "ALTER TABLE idp_refresh_tokens RENAME COLUMN code_hash TO grant_hash;
ALTER TABLE idp_access_tokens RENAME COLUMN code_hash TO grant_hash;
UPDATE idp_refresh_tokens SET grant_hash = token_hash WHERE grant_hash IS NULL AND kind = 'google';
CREATE INDEX idp_refresh_tokens_grant ON idp_refresh_tokens (grant_hash);
CREATE INDEX idp_access_tokens_grant ON idp_access_tokens (grant_hash);",
    },
];

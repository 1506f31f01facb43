// The OpenID Connect implicit flow as chrome.identity.launchWebAuthFlow runs it: building the
// authorization URL, and checking what comes back on the redirect (PROTOCOLS.md, "Sign-in").
//
// Pure functions: no chrome.* and no clock, so node's test runner covers every rule here.

import { base64UrlEncode, decodeJwtPayload } from './jwt.js';

export const SCOPE = 'openid email profile';

/** A sign-in that did not produce a usable ID token; `code` is stable, `message` is for people. */
export class SignInError extends Error {
  constructor(code, message) {
    super(message);
    this.name = 'SignInError';
    this.code = code;
  }
}

/**
 * An unguessable value for `state` or `nonce`: 256 bits from the platform CSPRNG.
 * (The seed's `String(Date.now())` is guessable, which defeats the nonce's purpose.)
 */
export function randomToken() {
  return base64UrlEncode(crypto.getRandomValues(new Uint8Array(32)));
}

/**
 * The authorization request. `nonce` is required by OIDC for the implicit flow and binds the
 * returned token to this request; `state` binds the redirect to it. Refuses to build a request
 * without them rather than sending one that cannot be checked on return.
 */
export function buildAuthUrl({ authEndpoint, clientId, redirectUri, nonce, state, prompt = 'select_account' }) {
  for (const [name, value] of Object.entries({ authEndpoint, clientId, redirectUri, nonce, state })) {
    if (typeof value !== 'string' || value === '') {
      throw new TypeError(`buildAuthUrl: ${name} is required`);
    }
  }
  const url = new URL(authEndpoint);
  url.searchParams.set('client_id', clientId);
  url.searchParams.set('response_type', 'id_token');
  url.searchParams.set('scope', SCOPE);
  url.searchParams.set('redirect_uri', redirectUri);
  url.searchParams.set('nonce', nonce);
  url.searchParams.set('state', state);
  if (prompt) url.searchParams.set('prompt', prompt);
  return url.toString();
}

/**
 * Checks the URL the flow ended on and returns `{ idToken, claims }`, or throws SignInError.
 *
 * `expected` = `{ redirectUri, state, nonce, clientId, nowSeconds }`: what this request sent,
 * and the current time. The order of checks matters: an `error=` answer is reported as such
 * (the user cancelled, the client is not registered, ...); anything else must carry our
 * `state` before its token is even read, and the token must carry our `nonce`.
 */
export function parseAuthResponse(responseUrl, expected) {
  let url;
  try {
    url = new URL(responseUrl);
  } catch {
    throw new SignInError('bad_redirect', 'Sign-in ended on an address that is not a URL.');
  }
  const redirect = new URL(expected.redirectUri);
  if (url.origin !== redirect.origin || url.pathname !== redirect.pathname) {
    throw new SignInError('bad_redirect', `Sign-in ended on ${url.origin}${url.pathname}, not on ${expected.redirectUri}.`);
  }

  // The implicit flow answers in the fragment; a server that rejects the request before
  // looking at response_type may answer in the query instead, so errors are read from both.
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
  const query = url.searchParams;
  // RFC 6749 §3.1: no parameter more than once. Which copy counts would otherwise be ours to
  // guess (URLSearchParams.get takes the first): refuse the answer instead.
  for (const params of [fragment, query]) {
    for (const name of ANSWER_PARAMETERS) {
      if (params.getAll(name).length > 1) {
        throw new SignInError('bad_redirect', `The sign-in answer carries ${name} more than once.`);
      }
    }
  }
  const error = fragment.get('error') ?? query.get('error');
  if (error !== null) {
    // Any page the sign-in window reached can redirect here with error=...: only an answer
    // to this request (our state) may put its own words in front of the user. Otherwise a
    // known code gets our words alone, and any other text is not shown at all.
    const answered = (fragment.get('state') ?? query.get('state')) === expected.state;
    if (!answered) {
      const code = Object.hasOwn(KNOWN_ERRORS, error) ? error : 'sign_in_failed';
      throw new SignInError(code, KNOWN_ERRORS[code] ?? 'Sign-in failed; try again.');
    }
    const description = fragment.get('error_description') ?? query.get('error_description');
    throw new SignInError(error, describeAuthorizationError(error, description));
  }

  if (fragment.get('state') !== expected.state) {
    throw new SignInError('state_mismatch', 'Sign-in answer does not belong to this request (state mismatch); try again.');
  }
  const idToken = fragment.get('id_token');
  if (!idToken) {
    throw new SignInError('missing_id_token', 'Sign-in answered without an ID token.');
  }

  let claims;
  try {
    claims = decodeJwtPayload(idToken);
  } catch (e) {
    throw new SignInError(e.code ?? 'malformed_token', e.message);
  }
  if (claims.nonce !== expected.nonce) {
    throw new SignInError('nonce_mismatch', 'The ID token was not issued for this sign-in (nonce mismatch); try again.');
  }
  // Not a security check (the server checks aud), but a misconfigured client id is far
  // easier to diagnose here than as a 401 from the API later.
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(expected.clientId)) {
    throw new SignInError('wrong_audience', `The ID token is for ${audiences.join(', ')}, not for client ${expected.clientId}.`);
  }
  if (!Number.isFinite(claims.exp)) {
    throw new SignInError('malformed_token', 'The ID token has no expiry (exp).');
  }
  if (claims.exp <= expected.nowSeconds) {
    throw new SignInError('expired', 'The ID token had already expired when it arrived; check this computer\'s clock.');
  }
  return { idToken, claims };
}

/** The parameters of an answer this module reads. */
const ANSWER_PARAMETERS = Object.freeze(['state', 'id_token', 'error', 'error_description']);

/** Words for the OAuth 2.0 / OIDC error codes a user can actually meet. */
const KNOWN_ERRORS = Object.freeze({
    access_denied: 'Sign-in was cancelled or refused.',
    login_required: 'You need to sign in.',
    interaction_required: 'The identity provider needs you to interact with it.',
    consent_required: 'The identity provider needs your consent.',
    account_selection_required: 'Choose an account to continue.',
    invalid_client: 'The identity provider does not know this client id (check Options).',
    unauthorized_client: 'This client may not use this sign-in flow (check the OAuth client type).',
    invalid_request: 'The identity provider refused the sign-in request.',
    redirect_uri_mismatch: 'The identity provider does not accept this extension\'s redirect URI (register it; see Options).',
    unsupported_response_type: 'The identity provider does not support ID tokens in the implicit flow.',
    invalid_scope: 'The identity provider refused the requested scopes.',
    server_error: 'The identity provider failed; try again.',
    temporarily_unavailable: 'The identity provider is temporarily unavailable; try again.',
});

export function describeAuthorizationError(code, description) {
  const base = Object.hasOwn(KNOWN_ERRORS, code) ? KNOWN_ERRORS[code] : `Sign-in failed (${code}).`;
  return description ? `${base} ${description}` : base;
}

/**
 * Words for a rejection of chrome.identity.launchWebAuthFlow itself (no redirect was reached).
 * Chrome reports these as plain messages, so they are matched by text.
 */
export function describeLaunchError(error) {
  const message = String(error?.message ?? error);
  if (/did not approve|user.*(cancel|closed)/i.test(message)) {
    return new SignInError('cancelled', 'Sign-in window was closed before finishing.');
  }
  if (/could not be loaded/i.test(message)) {
    // Chrome says this both when nothing answers and when the first page is an HTTP error,
    // which is how a provider refuses an unknown client id or redirect URI.
    return new SignInError('unreachable', 'The sign-in page could not be loaded: is the identity provider running, is the authorization endpoint in Options right, and does the provider know this client id and redirect URI (Options shows it)?');
  }
  return new SignInError('launch_failed', `Sign-in failed: ${message}`);
}

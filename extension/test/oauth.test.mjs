import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildAuthUrl, describeLaunchError, parseAuthResponse, randomToken, SignInError, SCOPE } from '../lib/oauth.js';
import { fakeJwt } from './helpers.mjs';

const NOW = 1_800_000_000;
const REDIRECT = 'https://ejohimejhdbellhapfccflnfiibkojco.chromiumapp.org/';
const expected = { redirectUri: REDIRECT, state: 'state-123', nonce: 'nonce-456', clientId: 'gatehouse-extension', nowSeconds: NOW };
const goodClaims = { iss: 'https://accounts.google.com', aud: 'gatehouse-extension', nonce: 'nonce-456', email: 'alice@example.com', iat: NOW - 5, exp: NOW + 3600 };

const redirectWith = (params, base = REDIRECT) => `${base}#${new URLSearchParams(params)}`;

function assertSignInError(fn, code) {
  assert.throws(fn, (error) => {
    assert.ok(error instanceof SignInError, `expected SignInError, got ${error}`);
    assert.equal(error.code, code);
    assert.ok(error.message.length > 0);
    return true;
  });
}

test('buildAuthUrl sends every parameter of the implicit ID-token flow', () => {
  const url = new URL(buildAuthUrl({
    authEndpoint: 'http://127.0.0.1:9099/o/oauth2/v2/auth',
    clientId: 'gatehouse-extension',
    redirectUri: REDIRECT,
    nonce: 'n',
    state: 's',
  }));
  assert.equal(url.origin + url.pathname, 'http://127.0.0.1:9099/o/oauth2/v2/auth');
  assert.deepEqual(Object.fromEntries(url.searchParams), {
    client_id: 'gatehouse-extension',
    response_type: 'id_token',
    scope: 'openid email profile',
    redirect_uri: REDIRECT,
    nonce: 'n',
    state: 's',
    prompt: 'select_account',
  });
  assert.equal(SCOPE, 'openid email profile');
});

test('buildAuthUrl keeps the endpoint\'s own query and encodes values', () => {
  const url = new URL(buildAuthUrl({
    authEndpoint: 'https://idp.example/auth?hd=example.com',
    clientId: 'a b&c',
    redirectUri: REDIRECT,
    nonce: 'n',
    state: 's=1&x',
  }));
  assert.equal(url.searchParams.get('hd'), 'example.com');
  assert.equal(url.searchParams.get('client_id'), 'a b&c');
  assert.equal(url.searchParams.get('state'), 's=1&x');
});

test('buildAuthUrl refuses to build a request that could not be checked on return', () => {
  const base = { authEndpoint: 'https://idp.example/auth', clientId: 'c', redirectUri: REDIRECT, nonce: 'n', state: 's' };
  for (const missing of ['nonce', 'state', 'clientId', 'redirectUri', 'authEndpoint']) {
    assert.throws(() => buildAuthUrl({ ...base, [missing]: '' }), TypeError, missing);
    assert.throws(() => buildAuthUrl({ ...base, [missing]: undefined }), TypeError, missing);
  }
});

test('randomToken is 256 bits of URL-safe randomness', () => {
  const seen = new Set(Array.from({ length: 100 }, randomToken));
  assert.equal(seen.size, 100);
  for (const token of seen) assert.match(token, /^[A-Za-z0-9_-]{43}$/);
});

test('parseAuthResponse returns the token and claims of a matching answer', () => {
  const idToken = fakeJwt(goodClaims);
  const { idToken: got, claims } = parseAuthResponse(redirectWith({ id_token: idToken, state: 'state-123' }), expected);
  assert.equal(got, idToken);
  assert.equal(claims.email, 'alice@example.com');
});

test('a token whose aud is a list including the client id is accepted', () => {
  const idToken = fakeJwt({ ...goodClaims, aud: ['other', 'gatehouse-extension'] });
  assert.equal(parseAuthResponse(redirectWith({ id_token: idToken, state: 'state-123' }), expected).idToken, idToken);
});

test('a wrong or missing state is refused before the token is read', () => {
  const idToken = fakeJwt(goodClaims);
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: idToken, state: 'state-999' }), expected), 'state_mismatch');
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: idToken }), expected), 'state_mismatch');
  // Even a garbage token: the state check comes first.
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: 'garbage', state: 'nope' }), expected), 'state_mismatch');
});

test('a token carrying another nonce, or none, is refused', () => {
  for (const nonce of ['nonce-457', '', undefined]) {
    const idToken = fakeJwt({ ...goodClaims, nonce });
    assertSignInError(() => parseAuthResponse(redirectWith({ id_token: idToken, state: 'state-123' }), expected), 'nonce_mismatch');
  }
});

test('a fragment with error= surfaces the error and its description', () => {
  const url = redirectWith({ error: 'access_denied', error_description: 'The user said no', state: 'state-123' });
  assert.throws(() => parseAuthResponse(url, expected), (error) => {
    assert.equal(error.code, 'access_denied');
    assert.match(error.message, /cancelled or refused/);
    assert.match(error.message, /The user said no/);
    return true;
  });
});

test('an error in the query (rejected before the flow began) surfaces too', () => {
  assertSignInError(() => parseAuthResponse(`${REDIRECT}?error=redirect_uri_mismatch`, expected), 'redirect_uri_mismatch');
});

test('an unknown error code is still reported by its code', () => {
  assert.throws(() => parseAuthResponse(redirectWith({ error: 'weird_thing', state: 'state-123' }), expected), /weird_thing/);
});

test('an error answer without our state shows none of its own text', () => {
  // Any page in the sign-in window could redirect to the extension's address with this.
  const phish = 'Your account is locked: call +1 555 0100';
  for (const params of [
    { error: 'access_denied', error_description: phish },
    { error: 'access_denied', error_description: phish, state: 'state-999' },
    { error: phish },
  ]) {
    assert.throws(() => parseAuthResponse(redirectWith(params), expected), (error) => {
      assert.doesNotMatch(error.message, /locked|555/);
      assert.ok(['access_denied', 'sign_in_failed'].includes(error.code), error.code);
      return true;
    });
  }
});

test('an answer without an id_token is refused', () => {
  assertSignInError(() => parseAuthResponse(redirectWith({ state: 'state-123', access_token: 'x' }), expected), 'missing_id_token');
});

test('a malformed id_token is refused', () => {
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: 'not-a-jwt', state: 'state-123' }), expected), 'malformed_token');
});

test('a token for another client is refused', () => {
  const idToken = fakeJwt({ ...goodClaims, aud: 'someone-else' });
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: idToken, state: 'state-123' }), expected), 'wrong_audience');
});

test('a token without exp, or already expired on arrival, is refused', () => {
  const noExp = fakeJwt({ ...goodClaims, exp: undefined });
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: noExp, state: 'state-123' }), expected), 'malformed_token');
  const expired = fakeJwt({ ...goodClaims, exp: NOW });
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: expired, state: 'state-123' }), expected), 'expired');
  const stringExp = fakeJwt({ ...goodClaims, exp: String(NOW + 3600) });
  assertSignInError(() => parseAuthResponse(redirectWith({ id_token: stringExp, state: 'state-123' }), expected), 'malformed_token');
});

test('an answer on another address than the redirect URI is refused', () => {
  const idToken = fakeJwt(goodClaims);
  const params = { id_token: idToken, state: 'state-123' };
  assertSignInError(() => parseAuthResponse(redirectWith(params, 'https://evil.example/'), expected), 'bad_redirect');
  assertSignInError(() => parseAuthResponse(redirectWith(params, `${REDIRECT}other`), expected), 'bad_redirect');
  assertSignInError(() => parseAuthResponse('not a url', expected), 'bad_redirect');
});

test('launchWebAuthFlow failures get words a user can act on', () => {
  assert.equal(describeLaunchError(new Error('The user did not approve access.')).code, 'cancelled');
  const unreachable = describeLaunchError(new Error('Authorization page could not be loaded.'));
  assert.equal(unreachable.code, 'unreachable');
  assert.match(unreachable.message, /identity provider running/);
  const other = describeLaunchError(new Error('Something odd'));
  assert.equal(other.code, 'launch_failed');
  assert.match(other.message, /Something odd/);
});

test('an answer that repeats a parameter is refused (RFC 6749 §3.1: not more than once)', () => {
  const token = fakeJwt(goodClaims);
  const other = fakeJwt({ ...goodClaims, email: 'mallory@example.com' });
  for (const params of [
    [['state', 'state-123'], ['id_token', token], ['id_token', other]],
    [['state', 'state-123'], ['state', 'state-999'], ['id_token', token]],
    [['state', 'state-999'], ['state', 'state-123'], ['id_token', token]],
    [['state', 'state-123'], ['error', 'access_denied'], ['error', 'server_error']],
  ]) {
    assertSignInError(() => parseAuthResponse(redirectWith(params), expected), 'bad_redirect');
  }
  // In the query too, where an error may come.
  assertSignInError(() => parseAuthResponse(`${REDIRECT}?error=access_denied&error=x&state=state-123`, expected), 'bad_redirect');
});

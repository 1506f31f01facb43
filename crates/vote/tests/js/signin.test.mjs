// The voting page's sign-in module (src/static/signin.js) under node, with a stand-in
// sessionStorage and location: how it judges the answer the callback page hands back.
// The real-Chromium run of the whole flow is tests/browser/vote.test.mjs.
//
//   node --test crates/vote/tests/js/        (also run by `cargo test -p gatehouse-vote`)

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';

const storage = new Map();
globalThis.sessionStorage = {
  getItem: (k) => (storage.has(k) ? storage.get(k) : null),
  setItem: (k, v) => { storage.set(k, String(v)); },
  removeItem: (k) => { storage.delete(k); },
};
globalThis.location = new URL('http://127.0.0.1:8081/');

const { SignIn, FRAGMENT_KEY } = await import('../../src/static/signin.js');

const PENDING_KEY = 'gatehouse.vote.pending';
const SESSION_KEY = 'gatehouse.vote.session';
const STATE = 'state-1234';
const NONCE = 'nonce-5678';
const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
const token = (claims) => `${b64({ alg: 'RS256', kid: 'k' })}.${b64({
  iss: 'https://accounts.google.com', aud: 'web-client', sub: '1', email: 'alice@example.com',
  nonce: NONCE, exp: Math.floor(Date.now() / 1000) + 3600, ...claims,
})}.c2ln`;

const config = { authorizationEndpoint: 'http://127.0.0.1:9099/o/oauth2/v2/auth', clientId: 'web-client' };

/** The page after a sign-in request, with `answer` (the callback's fragment) waiting for it. */
function pageWithAnswer(answer) {
  storage.set(PENDING_KEY, JSON.stringify({ state: STATE, nonce: NONCE }));
  storage.set(FRAGMENT_KEY, typeof answer === 'string' ? answer : new URLSearchParams(answer).toString());
  return new SignIn(config);
}

beforeEach(() => storage.clear());

test('an answer with our state and a token with our nonce signs in', async () => {
  const signIn = pageWithAnswer([['state', STATE], ['id_token', token({})]]);
  assert.equal(await signIn.completeRedirect(), true);
  assert.equal(signIn.user.email, 'alice@example.com');
  assert.ok(storage.has(SESSION_KEY));
});

test('a wrong state or nonce is refused', async () => {
  await assert.rejects(pageWithAnswer([['state', 'other'], ['id_token', token({})]]).completeRedirect(), /state/);
  await assert.rejects(pageWithAnswer([['state', STATE], ['id_token', token({ nonce: 'other' })]]).completeRedirect(), /nonce/);
  assert.ok(!storage.has(SESSION_KEY));
});

test('an answer that repeats a parameter is refused (RFC 6749 §3.1: not more than once)', async () => {
  const mallory = token({ email: 'mallory@example.com', sub: '2' });
  for (const answer of [
    [['state', STATE], ['id_token', token({})], ['id_token', mallory]],
    [['state', STATE], ['state', 'other'], ['id_token', token({})]],
    [['state', 'other'], ['state', STATE], ['id_token', token({})]],
    [['state', STATE], ['error', 'access_denied'], ['error', 'server_error']],
  ]) {
    const signIn = pageWithAnswer(answer);
    await assert.rejects(signIn.completeRedirect(), /more than once/, JSON.stringify(answer));
    assert.equal(signIn.user, null);
    assert.ok(!storage.has(SESSION_KEY));
  }
});

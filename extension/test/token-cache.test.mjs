import { test } from 'node:test';
import assert from 'node:assert/strict';
import { cacheEntry, EXPIRY_BUFFER_SECONDS, isUsable } from '../lib/token-cache.js';

const NOW = 1_800_000_000;
const provider = { authEndpoint: 'http://127.0.0.1:9099/o/oauth2/v2/auth', clientId: 'gatehouse-extension' };
const entryExpiringAt = (exp) => cacheEntry('header.payload.sig', { exp, email: 'alice@example.com' }, provider);
const at = (nowSeconds) => ({ nowSeconds, ...provider });

test('the buffer is the seed\'s five minutes', () => {
  assert.equal(EXPIRY_BUFFER_SECONDS, 300);
});

test('a token more than five minutes from expiry is used', () => {
  assert.equal(isUsable(entryExpiringAt(NOW + 3600), at(NOW)), true);
  assert.equal(isUsable(entryExpiringAt(NOW + 301), at(NOW)), true);
});

test('a token within five minutes of expiry is treated as expired', () => {
  assert.equal(isUsable(entryExpiringAt(NOW + 300), at(NOW)), false, 'exactly at the buffer');
  assert.equal(isUsable(entryExpiringAt(NOW + 299), at(NOW)), false);
  assert.equal(isUsable(entryExpiringAt(NOW + 1), at(NOW)), false);
});

test('an expired token is not used', () => {
  assert.equal(isUsable(entryExpiringAt(NOW), at(NOW)), false);
  assert.equal(isUsable(entryExpiringAt(NOW - 1), at(NOW)), false);
});

test('a token from another provider or client is not used (settings changed)', () => {
  const entry = entryExpiringAt(NOW + 3600);
  assert.equal(isUsable(entry, { ...at(NOW), clientId: 'other-client' }), false);
  assert.equal(isUsable(entry, { ...at(NOW), authEndpoint: 'https://accounts.google.com/o/oauth2/v2/auth' }), false);
});

test('nothing, or a damaged entry, is not used', () => {
  assert.equal(isUsable(undefined, at(NOW)), false);
  assert.equal(isUsable(null, at(NOW)), false);
  assert.equal(isUsable({ ...entryExpiringAt(NOW + 3600), idToken: undefined }, at(NOW)), false);
  assert.equal(isUsable({ ...entryExpiringAt(NOW + 3600), exp: String(NOW + 3600) }, at(NOW)), false);
});

test('the cache entry keeps the token, its expiry, email and provider, and nothing else', () => {
  const entry = cacheEntry('t', { exp: 5, email: 'a@b.c', sub: '123', name: 'A' }, { ...provider, apiUrl: 'x' });
  assert.deepEqual(entry, { idToken: 't', exp: 5, email: 'a@b.c', ...provider });
  assert.equal(cacheEntry('t', { exp: 5 }, provider).email, null);
});

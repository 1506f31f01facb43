import { test } from 'node:test';
import assert from 'node:assert/strict';
import { bearerChallengeReason, bodyReason, describeApiResponse, describeNetworkError, parseBody } from '../lib/api-result.js';

test('a 2xx answer is shown as the JSON it is', () => {
  const body = { ok: true, email: 'alice@example.com' };
  const result = describeApiResponse({ status: 200, body });
  assert.equal(result.ok, true);
  assert.equal(result.title, 'OK (200)');
  assert.deepEqual(result.body, body);
  assert.equal(result.signInAgain, false);
});

test('401 says the token was not accepted, gives the reason, and drops the token', () => {
  const result = describeApiResponse({ status: 401, body: { error: 'expired', error_description: 'token expired' } });
  assert.equal(result.ok, false);
  assert.match(result.title, /401/);
  assert.match(result.detail, /Sign in again/);
  assert.match(result.detail, /expired: token expired/);
  assert.equal(result.signInAgain, true);
});

test('401 without a JSON body takes its reason from WWW-Authenticate', () => {
  const result = describeApiResponse({
    status: 401,
    body: '',
    wwwAuthenticate: 'Bearer error="invalid_token", error_description="the token has expired"',
  });
  assert.match(result.detail, /the token has expired/);
});

test('403 says the account is signed in but not allowed, and keeps the token', () => {
  const result = describeApiResponse({ status: 403, body: { error: 'permission_denied' } });
  assert.equal(result.ok, false);
  assert.match(result.title, /Forbidden \(403\)/);
  assert.match(result.detail, /not allowed/);
  assert.match(result.detail, /permission_denied/);
  assert.equal(result.signInAgain, false);
});

test('other statuses are errors named by their status', () => {
  assert.match(describeApiResponse({ status: 500, body: 'boom' }).title, /Server error \(500\)/);
  assert.match(describeApiResponse({ status: 404, body: null }).title, /Request refused \(404\)/);
  assert.equal(describeApiResponse({ status: 302, body: null }).ok, false);
});

test('a network failure names the origin and what to check', () => {
  const result = describeNetworkError('http://127.0.0.1:8080/run-secure-endpoint', new TypeError('Failed to fetch'));
  assert.equal(result.ok, false);
  assert.equal(result.title, 'Network error');
  assert.match(result.detail, /http:\/\/127\.0\.0\.1:8080/);
  assert.match(result.detail, /gatehouse up/);
  const timeout = describeNetworkError('https://x.example/a', Object.assign(new Error('t'), { name: 'TimeoutError' }));
  assert.equal(timeout.title, 'Timed out');
});

test('reasons are read from the usual error body shapes', () => {
  assert.equal(bodyReason({ error: { code: 403, message: 'Forbidden', status: 'PERMISSION_DENIED' } }), 'Forbidden');
  assert.equal(bodyReason({ code: 'wrong_audience', message: 'aud is x' }), 'wrong_audience: aud is x');
  assert.equal(bodyReason({ error: 'invalid_token', error_description: 'invalid_token' }), 'invalid_token');
  assert.equal(bodyReason('text'), null);
  assert.equal(bodyReason({ ok: false }), null);
  assert.equal(bearerChallengeReason('Bearer error="invalid_token"'), 'invalid_token');
  assert.equal(bearerChallengeReason('Bearer realm="x", error_description="say \\"hi\\""'), 'say "hi"');
  assert.equal(bearerChallengeReason(null), null);
});

test('bodies are parsed as JSON when they are JSON', () => {
  assert.deepEqual(parseBody('{"a":1}', 'application/json; charset=utf-8'), { a: 1 });
  assert.deepEqual(parseBody('{"a":1}', 'text/plain'), { a: 1 });
  assert.equal(parseBody('{oops', 'application/json'), '{oops');
  assert.equal(parseBody('hello', 'text/plain'), 'hello');
});

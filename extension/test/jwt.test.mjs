import { test } from 'node:test';
import assert from 'node:assert/strict';
import { base64UrlDecode, base64UrlEncode, decodeJwtPayload, MalformedTokenError } from '../lib/jwt.js';
import { b64url, fakeJwt } from './helpers.mjs';

test('decodes the payload of a compact JWS', () => {
  const claims = { iss: 'https://accounts.google.com', aud: 'x', exp: 1700000000, email: 'alice@example.com' };
  assert.deepEqual(decodeJwtPayload(fakeJwt(claims)), claims);
});

test('decodes UTF-8 claims (a bare atob would mangle them) and base64url characters', () => {
  // "Zoë ~~~>>>???" encodes to base64 with "+" and "/" in standard form, i.e. "-" and "_" here.
  const claims = { name: 'Zoë ~~~>>>???', email: 'zoë@example.com' };
  const segment = b64url(claims);
  assert.match(segment, /[-_]/, 'the fixture must exercise the URL-safe alphabet');
  assert.deepEqual(decodeJwtPayload(`e30.${segment}.sig`), claims);
});

test('decodes payloads whose length needs 1 or 2 padding characters', () => {
  for (const email of ['a@b.c', 'ab@b.c', 'abc@b.c']) {
    assert.equal(decodeJwtPayload(fakeJwt({ email })).email, email);
  }
});

test('refuses what is not a three-segment JWS with a JSON object payload', () => {
  const bad = [
    undefined,
    '',
    'only.two',
    'a.b.c.d',
    `e30.${b64url('not json')}.sig`,
    `e30.${b64url('[1,2]')}.sig`,
    `e30.${b64url('null')}.sig`,
    'e30.eyJ!!!.sig',
    `e30.${Buffer.from([0xff, 0xfe]).toString('base64url')}.sig`,
  ];
  for (const token of bad) {
    assert.throws(() => decodeJwtPayload(token), MalformedTokenError, `accepted ${JSON.stringify(token)}`);
  }
});

test('base64url round-trips bytes and refuses the standard alphabet', () => {
  const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
  const text = base64UrlEncode(bytes);
  assert.doesNotMatch(text, /[+/=]/);
  assert.deepEqual(base64UrlDecode(text), bytes);
  assert.throws(() => base64UrlDecode('ab+/'), MalformedTokenError);
  assert.throws(() => base64UrlDecode('abcde'), MalformedTokenError);
});

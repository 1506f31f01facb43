// The service worker (background.js) under node, with a stand-in `chrome` and `fetch`: what it
// keeps in storage and what it answers to messages. The real-Chromium run of the same worker is
// tests/browser/extension.test.mjs; this covers the orderings a browser test cannot pin down
// (an answer arriving after the cache changed) and checks that need no window.

import { test, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { fakeJwt } from './helpers.mjs';

const EXTENSION_ID = 'ejohimejhdbellhapfccflnfiibkojco';
const REDIRECT_URI = `https://${EXTENSION_ID}.chromiumapp.org/`;
const CACHE_KEY = 'idTokenCache';
const OWN_PAGE = { id: EXTENSION_ID, url: `chrome-extension://${EXTENSION_ID}/popup.html`, origin: `chrome-extension://${EXTENSION_ID}` };

/** chrome.storage.{local,session} as plain maps, with the API's shapes. */
function fakeArea() {
  const data = new Map();
  const keys = (k) => (k === null || k === undefined ? [...data.keys()] : Array.isArray(k) ? k : [k]);
  return {
    data,
    async get(k) {
      return Object.fromEntries(keys(k).filter((key) => data.has(key)).map((key) => [key, structuredClone(data.get(key))]));
    },
    async set(items) {
      for (const [key, value] of Object.entries(items)) data.set(key, structuredClone(value));
    },
    async remove(k) {
      for (const key of keys(k)) data.delete(key);
    },
  };
}

const nowSeconds = () => Math.floor(Date.now() / 1000);
const session = fakeArea();
const local = fakeArea();
let listener = null;
// What the stand-in identity provider and API do next; reset before each test.
let idp;
let api;

globalThis.chrome = {
  runtime: { id: EXTENSION_ID, getURL: (path) => `chrome-extension://${EXTENSION_ID}/${path.replace(/^\//, '')}`, onMessage: { addListener: (fn) => { listener = fn; } } },
  storage: { session, local },
  identity: {
    getRedirectURL: () => REDIRECT_URI,
    async launchWebAuthFlow({ url }) {
      const request = new URL(url).searchParams;
      idp.requests.push(request);
      const email = idp.email;
      const token = fakeJwt({
        iss: 'https://accounts.google.com', aud: request.get('client_id'), sub: email, email,
        nonce: request.get('nonce'), iat: nowSeconds(), exp: nowSeconds() + 3600,
      });
      return `${REDIRECT_URI}#${new URLSearchParams({ state: request.get('state'), id_token: token })}`;
    },
  },
};
globalThis.fetch = async (url, init) => {
  api.calls.push({ url, init });
  const answer = await api.answer(init);
  return new Response(JSON.stringify(answer.body ?? {}), {
    status: answer.status, headers: { 'Content-Type': 'application/json', ...(answer.headers ?? {}) },
  });
};

await import('../background.js');

/** Sends `message` as `sender` would; resolves to the answer, or to 'no answer' when ignored. */
function send(message, sender = OWN_PAGE) {
  return new Promise((resolve) => {
    const async = listener(message, sender, resolve);
    if (async !== true) resolve('no answer');
  });
}

const entry = () => session.data.get(CACHE_KEY) ?? null;

beforeEach(() => {
  session.data.clear();
  local.data.clear();
  idp = { email: 'alice@example.com', requests: [] };
  api = { calls: [], answer: async () => ({ status: 200, body: { ok: true } }) };
});

test('signing in caches the token in session storage only', async () => {
  const answer = await send({ type: 'signIn' });
  assert.equal(answer.ok, true, JSON.stringify(answer));
  assert.equal(answer.email, 'alice@example.com');
  assert.equal(entry().email, 'alice@example.com');
  assert.deepEqual([...local.data.keys()], []);
});

test('a token the worker will no longer send is removed, not kept until sign-out', async () => {
  await send({ type: 'signIn' });
  // Inside the 5-minute buffer: never sent again (a call signs in anew), though a server
  // would still take it for up to five minutes.
  session.data.get(CACHE_KEY).exp = nowSeconds() + 240;
  assert.equal((await send({ type: 'status' })).signedIn, false);
  assert.equal(entry(), null, 'a token inside the buffer stays in storage');

  await send({ type: 'signIn' });
  session.data.get(CACHE_KEY).exp = nowSeconds() - 10;
  await send({ type: 'status' });
  assert.equal(entry(), null, 'an expired token stays in storage');

  // Another client id in Options retires the token (README): it goes too.
  await send({ type: 'signIn' });
  local.data.set('settings', { clientId: 'another-client' });
  assert.equal((await send({ type: 'status' })).signedIn, false);
  assert.equal(entry(), null, 'a retired token stays in storage');
});

test('a usable token stays', async () => {
  await send({ type: 'signIn' });
  const before = entry();
  assert.equal((await send({ type: 'status' })).signedIn, true);
  assert.deepEqual(entry(), before);
});

test('a 401 drops the token it refused, not one a sign-in cached while the call was out', async () => {
  await send({ type: 'signIn' });
  let answer401;
  api.answer = () => new Promise((resolve) => {
    answer401 = () => resolve({ status: 401, headers: { 'WWW-Authenticate': 'Bearer error="invalid_token"' } });
  });
  const call = send({ type: 'callApi', url: 'https://example.com/' });
  while (!answer401) await new Promise((r) => setTimeout(r, 1));
  // Meanwhile: sign out, and sign in as someone else.
  await send({ type: 'signOut' });
  idp.email = 'bob@example.com';
  await send({ type: 'signIn' });
  answer401();
  const { result } = await call;
  assert.equal(result.status, 401);
  assert.equal(entry()?.email, 'bob@example.com', 'the new sign-in was thrown away by the old call\'s 401');
});

test('only this extension\'s own pages are answered; a malformed message is refused', async () => {
  // What a content script's sender looks like (the extension declares none, and may not
  // inject any, but a page the worker serves must be one of its own).
  const contentScript = { id: EXTENSION_ID, url: 'https://evil.example/', origin: 'https://evil.example', tab: { id: 7 } };
  assert.equal(await send({ type: 'status' }, contentScript), 'no answer');
  assert.equal(await send({ type: 'signIn' }, contentScript), 'no answer');
  assert.equal(idp.requests.length, 0);
  assert.equal(await send({ type: 'status' }, { ...OWN_PAGE, id: 'another-extension-id' }), 'no answer');
  assert.equal(await send({ type: 'status' }, { id: EXTENSION_ID }), 'no answer', 'a sender without a URL');
  assert.equal((await send({ type: 'status' })).ok, true);

  // callApi's URL is a string, or no token is spent on it.
  await send({ type: 'signIn' });
  for (const url of [undefined, 42, { href: 'x' }]) {
    const answer = await send({ type: 'callApi', url });
    assert.equal(answer.ok, false, JSON.stringify(answer));
    assert.equal(answer.error.code, 'bad_request');
  }
  assert.equal(api.calls.length, 0);
});

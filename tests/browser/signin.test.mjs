// The emulator's sign-in page in real Chromium (playwright-core): choose an account and land
// on the redirect URI with an id_token whose nonce matches; add a new account through "use
// another account"; a bad redirect_uri gets an error page, not a redirect.
//
//   cd tests && GATEHOUSE_BIN=../target/debug/gatehouse node --test browser/signin.test.mjs

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createServer } from 'node:http';
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { decodeClaims, startIdp } from '../interop/idp_support.mjs';

const CHROMIUM = process.env.GATEHOUSE_CHROMIUM || '/usr/bin/chromium';
const CLIENT = 'gatehouse-web.apps.googleusercontent.com';

let idp;
let browser;
let callback;
let callbackBase;

before(async () => {
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}`);
  idp = await startIdp();
  // The app's redirect URI: a loopback page (the default web client accepts any loopback port).
  callback = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end('<!doctype html><title>callback</title><p id="done">signed in</p>');
  });
  await new Promise((r) => callback.listen(0, '127.0.0.1', r));
  callbackBase = `http://127.0.0.1:${callback.address().port}`;
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--no-first-run'],
  });
});

after(async () => {
  await browser?.close();
  callback?.close();
  await idp?.stop();
});

function authUrl({ redirectUri = `${callbackBase}/cb`, nonce, state }) {
  const q = new URLSearchParams({
    client_id: CLIENT,
    redirect_uri: redirectUri,
    response_type: 'id_token',
    scope: 'openid email profile',
    nonce,
    state,
  });
  return `${idp.base}/o/oauth2/v2/auth?${q}`;
}

function fragment(url) {
  return new URLSearchParams(new URL(url).hash.slice(1));
}

test('choose an account: redirected with an id_token carrying our nonce', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const nonce = `n-${Date.now()}`;
  await page.goto(authUrl({ nonce, state: 'xyz' }));
  assert.match(await page.title(), /Sign in/);
  await page.click('button[data-email="alice@example.com"]');
  await page.waitForURL(`${callbackBase}/cb#**`);
  const params = fragment(page.url());
  assert.equal(params.get('state'), 'xyz');
  const claims = decodeClaims(params.get('id_token'));
  assert.equal(claims.nonce, nonce);
  assert.equal(claims.email, 'alice@example.com');
  assert.equal(claims.aud, CLIENT);
  assert.equal(claims.iss, 'https://accounts.google.com');
  assert.equal(await page.textContent('#done'), 'signed in');
  await context.close();
});

test('use another account adds it and signs it in', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const email = `new${Date.now()}@example.com`;
  await page.goto(authUrl({ nonce: 'n2', state: 's2' }));
  await page.click('summary');
  await page.fill('#new_email', email);
  await page.fill('#new_name', 'New Person');
  await page.click('#add-account button[type=submit]');
  await page.waitForURL(`${callbackBase}/cb#**`);
  const claims = decodeClaims(fragment(page.url()).get('id_token'));
  assert.equal(claims.email, email);
  assert.equal(claims.name, 'New Person');
  assert.equal(claims.nonce, 'n2');
  // The new account is now on the chooser.
  await page.goto(authUrl({ nonce: 'n3', state: 's3' }));
  assert.ok(await page.isVisible(`button[data-email="${email}"]`));
  await context.close();
});

test('a bad redirect_uri gets an error page, never a redirect', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const target = authUrl({ redirectUri: 'https://evil.example/cb', nonce: 'n', state: 's' });
  const response = await page.goto(target);
  assert.equal(response.status(), 400);
  assert.equal(page.url(), target);
  assert.match(await page.textContent('#error'), /redirect_uri_mismatch/);
  await context.close();
});

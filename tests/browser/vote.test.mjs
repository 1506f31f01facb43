// The voting app (seed 001) in real Chromium against `gatehouse up`: open the page, sign in
// as a demo user on the emulator's page (popup), vote, see the count rise, sign out.
//
//   cd tests && GATEHOUSE_BIN=../target/debug/gatehouse node --test browser/vote.test.mjs
//
// Runs `gatehouse up` with a temporary --data directory and free ports, so it can run
// beside a developer's own `gatehouse up`. Saves target/vote-browser.png.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { logChild } from './logs.mjs';

const here = fileURLToPath(new URL('.', import.meta.url));
const CHROMIUM = process.env.GATEHOUSE_CHROMIUM || '/usr/bin/chromium';
const GATEHOUSE_BIN = process.env.GATEHOUSE_BIN || resolve(here, '../../target/debug/gatehouse');
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : resolve(here, '../../target');

const cleanups = [];
after(async () => {
  while (cleanups.length) await cleanups.pop()().catch(() => {});
});

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

function startUp(args) {
  return startGatehouse(['up', ...args]);
}

function startGatehouse(args) {
  const child = spawn(GATEHOUSE_BIN, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  logChild(child, `browser-${args[0]}`);
  const output = [];
  child.stdout.on('data', (d) => output.push(d));
  child.stderr.on('data', (d) => output.push(d));
  const exited = new Promise((r) => child.once('exit', (code, signal) => r({ code, signal })));
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(timer);
  });
  return { child, exited, output: () => Buffer.concat(output).toString('utf8').slice(-6000) };
}

async function waitReady(proc, urls, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  let exited = null;
  proc.exited.then((status) => { exited = status; });
  for (const url of urls) {
    for (;;) {
      if (exited) assert.fail(`gatehouse up exited (${JSON.stringify(exited)}):\n${proc.output()}`);
      if (await fetch(url).then((r) => r.ok, () => false)) break;
      if (Date.now() > deadline) assert.fail(`${url} did not answer 200 within ${timeoutMs} ms:\n${proc.output()}`);
      await new Promise((r) => setTimeout(r, 250));
    }
  }
}

test('gatehouse up: sign in on the emulator, vote, see the count rise, sign out', { timeout: 180_000 }, async () => {
  assert.ok(existsSync(GATEHOUSE_BIN), `${GATEHOUSE_BIN} is missing: cargo build --bin gatehouse`);
  assert.ok(existsSync(CHROMIUM), `no Chromium at ${CHROMIUM}`);
  const data = mkdtempSync(join(tmpdir(), 'gatehouse-vote-browser-'));
  cleanups.push(async () => rmSync(data, { recursive: true, force: true }));
  const [gw, idp, caller, other] = [await freePort(), await freePort(), await freePort(), await freePort()];
  const gateway = `http://127.0.0.1:${gw}`;
  const emulator = `http://127.0.0.1:${idp}`;
  const up = startUp([
    '--data', data,
    '--listen', `127.0.0.1:${gw}`,
    '--idp-listen', `127.0.0.1:${idp}`,
    '--caller-metadata', `127.0.0.1:${caller}`,
    '--other-metadata', `127.0.0.1:${other}`,
  ]);
  await waitReady(up, [`${emulator}/.well-known/openid-configuration`, `${gateway}/_gatehouse/healthz`, `${gateway}/healthz`]);
  assert.match(up.output(), /Gatehouse is up/);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: process.env.GATEHOUSE_BROWSER_HEADFUL !== '1',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  cleanups.push(() => browser.close());
  const context = await browser.newContext();
  const page = await context.newPage();
  const dialogs = [];
  page.on('dialog', async (dialog) => {
    dialogs.push(dialog.message());
    await dialog.accept();
  });
  const failedRequests = [];
  page.on('requestfailed', (r) => failedRequests.push(r.url()));
  // Nothing may come from anywhere but the gateway and the emulator (no CDN).
  const origins = new Set();
  const urls = [];
  context.on('request', (r) => {
    origins.add(new URL(r.url()).origin);
    urls.push(r.url());
  });

  await page.goto(`${gateway}/`);
  await page.getByText('CATS v DOGS', { exact: true }).waitFor();
  await page.locator('#signed-out').filter({ hasText: 'You are signed out' }).waitFor();
  assert.equal(await page.locator('#cats-count').textContent(), '0');
  assert.equal(await page.locator('#leader').textContent(), 'CATS and DOGS are evenly matched!');

  // Signed out, a vote is refused in the page itself, as the seed's client does.
  await page.getByRole('button', { name: 'Vote for CATS' }).click();
  await waitFor(() => dialogs.includes('User not signed in.'), 'the signed-out alert');

  // Sign in through the emulator's page in a popup.
  const popupPromise = page.waitForEvent('popup');
  await page.getByRole('button', { name: 'Sign In with Google' }).click();
  const popup = await popupPromise;
  await popup.waitForLoadState();
  assert.ok(popup.url().startsWith(`${emulator}/o/oauth2/v2/auth`), popup.url());
  const account = popup.getByText('alice@example.com').first();
  await account.waitFor({ timeout: 15_000 }).catch(async () => {
    assert.fail(`no alice@example.com on ${popup.url()}:\n${(await popup.locator('body').innerText()).slice(0, 2000)}`);
  });
  await account.click();
  await page.locator('#user').filter({ hasText: 'Signed in as alice@example.com' }).waitFor({ timeout: 20_000 });
  assert.ok(await page.locator('#signed-out').isHidden());
  assert.ok(await page.getByRole('button', { name: 'Sign Out' }).isVisible());

  // Vote; the server's answer is alerted and the count rises without a reload.
  await page.getByRole('button', { name: 'Vote for CATS' }).click();
  await waitFor(() => dialogs.some((m) => /^Vote successfully cast for 'CATS' at time .+!$/.test(m)), `the success alert (saw ${JSON.stringify(dialogs)})`);
  await page.locator('#cats-count').filter({ hasText: /^1$/ }).waitFor();
  await page.locator('#leader').filter({ hasText: 'CATS are winning by 1 vote' }).waitFor();
  await page.locator('#recent li').filter({ hasText: "A vote for 'CATS' was cast at" }).first().waitFor();
  await page.getByRole('button', { name: 'Vote for DOGS' }).click();
  await page.locator('#dogs-count').filter({ hasText: /^1$/ }).waitFor();
  await page.locator('#leader').filter({ hasText: 'CATS and DOGS are evenly matched!' }).waitFor();

  // The vote is on the server, with alice's uid.
  const tally = await (await fetch(`${gateway}/`, { headers: { Accept: 'application/json' } })).json();
  assert.equal(tally.cats, 1);
  assert.equal(tally.dogs, 1);
  assert.equal(tally.recent[0].candidate, 'DOGS');


  // Within 5 minutes of expiry, the next vote first renews the token silently
  // (prompt=none + login_hint in a popup that closes by itself), then votes.
  const tokenBefore = await page.evaluate(() => JSON.parse(sessionStorage.getItem('gatehouse.vote.session')).idToken);
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('gatehouse.vote.session'));
    s.exp = Math.floor(Date.now() / 1000) + 240;
    sessionStorage.setItem('gatehouse.vote.session', JSON.stringify(s));
  });
  await page.reload();
  await page.locator('#user').filter({ hasText: 'alice@example.com' }).waitFor();
  const renewal = page.waitForEvent('popup');
  await page.getByRole('button', { name: 'Vote for CATS' }).click();
  await renewal;
  await waitFor(() => urls.some((u) => u.includes('prompt=none')), 'the prompt=none request');
  const renewUrl = new URL(urls.find((u) => u.includes('prompt=none')));
  assert.equal(renewUrl.searchParams.get('login_hint'), 'alice@example.com');
  await page.locator('#cats-count').filter({ hasText: /^2$/ }).waitFor({ timeout: 20_000 });
  const renewed = await page.evaluate(() => JSON.parse(sessionStorage.getItem('gatehouse.vote.session')));
  assert.notEqual(renewed.idToken, tokenBefore, 'a fresh token');
  assert.ok(renewed.exp - Math.floor(Date.now() / 1000) > 3000);
  await page.getByRole('button', { name: 'Vote for DOGS' }).click();
  await page.locator('#dogs-count').filter({ hasText: /^2$/ }).waitFor();

  mkdirSync(TARGET, { recursive: true });
  await page.screenshot({ path: join(TARGET, 'vote-browser.png'), fullPage: true });

  // A reload keeps the session (sessionStorage) and shows the counts server-rendered.
  await page.reload();
  await page.locator('#user').filter({ hasText: 'alice@example.com' }).waitFor();
  assert.equal(await page.locator('#cats-count').textContent(), '2');

  // Sign out: the message comes back, and voting is refused again.
  await page.getByRole('button', { name: 'Sign Out' }).click();
  await page.locator('#signed-out').filter({ hasText: 'You are signed out' }).waitFor();
  assert.ok(await page.getByRole('button', { name: 'Sign In with Google' }).isVisible());
  const before = dialogs.length;
  await page.getByRole('button', { name: 'Vote for DOGS' }).click();
  await waitFor(() => dialogs.length > before && dialogs.at(-1) === 'User not signed in.', 'the signed-out alert after sign-out');

  for (const origin of origins) {
    assert.ok([gateway, emulator].includes(origin), `request to ${origin}`);
  }
  assert.deepEqual(failedRequests, []);
});

test('gatehouse vote in Firebase mode: the Google token is traded for a Firebase session, renewed without a window', { timeout: 180_000 }, async () => {
  assert.ok(existsSync(GATEHOUSE_BIN), `${GATEHOUSE_BIN} is missing: cargo build --bin gatehouse`);
  const data = mkdtempSync(join(tmpdir(), 'gatehouse-vote-firebase-'));
  cleanups.push(async () => rmSync(data, { recursive: true, force: true }));
  const [idpPort, votePort] = [await freePort(), await freePort()];
  const emulator = `http://127.0.0.1:${idpPort}`;
  const app = `http://127.0.0.1:${votePort}`;
  const idp = startGatehouse(['idp', '--listen', `127.0.0.1:${idpPort}`, '--data', join(data, 'idp')]);
  await waitReady(idp, [`${emulator}/.well-known/openid-configuration`]);
  const vote = startGatehouse([
    'vote', '--listen', `127.0.0.1:${votePort}`, '--data', join(data, 'vote'), '--idp', emulator,
    '--firebase-project', 'demo-project', '--firebase-api-key', 'demo-api-key',
  ]);
  await waitReady(vote, [`${app}/healthz`]);

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: process.env.GATEHOUSE_BROWSER_HEADFUL !== '1',
    args: ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  cleanups.push(() => browser.close());
  const page = await browser.newPage();
  const dialogs = [];
  page.on('dialog', async (d) => { dialogs.push(d.message()); await d.accept(); });
  const popups = [];
  page.on('popup', (p) => popups.push(p));
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(`${app}/`);
  const popupPromise = page.waitForEvent('popup');
  await page.getByRole('button', { name: 'Sign In with Google' }).click();
  const popup = await popupPromise;
  await popup.getByText('bob@example.com').first().click();
  await page.locator('#user').filter({ hasText: 'Signed in as bob@example.com' }).waitFor({ timeout: 20_000 });
  const session = async () => page.evaluate(() => JSON.parse(sessionStorage.getItem('gatehouse.vote.session')));
  const first = await session();
  const claims = (t) => JSON.parse(Buffer.from(t.split('.')[1], 'base64url').toString('utf8'));
  assert.equal(claims(first.idToken).iss, 'https://securetoken.google.com/demo-project');
  assert.equal(claims(first.idToken).aud, 'demo-project');
  assert.ok(first.refreshToken, 'a refresh token is kept');

  await page.getByRole('button', { name: 'Vote for DOGS' }).click();
  await page.locator('#dogs-count').filter({ hasText: /^1$/ }).waitFor();
  assert.match(dialogs.at(-1), /^Vote successfully cast for 'DOGS'/);

  // Make the token look 4 minutes from expiry: the next vote renews it with the refresh
  // token, and no window opens.
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('gatehouse.vote.session'));
    s.exp = Math.floor(Date.now() / 1000) + 240;
    sessionStorage.setItem('gatehouse.vote.session', JSON.stringify(s));
  });
  await page.reload();
  await page.locator('#user').filter({ hasText: 'bob@example.com' }).waitFor();
  const popupsBefore = popups.length;
  await page.getByRole('button', { name: 'Vote for CATS' }).click();
  await page.locator('#cats-count').filter({ hasText: /^1$/ }).waitFor();
  assert.match(dialogs.at(-1), /^Vote successfully cast for 'CATS'/);
  assert.ok(requests.some((u) => u.startsWith(`${emulator}/securetoken.googleapis.com/v1/token?key=demo-api-key`)), 'renewed at securetoken /v1/token');
  const second = await session();
  // (Within the same second the emulator signs identical claims, so compare lifetimes.)
  assert.ok(second.exp - Math.floor(Date.now() / 1000) > 3000, `renewed token lives an hour: ${second.exp}`);
  assert.equal(claims(second.idToken).sub, claims(first.idToken).sub, 'same Firebase uid');
  assert.equal(popups.length, popupsBefore, 'no sign-in window for a renewal');
});

async function waitFor(predicate, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

// The service worker: owns sign-in, the token cache and the API call, so they survive the popup
// closing (it closes as soon as the sign-in window takes focus).
//
// The popup and options page talk to it with chrome.runtime messages ({ type: ... }); every
// answer is `{ ok: true, ... }` or `{ ok: false, error: { code, message } }`, because Error
// objects do not survive message passing.

import { parseAuthResponse, buildAuthUrl, randomToken, describeLaunchError, SignInError } from './lib/oauth.js';
import { cacheEntry, isUsable, TOKEN_CACHE_KEY } from './lib/token-cache.js';
import { SETTINGS_KEY, validateSettings, withDefaults } from './lib/settings.js';
import { describeApiResponse, describeNetworkError, parseBody } from './lib/api-result.js';

// The last API result, so a popup reopened after a sign-in window shows what happened.
const LAST_RESULT_KEY = 'lastResult';
const API_TIMEOUT_MS = 15_000;

// The token lives in storage.session: memory only, gone when the browser closes, and (by
// default) out of reach of content scripts. It is the only credential the extension holds.
const tokenStore = chrome.storage.session;

const nowSeconds = () => Math.floor(Date.now() / 1000);

async function readSettings() {
  const { [SETTINGS_KEY]: stored } = await chrome.storage.local.get(SETTINGS_KEY);
  return withDefaults(stored);
}

// The settings a sign-in or a call may use: checked here as well as on the options page, as
// the worker is what sends the token, and storage.local is not only the options page's to
// write.
async function loadSettings() {
  const { settings, errors } = validateSettings(await readSettings());
  const [problem] = Object.values(errors);
  if (problem) throw new SignInError('bad_settings', `${problem} Fix it in Options.`);
  return settings;
}

// Reads and changes of the cached token run one at a time, each judging the entry it finds
// then: a sign-in that lands while another step was reading must not be undone by that step.
let cacheQueue = Promise.resolve();
function withCache(step) {
  const run = cacheQueue.then(step);
  cacheQueue = run.catch(() => {});
  return run;
}

/**
 * The cached token while it may be sent; a token that may not (expired, inside the 5-minute
 * buffer, or from another provider or client than the settings name) is removed, not kept
 * in storage until sign-out: the worker never sends it again, and a server may still accept
 * it for minutes.
 */
function usableCachedToken(settings) {
  return withCache(async () => {
    const { [TOKEN_CACHE_KEY]: entry } = await tokenStore.get(TOKEN_CACHE_KEY);
    if (entry === undefined) return null;
    if (isUsable(entry, { nowSeconds: nowSeconds(), ...settings })) return entry;
    await tokenStore.remove(TOKEN_CACHE_KEY);
    return null;
  });
}

// One sign-in at a time: a second click while the window is open joins the first flow
// instead of opening another window with its own nonce. Only for the same provider and
// client: after the settings change, the flow under way signs in to something else, and its
// token must not go to the new API URL.
let signInInFlight = null; // { key, promise }

function signIn(settings) {
  const key = JSON.stringify([settings.authEndpoint, settings.clientId]);
  if (signInInFlight?.key === key) return signInInFlight.promise;
  const promise = runSignIn(settings).finally(() => {
    if (signInInFlight?.promise === promise) signInInFlight = null;
  });
  signInInFlight = { key, promise };
  return promise;
}

async function runSignIn(settings) {
  // The nonce and state exist only in this call's scope: nothing an attacker could read or
  // preset in storage, and a response to an older request can never match them.
  const redirectUri = chrome.identity.getRedirectURL();
  const nonce = randomToken();
  const state = randomToken();
  const url = buildAuthUrl({ ...settings, redirectUri, nonce, state });
  let responseUrl;
  try {
    responseUrl = await chrome.identity.launchWebAuthFlow({ url, interactive: true });
  } catch (error) {
    throw describeLaunchError(error);
  }
  if (!responseUrl) throw new SignInError('cancelled', 'Sign-in ended without an answer.');
  const { idToken, claims } = parseAuthResponse(responseUrl, {
    redirectUri, state, nonce, clientId: settings.clientId, nowSeconds: nowSeconds(),
  });
  const entry = cacheEntry(idToken, claims, settings);
  await withCache(() => tokenStore.set({ [TOKEN_CACHE_KEY]: entry }));
  return entry;
}

/** A token to send now: the cached one while it is usable, else a new sign-in. */
async function tokenForCall(settings) {
  return (await usableCachedToken(settings)) ?? signIn(settings);
}

async function signOut() {
  await withCache(() => tokenStore.remove([TOKEN_CACHE_KEY, LAST_RESULT_KEY]));
}

async function callApi(tabUrl) {
  const settings = await loadSettings();
  const entry = await tokenForCall(settings);
  let result;
  try {
    const response = await fetch(settings.apiUrl, {
      method: 'POST',
      headers: { Authorization: `Bearer ${entry.idToken}`, 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ url: tabUrl }),
      // Never follow a redirect with the token attached to somewhere else.
      redirect: 'error',
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
    const body = parseBody(await response.text(), response.headers.get('Content-Type'));
    result = describeApiResponse({ status: response.status, body, wwwAuthenticate: response.headers.get('WWW-Authenticate') });
  } catch (error) {
    result = describeNetworkError(settings.apiUrl, error);
  }
  // A token the API refuses as invalid will not get better: drop it so the next call signs
  // in. Only that token: a sign-in may have cached another while the call was out.
  if (result.signInAgain) {
    await withCache(async () => {
      const { [TOKEN_CACHE_KEY]: current } = await tokenStore.get(TOKEN_CACHE_KEY);
      if (current?.idToken === entry.idToken) await tokenStore.remove(TOKEN_CACHE_KEY);
    });
  }
  const stored = { ...result, apiUrl: settings.apiUrl, tabUrl, at: Date.now() };
  await tokenStore.set({ [LAST_RESULT_KEY]: stored });
  return stored;
}

async function status() {
  // Shown only: nothing is sent with these.
  const settings = await readSettings();
  const entry = await usableCachedToken(settings);
  const { [LAST_RESULT_KEY]: lastResult } = await tokenStore.get(LAST_RESULT_KEY);
  return {
    signedIn: entry !== null,
    email: entry?.email ?? null,
    exp: entry?.exp ?? null,
    apiUrl: settings.apiUrl,
    lastResult: lastResult ?? null,
  };
}

const handlers = {
  status: () => status(),
  signIn: async () => {
    const entry = await signIn(await loadSettings());
    return { email: entry.email, exp: entry.exp };
  },
  signOut: async () => {
    await signOut();
    return {};
  },
  callApi: async (message) => {
    if (typeof message.url !== 'string') throw new SignInError('bad_request', 'callApi needs the tab\'s URL as a string.');
    return { result: await callApi(message.url) };
  },
};

/** Whether `sender` is one of this extension's own pages (popup, options), by its URL. */
function fromOwnPage(sender) {
  if (sender.id !== chrome.runtime.id || typeof sender.url !== 'string') return false;
  try {
    return new URL(sender.url).origin === new URL(chrome.runtime.getURL('/')).origin;
  } catch {
    return false;
  }
}

chrome.runtime.onMessage.addListener((message, sender, sendResponse) => {
  // Only this extension's own pages may drive it. Other extensions and web pages reach
  // onMessageExternal, not this; a content script (none is declared) would pass the id
  // check but not the URL one.
  if (!fromOwnPage(sender)) return false;
  const handler = handlers[message?.type];
  if (!handler) return false;
  handler(message)
    .then((answer) => sendResponse({ ok: true, ...answer }))
    .catch((error) => sendResponse({ ok: false, error: { code: error.code ?? 'internal', message: error.message ?? String(error) } }));
  return true; // the answer comes asynchronously
});

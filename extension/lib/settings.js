// The user's settings: defaults that point at `gatehouse up`, and the rules a saved value must
// meet. Pure; the options page and the worker read and write chrome.storage themselves.

export const SETTINGS_KEY = 'settings';

export const DEFAULT_SETTINGS = Object.freeze({
  // The emulator's authorization endpoint (`gatehouse up` / `gatehouse idp` on :9099).
  // Real Google: https://accounts.google.com/o/oauth2/v2/auth
  authEndpoint: 'http://127.0.0.1:9099/o/oauth2/v2/auth',
  // The OAuth client the emulator registers for this extension (README). For real Google,
  // the `....apps.googleusercontent.com` id of a Web application client.
  clientId: 'gatehouse-extension',
  // Seed 000's secure endpoint, through the gateway of `gatehouse up`.
  apiUrl: 'http://127.0.0.1:8080/run-secure-endpoint',
});

/** Stored settings over the defaults, ignoring anything unknown or not a string. */
export function withDefaults(stored) {
  const settings = { ...DEFAULT_SETTINGS };
  for (const key of Object.keys(DEFAULT_SETTINGS)) {
    const value = stored?.[key];
    if (typeof value === 'string' && value.trim() !== '') settings[key] = value.trim();
  }
  return settings;
}

const LOOPBACK_HOSTS = new Set(['127.0.0.1', 'localhost', '[::1]']);

/**
 * http:// is accepted only on loopback: an ID token is a bearer credential, and over plain
 * HTTP anyone on the path could replay it until it expires.
 */
function checkUrl(value, label) {
  let url;
  try {
    url = new URL(value);
  } catch {
    return `${label} is not a URL.`;
  }
  if (url.protocol === 'https:') return null;
  if (url.protocol === 'http:' && LOOPBACK_HOSTS.has(url.hostname)) return null;
  if (url.protocol === 'http:') return `${label} must use https:// (http:// only on 127.0.0.1 or localhost).`;
  return `${label} must be an http(s) URL.`;
}

/** `{ settings, errors }`: the trimmed settings and a message per invalid field. */
export function validateSettings(input) {
  const settings = {
    authEndpoint: String(input.authEndpoint ?? '').trim(),
    clientId: String(input.clientId ?? '').trim(),
    apiUrl: String(input.apiUrl ?? '').trim(),
  };
  const errors = {};
  const auth = checkUrl(settings.authEndpoint, 'The authorization endpoint');
  if (auth) errors.authEndpoint = auth;
  else if (new URL(settings.authEndpoint).hash) errors.authEndpoint = 'The authorization endpoint must not have a #fragment.';
  if (settings.clientId === '') errors.clientId = 'The client id is required.';
  else if (/\s/.test(settings.clientId)) errors.clientId = 'The client id must not contain spaces.';
  const api = checkUrl(settings.apiUrl, 'The API URL');
  if (api) errors.apiUrl = api;
  return { settings, errors };
}

/** The host-permission match pattern that covers `url`'s origin, e.g. `http://127.0.0.1:8080/*`. */
export function originPattern(url) {
  const { protocol, host } = new URL(url);
  return `${protocol}//${host}/*`;
}

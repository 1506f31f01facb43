// The options page: edits the three settings in chrome.storage.local. Changing the provider
// or client retires the cached token by itself (the cache entry records both).

import { DEFAULT_SETTINGS, SETTINGS_KEY, originPattern, validateSettings, withDefaults } from './lib/settings.js';

const $ = (id) => document.getElementById(id);
const FIELDS = Object.keys(DEFAULT_SETTINGS);

function fill(settings) {
  for (const field of FIELDS) $(field).value = settings[field];
}

function showErrors(errors) {
  for (const field of FIELDS) $(`${field}-error`).textContent = errors[field] ?? '';
}

/**
 * Host permission for the API's origin. The manifest grants only `gatehouse up`'s gateway;
 * another API origin is asked for here, while the Save click still counts as a user gesture.
 * Without it the call still goes out, but only succeeds if the API answers CORS for the
 * extension's origin.
 */
async function ensureApiPermission(apiUrl) {
  const origins = [originPattern(apiUrl)];
  try {
    if (await chrome.permissions.contains({ origins })) return null;
    const granted = await chrome.permissions.request({ origins });
    return granted ? null : `Access to ${origins[0]} was not granted; calls will need CORS from the API.`;
  } catch (error) {
    return `Could not ask for access to ${origins[0]}: ${error.message}`;
  }
}

async function save(input) {
  const { settings, errors } = validateSettings(input);
  showErrors(errors);
  if (Object.keys(errors).length) {
    $('saved').textContent = '';
    return;
  }
  // Ask before any other await, so the request still runs inside the click's user gesture.
  const permission = ensureApiPermission(settings.apiUrl);
  await chrome.storage.local.set({ [SETTINGS_KEY]: settings });
  const warning = await permission;
  $('saved').textContent = warning ? `Saved. ${warning}` : 'Saved.';
}

$('settings').addEventListener('submit', (event) => {
  event.preventDefault();
  save(Object.fromEntries(FIELDS.map((f) => [f, $(f).value])));
});

$('reset').addEventListener('click', async () => {
  fill(DEFAULT_SETTINGS);
  showErrors({});
  await chrome.storage.local.remove(SETTINGS_KEY);
  $('saved').textContent = 'Defaults restored.';
});

$('redirect-uri').textContent = chrome.identity.getRedirectURL();
chrome.storage.local.get(SETTINGS_KEY).then(({ [SETTINGS_KEY]: stored }) => fill(withDefaults(stored)));

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_SETTINGS, originPattern, validateSettings, withDefaults } from '../lib/settings.js';

test('the defaults point at `gatehouse up`', () => {
  assert.deepEqual({ ...DEFAULT_SETTINGS }, {
    authEndpoint: 'http://127.0.0.1:9099/o/oauth2/v2/auth',
    clientId: 'gatehouse-extension',
    apiUrl: 'http://127.0.0.1:8080/run-secure-endpoint',
  });
  assert.ok(Object.isFrozen(DEFAULT_SETTINGS));
});

test('stored settings override the defaults; blanks and junk do not', () => {
  assert.deepEqual(withDefaults(undefined), { ...DEFAULT_SETTINGS });
  const merged = withDefaults({ clientId: ' x.apps.googleusercontent.com ', apiUrl: '', authEndpoint: 42, extra: 'y' });
  assert.deepEqual(merged, { ...DEFAULT_SETTINGS, clientId: 'x.apps.googleusercontent.com' });
});

test('the defaults and real Google validate', () => {
  assert.deepEqual(validateSettings(DEFAULT_SETTINGS).errors, {});
  const google = {
    authEndpoint: 'https://accounts.google.com/o/oauth2/v2/auth',
    clientId: '123-abc.apps.googleusercontent.com',
    apiUrl: 'https://api-abc-uc.a.run.app/run-secure-endpoint',
  };
  assert.deepEqual(validateSettings(google), { settings: google, errors: {} });
});

test('plain http is refused except on loopback (the token is a bearer credential)', () => {
  const { errors } = validateSettings({
    authEndpoint: 'http://idp.example/auth',
    clientId: 'c',
    apiUrl: 'http://api.example/run',
  });
  assert.match(errors.authEndpoint, /https/);
  assert.match(errors.apiUrl, /https/);
  for (const host of ['127.0.0.1:1234', 'localhost', '[::1]:8080']) {
    assert.deepEqual(validateSettings({ ...DEFAULT_SETTINGS, apiUrl: `http://${host}/x` }).errors, {}, host);
  }
});

test('non-URLs, other schemes, fragments, blank and spaced client ids are refused', () => {
  const { errors } = validateSettings({ authEndpoint: 'not a url', clientId: '', apiUrl: 'ftp://x/y' });
  assert.deepEqual(Object.keys(errors).sort(), ['apiUrl', 'authEndpoint', 'clientId']);
  assert.ok(validateSettings({ ...DEFAULT_SETTINGS, authEndpoint: 'https://idp.example/auth#x' }).errors.authEndpoint);
  assert.ok(validateSettings({ ...DEFAULT_SETTINGS, clientId: 'a b' }).errors.clientId);
  assert.ok(validateSettings({ ...DEFAULT_SETTINGS, apiUrl: 'javascript:alert(1)' }).errors.apiUrl);
});

test('values are trimmed', () => {
  const { settings, errors } = validateSettings({ authEndpoint: ' https://a.example/auth ', clientId: ' c ', apiUrl: '\thttps://b.example/x\n' });
  assert.deepEqual(errors, {});
  assert.deepEqual(settings, { authEndpoint: 'https://a.example/auth', clientId: 'c', apiUrl: 'https://b.example/x' });
});

test('originPattern covers exactly the API origin, port included', () => {
  assert.equal(originPattern('http://127.0.0.1:8080/run-secure-endpoint'), 'http://127.0.0.1:8080/*');
  assert.equal(originPattern('https://api.example/a/b?c#d'), 'https://api.example/*');
  assert.equal(originPattern('https://api.example:443/a'), 'https://api.example/*');
});

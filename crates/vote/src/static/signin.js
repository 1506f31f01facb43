// Sign-in for the voting page: the OpenID Connect implicit flow (response_type=id_token)
// in a popup, with state and nonce checked, the token kept in sessionStorage, and a fresh
// token obtained before expiry. No third-party script: works against the Gatehouse
// emulator, Google, or Identity Platform's Google provider (configure the endpoint and
// client id on the server).

const SESSION_KEY = 'gatehouse.vote.session';
const PENDING_KEY = 'gatehouse.vote.pending';
export const FRAGMENT_KEY = 'gatehouse.vote.fragment';
const POPUP_FEATURES = 'popup,width=500,height=640';

export class SignInError extends Error {}

function randomString() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The claims of a JWT, unverified: the server verifies; the page only reads exp/email/nonce. */
export function decodeClaims(jwt) {
  const part = String(jwt).split('.')[1];
  if (!part) throw new SignInError('The sign-in answer held no ID token.');
  const base64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=');
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

export class SignIn {
  constructor(config, { onChange } = {}) {
    this.config = config;
    this.onChange = onChange || (() => {});
    this.session = this.#load();
  }

  #load() {
    try {
      const s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || 'null');
      if (s && s.idToken && s.exp * 1000 > Date.now()) return s;
    } catch (_) { /* a damaged entry is no session */ }
    sessionStorage.removeItem(SESSION_KEY);
    return null;
  }

  get user() {
    return this.session ? { email: this.session.email, name: this.session.name } : null;
  }

  /** Seconds left on the current token (0 when signed out). */
  secondsLeft() {
    return this.session ? Math.max(0, this.session.exp - Math.floor(Date.now() / 1000)) : 0;
  }

  needsRefresh() {
    return !this.session || this.secondsLeft() <= (this.config.refreshBeforeExpiry || 300);
  }

  #redirectUri() {
    return new URL(this.config.callbackPath || '/auth/callback', location.origin).toString();
  }

  #authUrl({ state, nonce, prompt, loginHint }) {
    const url = new URL(this.config.authorizationEndpoint, location.href);
    url.searchParams.set('client_id', this.config.clientId);
    url.searchParams.set('response_type', 'id_token');
    url.searchParams.set('scope', this.config.scope || 'openid email profile');
    url.searchParams.set('redirect_uri', this.#redirectUri());
    url.searchParams.set('state', state);
    url.searchParams.set('nonce', nonce);
    if (prompt) url.searchParams.set('prompt', prompt);
    if (loginHint) url.searchParams.set('login_hint', loginHint);
    return url.toString();
  }

  /**
   * Runs the flow in a popup. Must be called from a click handler (before any await) so
   * the browser allows the popup. `prompt: 'none'` + `loginHint` renews without a page.
   */
  signIn({ prompt = 'select_account', loginHint } = {}) {
    const state = randomString();
    const nonce = randomString();
    sessionStorage.setItem(PENDING_KEY, JSON.stringify({ state, nonce }));
    const popup = window.open(this.#authUrl({ state, nonce, prompt, loginHint }), 'gatehouse-signin', POPUP_FEATURES);
    if (!popup) {
      return Promise.reject(new SignInError('The sign-in window was blocked: allow popups for this site and try again.'));
    }
    return new Promise((resolve, reject) => {
      let closedChecks = 0;
      const done = (fn, value) => {
        window.removeEventListener('message', onMessage);
        clearInterval(timer);
        fn(value);
      };
      const onMessage = (event) => {
        if (event.origin !== location.origin || !event.data || event.data.type !== 'gatehouse-auth') return;
        let googleToken;
        try {
          googleToken = this.#verifyAnswer(event.data.fragment);
        } catch (e) {
          done(reject, e);
          return;
        }
        this.#establish(googleToken).then((t) => done(resolve, t), (e) => done(reject, e));
      };
      window.addEventListener('message', onMessage);
      const timer = setInterval(() => {
        // The callback posts before it closes; give its message a moment to arrive.
        if (popup.closed && ++closedChecks > 2) done(reject, new SignInError('Sign-in was cancelled.'));
      }, 250);
    });
  }

  /** Completes a flow whose answer came back without a popup (see callback.js). */
  async completeRedirect() {
    const fragment = sessionStorage.getItem(FRAGMENT_KEY);
    if (fragment === null) return false;
    sessionStorage.removeItem(FRAGMENT_KEY);
    await this.#establish(this.#verifyAnswer(fragment));
    return true;
  }

  /** Checks the popup's answer against this page's request; returns the Google ID token. */
  #verifyAnswer(fragment) {
    const pending = JSON.parse(sessionStorage.getItem(PENDING_KEY) || 'null');
    sessionStorage.removeItem(PENDING_KEY);
    const params = new URLSearchParams(fragment || '');
    // RFC 6749 §3.1: no parameter more than once. get() would take the first copy, so
    // `state=ours&state=other` or two id_tokens would pass: refuse such an answer instead.
    for (const name of ['state', 'id_token', 'error', 'error_description']) {
      if (params.getAll(name).length > 1) {
        throw new SignInError(`The sign-in answer carries ${name} more than once.`);
      }
    }
    if (!pending || params.get('state') !== pending.state) {
      throw new SignInError('The sign-in answer does not match this page\'s request (state).');
    }
    const error = params.get('error');
    if (error) {
      const err = new SignInError(`Sign-in failed: ${params.get('error_description') || error}`);
      err.code = error;
      throw err;
    }
    const idToken = params.get('id_token');
    const claims = decodeClaims(idToken);
    if (claims.nonce !== pending.nonce) {
      throw new SignInError('The ID token was not issued for this sign-in (nonce).');
    }
    return idToken;
  }

  /**
   * Makes a session of a Google ID token: as is, or (Firebase / Identity Platform mode)
   * traded at accounts:signInWithIdp for the project's own ID token and a refresh token.
   */
  async #establish(googleToken) {
    let idToken = googleToken;
    let refreshToken = null;
    const fb = this.config.firebase;
    if (fb) {
      const answer = await this.#firebaseCall(`${fb.identityToolkit}/v1/accounts:signInWithIdp`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({
          postBody: new URLSearchParams({ id_token: googleToken, providerId: 'google.com' }).toString(),
          requestUri: location.origin,
          returnSecureToken: true,
          returnIdpCredential: true,
        }),
      });
      idToken = answer.idToken;
      refreshToken = answer.refreshToken;
    }
    this.#remember(idToken, refreshToken);
    return idToken;
  }

  #remember(idToken, refreshToken) {
    const claims = decodeClaims(idToken);
    this.session = {
      idToken,
      refreshToken,
      exp: claims.exp,
      email: claims.email || claims.sub,
      name: claims.name || claims.email || claims.sub,
    };
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(this.session));
    this.onChange(this.user);
  }

  async #firebaseCall(url, init) {
    const u = new URL(url);
    u.searchParams.set('key', this.config.firebase.apiKey);
    const response = await fetch(u, init);
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = body.error && body.error.message ? body.error.message : `HTTP ${response.status}`;
      throw new SignInError(`Sign-in failed: ${message}`);
    }
    return body;
  }

  /**
   * A token with more than `refreshBeforeExpiry` seconds left: the current one, or a fresh
   * one from the identity provider (silently with prompt=none + login_hint, else the
   * account chooser). Call from a click handler.
   */
  async getIdToken() {
    if (!this.session) throw new SignInError('User not signed in.');
    if (!this.needsRefresh()) return this.session.idToken;
    if (this.session.refreshToken && this.config.firebase) {
      // Firebase mode: the refresh token renews the session without a window.
      const answer = await this.#firebaseCall(`${this.config.firebase.secureToken}/v1/token`, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: this.session.refreshToken }).toString(),
      });
      this.#remember(answer.id_token, answer.refresh_token || this.session.refreshToken);
      return this.session.idToken;
    }
    const hint = this.session.email;
    try {
      return await this.signIn({ prompt: 'none', loginHint: hint });
    } catch (e) {
      if (this.secondsLeft() > 30) return this.session.idToken; // still valid: use it once more
      this.signOut();
      throw new SignInError(`Your sign-in expired; sign in again. (${e.message})`);
    }
  }

  signOut() {
    this.session = null;
    sessionStorage.removeItem(SESSION_KEY);
    sessionStorage.removeItem(PENDING_KEY);
    this.onChange(null);
  }
}

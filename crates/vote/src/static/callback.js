// The sign-in popup lands here with the answer in the fragment (#id_token=...&state=...).
// Hand it to the page that opened the popup, on this origin only, then close.
import { FRAGMENT_KEY } from './signin.js';

// Tokens come in the fragment only: one in the query has been in request lines and server
// logs on its way here. The query still carries an error a provider answered there.
const query = new URLSearchParams(location.search);
for (const secret of ['id_token', 'access_token', 'code']) query.delete(secret);
const answer = location.hash.length > 1 ? location.hash.slice(1) : query.toString();
// Keep the token out of the address bar and history.
history.replaceState(null, '', location.pathname);
if (window.opener && !window.opener.closed) {
  window.opener.postMessage({ type: 'gatehouse-auth', fragment: answer }, location.origin);
  window.close();
} else {
  // Opened without a popup (blocked, or a new tab): finish on the main page.
  sessionStorage.setItem(FRAGMENT_KEY, answer);
  location.replace('/');
}

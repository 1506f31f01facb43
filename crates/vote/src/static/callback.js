// The sign-in popup lands here with the answer in the fragment (#id_token=...&state=...).
// Hand it to the page that opened the popup, on this origin only, then close.
import { FRAGMENT_KEY } from './signin.js';

const answer = location.hash.length > 1 ? location.hash.slice(1) : location.search.slice(1);
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

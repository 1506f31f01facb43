// The popup: shows who is signed in and the last API answer; every action is done by the
// service worker (background.js), which outlives the popup.

const $ = (id) => document.getElementById(id);

async function ask(message) {
  const answer = await chrome.runtime.sendMessage(message);
  if (!answer?.ok) {
    const error = new Error(answer?.error?.message ?? 'The extension did not answer.');
    error.code = answer?.error?.code;
    throw error;
  }
  return answer;
}

function showAccount({ signedIn, email }) {
  $('who').textContent = signedIn ? `Signed in as ${email ?? '(no email in token)'}` : 'Not signed in';
  $('sign-in').hidden = signedIn;
  $('sign-out').hidden = !signedIn;
}

function showResult(state, { title, detail = null, body = null }) {
  const section = $('result');
  section.hidden = false;
  section.dataset.state = state;
  $('result-title').textContent = title;
  $('result-detail').textContent = detail ?? '';
  $('result-detail').hidden = !detail;
  const text = body === null || body === undefined || body === '' ? '' : typeof body === 'string' ? body : JSON.stringify(body, null, 2);
  $('result-body').textContent = text;
  $('result-body').hidden = text === '';
}

function clearResult() {
  $('result').hidden = true;
  $('result').dataset.state = 'idle';
}

async function refresh() {
  const status = await ask({ type: 'status' });
  showAccount(status);
  $('api-url').textContent = status.apiUrl;
  return status;
}

/** Runs `action` with the buttons disabled, reporting a failure in the result box. */
async function busy(action) {
  const buttons = document.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    await action();
  } catch (error) {
    // The worker reports API answers as results; what arrives here is a sign-in that failed,
    // or the worker itself failing ('internal').
    showResult('error', { title: error.code === 'internal' ? 'Something went wrong' : 'Sign-in failed', detail: error.message });
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
    await refresh().catch(() => {});
  }
}

/**
 * The URL of the tab the popup was opened over. Readable because of activeTab (granted when
 * the user clicks the toolbar button) or a host permission for the tab's origin.
 */
async function activeTabUrl() {
  const [tab] = await chrome.tabs.query({ active: true, currentWindow: true });
  if (!tab?.url) throw new Error('Cannot read the active tab\'s URL (open the popup from the toolbar button on the page).');
  return tab.url;
}

$('sign-in').addEventListener('click', () => busy(async () => {
  clearResult();
  await ask({ type: 'signIn' });
}));

$('sign-out').addEventListener('click', () => busy(async () => {
  clearResult();
  await ask({ type: 'signOut' });
}));

$('call-api').addEventListener('click', () => busy(async () => {
  // Before any await: the previous answer must not stay on screen as if it were this one's.
  showResult('pending', { title: 'Calling…', detail: `POST ${$('api-url').textContent}` });
  let url;
  try {
    url = await activeTabUrl();
  } catch (error) {
    showResult('error', { title: 'No page to send', detail: error.message });
    return;
  }
  const { result } = await ask({ type: 'callApi', url });
  showResult(result.ok ? 'ok' : 'error', result);
}));

$('open-options').addEventListener('click', (event) => {
  event.preventDefault();
  chrome.runtime.openOptionsPage();
});

refresh()
  .then((status) => {
    const last = status.lastResult;
    if (last) showResult(last.ok ? 'ok' : 'error', last);
  })
  .catch((error) => showResult('error', { title: 'The extension did not start', detail: error.message }));

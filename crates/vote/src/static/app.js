// The voting page: sign in / sign out, vote with a fresh ID token, show the server's
// answer, and refresh the counts from GET / (JSON).
import { SignIn } from './signin.js';

const config = JSON.parse(document.getElementById('gatehouse-config').textContent);
const $ = (id) => document.getElementById(id);

const signIn = new SignIn(config, { onChange: render });

function render(user) {
  $('sign-in').hidden = !!user;
  $('sign-out').hidden = !user;
  $('signed-out').hidden = !!user;
  $('user').textContent = user ? `Signed in as ${user.email}` : '';
  if (user) $('auth-message').hidden = true;
}

function say(message) {
  const el = $('auth-message');
  el.textContent = message;
  el.hidden = !message;
}

function emoji(candidate) {
  return candidate === 'CATS' ? '🐱' : candidate === 'DOGS' ? '🐶' : '🗳️';
}

function formatTime(rfc3339) {
  // 2026-11-23T14:55:05.123456Z -> 2026-11-23 14:55:05 UTC (as the server renders it)
  return `${rfc3339.slice(0, 10)} ${rfc3339.slice(11, 19)} UTC`;
}

async function refresh() {
  const response = await fetch('/', { headers: { Accept: 'application/json' }, cache: 'no-store' });
  if (!response.ok) return;
  const data = await response.json();
  $('cats-count').textContent = data.cats;
  $('dogs-count').textContent = data.dogs;
  $('leader').textContent = data.leader;
  $('cats-card').classList.toggle('leading', data.cats > data.dogs);
  $('dogs-card').classList.toggle('leading', data.dogs > data.cats);
  const list = $('recent');
  list.replaceChildren(...data.recent.map((v) => {
    const li = document.createElement('li');
    const icon = document.createElement('span');
    icon.className = 'emoji';
    icon.setAttribute('aria-hidden', 'true');
    icon.textContent = emoji(v.candidate);
    const b = document.createElement('b');
    b.textContent = `'${v.candidate}'`;
    const time = document.createElement('time');
    time.dateTime = v.time_cast;
    time.textContent = formatTime(v.time_cast);
    li.append(icon, ' A vote for ', b, ' was cast at ', time);
    return li;
  }));
}

async function vote(team, button) {
  if (!signIn.user) {
    window.alert('User not signed in.');
    return;
  }
  button.disabled = true;
  try {
    // Before any await, so a renewal popup counts as opened by this click.
    const token = await signIn.getIdToken();
    const response = await fetch('/', {
      method: 'POST',
      headers: {
        'Content-Type': 'application/x-www-form-urlencoded',
        Authorization: `Bearer ${token}`,
      },
      body: new URLSearchParams({ team }).toString(),
    });
    const text = await response.text();
    window.alert(text);
    if (response.status === 401 || response.status === 403) signIn.signOut();
    await refresh();
  } catch (err) {
    console.log(`Error when submitting vote: ${err}`);
    window.alert(err && err.message ? err.message : 'Something went wrong... Please try again!');
  } finally {
    button.disabled = false;
  }
}

$('sign-in').addEventListener('click', () => {
  signIn.signIn().then(
    (/* token */) => {
      console.log(`${signIn.user.name} logged in.`);
    },
    (err) => {
      console.log(`Error during sign in: ${err.message}`);
      say(err.message);
    },
  );
});

$('sign-out').addEventListener('click', () => {
  signIn.signOut();
});

for (const button of document.querySelectorAll('button.vote')) {
  button.addEventListener('click', () => vote(button.dataset.team, button));
}

render(signIn.user);
// A sign-in that came back without a popup.
signIn.completeRedirect().catch((err) => say(err.message));

// Say so before the token lapses; the next vote renews it.
setInterval(() => {
  if (signIn.user && signIn.secondsLeft() === 0) {
    signIn.signOut();
    say('Your sign-in expired; sign in again to vote.');
  }
}, 30_000);

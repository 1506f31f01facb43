// The Firebase JS SDK (unmodified, through connectAuthEmulator) against `gatehouse idp`:
// sign up, sign in, wrong password refused, forced refresh; the ID tokens verify against the
// emulator's securetoken certificates (jose and google-auth-library), because the emulator
// really signs them.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { initializeApp, deleteApp } from 'firebase/app';
import {
  connectAuthEmulator, createUserWithEmailAndPassword, getAuth, signInWithEmailAndPassword,
  signOut, updateProfile,
} from 'firebase/auth';
import { importX509, jwtVerify } from 'jose';
import { OAuth2Client } from 'google-auth-library';
import { decodeClaims, startIdp } from './idp_support.mjs';

const PROJECT = 'demo-project';
let idp;
let app;
let auth;

before(async () => {
  idp = await startIdp();
  app = initializeApp({ apiKey: 'fake-api-key', projectId: PROJECT, authDomain: '127.0.0.1' }, `t${Date.now()}`);
  auth = getAuth(app);
  connectAuthEmulator(auth, idp.base, { disableWarnings: true });
});

after(async () => {
  await deleteApp(app);
  await idp.stop();
});

async function securetokenCerts() {
  const r = await fetch(`${idp.base}/robot/v1/metadata/x509/securetoken@system.gserviceaccount.com`);
  assert.equal(r.status, 200);
  assert.match(r.headers.get('cache-control'), /^public, max-age=\d+/);
  return r.json();
}

async function verifyWithJose(token) {
  const certs = await securetokenCerts();
  const { kid } = JSON.parse(Buffer.from(token.split('.')[0], 'base64url').toString());
  assert.ok(certs[kid], 'token kid is published');
  const key = await importX509(certs[kid], 'RS256');
  const { payload } = await jwtVerify(token, key, {
    issuer: `https://securetoken.google.com/${PROJECT}`,
    audience: PROJECT,
    algorithms: ['RS256'],
  });
  return payload;
}

test('sign up, sign in, refresh; tokens verify against the securetoken certs', async () => {
  const email = `user${Date.now()}@example.com`;
  const cred = await createUserWithEmailAndPassword(auth, email, 'correct horse');
  assert.equal(cred.user.email, email);
  const t1 = await cred.user.getIdToken();
  const claims = await verifyWithJose(t1);
  assert.equal(claims.sub, cred.user.uid);
  assert.equal(claims.user_id, cred.user.uid);
  assert.equal(claims.email, email);
  assert.equal(claims.firebase.sign_in_provider, 'password');
  assert.deepEqual(claims.firebase.identities.email, [email]);
  assert.equal(typeof claims.auth_time, 'number');

  await updateProfile(cred.user, { displayName: 'Test User' });
  await signOut(auth);
  const again = await signInWithEmailAndPassword(auth, email, 'correct horse');
  assert.equal(again.user.uid, cred.user.uid);
  assert.equal(again.user.displayName, 'Test User');

  // Forced refresh goes through securetoken.googleapis.com/v1/token.
  await new Promise((r) => setTimeout(r, 1100));
  const before = await again.user.getIdToken();
  const fresh = await again.user.getIdToken(true);
  assert.notEqual(fresh, before);
  const fc = await verifyWithJose(fresh);
  assert.equal(fc.sub, cred.user.uid);
  assert.equal(fc.name, 'Test User');

  // google-auth-library verifies the same token with the same certificates.
  const client = new OAuth2Client();
  const ticket = await client.verifySignedJwtWithCertsAsync(
    fresh, await securetokenCerts(), PROJECT, [`https://securetoken.google.com/${PROJECT}`],
  );
  assert.equal(ticket.getPayload().user_id, cred.user.uid);
  await signOut(auth);
});

test('wrong password and duplicate email are refused', async () => {
  const email = `dup${Date.now()}@example.com`;
  await createUserWithEmailAndPassword(auth, email, 'secret-pass');
  await signOut(auth);
  await assert.rejects(
    signInWithEmailAndPassword(auth, email, 'not-the-password'),
    (e) => ['auth/wrong-password', 'auth/invalid-credential'].includes(e.code),
  );
  await assert.rejects(
    createUserWithEmailAndPassword(auth, email, 'secret-pass'),
    (e) => e.code === 'auth/email-already-in-use',
  );
  await assert.rejects(
    signInWithEmailAndPassword(auth, `nobody${Date.now()}@example.com`, 'secret-pass'),
    (e) => ['auth/user-not-found', 'auth/invalid-credential'].includes(e.code),
  );
  assert.equal(auth.currentUser, null);
});

test('emulator conventions: GET / and clearing accounts', async () => {
  const r = await fetch(`${idp.base}/`);
  assert.deepEqual(await r.json(), { authEmulator: { ready: true } });
  const d = await fetch(`${idp.base}/emulator/v1/projects/${PROJECT}/accounts`, { method: 'DELETE' });
  assert.equal(d.status, 200);
  const token = decodeClaims((await (await fetch(`${idp.base}/identitytoolkit.googleapis.com/v1/accounts:signUp?key=k`, {
    method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}',
  })).json()).idToken);
  assert.equal(token.firebase.sign_in_provider, 'anonymous');
});

// node google-auth-library against `gatehouse idp`: OAuth2Client.verifyIdToken with its cert
// endpoints pointed at the emulator, and jose with the emulator's JWK set.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { OAuth2Client } from 'google-auth-library';
import { createRemoteJWKSet, jwtVerify } from 'jose';
import { startIdp, freePort } from './idp_support.mjs';

const AUDIENCE = 'https://svc.example';
const SA = 'node-worker@demo-project.iam.gserviceaccount.com';
let idp;
let metadataHost;

before(async () => {
  metadataHost = `127.0.0.1:${await freePort()}`;
  idp = await startIdp(['--metadata', `${metadataHost}=${SA}`]);
});

after(async () => {
  await idp.stop();
});

async function metadataIdentity(audience) {
  const r = await fetch(
    `http://${metadataHost}/computeMetadata/v1/instance/service-accounts/default/identity?audience=${encodeURIComponent(audience)}&format=full`,
    { headers: { 'Metadata-Flavor': 'Google' } },
  );
  assert.equal(r.status, 200);
  assert.equal(r.headers.get('metadata-flavor'), 'Google');
  return r.text();
}

test('OAuth2Client.verifyIdToken with PEM certs from the emulator', async () => {
  const client = new OAuth2Client({
    endpoints: {
      oauth2FederatedSignonPemCertsUrl: `${idp.base}/oauth2/v1/certs`,
      oauth2FederatedSignonJwkCertsUrl: `${idp.base}/oauth2/v3/certs`,
    },
  });
  const token = await metadataIdentity(AUDIENCE);
  const ticket = await client.verifyIdToken({ idToken: token, audience: AUDIENCE });
  const payload = ticket.getPayload();
  assert.equal(payload.email, SA);
  assert.equal(payload.iss, 'https://accounts.google.com');
  assert.equal(payload.google.compute_engine.project_id, 'demo-project');
  await assert.rejects(client.verifyIdToken({ idToken: token, audience: 'https://other.example' }));
  // A user token from the emulator (as the sign-in page makes) verifies the same way.
  const r = await fetch(`${idp.base}/emulator/v1/users/token`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: 'alice@example.com' }),
  });
  const { id_token: userToken } = await r.json();
  const userTicket = await client.verifyIdToken({
    idToken: userToken, audience: 'gatehouse-web.apps.googleusercontent.com',
  });
  assert.equal(userTicket.getPayload().email, 'alice@example.com');
});

test('the JWK set verifies the same tokens (jose createRemoteJWKSet)', async () => {
  const jwks = createRemoteJWKSet(new URL(`${idp.base}/oauth2/v3/certs`));
  const token = await metadataIdentity(AUDIENCE);
  const { payload, protectedHeader } = await jwtVerify(token, jwks, {
    issuer: 'https://accounts.google.com', audience: AUDIENCE, algorithms: ['RS256'],
  });
  assert.equal(protectedHeader.alg, 'RS256');
  assert.equal(payload.email, SA);
});

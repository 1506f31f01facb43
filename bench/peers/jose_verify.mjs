// Peer: node `jose` jwtVerify on the same RS256 tokens, key imported once. Prints ops/s.
// Run from tests/ (where node_modules has jose): node ../bench/peers/jose_verify.mjs FIXTURE [SECONDS]
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';

const require = createRequire(pathToFileURL(process.cwd() + '/'));
const { importJWK, jwtVerify } = await import(pathToFileURL(require.resolve('jose')).href);

const fixture = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const seconds = Number(process.argv[3] ?? 3);
const key = await importJWK(fixture.jwk, 'RS256');
const options = { audience: fixture.audience, issuer: 'https://accounts.google.com', algorithms: ['RS256'] };
const tokens = fixture.tokens;

for (const t of tokens.slice(0, 20)) await jwtVerify(t, key, options);
let n = 0;
const start = performance.now();
while (performance.now() - start < seconds * 1000) {
  await jwtVerify(tokens[n % tokens.length], key, options);
  n++;
}
const elapsed = (performance.now() - start) / 1000;
console.log(JSON.stringify({ peer: 'node jose jwtVerify', ops_per_sec: n / elapsed }));

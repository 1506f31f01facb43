// Building unsigned test tokens: the extension never checks signatures (the server does), so
// the payload is all that matters to the code under test.

export const b64url = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

export function fakeJwt(claims, header = { alg: 'RS256', kid: 'test' }) {
  return `${b64url(header)}.${b64url(claims)}.c2lnbmF0dXJl`;
}

// Reading a JWT's claims without verifying it.
//
// The extension never decides anything security-relevant from these claims on its own: the
// gateway and the app verify the signature, issuer, audience and expiry. The extension reads
// the payload only to check the nonce it sent, to show who is signed in and to know when the
// cached token runs out.

export class MalformedTokenError extends Error {
  constructor(detail) {
    super(`The ID token is malformed: ${detail}`);
    this.name = 'MalformedTokenError';
    this.code = 'malformed_token';
  }
}

/** Decodes base64url (RFC 4648 §5, padding optional) to bytes. */
export function base64UrlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text) || text.length % 4 === 1) {
    throw new MalformedTokenError('a segment is not base64url');
  }
  const base64 = text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4);
  const binary = atob(base64);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

/** Encodes bytes as base64url without padding. */
export function base64UrlEncode(bytes) {
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * The claims of a compact JWS, unverified. Claims are UTF-8 JSON (names like "Zoë" must
 * survive, which a bare atob() would mangle).
 */
export function decodeJwtPayload(jwt) {
  if (typeof jwt !== 'string') throw new MalformedTokenError('not a string');
  const parts = jwt.split('.');
  if (parts.length !== 3) throw new MalformedTokenError(`${parts.length} segments, expected 3`);
  let claims;
  try {
    const json = new TextDecoder('utf-8', { fatal: true }).decode(base64UrlDecode(parts[1]));
    claims = JSON.parse(json);
  } catch (error) {
    if (error instanceof MalformedTokenError) throw error;
    throw new MalformedTokenError('the payload is not UTF-8 JSON');
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    throw new MalformedTokenError('the payload is not a JSON object');
  }
  return claims;
}

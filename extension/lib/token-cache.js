// When a cached ID token may still be sent, and what is cached with it.
//
// The seed refreshes 5 minutes before `exp`: a token that still looks valid here can be
// refused by a server whose clock runs ahead, or expire while the request is in flight.

export const EXPIRY_BUFFER_SECONDS = 300;

/** The chrome.storage.session key of the cache entry (shared by the worker and the tests). */
export const TOKEN_CACHE_KEY = 'idTokenCache';

/**
 * The entry to cache for a token fresh from sign-in. It records which identity provider and
 * client the token came from, so that changing either in Options retires it.
 */
export function cacheEntry(idToken, claims, { authEndpoint, clientId }) {
  return {
    idToken,
    exp: claims.exp,
    email: typeof claims.email === 'string' ? claims.email : null,
    authEndpoint,
    clientId,
  };
}

/**
 * Whether `entry` may be sent now: it exists, came from the configured provider and client,
 * and expires more than the buffer after `nowSeconds`.
 */
export function isUsable(entry, { nowSeconds, authEndpoint, clientId }, bufferSeconds = EXPIRY_BUFFER_SECONDS) {
  if (!entry || typeof entry.idToken !== 'string' || !Number.isFinite(entry.exp)) return false;
  if (entry.authEndpoint !== authEndpoint || entry.clientId !== clientId) return false;
  return entry.exp - bufferSeconds > nowSeconds;
}

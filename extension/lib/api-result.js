// Turning the API's answer (or the lack of one) into what the popup shows.
//
// The gateway answers refusals as RFC 6750 says: 401 with `WWW-Authenticate: Bearer
// error="invalid_token", error_description="..."` when the token is missing or bad, 403 when
// the token is good but its holder is not granted; both with a JSON body carrying a reason code.

/** Reads `error_description` (else `error`) from a `WWW-Authenticate: Bearer ...` header. */
export function bearerChallengeReason(header) {
  if (!header) return null;
  const param = (name) => header.match(new RegExp(`${name}="((?:[^"\\\\]|\\\\.)*)"`))?.[1]?.replace(/\\(.)/g, '$1');
  return param('error_description') ?? param('error');
}

/** A short reason from a JSON error body in any of the usual shapes. */
export function bodyReason(body) {
  if (!body || typeof body !== 'object') return null;
  const error = body.error;
  if (error && typeof error === 'object') return error.message ?? error.status ?? error.code ?? null;
  const parts = [body.code ?? body.reason ?? error, body.error_description ?? body.message ?? body.detail]
    .filter((p) => typeof p === 'string' && p !== '');
  return parts.length ? [...new Set(parts)].join(': ') : null;
}

/**
 * `{ ok, status, title, detail, body, signInAgain }` for an HTTP answer. `body` is the parsed
 * JSON, or the text when it is not JSON. `signInAgain` says the cached token should go.
 */
export function describeApiResponse({ status, body, wwwAuthenticate = null }) {
  if (status >= 200 && status < 300) {
    return { ok: true, status, title: `OK (${status})`, detail: null, body, signInAgain: false };
  }
  const reason = bodyReason(body) ?? bearerChallengeReason(wwwAuthenticate);
  const withReason = (text) => (reason ? `${text} Reason: ${reason}.` : text);
  if (status === 401) {
    return {
      ok: false, status, title: 'Not authenticated (401)', body, signInAgain: true,
      detail: withReason('The API did not accept the ID token. Sign in again.'),
    };
  }
  if (status === 403) {
    return {
      ok: false, status, title: 'Forbidden (403)', body, signInAgain: false,
      detail: withReason('You are signed in, but this account is not allowed to call this API.'),
    };
  }
  const kind = status >= 500 ? 'Server error' : 'Request refused';
  return { ok: false, status, title: `${kind} (${status})`, body, signInAgain: false, detail: withReason(`The API answered HTTP ${status}.`) };
}

/** The popup's words for a fetch that got no HTTP answer at all. */
export function describeNetworkError(apiUrl, error) {
  const timedOut = error?.name === 'TimeoutError' || error?.name === 'AbortError';
  let origin = apiUrl;
  try {
    origin = new URL(apiUrl).origin;
  } catch {
    // Keep the text as given; the options page refuses non-URLs anyway.
  }
  return {
    ok: false,
    status: null,
    title: timedOut ? 'Timed out' : 'Network error',
    detail: timedOut
      ? `${origin} did not answer in time.`
      : `Could not reach ${origin}. Is it running (\`gatehouse up\`), and is the API URL in Options right? (${error?.message ?? error})`,
    body: null,
    signInAgain: false,
  };
}

/** Parses a response body as JSON when it is JSON, else returns the text. */
export function parseBody(text, contentType) {
  if (/\bjson\b/i.test(contentType ?? '') || /^\s*[{[]/.test(text)) {
    try {
      return JSON.parse(text);
    } catch {
      // Not JSON after all: show it as text.
    }
  }
  return text;
}

/**
 * The codec server's operator sign-in page (GET /codec/login): a plain HTML form, no script,
 * served with a Content-Security-Policy that allows nothing but its own inline style and form
 * posts to itself, and that no page may frame (no clickjacking of the sign-in).
 */

/** The headers every sign-in page answer carries. */
export const LOGIN_PAGE_HEADERS: Readonly<Record<string, string>> = {
  'Content-Type': 'text/html; charset=utf-8',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Frame-Options': 'DENY',
  'Cache-Control': 'no-store',
  'Referrer-Policy': 'no-referrer',
  'X-Content-Type-Options': 'nosniff',
};

const escapeHtml = (text: string): string =>
  text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c] ?? c);

export interface LoginPageState {
  /** The codec endpoint as this browser reached it, to paste into the Web UI. */
  endpoint: string;
  /** The Web UI origins allowed to call it (CODEC_CORS_ORIGINS). */
  webUiOrigins: readonly string[];
  /** Set when signed in: when the session ends (Unix seconds). */
  signedInUntil?: number;
  /** A sign-in attempt was refused. */
  refused?: boolean;
  /** The session just ended. */
  signedOut?: boolean;
  /** Logout could not revoke the session (Redis down): the cookie is gone from this browser, a copy lives until then. */
  revokeFailedUntil?: number;
}

/** The host name of a URL, or undefined. */
function hostOf(url: string): string | undefined {
  try {
    return new URL(url).hostname;
  } catch {
    return undefined;
  }
}

export function loginPage(state: LoginPageState): string {
  const endpoint = escapeHtml(state.endpoint);
  // The SameSite=Strict cookie travels only between pages of one site: 127.0.0.1 and localhost are two.
  const sameHost = state.webUiOrigins.filter((o) => hostOf(o) === hostOf(state.endpoint));
  const uiLinks = sameHost.map((o) => `<a href="${escapeHtml(o)}/">${escapeHtml(o)}</a>`).join(', ');
  const body = state.signedInUntil !== undefined
    ? `<p class="ok">Signed in until <b>${new Date(state.signedInUntil * 1000).toISOString()}</b>. The Temporal Web UI
  (${uiLinks || `none of CODEC_CORS_ORIGINS is on this host: open this page on the Web UI's host`}) can decode payloads through <code>${endpoint}</code> in this browser.</p>
<p>The Web UI sends this session only when its codec settings include credentials. If it still shows
  <code>binary/encrypted</code> payloads: open <i>Codec Server</i> in the Web UI, choose
  <i>Use my browser setting and ignore Cluster-level setting</i>, enter <code>${endpoint}</code>,
  turn on <i>Include cross-origin credentials</i> (not <i>Pass the user access token</i>) and apply.</p>
<form method="post" action="logout"><button type="submit">Sign out</button></form>`
    : `${state.refused ? '<p class="err">That is not the admin token.</p>' : ''}${state.signedOut ? '<p class="ok">Signed out: the session is revoked.</p>' : ''}${
  state.revokeFailedUntil !== undefined ? `<p class="err">The session cookie is removed from this browser, but the session could not be revoked (Redis unreachable): a copy of it stays valid until ${new Date(state.revokeFailedUntil * 1000).toISOString()}. Sign out again later, or rotate ADMIN_TOKEN to end every session.</p>` : ''}
<p>Signing in with the admin token lets the Temporal Web UI in this browser decode payloads through
  <code>${endpoint}</code>, for a limited time. The browser keeps a signed session cookie, never the token.</p>
<form method="post" action="login">
  <label>Admin token <input type="password" name="token" autocomplete="off" required autofocus></label>
  <button type="submit">Sign in</button>
</form>`;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Codec server sign-in</title>
<style>body{font-family:system-ui,sans-serif;max-width:46rem;margin:3rem auto;padding:0 1rem;line-height:1.5}
code{background:#eee;padding:0 .2rem}.ok{color:#075e0f}.err{color:#a40000}input{width:22rem}</style></head>
<body><h1>Codec server: operator sign-in</h1>
${body}
</body></html>
`;
}

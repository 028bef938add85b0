// Who the page speaks for: a bearer token held in memory and in this tab's sessionStorage, never
// in a cookie, and never in a URL but the WebSocket upgrade's.
//
// It comes from a sign-in link (`#token=…`: a fragment never reaches a server or its logs), a
// pasted token, or an OpenID Connect provider through the authorization-code flow with PKCE,
// which also renews it with the refresh token before it expires.

const TOKEN = "nagare.token";
const REFRESH = "nagare.refresh";
const PENDING = "nagare.oidc"; // the PKCE verifier and state while the provider signs the user in
const RENEW_BEFORE_MS = 60_000;

export class Auth {
  constructor(config) {
    this.oidc = config.oidc;
    this.token = null;
    this.claims = null;
    this.timer = 0;
    this.onRenewed = () => {};
    this.onExpired = () => {};
  }

  // Takes the token the page was opened with, or the tab's. Throws a sentence when a link or a
  // provider's answer was bad.
  async start() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const query = new URLSearchParams(location.search);
    if (fragment.has("token")) {
      history.replaceState(history.state, "", location.pathname + location.search);
      this.use(fragment.get("token"));
    } else if (query.has("code") && this.oidc) {
      await this.redeem(query);
    } else if (sessionStorage.getItem(TOKEN)) {
      this.use(sessionStorage.getItem(TOKEN), sessionStorage.getItem(REFRESH));
    }
    if (this.token && this.expiresIn() <= 0 && !sessionStorage.getItem(REFRESH)) {
      this.signOut();
      throw new Error("Your sign-in has expired. Sign in again.");
    }
  }

  // Takes `token` (a JWT); throws a sentence if it is not one.
  use(token, refresh = null) {
    token = token.trim();
    const claims = decode(token);
    if (!claims || typeof claims.exp !== "number") throw new Error("That is not a token: paste the whole JWT.");
    this.token = token;
    this.claims = claims;
    sessionStorage.setItem(TOKEN, token);
    if (refresh) sessionStorage.setItem(REFRESH, refresh);
    clearTimeout(this.timer);
    const renewIn = Math.max(this.expiresIn() - RENEW_BEFORE_MS, 5_000);
    this.timer = setTimeout(() => this.renew(), renewIn);
  }

  expiresIn() {
    return this.claims ? this.claims.exp * 1000 - Date.now() : 0;
  }

  // The gateway said the token is no longer good.
  expire() {
    if (!this.token) return;
    this.signOut();
    this.onExpired("Your sign-in has expired. Sign in again.");
  }

  signOut() {
    clearTimeout(this.timer);
    this.token = null;
    this.claims = null;
    sessionStorage.removeItem(TOKEN);
    sessionStorage.removeItem(REFRESH);
  }

  async renew() {
    const refresh = sessionStorage.getItem(REFRESH);
    if (!refresh || !this.oidc) {
      // A pasted or linked token cannot be renewed: say so when it runs out.
      this.timer = setTimeout(() => this.expire(), Math.max(this.expiresIn(), 0));
      return;
    }
    try {
      const tokens = await this.exchange({ grant_type: "refresh_token", refresh_token: refresh });
      this.use(tokens.access_token, tokens.refresh_token || refresh);
      this.onRenewed(this.token);
    } catch {
      this.timer = setTimeout(() => this.renew(), 30_000);
      if (this.expiresIn() <= 0) this.expire();
    }
  }

  // Sends the browser to the provider's sign-in page.
  async signInWithProvider() {
    const verifier = random(32);
    const state = random(16);
    const challenge = base64url(new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier))));
    sessionStorage.setItem(PENDING, JSON.stringify({ verifier, state, search: location.search }));
    const url = new URL(this.oidc.authorize_url);
    url.search = new URLSearchParams({
      response_type: "code",
      client_id: this.oidc.client_id,
      redirect_uri: redirectUri(),
      scope: this.oidc.scopes.join(" "),
      state,
      code_challenge: challenge,
      code_challenge_method: "S256",
    });
    location.assign(url.href);
  }

  // The provider sent the browser back with a code: trade it for tokens.
  async redeem(query) {
    const pending = JSON.parse(sessionStorage.getItem(PENDING) || "null");
    sessionStorage.removeItem(PENDING);
    history.replaceState(null, "", location.pathname + (pending?.search || ""));
    if (query.has("error")) throw new Error(`The sign-in was refused: ${query.get("error_description") || query.get("error")}`);
    if (!pending || pending.state !== query.get("state")) throw new Error("That sign-in answer was not for this page. Sign in again.");
    const tokens = await this.exchange({
      grant_type: "authorization_code",
      code: query.get("code"),
      redirect_uri: redirectUri(),
      code_verifier: pending.verifier,
    });
    this.use(tokens.access_token, tokens.refresh_token);
  }

  async exchange(fields) {
    const response = await fetch(this.oidc.token_url, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ client_id: this.oidc.client_id, ...fields }),
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok || !body.access_token) {
      throw new Error(`The sign-in provider refused: ${body.error_description || body.error || response.status}`);
    }
    return body;
  }
}

// The payload of a JWT, or null.
function decode(token) {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    return JSON.parse(new TextDecoder().decode(Uint8Array.from(json, (c) => c.charCodeAt(0))));
  } catch {
    return null;
  }
}

function redirectUri() {
  return location.origin + location.pathname;
}

function random(n) {
  return base64url(crypto.getRandomValues(new Uint8Array(n)));
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

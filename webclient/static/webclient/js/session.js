// The signed-in session: the access and refresh tokens, kept in localStorage so that a reload
// or a second tab stays signed in, and the access token renewed before it expires.
//
// Renewal: POST /users/token/refresh a little before `exp` (a quarter of the token's lifetime,
// at most a minute, before it), then "refreshed" is dispatched so the open socket can send the
// new token in band (`{"type": "auth"}`). Tabs share the tokens: a tab that finds a fresher
// access token in storage takes it instead of asking the server, and renewals are serialised
// across tabs with the Web Locks API where the browser has it (a rotated refresh token must
// not be used twice).

const STORAGE_KEY = "chat.session";
const MAX_MARGIN_MS = 60_000;
const MIN_DELAY_MS = 1_000;

/** The payload of a JWT (not verified: the server does that; we only read `exp`/`iat`). */
export function jwtPayload(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const padded = part + "=".repeat((4 - (part.length % 4)) % 4);
    return JSON.parse(atob(padded));
  } catch {
    return {};
  }
}

/** When to renew a token that lives from `iatMs` to `expMs`: a quarter of its life (at most a
 * minute) before it expires. */
export function renewalTime(iatMs, expMs) {
  const lifetime = Math.max(0, expMs - iatMs);
  return expMs - Math.min(MAX_MARGIN_MS, lifetime / 4);
}

export class SessionExpired extends Error {}

export class Session extends EventTarget {
  constructor(storage = window.localStorage) {
    super();
    this.storage = storage;
    this.tokens = this.read();
    this.timer = null;
    this.renewing = null;
    window.addEventListener("storage", (event) => {
      if (event.key !== STORAGE_KEY) return;
      const tokens = this.read();
      if (!tokens) {
        this.tokens = null;
        this.dispatchEvent(new Event("signedout"));
      } else if (tokens.access !== this.tokens?.access) {
        this.tokens = tokens;
        this.schedule();
        this.dispatchEvent(new CustomEvent("refreshed", { detail: tokens.access }));
      }
    });
  }

  read() {
    try {
      const tokens = JSON.parse(this.storage.getItem(STORAGE_KEY) || "null");
      return tokens && tokens.access && tokens.refresh ? tokens : null;
    } catch {
      return null;
    }
  }

  get signedIn() {
    return this.tokens !== null;
  }

  get access() {
    return this.tokens?.access ?? null;
  }

  get refresh() {
    return this.tokens?.refresh ?? null;
  }

  start(tokens) {
    this.tokens = { access: tokens.access, refresh: tokens.refresh };
    this.storage.setItem(STORAGE_KEY, JSON.stringify(this.tokens));
    this.schedule();
  }

  clear() {
    clearTimeout(this.timer);
    this.timer = null;
    this.tokens = null;
    this.storage.removeItem(STORAGE_KEY);
  }

  expiresAt(token = this.access) {
    const { exp } = jwtPayload(token || "");
    return typeof exp === "number" ? exp * 1000 : 0;
  }

  /** True when the access token is missing, expired, or due for renewal. */
  due(token = this.access) {
    if (!token) return true;
    const { exp, iat } = jwtPayload(token);
    if (typeof exp !== "number") return true;
    return Date.now() >= renewalTime((iat ?? exp - 300) * 1000, exp * 1000);
  }

  schedule() {
    clearTimeout(this.timer);
    if (!this.tokens) return;
    const { exp, iat } = jwtPayload(this.access);
    if (typeof exp !== "number") return;
    const at = renewalTime((iat ?? exp - 300) * 1000, exp * 1000);
    this.timer = setTimeout(() => {
      this.renew().catch((error) => {
        if (!(error instanceof SessionExpired)) setTimeout(() => this.schedule(), 5_000);
      });
    }, Math.max(MIN_DELAY_MS, at - Date.now()));
  }

  /** A valid access token, renewed first if it is due. */
  async fresh() {
    if (!this.tokens) throw new SessionExpired("signed out");
    if (!this.due()) return this.access;
    return this.renew();
  }

  /** Renew the access token now (one renewal at a time, in this tab and across tabs). */
  renew({ force = false } = {}) {
    if (!this.renewing) {
      const run = () => this.renewNow(force);
      const locked = navigator.locks
        ? navigator.locks.request("chat.session.renew", run)
        : run();
      this.renewing = locked.finally(() => {
        this.renewing = null;
      });
    }
    return this.renewing;
  }

  async renewNow(force) {
    const stored = this.read();
    if (!stored) {
      this.tokens = null;
      this.dispatchEvent(new Event("signedout"));
      throw new SessionExpired("signed out");
    }
    // Another tab may have renewed while we waited for the lock.
    if (stored.access !== this.tokens?.access && !this.due(stored.access) && !force) {
      this.tokens = stored;
      this.schedule();
      this.dispatchEvent(new CustomEvent("refreshed", { detail: stored.access }));
      return stored.access;
    }
    let response;
    try {
      response = await fetch("/users/token/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ refresh: stored.refresh }),
        credentials: "omit",
      });
    } catch (error) {
      throw new Error(`network: ${error}`);
    }
    if (response.status === 401 || response.status === 400) {
      this.clear();
      this.dispatchEvent(new Event("signedout"));
      throw new SessionExpired("the session has ended");
    }
    if (!response.ok) throw new Error(`token refresh answered ${response.status}`);
    const body = await response.json();
    this.start({ access: body.access, refresh: body.refresh || stored.refresh });
    this.dispatchEvent(new CustomEvent("refreshed", { detail: body.access }));
    return body.access;
  }
}

// The one WebSocket of this tab (/chats/ws on this page's host), reopened whenever it drops.
//
// Reconnection waits backoffDelay(attempt) (exponential, full jitter, capped); the attempt
// count goes back to 0 once a connection has stayed open BACKOFF.stableMs. A close with 4401
// (token refused or expired) renews the token before the next attempt. A renewed token is
// sent in band on the open socket (`{"type": "auth"}`), so the socket outlives the token it
// was opened with.
//
// Events: "state" (detail: {state: "connecting"|"open"|"waiting"|"stopped", retryAt, code}),
// "open" (detail: {reconnected}), "event" (detail: one server event, parsed), "expired" (the
// session ended: the socket stopped for good).

import { BACKOFF, backoffDelay } from "./backoff.js";
import { SessionExpired } from "./session.js";

export class LiveSocket extends EventTarget {
  constructor(session, { backoff = BACKOFF } = {}) {
    super();
    this.session = session;
    this.backoff = backoff;
    this.ws = null;
    this.attempt = 0;
    this.opened = 0; // How many times a socket opened (1 = the first connection).
    this.stopped = true;
    this.retryTimer = null;
    this.stableTimer = null;
    this.state = "stopped";
    this.lastCode = null;
    this.onRefreshed = (event) => this.send({ type: "auth", token: event.detail });
    this.onOnline = () => {
      if (this.state === "waiting") this.retryNow();
    };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.session.addEventListener("refreshed", this.onRefreshed);
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    this.session.removeEventListener("refreshed", this.onRefreshed);
    window.removeEventListener("online", this.onOnline);
    clearTimeout(this.retryTimer);
    clearTimeout(this.stableTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000);
    }
    this.setState("stopped");
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Send one event; false when there is no open socket (the caller keeps it for later). */
  send(event) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(event));
    return true;
  }

  /** The session ended (the refresh token was refused): stop, and say so. */
  expired() {
    this.stop();
    this.dispatchEvent(new Event("expired"));
  }

  /** Skip the rest of the wait (the banner's "Reconnect now"). */
  retryNow() {
    if (this.stopped || this.state !== "waiting") return;
    clearTimeout(this.retryTimer);
    this.connect();
  }

  setState(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
  }

  async connect() {
    if (this.stopped) return;
    this.setState("connecting");
    let token;
    try {
      token = await this.session.fresh();
    } catch (error) {
      if (error instanceof SessionExpired) return this.expired();
      return this.scheduleRetry(null);
    }
    if (this.stopped) return;
    const scheme = window.location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${window.location.host}/chats/ws?token=${encodeURIComponent(token)}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (ws !== this.ws) return;
      this.opened += 1;
      this.stableTimer = setTimeout(() => {
        this.attempt = 0;
      }, this.backoff.stableMs);
      this.setState("open");
      this.dispatchEvent(new CustomEvent("open", { detail: { reconnected: this.opened > 1 } }));
    });
    ws.addEventListener("message", (frame) => {
      if (ws !== this.ws) return;
      let event;
      try {
        event = JSON.parse(frame.data);
      } catch {
        return;
      }
      this.dispatchEvent(new CustomEvent("event", { detail: event }));
    });
    ws.addEventListener("close", (close) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearTimeout(this.stableTimer);
      this.lastCode = close.code;
      if (!this.stopped) this.scheduleRetry(close.code);
    });
  }

  async scheduleRetry(code) {
    if (code === 4401) {
      try {
        await this.session.renew({ force: true });
      } catch (error) {
        if (error instanceof SessionExpired) return this.expired();
      }
    }
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.setState("waiting", { retryAt: Date.now() + delay, code });
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Drop the connection as a network failure would (the reconnect path runs as usual). */
  drop() {
    if (this.ws) this.ws.close(4000, "client reconnect");
  }
}

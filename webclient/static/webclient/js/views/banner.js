// The banner shown while the socket is down: when the next attempt is, and a button to try now.

import { h } from "../dom.js";

export class Banner {
  constructor(socket) {
    this.socket = socket;
    this.text = h("span", { class: "banner-text" });
    // The countdown changes every second: kept out of what screen readers announce.
    this.countdown = h("span", { class: "banner-countdown", "aria-hidden": "true" });
    this.retry = h(
      "button",
      { type: "button", class: "ghost small", onclick: () => socket.retryNow() },
      "Reconnect now",
    );
    this.element = h("div", { class: "banner", role: "status", hidden: true }, this.text, this.countdown, this.retry);
    this.timer = null;
    this.everOpen = false;
    socket.addEventListener("state", (event) => this.update(event.detail));
  }

  update({ state, retryAt }) {
    clearInterval(this.timer);
    if (state === "open") {
      this.everOpen = true;
      this.element.hidden = true;
      return;
    }
    if (state === "stopped") {
      this.element.hidden = true;
      return;
    }
    // The first connection gets a moment before the page complains.
    if (!this.everOpen && state === "connecting") return;
    this.element.hidden = false;
    this.retry.hidden = state !== "waiting";
    const text = this.everOpen
      ? "Connection lost. Reconnecting…"
      : "Cannot reach the server. Retrying…";
    if (this.text.textContent !== text) this.text.textContent = text;
    const tick = () => {
      const seconds = state === "waiting" ? Math.ceil((retryAt - Date.now()) / 1000) : 0;
      this.countdown.textContent = seconds > 0 ? ` (next try in ${seconds} s)` : "";
    };
    tick();
    if (state === "waiting") this.timer = setInterval(tick, 1000);
  }
}

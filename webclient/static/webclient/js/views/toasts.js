// Short notices (an action that failed, a chat that went away), read out by screen readers.

import { h } from "../dom.js";

const SHOW_MS = 6_000;

export class Toasts {
  constructor() {
    this.element = h("div", { class: "toasts", role: "status", "aria-live": "polite" });
  }

  show(text) {
    const toast = h("p", { class: "toast" }, text);
    this.element.append(toast);
    setTimeout(() => toast.remove(), SHOW_MS);
  }
}

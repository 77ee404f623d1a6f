// A modal panel on <dialog>: focus moves in and is trapped by the browser, Escape closes it,
// a click on the backdrop closes it, and focus returns where it was.

import { h } from "../dom.js";

export class Panel {
  constructor(titleText) {
    this.heading = h("h2", { class: "panel-title", id: `panel-${Math.random().toString(36).slice(2)}` }, titleText);
    this.body = h("div", { class: "panel-body" });
    this.element = h(
      "dialog",
      { class: "panel", "aria-labelledby": this.heading.id },
      h(
        "header",
        { class: "panel-head" },
        this.heading,
        h("button", { type: "button", class: "icon close", "aria-label": "Close", onclick: () => this.close() }, "×"),
      ),
      this.body,
    );
    this.element.addEventListener("click", (event) => {
      if (event.target === this.element) this.close();
    });
    this.element.addEventListener("close", () => {
      this.onClose?.();
      this.restoreFocus();
    });
  }

  showPanel() {
    this.opener = document.activeElement;
    if (!this.element.open) this.element.showModal();
  }

  close() {
    if (!this.element.open) return;
    this.element.close();
    this.restoreFocus();
  }

  /** Back to the element that opened the panel. Chromium restores focus itself but leaves
   * Tab's starting point inside the closed dialog (Tab then leaves the page); blurring first
   * makes focus() move that starting point too. */
  restoreFocus() {
    const opener = this.opener;
    this.opener = null;
    if (!opener?.isConnected) return;
    if (document.activeElement === opener) opener.blur();
    opener.focus();
  }
}

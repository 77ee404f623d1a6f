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
    // Escape closes the panel from anywhere in it (a search box would only clear itself).
    this.element.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        this.close();
      }
    });
    this.element.addEventListener("click", (event) => {
      if (event.target === this.element) this.close();
    });
    this.element.addEventListener("close", () => {
      this.onClose?.();
      if (this.opener?.isConnected) this.opener.focus();
    });
  }

  showPanel() {
    this.opener = document.activeElement;
    if (!this.element.open) this.element.showModal();
  }

  close() {
    if (this.element.open) this.element.close();
  }
}

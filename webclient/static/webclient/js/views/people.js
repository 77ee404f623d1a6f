// Searching people by username (GET /users?search=): a text box "Search people" and a list
// "People" whose items carry the buttons the caller asks for.

import { ApiError } from "../api.js";
import { h, fill, uid } from "../dom.js";
import { avatar } from "../format.js";

const DEBOUNCE_MS = 200;

export class PeopleSearch {
  /** `actions(user)` returns the buttons of one result; `exclude(user)` hides a result. */
  constructor(app, { actions, exclude = () => false, label = "Search people" }) {
    this.app = app;
    this.actions = actions;
    this.exclude = exclude;
    const id = uid("people");
    this.input = h("input", {
      id,
      type: "text", // Not "search": Escape there clears the box instead of closing the panel.
      autocomplete: "off",
      autocapitalize: "none",
      spellcheck: "false",
      placeholder: "Start typing a username",
    });
    this.status = h("p", { class: "people-status", role: "status" });
    this.list = h("ul", { class: "people", "aria-label": "People" });
    this.element = h(
      "div",
      { class: "people-search" },
      h("label", { for: id }, label),
      this.input,
      this.status,
      this.list,
    );
    this.timer = null;
    this.asked = 0;
    this.results = [];
    this.input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.search(), DEBOUNCE_MS);
    });
    this.input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") {
        event.preventDefault();
        clearTimeout(this.timer);
        this.search();
      }
    });
  }

  reset() {
    this.input.value = "";
    this.status.textContent = "";
    this.results = [];
    this.list.replaceChildren();
  }

  async search() {
    const text = this.input.value.trim();
    const asked = ++this.asked;
    if (!text) {
      this.results = [];
      this.status.textContent = "";
      this.list.replaceChildren();
      return;
    }
    try {
      const page = await this.app.api.searchUsers(text);
      if (asked !== this.asked) return;
      this.results = page.results.filter((user) => user.id !== this.app.store.me.id);
      for (const user of this.results) this.app.store.users.set(user.id, user.username);
      this.status.textContent = this.results.length ? "" : `Nobody's username starts with “${text}”.`;
      this.renderResults();
    } catch (error) {
      if (asked !== this.asked) return;
      this.results = [];
      this.list.replaceChildren();
      this.status.textContent =
        error instanceof ApiError && (error.status === 404 || error.status === 405)
          ? "This server cannot search people yet."
          : `Search failed: ${error.message}`;
    }
  }

  renderResults() {
    fill(
      this.list,
      this.results
        .filter((user) => !this.exclude(user))
        .map((user) =>
          h(
            "li",
            { class: "person" },
            avatar(user.username, { size: "small" }),
            h("span", { class: "person-name" }, user.username),
            h("span", { class: "person-actions" }, this.actions(user)),
          ),
        ),
    );
  }
}

// "New chat": find people by username, then message one of them (a direct chat, POST
// /chats/direct) or pick several and create a group (POST /chats).

import { h, fill, uid } from "../dom.js";
import { Panel } from "./dialog.js";
import { PeopleSearch } from "./people.js";

export class NewChatDialog {
  constructor(app) {
    this.app = app;
    this.panel = new Panel("New chat");
    this.element = this.panel.element;
    this.selected = new Map(); // id -> user
    this.search = new PeopleSearch(app, {
      actions: (user) => [
        h(
          "button",
          { type: "button", class: "primary small", "aria-label": `Message ${user.username}`, onclick: () => this.direct(user) },
          "Message",
        ),
        h(
          "button",
          {
            type: "button",
            class: "ghost small",
            "aria-pressed": this.selected.has(user.id) ? "true" : "false",
            "aria-label": `Add ${user.username} to the group`,
            onclick: () => this.toggle(user),
          },
          this.selected.has(user.id) ? "Added" : "Add to group",
        ),
      ],
    });
    const titleId = uid("group-title");
    this.titleInput = h("input", { id: titleId, maxlength: "200", autocomplete: "off" });
    this.chosen = h("ul", { class: "chips", "aria-label": "In the group" });
    this.error = h("p", { class: "form-error", role: "alert" });
    this.createButton = h("button", { type: "submit", class: "primary" }, "Create group");
    const form = h(
      "form",
      { class: "group-form" },
      h("h3", {}, "Or start a group"),
      this.chosen,
      h("div", { class: "field" }, h("label", { for: titleId }, "Group name (optional)"), this.titleInput),
      this.error,
      this.createButton,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.createGroup();
    });
    fill(this.panel.body, this.search.element, form);
  }

  open() {
    this.selected.clear();
    this.search.reset();
    this.titleInput.value = "";
    this.error.textContent = "";
    this.renderChosen();
    this.panel.showPanel();
    this.search.input.focus();
  }

  toggle(user) {
    if (this.selected.has(user.id)) this.selected.delete(user.id);
    else this.selected.set(user.id, user);
    this.search.renderResults();
    this.renderChosen();
  }

  renderChosen() {
    fill(
      this.chosen,
      [...this.selected.values()].map((user) =>
        h(
          "li",
          { class: "chip" },
          user.username,
          h(
            "button",
            { type: "button", class: "icon", "aria-label": `Remove ${user.username}`, onclick: () => this.toggle(user) },
            "×",
          ),
        ),
      ),
    );
    this.chosen.hidden = this.selected.size === 0;
  }

  async direct(user) {
    const chat = await this.app.attempt("Could not start the chat", () => this.app.api.directChat(user.id));
    if (chat) this.opened(chat);
  }

  async createGroup() {
    this.createButton.disabled = true;
    try {
      const chat = await this.app.api.createChat(this.titleInput.value.trim(), [...this.selected.keys()]);
      this.opened(chat);
    } catch (error) {
      this.error.textContent = error.message;
    } finally {
      this.createButton.disabled = false;
    }
  }

  opened(chat) {
    this.app.store.putChat(chat);
    this.app.store.emit("chats");
    this.panel.close();
    this.app.openChat(chat.id);
  }
}

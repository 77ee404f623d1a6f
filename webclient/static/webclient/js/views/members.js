// The members panel of a chat: who is in it; for a group's owner, rename it, add and remove
// people; for any member of a group, leave it.

import { h, fill, uid } from "../dom.js";
import { avatar } from "../format.js";
import { Panel } from "./dialog.js";
import { PeopleSearch } from "./people.js";

export class MembersDialog {
  constructor(app) {
    this.app = app;
    this.chatId = null;
    this.panel = new Panel("Members");
    this.element = this.panel.element;
    this.panel.onClose = () => {
      this.chatId = null;
    };
    this.search = new PeopleSearch(app, {
      label: "Add people",
      exclude: (user) => this.chat()?.members.some((member) => member.id === user.id),
      actions: (user) =>
        h(
          "button",
          { type: "button", class: "primary small", "aria-label": `Add ${user.username}`, onclick: () => this.add(user) },
          "Add",
        ),
    });
    app.store.addEventListener("chats", () => {
      if (this.chatId !== null && this.element.open) this.render();
    });
    app.store.addEventListener("removed", (event) => {
      if (event.detail === this.chatId) this.panel.close();
    });
  }

  chat() {
    return this.app.store.chats.get(this.chatId);
  }

  open(chatId) {
    this.chatId = chatId;
    this.search.reset();
    this.render();
    this.panel.showPanel();
  }

  render() {
    const chat = this.chat();
    if (!chat) return;
    const store = this.app.store;
    const me = store.me.id;
    const owner = chat.owner_id === me;
    const group = chat.kind !== "direct";
    this.panel.heading.textContent = group ? `Members of ${store.chatName(chat)}` : store.chatName(chat);
    const parts = [];
    if (group && owner) parts.push(this.renameForm(chat));
    parts.push(
      h("h3", {}, `Members (${chat.members.length})`),
      h(
        "ul",
        { class: "people", "aria-label": "Members" },
        chat.members.map((member) => {
          const tags = [];
          if (member.id === me) tags.push("you");
          if (member.id === chat.owner_id) tags.push("owner");
          return h(
            "li",
            { class: "person" },
            avatar(member.username, { size: "small" }),
            h(
              "span",
              { class: "person-name" },
              member.username,
              tags.length ? h("span", { class: "tag" }, ` ${tags.join(", ")}`) : null,
            ),
            group && owner && member.id !== me
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "ghost small",
                    "aria-label": `Remove ${member.username}`,
                    onclick: () => this.remove(member),
                  },
                  "Remove",
                )
              : null,
          );
        }),
      ),
    );
    if (group && owner) parts.push(this.search.element);
    if (group) {
      parts.push(
        h(
          "div",
          { class: "panel-foot" },
          h("button", { type: "button", class: "danger", onclick: () => this.leave() }, "Leave chat"),
        ),
      );
    } else {
      parts.push(h("p", { class: "muted" }, "A direct chat always has exactly these two people."));
    }
    fill(this.panel.body, parts);
    this.search.renderResults();
  }

  renameForm(chat) {
    const id = uid("chat-title");
    const input = h("input", { id, maxlength: "200", value: chat.title, autocomplete: "off" });
    const error = h("p", { class: "field-error", role: "alert" });
    const form = h(
      "form",
      { class: "rename" },
      h("label", { for: id }, "Chat name"),
      h("div", { class: "inline" }, input, h("button", { type: "submit", class: "ghost" }, "Rename")),
      error,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        const updated = await this.app.api.renameChat(chat.id, input.value.trim());
        this.app.store.putChat(updated);
        this.app.store.emit("chats");
        this.app.toasts.show("Chat renamed.");
      } catch (failure) {
        error.textContent = failure.field?.("title").join(" ") || failure.message;
      }
    });
    return form;
  }

  async add(user) {
    const chat = await this.app.attempt("Could not add", () => this.app.api.addMembers(this.chatId, [user.id]));
    if (chat) {
      this.app.store.putChat(chat);
      this.app.store.emit("chats");
    }
  }

  async remove(member) {
    const done = await this.app.attempt("Could not remove", async () => {
      await this.app.api.removeMember(this.chatId, member.id);
      return true;
    });
    if (done) this.app.refreshChat(this.chatId);
  }

  async leave() {
    const chatId = this.chatId;
    const done = await this.app.attempt("Could not leave", async () => {
      await this.app.api.leaveChat(chatId);
      return true;
    });
    if (done) {
      this.panel.close();
      this.app.store.removeChat(chatId);
      window.location.hash = "#/";
    }
  }
}

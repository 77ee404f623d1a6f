// The list labelled "Chats": one item per chat, most recent activity first, with its name
// (title, or the other person's username in a direct chat), the last message, the time and
// the unread count. Items are kept and updated in place, so keyboard focus stays put.

import { h, fill, srOnly } from "../dom.js";
import { avatar, listTime, names } from "../format.js";

export class ChatList {
  constructor(store) {
    this.store = store;
    this.items = new Map(); // chatId -> {li, link}
    this.selected = null;
    this.list = h("ul", { class: "chat-list", "aria-label": "Chats" });
    this.empty = h(
      "p",
      { class: "empty-list" },
      "No chats yet. Start one with ",
      h("strong", {}, "New chat"),
      ".",
    );
    this.element = h("nav", { class: "chat-nav", "aria-label": "Chat list" }, this.list, this.empty);
    store.addEventListener("chats", () => this.render());
    store.addEventListener("typing", () => this.render());
    this.render();
  }

  select(chatId) {
    this.selected = chatId;
    for (const [id, { link }] of this.items) {
      if (id === chatId) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
  }

  render() {
    const chats = this.store.sortedChats();
    const seen = new Set();
    let previous = null;
    for (const chat of chats) {
      seen.add(chat.id);
      let item = this.items.get(chat.id);
      if (!item) {
        const link = h("a", { class: "chat-link", href: `#/chats/${chat.id}` });
        item = { li: h("li", { class: "chat-item" }, link), link };
        this.items.set(chat.id, item);
      }
      this.fillItem(item, chat);
      const wanted = previous ? previous.nextSibling : this.list.firstChild;
      if (wanted !== item.li) this.list.insertBefore(item.li, wanted);
      previous = item.li;
    }
    for (const [id, item] of this.items) {
      if (!seen.has(id)) {
        item.li.remove();
        this.items.delete(id);
      }
    }
    this.empty.hidden = chats.length > 0;
    this.select(this.selected);
    const total = this.store.totalUnread();
    document.title = total ? `(${total}) Chat` : "Chat";
  }

  preview(chat) {
    const typing = this.store.typingNames(chat.id);
    if (typing.length) {
      return h("span", { class: "preview typing-preview" }, `${names(typing)} ${typing.length > 1 ? "are" : "is"} typing…`);
    }
    const message = chat.last_message;
    if (!message) return h("span", { class: "preview muted" }, "No messages yet");
    const me = this.store.me.id;
    const who =
      message.author_id === me
        ? "You: "
        : chat.kind === "direct"
          ? ""
          : `${this.store.username(message.author_id)}: `;
    return h("span", { class: "preview" }, who, message.text.slice(0, 200));
  }

  fillItem({ li, link }, chat) {
    const name = this.store.chatName(chat);
    const unread = chat.unread_count || 0;
    li.classList.toggle("has-unread", unread > 0);
    fill(
      link,
      avatar(name),
      h(
        "span",
        { class: "chat-main" },
        h(
          "span",
          { class: "chat-top" },
          h("span", { class: "chat-name" }, name),
          h("span", { class: "chat-time" }, listTime(chat.last_message?.created_at ?? chat.created_at)),
        ),
        h(
          "span",
          { class: "chat-bottom" },
          this.preview(chat),
          unread > 0
            ? h("span", { class: "badge" }, unread > 99 ? "99+" : String(unread), srOnly(" unread"))
            : null,
        ),
      ),
    );
  }
}

// One open chat: its header, the list labelled "Messages" (oldest at the top, older pages
// loaded while scrolling up), who is typing, and the composer (the text box "Message" and the
// button "Send": Enter sends, Shift+Enter starts a new line).
//
// Items are keyed (a message by its id, or by its client_id while it is ours, so that the
// "sending" item becomes the confirmed message in place) and rebuilt only when what they show
// changed. The scroll position is kept on the first visible item across renders, and stays at
// the bottom when it was there.

import { ApiError } from "../api.js";
import { h, fill, srOnly } from "../dom.js";
import { avatar, clock, dayKey, dayLabel, fullTime, names, richText } from "../format.js";

const GROUP_MS = 5 * 60_000;
const TYPING_EVERY_MS = 3_000;
const NEAR_TOP_PX = 400;
const AT_BOTTOM_PX = 48;
const TEXT_MAX = 4096;
export const QUICK_REACTIONS = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

function codePoints(text) {
  return [...text].length;
}

export class Conversation {
  constructor(app) {
    this.app = app;
    this.store = app.store;
    this.chatId = null;
    this.nodes = new Map(); // key -> li
    this.versions = new Map(); // key -> what the li shows
    this.drafts = new Map(); // chatId -> text not sent yet
    this.dividerAfter = null; // "New messages" goes above the first unread one of these
    this.editing = null; // message id being edited
    this.confirming = null; // message id whose deletion awaits a yes
    this.picking = null; // message id whose reaction picker is open
    this.lastTypingSent = 0;
    this.renderQueued = false;
    this.build();
    this.store.addEventListener("timeline", (event) => {
      if (event.detail === this.chatId) this.queueRender();
    });
    this.store.addEventListener("chats", () => {
      if (this.chatId !== null) this.renderHeader();
    });
    this.store.addEventListener("typing", (event) => {
      if (event.detail === this.chatId) this.renderTyping();
    });
    this.onVisible = () => this.markSeen();
    document.addEventListener("visibilitychange", this.onVisible);
    window.addEventListener("focus", this.onVisible);
  }

  destroy() {
    document.removeEventListener("visibilitychange", this.onVisible);
    window.removeEventListener("focus", this.onVisible);
  }

  build() {
    this.back = h("a", { class: "back", href: "#/", "aria-label": "Back to chats" }, "‹");
    this.avatarSlot = h("span", { class: "conv-avatar" });
    this.title = h("h2", { class: "conv-title" });
    this.subtitle = h("p", { class: "conv-sub" });
    this.membersButton = h(
      "button",
      { type: "button", class: "ghost", onclick: () => this.app.members.open(this.chatId) },
      "Members",
    );
    this.header = h(
      "header",
      { class: "conv-head" },
      this.back,
      this.avatarSlot,
      h("div", { class: "conv-heading" }, this.title, this.subtitle),
      this.membersButton,
    );
    this.start = h("p", { class: "history-start", hidden: true }, "This is the beginning of the chat.");
    this.loadingOlder = h("p", { class: "history-loading", hidden: true }, "Loading older messages…");
    this.status = h("p", { class: "history-status", role: "status" });
    this.list = h("ol", { class: "messages", "aria-label": "Messages" });
    this.scroller = h(
      "div",
      { class: "scroller", tabindex: "-1" },
      this.start,
      this.loadingOlder,
      this.status,
      this.list,
    );
    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    this.list.addEventListener("keydown", (event) => this.onListKey(event));
    this.typingLine = h("p", { class: "typing-line", "aria-live": "polite" });

    const composerId = "composer-text";
    this.input = h("textarea", {
      id: composerId,
      class: "composer-input",
      rows: "1",
      maxlength: String(TEXT_MAX * 2),
      autocomplete: "off",
    });
    this.sendButton = h("button", { type: "submit", class: "primary send" }, "Send");
    this.composerError = h("p", { class: "composer-error", role: "alert" });
    this.composer = h(
      "form",
      { class: "composer" },
      h("label", { for: composerId, class: "sr-only" }, "Message"),
      this.input,
      this.sendButton,
    );
    this.composer.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.input.addEventListener("keydown", (event) => this.onComposerKey(event));
    this.input.addEventListener("input", () => this.onInput());

    this.chatPane = h(
      "section",
      { class: "conv", hidden: true },
      this.header,
      this.scroller,
      this.typingLine,
      this.composerError,
      this.composer,
    );
    this.emptyPane = h(
      "div",
      { class: "conv-empty" },
      h("span", { class: "brand-mark large", "aria-hidden": "true" }),
      h("p", {}, "Pick a chat, or start one with New chat."),
    );
    this.element = h("main", { class: "conversation" }, this.emptyPane, this.chatPane);
  }

  // --- Showing a chat ------------------------------------------------------------------------

  show(chatId) {
    if (chatId === this.chatId) {
      if (chatId !== null) this.queueRender();
      return;
    }
    if (this.chatId !== null) this.drafts.set(this.chatId, this.input.value);
    this.chatId = chatId;
    this.nodes.clear();
    this.versions.clear();
    this.list.replaceChildren();
    this.editing = this.confirming = this.picking = null;
    this.stickToBottom = true;
    this.composerError.textContent = "";
    this.chatPane.hidden = chatId === null;
    this.emptyPane.hidden = chatId !== null;
    if (chatId === null) return;
    const chat = this.store.chats.get(chatId);
    this.dividerAfter = chat && chat.unread_count > 0 ? (chat.myCursor ?? 0) : null;
    this.input.value = this.drafts.get(chatId) || "";
    this.resizeInput();
    this.renderHeader();
    this.renderTyping();
    this.render();
    if (!window.matchMedia("(pointer: coarse)").matches) this.input.focus();
  }

  loadFailed(chatId, error) {
    if (chatId !== this.chatId) return;
    const retry = h(
      "button",
      { type: "button", class: "ghost small", onclick: () => this.app.loadTimeline(chatId) },
      "Try again",
    );
    fill(this.status, `Could not load the messages: ${error.message} `, retry);
  }

  renderHeader() {
    const chat = this.store.chats.get(this.chatId);
    if (!chat) {
      this.title.textContent = "…";
      this.subtitle.textContent = "";
      return;
    }
    const name = this.store.chatName(chat);
    this.title.textContent = name;
    fill(this.avatarSlot, avatar(name));
    const count = (chat.members || []).length;
    this.subtitle.textContent =
      chat.kind === "direct" ? "Direct chat" : `${count} member${count === 1 ? "" : "s"}`;
    this.input.placeholder = `Message ${name}`;
  }

  renderTyping() {
    const typing = this.store.typingNames(this.chatId);
    this.typingLine.textContent = typing.length
      ? `${names(typing)} ${typing.length > 1 ? "are" : "is"} typing…`
      : "";
  }

  // --- Rendering the messages ----------------------------------------------------------------

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  keyOf(message) {
    return message.client_id && message.author_id === this.store.me.id
      ? `c:${message.client_id}`
      : `m:${message.id}`;
  }

  /** Which of my messages carries "Seen by ...", and the names. */
  receipt(timeline, chat) {
    const me = this.store.me.id;
    const others = this.store.otherMembers(chat);
    for (let i = timeline.ids.length - 1; i >= 0; i -= 1) {
      const message = timeline.messages.get(timeline.ids[i]);
      if (message.author_id !== me || message.deleted) continue;
      const readers = others.filter((member) => (timeline.cursors.get(member.id) ?? 0) >= message.id);
      if (readers.length) return { id: message.id, names: readers.map((member) => member.username) };
    }
    return null;
  }

  items(timeline, chat) {
    const me = this.store.me.id;
    const receipt = this.receipt(timeline, chat);
    const items = [];
    let previous = null;
    let dividerPlaced = false;
    for (const id of timeline.ids) {
      const message = timeline.messages.get(id);
      const newDay = !previous || dayKey(previous.created_at) !== dayKey(message.created_at);
      const grouped =
        !newDay &&
        previous.author_id === message.author_id &&
        !previous.deleted &&
        Date.parse(message.created_at) - Date.parse(previous.created_at) < GROUP_MS;
      let divider = false;
      if (
        !dividerPlaced &&
        this.dividerAfter !== null &&
        id > this.dividerAfter &&
        message.author_id !== me
      ) {
        divider = dividerPlaced = true;
      }
      items.push({
        key: this.keyOf(message),
        message,
        grouped: grouped && !divider,
        day: newDay ? dayLabel(message.created_at) : null,
        divider,
        seenBy: receipt && receipt.id === id ? receipt.names : null,
      });
      previous = message;
    }
    for (const pending of timeline.pending.values()) {
      items.push({ key: `c:${pending.client_id}`, pending });
    }
    return items;
  }

  version(item, chat) {
    const { message, pending } = item;
    const shared = [item.grouped, item.day, item.divider, item.seenBy?.join(",")];
    if (pending) {
      return JSON.stringify([pending.status, pending.error, this.app.socket.isOpen, ...shared]);
    }
    return JSON.stringify([
      message.seq ?? null,
      message.text,
      message.edited_at ?? null,
      Boolean(message.deleted),
      message.reactions ?? null,
      this.editing === message.id,
      this.confirming === message.id,
      this.picking === message.id,
      chat.owner_id === this.store.me.id,
      ...shared,
    ]);
  }

  render() {
    const chatId = this.chatId;
    if (chatId === null) return;
    const chat = this.store.chats.get(chatId);
    const timeline = this.store.timelines.get(chatId);
    if (!chat || !timeline?.loaded) {
      if (!this.status.firstChild || this.status.textContent === "") {
        this.status.textContent = "Loading messages…";
      }
      return;
    }
    if (this.status.textContent) this.status.textContent = "";
    this.start.hidden = timeline.floor !== null;
    this.loadingOlder.hidden = !timeline.loadingOlder;

    const scroller = this.scroller;
    const atBottom =
      this.stickToBottom ||
      scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < AT_BOTTOM_PX;
    const anchor = atBottom ? null : this.firstVisible();
    const anchorTop = anchor ? anchor.getBoundingClientRect().top : 0;

    const items = this.items(timeline, chat);
    const focused = document.activeElement;
    const seen = new Set();
    let previous = null;
    for (const item of items) {
      seen.add(item.key);
      const version = this.version(item, chat);
      let li = this.nodes.get(item.key);
      if (!li || this.versions.get(item.key) !== version) {
        const fresh = item.pending ? this.buildPending(item) : this.buildMessage(item, chat);
        if (li) {
          const hadFocus = li.contains(focused);
          li.replaceWith(fresh);
          if (hadFocus) this.restoreFocus(fresh, focused);
        }
        li = fresh;
        this.nodes.set(item.key, li);
        this.versions.set(item.key, version);
      }
      const wanted = previous ? previous.nextSibling : this.list.firstChild;
      if (wanted !== li) this.list.insertBefore(li, wanted);
      previous = li;
    }
    for (const [key, li] of this.nodes) {
      if (!seen.has(key)) {
        li.remove();
        this.nodes.delete(key);
        this.versions.delete(key);
      }
    }
    this.ensureRovingFocus();

    if (atBottom) {
      scroller.scrollTop = scroller.scrollHeight;
    } else if (anchor && anchor.isConnected) {
      scroller.scrollTop += anchor.getBoundingClientRect().top - anchorTop;
    }
    this.stickToBottom = false;
    this.markSeen();
    this.maybeLoadOlder();
  }

  firstVisible() {
    const top = this.scroller.getBoundingClientRect().top;
    for (const li of this.list.children) {
      if (li.getBoundingClientRect().bottom > top) return li;
    }
    return null;
  }

  restoreFocus(li, previous) {
    const name = previous?.dataset?.action;
    const target = name ? li.querySelector(`[data-action="${name}"]`) : null;
    (target || li).focus({ preventScroll: true });
  }

  buildMessage(item, chat) {
    const { message } = item;
    const me = this.store.me.id;
    const own = message.author_id === me;
    const author = this.store.username(message.author_id);
    const classes = ["msg"];
    if (own) classes.push("own");
    if (item.grouped) classes.push("grouped");
    if (message.deleted) classes.push("deleted");
    const li = h("li", { class: classes.join(" "), tabindex: "-1", dataset: { id: message.id } });
    if (item.day) li.append(h("div", { class: "day-sep" }, h("span", {}, item.day)));
    if (item.divider) li.append(h("div", { class: "unread-sep" }, h("span", {}, "New messages")));

    const time = h(
      "time",
      { datetime: message.created_at, title: fullTime(message.created_at) },
      clock(message.created_at),
    );
    const meta = item.grouped
      ? h("div", { class: "msg-meta compact" }, srOnly(`${author} `), time)
      : h("div", { class: "msg-meta" }, h("span", { class: "author" }, author), " ", time);
    if (message.edited_at && !message.deleted) {
      meta.append(" ", h("span", { class: "edited", title: fullTime(message.edited_at) }, "(edited)"));
    }

    let body;
    if (message.deleted) {
      body = h("p", { class: "msg-text muted" }, "This message was deleted.");
    } else if (this.editing === message.id) {
      body = this.editor(message);
    } else {
      body = h("p", { class: "msg-text" }, richText(message.text));
    }

    const content = h("div", { class: "msg-content" }, meta, body);
    const reactions = this.reactionRow(message);
    if (reactions) content.append(reactions);
    if (this.picking === message.id) content.append(this.picker(message));
    if (this.confirming === message.id) content.append(this.confirmDelete(message));
    if (item.seenBy) {
      const text = chat.kind === "direct" ? "Seen" : `Seen by ${names(item.seenBy)}`;
      content.append(h("p", { class: "seen" }, text));
    }

    li.append(
      item.grouped ? h("span", { class: "avatar-gap", "aria-hidden": "true" }) : avatar(author),
      content,
    );
    if (!message.deleted && this.editing !== message.id) li.append(this.actions(message, chat));
    return li;
  }

  buildPending(item) {
    const { pending } = item;
    const me = this.store.me.username;
    const failed = pending.status === "failed";
    const li = h("li", {
      class: `msg own pending${failed ? " failed" : ""}${item.grouped ? " grouped" : ""}`,
      tabindex: "-1",
    });
    let status;
    if (failed) {
      status = h(
        "p",
        { class: "msg-status error" },
        `Not sent: ${pending.error || "error"}. `,
        h(
          "button",
          {
            type: "button",
            class: "link",
            dataset: { action: "retry" },
            onclick: () => this.app.sendPending(this.chatId, pending),
          },
          "Retry",
        ),
        " ",
        h(
          "button",
          {
            type: "button",
            class: "link",
            dataset: { action: "discard" },
            onclick: () => this.app.discardPending(this.chatId, pending.client_id),
          },
          "Discard",
        ),
      );
    } else {
      status = h(
        "p",
        { class: "msg-status" },
        this.app.socket.isOpen ? "Sending…" : "Waiting for the connection…",
      );
    }
    li.append(
      avatar(me),
      h(
        "div",
        { class: "msg-content" },
        h("div", { class: "msg-meta" }, h("span", { class: "author" }, me)),
        h("p", { class: "msg-text" }, richText(pending.text)),
        status,
      ),
    );
    return li;
  }

  reactionRow(message) {
    const reactions = message.reactions || {};
    const entries = Object.entries(reactions).filter(([, users]) => users.length);
    if (!entries.length || message.deleted) return null;
    const me = this.store.me.id;
    return h(
      "div",
      { class: "reactions" },
      entries.map(([emoji, users]) => {
        const mine = users.includes(me);
        const who = names(users.map((id) => (id === me ? "you" : this.store.username(id))));
        return h(
          "button",
          {
            type: "button",
            class: `reaction${mine ? " mine" : ""}`,
            "aria-pressed": mine ? "true" : "false",
            "aria-label": `${emoji} ${users.length}, by ${who}`,
            title: who,
            dataset: { action: `reaction-${emoji}` },
            onclick: () => this.react(message, emoji, !mine),
          },
          `${emoji} ${users.length}`,
        );
      }),
    );
  }

  actions(message, chat) {
    const me = this.store.me.id;
    const own = message.author_id === me;
    const buttons = [
      h(
        "button",
        {
          type: "button",
          class: "icon",
          "aria-label": "Add reaction",
          title: "Add reaction",
          "aria-expanded": this.picking === message.id ? "true" : "false",
          dataset: { action: "react" },
          onclick: () => this.toggle("picking", message.id),
        },
        "☺",
      ),
    ];
    if (own) {
      buttons.push(
        h(
          "button",
          { type: "button", class: "icon", dataset: { action: "edit" }, onclick: () => this.toggle("editing", message.id) },
          "Edit",
        ),
      );
    }
    if (own || chat.owner_id === me) {
      buttons.push(
        h(
          "button",
          { type: "button", class: "icon", dataset: { action: "delete" }, onclick: () => this.toggle("confirming", message.id) },
          "Delete",
        ),
      );
    }
    return h("div", { class: "msg-actions", role: "group", "aria-label": "Message actions" }, buttons);
  }

  toggle(state, id) {
    const value = this[state] === id ? null : id;
    this.editing = this.confirming = this.picking = null;
    this[state] = value;
    this.render();
    const li = this.liOf(id);
    if (!li) return;
    const first =
      li.querySelector(".editor textarea") ||
      li.querySelector(".picker button") ||
      li.querySelector(".confirm button");
    (first || li).focus({ preventScroll: true });
  }

  liOf(messageId) {
    const message = this.store.timelines.get(this.chatId)?.messages.get(messageId);
    return message ? this.nodes.get(this.keyOf(message)) : null;
  }

  closeTransient() {
    if (this.editing === null && this.confirming === null && this.picking === null) return false;
    const id = this.editing ?? this.confirming ?? this.picking;
    this.editing = this.confirming = this.picking = null;
    this.render();
    this.liOf(id)?.focus({ preventScroll: true });
    return true;
  }

  picker(message) {
    return h(
      "div",
      { class: "picker", role: "group", "aria-label": "Pick a reaction" },
      QUICK_REACTIONS.map((emoji) =>
        h(
          "button",
          {
            type: "button",
            class: "icon",
            "aria-label": `React with ${emoji}`,
            onclick: () => {
              this.picking = null;
              const mine = (message.reactions?.[emoji] || []).includes(this.store.me.id);
              this.react(message, emoji, !mine);
              this.render();
            },
          },
          emoji,
        ),
      ),
    );
  }

  confirmDelete(message) {
    return h(
      "div",
      { class: "confirm", role: "group", "aria-label": "Delete this message?" },
      h("span", {}, "Delete this message?"),
      h(
        "button",
        {
          type: "button",
          class: "danger small",
          onclick: async () => {
            this.confirming = null;
            await this.app.attempt("Could not delete", () =>
              this.app.api.deleteMessage(this.chatId, message.id),
            );
            this.render();
          },
        },
        "Yes, delete",
      ),
      h("button", { type: "button", class: "ghost small", onclick: () => this.closeTransient() }, "Cancel"),
    );
  }

  editor(message) {
    const textarea = h("textarea", { class: "edit-input", "aria-label": "Edit message", rows: "2" });
    textarea.value = message.text;
    const save = async () => {
      const text = textarea.value;
      if (!text.trim() || text === message.text) return this.closeTransient();
      const updated = await this.app.attempt("Could not edit", () =>
        this.app.api.editMessage(this.chatId, message.id, text),
      );
      if (updated) this.store.putUpdatedMessage(updated);
      this.closeTransient();
    };
    textarea.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save();
      } else if (event.key === "Escape") {
        event.preventDefault();
        this.closeTransient();
      }
    });
    return h(
      "div",
      { class: "editor" },
      textarea,
      h(
        "div",
        { class: "editor-actions" },
        h("button", { type: "button", class: "primary small", onclick: save }, "Save"),
        h("button", { type: "button", class: "ghost small", onclick: () => this.closeTransient() }, "Cancel"),
        h("span", { class: "hint" }, "Enter to save, Escape to cancel"),
      ),
    );
  }

  async react(message, emoji, on) {
    await this.app.attempt("Could not react", () =>
      this.app.api.react(this.chatId, message.id, emoji, on),
    );
  }

  // --- Keyboard ------------------------------------------------------------------------------

  /** One message of the list is in the tab order; arrows move between messages. */
  ensureRovingFocus() {
    const items = this.list.children;
    if (!items.length) return;
    let current = this.list.querySelector('li[tabindex="0"]');
    if (!current) {
      current = items[items.length - 1];
      current.setAttribute("tabindex", "0");
    }
  }

  moveFocus(li) {
    if (!li) return;
    for (const item of this.list.querySelectorAll('li[tabindex="0"]')) item.setAttribute("tabindex", "-1");
    li.setAttribute("tabindex", "0");
    li.focus();
  }

  onListKey(event) {
    const li = event.target.closest?.("li.msg");
    if (event.key === "Escape") {
      if (this.closeTransient()) event.preventDefault();
      return;
    }
    if (!li || event.target !== li) return;
    if (event.key === "ArrowUp") {
      event.preventDefault();
      this.moveFocus(li.previousElementSibling);
    } else if (event.key === "ArrowDown") {
      event.preventDefault();
      if (li.nextElementSibling) this.moveFocus(li.nextElementSibling);
      else this.input.focus();
    } else if (event.key === "Home") {
      event.preventDefault();
      this.moveFocus(this.list.firstElementChild);
    } else if (event.key === "End") {
      event.preventDefault();
      this.moveFocus(this.list.lastElementChild);
    }
  }

  onComposerKey(event) {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      this.submit();
    } else if (event.key === "ArrowUp" && this.input.value === "") {
      // Up in an empty composer edits your last message, as in Slack and Zulip.
      const timeline = this.store.timelines.get(this.chatId);
      const mine = timeline?.ids
        .map((id) => timeline.messages.get(id))
        .filter((m) => m.author_id === this.store.me.id && !m.deleted)
        .pop();
      if (mine) {
        event.preventDefault();
        this.toggle("editing", mine.id);
      }
    } else if (event.key === "Escape") {
      if (this.closeTransient()) event.preventDefault();
    }
  }

  onInput() {
    this.resizeInput();
    this.composerError.textContent = "";
    if (this.chatId === null || !this.input.value.trim()) return;
    const now = Date.now();
    if (now - this.lastTypingSent >= TYPING_EVERY_MS) {
      this.lastTypingSent = now;
      this.app.typing(this.chatId);
    }
  }

  resizeInput() {
    this.input.style.height = "auto";
    this.input.style.height = `${Math.min(this.input.scrollHeight, 200)}px`;
  }

  submit() {
    const text = this.input.value;
    if (this.chatId === null || !text.trim()) return;
    if (codePoints(text) > TEXT_MAX) {
      this.composerError.textContent = `A message holds at most ${TEXT_MAX} characters (this one has ${codePoints(text)}).`;
      return;
    }
    this.app.send(this.chatId, text);
    this.input.value = "";
    this.drafts.delete(this.chatId);
    this.lastTypingSent = 0;
    this.resizeInput();
    this.stickToBottom = true;
    this.render();
  }

  // --- Scrolling and reading -----------------------------------------------------------------

  onScroll() {
    if (this.scrollQueued) return;
    this.scrollQueued = true;
    requestAnimationFrame(() => {
      this.scrollQueued = false;
      this.maybeLoadOlder();
      this.markSeen();
    });
  }

  maybeLoadOlder() {
    const timeline = this.store.timelines.get(this.chatId);
    if (!timeline?.older || timeline.loadingOlder || this.scroller.scrollTop > NEAR_TOP_PX) return;
    const chatId = this.chatId;
    this.loadingOlder.hidden = false;
    this.app.loadOlder(chatId).catch((error) => {
      if (chatId !== this.chatId) return;
      this.loadingOlder.hidden = true;
      if (!(error instanceof ApiError)) throw error;
      this.app.toasts.show(`Could not load older messages: ${error.message}`);
    });
  }

  /** Move the read cursor to the newest message on screen (only while the page is seen). */
  markSeen() {
    if (this.chatId === null || document.visibilityState !== "visible") return;
    const timeline = this.store.timelines.get(this.chatId);
    if (!timeline?.loaded || !timeline.ids.length) return;
    const bottom = this.scroller.getBoundingClientRect().bottom;
    for (let i = timeline.ids.length - 1; i >= 0; i -= 1) {
      const message = timeline.messages.get(timeline.ids[i]);
      const li = this.nodes.get(this.keyOf(message));
      if (!li) continue;
      if (li.getBoundingClientRect().top < bottom - 8) {
        this.app.markRead(this.chatId, message.id);
        return;
      }
    }
  }
}

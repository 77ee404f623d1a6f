// The signed-in page: the store, the socket and the views, and how they are kept in sync.
//
// Every time the socket (re)opens, live events are queued while the page catches up: the chat
// list is read again, then each loaded chat is read from where this tab left it
// (`since_seq` = the largest seq applied, or `after` = the largest id with a server that has
// no seq), and only then are the queued events applied (the store drops what it already
// has). Messages still waiting for their echo are then sent again with the same client_id,
// which the server turns into the original message if it had stored it.

import { ApiError } from "./api.js";
import { h, fill } from "./dom.js";
import { randomId } from "./format.js";
import { SessionExpired } from "./session.js";
import { LiveSocket } from "./socket.js";
import { Store } from "./store.js";
import { Banner } from "./views/banner.js";
import { ChatList } from "./views/chatlist.js";
import { Conversation } from "./views/conversation.js";
import { MembersDialog } from "./views/members.js";
import { NewChatDialog } from "./views/newchat.js";
import { Toasts } from "./views/toasts.js";

const PAGE_SIZE = 50;
const CATCH_UP_PAGE = 200;
const RETRY_SEND_MS = 2_000;

export class ChatApp {
  constructor(root, { api, session, me, onSignOut }) {
    this.root = root;
    this.api = api;
    this.session = session;
    this.onSignOut = onSignOut;
    this.store = new Store(me);
    this.socket = new LiveSocket(session);
    this.syncing = true;
    this.queue = [];
    this.generation = 0;
    this.ready = false;
    this.currentChatId = null;
    this.staleTimers = new Map();
    this.unknown = new Map(); // chatId -> events of a chat not fetched yet

    this.toasts = new Toasts();
    this.banner = new Banner(this.socket);
    this.chatList = new ChatList(this.store);
    this.conversation = new Conversation(this);
    this.newChat = new NewChatDialog(this);
    this.members = new MembersDialog(this);
    this.layout();
    this.listen();
  }

  layout() {
    const me = this.store.me;
    const sidebar = h(
      "aside",
      { class: "sidebar", "aria-label": "Your chats" },
      h(
        "header",
        { class: "sidebar-head" },
        h(
          "div",
          { class: "me" },
          h("span", { class: "brand-mark small", "aria-hidden": "true" }),
          h("span", { class: "me-name", title: `Signed in as ${me.username}` }, me.username),
        ),
        h("button", { type: "button", class: "ghost small", onclick: () => this.logout() }, "Log out"),
      ),
      h(
        "div",
        { class: "sidebar-actions" },
        h(
          "button",
          { type: "button", class: "primary new-chat", onclick: () => this.newChat.open() },
          "New chat",
        ),
      ),
      this.chatList.element,
    );
    fill(
      this.root,
      this.banner.element,
      h("div", { class: "shell" }, sidebar, this.conversation.element),
      this.newChat.element,
      this.members.element,
      this.toasts.element,
    );
    this.root.className = "app signed-in";
    this.root.removeAttribute("aria-busy");
  }

  listen() {
    this.socket.addEventListener("open", () => this.resync());
    this.socket.addEventListener("event", (event) => {
      if (this.syncing) this.queue.push(event.detail);
      else this.handle(event.detail);
    });
    this.socket.addEventListener("state", (event) => {
      if (event.detail.state !== "open") this.syncing = true;
      // "Sending…" or "Waiting for the connection…" on messages not confirmed yet.
      if (this.currentChatId !== null) this.store.emit("timeline", this.currentChatId);
    });
    this.socket.addEventListener("expired", () => this.onSignOut());
    this.store.addEventListener("stale", (event) => this.refreshChat(event.detail));
    this.store.addEventListener("removed", (event) => {
      if (event.detail === this.currentChatId) {
        this.toasts.show("You are no longer a member of that chat.");
        window.location.hash = "#/";
      }
    });
    this.onHash = () => this.route();
    window.addEventListener("hashchange", this.onHash);
    this.onKey = (event) => {
      if (event.key === "Escape" && !event.defaultPrevented && this.currentChatId !== null) {
        // Escape closes what is open: a dialog handles its own; then the open chat (phone).
        if (window.matchMedia("(max-width: 720px)").matches) window.location.hash = "#/";
      }
    };
    document.addEventListener("keydown", this.onKey);
  }

  start() {
    this.socket.start();
    this.route();
  }

  destroy() {
    this.generation += 1;
    this.socket.stop();
    window.removeEventListener("hashchange", this.onHash);
    document.removeEventListener("keydown", this.onKey);
    this.conversation.destroy();
  }

  // --- Routing: #/ (the list) and #/chats/<id> ---------------------------------------------

  route() {
    const match = window.location.hash.match(/^#\/chats\/(\d+)$/);
    const chatId = match ? Number(match[1]) : null;
    this.currentChatId = chatId;
    this.root.dataset.view = chatId === null ? "list" : "chat";
    this.chatList.select(chatId);
    if (chatId !== null && this.ready && !this.store.chats.has(chatId)) {
      this.toasts.show("That chat does not exist, or you are not a member of it.");
      window.location.hash = "#/";
      return;
    }
    this.conversation.show(chatId);
    if (chatId !== null && this.ready) this.loadTimeline(chatId);
  }

  openChat(chatId) {
    window.location.hash = `#/chats/${chatId}`;
  }

  // --- Synchronisation ---------------------------------------------------------------------

  async resync() {
    const generation = ++this.generation;
    this.syncing = true;
    this.queue = [];
    try {
      const chats = await this.api.chats();
      if (generation !== this.generation) return;
      this.store.setChats(chats);
      const loaded = [...this.store.timelines.values()];
      await Promise.all(loaded.map((timeline) => timeline.loading).filter(Boolean));
      await Promise.all(loaded.filter((t) => t.loaded).map((t) => this.catchUp(t, generation)));
      if (generation !== this.generation) return;
      const queued = this.queue;
      this.queue = [];
      this.syncing = false;
      for (const event of queued) this.handle(event);
      this.ready = true;
      this.resendPending();
      this.route();
    } catch (error) {
      if (generation !== this.generation) return;
      if (error instanceof SessionExpired) return this.onSignOut();
      this.toasts.show(`Could not load your chats: ${error.message}`);
      this.socket.drop(); // Try again through the reconnection path, with its backoff.
    }
  }

  /** Everything a loaded chat missed while the socket was down. */
  async catchUp(timeline, generation) {
    const chatId = timeline.chatId;
    if (!this.store.chats.has(chatId)) return;
    const bySeq = timeline.seqKnown;
    let url = bySeq
      ? `/chats/${chatId}/messages?since_seq=${timeline.maxSeq}&limit=${CATCH_UP_PAGE}`
      : `/chats/${chatId}/messages?after=${timeline.newestId}&limit=${CATCH_UP_PAGE}`;
    while (url && generation === this.generation) {
      let page;
      try {
        page = await this.api.get(url);
      } catch (error) {
        if (error instanceof ApiError && error.status === 404) {
          this.store.removeChat(chatId);
          return;
        }
        if (error instanceof ApiError && error.status === 400 && url.includes("since_seq")) {
          url = `/chats/${chatId}/messages?after=${timeline.newestId}&limit=${CATCH_UP_PAGE}`;
          continue;
        }
        throw error;
      }
      if (generation !== this.generation) return;
      this.store.putPage(chatId, page, "catch-up");
      url = page.next;
    }
  }

  /** One server event. */
  handle(event) {
    const store = this.store;
    const chatId = event.chat_id ?? event.message?.chat_id;
    if (chatId !== undefined && event.type !== "chat_updated" && event.type !== "chat_removed"
        && event.type !== "error" && !store.chats.has(chatId)) {
      // A chat we were just added to (a server before v2 sends no chat_updated): fetch it,
      // then apply what came meanwhile, so its unread count misses nothing.
      if (!this.unknown.has(chatId)) this.unknown.set(chatId, []);
      this.unknown.get(chatId).push(event);
      this.refreshChat(chatId);
      return;
    }
    switch (event.type) {
      case "new_message":
        store.putNewMessage(event.message);
        break;
      case "message_updated":
        store.putUpdatedMessage(event.message);
        break;
      case "message_read":
        store.putRead(event.chat_id, event.user_id, event.message_id);
        break;
      case "typing":
        store.putTyping(event.chat_id, event.user_id);
        break;
      case "chat_updated":
        store.putChatInfo(event.chat);
        break;
      case "chat_removed":
        store.removeChat(event.chat_id);
        break;
      case "error":
        this.handleError(event);
        break;
      default:
        break; // "authenticated", and anything newer than this page.
    }
  }

  handleError(event) {
    const request = event.request || {};
    if (request.type === "auth") return; // A server before v2: the socket lives on anyway.
    if (request.type === "new_message" && request.client_id) {
      const pending = this.store.timelines.get(request.chat_id)?.pending.get(request.client_id);
      if (!pending) return;
      if (event.code === "rate_limited" || event.code === "server_error") {
        pending.sentOn = null;
        setTimeout(() => this.sendPending(request.chat_id, pending), RETRY_SEND_MS);
        return;
      }
      this.store.pendingFailed(request.chat_id, request.client_id, event.detail);
      return;
    }
    if (request.type === "typing" || request.type === "read_message") return;
    this.toasts.show(event.detail || event.code);
  }

  /** Ask the server for one chat again (a chat we were added to, counts we cannot tell). */
  refreshChat(chatId) {
    if (this.staleTimers.has(chatId)) return;
    this.staleTimers.set(
      chatId,
      setTimeout(async () => {
        this.staleTimers.delete(chatId);
        try {
          const chat = await this.api.chat(chatId);
          const held = this.store.chats.get(chatId);
          this.store.putChat(chat);
          if (held) this.store.chats.get(chatId).maxSeenId = Math.max(held.maxSeenId, chat.last_message?.id ?? 0);
          this.store.emit("chats");
          this.store.emit("timeline", chatId);
          const waiting = this.unknown.get(chatId) || [];
          this.unknown.delete(chatId);
          for (const event of waiting) this.handle(event);
          if (this.currentChatId === chatId) this.route();
        } catch (error) {
          if (error instanceof ApiError && error.status === 404) {
            this.unknown.delete(chatId);
            this.store.removeChat(chatId);
          }
        }
      }, 150),
    );
  }

  // --- History -------------------------------------------------------------------------------

  loadTimeline(chatId) {
    const timeline = this.store.timeline(chatId);
    if (timeline.loaded) return Promise.resolve(timeline);
    if (!timeline.loading) {
      timeline.loading = this.api
        .history(chatId, PAGE_SIZE)
        .then((page) => {
          this.store.putPage(chatId, page, "first");
          return timeline;
        })
        .catch((error) => {
          timeline.buffer = [];
          this.conversation.loadFailed(chatId, error);
          throw error;
        })
        .finally(() => {
          timeline.loading = null;
        });
      timeline.loading.catch(() => {});
    }
    return timeline.loading;
  }

  async loadOlder(chatId) {
    const timeline = this.store.timelines.get(chatId);
    if (!timeline?.older || timeline.loadingOlder) return false;
    timeline.loadingOlder = this.api
      .get(timeline.older)
      .then((page) => this.store.putPage(chatId, page, "older"))
      .finally(() => {
        timeline.loadingOlder = null;
      });
    await timeline.loadingOlder;
    return true;
  }

  // --- Sending -------------------------------------------------------------------------------

  send(chatId, text) {
    const pending = { client_id: randomId(), chat_id: chatId, text, status: "sending", sentOn: null };
    this.store.addPending(chatId, pending);
    this.sendPending(chatId, pending);
  }

  sendPending(chatId, pending) {
    const held = this.store.timelines.get(chatId)?.pending.get(pending.client_id);
    if (!held) return; // Confirmed meanwhile.
    pending.status = "sending";
    pending.error = null;
    if (this.syncing) return; // Sent once the catch-up is done (resendPending).
    const sent = this.socket.send({
      type: "new_message",
      chat_id: chatId,
      text: pending.text,
      client_id: pending.client_id,
    });
    if (sent) pending.sentOn = this.socket.opened;
    this.store.emit("timeline", chatId);
  }

  resendPending() {
    for (const timeline of this.store.timelines.values()) {
      for (const pending of timeline.pending.values()) {
        if (pending.status === "failed" || pending.sentOn === this.socket.opened) continue;
        this.sendPending(timeline.chatId, pending);
      }
    }
  }

  discardPending(chatId, clientId) {
    this.store.timelines.get(chatId)?.pending.delete(clientId);
    this.store.emit("timeline", chatId);
  }

  markRead(chatId, messageId) {
    const chat = this.store.chats.get(chatId);
    if (!chat || (chat.myCursor != null && messageId <= chat.myCursor)) return;
    this.store.putRead(chatId, this.store.me.id, messageId);
    if (!this.socket.send({ type: "read_message", chat_id: chatId, id: messageId })) {
      this.api.markRead(chatId, messageId).catch(() => {});
    }
  }

  typing(chatId) {
    this.socket.send({ type: "typing", chat_id: chatId });
  }

  // --- Account -------------------------------------------------------------------------------

  async logout() {
    const refresh = this.session.refresh;
    this.destroy();
    try {
      if (refresh) await this.api.logout(refresh);
    } catch {
      // A server without /users/logout (before v2) or unreachable: the tokens are forgotten.
    }
    this.session.clear();
    this.onSignOut();
  }

  /** Run an API call from a button; its error becomes a toast. */
  async attempt(what, call) {
    try {
      return await call();
    } catch (error) {
      if (error instanceof SessionExpired) {
        this.onSignOut();
        return undefined;
      }
      this.toasts.show(`${what}: ${error.message}`);
      return undefined;
    }
  }
}

// What this tab knows: the signed-in user, the chats, and the messages of the chats opened
// so far (a Timeline each). Everything that changes it goes through the methods here, whether
// it came from the socket, from history pages or from a catch-up after a reconnect, so that
// the same message arriving twice (live and through catch-up) is applied once:
// - messages are kept by id; a copy with a lower or equal `seq` than the one held is stale;
// - a chat's unread count grows only for a message id above the largest it has counted.
//
// Events: "chats" (the list changed), "timeline" (detail: chatId), "typing" (detail: chatId),
// "removed" (detail: chatId), "stale" (detail: chatId: ask the server for this chat again).

const TYPING_SHOW_MS = 5_000;
const UNPLACED_KEEP = 500;

export function hasSeq(message) {
  return typeof message.seq === "number";
}

/** True when `incoming` is not newer than `held` (same message). Without `seq` (a server
 * before v2) messages never change, so the incoming copy is as good as the held one. */
export function isStale(held, incoming) {
  if (hasSeq(held) && hasSeq(incoming)) return incoming.seq <= held.seq;
  return false;
}

/** The messages of one chat that this tab has loaded: a contiguous range of ids from `floor`
 * (null: from the chat's first message) to the newest, plus the messages being sent. */
export class Timeline {
  constructor(chatId, meId) {
    this.chatId = chatId;
    this.meId = meId;
    this.messages = new Map(); // id -> Message
    this.ids = []; // ascending
    this.pending = new Map(); // client_id -> {client_id, text, status, error, sentOn}
    this.floor = undefined; // undefined: not loaded; null: loaded from the first message
    this.older = null; // URL of the next older page, null when there is none
    this.loadingOlder = null;
    this.loading = null; // promise of the first page
    this.buffer = []; // messages that arrived while the first page was loading
    this.maxSeq = 0;
    this.seqKnown = false; // the server stamps messages with `seq` (v2)
    this.cursors = new Map(); // user_id -> message_id (null: nothing read)
    this.unplaced = new Map(); // id -> newest copy of a message outside the loaded range
  }

  get loaded() {
    return this.floor !== undefined;
  }

  get newestId() {
    return this.ids.length ? this.ids[this.ids.length - 1] : 0;
  }

  covers(id) {
    if (this.floor === undefined) return false;
    return this.floor === null || id >= this.floor;
  }

  /** Apply one message (any source). Returns true when something visible changed. */
  put(message) {
    if (hasSeq(message)) {
      this.seqKnown = true;
      if (message.seq > this.maxSeq) this.maxSeq = message.seq;
    }
    if (!this.loaded) {
      this.buffer.push(message);
      return false;
    }
    if (!this.covers(message.id)) {
      const held = this.unplaced.get(message.id);
      if (!held || !isStale(held, message)) this.unplaced.set(message.id, message);
      if (this.unplaced.size > UNPLACED_KEEP) {
        this.unplaced.delete(this.unplaced.keys().next().value);
      }
      return false;
    }
    const held = this.messages.get(message.id);
    if (held && isStale(held, message)) return false;
    this.messages.set(message.id, message);
    if (!held) this.insertId(message.id);
    if (message.client_id && message.author_id === this.meId) {
      this.pending.delete(message.client_id);
    }
    return true;
  }

  insertId(id) {
    const ids = this.ids;
    if (!ids.length || id > ids[ids.length - 1]) {
      ids.push(id);
      return;
    }
    let low = 0;
    let high = ids.length;
    while (low < high) {
      const mid = (low + high) >> 1;
      if (ids[mid] < id) low = mid + 1;
      else high = mid;
    }
    ids.splice(low, 0, id);
  }

  /** A history page: the first one (newest first), an older one, or a catch-up page. */
  putPage(page, { kind }) {
    const results = page.results || [];
    if (kind === "first" || kind === "older") {
      const lowest = results.reduce((low, m) => Math.min(low, m.id), Infinity);
      const floor = page.next ? lowest : null;
      if (kind === "first" || this.floor === undefined || floor === null || floor < this.floor) {
        this.floor = floor === Infinity ? null : floor;
      }
      this.older = page.next || null;
    }
    for (const message of results) this.put(message);
    for (const cursor of page.read_cursors || []) this.putCursor(cursor.user_id, cursor.message_id);
    if (kind === "first") {
      const buffered = this.buffer;
      this.buffer = [];
      for (const message of buffered) this.put(message);
    }
    for (const [id, message] of this.unplaced) {
      if (this.covers(id)) {
        this.unplaced.delete(id);
        this.put(message);
      }
    }
  }

  putCursor(userId, messageId) {
    const held = this.cursors.get(userId);
    if (messageId === null || messageId === undefined) {
      if (!this.cursors.has(userId)) this.cursors.set(userId, null);
      return false;
    }
    if (held === undefined || held === null || messageId > held) {
      this.cursors.set(userId, messageId);
      return true;
    }
    return false;
  }

  /** Newest message that is not deleted, or null. */
  newestVisible() {
    for (let i = this.ids.length - 1; i >= 0; i -= 1) {
      const message = this.messages.get(this.ids[i]);
      if (!message.deleted) return message;
    }
    return null;
  }

  /** Unread messages after `cursor`, when every one of them is loaded; else null. */
  countAfter(cursor) {
    const from = cursor ?? 0;
    if (this.floor === undefined) return null;
    if (this.floor !== null && !(this.floor <= from)) return null;
    let count = 0;
    for (let i = this.ids.length - 1; i >= 0 && this.ids[i] > from; i -= 1) {
      const message = this.messages.get(this.ids[i]);
      if (message.author_id !== this.meId && !message.deleted) count += 1;
    }
    return count;
  }
}

export class Store extends EventTarget {
  constructor(me) {
    super();
    this.me = me;
    this.users = new Map([[me.id, me.username]]);
    this.chats = new Map();
    this.timelines = new Map();
    this.typing = new Map(); // chatId -> Map(userId -> expiresAt)
    this.typingTimers = new Map();
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  username(userId) {
    return this.users.get(userId) ?? `user ${userId}`;
  }

  // --- Chats ---------------------------------------------------------------------------------

  learnMembers(chat) {
    for (const member of chat.members || []) this.users.set(member.id, member.username);
  }

  /** A chat as the server gave it (GET /chats, GET /chats/{id}). */
  putChat(data) {
    const held = this.chats.get(data.id);
    const chat = {
      kind: "group",
      owner_id: null,
      ...held,
      ...data,
      myCursor: held?.myCursor,
      maxSeenId: Math.max(held?.maxSeenId ?? 0, data.last_message?.id ?? 0),
    };
    this.chats.set(chat.id, chat);
    this.learnMembers(chat);
    // Its last_message is not put in the timeline: a timeline holds a contiguous range, and
    // the messages before that one may not be loaded yet (catch-up fills them in order).
    return chat;
  }

  /** The whole list, as after a (re)connection: chats no longer listed are gone. */
  setChats(list) {
    const ids = new Set(list.map((chat) => chat.id));
    for (const id of [...this.chats.keys()]) {
      if (!ids.has(id)) this.dropChat(id);
    }
    for (const data of list) {
      // The list's counts are fresh: they replace what live events had added.
      const chat = this.putChat(data);
      chat.unread_count = data.unread_count;
      chat.maxSeenId = data.last_message?.id ?? 0;
      const timeline = this.timelines.get(chat.id);
      if (timeline) {
        const mine = timeline.cursors.get(this.me.id);
        if (mine !== undefined) chat.myCursor = mine;
      }
    }
    this.emit("chats");
  }

  /** `chat_updated`: a ChatInfo (no last_message or unread_count of its own). */
  putChatInfo(info) {
    const isNew = !this.chats.has(info.id);
    const { last_message: _lm, unread_count: _uc, ...fields } = info;
    this.putChat({ last_message: null, unread_count: 0, ...this.chats.get(info.id), ...fields });
    this.emit("chats");
    this.emit("timeline", info.id);
    if (isNew) this.emit("stale", info.id); // Its last message and unread count.
  }

  dropChat(chatId) {
    this.chats.delete(chatId);
    this.timelines.delete(chatId);
    this.typing.delete(chatId);
    this.emit("removed", chatId);
  }

  removeChat(chatId) {
    if (!this.chats.has(chatId)) return;
    this.dropChat(chatId);
    this.emit("chats");
  }

  otherMembers(chat) {
    return (chat.members || []).filter((member) => member.id !== this.me.id);
  }

  chatName(chat) {
    if (chat.title) return chat.title;
    const others = this.otherMembers(chat);
    if (chat.kind === "direct") return others[0]?.username ?? "Direct chat";
    if (!others.length) return "Just you";
    const names = others.map((member) => member.username);
    return names.length <= 3 ? names.join(", ") : `${names.slice(0, 3).join(", ")} +${names.length - 3}`;
  }

  activity(chat) {
    return Date.parse(chat.last_message?.created_at ?? chat.created_at) || 0;
  }

  sortedChats() {
    return [...this.chats.values()].sort(
      (a, b) => this.activity(b) - this.activity(a) || b.id - a.id,
    );
  }

  totalUnread() {
    let total = 0;
    for (const chat of this.chats.values()) total += chat.unread_count || 0;
    return total;
  }

  timeline(chatId) {
    let timeline = this.timelines.get(chatId);
    if (!timeline) {
      timeline = new Timeline(chatId, this.me.id);
      this.timelines.set(chatId, timeline);
    }
    return timeline;
  }

  // --- Messages ------------------------------------------------------------------------------

  /** `new_message` (live) or a sent message confirmed. */
  putNewMessage(message) {
    const chat = this.chats.get(message.chat_id);
    if (!chat) {
      this.emit("stale", message.chat_id); // A chat we were just added to.
      return;
    }
    const timeline = this.timelines.get(chat.id);
    if (timeline) timeline.put(message);
    if (!message.deleted && (!chat.last_message || message.id >= chat.last_message.id)) {
      chat.last_message = message;
    }
    if (message.id > chat.maxSeenId) {
      chat.maxSeenId = message.id;
      if (message.author_id === this.me.id) {
        // Sending moves the author's own cursor to the message.
        chat.myCursor = Math.max(chat.myCursor ?? 0, message.id);
        timeline?.putCursor(this.me.id, message.id);
        chat.unread_count = timeline?.countAfter(message.id) ?? 0;
      } else if (!message.deleted && (chat.myCursor == null || message.id > chat.myCursor)) {
        chat.unread_count = (chat.unread_count || 0) + 1;
      }
    }
    this.stopTyping(chat.id, message.author_id);
    this.emit("chats");
    if (timeline) this.emit("timeline", chat.id);
  }

  /** `message_updated` (v2): an edit, a deletion or a reaction. */
  putUpdatedMessage(message) {
    const chat = this.chats.get(message.chat_id);
    if (!chat) return;
    const timeline = this.timelines.get(chat.id);
    if (timeline) timeline.put(message);
    if (chat.last_message?.id === message.id) {
      if (!message.deleted) chat.last_message = message;
      else {
        const newest = timeline?.loaded ? timeline.newestVisible() : null;
        chat.last_message = newest;
        if (!newest || timeline.floor !== null) this.emit("stale", chat.id);
      }
    }
    if (message.deleted && message.author_id !== this.me.id && chat.unread_count > 0) {
      const counted = timeline?.countAfter(chat.myCursor);
      if (counted !== null && counted !== undefined) chat.unread_count = counted;
      else this.emit("stale", chat.id);
    }
    this.emit("chats");
    if (timeline) this.emit("timeline", chat.id);
  }

  /** A catch-up or history page for a chat. */
  putPage(chatId, page, kind) {
    const timeline = this.timeline(chatId);
    timeline.putPage(page, { kind });
    const chat = this.chats.get(chatId);
    if (chat) {
      const mine = timeline.cursors.get(this.me.id);
      if (mine !== undefined && (chat.myCursor == null || (mine ?? 0) > chat.myCursor)) {
        chat.myCursor = mine;
      }
      const newest = timeline.newestVisible();
      if (newest && (!chat.last_message || newest.id >= chat.last_message.id)) {
        chat.last_message = newest;
      }
      this.emit("chats");
    }
    this.emit("timeline", chatId);
  }

  /** `message_read`, or our own cursor moved by this tab. */
  putRead(chatId, userId, messageId) {
    const chat = this.chats.get(chatId);
    if (!chat) return;
    const timeline = this.timelines.get(chatId);
    timeline?.putCursor(userId, messageId);
    if (userId === this.me.id && (chat.myCursor == null || messageId > chat.myCursor)) {
      chat.myCursor = messageId;
      const counted = timeline?.countAfter(messageId);
      if (counted !== null && counted !== undefined) chat.unread_count = counted;
      else if (chat.last_message && messageId >= chat.last_message.id) chat.unread_count = 0;
      else this.emit("stale", chatId);
      this.emit("chats");
    }
    if (timeline) this.emit("timeline", chatId);
  }

  // --- Sending -------------------------------------------------------------------------------

  addPending(chatId, pending) {
    this.timeline(chatId).pending.set(pending.client_id, pending);
    this.emit("timeline", chatId);
  }

  pendingFailed(chatId, clientId, detail) {
    const pending = this.timelines.get(chatId)?.pending.get(clientId);
    if (!pending) return null;
    pending.status = "failed";
    pending.error = detail;
    this.emit("timeline", chatId);
    return pending;
  }

  // --- Typing --------------------------------------------------------------------------------

  putTyping(chatId, userId) {
    if (!this.chats.has(chatId) || userId === this.me.id) return;
    let users = this.typing.get(chatId);
    if (!users) {
      users = new Map();
      this.typing.set(chatId, users);
    }
    users.set(userId, Date.now() + TYPING_SHOW_MS);
    const key = `${chatId}:${userId}`;
    clearTimeout(this.typingTimers.get(key));
    this.typingTimers.set(
      key,
      setTimeout(() => this.stopTyping(chatId, userId), TYPING_SHOW_MS),
    );
    this.emit("typing", chatId);
  }

  stopTyping(chatId, userId) {
    const users = this.typing.get(chatId);
    if (!users || !users.delete(userId)) return;
    clearTimeout(this.typingTimers.get(`${chatId}:${userId}`));
    this.emit("typing", chatId);
  }

  typingNames(chatId) {
    const users = this.typing.get(chatId);
    if (!users) return [];
    const now = Date.now();
    return [...users].filter(([, until]) => until > now).map(([id]) => this.username(id));
  }
}

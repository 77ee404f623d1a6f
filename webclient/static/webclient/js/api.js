// The HTTP API (see /docs): JSON in and out, the access token in the Authorization header,
// renewed and retried once on a 401. Every request goes to this page's own origin: absolute
// URLs the server hands out (`next` links) are reduced to their path and query first.

export class ApiError extends Error {
  constructor(status, body) {
    super(ApiError.describe(status, body));
    this.status = status;
    this.body = body || {};
  }

  /** One readable line for the whole error. */
  static describe(status, body) {
    if (status === 0) return "Cannot reach the server. Check your connection.";
    if (body && typeof body.detail === "string") return body.detail;
    if (body && typeof body === "object") {
      for (const value of Object.values(body)) {
        if (Array.isArray(value) && value.length) return String(value[0]);
        if (typeof value === "string") return value;
      }
    }
    return `The server answered ${status}.`;
  }

  /** The messages for one field of a 400 body (`{"username": ["..."]}`), or []. */
  field(name) {
    const value = this.body?.[name];
    if (Array.isArray(value)) return value.map(String);
    return typeof value === "string" ? [value] : [];
  }
}

/** The path and query of `url`: requests go to this page's origin, whatever host a `next`
 * link names (a proxy may have passed on another Host). */
export function ownPath(url) {
  const parsed = new URL(url, window.location.origin);
  return parsed.pathname + parsed.search;
}

export class Api {
  constructor(session) {
    this.session = session;
  }

  async request(method, url, { body, auth = true, retried = false } = {}) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth) headers.Authorization = `Bearer ${await this.session.fresh()}`;
    let response;
    try {
      response = await fetch(ownPath(url), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: "omit",
        cache: "no-store",
      });
    } catch {
      throw new ApiError(0, null);
    }
    if (response.status === 401 && auth && !retried) {
      await this.session.renew({ force: true });
      return this.request(method, url, { body, auth, retried: true });
    }
    let data = null;
    if (response.status !== 204) {
      const type = response.headers.get("Content-Type") || "";
      data = type.includes("json") ? await response.json().catch(() => null) : null;
    }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  get(url) {
    return this.request("GET", url);
  }

  // --- Accounts ---
  register(username, password) {
    return this.request("POST", "/users/register", { body: { username, password }, auth: false });
  }
  login(username, password) {
    return this.request("POST", "/users/login", { body: { username, password }, auth: false });
  }
  logout(refresh) {
    return this.request("POST", "/users/logout", { body: { refresh }, auth: false });
  }
  me() {
    return this.get("/users/me");
  }
  searchUsers(text, limit = 20) {
    const query = new URLSearchParams({ search: text, limit: String(limit) });
    return this.get(`/users?${query}`);
  }

  // --- Chats ---
  /** Every chat of the caller (following `next`). */
  async chats() {
    const all = [];
    let url = "/chats?limit=200";
    while (url) {
      const page = await this.get(url);
      all.push(...page.results);
      url = page.next;
    }
    return all;
  }
  chat(id) {
    return this.get(`/chats/${id}`);
  }
  createChat(title, memberIds) {
    return this.request("POST", "/chats", { body: { title, member_ids: memberIds } });
  }
  directChat(userId) {
    return this.request("POST", "/chats/direct", { body: { user_id: userId } });
  }
  renameChat(id, title) {
    return this.request("PATCH", `/chats/${id}`, { body: { title } });
  }
  addMembers(id, userIds) {
    return this.request("POST", `/chats/${id}/members`, { body: { user_ids: userIds } });
  }
  removeMember(id, userId) {
    return this.request("DELETE", `/chats/${id}/members/${userId}`);
  }
  leaveChat(id) {
    return this.request("POST", `/chats/${id}/leave`);
  }

  // --- Messages ---
  history(chatId, limit = 50) {
    return this.get(`/chats/${chatId}/messages?limit=${limit}`);
  }
  markRead(chatId, messageId) {
    return this.request("POST", `/chats/${chatId}/read`, { body: { message_id: messageId } });
  }
  editMessage(chatId, messageId, text) {
    return this.request("PATCH", `/chats/${chatId}/messages/${messageId}`, { body: { text } });
  }
  deleteMessage(chatId, messageId) {
    return this.request("DELETE", `/chats/${chatId}/messages/${messageId}`);
  }
  react(chatId, messageId, emoji, on) {
    const path = `/chats/${chatId}/messages/${messageId}/reactions/${encodeURIComponent(emoji)}`;
    return this.request(on ? "PUT" : "DELETE", path);
  }
}

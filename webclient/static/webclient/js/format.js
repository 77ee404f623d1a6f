// Presentation helpers: times, avatars, and message text with its web links.

import { h } from "./dom.js";

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFormat = new Intl.DateTimeFormat(undefined, {
  weekday: "long",
  day: "numeric",
  month: "long",
});
const shortDateFormat = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

function startOfDay(date) {
  return new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime();
}

export function dayKey(iso) {
  return startOfDay(new Date(iso));
}

export function dayLabel(iso) {
  const day = startOfDay(new Date(iso));
  const today = startOfDay(new Date());
  if (day === today) return "Today";
  if (day === today - 86_400_000) return "Yesterday";
  return dateFormat.format(new Date(iso));
}

export function clock(iso) {
  return timeFormat.format(new Date(iso));
}

export function fullTime(iso) {
  return fullFormat.format(new Date(iso));
}

/** The chat list's time: the clock today, else a short date. */
export function listTime(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return startOfDay(date) === startOfDay(new Date()) ? clock(iso) : shortDateFormat.format(date);
}

function hue(text) {
  let hash = 0;
  for (const char of text) hash = (hash * 31 + char.codePointAt(0)) >>> 0;
  return hash % 360;
}

/** A round badge with the first letter of `name`, coloured by the name. */
export function avatar(name, { size = "" } = {}) {
  const letter = [...(name || "?").trim()][0] || "?";
  const el = h("span", { class: `avatar ${size}`.trim(), "aria-hidden": "true" }, letter.toUpperCase());
  el.style.setProperty("--avatar-hue", String(hue(name || "?")));
  return el;
}

const LINK = /\bhttps?:\/\/[^\s<>"']+/gi;
const TRAILING = /[.,;:!?)\]}'"]+$/;

/** Message text as nodes: text nodes, and <a> elements for http(s) URLs only. Anything else
 * (`javascript:` included) stays plain text. */
export function richText(text) {
  const nodes = [];
  let last = 0;
  for (const match of text.matchAll(LINK)) {
    let url = match[0];
    const trailing = url.match(TRAILING);
    if (trailing) url = url.slice(0, -trailing[0].length);
    let parsed;
    try {
      parsed = new URL(url);
    } catch {
      continue;
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") continue;
    if (match.index > last) nodes.push(text.slice(last, match.index));
    nodes.push(
      h("a", { href: parsed.href, target: "_blank", rel: "noopener noreferrer nofollow" }, url),
    );
    last = match.index + url.length;
  }
  if (last < text.length) nodes.push(text.slice(last));
  return nodes;
}

/** "alice", "alice and bob", "alice, bob and carol", "4 people". */
export function names(list) {
  if (list.length === 0) return "";
  if (list.length === 1) return list[0];
  if (list.length <= 3) return `${list.slice(0, -1).join(", ")} and ${list[list.length - 1]}`;
  return `${list.length} people`;
}

/** A random client_id (crypto.randomUUID needs a secure context; this does not). */
export function randomId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

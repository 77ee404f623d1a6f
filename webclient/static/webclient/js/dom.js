// Building DOM nodes. Text always goes in as text nodes: nothing here parses HTML, so a
// message or a username can never become markup (no HTML string is ever assigned here).

/**
 * h("button", {class: "primary", type: "submit", onclick: fn}, "Send") -> <button>
 * Props: `class`, `dataset` (object), `on<event>` (listener), `hidden`/`disabled`/...
 * (booleans set or remove the attribute), anything else through setAttribute.
 * Children: nodes, strings (as text), numbers, arrays of those; null/false are skipped.
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "value") el.value = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace every child of `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** Text for screen readers only. */
export function srOnly(text) {
  return h("span", { class: "sr-only" }, text);
}

let lastId = 0;
/** A document-unique id, for label/aria-describedby pairs. */
export function uid(prefix = "id") {
  lastId += 1;
  return `${prefix}-${lastId}`;
}

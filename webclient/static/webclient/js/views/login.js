// Signed out: log in or register. The API's errors are shown next to the field they are
// about (`{"username": [...]}`), the others above the buttons.

import { ApiError } from "../api.js";
import { h, fill, uid } from "../dom.js";

function field({ label, name, type = "text", autocomplete }) {
  const id = uid(name);
  const errorId = `${id}-error`;
  const input = h("input", {
    id,
    name,
    type,
    autocomplete,
    required: true,
    autocapitalize: "none",
    spellcheck: "false",
    "aria-describedby": errorId,
  });
  const error = h("p", { class: "field-error", id: errorId });
  const wrapper = h("div", { class: "field" }, h("label", { for: id }, label), input, error);
  return { wrapper, input, error };
}

/** Render the sign-in page in `root`; `onSignedIn(tokens)` once the API gave tokens. */
export function renderLogin(root, { api, onSignedIn, notice }) {
  const username = field({ label: "Username", name: "username", autocomplete: "username" });
  const password = field({
    label: "Password",
    name: "password",
    type: "password",
    autocomplete: "current-password",
  });
  const formError = h("p", { class: "form-error", role: "alert" });
  const login = h("button", { type: "submit", class: "primary" }, "Log in");
  const register = h("button", { type: "button", class: "secondary" }, "Register");
  const form = h(
    "form",
    { class: "auth-form", novalidate: true },
    username.wrapper,
    password.wrapper,
    formError,
    h("div", { class: "auth-actions" }, login, register),
  );

  function showErrors(error) {
    const fields = { username, password };
    let shown = false;
    for (const [name, { input, error: slot }] of Object.entries(fields)) {
      const messages = error instanceof ApiError ? error.field(name) : [];
      slot.textContent = messages.join(" ");
      input.setAttribute("aria-invalid", messages.length ? "true" : "false");
      shown ||= messages.length > 0;
    }
    if (error instanceof ApiError && error.status === 401) {
      formError.textContent = "Wrong username or password.";
    } else if (error instanceof ApiError && (error.body?.detail || error.status === 0)) {
      formError.textContent = error.message;
    } else if (error instanceof ApiError && error.field("non_field_errors").length) {
      formError.textContent = error.field("non_field_errors").join(" ");
    } else if (!shown && error) {
      formError.textContent = error.message || String(error);
    } else {
      formError.textContent = "";
    }
    const invalid = [username, password].find((f) => f.input.getAttribute("aria-invalid") === "true");
    if (invalid) invalid.input.focus();
  }

  function missing() {
    const errors = {};
    if (!username.input.value.trim()) errors.username = ["Enter a username."];
    if (!password.input.value) errors.password = ["Enter a password."];
    return Object.keys(errors).length ? new ApiError(400, errors) : null;
  }

  async function submit(creating) {
    const problem = missing();
    if (problem) return showErrors(problem);
    login.disabled = register.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      const name = username.input.value.trim();
      if (creating) await api.register(name, password.input.value);
      const tokens = await api.login(name, password.input.value);
      showErrors(null);
      onSignedIn(tokens);
    } catch (error) {
      showErrors(error);
    } finally {
      login.disabled = register.disabled = false;
      form.removeAttribute("aria-busy");
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit(false);
  });
  register.addEventListener("click", () => submit(true));

  fill(
    root,
    h(
      "main",
      { class: "auth" },
      h(
        "div",
        { class: "auth-card" },
        h(
          "div",
          { class: "brand" },
          h("span", { class: "brand-mark", "aria-hidden": "true" }),
          h("h1", {}, "Chat"),
        ),
        h("p", { class: "auth-lead" }, "Log in, or pick a username and password to register."),
        notice ? h("p", { class: "notice", role: "status" }, notice) : null,
        form,
      ),
    ),
  );
  root.removeAttribute("aria-busy");
  root.className = "app signed-out";
  username.input.focus();
}

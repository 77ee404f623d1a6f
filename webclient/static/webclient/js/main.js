// Entry point: signed out, the login page; signed in, the chat app.

import { Api } from "./api.js";
import { ChatApp } from "./app.js";
import { fill, h } from "./dom.js";
import { Session, SessionExpired } from "./session.js";
import { renderLogin } from "./views/login.js";

const root = document.getElementById("app");
const session = new Session();
const api = new Api(session);
let app = null;

function signedOut(notice) {
  const current = app;
  app = null;
  current?.destroy();
  session.clear();
  history.replaceState(null, "", window.location.pathname);
  renderLogin(root, { api, onSignedIn, notice });
}

function onSignedIn(tokens) {
  session.start(tokens);
  signedIn();
}

async function signedIn() {
  let me;
  try {
    me = await api.me();
  } catch (error) {
    if (error instanceof SessionExpired || error.status === 401) {
      return signedOut("Your session has ended. Please log in again.");
    }
    fill(
      root,
      h(
        "main",
        { class: "auth" },
        h(
          "div",
          { class: "auth-card" },
          h("p", {}, `Cannot reach the server (${error.message}).`),
          h("button", { type: "button", class: "primary", onclick: () => signedIn() }, "Try again"),
        ),
      ),
    );
    root.removeAttribute("aria-busy");
    return;
  }
  session.schedule();
  app = new ChatApp(root, { api, session, me, onSignOut: () => signedOut() });
  app.start();
}

session.addEventListener("signedout", () => signedOut("You have been signed out."));

if (session.signedIn) signedIn();
else renderLogin(root, { api, onSignedIn });

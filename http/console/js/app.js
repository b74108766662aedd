// The console: signs in when the server asks for a key, then shows the views the key's
// scopes allow (Catalog, SQL, Ingest & jobs need `query`; Send records needs an `ingest:`
// scope).

import { getKey, onUnauthenticated, setKey, whoami } from "./api.js";
import { $, fill, h } from "./dom.js";
import { can, clearError, showError, state } from "./state.js";
import * as catalog from "./catalog.js";
import * as editor from "./sql.js";
import * as ingest from "./ingest.js";
import * as send from "./send.js";

const views = {
  catalog: { el: "#view-catalog", needs: "query", module: catalog },
  sql: { el: "#view-sql", needs: "query", module: editor },
  ingest: { el: "#view-ingest", needs: "query", module: ingest },
  send: { el: "#view-send", needs: "ingest", module: send },
};

let started = false;
let current = null;

function showLogin() {
  for (const view of Object.values(views)) view.module.hide?.();
  current = null;
  $("#app").hidden = true;
  $("#who").hidden = true;
  for (const tab of document.querySelectorAll("#tabs a")) /** @type {HTMLElement} */ (tab).hidden = true;
  $("#login").hidden = false;
  $("#login-key").focus();
}

async function signIn(event) {
  event.preventDefault();
  const input = $("#login-key");
  const key = input.value.trim();
  if (!key) return;
  const button = $("#login-form button[type=submit]");
  button.disabled = true;
  try {
    const who = await whoami(key);
    setKey(key);
    input.value = "";
    clearError();
    start(who);
  } catch (e) {
    showError(e, "Sign in");
    input.select();
  } finally {
    button.disabled = false;
  }
}

function signOut() {
  setKey(null);
  state.who = null;
  clearError();
  location.hash = "";
  showLogin();
}

function describeWho(who) {
  if (who.open) return ["open server ", h("span", { class: "muted" }, "(no API keys)")];
  return [
    "key ",
    h("strong", {}, who.key || "?"),
    " ",
    h("span", { class: "muted", testid: "scopes" }, (who.scopes || []).join(", ")),
  ];
}

function start(who) {
  state.who = who;
  $("#login").hidden = true;
  $("#app").hidden = false;
  fill($("#who-text"), describeWho(who));
  $("#who").hidden = false;
  $("#logout").hidden = !getKey();
  for (const tab of document.querySelectorAll("#tabs a")) {
    const link = /** @type {HTMLElement} */ (tab);
    link.hidden = !can(link.dataset.needs);
  }
  $("#sidebar").hidden = !can("query");
  if (!started) {
    started = true;
    window.addEventListener("hashchange", route);
  }
  for (const view of Object.values(views)) view.module.reset?.();
  if (can("query")) catalog.loadTables();
  route();
}

/** Shows the view the URL's hash names (`#catalog/default.events`, `#sql`, ...). */
function route() {
  if (!state.who) return;
  const [name, ...rest] = location.hash.replace(/^#/, "").split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  let chosen = views[name] && can(views[name].needs) ? name : null;
  if (!chosen) chosen = Object.keys(views).find((v) => can(views[v].needs)) || null;
  for (const [key, view] of Object.entries(views)) {
    const shown = key === chosen;
    $(view.el).hidden = !shown;
    if (!shown && current === key) view.module.hide?.();
  }
  $("#view-none").hidden = chosen !== null;
  for (const tab of document.querySelectorAll("#tabs a")) {
    const { view } = /** @type {HTMLElement} */ (tab).dataset;
    tab.classList.toggle("active", view === chosen);
    if (view === chosen) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  current = chosen;
  if (chosen) views[chosen].module.show(chosen === name ? arg : null);
}

async function boot() {
  $("#error-close").addEventListener("click", clearError);
  $("#login-form").addEventListener("submit", signIn);
  $("#logout").addEventListener("click", signOut);
  onUnauthenticated((error) => {
    // A key that stopped working (or none where one is needed): ask again.
    setKey(null);
    state.who = null;
    showLogin();
    showError(error, "Sign in again");
  });
  catalog.init();
  editor.init();
  ingest.init();
  send.init();
  let who;
  try {
    who = await whoami();
  } catch (e) {
    if (e.status === 401) {
      if (getKey()) {
        setKey(null);
        showError(e, "Sign in");
      }
      showLogin();
      return;
    }
    if (e.status === 404) {
      // A server without /v1/whoami: assume it is open; a 401 later asks for a key.
      who = { open: true, key: null, scopes: ["query", "admin", "ingest:*"] };
    } else {
      showError(e, "Connecting to Tarn");
      return;
    }
  }
  start(who);
}

boot();

// The page: signs in, then wires the sidebar, the chat and the socket together. The URL names the
// open conversation (`?c=<id>`), so reload and back/forward work.

import { Api } from "./api.js";
import { Attachments } from "./attachments.js";
import { Auth } from "./auth.js";
import { Chat } from "./chat.js";
import { Sidebar } from "./sidebar.js";
import { Socket } from "./socket.js";
import { el, ms, sentence } from "./words.js";

const $ = (id) => document.getElementById(id);

const config = await fetch("./config.json", { cache: "no-cache" }).then((r) => r.json());
const auth = new Auth(config);
let reason = "";
try {
  await auth.start();
} catch (error) {
  reason = error.message;
}
if (auth.token) run();
else signIn(reason);

function signIn(why) {
  $("app").hidden = true;
  $("signin").hidden = false;
  $("signin-reason").textContent = why || "";
  const provider = $("oidc-signin");
  if (config.oidc) {
    provider.hidden = false;
    provider.textContent = `Sign in with ${config.oidc.name}`;
    provider.onclick = () => auth.signInWithProvider();
  }
  $("token-form").onsubmit = (event) => {
    event.preventDefault();
    try {
      auth.use($("token-input").value);
      location.reload();
    } catch (error) {
      $("signin-reason").textContent = error.message;
    }
  };
  (config.oidc ? provider : $("token-input")).focus();
}

function run() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").textContent = auth.claims.sub || "";
  const api = new Api(config.api_url || "", auth);
  const wsUrl = config.ws_url || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
  const status = $("connection");
  let cleared = 0;
  const socket = new Socket({
    url: wsUrl,
    tokenIn: config.ws_token,
    auth,
    onFrame: (frame) => chat.frame(frame),
    onDrop: () => chat.dropped(),
    onState: (state, detail) => {
      clearTimeout(cleared);
      if (state === "open") {
        if (status.textContent) {
          status.textContent = "Connected.";
          cleared = setTimeout(() => (status.textContent = ""), 2000);
        }
      } else if (state === "retrying") {
        status.textContent = `${detail.opened ? "The connection dropped." : "The gateway cannot be reached."} Trying again in ${ms(detail.delay)}…`;
        // A refused upgrade looks like any other drop: ask over REST whether the token still holds.
        if (!detail.opened) api.models().catch(() => {});
      }
    },
  });
  const chat = new Chat({
    log: $("log"),
    api,
    socket,
    onStarted: (id, title, isCurrent) => {
      sidebar.add(id, title);
      if (isCurrent) {
        history.replaceState({ c: id }, "", `?c=${encodeURIComponent(id)}`);
        sidebar.select(id);
      }
    },
    onAbandoned: (id, isCurrent) => {
      sidebar.forget(id);
      if (isCurrent) history.replaceState({ c: null }, "", location.pathname);
    },
    onBusy: (busy) => {
      $("stop").hidden = !busy;
    },
  });
  const sidebar = new Sidebar({
    list: $("conversations"),
    status: $("conversations-status"),
    api,
    onOpen: (id) => navigate(id),
    onDeleted: (id) => {
      chat.forget(id);
      if (current() === id) navigate(null);
    },
  });
  const attachments = new Attachments({ list: $("attachments"), api });

  auth.onRenewed = (token) => socket.renew(token);
  auth.onExpired = (why) => {
    socket.stop();
    signIn(why);
  };

  const current = () => new URLSearchParams(location.search).get("c");
  const show = (id) => {
    sidebar.select(id);
    $("app").classList.remove("sidebar-open");
    $("toggle-sidebar").setAttribute("aria-expanded", "false");
    return chat.open(id);
  };
  const navigate = (id) => {
    if (id !== current()) history.pushState({ c: id }, "", id ? `?c=${encodeURIComponent(id)}` : location.pathname);
    show(id).then(() => $("message").focus());
  };
  addEventListener("popstate", () => show(current()));

  $("new-chat").onclick = () => navigate(null);
  $("toggle-sidebar").onclick = () => {
    const open = $("app").classList.toggle("sidebar-open");
    $("toggle-sidebar").setAttribute("aria-expanded", String(open));
  };
  $("signout").onclick = () => {
    socket.stop();
    auth.signOut();
    location.assign(location.pathname);
  };

  // Sending: Enter sends, Shift+Enter breaks the line, Esc stops the answers in flight.
  const message = $("message");
  const send = async () => {
    const text = message.value.trim();
    if (!text && !attachments.items.length) return;
    let content = null;
    try {
      content = await attachments.blocks(text);
    } catch (error) {
      status.textContent = error.message;
      return;
    }
    const sent = chat.send({
      text,
      content,
      attachments: attachments.names(),
      model: $("model").value,
      knowledgeBase: $("kb").value,
    });
    if (sent) {
      message.value = "";
      attachments.clear();
    }
  };
  $("composer").onsubmit = (event) => {
    event.preventDefault();
    send();
  };
  message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  addEventListener("keydown", (event) => {
    if (event.key === "Escape") chat.cancel();
  });
  $("stop").onclick = () => {
    chat.cancel();
    message.focus();
  };

  // Attachments: the picker, drag-and-drop onto the page, and paste.
  $("attach").onclick = () => $("files").click();
  $("files").onchange = () => {
    attachments.add($("files").files);
    $("files").value = "";
  };
  addEventListener("dragover", (event) => {
    event.preventDefault();
    $("app").classList.add("dragging");
  });
  addEventListener("dragleave", () => $("app").classList.remove("dragging"));
  addEventListener("drop", (event) => {
    event.preventDefault();
    $("app").classList.remove("dragging");
    attachments.add(event.dataTransfer.files);
  });
  message.addEventListener("paste", (event) => {
    if (event.clipboardData.files.length) {
      event.preventDefault();
      attachments.add(event.clipboardData.files);
    }
  });

  // The models the caller may use.
  api.models().then((models) => {
    options($("model"), models.data.filter((m) => m.kind !== "embedding").map((m) => m.id));
    const kept = sessionStorage.getItem("nagare.model");
    if (kept && models.data.some((m) => m.id === kept)) $("model").value = kept;
  }).catch((error) => (status.textContent = `The models could not be listed. ${sentence(error)}`))
    .finally(() => ($("model").dataset.ready = "true"));
  $("model").onchange = () => sessionStorage.setItem("nagare.model", $("model").value);

  // The caller's knowledge bases, if the server keeps them: answers then cite sources.
  const features = config.features || {};
  $("attach").hidden = !features.uploads;
  if (features.knowledge_bases) api.knowledgeBases().then((list) => {
    options($("kb"), list.knowledge_bases.map((kb) => kb.name));
    $("kb").closest("label").hidden = !list.knowledge_bases.length;
  }).catch((error) => (status.textContent = `The knowledge bases could not be listed. ${sentence(error)}`));

  socket.connect();
  if (features.conversations) sidebar.reload();
  else $("conversations-status").textContent = "This server keeps no conversations: each message starts afresh.";
  show(current());
  message.focus();
}

function options(select, names) {
  for (const name of names) select.appendChild(el("option", "", name)).value = name;
}

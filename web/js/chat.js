// The conversations on screen: each has its own view, kept while the page lives, so answers keep
// streaming into a conversation the user has left and are there when they come back.

import { Answer } from "./answer.js";
import { el, sentence } from "./words.js";

class View {
  constructor(id) {
    this.id = id; // null until the gateway names a new conversation
    this.el = el("div", "turns");
    this.loaded = !id;
    this.pending = null; // the id the gateway gave a new conversation, until its first answer is kept
    this.inflight = new Set();
  }

  // A user turn: its text, its attachments by name, and (from history) the tool results it sent.
  user(text, attachments = [], results = []) {
    const turn = this.el.appendChild(el("div", "turn user"));
    if (text) turn.append(text);
    if (attachments.length) {
      const chips = turn.appendChild(el("div", "chips"));
      for (const a of attachments) chips.appendChild(el("span", "chip", a));
    }
    for (const result of results) {
      const box = turn.appendChild(el("details", "block"));
      box.appendChild(el("summary", "", "Tool result"));
      box.appendChild(el("pre", "", JSON.stringify(result.content, null, 2)));
    }
    return turn;
  }
}

export class Chat {
  constructor({ log, api, socket, onStarted, onAbandoned, onBusy }) {
    this.log = log;
    this.api = api;
    this.socket = socket;
    this.onStarted = onStarted; // (id, title, current): the gateway named a new conversation
    this.onAbandoned = onAbandoned; // (id, current): its first answer was not kept, so it does not exist
    this.onBusy = onBusy; // (busy): whether the open conversation has an answer in flight
    this.views = new Map();
    this.current = null;
    this.answers = new Map(); // request id → {answer, view, title}
    this.following = 0;
    // Whether the reader is at the bottom of the log, kept by scroll events: reading it at each
    // frame would lay the page out again each time.
    this.pinned = true;
    log.addEventListener("scroll", () => (this.pinned = this.atBottom()), { passive: true });
  }

  // Opens conversation `id` (null: a new one). Resolves when its history is on screen.
  async open(id) {
    let view = id && this.views.get(id);
    if (!view) {
      view = new View(id);
      if (id) this.views.set(id, view);
    }
    this.current = view;
    this.log.replaceChildren(view.el);
    this.busy();
    if (!view.loaded) await this.load(view);
    if (this.current === view && !view.el.children.length) {
      view.el.appendChild(el("p", "empty", "Ask anything. Answers stream in as they are written."));
    }
    this.log.scrollTop = this.log.scrollHeight;
  }

  async load(view) {
    view.loaded = true;
    const status = view.el.appendChild(el("p", "empty", "Loading the conversation…"));
    try {
      let page = null;
      do {
        page = await this.api.turns(view.id, page && page.next_page_token);
        for (const turn of page.turns) {
          const blocks = turn.blocks || [];
          if (turn.role !== "user") Answer.fromTurn(view.el, turn);
          else view.user(turn.content, attachmentsOf(blocks), blocks.filter((b) => b.type === "tool_result"));
        }
      } while (page.next_page_token);
      status.remove();
    } catch (error) {
      this.views.delete(view.id); // opened again, it is loaded afresh
      status.textContent = error.code === "not_found" ? "This conversation no longer exists." : sentence(error);
      status.setAttribute("role", "alert");
    }
  }

  // Sends a message in the open conversation. Returns false if it could not leave.
  send({ text, content, attachments, model, knowledgeBase }) {
    const view = this.current;
    view.el.querySelector(".empty")?.remove();
    const requestId = crypto.randomUUID();
    const frame = { action: "chat", request_id: requestId };
    if (content) frame.content = content;
    else frame.message = text;
    if (model) frame.model = model;
    if (knowledgeBase) frame.knowledge_base = { name: knowledgeBase };
    if (view.id) frame.conversation_id = view.id;
    view.user(text, attachments);
    const answer = new Answer(view.el, performance.now());
    if (!this.socket.send(frame)) {
      answer.error({ code: "unavailable" });
      return false;
    }
    this.answers.set(requestId, { answer, view, title: text || attachments[0] });
    view.inflight.add(requestId);
    this.busy();
    this.log.scrollTop = this.log.scrollHeight;
    return true;
  }

  // Stops every answer in flight in the open conversation.
  cancel() {
    for (const requestId of this.current?.inflight || []) {
      this.socket.send({ action: "cancel", request_id: requestId });
    }
  }

  frame(frame) {
    const chat = frame.request_id && this.answers.get(frame.request_id);
    if (!chat) return;
    const { answer, view } = chat;
    // Keep the newest text in view if the reader was at the bottom, once per screen frame.
    const follow = view === this.current && this.pinned && !this.following;
    switch (frame.type) {
      case "start":
        answer.start(frame);
        if (!view.id && !view.pending && frame.conversation_id) this.named(view, frame.conversation_id, chat.title);
        break;
      case "sources": answer.sources(frame.sources); break;
      case "delta": answer.delta(frame.text); break;
      case "reasoning": answer.reasoning(frame); break;
      case "tool_call_start": answer.toolCallStart(frame); break;
      case "tool_call_delta": answer.toolCallDelta(frame); break;
      case "tool_call": answer.toolCall(frame); break;
      case "done":
        answer.done(frame);
        this.ended(frame.request_id, true);
        break;
      case "error": answer.error(frame); this.ended(frame.request_id, false); break;
    }
    if (follow) {
      this.following = requestAnimationFrame(() => {
        this.following = 0;
        this.log.scrollTop = this.log.scrollHeight;
      });
    }
  }

  // The socket closed: every answer in flight was stopped by the gateway.
  dropped() {
    for (const requestId of [...this.answers.keys()]) {
      this.answers.get(requestId).answer.interrupted();
      this.ended(requestId, false);
    }
  }

  // A conversation was deleted: forget its view.
  forget(id) {
    this.views.delete(id);
  }

  // The gateway named a new conversation: it can be navigated to at once, but it exists only
  // once its first answer is kept (a stopped or failed one is not), so until then it is pending.
  named(view, id, title) {
    view.pending = id;
    this.views.set(id, view);
    this.onStarted(id, title, view === this.current);
  }

  ended(requestId, kept) {
    const chat = this.answers.get(requestId);
    if (!chat) return;
    this.answers.delete(requestId);
    const view = chat.view;
    view.inflight.delete(requestId);
    if (view.pending) {
      const id = view.pending;
      view.pending = null;
      if (kept) view.id = id;
      else {
        this.views.delete(id);
        this.onAbandoned(id, view === this.current);
      }
    }
    this.busy();
  }

  busy() {
    this.onBusy(Boolean(this.current && this.current.inflight.size));
  }

  atBottom() {
    return this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 80;
  }
}

function attachmentsOf(blocks) {
  return blocks
    .filter((b) => b.type === "image" || b.type === "document")
    .map((b) => (b.type === "document" ? `${b.name || "document"} (${b.format || "file"})` : `image (${b.format || "file"})`));
}

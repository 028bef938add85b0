// The caller's conversations, newest first, paged in as the list scrolls.

import { el, sentence, when } from "./words.js";

export class Sidebar {
  constructor({ list, status, api, onOpen, onDeleted }) {
    this.list = list;
    this.status = status;
    this.api = api;
    this.onOpen = onOpen; // (id)
    this.onDeleted = onDeleted; // (id)
    this.next = undefined; // the next page's token; null when there is none
    this.loading = false;
    this.current = null;
    this.sentinel = el("li", "sentinel");
    this.sentinel.setAttribute("aria-hidden", "true");
    this.observer = new IntersectionObserver((entries) => {
      if (entries.some((e) => e.isIntersecting)) this.more();
    }, { root: list.closest("nav") });
  }

  async reload() {
    this.list.replaceChildren();
    this.next = undefined;
    await this.more();
  }

  async more() {
    if (this.loading || this.next === null) return;
    this.loading = true;
    this.status.textContent = "Loading conversations…";
    try {
      const page = await this.api.conversations(this.next);
      this.sentinel.remove();
      for (const conversation of page.conversations) {
        if (!this.item(conversation.conversation_id)) this.list.appendChild(this.entry(conversation));
      }
      this.next = page.next_page_token || null;
      this.status.textContent = this.list.children.length ? "" : "No conversations yet.";
      if (this.next) {
        this.list.appendChild(this.sentinel);
        this.observer.observe(this.sentinel);
      }
    } catch (error) {
      this.status.textContent = `The conversations could not be loaded. ${sentence(error)}`;
    } finally {
      this.loading = false;
    }
  }

  // A new conversation, at the top.
  add(id, title) {
    if (this.item(id)) return;
    this.list.prepend(this.entry({ conversation_id: id, title, updated_at: Date.now() }));
    this.status.textContent = "";
    this.select(this.current);
  }

  // A conversation that never came to exist.
  forget(id) {
    this.item(id)?.remove();
  }

  select(id) {
    this.current = id;
    for (const li of this.list.children) {
      if (li.dataset.id === id) li.setAttribute("aria-current", "page");
      else li.removeAttribute("aria-current");
    }
  }

  item(id) {
    return [...this.list.children].find((li) => li.dataset.id === id);
  }

  entry(conversation) {
    const id = conversation.conversation_id;
    const title = conversation.title || "Untitled";
    const li = el("li");
    li.dataset.id = id;
    const a = li.appendChild(el("a", "", title));
    a.href = `?c=${encodeURIComponent(id)}`;
    a.title = `${title} — ${when(conversation.updated_at)}`;
    a.addEventListener("click", (event) => {
      event.preventDefault();
      this.onOpen(id);
    });
    const remove = li.appendChild(el("button", "delete", "✕"));
    remove.type = "button";
    remove.setAttribute("aria-label", `Delete the conversation “${title}”`);
    remove.addEventListener("click", () => this.remove(id, title));
    return li;
  }

  async remove(id, title) {
    if (!confirm(`Delete the conversation “${title}”? This cannot be undone.`)) return;
    try {
      await this.api.deleteConversation(id);
    } catch (error) {
      if (error.code !== "not_found") {
        this.status.textContent = `It was not deleted. ${sentence(error)}`;
        return;
      }
    }
    const li = this.item(id);
    const next = li?.nextElementSibling?.querySelector("a") || li?.previousElementSibling?.querySelector("a");
    li?.remove();
    this.status.textContent = "Conversation deleted.";
    this.onDeleted(id);
    (next || document.getElementById("new-chat")).focus();
  }
}

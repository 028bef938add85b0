// One assistant answer: streamed in from chat events, or read back from history.

import { Markdown, link, safeHref } from "./markdown.js";
import { count, el, ms, sentence } from "./words.js";

let answers = 0;

export class Answer {
  // `sentAt`: when the chat frame left (performance.now()), for the time to first token.
  constructor(parent, sentAt = null) {
    this.id = `a${++answers}`;
    this.el = parent.appendChild(el("article", "turn assistant"));
    this.el.setAttribute("aria-label", "Answer");
    this.body = this.el.appendChild(el("div", "body"));
    this.sourceIds = new Map();
    this.markdown = new Markdown(this.body, (n) => this.sourceIds.get(n) || null);
    this.sentAt = sentAt;
    this.firstTokenAt = null;
    this.model = null;
    this.blocks = new Map(); // a reasoning or tool-call block's <pre>, by index
    this.frame = 0;
    this.countdown = 0;
    if (sentAt !== null) this.el.setAttribute("aria-busy", "true");
  }

  start(frame) {
    this.model = frame.model;
  }

  delta(text) {
    if (this.firstTokenAt === null) this.firstTokenAt = performance.now();
    this.markdown.append(text);
    // Frames arrive faster than the screen paints: build once per frame.
    if (!this.frame) {
      this.frame = requestAnimationFrame(() => {
        this.frame = 0;
        this.markdown.render();
      });
    }
  }

  sources(list) {
    // Open: it is what the answer's [n] links point at. Several events may carry sources.
    let box = this.el.querySelector("details.sources");
    if (!box) {
      box = this.el.insertBefore(el("details", "sources"), this.body);
      box.open = true;
      box.appendChild(el("summary"));
      box.appendChild(el("ol"));
    }
    const ol = box.querySelector("ol");
    for (const source of list) {
      const li = ol.appendChild(el("li"));
      li.id = `${this.id}-source-${source.n}`;
      li.value = source.n;
      this.sourceIds.set(source.n, li.id);
      const title = source.title || source.id || `Source ${source.n}`;
      const href = source.uri && safeHref(source.uri);
      if (href) {
        link(li, href).textContent = title;
      } else {
        li.append(source.uri ? `${title} (${source.uri})` : title);
      }
      if (source.snippet) li.appendChild(el("span", "snippet", source.snippet));
    }
    box.querySelector("summary").textContent = `Sources (${ol.children.length})`;
  }

  reasoning(frame) {
    if (frame.text) this.block(frame.index, "Reasoning").append(frame.text);
    if (frame.redacted) this.block(frame.index, "Reasoning (redacted)");
  }

  toolCallStart(frame) {
    this.block(frame.index, `Tool call: ${frame.name}`);
  }

  toolCallDelta(frame) {
    this.block(frame.index, "Tool call").append(frame.input);
  }

  toolCall(frame) {
    this.block(frame.index, `Tool call: ${frame.name}`).textContent = JSON.stringify(frame.input, null, 2);
  }

  done(frame) {
    this.finish();
    this.meta(frame.usage, frame);
    if (frame.stop_reason === "max_tokens") this.note("The answer was cut off at its length limit.");
    if (frame.stop_reason === "guardrail_intervened" || frame.stop_reason === "content_filtered") {
      this.note("A guardrail stopped this answer.");
    }
  }

  error(frame) {
    this.finish();
    if (frame.code === "cancelled") {
      this.note("Stopped.");
      return;
    }
    const p = this.el.appendChild(el("p", "error", sentence(frame)));
    p.setAttribute("role", "alert");
    if (frame.code === "rate_limited" && frame.retry_after_ms > 0) {
      const wait = p.appendChild(el("span", "countdown"));
      const until = Date.now() + frame.retry_after_ms;
      const tick = () => {
        const left = Math.ceil((until - Date.now()) / 1000);
        wait.textContent = left > 0 ? ` You can send again in ${left} s.` : " You can send again now.";
        if (left <= 0) clearInterval(this.countdown);
      };
      tick();
      this.countdown = setInterval(tick, 250);
    }
  }

  // The socket closed while this answer was being written.
  interrupted() {
    this.finish();
    this.note("The connection dropped before this answer was finished, so the gateway stopped it. Send the message again to get a whole answer.");
  }

  finish() {
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.markdown.render(true);
    this.el.removeAttribute("aria-busy");
  }

  meta(usage, frame = {}) {
    const parts = [];
    if (this.model) parts.push(this.model);
    if (usage) parts.push(`${count(usage.input_tokens)} in / ${count(usage.output_tokens)} out tokens`);
    if (frame.cached) {
      const saved = usage ? usage.input_tokens + usage.output_tokens : 0;
      parts.push(`from the cache (${count(saved)} tokens saved)`);
    }
    if (usage && usage.cache_read_input_tokens) {
      parts.push(`prompt cache: ${count(usage.cache_read_input_tokens)} tokens read`);
    }
    if (frame.latency_ms !== undefined) parts.push(`${ms(frame.latency_ms)} in all`);
    if (this.firstTokenAt !== null && this.sentAt !== null) {
      parts.push(`first token after ${ms(this.firstTokenAt - this.sentAt)}`);
    }
    if (parts.length) this.el.appendChild(el("p", "meta", parts.join(" · ")));
  }

  note(text) {
    this.el.appendChild(el("p", "note", text));
  }

  // The <pre> of a reasoning or tool-call block, collapsed under its summary.
  block(index, summary) {
    let pre = this.blocks.get(index);
    if (!pre) {
      const box = el("details", "block");
      box.appendChild(el("summary", "", summary));
      pre = box.appendChild(el("pre"));
      this.el.insertBefore(box, this.body);
      this.blocks.set(index, pre);
    } else if (summary.includes(":")) {
      pre.parentElement.querySelector("summary").textContent = summary;
    }
    return pre;
  }

  // An answer read back from history.
  static fromTurn(parent, turn) {
    const answer = new Answer(parent);
    if (turn.sources) answer.sources(turn.sources);
    (turn.blocks || [{ type: "text", text: turn.content }]).forEach((block, index) => {
      if (block.type === "text") answer.markdown.append(block.text);
      else if (block.type === "reasoning") answer.reasoning({ index, text: block.text });
      else if (block.type === "redacted_reasoning") answer.reasoning({ index, redacted: true });
      else if (block.type === "tool_use") answer.toolCall({ index, name: block.name, input: block.input });
    });
    answer.finish();
    answer.meta(turn.usage);
    return answer;
  }
}

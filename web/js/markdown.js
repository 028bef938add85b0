// Markdown as a model writes it, built as DOM nodes while it streams in.
//
// No string ever becomes HTML: every piece of text is a text node, and a link is an <a> only when
// its target is http(s). What is supported: paragraphs, headings, lists, block quotes, rules,
// fenced code, inline code, emphasis, strong, links, bare URLs and citations like [1].
//
// Streaming: every block but the last is settled (its lines are complete, so more text cannot
// change it) and is built once. Only the last block is rebuilt as text arrives, so a long
// answer costs the same per frame as a short one.

const FENCE = /^ {0,3}(`{3,}|~{3,})(.*)$/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}>\s?(.*)$/;

export class Markdown {
  // `cite(n)` gives the element id a citation [n] links to, or null.
  constructor(root, cite = () => null) {
    this.root = root;
    this.cite = cite;
    this.text = "";
    this.settled = 0; // where the unsettled text begins: always a line start outside a fence
    this.tail = []; // the nodes of the unsettled blocks
    this.rendered = 0; // how much of the text the DOM shows
    this.lineStart = 0; // where the text's last line begins
  }

  append(text) {
    this.text += text;
    const nl = text.lastIndexOf("\n");
    if (nl !== -1) this.lineStart = this.text.length - text.length + nl + 1;
  }

  // Builds what arrived since the last call; `final` settles everything.
  render(final = false) {
    if (!final && this.extend()) return;
    this.rendered = this.text.length;
    for (const node of this.tail) node.remove();
    this.tail = [];
    const blocks = parse(this.text, this.settled);
    // The last block may grow. So may the one before it while the last line is incomplete: "-"
    // reads as a paragraph until " two" makes it the next item of the list above.
    const partial = this.lineStart;
    const last = blocks.length - 1;
    const open = last > 0 && blocks[last].start >= partial && partial < this.text.length ? last - 1 : last;
    blocks.forEach((block, i) => {
      const node = build(block, this.cite);
      this.root.append(node);
      if (final || i < open) this.settled = block.end;
      else this.tail.push(node);
    });
  }

  // The common case while streaming: plain words added to the paragraph being written, well into
  // its line. They go into its last text node as they are, since they can neither start nor end
  // any markup (no marker characters, no URL); anything else rebuilds the open block. Rebuilding
  // a long paragraph every frame would lay all of it out again. Every bit of this is O(added).
  extend() {
    const added = this.text.slice(this.rendered);
    const open = this.tail.length === 1 ? this.tail[0] : null;
    const last = open && open.nodeName === "P" ? open.lastChild : null;
    if (!added || !last || last.nodeType !== Node.TEXT_NODE || !PLAIN.test(added)) return false;
    // `added` has no line break, so the rendered text ends on the text's last line.
    if (this.rendered - this.lineStart < 12) return false;
    const before = this.text.slice(Math.max(this.lineStart, this.rendered - 8), this.rendered);
    if ((before + added).includes("http")) return false;
    // Text nodes of a few hundred characters: the browser repaints only the one that grew.
    if (last.length < 512) last.appendData(added);
    else open.append(added);
    this.rendered = this.text.length;
    return true;
  }
}

// Text that cannot change the markup around it; a line's first 12 characters (where block
// markers are) never count as plain.
const PLAIN = /^[^`*_[\]()\n]*$/;

// Blocks of `text` from `from` (a line start): {kind, lines, start, end, ...}.
function parse(text, from) {
  const blocks = [];
  let at = from;
  let block = null;
  const close = () => {
    if (block) blocks.push(block);
    block = null;
  };
  const open = (kind, start, extra = {}) => {
    close();
    block = { kind, lines: [], start, end: start, ...extra };
  };
  while (at < text.length) {
    const nl = text.indexOf("\n", at);
    const end = nl === -1 ? text.length : nl + 1;
    const line = text.slice(at, nl === -1 ? text.length : nl);
    if (block && block.kind === "code") {
      const fence = FENCE.exec(line);
      if (fence && !fence[2].trim() && fence[1][0] === block.fence[0] && fence[1].length >= block.fence.length && nl !== -1) {
        block.end = end;
        close();
      } else {
        block.lines.push(line);
        block.end = end;
      }
      at = end;
      continue;
    }
    if (!line.trim()) {
      // A blank line ends a block, and is spanned by it: the block is settled from here on.
      close();
      if (blocks.length) blocks[blocks.length - 1].end = end;
      at = end;
      continue;
    }
    const complete = nl !== -1;
    let m;
    if ((m = FENCE.exec(line))) {
      open("code", at, { fence: m[1], lang: m[2].trim() });
    } else if ((m = HEADING.exec(line))) {
      open("heading", at, { level: m[1].length });
      block.lines.push(m[2]);
    } else if (RULE.test(line) && complete) {
      open("rule", at);
    } else if ((m = QUOTE.exec(line))) {
      if (!block || block.kind !== "quote") open("quote", at);
      block.lines.push(m[1]);
    } else if ((m = ITEM.exec(line))) {
      const ordered = /\d/.test(m[2]);
      if (!block || block.kind !== "list" || block.ordered !== ordered) {
        open("list", at, { ordered, first: ordered ? parseInt(m[2], 10) : 1 });
      }
      block.lines.push({ depth: Math.min(Math.floor(m[1].length / 2), 4), text: m[3] });
    } else if (block && block.kind === "list" && /^\s{2,}/.test(line)) {
      block.lines[block.lines.length - 1].text += "\n" + line.trim();
    } else {
      if (!block || block.kind !== "paragraph") open("paragraph", at);
      block.lines.push(line);
    }
    block.end = end;
    // A heading or a rule is one line.
    if (complete && (block.kind === "heading" || block.kind === "rule")) close();
    at = end;
  }
  close();
  return blocks;
}

function build(block, cite) {
  switch (block.kind) {
    case "code": {
      const pre = document.createElement("pre");
      const code = pre.appendChild(document.createElement("code"));
      if (block.lang) pre.dataset.lang = block.lang.split(/\s/)[0].slice(0, 20);
      code.textContent = block.lines.join("\n");
      return pre;
    }
    case "heading": {
      // The page's own headings are h1/h2; an answer's start at h3.
      const h = document.createElement(`h${Math.min(block.level + 2, 6)}`);
      inline(block.lines[0], h, cite);
      return h;
    }
    case "rule":
      return document.createElement("hr");
    case "quote": {
      const q = document.createElement("blockquote");
      for (const child of parse(block.lines.join("\n"), 0)) q.append(build(child, cite));
      return q;
    }
    case "list": {
      const list = document.createElement(block.ordered ? "ol" : "ul");
      if (block.ordered && block.first !== 1) list.start = block.first;
      for (const item of block.lines) {
        const li = list.appendChild(document.createElement("li"));
        if (item.depth) li.style.marginInlineStart = `${item.depth * 1.25}rem`;
        inline(item.text, li, cite);
      }
      return list;
    }
    default: {
      const p = document.createElement("p");
      inline(block.lines.join("\n"), p, cite);
      return p;
    }
  }
}

// Sticky (`y`): each matches exactly at its lastIndex, so a long paragraph is read once, in place.
const LINK = /\[([^\]\n]+)\]\(([^()\s]+)\)/y;
const CITATION = /\[(\d{1,3})\]/y;
const BARE_URL = /https?:\/\/[^\s<>()[\]"']+[^\s<>()[\]"'.,;:!?]/y;
const SPECIAL = /[`*_[h]/g;

function at(pattern, text, i) {
  pattern.lastIndex = i;
  return pattern.exec(text);
}

// Appends `text` to `parent` as text nodes and inline elements.
function inline(text, parent, cite) {
  let i = 0; // the text before i is in the DOM
  SPECIAL.lastIndex = 0;
  const flush = (to) => {
    if (to > i) parent.append(text.slice(i, to));
  };
  let next;
  while ((next = SPECIAL.exec(text))) {
    const k = next.index;
    const c = text[k];
    let m;
    let end = -1; // where the element built at k ends
    if (c === "`") {
      const j = text.indexOf("`", k + 1);
      if (j > k + 1) {
        flush(k);
        parent.appendChild(document.createElement("code")).textContent = text.slice(k + 1, j);
        end = j + 1;
      }
    } else if ((c === "*" || c === "_") && !(c === "_" && /\w/.test(text[k - 1] || ""))) {
      const mark = text[k + 1] === c ? c + c : c;
      const from = k + mark.length;
      const j = text.indexOf(mark, from);
      // As in CommonMark, `_` does not open or close inside a word (snake_case, __dunder).
      const closes = c === "*" || !/\w/.test(text[j + mark.length] || "");
      if (j > from && closes && !/\s/.test(text[from]) && !/\s/.test(text[j - 1])) {
        flush(k);
        const el = parent.appendChild(document.createElement(mark.length === 2 ? "strong" : "em"));
        inline(text.slice(from, j), el, cite);
        end = j + mark.length;
      }
    } else if (c === "[" && (m = at(LINK, text, k)) && safeHref(m[2])) {
      flush(k);
      inline(m[1], link(parent, safeHref(m[2])), cite);
      end = k + m[0].length;
    } else if (c === "[" && (m = at(CITATION, text, k)) && cite(Number(m[1]))) {
      flush(k);
      const a = parent.appendChild(document.createElement("a"));
      a.href = `#${cite(Number(m[1]))}`;
      a.className = "citation";
      a.textContent = m[0];
      end = k + m[0].length;
    } else if (c === "h" && !/\w/.test(text[k - 1] || "") && (m = at(BARE_URL, text, k)) && safeHref(m[0])) {
      flush(k);
      link(parent, safeHref(m[0])).textContent = m[0];
      end = k + m[0].length;
    }
    if (end > 0) {
      i = end;
      SPECIAL.lastIndex = end;
    }
  }
  flush(text.length);
}

// A link that opens in a new tab and tells the target nothing about the page.
export function link(parent, href) {
  const a = parent.appendChild(document.createElement("a"));
  a.href = href;
  a.rel = "noopener noreferrer nofollow";
  a.target = "_blank";
  return a;
}

// The URL if it is http(s), else null: javascript:, data: and the rest stay text.
export function safeHref(raw) {
  try {
    const url = new URL(raw);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

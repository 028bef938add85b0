// Files to send with the next message: chosen, dropped or pasted, each uploaded at once through
// the upload API (declare, then PUT) with its progress shown.

import { bytes, el, sentence } from "./words.js";

// What the gateway takes (docs/attachments.md), by extension when the browser gives no type.
const TYPES = {
  png: "image/png", jpg: "image/jpeg", jpeg: "image/jpeg", gif: "image/gif", webp: "image/webp",
  pdf: "application/pdf", csv: "text/csv", txt: "text/plain", md: "text/markdown", html: "text/html",
  doc: "application/msword", xls: "application/vnd.ms-excel",
  docx: "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
  xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
};

export class Attachments {
  constructor({ list, api }) {
    this.list = list;
    this.api = api;
    this.items = [];
  }

  add(files) {
    for (const file of files) {
      const extension = file.name.split(".").pop().toLowerCase();
      const type = Object.values(TYPES).includes(file.type) ? file.type : TYPES[extension];
      const item = { file, type, upload: null, failed: false, li: el("li") };
      item.li.append(`${file.name} (${bytes(file.size)})`);
      item.progress = item.li.appendChild(el("progress"));
      item.progress.max = 1;
      item.progress.value = 0;
      item.progress.setAttribute("aria-label", `Uploading ${file.name}`);
      const remove = item.li.appendChild(el("button", "", "✕"));
      remove.type = "button";
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.addEventListener("click", () => this.drop(item));
      this.list.appendChild(item.li);
      this.items.push(item);
      item.done = type ? this.upload(item) : Promise.resolve(this.fail(item, "the gateway does not take this kind of file"));
    }
  }

  async upload(item) {
    try {
      const buffer = await item.file.arrayBuffer();
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", buffer));
      const ticket = await this.api.declareUpload({
        filename: item.file.name,
        content_type: item.type,
        size: item.file.size,
        sha256: [...digest].map((b) => b.toString(16).padStart(2, "0")).join(""),
      });
      await this.api.put(ticket, item.file, (share) => (item.progress.value = share));
      item.progress.value = 1;
      item.upload = ticket.upload_id;
    } catch (error) {
      this.fail(item, sentence(error));
    }
  }

  fail(item, why) {
    item.failed = true;
    item.progress.remove();
    item.li.appendChild(el("span", "failed", ` not attached: ${why}`));
  }

  drop(item) {
    item.li.remove();
    this.items = this.items.filter((i) => i !== item);
  }

  // The content blocks of the message, once every upload has finished; null without attachments.
  // Throws a sentence when one failed or a document has no text to go with it.
  async blocks(text) {
    if (!this.items.length) return null;
    await Promise.all(this.items.map((i) => i.done));
    const failed = this.items.find((i) => i.failed);
    if (failed) throw new Error(`${failed.file.name} could not be attached: remove it or try again.`);
    const blocks = this.items.map((i) => ({
      type: i.type.startsWith("image/") ? "image" : "document",
      source: { upload_id: i.upload },
    }));
    if (!text && blocks.some((b) => b.type === "document")) {
      throw new Error("Say what to do with the document: a document needs a message with it.");
    }
    return text ? [{ type: "text", text }, ...blocks] : blocks;
  }

  names() {
    return this.items.map((i) => i.file.name);
  }

  clear() {
    this.list.replaceChildren();
    this.items = [];
  }
}

// Drives the browser app (web/) in Debian's Chromium through playwright-core, against a live
// `nagare serve`, and prints what it saw as JSON for tests/tests/end_to_end/web_app.rs to check.
//
// Usage: node web_app.mjs <scenario> '<json settings>'
//   chat: sign-in by link, streaming, reload, XSS, sources of the page, list paging, delete,
//         360 px, screenshots, and the figures (size, delta-to-paint, main-thread share)
//   stop: Markdown cut every 7 bytes at 360 px, Stop and Esc mid-answer, a socket cut mid-answer
//         and the reconnection, and a rate-limited answer's countdown
//   oidc: sign-in with the provider (code and PKCE) and the renewal
import { chromium } from "playwright-core";

const [scenario, raw] = process.argv.slice(2);
const settings = JSON.parse(raw);

const browser = await chromium.launch({
  executablePath: process.env.NAGARE_TEST_CHROMIUM || "/usr/bin/chromium",
  // The machine's network is closed: Chromium's own background calls only fail and wait.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const seen = { errors: [], violations: [] };
// Each step on stderr, so a timeout says where it happened.
const step = (what) => process.stderr.write(`web_app.mjs ${scenario}: ${what}\n`);
try {
  if (scenario === "chat") await chat();
  else if (scenario === "oidc") await oidc();
  else if (scenario === "stop") await stop();
  else throw new Error(`unknown scenario ${scenario}`);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(seen));

// A page with what the tests watch installed before the app runs: CSP violations, errors, and
// each WebSocket frame's arrival time.
async function open(link) {
  step(`opening ${new URL(link).origin}`);
  const { context, page } = await watched();
  const response = await page.goto(link);
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector("#model[data-ready]");
  return { context, page, response };
}

async function watched() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => seen.errors.push(e.message));
  page.on("console", (m) => m.type() === "error" && seen.errors.push(m.text()));
  page.on("response", (r) => r.status() >= 400 && seen.errors.push(`${r.status()} ${r.request().method()} ${r.url()}`));
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`));
    window.__frames = [];
    const Native = window.WebSocket;
    window.WebSocket = class extends Native {
      constructor(...args) {
        super(...args);
        // Added before the app's own handler, so it sees each frame first.
        this.addEventListener("message", (m) => window.__frames.push({ at: performance.now(), frame: JSON.parse(m.data) }));
      }
    };
  });
  return { context, page };
}

async function violations(page) {
  seen.violations.push(...(await page.evaluate(() => window.__violations)));
}

// Sends `text` from the keyboard and waits for the answer's `done` or `error`.
async function ask(page, text, model = "") {
  step(`asking ${JSON.stringify(text.slice(0, 40))}`);
  await page.selectOption("#model", model);
  await page.focus("#message");
  await page.keyboard.type(text);
  await page.keyboard.press("Enter");
}

async function answered(page, n) {
  step(`waiting for answer ${n}`);
  await page.waitForFunction((n) => {
    const answers = document.querySelectorAll(".turn.assistant");
    return answers.length >= n && !answers[n - 1].hasAttribute("aria-busy");
  }, n, { timeout: 60_000 });
  return page.locator(".turn.assistant").nth(n - 1);
}

async function chat() {
  const { context, page, response } = await open(settings.alice);
  seen.csp = response.headers()["content-security-policy"] || null;
  seen.who = await page.textContent("#who");
  seen.url_after_sign_in = page.url();

  // Streaming: count the answer's DOM growing while it is still busy.
  await page.evaluate(() => {
    window.__grew = 0;
    new MutationObserver((records) => {
      const busy = document.querySelector(".turn.assistant[aria-busy]");
      if (busy && records.some((r) => busy.contains(r.target) && r.addedNodes.length)) window.__grew += 1;
    }).observe(document.getElementById("log"), { childList: true, subtree: true });
  });
  await ask(page, "Tell me about streams");
  const first = await answered(page, 1);
  seen.grew_while_streaming = await page.evaluate(() => window.__grew);
  seen.first_answer = await first.locator(".body").innerText();
  seen.first_meta = await first.locator(".meta").innerText();
  seen.conversation_url = page.url();

  // Model text that tries to become HTML, script or a javascript: link, echoed by the mock.
  await ask(page, settings.xss);
  const hostile = await answered(page, 2);
  seen.xss = await page.evaluate(() => ({
    ran: window.__xss || null,
    images: document.querySelectorAll("#log img").length,
    scripts: document.querySelectorAll("#log script").length,
    javascript_links: document.querySelectorAll('#log a[href^="javascript"]').length,
    http_links: [...document.querySelectorAll("#log .assistant a")].map((a) => [a.href, a.rel]),
  }));
  seen.xss.text = await hostile.locator(".body").innerText();
  await page.locator("#log .assistant a").first().hover();

  // An image by the file picker, uploaded with its progress shown, then named in the chat.
  await page.setInputFiles("#files", { name: "dot.png", mimeType: "image/png", buffer: Buffer.from(settings.png, "base64") });
  await page.waitForFunction(() => document.querySelector("#attachments progress")?.value === 1);
  await ask(page, "What is in this picture?");
  const described = await answered(page, 3);
  seen.picture = {
    answer: await described.locator(".body").innerText(),
    chips: await page.locator(".turn.user .chip").allInnerTexts(),
    left: await page.locator("#attachments li").count(),
  };

  // A document dropped onto the page goes the same way.
  await page.evaluate(() => {
    const files = new DataTransfer();
    files.items.add(new File(["Total: 42 EUR\nPaid by card\n"], "receipt.txt", { type: "text/plain" }));
    window.dispatchEvent(new DragEvent("drop", { dataTransfer: files, bubbles: true, cancelable: true }));
  });
  await page.waitForFunction(() => document.querySelector("#attachments progress")?.value === 1);
  await ask(page, "How much was paid?");
  seen.dropped = await (await answered(page, 4)).locator(".body").innerText();

  // Every control has a name, and keyboard focus shows.
  seen.unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("button, select, textarea, input:not([type=file]), a[href]")]
      .filter((e) => e.getClientRects().length)
      .filter((e) => !(e.labels?.length || e.getAttribute("aria-label") || e.textContent.trim()))
      .map((e) => e.outerHTML.slice(0, 100)));
  await page.focus("#message");
  await page.keyboard.press("Tab");
  seen.focus = await page.evaluate(() => [document.activeElement.id, getComputedStyle(document.activeElement).outlineWidth]);

  // Reload: the conversation comes back from history.
  await page.reload();
  await page.waitForFunction(() => document.querySelectorAll(".turn.assistant").length === 4);
  seen.after_reload = {
    url: page.url(),
    first_answer: await page.locator(".turn.assistant .body").first().innerText(),
    users: await page.locator(".turn.user").allInnerTexts(),
  };

  // Screenshots for review, then the narrow layout.
  await page.screenshot({ path: `${settings.screenshots}/light.png` });
  await page.emulateMedia({ colorScheme: "dark" });
  await page.screenshot({ path: `${settings.screenshots}/dark.png` });
  seen.dark_background = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
  await page.emulateMedia({ colorScheme: "light" });

  // A knowledge base: its sources listed and linked, the answer's [1] pointing at source 1.
  await page.click("#new-chat");
  await page.waitForSelector("#kb option[value=handbook]", { state: "attached" });
  await page.selectOption("#kb", "handbook");
  await ask(page, "How many unused days can I carry over?");
  const cited = await answered(page, 1);
  seen.sources = await cited.evaluate((answer) => ({
    summary: answer.querySelector("details.sources summary")?.textContent,
    links: [...answer.querySelectorAll("details.sources a")].map((a) => a.href),
    citations: [...answer.querySelectorAll("a.citation")].map((a) => [a.textContent, Boolean(document.querySelector(a.getAttribute("href")))]),
  }));
  await page.selectOption("#kb", "");

  // Two answers at once, in two conversations: the first keeps streaming while the second is
  // asked, and is whole when its conversation is opened again.
  await page.click("#new-chat");
  await ask(page, "A slow answer", "smart");
  await page.waitForFunction(() => document.querySelector(".turn.assistant .body")?.textContent.length > 0);
  await page.click("#new-chat");
  await ask(page, "A quick one", "");
  await answered(page, 1);
  seen.quick_url = page.url();
  await page.goBack();
  await page.waitForFunction(() => document.querySelector(".turn.user")?.textContent === "A slow answer");
  const slow = await answered(page, 1);
  seen.parallel = { slow_meta: await slow.locator(".meta").innerText(), url: page.url() };

  // Tool calls and reasoning from history, shown collapsed; the URL alone opens the conversation.
  await page.goto(`${new URL(settings.alice).origin}/?c=${settings.tools_conversation}`);
  await page.waitForSelector(".turn.assistant details.block");
  seen.blocks = await page.evaluate(() => [...document.querySelectorAll(".turn.assistant details.block")]
    .map((d) => [d.querySelector("summary").textContent, d.open, d.querySelector("pre").textContent]));
  await violations(page);
  await context.close();

  await figures();
  await paging();
}

// The app's size on a first visit, and a long answer at 200 tokens/s: the time from each delta
// frame to the frame in which its text is on screen, and how busy the main thread was.
async function figures() {
  const { context, page } = await open(settings.alice);
  seen.transferred_bytes = await page.evaluate(() =>
    [...performance.getEntriesByType("navigation"), ...performance.getEntriesByType("resource")]
      .filter((e) => !new URL(e.name).pathname.startsWith("/v1/"))
      .reduce((sum, e) => sum + e.transferSize, 0));
  await page.evaluate(() => {
    // After each rendering step (a task posted from requestAnimationFrame runs after it), note
    // how much of the answer is on screen and which delta frames that covers.
    window.__paints = [];
    const channel = new MessageChannel();
    let counted = 0; // delta frames already painted
    let expected = []; // for each delta frame: the answer's visible characters once it is painted
    channel.port1.onmessage = () => {
      const body = [...document.querySelectorAll(".turn.assistant .body")].pop();
      if (!body) return;
      const visible = body.textContent.replace(/\s/g, "").length;
      const deltas = window.__frames.filter((f) => f.frame.type === "delta");
      let total = expected.length ? expected[expected.length - 1] : 0;
      for (const f of deltas.slice(expected.length)) expected.push((total += f.frame.text.replace(/\s/g, "").length));
      while (counted < deltas.length && expected[counted] <= visible) {
        window.__paints.push(performance.now() - deltas[counted].at);
        counted += 1;
      }
    };
    const loop = () => {
      channel.port2.postMessage(0);
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  });
  const cdp = await context.newCDPSession(page);
  await cdp.send("Performance.enable");
  const metric = async (name) => (await cdp.send("Performance.getMetrics")).metrics.find((m) => m.name === name).value;
  const busy0 = await metric("TaskDuration");
  const wall0 = Date.now();
  await ask(page, "A long answer, please", "long");
  await answered(page, 1);
  const busy = (await metric("TaskDuration")) - busy0;
  const wall = (Date.now() - wall0) / 1000;
  const paints = await page.evaluate(() => window.__paints);
  const deltas = await page.evaluate(() => window.__frames.filter((f) => f.frame.type === "delta").length);
  const sorted = [...paints].sort((a, b) => a - b);
  const at = (q) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
  seen.paint = { deltas, painted: paints.length, p50_ms: at(0.5), p99_ms: at(0.99), max_ms: sorted[sorted.length - 1] };
  seen.main_thread = { busy_s: busy, wall_s: wall, share: busy / wall };
  seen.long_words = (await page.locator(".turn.assistant .body").innerText()).split(/\s+/).length;
  await violations(page);
  await context.close();
}

// Carol has more conversations than a page: the list pages in as it scrolls; then one is deleted.
async function paging() {
  const { context, page } = await open(settings.carol);
  await page.waitForFunction(() => document.querySelectorAll("#conversations li[data-id]").length > 0);
  seen.listed_first = await page.locator("#conversations li[data-id]").count();
  await page.locator("#conversations li[data-id]").last().scrollIntoViewIfNeeded();
  await page.waitForFunction((n) => document.querySelectorAll("#conversations li[data-id]").length > n, seen.listed_first);
  await page.evaluate(() => document.getElementById("sidebar").scrollTo(0, 1e6));
  await page.waitForFunction(() => !document.querySelector("#conversations .sentinel"));
  seen.listed_all = await page.locator("#conversations li[data-id]").count();

  // Open one, then delete it with the keyboard, accepting the confirmation.
  const item = page.locator("#conversations li[data-id]").first();
  seen.deleted = await item.getAttribute("data-id");
  await item.locator("a").click();
  await page.waitForFunction(() => document.querySelectorAll(".turn.assistant").length === 1);
  seen.opened_url = page.url();
  page.once("dialog", (dialog) => {
    seen.confirmation = dialog.message();
    dialog.accept();
  });
  await item.locator("button").focus();
  await page.keyboard.press("Enter");
  await page.waitForFunction((id) => !document.querySelector(`#conversations li[data-id="${id}"]`), seen.deleted);
  seen.after_delete = { url: page.url(), listed: await page.locator("#conversations li[data-id]").count() };
  await violations(page);
  await context.close();
}

// An answer in Markdown, built as it streams and read at 360 px; Stop by button and by Esc,
// each after the first words are on screen; then Bob's rate limit.
async function stop() {
  await markdown();
  const { context, page } = await open(settings.alice);
  seen.stopped = [];
  for (const how of ["button", "escape"]) {
    const n = seen.stopped.length + 1;
    await ask(page, `Stop me by ${how}`);
    await page.waitForFunction((n) => {
      const a = document.querySelectorAll(".turn.assistant")[n - 1];
      return a && (a.querySelector(".body").textContent.length > 0 || !a.hasAttribute("aria-busy"));
    }, n);
    if (how === "button") await page.click("#stop");
    else await page.keyboard.press("Escape");
    const answer = await answered(page, n);
    seen.stopped.push({ how, text: await answer.innerText(), stop_hidden: await page.isHidden("#stop") });
  }
  await violations(page);
  await context.close();

  await dropped();

  const bob = await open(settings.bob);
  seen.limited = [];
  for (let n = 1; n <= 3; n += 1) {
    await ask(bob.page, `Message ${n}`);
    const answer = await answered(bob.page, n);
    seen.limited.push(await answer.innerText());
  }
  const countdown = bob.page.locator(".turn.assistant .countdown").last();
  const before = await countdown.innerText();
  await bob.page.waitForFunction((text) => document.querySelector(".turn.assistant:last-child .countdown")?.textContent !== text, before, { timeout: 5_000 });
  seen.countdown = [before, await countdown.innerText()];
  await violations(bob.page);
  await bob.context.close();
}

async function markdown() {
  const { context, page } = await open(settings.erin);
  await ask(page, "Show me some Markdown", "markdown");
  const answer = await answered(page, 1);
  seen.markdown = await answer.locator(".body").evaluate((body) => ({
    headings: [...body.querySelectorAll("h3, h4, h5, h6")].map((e) => [e.tagName, e.textContent]),
    strong: [...body.querySelectorAll("strong")].map((e) => e.textContent),
    em: [...body.querySelectorAll("em")].map((e) => e.textContent),
    bullets: [...body.querySelectorAll("ul > li")].map((e) => e.textContent),
    numbered: [...body.querySelectorAll("ol > li")].map((e) => e.textContent),
    quotes: [...body.querySelectorAll("blockquote")].map((e) => e.textContent),
    code: [...body.querySelectorAll("pre > code")].map((e) => e.textContent),
    inline_code: [...body.querySelectorAll("p code, li code")].map((e) => e.textContent),
    links: [...body.querySelectorAll("a")].map((e) => e.href),
    elements: [...body.querySelectorAll("*")].map((e) => e.tagName.toLowerCase()).filter((t) => !["h5", "p", "strong", "em", "a", "ul", "ol", "li", "code", "pre", "blockquote"].includes(t)),
    last: body.lastElementChild.textContent,
  }));
  await page.screenshot({ path: `${settings.screenshots}/markdown.png` });
  await page.setViewportSize({ width: 360, height: 740 });
  seen.narrow = await page.evaluate(() => ({
    scroll_width: document.documentElement.scrollWidth,
    sidebar_visible: getComputedStyle(document.getElementById("sidebar")).display !== "none",
  }));
  await page.screenshot({ path: `${settings.screenshots}/narrow.png` });
  await page.click("#toggle-sidebar");
  seen.narrow.sidebar_opens = await page.evaluate(() => getComputedStyle(document.getElementById("sidebar")).display !== "none");
  await page.screenshot({ path: `${settings.screenshots}/narrow-sidebar.png` });
  await violations(page);
  await context.close();
}

// Sign-in with the provider (authorization code and PKCE), then the token renewed before it
// expires, and the open socket told with an `auth` frame.
async function oidc() {
  const { context, page } = await watched();
  step("opening the sign-in page");
  await page.goto(settings.base);
  await page.waitForSelector("#oidc-signin:not([hidden])");
  seen.button = await page.textContent("#oidc-signin");
  await page.click("#oidc-signin");
  await page.waitForSelector("#app:not([hidden])");
  await page.waitForSelector("#model[data-ready]");
  seen.who = await page.textContent("#who");
  seen.url = page.url();
  const first = await page.evaluate(() => sessionStorage.getItem("nagare.token"));
  step("waiting for the renewal");
  await page.waitForFunction(() => window.__frames.some((f) => f.frame.type === "auth"), null, { timeout: 30_000 });
  seen.renewed = (await page.evaluate(() => sessionStorage.getItem("nagare.token"))) !== first;
  seen.auth_frame = await page.evaluate(() => window.__frames.find((f) => f.frame.type === "auth").frame);
  await ask(page, "Hello after the renewal");
  seen.answer = await (await answered(page, 1)).locator(".body").innerText();
  seen.in_storage = await page.evaluate(() => Object.keys(sessionStorage).sort());
  seen.cookies = (await context.cookies()).length;
  await violations(page);
  await context.close();
}

// The socket cut mid-answer (by routing it through the test): the answer says what happened, the
// page reconnects by itself, and the next message goes through.
async function dropped() {
  const { context, page } = await watched();
  const sockets = [];
  await context.routeWebSocket(/\/v1\/ws/, (ws) => {
    ws.connectToServer();
    sockets.push(ws);
  });
  step("opening with the socket routed");
  await page.goto(settings.frank);
  await page.waitForSelector("#model[data-ready]");
  await ask(page, "Cut me off");
  await page.waitForFunction(() => document.querySelector(".turn.assistant .body")?.textContent.length > 0);
  // Closing the page's side closes the server's too, as a dropped network would.
  await sockets[0].close({ code: 4000, reason: "cut by the test" });
  const answer = await answered(page, 1);
  seen.cut = {
    note: await answer.locator(".note").innerText(),
    status: await page.textContent("#connection"),
  };
  step("waiting for the reconnection");
  await page.waitForFunction(() => document.getElementById("connection").textContent === "Connected.", null, { timeout: 15_000 });
  seen.cut.sockets = sockets.length;
  await ask(page, "After the drop");
  seen.cut.after = await (await answered(page, 2)).locator(".body").innerText();
  await violations(page);
  await context.close();
}

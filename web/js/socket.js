// One WebSocket to the gateway for every chat of the page, reopened with backoff after a drop.
//
// The token rides in the `bearer.<jwt>` subprotocol (kept out of URLs and access logs), or in
// `?token=` where the server needs it there (API Gateway's authorizer reads the query string).

const MAX_BACKOFF_MS = 30_000;

export class Socket {
  constructor({ url, tokenIn, auth, onFrame, onState, onDrop }) {
    this.url = url;
    this.tokenIn = tokenIn;
    this.auth = auth;
    this.onFrame = onFrame;
    this.onState = onState; // (state, detail): "connecting", "open", "retrying" (ms), "closed"
    this.onDrop = onDrop; // the socket closed: answers in flight are lost
    this.ws = null;
    this.failures = 0;
    this.timer = 0;
    this.stopped = false;
    addEventListener("online", () => this.ws || this.connect());
  }

  connect() {
    clearTimeout(this.timer);
    if (this.stopped || this.ws || !this.auth.token) return;
    this.onState("connecting");
    const token = this.auth.token;
    const ws =
      this.tokenIn === "query"
        ? new WebSocket(`${this.url}?token=${encodeURIComponent(token)}`)
        : new WebSocket(this.url, ["nagare.v1", `bearer.${token}`]);
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.failures = 0;
      this.onState("open");
    };
    ws.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch {
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = (event) => {
      this.ws = null;
      if (opened) this.onDrop();
      if (this.stopped) return;
      // 4401: the token expired on the open socket. An upgrade refused before opening may be a
      // token the server no longer takes: the REST check in onState("retrying") finds out.
      if (event.code === 4401) {
        this.auth.expire();
        return;
      }
      this.failures += 1;
      const backoff = Math.min(MAX_BACKOFF_MS, 500 * 2 ** Math.min(this.failures - 1, 6));
      const delay = Math.round(backoff * (0.5 + Math.random() / 2));
      this.onState("retrying", { delay, opened, code: event.code });
      this.timer = setTimeout(() => this.connect(), delay);
    };
  }

  // Sends a frame; false when the socket is not open.
  send(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // A renewed token keeps the open socket alive past the old one's expiry.
  renew(token) {
    this.send({ action: "auth", token });
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.ws?.close(1000, "signed out");
    this.ws = null;
  }
}

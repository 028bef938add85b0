// What the page says: the error table's codes as sentences, and numbers for people.

const SENTENCES = {
  invalid_request: "The gateway refused this request",
  unauthorized: "Your sign-in is no longer valid. Sign in again to go on.",
  forbidden: "Your account is not allowed to do this.",
  not_found: "That was not found. It may have been deleted.",
  conflict: "That clashes with a change made at the same time. Try again.",
  payload_too_large: "That is too large for the gateway",
  rate_limited: "You are sending faster than your limit allows.",
  upstream_throttled: "The model is busy right now.",
  upstream_unavailable: "The model cannot be reached right now.",
  upstream_timeout: "The model took too long to answer.",
  upstream_error: "The model failed while answering.",
  cancelled: "Stopped.",
  unavailable: "The gateway is restarting or overloaded. Try again in a moment.",
  internal: "Something went wrong inside the gateway.",
};

// A sentence for an error {code, message}: the table's, with the gateway's own detail where
// that detail is what the user must fix.
export function sentence(error) {
  const known = SENTENCES[error.code];
  if (!known) return error.message || "Something went wrong.";
  if (error.code === "invalid_request" || error.code === "payload_too_large") {
    return `${known}: ${error.message}`;
  }
  return known;
}

const number = new Intl.NumberFormat();

export function count(n) {
  return number.format(n);
}

export function ms(n) {
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`;
}

export function when(epochMs) {
  const d = new Date(epochMs);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) : d.toLocaleDateString();
}

export function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

// An element with text, made safely.
export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// The gateway's REST routes, with the caller's token. A failure rejects with an ApiError that
// carries the error table's code.

export class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code || (status === 0 ? "unavailable" : "internal");
    this.retry_after_ms = error.retry_after_ms;
  }
}

export class Api {
  constructor(base, auth) {
    this.base = base;
    this.auth = auth;
  }

  async request(method, path, body) {
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers: {
          authorization: `Bearer ${this.auth.token}`,
          ...(body ? { "content-type": "application/json" } : {}),
        },
        body: body ? JSON.stringify(body) : undefined,
      });
    } catch {
      throw new ApiError(0, { error: { message: "the gateway cannot be reached" } });
    }
    if (response.status === 204) return null;
    const json = await response.json().catch(() => null);
    if (!response.ok) {
      const error = new ApiError(response.status, json);
      if (response.status === 401) this.auth.expire();
      throw error;
    }
    return json;
  }

  models() {
    return this.request("GET", "/v1/models");
  }

  knowledgeBases() {
    return this.request("GET", "/v1/knowledge-bases");
  }

  conversations(pageToken) {
    return this.request("GET", `/v1/conversations?limit=30${page(pageToken)}`);
  }

  turns(id, pageToken) {
    return this.request("GET", `/v1/conversations/${encodeURIComponent(id)}?limit=100${page(pageToken)}`);
  }

  deleteConversation(id) {
    return this.request("DELETE", `/v1/conversations/${encodeURIComponent(id)}`);
  }

  declareUpload(declaration) {
    return this.request("POST", "/v1/uploads", declaration);
  }

  // PUTs `file` where the ticket says, reporting progress (0 to 1). XMLHttpRequest, because
  // fetch cannot report an upload's progress.
  put(ticket, file, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("PUT", ticket.put_url);
      for (const [name, value] of Object.entries(ticket.put_headers || {})) xhr.setRequestHeader(name, value);
      xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
      xhr.onload = () => {
        let body = null;
        try {
          body = JSON.parse(xhr.responseText);
        } catch {
          // S3 answers a PUT with an empty body.
        }
        if (xhr.status >= 200 && xhr.status < 300) resolve(body);
        else reject(new ApiError(xhr.status, body));
      };
      xhr.onerror = () => reject(new ApiError(0, { error: { message: "the upload did not reach the gateway" } }));
      xhr.send(file);
    });
  }
}

function page(token) {
  return token ? `&page_token=${encodeURIComponent(token)}` : "";
}

// Calls to Tarn's HTTP API. The API key, when there is one, lives in this tab's
// sessionStorage only (never localStorage, never a URL) and goes out as
// `Authorization: Bearer <key>`.

const KEY_ITEM = "tarn.console.key";

export function getKey() {
  try {
    return sessionStorage.getItem(KEY_ITEM);
  } catch {
    return null;
  }
}

export function setKey(key) {
  if (key) sessionStorage.setItem(KEY_ITEM, key);
  else sessionStorage.removeItem(KEY_ITEM);
}

/** An answer that is not 2xx, with the server's `error.code` and `error.message`. */
export class ApiError extends Error {
  constructor(status, code, message, path) {
    super(message);
    this.status = status;
    this.code = code;
    this.path = path;
  }
}

/** Listeners told about every 401 (the console then asks for a key). */
const unauthenticated = new Set();
export function onUnauthenticated(listener) {
  unauthenticated.add(listener);
}

async function errorOf(response, path) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText || ""}`.trim();
  try {
    const text = await response.text();
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        code = body.error.code || code;
        message = body.error.message || message;
      } else if (text) {
        message = text.slice(0, 500);
      }
    } catch {
      if (text) message = text.slice(0, 500);
    }
  } catch {
    // the body could not be read; keep the status line
  }
  return new ApiError(response.status, code, message, path);
}

/**
 * Calls `path`. Options: `method`, `json` (a body sent as JSON), `accept`, `signal`,
 * `raw` (answer the Response instead of its parsed JSON), `quiet401` (do not tell the
 * listeners about a 401: the login form checks keys this way).
 */
export async function api(path, options = {}) {
  const headers = { accept: options.accept || "application/json" };
  const key = options.key !== undefined ? options.key : getKey();
  if (key) headers.authorization = `Bearer ${key}`;
  let body;
  if (options.json !== undefined) {
    headers["content-type"] = "application/json";
    body = JSON.stringify(options.json);
  } else if (options.body !== undefined) {
    headers["content-type"] = options.contentType || "text/plain";
    body = options.body;
  }
  let response;
  try {
    response = await fetch(path, {
      method: options.method || (body === undefined ? "GET" : "POST"),
      headers,
      body,
      signal: options.signal,
      cache: "no-store",
      credentials: "omit",
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "unreachable", `the server did not answer (${e.message})`, path);
  }
  if (!response.ok) {
    const error = await errorOf(response, path);
    if (response.status === 401 && !options.quiet401) {
      for (const listener of unauthenticated) listener(error);
    }
    throw error;
  }
  if (options.raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

/** Runs one SQL statement synchronously (`POST /v1/sql`) and answers `{columns, rows}`. */
export function sql(text, options = {}) {
  return api("/v1/sql", { json: { sql: text }, ...options });
}

/** `ns.table` for URLs: each part encoded. */
export function tablePath(qualified) {
  return qualified.split(".").map(encodeURIComponent).join(".");
}

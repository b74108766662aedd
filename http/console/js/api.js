// @ts-check
// Calls to Tarn's HTTP API. The API key, when there is one, lives in this tab's
// sessionStorage only (never localStorage, never a URL) and goes out as
// `Authorization: Bearer <key>`.
//
// The views call the API through the typed functions at the end of this file, whose answers
// are typed from the API's own OpenAPI description: `http/console-check/api.d.ts` is generated
// from `GET /v1/openapi.json`, and the test suite type-checks the console against it (see
// http/console-check/package.json). The types live in comments: the browser runs this file
// as it is.

/** @typedef {import("../../console-check/api").components["schemas"]} Schemas */

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
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {string} path
   */
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
 * @typedef {object} CallOptions
 * @property {string} [method]
 * @property {unknown} [json] a body sent as JSON
 * @property {string} [body] a body sent as it is, as `contentType`
 * @property {string} [contentType]
 * @property {string} [accept]
 * @property {AbortSignal} [signal]
 * @property {boolean} [raw] answer the Response instead of its parsed JSON
 * @property {boolean} [quiet401] do not tell the listeners about a 401 (the login form checks
 *   keys this way)
 * @property {string | null} [key] this key instead of the stored one
 */

/**
 * Calls `path`; answers the parsed JSON (or the Response, with `raw`).
 * @param {string} path
 * @param {CallOptions} [options]
 * @returns {Promise<any>}
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

/**
 * `ns.table` for URLs: each part encoded.
 * @param {string} qualified
 */
export function tablePath(qualified) {
  return qualified.split(".").map(encodeURIComponent).join(".");
}

/**
 * Runs one SQL statement synchronously (`POST /v1/sql`): `{columns, rows}`.
 * @param {string} text
 * @returns {Promise<Schemas["JsonResult"]>}
 */
export function sql(text) {
  return api("/v1/sql", { json: { sql: text } });
}

/**
 * `GET /v1/whoami`: the key's name and scopes (with `key`: that key, without telling the
 * listeners of a 401).
 * @param {string} [key]
 * @returns {Promise<Schemas["WhoAmI"]>}
 */
export function whoami(key) {
  return api("/v1/whoami", key === undefined ? { quiet401: true } : { key, quiet401: true });
}

/** @returns {Promise<Schemas["TableList"]>} */
export function listTables() {
  return api("/v1/tables");
}

/** @returns {Promise<Schemas["NamespaceList"]>} */
export function listNamespaces() {
  return api("/v1/namespaces");
}

/**
 * @param {string} name qualified table name
 * @returns {Promise<Schemas["TableInfo"]>}
 */
export function describeTable(name) {
  return api(`/v1/tables/${tablePath(name)}`);
}

/**
 * @param {string} name qualified table name
 * @param {number} limit
 * @returns {Promise<Schemas["History"]>}
 */
export function tableHistory(name, limit) {
  return api(`/v1/tables/${tablePath(name)}/history?limit=${limit}`);
}

/** @returns {Promise<Schemas["IngestStatus"]>} */
export function ingestStatus() {
  return api("/v1/ingest");
}

/**
 * Records into `table` (NDJSON or a JSON array), `?wait=commit` with `wait`.
 * @param {string} table
 * @param {string} body
 * @param {boolean} wait
 * @returns {Promise<Schemas["IngestReceipt"]>}
 */
export function ingestRecords(table, body, wait) {
  return api(`/v1/ingest/${tablePath(table)}${wait ? "?wait=commit" : ""}`, {
    method: "POST",
    body,
    contentType: body.startsWith("[") ? "application/json" : "application/x-ndjson",
  });
}

/** @returns {Promise<Schemas["JobList"]>} */
export function listJobs() {
  return api("/v1/jobs");
}

/**
 * @param {string} name
 * @param {number} limit
 * @returns {Promise<Schemas["RunList"]>}
 */
export function jobRuns(name, limit) {
  return api(`/v1/jobs/${encodeURIComponent(name)}/runs?limit=${limit}`);
}

/**
 * @param {string} name
 * @returns {Promise<Schemas["RunStarted"]>}
 */
export function runJob(name) {
  return api(`/v1/jobs/${encodeURIComponent(name)}/runs`, { method: "POST" });
}

/**
 * Starts an async query (`POST /v1/queries`).
 * @param {string} text
 * @returns {Promise<Schemas["QueryStatus"]>}
 */
export function submitQuery(text) {
  return api("/v1/queries", { json: { sql: text, reuse: true } });
}

/**
 * @param {string} id
 * @returns {Promise<Schemas["QueryStatus"]>}
 */
export function queryStatus(id) {
  return api(`/v1/queries/${encodeURIComponent(id)}`);
}

/**
 * @param {string} id
 * @returns {Promise<Schemas["QueryStatus"]>}
 */
export function cancelQuery(id) {
  return api(`/v1/queries/${encodeURIComponent(id)}`, { method: "DELETE" });
}

/**
 * A page of an async query's result as JSON.
 * @param {string} id
 * @param {number} maxRows
 * @param {string} [token] the page token of an earlier page's `next_page_token`
 * @returns {Promise<Schemas["JsonResult"]>}
 */
export function resultPage(id, maxRows, token) {
  const page = token ? `&page_token=${encodeURIComponent(token)}` : "";
  return api(`/v1/queries/${encodeURIComponent(id)}/results?max_rows=${maxRows}${page}`);
}

/**
 * The whole result of an async query in `accept`'s format, as a Response (for downloads).
 * @param {string} id
 * @param {string} accept
 * @returns {Promise<Response>}
 */
export function resultFile(id, accept) {
  return api(`/v1/queries/${encodeURIComponent(id)}/results`, { accept, raw: true });
}

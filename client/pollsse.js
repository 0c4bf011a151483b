// pollsse.js: the browser side of pollsse. It keeps one JSON document in step
// with a pollsse event stream (snapshot, then RFC 6902 patches or RFC 7396
// merge patches) and tells the page what changed.
//
//   import { connect } from "/client/pollsse.js";
//   const stream = connect("/events", { onChange(doc, change) { render(doc); } });
//
// No build step and no dependencies: an ES module for current browsers.
//
// Documents are immutable values: applyPatch, applyMergePatch and the stream
// return a new document that shares the untouched parts with the previous one,
// and never change a document they were given. Treat what onChange hands you
// as read-only.

/** An RFC 6902 patch that cannot be applied; the document is left as it was. */
export class PatchError extends Error {
  constructor(message, index, operation) {
    super(message);
    this.name = "PatchError";
    /** Position of the failing operation in the patch, or -1 for the patch itself. */
    this.index = index;
    /** The failing operation as it was given. */
    this.operation = operation;
  }
}

/**
 * Applies an RFC 6902 JSON Patch to doc and returns the new document.
 * Atomic: when any operation fails, a PatchError is thrown and doc is not
 * changed. doc itself is never changed: the containers on the paths that the
 * patch touches are copied once per call, everything else is shared with doc.
 * Values in the patch are used as they are, not copied.
 */
export function applyPatch(doc, patch) {
  if (!Array.isArray(patch)) {
    throw new PatchError("a JSON Patch must be an array of operations, got " + kindOf(patch), -1, patch);
  }
  // Containers created by this call: only these are changed in place.
  const owned = new WeakSet();
  let root = doc;
  for (let i = 0; i < patch.length; i++) {
    const op = patch[i];
    try {
      root = applyOperation(root, op, owned);
    } catch (err) {
      if (!(err instanceof PatchError)) throw err;
      throw new PatchError(`operation ${i} ${describe(op)}: ${err.message}`, i, op);
    }
  }
  return root;
}

function applyOperation(root, op, owned) {
  if (!isObject(op)) throw new PatchError("an operation must be an object, got " + kindOf(op));
  const path = pointer(op, "path");
  switch (op.op) {
    case "add":
      return add(root, path, value(op), owned);
    case "remove":
      return remove(root, path, owned);
    case "replace":
      return replace(root, path, value(op), owned);
    case "move": {
      const from = pointer(op, "from");
      const moved = get(root, from);
      if (from.length < path.length && from.every((t, k) => t === path[k])) {
        throw new PatchError(`cannot move ${op.from} into its own child ${op.path}`);
      }
      if (from.length === path.length && from.every((t, k) => t === path[k])) return root;
      return add(remove(root, from, owned), path, moved, owned);
    }
    case "copy": {
      const from = pointer(op, "from");
      // A copy, not a second reference: a later operation of this patch may
      // change one of the two places in place.
      return add(root, path, clone(get(root, from)), owned);
    }
    case "test": {
      const want = value(op);
      if (!equal(get(root, path), want)) {
        throw new PatchError(`value at ${JSON.stringify(op.path)} is not ${JSON.stringify(want)}`);
      }
      return root;
    }
    default:
      throw new PatchError("unknown op " + JSON.stringify(op.op));
  }
}

function add(root, path, val, owned) {
  if (path.length === 0) return val;
  const [newRoot, parent, token] = parentOf(root, path, owned);
  if (Array.isArray(parent)) {
    if (token === "-") {
      parent.push(val);
    } else {
      parent.splice(arrayIndex(parent, token, parent.length), 0, val);
    }
  } else {
    setKey(parent, token, val);
  }
  return newRoot;
}

function remove(root, path, owned) {
  if (path.length === 0) throw new PatchError("cannot remove the whole document");
  const [newRoot, parent, token] = parentOf(root, path, owned);
  if (Array.isArray(parent)) {
    parent.splice(arrayIndex(parent, token, parent.length - 1), 1);
  } else {
    if (!Object.hasOwn(parent, token)) throw new PatchError(`no member ${JSON.stringify(token)} to remove`);
    delete parent[token];
  }
  return newRoot;
}

function replace(root, path, val, owned) {
  if (path.length === 0) return val;
  const [newRoot, parent, token] = parentOf(root, path, owned);
  if (Array.isArray(parent)) {
    parent[arrayIndex(parent, token, parent.length - 1)] = val;
  } else {
    if (!Object.hasOwn(parent, token)) throw new PatchError(`no member ${JSON.stringify(token)} to replace`);
    setKey(parent, token, val);
  }
  return newRoot;
}

// parentOf returns the root and the container that holds path's last token,
// both (and all containers between them) owned by this call, so that the
// caller may change the container in place. The containers of the original
// document are copied, never changed.
function parentOf(root, path, owned) {
  const newRoot = writable(root, path, 0, owned);
  let node = newRoot;
  for (let k = 0; k < path.length - 1; k++) {
    const key = Array.isArray(node) ? arrayIndex(node, path[k], node.length - 1) : memberOf(node, path[k]);
    const child = writable(node[key], path, k + 1, owned);
    if (child !== node[key]) node[key] = child; // node is an array or key is an own member
    node = child;
  }
  return [newRoot, node, path[path.length - 1]];
}

function writable(node, path, depth, owned) {
  if (!isContainer(node)) {
    throw new PatchError(`${JSON.stringify(formatPointer(path.slice(0, depth)))} is ${kindOf(node)}, not an object or array`);
  }
  if (owned.has(node)) return node;
  // Spreading an object copies an own "__proto__" member as a member.
  const copy = Array.isArray(node) ? node.slice() : { ...node };
  owned.add(copy);
  return copy;
}

function get(root, path) {
  let node = root;
  for (let k = 0; k < path.length; k++) {
    if (Array.isArray(node)) {
      node = node[arrayIndex(node, path[k], node.length - 1)];
    } else if (isObject(node)) {
      node = node[memberOf(node, path[k])];
    } else {
      throw new PatchError(`${JSON.stringify(formatPointer(path.slice(0, k)))} is ${kindOf(node)}, not an object or array`);
    }
  }
  return node;
}

function memberOf(obj, token) {
  if (!Object.hasOwn(obj, token)) throw new PatchError(`no member ${JSON.stringify(token)}`);
  return token;
}

// arrayIndex parses an RFC 6901 array index: "0" or digits without a leading
// zero, at most max.
function arrayIndex(arr, token, max) {
  if (!/^(0|[1-9][0-9]*)$/.test(token)) {
    throw new PatchError(`${JSON.stringify(token)} is not an array index`);
  }
  const i = Number(token);
  if (i > max) throw new PatchError(`index ${token} is out of bounds for an array of length ${arr.length}`);
  return i;
}

// pointer parses op[field] as an RFC 6901 JSON Pointer into its tokens.
function pointer(op, field) {
  const p = op[field];
  if (typeof p !== "string") throw new PatchError(`"${field}" must be a string, got ${kindOf(p)}`);
  if (p === "") return [];
  if (p[0] !== "/") throw new PatchError(`"${field}" ${JSON.stringify(p)} does not start with "/"`);
  if (/~(?![01])/.test(p)) throw new PatchError(`"${field}" ${JSON.stringify(p)} has a "~" not followed by 0 or 1`);
  return p.slice(1).split("/").map((t) => t.replaceAll("~1", "/").replaceAll("~0", "~"));
}

// formatPointer returns the RFC 6901 JSON Pointer for a list of tokens.
function formatPointer(tokens) {
  return tokens.map((t) => "/" + String(t).replaceAll("~", "~0").replaceAll("/", "~1")).join("");
}

function value(op) {
  if (!Object.hasOwn(op, "value")) throw new PatchError('missing "value"');
  return op.value;
}

/**
 * Applies an RFC 7396 (formerly 7386) JSON Merge Patch to doc and returns the
 * new document. doc is not changed; untouched members are shared with it.
 */
export function applyMergePatch(doc, patch) {
  if (!isObject(patch)) return patch;
  const result = isObject(doc) ? { ...doc } : {};
  for (const key of Object.keys(patch)) {
    const val = patch[key];
    if (val === null) {
      delete result[key];
    } else {
      setKey(result, key, applyMergePatch(Object.hasOwn(result, key) ? result[key] : undefined, val));
    }
  }
  return result;
}

// setKey sets a member, "__proto__" included, without touching a prototype.
function setKey(obj, key, val) {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value: val, writable: true, enumerable: true, configurable: true });
  } else {
    obj[key] = val;
  }
}

// equal compares two JSON values: members in any order, array items in order.
function equal(a, b) {
  if (a === b) return true;
  if (!isContainer(a) || !isContainer(b) || Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => equal(x, b[i]));
  const keys = Object.keys(a);
  return keys.length === Object.keys(b).length && keys.every((k) => Object.hasOwn(b, k) && equal(a[k], b[k]));
}

function clone(v) {
  if (Array.isArray(v)) return v.map(clone);
  if (!isObject(v)) return v;
  const copy = {};
  for (const key of Object.keys(v)) setKey(copy, key, clone(v[key]));
  return copy;
}

function isContainer(v) {
  return typeof v === "object" && v !== null;
}

function isObject(v) {
  return isContainer(v) && !Array.isArray(v);
}

function kindOf(v) {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  if (v === undefined) return "missing";
  return typeof v === "object" ? "an object" : `the ${typeof v} ${JSON.stringify(v)}`;
}

function describe(op) {
  if (!isObject(op)) return "";
  return `(${op.op} ${JSON.stringify(op.path)})`;
}

/**
 * Opens a pollsse event stream at url and keeps stream.document in step with
 * the server's document.
 *
 * options:
 *   onChange(doc, change)  the document changed; change is {type, id, ops, data}:
 *                          type "snapshot", "patch", "merge", or "restore" (the
 *                          document from sessionStorage, before any event);
 *                          ops the patch or merge patch; data the event's text.
 *   onStatus(status)       a status event's data ({upstream: "up"|"down", ...}),
 *                          or {connection: "open"|"reconnecting"|"closed", retry_in_ms?}
 *                          when the connection changes.
 *   onError(err)           an event could not be used. When a patch cannot be
 *                          applied the stream reconnects without an id to get a
 *                          fresh snapshot, so the document converges again.
 *   resume                 keep the last id and document in sessionStorage and
 *                          resume from them when the page is loaded again. Costs
 *                          one JSON.stringify of the document per event. Default false.
 *   withCredentials        passed to EventSource. Default false.
 *   retryMs                first delay before reconnecting when the browser gave
 *                          up on the stream (an HTTP error); doubles up to 30s. Default 1000.
 *   EventSource, storage   stand-ins for globalThis.EventSource and sessionStorage.
 *
 * Returns {document, lastEventId, close()}.
 */
export function connect(url, options = {}) {
  return new Stream(url, options);
}

const MAX_RETRY_MS = 30_000;

class Stream {
  #document = undefined;
  #lastEventId = null;
  #url;
  #opts;
  #EventSource;
  #storage = null;
  #storageKey;
  #source = null;
  #hasDocument = false;
  #connection = "connecting";
  #failures = 0;
  #timer = null;
  #closed = false;

  constructor(url, opts) {
    this.#url = String(url);
    this.#opts = opts;
    this.#EventSource = opts.EventSource ?? globalThis.EventSource;
    if (typeof this.#EventSource !== "function") throw new TypeError("pollsse: no EventSource in this environment");
    if (opts.resume) {
      this.#storage = opts.storage ?? sessionStorageOrNull();
      this.#storageKey = "pollsse:" + absolute(this.#url);
      this.#restore();
    }
    this.#open();
  }

  /** The current document: undefined before the first snapshot. */
  get document() {
    return this.#document;
  }

  /** The id of the last event applied, or null. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** Closes the stream for good. No callback is called after close. */
  close() {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#source?.close();
    this.#source = null;
  }

  #restore() {
    let saved;
    try {
      saved = JSON.parse(this.#storage?.getItem(this.#storageKey) ?? "null");
    } catch {
      saved = null;
    }
    if (!isObject(saved) || typeof saved.id !== "string" || saved.id === "" || !Object.hasOwn(saved, "doc")) return;
    this.#document = saved.doc;
    this.#lastEventId = saved.id;
    this.#hasDocument = true;
    // Later, so that the caller has the stream in hand when onChange runs.
    queueMicrotask(() => {
      if (!this.#closed) this.#opts.onChange?.(saved.doc, { type: "restore", id: saved.id });
    });
  }

  #save() {
    if (!this.#storage) return;
    try {
      if (this.#lastEventId === null) {
        this.#storage.removeItem(this.#storageKey);
      } else {
        this.#storage.setItem(this.#storageKey, JSON.stringify({ id: this.#lastEventId, doc: this.#document }));
      }
    } catch {
      // Over quota or storage denied: resume from an older pair, or not at all.
      try {
        this.#storage.removeItem(this.#storageKey);
      } catch {}
    }
  }

  // #open starts a new EventSource. A new EventSource sends no Last-Event-ID
  // header, so the id we hold goes in the query; none when we hold no document.
  #open() {
    const url = this.#hasDocument && this.#lastEventId !== null
      ? withQuery(this.#url, "last_event_id", this.#lastEventId)
      : this.#url;
    const src = new this.#EventSource(url, { withCredentials: Boolean(this.#opts.withCredentials) });
    this.#source = src;
    const on = (type, fn) => src.addEventListener(type, (e) => {
      if (src === this.#source && !this.#closed) fn(e);
    });
    on("open", () => {
      this.#failures = 0;
      this.#setConnection("open");
    });
    on("error", () => {
      // CLOSED: the browser will not try again (an HTTP error status or a
      // wrong content type). Otherwise it reconnects by itself, with the
      // Last-Event-ID header.
      if (src.readyState === (this.#EventSource.CLOSED ?? 2)) {
        this.#retryLater();
      } else {
        this.#setConnection("reconnecting");
      }
    });
    for (const type of ["snapshot", "patch", "merge"]) on(type, (e) => this.#onChange(type, e));
    on("status", (e) => {
      let status;
      try {
        status = JSON.parse(e.data);
      } catch (err) {
        this.#opts.onError?.(new Error("pollsse: status event data is not JSON: " + err.message, { cause: err }));
        return;
      }
      this.#opts.onStatus?.(status);
    });
  }

  #onChange(type, e) {
    // An event without an id field carries the previous id: the protocol
    // gives every change an id.
    const id = e.lastEventId || null;
    let doc, ops;
    try {
      if (type === "snapshot") {
        try {
          doc = JSON.parse(e.data);
        } catch {
          doc = e.data; // a text document, in the server's snapshot mode
        }
      } else {
        if (!this.#hasDocument) throw new Error(`pollsse: ${type} event ${id} came before any snapshot`);
        ops = JSON.parse(e.data);
        doc = type === "patch" ? applyPatch(this.#document, ops) : applyMergePatch(this.#document, ops);
      }
    } catch (err) {
      this.#resync(err);
      return;
    }
    this.#document = doc;
    this.#hasDocument = true;
    this.#lastEventId = id;
    this.#save();
    this.#opts.onChange?.(doc, { type, id, ops, data: e.data });
  }

  // #resync drops the stream and its id and starts over with a fresh
  // snapshot. stream.document keeps the last good document until then.
  // onError comes last, so that an error thrown there does not stop this.
  #resync(err) {
    this.#source.close();
    this.#hasDocument = false;
    this.#lastEventId = null;
    this.#save();
    this.#setConnection("reconnecting");
    this.#open();
    this.#opts.onError?.(err);
  }

  #retryLater() {
    this.#source.close();
    this.#failures++;
    const max = Math.min(MAX_RETRY_MS, (this.#opts.retryMs ?? 1000) * 2 ** (this.#failures - 1));
    const delay = Math.round(max * (0.5 + Math.random() / 2)); // jitter: not every page at once
    this.#connection = "closed";
    this.#opts.onStatus?.({ connection: "closed", retry_in_ms: delay });
    this.#timer = setTimeout(() => {
      if (this.#closed) return;
      this.#setConnection("reconnecting");
      this.#open();
    }, delay);
  }

  #setConnection(state) {
    if (state === this.#connection) return;
    this.#connection = state;
    this.#opts.onStatus?.({ connection: state });
  }
}

function withQuery(url, name, val) {
  const hash = url.indexOf("#");
  const base = hash < 0 ? url : url.slice(0, hash);
  const fragment = hash < 0 ? "" : url.slice(hash);
  return base + (base.includes("?") ? "&" : "?") + name + "=" + encodeURIComponent(val) + fragment;
}

function absolute(url) {
  try {
    return new URL(url, globalThis.location?.href).href;
  } catch {
    return url;
  }
}

function sessionStorageOrNull() {
  try {
    return globalThis.sessionStorage ?? null; // the getter throws where storage is denied
  } catch {
    return null;
  }
}

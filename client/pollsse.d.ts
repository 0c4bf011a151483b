// Type declarations of pollsse.js, the browser side of pollsse. The
// comments of pollsse.js say the same at more length.
//
// Doc, where it appears, is the type the page keeps its document as
// (JsonValue unless it says otherwise): the client does not check it.

/** A JSON value, as JSON.parse returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [member: string]: JsonValue };

/** One operation of an RFC 6902 JSON Patch. path and from are RFC 6901 JSON Pointers. */
export type PatchOperation =
  | { op: "add"; path: string; value: JsonValue }
  | { op: "remove"; path: string }
  | { op: "replace"; path: string; value: JsonValue }
  | { op: "move"; from: string; path: string }
  | { op: "copy"; from: string; path: string }
  | { op: "test"; path: string; value: JsonValue };

/** An RFC 6902 patch that cannot be applied; the document is left as it was. */
export class PatchError extends Error {
  constructor(message: string, index: number, operation: unknown);
  name: "PatchError";
  /** Position of the failing operation in the patch, or -1 for the patch itself. */
  index: number;
  /** The failing operation as it was given (the patch itself when index is -1). */
  operation: unknown;
}

/**
 * Applies an RFC 6902 JSON Patch to doc and returns the new document.
 * Atomic: when any operation fails, a PatchError is thrown and doc is not
 * changed. doc itself is never changed; the result shares what the patch did
 * not touch with it.
 */
export function applyPatch<Doc = JsonValue>(doc: Doc, patch: readonly PatchOperation[]): Doc;

/**
 * Applies an RFC 7396 JSON Merge Patch to doc and returns the new document.
 * doc is not changed; untouched members are shared with it.
 */
export function applyMergePatch<Doc = JsonValue>(doc: Doc, patch: JsonValue): Doc;

/**
 * What changed, the second argument of onChange: a SnapshotChange,
 * PatchChange or MergeChange for an event, a RestoreChange for the document
 * kept in storage.
 */
export type Change = SnapshotChange | PatchChange | MergeChange | RestoreChange;

/**
 * A whole new document: the first event of a stream, or a change sent whole.
 * A snapshot that is not JSON (the server's snapshot mode) is a document of
 * its own: the text.
 */
export interface SnapshotChange {
  type: "snapshot";
  /** The event's id; null for an event that came without one. */
  id: string | null;
  ops: undefined;
  /** The event's text: the document. */
  data: string;
}

/** An RFC 6902 patch, applied to the previous document. */
export interface PatchChange {
  type: "patch";
  /** The event's id; null for an event that came without one. */
  id: string | null;
  /** The patch. */
  ops: PatchOperation[];
  /** The event's text: the patch. */
  data: string;
}

/** An RFC 7396 merge patch, applied to the previous document. */
export interface MergeChange {
  type: "merge";
  /** The event's id; null for an event that came without one. */
  id: string | null;
  /** The merge patch. */
  ops: JsonValue;
  /** The event's text: the merge patch. */
  data: string;
}

/** The document and id kept in storage (resume), handed over before any event. */
export interface RestoreChange {
  type: "restore";
  /** The id that the stream resumes from. */
  id: string;
  ops?: undefined;
  data?: undefined;
}

/** The data of a status event: the state of the stream's upstream. */
export interface UpstreamStatus {
  upstream: "up" | "down";
  /** The id of the stream's topic, as in the server's log lines. */
  topic: string;
  /** The HTTP status the upstream answered with, when it answered. */
  status?: number;
  /** Why the polls fail. */
  error?: string;
  /** How long until the server polls again, in milliseconds. */
  retry_in_ms?: number;
}

/** A change of the connection, reported by the client itself. */
export type ConnectionStatus =
  /** The stream is open. */
  | { connection: "open" }
  /** The connection broke, or the client starts over for a fresh snapshot; the browser reconnects. */
  | { connection: "reconnecting" }
  /** The browser gave up (an HTTP error); the client opens a new stream after retry_in_ms. */
  | { connection: "closed"; retry_in_ms: number };

/** The argument of onStatus. */
export type Status = UpstreamStatus | ConnectionStatus;

/** The event object that a listener of an EventSourceLike is given. */
export interface EventLike {
  readonly data: string;
  readonly lastEventId: string;
}

/** What connect needs of an EventSource; the browser's EventSource is one. */
export interface EventSourceLike {
  readonly readyState: number;
  addEventListener(type: string, listener: (event: EventLike) => void): void;
  close(): void;
}

/** A constructor of EventSourceLike, such as the browser's EventSource. */
export interface EventSourceConstructor {
  new (url: string, init: { withCredentials: boolean }): EventSourceLike;
  /** The readyState of a source the browser gave up on. Default 2. */
  readonly CLOSED?: number;
}

/** What connect needs of a storage; the browser's sessionStorage is one. */
export interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
  removeItem(key: string): void;
}

/** The options of connect. Doc is the type of the document. */
export interface ConnectOptions<Doc = JsonValue> {
  /** The document changed: doc is the new document (read-only), change says how. */
  onChange?: (doc: Doc, change: Change) => void;
  /** A status event came, or the connection changed. */
  onStatus?: (status: Status) => void;
  /**
   * An event could not be used (a PatchError, a SyntaxError, ...). After a
   * patch that cannot be applied the stream starts over with a fresh snapshot.
   */
  onError?: (err: Error) => void;
  /**
   * Keep the last id and document in storage and resume from them when the
   * page is loaded again. Costs one JSON.stringify of the document per event.
   * Default false.
   */
  resume?: boolean;
  /** Passed to EventSource. Default false. */
  withCredentials?: boolean;
  /**
   * First delay in milliseconds before a new stream when the browser gave up
   * on one; doubles up to 30 s. Default 1000.
   */
  retryMs?: number;
  /** Stands in for globalThis.EventSource. */
  EventSource?: EventSourceConstructor;
  /** Stands in for sessionStorage, with resume. */
  storage?: StorageLike;
}

/** An open stream, as connect returns it. */
export interface Stream<Doc = JsonValue> {
  /** The current document: undefined before the first snapshot. */
  readonly document: Doc | undefined;
  /** The id of the last event applied, or null. */
  readonly lastEventId: string | null;
  /** Closes the stream for good. No callback is called after close. */
  close(): void;
}

/**
 * Opens a pollsse event stream at url and keeps stream.document in step with
 * the server's document. Throws a TypeError when there is no EventSource.
 */
export function connect<Doc = JsonValue>(url: string | URL, options?: ConnectOptions<Doc>): Stream<Doc>;

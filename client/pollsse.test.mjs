// Tests of connect() with a fake EventSource that is fed the bytes a pollsse
// server writes and parses them as a browser does (the "Interpreting an event
// stream" rules of the HTML standard, minus what the protocol does not use).
import { test, describe, beforeEach } from "node:test";
import assert from "node:assert/strict";
import { connect, PatchError } from "./pollsse.js";

class FakeEventSource {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;
  static all = [];

  readyState = FakeEventSource.CONNECTING;
  #listeners = {};
  #lastEventId = "";

  constructor(url, init = {}) {
    this.url = url;
    this.withCredentials = Boolean(init.withCredentials);
    FakeEventSource.all.push(this);
  }

  addEventListener(type, fn) {
    (this.#listeners[type] ??= []).push(fn);
  }

  close() {
    this.readyState = FakeEventSource.CLOSED;
  }

  open() {
    this.readyState = FakeEventSource.OPEN;
    this.#dispatch("open", {});
  }

  // error: the connection broke; the browser reconnects unless permanent
  // (an HTTP error status), when it gives up.
  error({ permanent = false } = {}) {
    if (this.readyState === FakeEventSource.CLOSED) return;
    this.readyState = permanent ? FakeEventSource.CLOSED : FakeEventSource.CONNECTING;
    this.#dispatch("error", {}, true); // a browser that gives up closes first, then fires error
  }

  // feed parses complete events from stream text and dispatches them.
  feed(text) {
    if (this.readyState === FakeEventSource.CONNECTING) this.open();
    let type = "", data = [];
    for (const line of text.split(/\r\n|\r|\n/)) {
      if (line === "") {
        if (data.length > 0) {
          this.#dispatch(type || "message", { data: data.join("\n"), lastEventId: this.#lastEventId });
        }
        type = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") type = value;
      else if (field === "data") data.push(value);
      else if (field === "id" && !value.includes("\0")) this.#lastEventId = value; // kept for later events
    }
  }

  #dispatch(type, init, evenIfClosed = false) {
    if (this.readyState === FakeEventSource.CLOSED && !evenIfClosed) return; // close() ends all events
    for (const fn of this.#listeners[type] ?? []) fn({ type, ...init });
  }
}

class FakeStorage {
  items = new Map();
  getItem(k) {
    return this.items.has(k) ? this.items.get(k) : null;
  }
  setItem(k, v) {
    this.items.set(k, String(v));
  }
  removeItem(k) {
    this.items.delete(k);
  }
}

// frame returns one event as a pollsse server writes it: one data line per
// line of data.
function frame(event, id, data) {
  let s = `event: ${event}\n`;
  if (id !== undefined) s += `id: ${id}\n`;
  for (const line of data.split("\n")) s += `data: ${line}\n`;
  return s + "\n";
}

// record connects with callbacks that record what they are given.
function record(url = "/events", options = {}) {
  const seen = { changes: [], statuses: [], errors: [] };
  const stream = connect(url, {
    EventSource: FakeEventSource,
    onChange: (doc, change) => seen.changes.push({ doc, change }),
    onStatus: (s) => seen.statuses.push(s),
    onError: (err) => seen.errors.push(err),
    ...options,
  });
  return { stream, seen, source: () => FakeEventSource.all.at(-1) };
}

beforeEach(() => {
  FakeEventSource.all = [];
});

describe("connect", () => {
  test("builds the document from a snapshot and the patches after it", () => {
    const { stream, seen, source } = record();
    assert.equal(source().url, "/events");
    assert.equal(stream.document, undefined);
    source().feed(
      "retry: 2000\n\n" +
        frame("snapshot", "1", '{"clock":{"s":1},"items":[]}') +
        ":\n\n" +
        frame("patch", "2", '[{"op":"replace","path":"/clock/s","value":2},{"op":"add","path":"/items/-","value":"a"}]') +
        frame("patch", "3", '[{"op":"add","path":"/items/0","value":"b"}]'),
    );
    assert.deepEqual(stream.document, { clock: { s: 2 }, items: ["b", "a"] });
    assert.equal(stream.lastEventId, "3");
    assert.deepEqual(
      seen.changes.map((c) => [c.change.type, c.change.id]),
      [["snapshot", "1"], ["patch", "2"], ["patch", "3"]],
    );
    assert.deepEqual(seen.changes[0].doc, { clock: { s: 1 }, items: [] }, "a later patch changed an earlier document");
    assert.deepEqual(seen.changes[2].change.ops, [{ op: "add", path: "/items/0", value: "b" }]);
    assert.equal(seen.changes[2].change.data, '[{"op":"add","path":"/items/0","value":"b"}]');
    assert.deepEqual(seen.errors, []);
  });

  test("joins data split over several data lines", () => {
    const { stream, source } = record();
    source().feed(frame("snapshot", "1", '{\n"a": [1,\n2]\n}'));
    assert.deepEqual(stream.document, { a: [1, 2] });
  });

  test("applies merge patches", () => {
    const { stream, seen, source } = record();
    source().feed(frame("snapshot", "1", '{"a":1,"b":{"c":2,"d":3}}') + frame("merge", "2", '{"a":null,"b":{"d":4}}'));
    assert.deepEqual(stream.document, { b: { c: 2, d: 4 } });
    assert.deepEqual(seen.changes[1].change, { type: "merge", id: "2", ops: { a: null, b: { d: 4 } }, data: '{"a":null,"b":{"d":4}}' });
  });

  test("keeps a snapshot that is not JSON as text", () => {
    const { stream, source } = record();
    source().feed(frame("snapshot", "t1", "plain text\nsecond line"));
    assert.equal(stream.document, "plain text\nsecond line");
    assert.equal(stream.lastEventId, "t1");
  });

  test("a new snapshot replaces the document", () => {
    const { stream, source } = record();
    source().feed(frame("snapshot", "1", '{"a":1}') + frame("snapshot", "9", '{"b":2}'));
    assert.deepEqual(stream.document, { b: 2 });
    assert.equal(stream.lastEventId, "9");
  });

  test("reports status events and leaves the document and id alone", () => {
    const { stream, seen, source } = record();
    source().feed(
      frame("snapshot", "1", '{"a":1}') +
        frame("status", undefined, '{"upstream":"down","status":503,"error":"Service Unavailable","retry_in_ms":4000}') +
        frame("status", undefined, '{"upstream":"up"}'),
    );
    assert.deepEqual(seen.statuses, [
      { connection: "open" },
      { upstream: "down", status: 503, error: "Service Unavailable", retry_in_ms: 4000 },
      { upstream: "up" },
    ]);
    assert.deepEqual(stream.document, { a: 1 });
    assert.equal(stream.lastEventId, "1");
    assert.equal(seen.changes.length, 1);
  });

  test("reports a status that comes before any snapshot, while there is no document", () => {
    const { stream, seen, source } = record();
    source().feed(
      "retry: 3000\n\n" +
        frame("status", undefined, '{"upstream":"down","error":"select \\"/data\\": no member \\"data\\"","topic":"0123456789ab"}'),
    );
    assert.deepEqual(seen.statuses, [
      { connection: "open" },
      { upstream: "down", error: 'select "/data": no member "data"', topic: "0123456789ab" },
    ]);
    assert.equal(stream.document, undefined);
    assert.equal(stream.lastEventId, null);
    assert.deepEqual(seen.changes, []);
    assert.deepEqual(seen.errors, []);
    assert.equal(FakeEventSource.all.length, 1, "a status before the snapshot made the client reconnect");

    source().feed(frame("status", undefined, '{"upstream":"up"}') + frame("snapshot", "1", '{"data":[]}'));
    assert.deepEqual(seen.statuses.at(-1), { upstream: "up" });
    assert.deepEqual(stream.document, { data: [] });
    assert.equal(stream.lastEventId, "1");
  });

  test("reports a status that is not JSON as an error, without reconnecting", () => {
    const { seen, source } = record();
    source().feed(frame("snapshot", "1", "{}") + frame("status", undefined, "oops"));
    assert.equal(seen.errors.length, 1);
    assert.equal(FakeEventSource.all.length, 1);
  });

  test("ignores events of other types", () => {
    const { stream, seen, source } = record();
    source().feed(frame("snapshot", "1", '{"a":1}') + "data: hello\n\n" + frame("future", "2", "{}"));
    assert.deepEqual(stream.document, { a: 1 });
    assert.equal(seen.changes.length, 1);
    assert.deepEqual(seen.errors, []);
  });

  test("reports connection changes once each", () => {
    const { seen, source } = record();
    source().open();
    source().error();
    source().error(); // each failed attempt fires error again
    source().open();
    assert.deepEqual(seen.statuses, [{ connection: "open" }, { connection: "reconnecting" }, { connection: "open" }]);
    assert.equal(FakeEventSource.all.length, 1, "the browser reconnects by itself");
  });

  test("passes withCredentials on", () => {
    const { source } = record("/events", { withCredentials: true });
    assert.equal(source().withCredentials, true);
    record("/other");
    assert.equal(source().withCredentials, false);
  });

  test("throws without an EventSource", () => {
    assert.throws(() => connect("/events", { EventSource: undefined }), TypeError);
  });
});

describe("connect starts over with a fresh snapshot", () => {
  const failures = [
    ["a patch that does not apply", frame("patch", "2", '[{"op":"remove","path":"/missing"}]'), PatchError],
    ["a patch that fails half-way", frame("patch", "2", '[{"op":"replace","path":"/a","value":5},{"op":"test","path":"/a","value":6}]'), PatchError],
    ["a patch that is not JSON", frame("patch", "2", "[{"), SyntaxError],
    ["a patch that is not an array", frame("patch", "2", '{"op":"add"}'), PatchError],
  ];
  for (const [what, event, errorType] of failures) {
    test(`after ${what}`, () => {
      const { stream, seen, source } = record();
      const first = source();
      first.feed(frame("snapshot", "1", '{"a":1}') + event);
      assert.equal(seen.errors.length, 1);
      assert.ok(seen.errors[0] instanceof errorType, `got ${seen.errors[0]}`);
      assert.equal(first.readyState, FakeEventSource.CLOSED);
      assert.equal(FakeEventSource.all.length, 2);
      assert.equal(source().url, "/events", "the new connection must not resume");
      assert.deepEqual(stream.document, { a: 1 }, "the last good document stays until the snapshot");
      assert.equal(stream.lastEventId, null);

      first.feed(frame("patch", "3", '[{"op":"replace","path":"/a","value":7}]')); // closed: never dispatched
      source().feed(frame("snapshot", "7", '{"a":2}') + frame("patch", "8", '[{"op":"replace","path":"/a","value":3}]'));
      assert.deepEqual(stream.document, { a: 3 });
      assert.equal(stream.lastEventId, "8");
      assert.equal(seen.errors.length, 1);
    });
  }

  test("after a patch that comes before any snapshot", () => {
    const { stream, seen, source } = record();
    source().feed(frame("merge", "5", '{"a":1}'));
    assert.equal(stream.document, undefined, "a merge patch is no document");
    assert.equal(seen.errors.length, 1);
    assert.equal(FakeEventSource.all.length, 2);
    assert.equal(source().url, "/events");
  });

  test("and no further patch is applied until it came", () => {
    const { stream, seen, source } = record();
    source().feed(frame("snapshot", "1", '{"a":1}') + frame("patch", "2", '[{"op":"remove","path":"/x"}]'));
    source().feed(frame("merge", "3", '{"b":1}'));
    assert.deepEqual(stream.document, { a: 1 });
    assert.equal(seen.errors.length, 2);
    assert.equal(FakeEventSource.all.length, 3);
  });

  test("even when onError throws", () => {
    const { stream, source } = record("/events", {
      onError: () => {
        throw new Error("app bug");
      },
    });
    assert.throws(() => source().feed(frame("snapshot", "1", "{}") + frame("patch", "2", "nope")), /app bug/);
    assert.equal(FakeEventSource.all.length, 2);
    source().feed(frame("snapshot", "3", '{"b":1}'));
    assert.deepEqual(stream.document, { b: 1 });
  });

  test("and stays closed when onError closes the stream", () => {
    const { stream, source } = record("/events", { onError: () => stream.close() });
    source().feed(frame("snapshot", "1", "{}") + frame("patch", "2", "nope"));
    assert.ok(FakeEventSource.all.every((s) => s.readyState === FakeEventSource.CLOSED));
  });
});

describe("connect with resume", () => {
  test("keeps the last id and document, and resumes from them on the next page load", async () => {
    const storage = new FakeStorage();
    const first = record("/events?topic=a", { resume: true, storage });
    assert.equal(first.source().url, "/events?topic=a");
    first.source().feed(frame("snapshot", "s1", '{"n":1}') + frame("patch", "p/2", '[{"op":"replace","path":"/n","value":2}]'));
    assert.deepEqual(JSON.parse(storage.getItem("pollsse:/events?topic=a")), { id: "p/2", doc: { n: 2 } });
    first.stream.close();

    const second = record("/events?topic=a", { resume: true, storage });
    assert.equal(second.source().url, "/events?topic=a&last_event_id=p%2F2");
    assert.deepEqual(second.stream.document, { n: 2 });
    assert.equal(second.stream.lastEventId, "p/2");
    await Promise.resolve();
    assert.deepEqual(second.seen.changes, [{ doc: { n: 2 }, change: { type: "restore", id: "p/2" } }]);

    second.source().feed(frame("patch", "p3", '[{"op":"replace","path":"/n","value":3}]'));
    assert.deepEqual(second.stream.document, { n: 3 });
  });

  test("forgets the id when it starts over", () => {
    const storage = new FakeStorage();
    const { source } = record("/events", { resume: true, storage });
    source().feed(frame("snapshot", "1", "{}"));
    assert.ok(storage.getItem("pollsse:/events"));
    source().feed(frame("patch", "2", '[{"op":"remove","path":"/x"}]'));
    assert.equal(storage.getItem("pollsse:/events"), null);
  });

  test("ignores what it cannot use in storage", () => {
    for (const saved of ["not json", '{"doc":{}}', '{"id":"","doc":{}}', '{"id":"1"}', "[]"]) {
      const storage = new FakeStorage();
      storage.setItem("pollsse:/events", saved);
      const { stream, source } = record("/events", { resume: true, storage });
      assert.equal(source().url, "/events", saved);
      assert.equal(stream.document, undefined);
    }
  });

  test("works on without storage", () => {
    const broken = {
      getItem() { throw new Error("denied"); },
      setItem() { throw new Error("quota"); },
      removeItem() { throw new Error("denied"); },
    };
    const { stream, source } = record("/events", { resume: true, storage: broken });
    source().feed(frame("snapshot", "1", '{"a":1}'));
    assert.deepEqual(stream.document, { a: 1 });
  });

  test("is off by default", () => {
    const storage = new FakeStorage();
    const { source } = record("/events", { storage });
    source().feed(frame("snapshot", "1", "{}"));
    assert.equal(storage.items.size, 0);
  });
});

describe("connect when the browser gives up", () => {
  // waitForSource resolves when the stream has made its n-th EventSource.
  async function waitForSource(n) {
    for (let i = 0; i < 200 && FakeEventSource.all.length < n; i++) await new Promise((r) => setTimeout(r, 5));
    assert.equal(FakeEventSource.all.length, n, "no new connection");
    return FakeEventSource.all[n - 1];
  }

  test("reconnects later, resuming from the last id, with a growing delay", async () => {
    const { stream, seen, source } = record("/events", { retryMs: 4 });
    source().feed(frame("snapshot", "1", '{"a":1}'));
    source().error({ permanent: true });
    const retry = seen.statuses.at(-1);
    assert.equal(retry.connection, "closed");
    assert.ok(retry.retry_in_ms >= 2 && retry.retry_in_ms <= 4, `retry_in_ms ${retry.retry_in_ms}`);

    const second = await waitForSource(2);
    assert.equal(second.url, "/events?last_event_id=1");
    second.error({ permanent: true });
    const again = seen.statuses.at(-1);
    assert.ok(again.retry_in_ms >= 4 && again.retry_in_ms <= 8, `retry_in_ms ${again.retry_in_ms}`);

    const third = await waitForSource(3);
    third.feed(frame("patch", "2", '[{"op":"replace","path":"/a","value":2}]'));
    assert.deepEqual(stream.document, { a: 2 });
    assert.deepEqual(
      seen.statuses.map((s) => s.connection),
      ["open", "closed", "reconnecting", "closed", "reconnecting", "open"],
    );

    third.error({ permanent: true });
    const afterOpen = seen.statuses.at(-1);
    assert.ok(afterOpen.retry_in_ms <= 4, `an open connection resets the delay, got ${afterOpen.retry_in_ms}`);
    stream.close();
  });

  test("close cancels a pending reconnect", async () => {
    const { stream, source } = record("/events", { retryMs: 1 });
    source().error({ permanent: true });
    stream.close();
    await new Promise((r) => setTimeout(r, 20));
    assert.equal(FakeEventSource.all.length, 1);
  });
});

describe("close", () => {
  test("closes the EventSource, and no callback runs after it", () => {
    const { stream, seen, source } = record();
    source().feed(frame("snapshot", "1", '{"a":1}'));
    stream.close();
    assert.equal(source().readyState, FakeEventSource.CLOSED);
    source().readyState = FakeEventSource.OPEN; // even if an event slipped through
    source().feed(frame("patch", "2", "[]") + frame("status", undefined, "{}"));
    assert.equal(seen.changes.length, 1);
    assert.equal(seen.statuses.length, 1);
  });

  test("before a restored document is handed over", async () => {
    const storage = new FakeStorage();
    storage.setItem("pollsse:/events", '{"id":"1","doc":{}}');
    const { stream, seen } = record("/events", { resume: true, storage });
    stream.close();
    await Promise.resolve();
    assert.equal(seen.changes.length, 0);
  });
});

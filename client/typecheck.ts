// A program that uses every option of connect, the arguments of its
// callbacks and the members of the stream it returns, as a front-end build
// would, by the package's name. package.test.mjs type-checks it with tsc
// against pollsse.d.ts (tsconfig.json); it is never run. Equal checks that
// a type is exactly the one the code hands over, so that a declaration
// that widens to any fails; each @ts-expect-error is a use that must not
// type-check.
import {
  applyMergePatch,
  applyPatch,
  connect,
  PatchError,
  type Change,
  type ConnectOptions,
  type EventLike,
  type EventSourceLike,
  type JsonValue,
  type PatchOperation,
  type Status,
  type StorageLike,
  type Stream,
} from "@pollsse/client";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T>(_: T) {
  return <U>(ok: Equal<T, U>) => ok;
}

// A document type of the page's own.
interface Orders {
  orders: { id: number; status: string }[];
}

function render(_: Orders) {}

// Every option, with the browser's EventSource and sessionStorage.
const options: ConnectOptions<Orders> = {
  onChange(doc, change) {
    expectType(doc)<Orders>(true);
    expectType(change)<Change>(true);
    render(doc);
    switch (change.type) {
      case "snapshot":
        expectType(change.id)<string | null>(true);
        expectType(change.ops)<undefined>(true);
        expectType(change.data)<string>(true);
        break;
      case "patch": {
        expectType(change.id)<string | null>(true);
        expectType(change.ops)<PatchOperation[]>(true);
        expectType(change.data)<string>(true);
        const op = change.ops[0];
        if (op?.op === "move" || op?.op === "copy") expectType(op.from)<string>(true);
        if (op?.op === "add" || op?.op === "replace" || op?.op === "test") expectType(op.value)<JsonValue>(true);
        if (op) expectType(op.path)<string>(true);
        break;
      }
      case "merge":
        expectType(change.id)<string | null>(true);
        expectType(change.ops)<JsonValue>(true);
        expectType(change.data)<string>(true);
        break;
      case "restore":
        expectType(change.id)<string>(true);
        expectType(change.ops)<undefined>(true);
        expectType(change.data)<undefined>(true);
        break;
      default:
        expectType(change)<never>(true);
    }
    // @ts-expect-error: no change of this type
    if (change.type === "delta") return;
  },
  onStatus(status) {
    expectType(status)<Status>(true);
    if ("upstream" in status) {
      expectType(status.upstream)<"up" | "down">(true);
      expectType(status.topic)<string>(true);
      expectType(status.status)<number | undefined>(true);
      expectType(status.error)<string | undefined>(true);
      expectType(status.retry_in_ms)<number | undefined>(true);
    } else {
      expectType(status.connection)<"open" | "reconnecting" | "closed">(true);
      if (status.connection === "closed") expectType(status.retry_in_ms)<number>(true);
      // @ts-expect-error: only a closed connection says when it retries
      if (status.connection === "open") status.retry_in_ms;
    }
  },
  onError(err) {
    expectType(err)<Error>(true);
    if (err instanceof PatchError) {
      expectType(err.index)<number>(true);
      expectType(err.operation)<unknown>(true);
      expectType(err.name)<"PatchError">(true);
    }
  },
  resume: true,
  withCredentials: true,
  retryMs: 2000,
  EventSource,
  storage: sessionStorage,
};

const stream = connect("/events", options);
expectType(stream)<Stream<Orders>>(true);
expectType(stream.document)<Orders | undefined>(true);
expectType(stream.lastEventId)<string | null>(true);
expectType(stream.close())<void>(true);
// @ts-expect-error: the document is the stream's to change
stream.document = { orders: [] };
// @ts-expect-error: and so is the id
stream.lastEventId = "1";

// Without options, and with a URL: the document is any JSON value.
const plain = connect(new URL("/events", "https://example.com"));
expectType(plain.document)<JsonValue | undefined>(true);
connect("/events", {});
// @ts-expect-error: a url is a string or a URL
connect(42);
// @ts-expect-error: an option that does not exist
connect("/events", { reconnect: true });
// @ts-expect-error: retryMs is milliseconds
connect("/events", { retryMs: "1s" });
// @ts-expect-error: the callbacks get these arguments and no others
connect("/events", { onChange(_doc: JsonValue, _change: Change, _more: string) {} });

// Stand-ins for EventSource and storage, as in tests or another environment.
class FakeEventSource implements EventSourceLike {
  static readonly CLOSED = 2;
  readyState = 0;
  constructor(readonly url: string, readonly init: { withCredentials: boolean }) {}
  addEventListener(_type: string, listener: (event: EventLike) => void) {
    listener({ data: "{}", lastEventId: "" });
  }
  close() {
    this.readyState = FakeEventSource.CLOSED;
  }
}
const memory = new Map<string, string>();
const storage: StorageLike = {
  getItem: (key) => memory.get(key) ?? null,
  setItem: (key, value) => void memory.set(key, value),
  removeItem: (key) => void memory.delete(key),
};
connect("/events", { EventSource: FakeEventSource, storage, resume: true });
// @ts-expect-error: an EventSource must be able to close
connect("/events", { EventSource: class { readyState = 0; addEventListener() {} } });
// @ts-expect-error: storage must hold strings
connect("/events", { storage: { getItem: () => 1, setItem() {}, removeItem() {} } });

// The patch functions.
const doc = JSON.parse('{"a":[1,2]}') as JsonValue;
const ops: PatchOperation[] = [
  { op: "add", path: "/a/-", value: 3 },
  { op: "remove", path: "/a/0" },
  { op: "replace", path: "/a/0", value: { b: null } },
  { op: "move", from: "/a/0", path: "/c" },
  { op: "copy", from: "/c", path: "/d" },
  { op: "test", path: "/d", value: { b: null } },
];
expectType(applyPatch(doc, ops))<JsonValue>(true);
expectType(applyPatch<Orders>({ orders: [] }, [{ op: "add", path: "/orders/-", value: { id: 1, status: "new" } }]))<Orders>(true);
expectType(applyMergePatch(doc, { a: null }))<JsonValue>(true);
// @ts-expect-error: remove has no value, move needs from
applyPatch(doc, [{ op: "move", path: "/a" }]);
// @ts-expect-error: not an RFC 6902 operation
applyPatch(doc, [{ op: "increment", path: "/a" }]);
try {
  applyPatch(doc, ops);
} catch (err) {
  if (err instanceof PatchError) expectType(err.message)<string>(true);
}

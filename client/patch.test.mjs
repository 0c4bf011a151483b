// Tests of applyPatch (RFC 6902) against the json-patch-tests suite in
// testdata/json-patch-tests, and of what the suite does not check: that the
// caller's document is never changed and that unchanged parts are shared.
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { applyPatch, PatchError } from "./pollsse.js";

const suiteDir = new URL("../testdata/json-patch-tests/", import.meta.url);

for (const file of ["tests.json", "spec_tests.json"]) {
  const cases = JSON.parse(readFileSync(new URL(file, suiteDir), "utf8"));

  describe(`json-patch-tests ${file}`, () => {
    // The suite's counts (SOURCE.md): a file that shrank or failed to load
    // must not pass quietly.
    test("holds the cases SOURCE.md counts", () => {
      const enabled = cases.filter((c) => !c.disabled);
      const want = { "tests.json": [95, 92], "spec_tests.json": [17, 16] }[file];
      assert.deepEqual([cases.length, enabled.length], want);
    });

    cases.forEach((c, i) => {
      const name = `#${i} ${c.comment ?? c.error ?? JSON.stringify(c.patch)}`;
      test(name, { skip: c.disabled && "disabled in the suite" }, () => {
        const before = structuredClone(c.doc);
        if ("error" in c) {
          assert.throws(() => applyPatch(c.doc, c.patch), PatchError, `must fail: ${c.error}`);
        } else {
          const got = applyPatch(c.doc, c.patch);
          if ("expected" in c) assert.deepEqual(got, c.expected);
        }
        assert.deepEqual(c.doc, before, "the input document was changed");
      });
    });
  });
}

describe("applyPatch", () => {
  test("leaves the document untouched when a later operation fails", () => {
    const doc = { a: { b: 1 }, list: [1, 2] };
    const before = structuredClone(doc);
    const patch = [
      { op: "replace", path: "/a/b", value: 2 },
      { op: "add", path: "/list/-", value: 3 },
      { op: "remove", path: "/missing" },
    ];
    let err;
    try {
      applyPatch(doc, patch);
    } catch (e) {
      err = e;
    }
    assert.ok(err instanceof PatchError, `want a PatchError, got ${err}`);
    assert.deepEqual(doc, before);
    assert.equal(err.index, 2);
    assert.equal(err.operation, patch[2]);
    assert.match(err.message, /operation 2 \(remove "\/missing"\)/);
  });

  test("shares the parts a patch does not touch", () => {
    const doc = { touched: { x: 1, deep: { y: 2 } }, untouched: { big: [1, 2, 3] } };
    const got = applyPatch(doc, [{ op: "replace", path: "/touched/x", value: 9 }]);
    assert.notEqual(got, doc);
    assert.notEqual(got.touched, doc.touched);
    assert.equal(got.untouched, doc.untouched);
    assert.equal(got.touched.deep, doc.touched.deep);
    assert.equal(doc.touched.x, 1);
  });

  test("copies each container once per patch, not once per operation", () => {
    const doc = { list: [] };
    const patch = Array.from({ length: 1000 }, (_, i) => ({ op: "add", path: "/list/-", value: i }));
    const got = applyPatch(doc, patch);
    assert.equal(got.list.length, 1000);
    assert.equal(doc.list.length, 0);
  });

  test("returns the same document for an empty patch", () => {
    const doc = { a: 1 };
    assert.equal(applyPatch(doc, []), doc);
  });

  test("a copy made earlier in a patch does not change with its source", () => {
    const doc = { a: { n: 1 } };
    const got = applyPatch(doc, [
      { op: "replace", path: "/a/n", value: 2 }, // /a is now a copy owned by this patch
      { op: "copy", from: "/a", path: "/b" },
      { op: "replace", path: "/a/n", value: 3 },
    ]);
    assert.deepEqual(got, { a: { n: 3 }, b: { n: 2 } });
    assert.deepEqual(doc, { a: { n: 1 } });
  });

  test("does not change the values it was given in the patch", () => {
    const value = { n: 1 };
    const got = applyPatch({}, [
      { op: "add", path: "/v", value },
      { op: "replace", path: "/v/n", value: 2 },
    ]);
    assert.deepEqual(got, { v: { n: 2 } });
    assert.deepEqual(value, { n: 1 });
  });

  test("treats __proto__ and other Object.prototype names as plain members", () => {
    const doc = JSON.parse('{"__proto__": {"x": 1}}');
    const got = applyPatch(doc, [
      { op: "add", path: "/__proto__/y", value: 2 },
      { op: "add", path: "/constructor", value: "c" },
      { op: "replace", path: "/constructor", value: "d" },
    ]);
    assert.deepEqual(Object.keys(got), ["__proto__", "constructor"]);
    assert.deepEqual(Object.getOwnPropertyDescriptor(got, "__proto__").value, { x: 1, y: 2 });
    assert.equal(Object.getPrototypeOf(got), Object.prototype);
    assert.equal({}.y, undefined, "Object.prototype was changed");
    assert.throws(() => applyPatch({}, [{ op: "test", path: "/toString", value: null }]), PatchError);
    assert.throws(() => applyPatch({}, [{ op: "remove", path: "/hasOwnProperty" }]), PatchError);
  });

  test("decodes ~1 and ~0 in that order", () => {
    const doc = { "a/b": 1, "m~n": 2, "~1": 3 };
    assert.deepEqual(
      applyPatch(doc, [
        { op: "replace", path: "/a~1b", value: "slash" },
        { op: "replace", path: "/m~0n", value: "tilde" },
        { op: "replace", path: "/~01", value: "tilde-one" },
      ]),
      { "a/b": "slash", "m~n": "tilde", "~1": "tilde-one" },
    );
  });

  const rejected = [
    ["a patch that is not an array", {}, { op: "add", path: "/a", value: 1 }],
    ["an operation that is not an object", {}, ["add"]],
    ["a ~ not followed by 0 or 1", { "~2": 1 }, [{ op: "remove", path: "/~2" }]],
    ["a trailing ~", { "~": 1 }, [{ op: "remove", path: "/~" }]],
    ["- outside add", [1], [{ op: "replace", path: "/-", value: 2 }]],
    ["removing -", [1], [{ op: "remove", path: "/-" }]],
    ["removing the whole document", { a: 1 }, [{ op: "remove", path: "" }]],
    ["a move into its own child", { a: { b: {} } }, [{ op: "move", from: "/a", path: "/a/b/c" }]],
    ["a move to itself from nowhere", { a: 1 }, [{ op: "move", from: "/b", path: "/b" }]],
    ["a path through a scalar", { a: 1 }, [{ op: "add", path: "/a/b", value: 1 }]],
    ["a path through null", { a: null }, [{ op: "add", path: "/a/b", value: 1 }]],
    ["an array index past the end in a path", { a: [{}] }, [{ op: "add", path: "/a/1/b", value: 1 }]],
    ["a negative index", [1], [{ op: "remove", path: "/-1" }]],
    ["a test of a string against a number", { a: "1" }, [{ op: "test", path: "/a", value: 1 }]],
    ["a test of an array against an object", { a: [] }, [{ op: "test", path: "/a", value: {} }]],
    ["a test of objects with different members", { a: { x: 1 } }, [{ op: "test", path: "/a", value: { x: 1, y: 2 } }]],
    ["a test of arrays in a different order", { a: [1, 2] }, [{ op: "test", path: "/a", value: [2, 1] }]],
  ];
  for (const [what, doc, patch] of rejected) {
    test(`rejects ${what}`, () => {
      const before = structuredClone(doc);
      assert.throws(() => applyPatch(doc, patch), PatchError);
      assert.deepEqual(doc, before);
    });
  }

  test("moves to the same place as a no-op", () => {
    const doc = { a: [1] };
    assert.equal(applyPatch(doc, [{ op: "move", from: "/a", path: "/a" }]), doc);
  });

  test("moves a member up into its parent's place", () => {
    assert.deepEqual(applyPatch({ a: { b: { c: 1 } } }, [{ op: "move", from: "/a/b", path: "/a" }]), { a: { c: 1 } });
  });

  test("replaces a scalar document and tests the whole document", () => {
    assert.equal(applyPatch("foo", [{ op: "replace", path: "", value: "bar" }]), "bar");
    assert.deepEqual(applyPatch({ a: [1, { b: 2 }] }, [{ op: "test", path: "", value: { a: [1, { b: 2 }] } }]), {
      a: [1, { b: 2 }],
    });
  });
});

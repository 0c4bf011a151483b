// Tests of applyMergePatch against the examples of RFC 7396 (which obsoletes
// RFC 7386 with the same algorithm and examples).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { applyMergePatch } from "./pollsse.js";

describe("applyMergePatch", () => {
  // RFC 7396 Appendix A: original, patch, result.
  const appendixA = [
    [{ a: "b" }, { a: "c" }, { a: "c" }],
    [{ a: "b" }, { b: "c" }, { a: "b", b: "c" }],
    [{ a: "b" }, { a: null }, {}],
    [{ a: "b", b: "c" }, { a: null }, { b: "c" }],
    [{ a: ["b"] }, { a: "c" }, { a: "c" }],
    [{ a: "c" }, { a: ["b"] }, { a: ["b"] }],
    [{ a: { b: "c" } }, { a: { b: "d", c: null } }, { a: { b: "d" } }],
    [{ a: [{ b: "c" }] }, { a: [1] }, { a: [1] }],
    [["a", "b"], ["c", "d"], ["c", "d"]],
    [{ a: "b" }, ["c"], ["c"]],
    [{ a: "foo" }, null, null],
    [{ a: "foo" }, "bar", "bar"],
    [{ e: null }, { a: 1 }, { e: null, a: 1 }],
    [[1, 2], { a: "b", c: null }, { a: "b" }],
    [{}, { a: { bb: { ccc: null } } }, { a: { bb: {} } }],
  ];
  for (const [original, patch, result] of appendixA) {
    test(`merges ${JSON.stringify(patch)} into ${JSON.stringify(original)}`, () => {
      const before = structuredClone(original);
      assert.deepEqual(applyMergePatch(original, patch), result);
      assert.deepEqual(original, before, "the original was changed");
    });
  }

  test("merges the example of RFC 7396 section 3", () => {
    const target = {
      title: "Goodbye!",
      author: { givenName: "John", familyName: "Doe" },
      tags: ["example", "sample"],
      content: "This will be unchanged",
    };
    const patch = {
      title: "Hello!",
      phoneNumber: "+01-123-456-7890",
      author: { familyName: null },
      tags: ["example"],
    };
    assert.deepEqual(applyMergePatch(target, patch), {
      title: "Hello!",
      author: { givenName: "John" },
      tags: ["example"],
      content: "This will be unchanged",
      phoneNumber: "+01-123-456-7890",
    });
    assert.equal(target.author.familyName, "Doe");
  });

  test("shares the members a merge patch does not touch", () => {
    const doc = { a: { x: 1 }, b: { y: [1, 2] } };
    const got = applyMergePatch(doc, { a: { x: 2 } });
    assert.equal(got.b, doc.b);
    assert.deepEqual(doc.a, { x: 1 });
  });

  test("treats __proto__ as a plain member", () => {
    const got = applyMergePatch({}, JSON.parse('{"__proto__": {"polluted": true}}'));
    assert.equal({}.polluted, undefined, "Object.prototype was changed");
    assert.equal(Object.getPrototypeOf(got), Object.prototype);
    assert.deepEqual(Object.getOwnPropertyDescriptor(got, "__proto__").value, { polluted: true });
    assert.deepEqual(applyMergePatch(got, JSON.parse('{"__proto__": null}')), {});
  });
});

// Tests of the package around pollsse.js: that package.json hands a
// front-end build the module and its declarations by the package's name,
// and that pollsse.d.ts declares what the code does (typecheck.ts, checked
// with a real tsc, uses every declaration; the tests here compare the
// names it declares with those the code has).
import { test, describe } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as pollsse from "./pollsse.js";

const dir = fileURLToPath(new URL(".", import.meta.url));
const pkg = JSON.parse(readFileSync(new URL("package.json", import.meta.url), "utf8"));
const declarations = readFileSync(new URL("pollsse.d.ts", import.meta.url), "utf8");
const source = readFileSync(new URL("pollsse.js", import.meta.url), "utf8");

// members returns the names of the members of the interface name in
// pollsse.d.ts, in order, as written: one member a line, indented by two.
function members(name) {
  const m = declarations.match(new RegExp(`^export interface ${name}\\b[^{]*\\{\\n([\\s\\S]*?)^\\}`, "m"));
  assert.ok(m, `pollsse.d.ts declares no interface ${name}`);
  return [...m[1].matchAll(/^ {2}(?:readonly )?([A-Za-z_$][\w$]*)\??[:(]/gm)].map((x) => x[1]);
}

describe("package.json", () => {
  test("is the ES module @pollsse/client of this release, without dependencies", () => {
    assert.equal(pkg.name, "@pollsse/client");
    // The module's release: version.go's Version.
    const version = readFileSync(new URL("../version.go", import.meta.url), "utf8").match(/const Version = "(.*)"/)[1];
    assert.equal(pkg.version, version);
    assert.equal(pkg.license, "Apache-2.0");
    assert.equal(pkg.type, "module");
    assert.equal(pkg.dependencies, undefined);
    assert.equal(pkg.peerDependencies, undefined);
    assert.deepEqual(Object.keys(pkg.devDependencies ?? {}), ["typescript"]);
  });

  test("exports the declarations and the module, and packs both", () => {
    assert.deepEqual(pkg.exports, { ".": { types: "./pollsse.d.ts", default: "./pollsse.js" } });
    for (const file of Object.values(pkg.exports["."])) {
      assert.ok(existsSync(new URL(file, import.meta.url)), `${file} does not exist`);
      assert.ok(pkg.files.includes(file.replace(/^\.\//, "")), `files leaves out ${file}`);
    }
  });

  test("resolves the package's name to pollsse.js", async () => {
    const byName = await import("@pollsse/client");
    assert.equal(byName, pollsse);
  });
});

describe("pollsse.d.ts", () => {
  test("declares the values that pollsse.js exports", () => {
    const declared = [...declarations.matchAll(/^export (?:declare )?(?:function|class|const) ([\w$]+)/gm)].map((m) => m[1]);
    assert.deepEqual([...new Set(declared)].sort(), Object.keys(pollsse).sort());
  });

  test("declares every option that connect reads, and no other", () => {
    const read = new Set([...source.matchAll(/\b(?:this\.#)?opts\.([\w$]+)/g)].map((m) => m[1]));
    assert.deepEqual(members("ConnectOptions").sort(), [...read].sort());
  });

  test("declares the members of the stream that connect returns", () => {
    class FakeEventSource {
      addEventListener() {}
      close() {}
    }
    const stream = pollsse.connect("/events", { EventSource: FakeEventSource });
    const proto = Object.getPrototypeOf(stream);
    const names = [...Object.getOwnPropertyNames(proto), ...Object.keys(stream)].filter((n) => n !== "constructor");
    assert.deepEqual(members("Stream").sort(), names.sort());
    for (const name of ["document", "lastEventId"]) {
      const d = Object.getOwnPropertyDescriptor(proto, name);
      assert.ok(d.get && !d.set, `${name} is declared readonly but can be set`);
    }
  });

  test("declares the members of PatchError", () => {
    const err = new pollsse.PatchError("m", 3, { op: "x" });
    const body = declarations.match(/^export class PatchError extends Error \{\n([\s\S]*?)^\}/m)[1];
    const declared = [...body.matchAll(/^ {2}([\w$]+)[:(]/gm)].map((m) => m[1]).filter((n) => n !== "constructor");
    assert.deepEqual(declared.sort(), ["index", "name", "operation"]);
    assert.deepEqual(Object.keys(err).sort(), ["index", "name", "operation"]);
  });

  test("type-checks a program that uses all of it (tsc)", async () => {
    const tsc = new URL("node_modules/typescript/bin/tsc", import.meta.url);
    assert.ok(existsSync(tsc), "TypeScript is not installed: run `npm ci` in client/ (make test does)");
    const { code, out } = await new Promise((resolve) => {
      execFile(process.execPath, [fileURLToPath(tsc), "-p", dir], { cwd: dir }, (err, stdout, stderr) =>
        resolve({ code: err ? err.code ?? err : 0, out: stdout + stderr }),
      );
    });
    assert.equal(code, 0, `tsc -p client failed:\n${out}`);
  });
});

// Runs a Go js/wasm KRM function under node the way released kpt does (its nodejs wasm
// runtime): Go's own wasm_exec.js, argv ["js"], empty env, the ResourceList from stdin passed
// to the global processResourceList(); processResourceListErrors() when the result is not a
// ResourceList. Used by hoist's tests and benchmarks as the reference behaviour.
//
//   node kpt-glue.js GOROOT/lib/wasm/wasm_exec.js FUNCTION.wasm < resource-list.yaml
"use strict";
const fs = require("fs");
globalThis.require = require;
globalThis.fs = {
  // kpt's glue sends every fd to console.log; keep stdout clean here so the output can be
  // compared: guest writes go to stderr.
  constants: { O_WRONLY: -1, O_RDWR: -1, O_CREAT: -1, O_TRUNC: -1, O_APPEND: -1, O_EXCL: -1, O_DIRECTORY: -1 },
  writeSync(fd, buf) { process.stderr.write(buf); return buf.length; },
  write(fd, buf, offset, length, position, callback) {
    process.stderr.write(buf.subarray(offset, offset + length));
    callback(null, length);
  },
};
globalThis.TextEncoder = require("util").TextEncoder;
globalThis.TextDecoder = require("util").TextDecoder;
globalThis.performance ??= require("perf_hooks").performance;
globalThis.crypto ??= require("crypto");
require(process.argv[2]);

const go = new Go();
go.argv = ["js"];
go.env = {};
const input = fs.readFileSync(0, "utf8");
WebAssembly.instantiate(fs.readFileSync(process.argv[3]), go.importObject).then((result) => {
  go.run(result.instance);
  let out = processResourceList(input);
  if (typeof out !== "string" || !out.includes("kind: ResourceList")) {
    out = processResourceListErrors(input);
  }
  process.stdout.write(out);
  process.exit(0);
}).catch((err) => {
  console.error(err);
  process.exit(1);
});

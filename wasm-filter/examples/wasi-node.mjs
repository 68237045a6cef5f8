// Runs a wasm32-wasip1 example of this crate in Node's V8 (the engine Envoy embeds), with
// Liftoff off as Envoy has it:
//   node --no-liftoff wasm-filter/examples/wasi-node.mjs \
//     target/wasm32-wasip1/release/examples/estimate_report.wasm /data --no-reference
// wasm-filter/testdata/estimate is pre-opened as /data. The crate's proxy-wasm imports (module
// "env") are stubbed: the examples never call them.
import { readFileSync } from 'node:fs';
import { WASI } from 'node:wasi';
import { fileURLToPath } from 'node:url';

const [wasmPath, ...args] = process.argv.slice(2);
const data = fileURLToPath(new URL('../testdata/estimate', import.meta.url));
const wasi = new WASI({ version: 'preview1', args: ['example', ...args], preopens: { '/data': data } });
const module = await WebAssembly.compile(readFileSync(wasmPath));
const imports = wasi.getImportObject();
imports.env = {};
for (const imp of WebAssembly.Module.imports(module)) {
  if (imp.module === 'env') imports.env[imp.name] = () => 0;
}
const instance = await WebAssembly.instantiate(module, imports);
// The cdylib's `_initialize` is exported too; WASI.start wants a command module only.
const exports = { ...instance.exports };
delete exports._initialize;
wasi.start({ exports });

// node node_run.mjs NODE_MODULES_PARENT RUNTIME WEB_FOLDER JOB_JSON OUT_JSON: run.mjs in Node
// with onnxruntime-node or onnxruntime-web (its WebAssembly build, one thread as in the page).
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { run } from './run.mjs';

const [packages, runtime, folder, jobPath, outPath] = process.argv.slice(2);
const require = createRequire(join(packages, 'package.json'));
const module = await import(pathToFileURL(require.resolve(runtime)).href);
const ort = module.default ?? module;
if (runtime === 'onnxruntime-web') ort.env.wasm.numThreads = 1;
const { Encoder } = await import(pathToFileURL(join(folder, 'sse-onnx.mjs')).href);
const job = JSON.parse(readFileSync(jobPath, 'utf8'));
const result = await run({ ort, Encoder, folder, ...job });
const version = JSON.parse(readFileSync(join(packages, 'node_modules', runtime, 'package.json'), 'utf8')).version;
writeFileSync(outPath, JSON.stringify({ ...result, runtime, version, node: process.version }));

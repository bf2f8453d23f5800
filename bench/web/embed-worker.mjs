// The web worker of INTEGRATION.md, as written there (bench/web.py checks it in Chromium).
import * as ort from './ort/ort.wasm.min.mjs';
import { Encoder } from './sse-web/sse-onnx.mjs';
const ready = Encoder.load(new URL('./sse-web/', import.meta.url), ort);
onmessage = async ({ data: { id, texts } }) => {
  const rows = await (await ready).encode(texts);
  postMessage({ id, rows }, rows.map((row) => row.buffer));
};

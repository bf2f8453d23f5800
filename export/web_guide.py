"""INTEGRATION.md of a web folder: how a browser, worker, Node, Electron or Tauri app embeds.

The text is generated from the folder's manifest and files, so names, sizes and widths are the
folder's own. The versions named as tested are :data:`TESTED_PACKAGES`, the ones
``tests/web/package.json`` pins and ``tests/test_web.py`` runs (it checks that the two agree).
"""

from __future__ import annotations

from pathlib import Path

from sse_onnx import folder as fmt

__all__ = ["TESTED_PACKAGES", "web_guide"]

#: npm packages the web folder is tested on (tests/web/package.json pins the same).
TESTED_PACKAGES = {"onnxruntime-node": "1.30.0", "onnxruntime-web": "1.30.0"}


def web_guide(folder: Path, manifest: fmt.Manifest) -> str:
    """The INTEGRATION.md text for the web folder ``folder`` with this manifest."""
    from sse_export.web import MODULE_FILE, WEB_TOKENIZER_FILE

    default = manifest.variants[manifest.default_variant].file
    files = [
        *(
            (
                entry.file,
                f"model, variant {variant}"
                + (" (default)" * (variant == manifest.default_variant)),
            )
            for variant, entry in manifest.variants.items()
        ),
        (MODULE_FILE, "the tokenizer and Encoder (ES module, no dependencies)"),
        (WEB_TOKENIZER_FILE, "vocabulary, tokenizer settings and character tables"),
        (fmt.MANIFEST_FILE, "widths, the family's rules, file sizes and sha256"),
        (
            fmt.TOKENIZER_FILE,
            "the Hugging Face tokenizer (for Python and other languages; not read by the module)",
        ),
        (fmt.PARITY_FILE, "test data: reference ids and embeddings (for your tests, not the app)"),
    ]
    rows = "\n".join(
        f"| `{name}` | {what} | {(folder / name).stat().st_size / 1e6:.2f} MB |"
        for name, what in files
        if (folder / name).is_file()
    )
    return _TEMPLATE.format(
        name=manifest.model_name,
        version=manifest.package_version,
        dim=manifest.dim,
        rows=rows,
        default=default,
        module=MODULE_FILE,
        node=TESTED_PACKAGES["onnxruntime-node"],
        web=TESTED_PACKAGES["onnxruntime-web"],
        parity=fmt.PARITY_FILE,
        tokenizer=WEB_TOKENIZER_FILE,
    )


_TEMPLATE = """\
# Embedding with {name} in a web or Node app

Written by `sse-export --target web` (sse-onnx {version}). The model maps a text to a
{dim}-dimension unit vector; the dot product of two is their cosine similarity.

| file | what | size |
|---|---|---|
{rows}

An app ships `{module}`, `{tokenizer}`, `manifest.json` and one model file. `{module}` is
one dependency-free ES module, the same file in browsers, web workers, Node, Electron and
Tauri. Its tokenizer gives Hugging Face tokenizers' ids exactly (checked on every text of
`{parity}`, the SciFact corpus, 100,000 generated strings and every Unicode character): every
per-character decision is read from tables in `{tokenizer}` that the export asked of Hugging
Face tokenizers itself, not from the JavaScript engine's Unicode data, which differs between
engines and versions.
Its `Encoder` gives the Python `sse_onnx.Encoder`'s vectors (within 1e-5): the family's cuts,
batches sorted by length, long texts in chunks whose sums are added, normalisation and
`truncateDim`.

## Node (onnxruntime-node)

```bash
npm install onnxruntime-node@{node}
```

```js
import * as ort from 'onnxruntime-node';
import {{ Encoder, dot }} from './sse-web/{module}';

const encoder = await Encoder.load('./sse-web', ort);  // a path, or a file: URL
const [doc, query] = await encoder.encode(['Static embeddings are fast.', 'fast embeddings?']);
console.log(encoder.dim, dot(doc, query));
await encoder.encode(texts, {{ batchSize: 64, truncateDim: 128 }});  // Matryoshka: 128 dims
```

onnxruntime-node's install script downloads binaries; offline, `npm install
--ignore-scripts` keeps the CPU binaries that ship inside the package (Linux x64 and arm64,
macOS arm64, Windows x64 and arm64; Linux x64 is the one tested).

## Browser (onnxruntime-web)

Serve the folder with the page (any static server; `crypto.subtle`, used to check the model's
sha256, needs https or localhost, else the check is skipped). With a bundler, `npm install
onnxruntime-web@{web}` and `import * as ort from 'onnxruntime-web'`; without one:

```html
<script type="module">
  import * as ort from 'https://cdn.jsdelivr.net/npm/onnxruntime-web@{web}/dist/ort.wasm.min.mjs';
  import {{ Encoder, dot }} from './sse-web/{module}';
  ort.env.wasm.wasmPaths = 'https://cdn.jsdelivr.net/npm/onnxruntime-web@{web}/dist/';
  const encoder = await Encoder.load(new URL('./sse-web/', location.href), ort);
  const vector = await encoder.encode('a query');  // Float32Array({dim})
</script>
```

`ort.wasm.min.mjs` is onnxruntime-web's CPU (WebAssembly) build, the one tested; serve its
`.wasm` file yourself by pointing `ort.env.wasm.wasmPaths` at your copy. Threads need
cross-origin isolation (COOP/COEP headers); without them onnxruntime-web runs one thread,
which is plenty for a table lookup and a mean.

## A web worker

Embed off the main thread so typing stays smooth; the worker is a module worker:

```js
// embed-worker.mjs
import * as ort from './ort/ort.wasm.min.mjs';
import {{ Encoder }} from './sse-web/{module}';
const ready = Encoder.load(new URL('./sse-web/', import.meta.url), ort);
onmessage = async ({{ data: {{ id, texts }} }}) => {{
  const rows = await (await ready).encode(texts);
  postMessage({{ id, rows }}, rows.map((row) => row.buffer));
}};

// page
const worker = new Worker(new URL('./embed-worker.mjs', import.meta.url), {{ type: 'module' }});
```

## Electron and Tauri

Neither was run here; both use the paths tested above.

- **Electron**: in the main process (Node), use onnxruntime-node as above and send vectors to
  the renderer over IPC; or in a renderer, use onnxruntime-web as in a browser. `Encoder.load`
  reads the web folder with `fs` and hands onnxruntime the model's bytes, so the folder may
  stay inside the asar archive; onnxruntime-node's native binding must be unpacked from it
  (electron-builder's `asarUnpack`).
- **Tauri**: the UI is a webview, so use onnxruntime-web as in a browser; put the web folder
  and onnxruntime-web's `.wasm` in the frontend's assets so they load from the app itself.

## Without the Encoder

`WordPieceTokenizer` gives the ids alone: `new WordPieceTokenizer(JSON.parse(text of
{tokenizer})).encode(text)` (an `Int32Array`, no special tokens). `encoder.tokenize(text)`
adds the family's cuts. The graph takes `input_ids` and `attention_mask` (int64
`[batch, length]`, pads masked 0) and returns `sentence_embedding` before normalisation.

## Tested

onnxruntime-node {node} and onnxruntime-web {web} (its WebAssembly build, in Node 20 and in
headless Chromium 156): the `Encoder`'s vectors equal the Python `sse_onnx.Encoder`'s within
1e-5 (onnxruntime-node: 1e-7; onnxruntime-web, whose WebAssembly sums in another order:
2.1e-6), and Chromium's equal Node's onnxruntime-web ones exactly; so does the web worker
above. Every variant `sse-export` writes loads and runs in both (sse-onnx's
`bench/runtimes.py`, `bench/README.md`, with speeds: a query takes tens of microseconds).
Older or newer releases are untested: check them with `{parity}`, one JSON line per text with
the text, its `input_ids` and the default variant's normalised `sentence_embedding` (equal
within 1e-5).
"""

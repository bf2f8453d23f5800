// The web folder's sse-onnx.mjs against Hugging Face tokenizers and the Python Encoder.
//
// Run by tests/test_web.py (`node --test`), which exports a web folder and writes the expected
// data with Python into SSE_WEB_CASES:
//   tokenizers/<name>.json   a tokenizer_web.json, and tokenizers/<name>.jsonl: {text, ids}
//                            lines with HF's ids (every line of every file must match);
//   embed/<name>.json        {texts, dim, options, folder, tokens} and embed/<name>.f32: the
//                            Python Encoder's float32 rows for those texts on that web folder,
//                            to match after L2 normalisation within 1e-5 for texts under 1,000
//                            tokens and 1e-4 for longer ones (the exporter's parity bounds).
// SSE_WEB_FOLDER is the web folder; its own sse-onnx.mjs is the module under test.

import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { describe, test } from 'node:test';

const folder = process.env.SSE_WEB_FOLDER;
const cases = process.env.SSE_WEB_CASES;
if (!folder || !cases) throw new Error('set SSE_WEB_FOLDER and SSE_WEB_CASES (tests/test_web.py does)');
const { Encoder, WordPieceTokenizer, ModelFormatError, dot } = await import(
  pathToFileURL(join(folder, 'sse-onnx.mjs')).href
);
const TOLERANCE = 1e-5;
const LONG_TOLERANCE = 1e-4;
const LONG_TOKENS = 1000;

function readJsonl(path) {
  return readFileSync(path, 'utf8')
    .split('\n')
    .filter((line) => line)
    .map((line) => JSON.parse(line));
}

function firstMismatches(tokenizer, rows) {
  const bad = [];
  for (const { text, ids } of rows) {
    const got = Array.from(tokenizer.encode(text));
    if (got.length !== ids.length || got.some((id, i) => id !== ids[i])) bad.push({ text, got, ids });
  }
  return bad;
}

describe('tokenizer: HF ids', () => {
  const dir = join(cases, 'tokenizers');
  for (const name of readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()) {
    test(name, () => {
      const spec = JSON.parse(readFileSync(join(dir, name.replace(/\.jsonl$/, '.json')), 'utf8'));
      const rows = readJsonl(join(dir, name));
      const bad = firstMismatches(new WordPieceTokenizer(spec), rows);
      assert.ok(rows.length > 0);
      assert.equal(bad.length, 0, `${bad.length} of ${rows.length} differ, e.g. ${JSON.stringify(bad.slice(0, 3))}`);
    });
  }
  test('the folder tokenizer gives parity.jsonl ids', () => {
    const spec = JSON.parse(readFileSync(join(folder, 'tokenizer_web.json'), 'utf8'));
    const rows = readJsonl(join(folder, 'parity.jsonl')).map((r) => ({ text: r.text, ids: r.input_ids }));
    assert.deepEqual(firstMismatches(new WordPieceTokenizer(spec), rows), []);
  });
});

function unit(row) {
  let sum = 0;
  for (const x of row) sum += x * x;
  const norm = Math.max(Math.sqrt(sum), 1e-12);
  return Array.from(row, (x) => x / norm);
}

function maxDiff(rows, expected, dim) {
  let worst = 0;
  rows.forEach((row, i) => {
    assert.equal(row.length, dim);
    for (let j = 0; j < dim; j++) worst = Math.max(worst, Math.abs(row[j] - expected[i * dim + j]));
  });
  return worst;
}

for (const runtime of ['onnxruntime-node', 'onnxruntime-web']) {
  describe(`Encoder on ${runtime}`, async () => {
    const ort = await import(runtime);
    const encoder = await Encoder.load(folder, ort);
    const encoders = new Map([[folder, encoder]]);
    const encoderOf = async (path) => {
      if (!encoders.has(path)) encoders.set(path, await Encoder.load(path, ort));
      return encoders.get(path);
    };
    const dir = join(cases, 'embed');
    for (const name of readdirSync(dir).filter((f) => f.endsWith('.json')).sort()) {
      test(`${name}: the Python Encoder's vectors`, async () => {
        const { texts, dim, options, folder: where, tokens } = JSON.parse(readFileSync(join(dir, name), 'utf8'));
        const bytes = readFileSync(join(dir, name.replace(/\.json$/, '.f32')));
        const expected = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
        const rows = await (await encoderOf(where)).encode(texts, options);
        assert.equal(rows.length, texts.length);
        const worst = [0, 0]; // texts under LONG_TOKENS tokens, longer texts
        rows.forEach((row, i) => {
          const diff = maxDiff([unit(row)], unit(expected.subarray(i * dim, (i + 1) * dim)), dim);
          const long = tokens[i] >= LONG_TOKENS ? 1 : 0;
          worst[long] = Math.max(worst[long], diff);
        });
        console.log(
          `${runtime} ${name}: ${texts.length} texts, max abs diff normalised ` +
            `${worst[0].toExponential(2)} (under ${LONG_TOKENS} tokens), ${worst[1].toExponential(2)} (longer)`
        );
        assert.ok(worst[0] <= TOLERANCE && worst[1] <= LONG_TOLERANCE, `max abs diff ${worst}`);
        if (!options.normalizeEmbeddings) return;
        assert.ok(maxDiff(rows, expected, dim) <= LONG_TOLERANCE); // unit vectors as they are
      });
    }

    test('parity.jsonl, one string at a time', async () => {
      for (const row of readJsonl(join(folder, 'parity.jsonl'))) {
        const vector = await encoder.encode(row.text);
        assert.ok(vector instanceof Float32Array && vector.length === encoder.dim);
        assert.ok(maxDiff([vector], row.sentence_embedding, encoder.dim) <= TOLERANCE, row.text.slice(0, 40));
      }
    });

    test('unit vectors, batch size and order do not change results', async () => {
      const texts = ['b b b b', 'a', '', 'hello world', 'a'];
      const [one, many] = [await encoder.encode(texts, { batchSize: 1 }), await encoder.encode(texts)];
      for (let i = 0; i < texts.length; i++) {
        assert.ok(Math.abs(dot(many[i], many[i]) - 1) < 1e-6);
        assert.ok(maxDiff([one[i]], many[i], encoder.dim) < 1e-6);
      }
      assert.ok(maxDiff([many[1]], many[4], encoder.dim) === 0);
    });

    test('bad input is refused with the index named', async () => {
      await assert.rejects(encoder.encode(['ok', 3]), { name: 'TypeError', message: /texts\[1\] is number/ });
      await assert.rejects(encoder.encode(['ok', 'a\ud800b']), { name: 'RangeError', message: /texts\[1\].*U\+D800/ });
      await assert.rejects(encoder.encode('x', { truncateDim: encoder.dim + 1 }), RangeError);
      await assert.rejects(encoder.encode('x', { batchSize: 0 }), RangeError);
      await assert.rejects(Encoder.load(folder, ort, { variant: 'nope' }), /variant nope is not in/);
    });
  });
}

test('a damaged model file is refused', async () => {
  const ort = await import('onnxruntime-node');
  const manifest = JSON.parse(readFileSync(join(folder, 'manifest.json'), 'utf8'));
  const entry = manifest.variants[manifest.default_variant];
  const damaged = join(cases, 'damaged');
  if (!existsSync(damaged)) return; // written by the Python side
  await assert.rejects(Encoder.load(damaged, ort), (error) => {
    assert.ok(error instanceof ModelFormatError);
    assert.match(error.message, new RegExp(`${entry.file} does not match the sha256`));
    return true;
  });
});

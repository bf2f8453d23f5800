// node tokenizer_js.mjs PACKAGES WEB_FOLDER JOB_JSON OUT_JSON: the ids of tokenizers.js
// (@huggingface/tokenizers, the tokenizer of transformers.js) and of sse-onnx.mjs for each set
// of texts in JOB_JSON ({tokenizer, config, sets: {name: [[text, hf_ids], ...]}}), compared
// with HF's: per set, how many texts differ, with the first few.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const [packages, folder, jobPath, outPath] = process.argv.slice(2);
const require = createRequire(join(packages, 'package.json'));
const loaded = await import(pathToFileURL(require.resolve('@huggingface/tokenizers')).href);
const tokenizersJs = loaded.Tokenizer ? loaded : loaded.default;
const { WordPieceTokenizer } = await import(pathToFileURL(join(folder, 'sse-onnx.mjs')).href);
const job = JSON.parse(readFileSync(jobPath, 'utf8'));
const version = JSON.parse(
  readFileSync(join(packages, 'node_modules', '@huggingface', 'tokenizers', 'package.json'), 'utf8')
).version;
const candidates = {
  [`tokenizers.js ${version}`]: (() => {
    const tokenizer = new tokenizersJs.Tokenizer(job.tokenizer, job.config);
    return (text) => tokenizer.encode(text, { add_special_tokens: false }).ids;
  })(),
  'sse-onnx.mjs': (() => {
    const tokenizer = new WordPieceTokenizer(JSON.parse(readFileSync(join(folder, 'tokenizer_web.json'), 'utf8')));
    return (text) => Array.from(tokenizer.encode(text));
  })(),
};
const results = {};
for (const [name, encode] of Object.entries(candidates)) {
  results[name] = {};
  for (const [set, rows] of Object.entries(job.sets)) {
    let differ = 0;
    let failed = 0;
    const examples = [];
    const started = performance.now();
    for (const [text, ids] of rows) {
      let got;
      try {
        got = encode(text);
      } catch (error) {
        failed++;
        got = [`error: ${error.message}`];
      }
      if (got.length !== ids.length || got.some((id, i) => id !== ids[i])) {
        differ++;
        if (examples.length < 3) {
          let at = 0;
          while (at < ids.length && got[at] === ids[at]) at++;
          examples.push({ text: text.slice(0, 60), at, hf: ids.slice(at, at + 4), got: got.slice(at, at + 4) });
        }
      }
    }
    results[name][set] = { texts: rows.length, differ, failed, examples, ms: performance.now() - started };
  }
}
writeFileSync(outPath, JSON.stringify(results));

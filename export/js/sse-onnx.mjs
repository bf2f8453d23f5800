// sse-onnx.mjs: embed texts with an sse-onnx web folder (written by `sse-export --target web`).
//
// One dependency-free ES module for browsers, web workers, Node, Electron and Tauri. It holds
//
// - `WordPieceTokenizer`: Hugging Face tokenizers' ids for BERT-style tokenizers
//   (BertNormalizer, BertPreTokenizer, WordPiece, added tokens matched in the raw text), with
//   SSE's rules: no special tokens added, no truncation, [UNK] kept. Every per-character
//   decision (clean_text, Chinese characters, NFD, nonspacing marks, lowercase, whitespace,
//   punctuation) is read from tables that `sse-export` asked of HF itself, never from the
//   JavaScript engine's Unicode data, which differs from HF's between engines and versions;
// - `Encoder`: the Python `sse_onnx.Encoder.encode` over an onnxruntime-web or
//   onnxruntime-node session the app passes in: the family's cuts, batches of texts sorted by
//   length, long texts in chunks whose sums are added (exact: the mean is a sum over a count),
//   the family's normalisation, `truncateDim`, L2 normalisation.
//
// Usage (Node or a browser; `ort` is the app's onnxruntime-node or onnxruntime-web module):
//
//   import * as ort from 'onnxruntime-web';
//   import { Encoder, dot } from './sse-web/sse-onnx.mjs';
//   const encoder = await Encoder.load(new URL('./sse-web/', import.meta.url), ort);
//   const [a, b] = await encoder.encode(['static embeddings', 'fast vectors']);
//   console.log(encoder.dim, dot(a, b));  // cosine: the rows are unit vectors

export const MODULE_VERSION = '1';
const WEB_TOKENIZER_FILE = 'tokenizer_web.json';
const MANIFEST_FILE = 'manifest.json';
const TOKENIZER_FORMAT = 'sse-onnx-wordpiece';
const TOKENIZER_VERSION = 1;
const SCHEMA_VERSIONS = [1, 2];
// The Python Encoder's constants (sse_onnx/encoder.py; tests/test_web.py keeps them equal):
// padded tokens per graph call, the length past which a text is embedded in chunks, and texts
// tokenized per block.
const TOKEN_BUDGET = 1 << 11;
const CHUNK_TOKENS = 1 << 12;
const BLOCK_TEXTS = 1 << 8;
// Most words whose ids the tokenizer caches (emptied when full), and the longest cached.
const CACHE_WORDS = 1 << 17;
const CACHE_WORD_CHARS = 64;

// Bits of the per-code-point flag table.
const DELETE = 1;
const SPACE = 2;
const CHINESE = 4;
const NONSPACING = 8;
const WHITESPACE = 16;
const PUNCTUATION = 32;
const MAPPED = 64; // has a decomposition or a lowercase
const HANGUL_FIRST = 0xac00;
const HANGUL_COUNT = 11172;

/** An error for a model folder that is incomplete, damaged or of another format. */
export class ModelFormatError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ModelFormatError';
  }
}

function fillRanges(flags, ranges, bit) {
  for (let i = 0; i < ranges.length; i += 2) {
    for (let code = ranges[i]; code <= ranges[i + 1]; code++) flags[code] |= bit;
  }
}

function readMap(flat) {
  const map = new Map();
  for (let i = 0; i < flat.length; ) {
    const code = flat[i];
    const count = flat[i + 1];
    map.set(code, flat.slice(i + 2, i + 2 + count));
    i += 2 + count;
  }
  return map;
}

function codesToString(codes, start, end) {
  let out = '';
  for (let i = start; i < end; i += 4096) {
    out += String.fromCodePoint.apply(null, codes.slice(i, Math.min(end, i + 4096)));
  }
  return out;
}

/**
 * Hugging Face tokenizers' ids for a BERT-style tokenizer, without special tokens.
 *
 * Build it from the parsed `tokenizer_web.json` of a web folder:
 * `WordPieceTokenizer.fromJSON(JSON.parse(text))`.
 */
export class WordPieceTokenizer {
  constructor(spec) {
    if (spec?.format !== TOKENIZER_FORMAT || spec.version !== TOKENIZER_VERSION) {
      throw new ModelFormatError(
        `${WEB_TOKENIZER_FILE} has format ${spec?.format} version ${spec?.version}; this ` +
          `module reads ${TOKENIZER_FORMAT} version ${TOKENIZER_VERSION}. Use the ` +
          'sse-onnx.mjs of the same web folder, or re-export it.'
      );
    }
    const n = spec.normalizer;
    this.clean = Boolean(n?.clean_text);
    this.chinese = Boolean(n?.handle_chinese_chars);
    this.strip = Boolean(n?.strip_accents);
    this.lowercase = Boolean(n?.lowercase);
    const t = spec.tables;
    const flags = new Uint8Array(0x110000);
    fillRanges(flags, t.delete, DELETE);
    fillRanges(flags, t.space, SPACE);
    fillRanges(flags, t.chinese, CHINESE);
    fillRanges(flags, t.nonspacing, NONSPACING);
    fillRanges(flags, t.whitespace, WHITESPACE);
    fillRanges(flags, t.punctuation, PUNCTUATION);
    this.decompose = readMap(t.decompose);
    this.hangul = Boolean(t.hangul);
    this.lower = readMap(t.lower);
    for (const code of this.decompose.keys()) flags[code] |= MAPPED;
    for (const code of this.lower.keys()) flags[code] |= MAPPED;
    if (this.hangul) for (let c = HANGUL_FIRST; c < HANGUL_FIRST + HANGUL_COUNT; c++) flags[c] |= MAPPED;
    this.ccc = new Uint8Array(0x110000);
    for (let i = 0; i < t.ccc.length; i += 2) this.ccc[t.ccc[i]] = t.ccc[i + 1];
    this.flags = flags;
    this.vocab = new Map(spec.vocab.map((token, id) => [token, id]));
    this.vocabSize = spec.vocab.length;
    this.unkId = this.vocab.get(spec.unk_token);
    this.prefix = spec.continuing_subword_prefix;
    this.maxWordChars = spec.max_input_chars_per_word;
    // Added tokens, longest first: HF matches them leftmost-longest in the raw text.
    this.added = spec.added_tokens
      .map(([content, id]) => ({ content, id }))
      .filter(({ content }) => content.length > 0)
      .sort((a, b) => b.content.length - a.content.length);
    for (const { id } of this.added) this.vocabSize = Math.max(this.vocabSize, id + 1);
    this.cache = new Map();
  }

  static fromJSON(spec) {
    return new WordPieceTokenizer(spec);
  }

  /** The ids of `text` (an Int32Array): no special tokens added, no truncation. */
  encode(text) {
    if (typeof text !== 'string') {
      throw new TypeError(`text is ${typeof text}, not a string; pass '' for an empty text.`);
    }
    checkUnicode(text);
    const ids = [];
    let start = 0;
    for (const [at, token] of this.addedTokenMatches(text)) {
      if (at > start) this.encodePiece(text.slice(start, at), ids);
      ids.push(token.id);
      start = at + token.content.length;
    }
    if (start < text.length) this.encodePiece(start ? text.slice(start) : text, ids);
    return Int32Array.from(ids);
  }

  *addedTokenMatches(text) {
    if (!this.added.length) return;
    let from = 0;
    while (from < text.length) {
      let best = -1;
      let found = null;
      for (const token of this.added) {
        const at = text.indexOf(token.content, from);
        // Longest first, so a later token only wins by starting earlier.
        if (at >= 0 && (best < 0 || at < best)) {
          best = at;
          found = token;
        }
      }
      if (found === null) return;
      yield [best, found];
      from = best + found.content.length;
    }
  }

  encodePiece(piece, ids) {
    const codes = this.normalize(piece);
    const flags = this.flags;
    let start = 0;
    const n = codes.length;
    for (let i = 0; i <= n; i++) {
      const f = i < n ? flags[codes[i]] : WHITESPACE;
      if (f & (WHITESPACE | PUNCTUATION)) {
        if (i > start) this.encodeWord(codes, start, i, ids);
        if (f & PUNCTUATION) this.encodeWord(codes, i, i + 1, ids);
        start = i + 1;
      }
    }
  }

  /** BertNormalizer: clean_text, Chinese characters, NFD + drop nonspacing marks, lowercase. */
  normalize(text) {
    const flags = this.flags;
    let codes = [];
    for (let i = 0; i < text.length; ) {
      const code = text.codePointAt(i);
      i += code > 0xffff ? 2 : 1;
      const f = flags[code];
      if (this.clean && f & DELETE) continue;
      if (this.clean && f & SPACE) codes.push(32);
      else if (this.chinese && f & CHINESE) codes.push(32, code, 32);
      else codes.push(code);
    }
    if (this.strip) codes = this.stripAccents(codes);
    if (this.lowercase) {
      const out = [];
      for (const code of codes) {
        const mapped = flags[code] & MAPPED ? this.lower.get(code) : undefined;
        if (mapped === undefined) out.push(code);
        else for (const m of mapped) out.push(m);
      }
      codes = out;
    }
    return codes;
  }

  stripAccents(codes) {
    const flags = this.flags;
    const ccc = this.ccc;
    const out = [];
    for (const code of codes) {
      if (!(flags[code] & MAPPED)) out.push(code);
      else if (this.hangul && code >= HANGUL_FIRST && code < HANGUL_FIRST + HANGUL_COUNT) {
        const index = code - HANGUL_FIRST;
        out.push(0x1100 + Math.floor(index / 588), 0x1161 + Math.floor((index % 588) / 28));
        if (index % 28) out.push(0x11a7 + (index % 28));
      } else {
        const parts = this.decompose.get(code);
        if (parts === undefined) out.push(code);
        else for (const p of parts) out.push(p);
      }
    }
    // Canonical ordering: a run of marks of nonzero class is sorted by class, stably.
    for (let i = 0; i < out.length; i++) {
      if (!ccc[out[i]]) continue;
      let end = i;
      while (end < out.length && ccc[out[end]]) end++;
      for (let j = i + 1; j < end; j++) {
        const code = out[j];
        let k = j;
        while (k > i && ccc[out[k - 1]] > ccc[code]) {
          out[k] = out[k - 1];
          k--;
        }
        out[k] = code;
      }
      i = end;
    }
    return out.filter((code) => !(flags[code] & NONSPACING));
  }

  /** WordPiece of one pre-token: greedy longest match, `##` continuations, else [UNK]. */
  encodeWord(codes, start, end, ids) {
    const word = codesToString(codes, start, end);
    const cached = this.cache.get(word);
    if (cached !== undefined) {
      for (const id of cached) ids.push(id);
      return;
    }
    const pieces = [];
    if (end - start > this.maxWordChars) pieces.push(this.unkId);
    else {
      let from = start;
      while (from < end) {
        let to = end;
        let id;
        while (from < to) {
          const sub = codesToString(codes, from, to);
          id = this.vocab.get(from > start ? this.prefix + sub : sub);
          if (id !== undefined) break;
          to--;
        }
        if (id === undefined) {
          pieces.length = 0;
          pieces.push(this.unkId);
          break;
        }
        pieces.push(id);
        from = to;
      }
    }
    if (end - start <= CACHE_WORD_CHARS) {
      if (this.cache.size >= CACHE_WORDS) this.cache.clear();
      this.cache.set(word, pieces);
    }
    for (const id of pieces) ids.push(id);
  }
}

function checkUnicode(text, index) {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0xd800 || unit > 0xdfff) continue;
    const next = text.charCodeAt(i + 1);
    if (unit <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
      i++;
      continue;
    }
    const where = index === undefined ? 'text' : `texts[${index}]`;
    throw new RangeError(
      `${where} is not valid Unicode: it holds the lone surrogate ` +
        `U+${unit.toString(16).toUpperCase()} at UTF-16 index ${i}. Clean it first, e.g. ` +
        "text.toWellFormed() (or new TextDecoder().decode(new TextEncoder().encode(text)))."
    );
  }
}

/** The first `count` code points of `text` (Python's `text[:count]`), or `text`. */
function firstCodePoints(text, count) {
  if (count === null || count === undefined || text.length <= count) return text;
  let units = 0;
  for (let seen = 0; seen < count && units < text.length; seen++) {
    units += text.codePointAt(units) > 0xffff ? 2 : 1;
  }
  return text.slice(0, units);
}

// Node's modules through a specifier in a variable, so that bundlers building for browsers
// leave them alone instead of failing to resolve them.
const nodeModule = (name) => import(/* webpackIgnore: true */ /* @vite-ignore */ name);

function isNode() {
  return typeof process !== 'undefined' && Boolean(process.versions?.node);
}

/** Read a file of the folder `base` (a URL, or in Node also a path) as bytes. */
async function readBytes(base, name) {
  const url = base instanceof URL ? base : null;
  if (isNode() && (url === null ? !/^[a-z][a-z0-9+.-]+:\/\//i.test(String(base)) : url.protocol === 'file:')) {
    const fs = await nodeModule('node:fs/promises');
    const path = await nodeModule('node:path');
    const { fileURLToPath } = await nodeModule('node:url');
    const folder = url ? fileURLToPath(url) : String(base);
    return new Uint8Array(await fs.readFile(path.join(folder, name)));
  }
  const folder = String(base).endsWith('/') ? String(base) : `${base}/`;
  const href = new URL(name, new URL(folder, globalThis.location?.href));
  const response = await fetch(href);
  if (!response.ok) throw new ModelFormatError(`${href} could not be read: HTTP ${response.status}.`);
  return new Uint8Array(await response.arrayBuffer());
}

async function sha256Hex(bytes) {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null; // e.g. a page served over plain http from a non-local host
  const digest = new Uint8Array(await subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

async function checkedFile(base, entry, verify) {
  const bytes = await readBytes(base, entry.file);
  if (bytes.length !== entry.bytes) {
    throw new ModelFormatError(
      `${entry.file} has ${bytes.length} bytes but ${MANIFEST_FILE} records ${entry.bytes}: ` +
        'the file is truncated or was replaced; copy the web folder again.'
    );
  }
  if (verify) {
    const digest = await sha256Hex(bytes);
    if (digest !== null && digest !== entry.sha256) {
      throw new ModelFormatError(
        `${entry.file} does not match the sha256 in ${MANIFEST_FILE}: the file is damaged or ` +
          'was replaced; copy the web folder again.'
      );
    }
  }
  return bytes;
}

function positiveInt(name, value) {
  if (!Number.isInteger(value) || value < 1) {
    throw new RangeError(`${name}=${value} must be an integer of at least 1.`);
  }
}

function normalizeRow(row) {
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += row[i] * row[i];
  const norm = Math.max(Math.sqrt(sum), 1e-12);
  for (let i = 0; i < row.length; i++) row[i] /= norm;
}

/** The dot product of two vectors: their cosine similarity when both are normalised. */
export function dot(a, b) {
  let sum = 0;
  for (let i = 0; i < a.length; i++) sum += a[i] * b[i];
  return sum;
}

/**
 * Embeds texts with an exported model on an onnxruntime-web or onnxruntime-node session.
 *
 * `Encoder.load(folder, ort)` reads a web folder; `new Encoder({ session, Tensor, tokenizer,
 * manifest })` wraps a session the app created itself (e.g. with its own execution providers).
 */
export class Encoder {
  constructor({ session, Tensor, tokenizer, manifest }) {
    if (!session || typeof session.run !== 'function') throw new TypeError('session must be an onnxruntime InferenceSession.');
    if (typeof Tensor !== 'function') throw new TypeError('Tensor must be the Tensor class of the same onnxruntime module (ort.Tensor).');
    if (tokenizer.vocabSize !== manifest.vocab_size) {
      throw new ModelFormatError(
        `${WEB_TOKENIZER_FILE} has ${tokenizer.vocabSize} tokens but the model has ` +
          `${manifest.vocab_size} rows; the folder mixes two models, export it again.`
      );
    }
    this.session = session;
    this.Tensor = Tensor;
    this.tokenizer = tokenizer;
    this.manifest = manifest;
    this.pooling = {
      head: 'dyt',
      skip_token_ids: [],
      max_chars: null,
      max_tokens: null,
      normalize: false,
      ...(manifest.pooling ?? {}),
    };
    this.skip = new Set(this.pooling.skip_token_ids);
    this.pad = BigInt(manifest.pad_token_id);
    this.head = null;
  }

  /**
   * Load a web folder.
   *
   * @param base The folder: a URL (http(s), or file: in Node), or in Node a path.
   * @param ort The onnxruntime-web or onnxruntime-node module.
   * @param options `variant` (default: the manifest's default), `sessionOptions` (passed to
   *   `InferenceSession.create`), `verify` (check each file's sha256, default true).
   */
  static async load(base, ort, { variant, sessionOptions, verify = true } = {}) {
    const manifest = JSON.parse(new TextDecoder().decode(await readBytes(base, MANIFEST_FILE)));
    if (manifest.format !== 'sse-onnx' || !SCHEMA_VERSIONS.includes(manifest.schema_version)) {
      throw new ModelFormatError(
        `${MANIFEST_FILE} of ${base} is format ${manifest.format} schema ` +
          `${manifest.schema_version}; this module reads sse-onnx schema ${SCHEMA_VERSIONS}.`
      );
    }
    const chosen = variant ?? manifest.default_variant;
    const entry = manifest.variants[chosen];
    if (!entry) {
      throw new RangeError(
        `variant ${chosen} is not in ${base}, which holds ${Object.keys(manifest.variants)}; ` +
          `export it with \`sse-export --target web --variants ${chosen}\` or pick one of those.`
      );
    }
    const model = await checkedFile(base, entry, verify);
    const spec = JSON.parse(new TextDecoder().decode(await readBytes(base, WEB_TOKENIZER_FILE)));
    const session = await ort.InferenceSession.create(model, {
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      ...(sessionOptions ?? {}),
    });
    const encoder = new Encoder({ session, Tensor: ort.Tensor, tokenizer: new WordPieceTokenizer(spec), manifest });
    encoder.variant = chosen;
    return encoder;
  }

  /** Width of the embeddings the model produces (before `truncateDim`). */
  get dim() {
    return this.manifest.dim;
  }

  /** Token ids of one text under the family's cuts, as the model is fed them. */
  tokenize(text, index) {
    if (typeof text !== 'string') {
      const where = index === undefined ? 'text' : `texts[${index}]`;
      throw new TypeError(`${where} is ${text === null ? 'null' : typeof text}, not a string; pass '' for an empty text.`);
    }
    checkUnicode(text, index);
    const ids = this.tokenizer.encode(firstCodePoints(text, this.pooling.max_chars));
    const keep = this.pooling.max_tokens;
    return keep === null || keep === undefined ? ids : ids.subarray(0, keep);
  }

  /**
   * Embed one text or an array of texts.
   *
   * @returns a Float32Array of `dim` (or `truncateDim`) numbers for a string, an array of
   *   them for an array; unit vectors unless `normalizeEmbeddings` is false.
   */
  async encode(texts, { batchSize = 32, normalizeEmbeddings = true, truncateDim = null } = {}) {
    const single = typeof texts === 'string';
    if (!single && !Array.isArray(texts)) {
      throw new TypeError(`texts must be a string or an array of strings, not ${typeof texts}.`);
    }
    const items = single ? [texts] : texts;
    positiveInt('batchSize', batchSize);
    const width = truncateDim ?? this.dim;
    positiveInt('truncateDim', width);
    if (width > this.dim) throw new RangeError(`truncateDim=${truncateDim} is larger than the model's ${this.dim}.`);
    items.forEach((text, i) => {
      if (typeof text !== 'string') this.tokenize(text, i); // names the index before any work
    });
    const rows = [];
    // Blocks bound the memory held by token ids of a large call, as in Python.
    for (let start = 0; start < items.length; start += BLOCK_TEXTS) {
      const block = items.slice(start, start + BLOCK_TEXTS);
      const out = await this.embedIds(block.map((text, i) => this.tokenize(text, start + i)), batchSize);
      for (let i = 0; i < block.length; i++) {
        const full = out.subarray(i * this.dim, (i + 1) * this.dim);
        if (this.pooling.normalize) normalizeRow(full);
        const row = full.slice(0, width);
        if (normalizeEmbeddings) normalizeRow(row);
        rows.push(row);
      }
    }
    return single ? rows[0] : rows;
  }

  /** Graph outputs (before any normalisation) of texts given as their ids, `n * dim` floats. */
  async embedIds(ids, batchSize = 32) {
    const dim = this.dim;
    const out = new Float32Array(ids.length * dim);
    const order = ids.map((_, i) => i).sort((a, b) => ids[a].length - ids[b].length);
    const short = order.filter((i) => ids[i].length <= CHUNK_TOKENS);
    let start = 0;
    while (start < short.length) {
      let stop = Math.min(start + batchSize, short.length);
      // Sorted ascending, so the last row is the longest; shrink until within the budget.
      while (stop - start > 1 && (stop - start) * ids[short[stop - 1]].length > TOKEN_BUDGET) stop--;
      const rows = short.slice(start, stop);
      const result = await this.runPadded(rows.map((i) => ids[i]), 'sentence_embedding');
      rows.forEach((row, k) => out.set(result.subarray(k * dim, (k + 1) * dim), row * dim));
      start = stop;
    }
    for (const i of order) {
      if (ids[i].length > CHUNK_TOKENS) out.set(await this.embedLong(ids[i]), i * dim);
    }
    return out;
  }

  async embedLong(seq) {
    const dim = this.dim;
    const total = new Float64Array(dim);
    for (let start = 0; start < seq.length; start += CHUNK_TOKENS) {
      const sums = await this.runPadded([seq.subarray(start, start + CHUNK_TOKENS)], 'token_sum');
      for (let j = 0; j < dim; j++) total[j] += sums[j];
    }
    let kept = seq.length;
    if (this.skip.size) for (const id of seq) if (this.skip.has(id)) kept--;
    const row = new Float32Array(dim);
    const count = Math.max(kept, 1);
    if (this.pooling.head === 'identity') {
      for (let j = 0; j < dim; j++) row[j] = total[j] / count;
    } else {
      const [alpha, beta, bias] = await this.headParameters();
      for (let j = 0; j < dim; j++) row[j] = beta[j] * Math.tanh(alpha[j] * (total[j] / count) + bias[j]);
    }
    return row;
  }

  async headParameters() {
    if (this.head === null) {
      const zeros = () => new this.Tensor('int64', new BigInt64Array(1), [1, 1]);
      const names = ['dyt_alpha', 'dyt_beta', 'dyt_bias'];
      const result = await this.session.run({ input_ids: zeros(), attention_mask: zeros() }, names);
      this.head = names.map((name) => Float64Array.from(result[name].data));
    }
    return this.head;
  }

  async runPadded(rows, output) {
    const width = Math.max(1, ...rows.map((r) => r.length));
    const inputIds = new BigInt64Array(rows.length * width).fill(this.pad);
    const mask = new BigInt64Array(rows.length * width);
    rows.forEach((row, r) => {
      const offset = r * width;
      for (let j = 0; j < row.length; j++) {
        inputIds[offset + j] = BigInt(row[j]);
        mask[offset + j] = 1n;
      }
    });
    const dims = [rows.length, width];
    const feeds = {
      input_ids: new this.Tensor('int64', inputIds, dims),
      attention_mask: new this.Tensor('int64', mask, dims),
    };
    const result = await this.session.run(feeds, [output]);
    return result[output].data;
  }
}

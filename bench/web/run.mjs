// One measurement, the same code in Chromium (embed.html) and in Node (node_run.mjs): load a
// web folder with the given onnxruntime module, give the ids and vectors of `texts`, and time
// `docs` (texts per second, in batches, after a warm-up) and `queries` (one text per call,
// the median over the queries after a warm-up, each query's time the mean of REPEATS calls).
const REPEATS = 10;

export async function run({ ort, Encoder, folder, texts, docs = [], queries = [] }) {
  const started = performance.now();
  const encoder = await Encoder.load(folder, ort);
  const loadMs = performance.now() - started;
  const ids = texts.map((text) => Array.from(encoder.tokenize(text)));
  const embeddings = (await encoder.encode(texts)).map((row) => Array.from(row));
  let docsPerSecond = null;
  if (docs.length) {
    await encoder.encode(docs.slice(0, 64));
    const t0 = performance.now();
    await encoder.encode(docs);
    docsPerSecond = docs.length / ((performance.now() - t0) / 1000);
  }
  let queryP50Ms = null;
  if (queries.length) {
    for (const query of queries.slice(0, 20)) await encoder.encode(query);
    const times = [];
    for (const query of queries) {
      // Ten calls per query: browsers coarsen performance.now() to 0.1 ms without isolation.
      const t0 = performance.now();
      for (let k = 0; k < REPEATS; k++) await encoder.encode(query);
      times.push((performance.now() - t0) / REPEATS);
    }
    times.sort((a, b) => a - b);
    queryP50Ms = times[Math.floor(times.length / 2)];
  }
  return { ids, embeddings, loadMs, docsPerSecond, queryP50Ms, docs: docs.length, queries: queries.length };
}

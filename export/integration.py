"""INTEGRATION.md of a mobile bundle: how an Android or iOS app tokenizes and runs the model.

The text is generated from the bundle's manifest so that file names, widths, ids and versions
are the bundle's own. What it says about third-party libraries was checked against their
sources (DJL's ``HuggingFaceTokenizer``, swift-transformers' ``Tokenizers``) and, for
onnxruntime-extensions, measured (``bench/tokenizer_in_graph.py``); it names what was not.
"""

from __future__ import annotations

from sse_onnx import folder as fmt

__all__ = ["integration_guide"]


def integration_guide(manifest: fmt.Manifest, *, onnxruntime_version: str) -> str:
    """The INTEGRATION.md text for a bundle with this manifest."""
    default = manifest.variants[manifest.default_variant].file
    rows = "\n".join(
        f"| `{entry.file}` | {variant}{' (default)' if variant == manifest.default_variant else ''}"
        f" | {entry.bytes / 1e6:.1f} MB |"
        for variant, entry in manifest.variants.items()
    )
    return _TEMPLATE.format(
        name=manifest.model_name,
        version=manifest.package_version,
        dim=manifest.dim,
        rows=rows,
        default=default,
        pad=manifest.pad_token_id,
        cut=_cut_rule(manifest.pooling),
        ort=onnxruntime_version,
        ops=fmt.REQUIRED_OPERATORS_FILE,
        parity=fmt.PARITY_FILE,
        ids=fmt.INPUT_IDS,
        mask=fmt.ATTENTION_MASK,
        out=fmt.SENTENCE_EMBEDDING,
    )


def _cut_rule(pooling: fmt.Pooling) -> str:
    """Step 1 of the contract: what the family cuts, if anything."""
    if pooling.max_chars is None and pooling.max_tokens is None:
        return "no truncation: a text of any length is embedded whole"
    cuts = []
    if pooling.max_chars is not None:
        cuts.append(f"cut the text to its first {pooling.max_chars} characters before")
    if pooling.max_tokens is not None:
        cuts.append(f"keep its first {pooling.max_tokens} ids after tokenizing")
    return "this model's family truncates: " + " and ".join(cuts)


_TEMPLATE = """\
# Embedding with {name} in an Android or iOS app

Written by `sse-export --target mobile` (sse-onnx {version}). The model maps a text to a
{dim}-dimension vector; compare two texts by the dot product of their normalised vectors
(cosine similarity).

| file | variant | size |
|---|---|---|
{rows}

Also here: `{ops}` (the operators of these files, for a reduced
onnxruntime build), `tokenizer.json`, `tokenizer_config.json`, `vocab.txt` (the token of id i
on line i + 1), `{parity}` (test data, see the end) and `manifest.json`. Ship one model
file and the tokenizer files; `{parity}` belongs in your tests, not in the app.

Only variants made of standard ONNX operators are bundled: `int4_block` needs the contrib
operator `com.microsoft.GatherBlockQuantized`, which onnxruntime builds without contrib
operators lack. `int4` is the 4-bit variant of standard operators.

## The contract

1. Tokenize with `tokenizer.json` **without special tokens** (no `[CLS]`/`[SEP]`), without
   padding, and with {cut}. `[UNK]` ids stay.
2. Feed `{ids}` and `{mask}`, both int64 of shape `[1, n]`, the mask all 1. For a
   batch, pad rows to one length with id {pad} and mask 0. An empty text (n = 0) is fed as
   one pad id with mask 0.
3. Read `{out}` (float32 `[batch, {dim}]`) and L2-normalise each row. The first k
   values of a row, normalised, are the k-dimension (Matryoshka) embedding.

## onnxruntime

The `.ort` files were converted by onnxruntime {ort}. Tested range (sse-onnx's
`bench/runtimes.py`, on `.ort` files converted by onnxruntime 1.32.0): onnxruntime 1.20.1,
1.24.4 and 1.32.0 and onnxruntime-node 1.30.0 give exactly the `.onnx` file's outputs for
fp32, fp16 and int8; int4 needs 1.24 or newer (1.20.1 lacks `Sub` on uint8). Use the Android
package `com.microsoft.onnxruntime:onnxruntime-android`, or on iOS the Swift package
`onnxruntime-swift-package-manager` (module `OnnxRuntimeBindings`) or the CocoaPod
`onnxruntime-objc` (module `onnxruntime_objc`), at a release in that range; check a release
outside it with `{parity}`. For a smaller app,
build a reduced onnxruntime of release {ort} with `--minimal_build --include_ops_by_config
{ops}` (onnxruntime's "custom build" docs), or re-run `sse-export --target
mobile` under the onnxruntime release you build.

## Tokenizing in the app: which libraries give exactly these ids

- **Android, JVM: DJL** `ai.djl.huggingface:tokenizers` with `ai.djl.android:tokenizer-native`
  (same version). **Exact**: it runs Hugging Face's own Rust tokenizers on `tokenizer.json`.
  Its defaults add special tokens, pad, and truncate to 512 tokens: switch all three off as
  below.
- **iOS, macOS: swift-transformers** (product `Tokenizers`). **Not guaranteed exact**: it
  re-implements BERT tokenization in Swift (Foundation's case and diacritic folding, grapheme
  clusters) and was not run here; check it with `{parity}`.
- **Hugging Face tokenizers through a C or C++ wrapper** (e.g. mlc-ai's tokenizers-cpp), on
  either platform: the same Rust code as DJL, so exact if the wrapper's encode call adds no
  special tokens and does not truncate.
- **onnxruntime-extensions' `BertTokenizer` op: not exact**. Measured to differ on 0.75% of
  SciFact abstracts and on Greek capitals, Hangul, kana with voicing marks, U+0000, U+FEFF,
  U+FFFD and `[CLS]`-like text (sse-onnx's `bench/README.md`).

### Kotlin (Android)

```kotlin
// implementation("com.microsoft.onnxruntime:onnxruntime-android:{ort}")
// implementation("ai.djl.huggingface:tokenizers:0.33.0")
// runtimeOnly("ai.djl.android:tokenizer-native:0.33.0")
import ai.djl.huggingface.tokenizers.HuggingFaceTokenizer
import ai.onnxruntime.OnnxTensor
import ai.onnxruntime.OrtEnvironment
import ai.onnxruntime.OrtSession
import java.nio.LongBuffer
import java.nio.file.Paths
import kotlin.math.sqrt

class Embedder(dir: String) {{  // a folder on disk: copy the bundle out of the APK's assets first
    private val tokenizer = HuggingFaceTokenizer.newInstance(
        Paths.get(dir, "tokenizer.json"),
        mapOf("addSpecialTokens" to "false", "truncation" to "false", "padding" to "false"),
    )
    private val env = OrtEnvironment.getEnvironment()
    private val session = env.createSession("$dir/{default}", OrtSession.SessionOptions())

    fun embed(text: String): FloatArray {{
        var ids = tokenizer.encode(text).ids
        var mask = LongArray(ids.size) {{ 1L }}
        if (ids.isEmpty()) {{ ids = longArrayOf({pad}L); mask = longArrayOf(0L) }}
        val shape = longArrayOf(1, ids.size.toLong())
        OnnxTensor.createTensor(env, LongBuffer.wrap(ids), shape).use {{ idsTensor ->
            OnnxTensor.createTensor(env, LongBuffer.wrap(mask), shape).use {{ maskTensor ->
                session.run(mapOf("{ids}" to idsTensor, "{mask}" to maskTensor)).use {{ out ->
                    @Suppress("UNCHECKED_CAST")
                    val v = (out.get("{out}").get().value as Array<FloatArray>)[0]
                    val norm = sqrt(v.fold(0f) {{ s, x -> s + x * x }}).coerceAtLeast(1e-12f)
                    return FloatArray(v.size) {{ v[it] / norm }}
                }}
            }}
        }}
    }}
}}
```

### Swift (iOS)

```swift
// Swift packages: swift-transformers (products Tokenizers and Hub),
// onnxruntime-swift-package-manager (product onnxruntime)
import Foundation
import Hub
import OnnxRuntimeBindings
import Tokenizers

final class Embedder {{
    let tokenizer: Tokenizer
    let session: ORTSession

    init(folder: URL) throws {{  // the bundle folder, e.g. in the app's resources
        // Not AutoTokenizer.from(modelFolder:), which also wants a config.json.
        let hub = HubApi.shared
        tokenizer = try AutoTokenizer.from(
            tokenizerConfig: hub.configuration(
                fileURL: folder.appendingPathComponent("tokenizer_config.json")),
            tokenizerData: hub.configuration(
                fileURL: folder.appendingPathComponent("tokenizer.json")))
        let env = try ORTEnv(loggingLevel: .warning)
        session = try ORTSession(
            env: env, modelPath: folder.appendingPathComponent("{default}").path,
            sessionOptions: nil)
    }}

    func embed(_ text: String) throws -> [Float] {{
        var ids = tokenizer.encode(text: text, addSpecialTokens: false).map {{ Int64($0) }}
        var mask = [Int64](repeating: 1, count: ids.count)
        if ids.isEmpty {{ ids = [{pad}]; mask = [0] }}
        let shape: [NSNumber] = [1, NSNumber(value: ids.count)]
        let idsValue = try ORTValue(
            tensorData: NSMutableData(bytes: ids, length: ids.count * 8),
            elementType: .int64, shape: shape)
        let maskValue = try ORTValue(
            tensorData: NSMutableData(bytes: mask, length: mask.count * 8),
            elementType: .int64, shape: shape)
        let outputs = try session.run(
            withInputs: ["{ids}": idsValue, "{mask}": maskValue],
            outputNames: ["{out}"], runOptions: nil)
        let data = try outputs["{out}"]!.tensorData() as Data
        let v = data.withUnsafeBytes {{ Array($0.bindMemory(to: Float.self)) }}
        let norm = max(v.reduce(0) {{ $0 + $1 * $1 }}.squareRoot(), 1e-12)
        return v.map {{ $0 / norm }}
    }}
}}
```

## Checking an integration

Each line of `{parity}` holds a `text` (the exporter's adversarial set: accents, emoji, CJK,
RTL, control characters, `[CLS]`-like text, a 20,000-token text, ...), its reference
`{ids}` (Hugging Face tokenizers, as above) and the normalised `{out}` of
`{default}` (7 decimals). In an app test, tokenize each text and compare the ids exactly,
then embed and compare within 1e-5 per value (float rounding differs between CPUs).
"""

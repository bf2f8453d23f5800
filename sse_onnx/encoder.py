"""The runtime: one onnxruntime session plus the tokenizer, behind ``Encoder.encode``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple, overload

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from sse_onnx import folder as fmt
from sse_onnx.embeddings import (
    PRECISIONS,
    Precision,
    normalize_in_place,
    normalized_row,
    quantize,
    similarity,
)
from sse_onnx.errors import ModelFormatError, SSEError
from sse_onnx.pipeline import run_pipeline
from sse_onnx.texts import check_unicode
from sse_onnx.tokenizer import TextTokenizer, TokenIds

__all__ = ["DEFAULT_MODEL", "Encoder"]

logger = logging.getLogger(__name__)

#: The exported default model shipped inside the package.
DEFAULT_MODEL = Path(__file__).resolve().parent / "default_model"
#: Most padded tokens in one graph call: the Gather materialises batch x length x dim floats,
#: which should stay within the CPU cache; 2^12 was faster but took more peak memory
#: (bench/results/constants.md).
TOKEN_BUDGET = 1 << 11
#: Token sequences longer than this are embedded in chunks whose sums are added.
CHUNK_TOKENS = 1 << 12
#: Texts tokenized per block; bounds the memory held by token ids of a large call while
#: leaving enough texts to sort by length. Blocks are also the work the threads of a large
#: call share (every thread count cuts the same blocks, so results do not depend on it).
#: 2^8 trades a little memory for docs/s against 2^7 (bench/results/constants.md).
BLOCK_TEXTS = 1 << 8
#: Calls with fewer texts than this run on the calling thread alone: starting threads and
#: handing blocks between them costs more than they save on a few blocks.
PARALLEL_TEXTS = 4 * BLOCK_TEXTS
#: Largest thread count accepted.
MAX_THREADS = 1 << 10

Runner = Callable[[list[str], dict[str, npt.NDArray[np.int64]]], list[npt.NDArray[np.float32]]]
#: The rows of a graph call on one text.
_FIRST_ROW = np.zeros(1, dtype=np.intp)


class Plan(NamedTuple):
    """The graph calls that embed a block of texts (see :meth:`Encoder.plan`).

    Attributes:
        texts: How many texts the plan embeds (rows of the ``out`` that :meth:`Encoder.run`
            fills).
        batches: One graph call each: the rows it fills, its padded ``[batch, length]`` ids
            and its mask.
        long: The texts longer than :data:`CHUNK_TOKENS`, by row, with their ids.
    """

    texts: int
    batches: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.int64], npt.NDArray[np.bool_]]]
    long: list[tuple[int, TokenIds]]  # a text longer than CHUNK_TOKENS and its ids


class Encoder:
    """Embeds texts with an exported model on onnxruntime's CPU provider.

    The model's family (SSE, sentence-transformers StaticEmbedding, Model2Vec) and its rules
    around the mean (truncation, skipped ids, head, normalisation) come from its manifest
    (:class:`sse_onnx.folder.Pooling`).

    Args:
        model: A folder written by ``sse-export``; ``None`` loads the bundled default model.
        variant: Which model file of the folder to run (see its ``manifest.json``); ``None``
            takes the folder's default variant.
        threads: Cores a call on many texts uses: its blocks of texts are tokenized and
            embedded by up to this many threads at once, each graph call on one core (the
            GIL is released while onnxruntime runs). ``None`` takes every core this process
            may use. One text, or a few hundred, always run on the calling thread alone.

    Raises:
        ModelFormatError: if the folder is missing a file, holds a corrupt model, or was
            written with another schema version.
        ValueError: for an unknown variant or a bad thread count.

    Example:
        >>> from sse_onnx import Encoder
        >>> encoder = Encoder()
        >>> encoder.encode(["hello world", "static embeddings"]).shape
        (2, 256)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        variant: str | None = None,
        threads: int | None = None,
    ) -> None:
        folder = DEFAULT_MODEL if model is None else Path(model)
        manifest = fmt.read_manifest(folder)
        chosen = manifest.default_variant if variant is None else variant
        if not isinstance(chosen, str):
            raise TypeError(f"variant must be a str or None, not {type(chosen).__name__}.")
        if chosen not in manifest.variants:
            raise ValueError(
                f"variant={variant!r} is not in {folder}, which holds {sorted(manifest.variants)}; "
                f"export it with `sse-export --variants {variant}` or pick one of those."
            )
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)):
            raise TypeError(f"threads must be an int or None, not {type(threads).__name__}.")
        if threads is not None and threads < 1:
            raise ValueError(f"threads={threads} must be at least 1 (or None for all cores).")
        if threads is not None and threads > MAX_THREADS:
            raise ValueError(
                f"threads={threads} is too large; pass at most {MAX_THREADS} (os.cpu_count() "
                f"is {os.cpu_count()})."
            )
        model_path = _checked_file(folder, manifest.variants[chosen])
        fmt.check_self_contained(model_path)
        tokenizer_path = _checked_file(folder, manifest.tokenizer)
        self._session = _open_session(model_path, manifest.pooling.graph_outputs)
        self._graph_run = _runner(self._session)
        self.threads = threads if threads is not None else _usable_cores()
        _check_runs(self._session, model_path, manifest)
        self._tokenizer = TextTokenizer(tokenizer_path)
        if self._tokenizer.vocab_size != manifest.vocab_size:
            raise ModelFormatError(
                f"{tokenizer_path} has {self._tokenizer.vocab_size} tokens but the model has "
                f"{manifest.vocab_size} rows; the folder mixes two models, re-export it."
            )
        self.folder = folder
        self.manifest = manifest
        self.variant = chosen
        self._head: tuple[npt.NDArray[np.float64], ...] | None = None
        self._pad = np.array([manifest.pad_token_id], dtype=np.int64)
        self._ones = np.ones((1, CHUNK_TOKENS), dtype=np.int64)
        self._no_tokens = np.zeros((1, 1), dtype=np.int64)
        self._embedding_output = [fmt.SENTENCE_EMBEDDING]
        self._pooling = manifest.pooling

    @property
    def dim(self) -> int:
        """Width of the embeddings the model produces (before ``truncate_dim``)."""
        return self.manifest.dim

    # The parts and stages of ``encode`` on a list, public so that a benchmark can measure
    # each alone (bench/contention.py, bench/speed.py); ``encode`` calls the same code.

    @property
    def tokenizer(self) -> TextTokenizer:
        """The tokenizer ``encode`` uses, with its chunk cache.

        Setting it shares one tokenizer, and so one cache, among encoders of the same model
        (its vocabulary size must be the model's).
        """
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer: TextTokenizer) -> None:
        if tokenizer.vocab_size != self.manifest.vocab_size:
            raise ValueError(
                f"the tokenizer has {tokenizer.vocab_size} tokens but the model has "
                f"{self.manifest.vocab_size} rows; share a tokenizer among encoders of one model."
            )
        self._tokenizer = tokenizer

    @property
    def session(self) -> ort.InferenceSession:
        """The onnxruntime session that runs the model's graph (CPU provider, 1 thread)."""
        return self._session

    @property
    def graph_runner(self) -> Runner:
        """The call every graph call of ``encode`` goes through: ``(outputs, feeds) -> arrays``.

        Replacing it with a wrapper of the present one observes those calls (``bench/speed.py``
        times the ONNX stage so); the wrapper must return what the wrapped call returns.
        """
        return self._graph_run

    @graph_runner.setter
    def graph_runner(self, run: Runner) -> None:
        self._graph_run = run

    def tokenize(self, texts: Sequence[str]) -> tuple[TokenIds, TokenIds]:
        """Stage 1 of ``encode`` on a list: the token ids of one block of texts.

        Each text is cut as the model's family cuts text, then tokenized without special tokens
        and without truncation. ``encode`` tokenizes a list in blocks of :data:`BLOCK_TEXTS`.

        Args:
            texts: At most :data:`BLOCK_TEXTS` strings.

        Returns:
            The ids of all the texts end to end, and each text's count of ids (int64).

        Raises:
            ValueError: for more than :data:`BLOCK_TEXTS` texts, or a text that is not valid
                Unicode.
        """
        if len(texts) > BLOCK_TEXTS:
            raise ValueError(
                f"tokenize takes one block of at most {BLOCK_TEXTS} texts, not {len(texts)}; "
                "cut the list into blocks as encode does."
            )
        return self._tokenize_block(list(texts), 0)

    def plan(self, flat: TokenIds, lengths: TokenIds, batch_size: int = 32) -> Plan:
        """Stage 2 of ``encode`` on a list: the graph calls that embed a tokenized block.

        Each text keeps the ids its family keeps; the texts are sorted by length, cut into
        batches of at most ``batch_size`` texts and :data:`TOKEN_BUDGET` padded tokens, and
        padded; texts longer than :data:`CHUNK_TOKENS` are set apart, to be embedded in chunks.

        Args:
            flat: The ids of the texts end to end, as :meth:`tokenize` returns them.
            lengths: Each text's count of ids, as :meth:`tokenize` returns them.
            batch_size: Texts per graph call at most, as ``encode``'s.

        Returns:
            The plan, for :meth:`run`.

        Raises:
            ValueError: for a ``batch_size`` below 1.
        """
        _check_positive_int("batch_size", batch_size)
        return self._plan(flat, lengths, batch_size)

    def run(self, plan: Plan, out: npt.NDArray[np.float32]) -> None:
        """Stage 3 of ``encode`` on a list: make the graph calls of a plan.

        ``encode`` then L2-normalises the rows where the family does, keeps the first
        ``truncate_dim`` columns, normalises again if ``normalize_embeddings`` and applies
        ``precision``.

        Args:
            plan: What :meth:`plan` returns.
            out: A float32 ``(plan.texts, dim)`` array, filled with the graph's embedding of
                each text in the order given to :meth:`tokenize`.

        Raises:
            ValueError: if ``out`` has another shape or dtype.
            SSEError: if onnxruntime fails.
        """
        if out.shape != (plan.texts, self.dim) or out.dtype != np.float32:
            raise ValueError(
                f"out is {out.dtype} {out.shape}; pass a float32 array of shape "
                f"({plan.texts}, {self.dim}), one row per text of the plan."
            )
        self._run_plan(plan, out)

    def __repr__(self) -> str:
        return (
            f"Encoder(model={str(self.folder)!r}, variant={self.variant!r}, dim={self.dim}, "
            f"name={self.manifest.model_name!r})"
        )

    similarity = staticmethod(similarity)

    @overload
    def encode(
        self,
        texts: str,
        *,
        batch_size: int = ...,
        normalize_embeddings: bool = ...,
        truncate_dim: int | None = ...,
        show_progress_bar: bool | None = ...,
        precision: Precision = ...,
    ) -> npt.NDArray[Any]: ...

    @overload
    def encode(
        self,
        texts: Sequence[str] | npt.NDArray[Any],
        *,
        batch_size: int = ...,
        normalize_embeddings: bool = ...,
        truncate_dim: int | None = ...,
        show_progress_bar: bool | None = ...,
        precision: Precision = ...,
    ) -> npt.NDArray[Any]: ...

    def encode(
        self,
        texts: str | Sequence[str] | npt.NDArray[Any],
        *,
        batch_size: int = 32,
        normalize_embeddings: bool = True,
        truncate_dim: int | None = None,
        show_progress_bar: bool | None = None,
        precision: Precision = "float32",
    ) -> npt.NDArray[Any]:
        """Embed one text or a list of texts.

        Texts are tokenized without special tokens and without truncation (unless the model's
        family truncates), sorted by length to cut padding, embedded, and returned in their
        original order. Texts of any length keep memory bounded.

        Args:
            texts: A string; or a sequence, a 1-d numpy array or a pandas Series of strings.
            batch_size: Texts per graph call.
            normalize_embeddings: L2-normalise each embedding (after ``truncate_dim``).
            truncate_dim: Keep the first k dimensions (Matryoshka); ``None`` keeps all.
            show_progress_bar: Show a tqdm bar (needs tqdm); ``None`` shows one for a sequence
                when logging is at INFO or below.
            precision: ``"float32"``, or ``"int8"``, ``"uint8"``, ``"binary"``, ``"ubinary"`` as
                sentence-transformers' ``quantize_embeddings`` defines them.

        Returns:
            ``(n, dim)`` embeddings for a sequence, ``(dim,)`` for a single string
            (``dim / 8`` bytes for binary precisions).

        Raises:
            TypeError: if an item is not a string (the message names its index).
            ValueError: for a bad ``batch_size``, ``truncate_dim`` or ``precision``.
        """
        if isinstance(texts, str) and show_progress_bar is not True:
            # The latency path for one query: no blocks, no sorting, no padding, no copies.
            return self._encode_one(
                texts, batch_size, normalize_embeddings, truncate_dim, precision
            )
        single = isinstance(texts, str)
        items: list[str] = [texts] if isinstance(texts, str) else _checked_texts(texts)
        dim = self._checked_options(batch_size, truncate_dim, precision)
        out = np.empty((len(items), self.dim), dtype=np.float32)
        with _progress(len(items), show_progress_bar) as advance:
            self._embed_blocks(items, batch_size, out, advance)
        if self._pooling.normalize:
            normalize_in_place(out)
        embeddings = out[:, :dim]
        if normalize_embeddings:
            normalize_in_place(embeddings)
        result = quantize(np.ascontiguousarray(embeddings), precision)
        return result[0] if single else result

    def _checked_options(self, batch_size: int, truncate_dim: int | None, precision: str) -> int:
        """The width to keep, after checking the options of ``encode``."""
        _check_positive_int("batch_size", batch_size)
        dim = self.dim if truncate_dim is None else truncate_dim
        _check_positive_int("truncate_dim", dim)
        if dim > self.dim:
            raise ValueError(f"truncate_dim={truncate_dim} is larger than the model's {self.dim}.")
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision={precision!r} is not supported; choose one of {PRECISIONS}."
            )
        return dim

    def _encode_one(
        self,
        text: str,
        batch_size: int,
        normalize_embeddings: bool,
        truncate_dim: int | None,
        precision: Precision,
    ) -> npt.NDArray[Any]:
        """``encode(text)`` for one string: the same values as its row of ``encode([text])``."""
        if truncate_dim is None and precision == "float32" and batch_size.__class__ is int:
            dim = self._checked_options(batch_size, None, precision) if batch_size < 1 else self.dim
        else:
            dim = self._checked_options(batch_size, truncate_dim, precision)
        pooling = self._pooling
        try:
            ids = pooling.cut_ids(self._tokenizer.encode_one(pooling.cut_text(text)))
        except TypeError as exc:
            _raise_if_not_unicode([text], 0, exc)
            raise
        row = self._run_one(ids) if ids.size <= CHUNK_TOKENS else self._embed_long(ids)
        if pooling.normalize:
            row = normalized_row(row)
        if dim < self.dim:
            row = row[:dim]
        if normalize_embeddings:
            row = normalized_row(row)
        if precision == "float32":
            return row
        one: npt.NDArray[Any] = quantize(row[None], precision)[0]
        return one

    def _embed_blocks(
        self,
        texts: list[str],
        batch_size: int,
        out: npt.NDArray[np.float32],
        advance: Callable[[int], object],
    ) -> None:
        """Fill ``out`` with the graph outputs of ``texts``, block by block, on up to
        ``self.threads`` threads.

        A block is tokenized and padded into its graph calls' inputs, then the calls are made,
        each step by whichever thread is free (see :mod:`sse_onnx.pipeline`); onnxruntime and
        the chunk table (which tokenizes blocks of long texts) let go of the GIL, so one thread
        prepares a block while another's graph calls run. Blocks are the same whatever the
        thread count, and so are the results.
        """
        starts = range(0, len(texts), BLOCK_TEXTS)

        def prepare(start: int) -> tuple[int, Plan]:
            return start, self._plan(*self._tokenize_block(texts, start), batch_size)

        def embed(block: tuple[int, Plan]) -> None:
            start, plan = block
            self._run_plan(plan, out[start : start + plan.texts])
            advance(plan.texts)

        workers = min(self.threads, len(starts)) if len(texts) >= PARALLEL_TEXTS else 1
        if workers == 1:
            for start in starts:
                embed(prepare(start))
            return
        # At most workers - 1 threads tokenize and workers - 1 make graph calls at once, and
        # a block is tokenized only while no other waits for the graph: on 2 cores, one thread
        # tokenizes while the other makes graph calls. Two graph calls at once ran no faster
        # and took more memory (bench/results/constants.md).
        slots = max(1, workers - 1)
        run_pipeline(
            starts,
            prepare,
            embed,
            threads=workers,
            slots=(slots, slots),
            ahead=1,
        )

    def _tokenize_block(self, texts: list[str], start: int) -> tuple[TokenIds, TokenIds]:
        """The ids of ``texts[start:start + BLOCK_TEXTS]`` end to end, and each text's count."""
        block = list(map(self._pooling.cut_text, texts[start : start + BLOCK_TEXTS]))
        try:
            flat, lengths = self._tokenizer.encode_flat(block)
        except TypeError as exc:
            _raise_if_not_unicode(block, start, exc)
            raise
        return flat, lengths

    def _plan(self, flat: TokenIds, lengths: TokenIds, batch_size: int) -> Plan:
        """The graph calls that embed texts given as their ids end to end and counts: the
        texts sorted by length, cut into batches of at most ``batch_size`` texts and
        :data:`TOKEN_BUDGET` padded tokens, padded; and the texts longer than
        :data:`CHUNK_TOKENS`, embedded in chunks."""
        ends = np.cumsum(lengths)
        starts = ends - lengths
        lengths = self._pooling.cut_lengths(lengths)  # the family keeps a text's first ids
        ends = starts + lengths
        if len(lengths) == 1 and lengths[0] <= CHUNK_TOKENS:  # one text: no sorting, no padding
            return Plan(1, [(_FIRST_ROW, *self._padded(flat, starts, ends))], [])
        order = np.argsort(lengths, kind="stable")
        short = order[lengths[order] <= CHUNK_TOKENS]
        sizes = lengths[short].tolist()  # Python ints: the loop below runs per row
        batches = []
        start = 0
        while start < len(short):
            stop = min(start + batch_size, len(short))
            # Sorted ascending, so the last row is the longest; shrink until within budget.
            while stop - start > 1 and (stop - start) * sizes[stop - 1] > TOKEN_BUDGET:
                stop -= 1
            rows = short[start:stop]
            batches.append((rows, *self._padded(flat, starts[rows], ends[rows])))
            start = stop
        long = [(i, flat[starts[i] : ends[i]]) for i in order[lengths[order] > CHUNK_TOKENS]]
        return Plan(len(lengths), batches, long)

    def _run_plan(self, plan: Plan, out: npt.NDArray[np.float32]) -> None:
        """Fill ``out`` with the graph outputs of the texts of a plan, in their order."""
        for rows, input_ids, mask in plan.batches:
            out[rows] = self._run(self._embedding_output, input_ids, mask.astype(np.int64))[0]
        for i, seq in plan.long:
            out[i] = self._embed_long(seq)

    def _embed_long(self, seq: TokenIds) -> npt.NDArray[np.float32]:
        """Embed one long sequence from the summed rows of its chunks: exact, mean = sum / n.

        The graph leaves the family's skipped ids out of each sum; ``n`` leaves them out too.
        """
        total = np.zeros(self.dim, dtype=np.float64)
        chunk_starts = np.arange(0, len(seq), CHUNK_TOKENS)
        chunk_ends = np.minimum(chunk_starts + CHUNK_TOKENS, len(seq))
        per_call = max(1, TOKEN_BUDGET // CHUNK_TOKENS)
        for first in range(0, len(chunk_starts), per_call):
            calls = slice(first, first + per_call)
            input_ids, mask = self._padded(seq, chunk_starts[calls], chunk_ends[calls])
            sums = self._run([fmt.TOKEN_SUM], input_ids, mask.astype(np.int64))[0]
            total += sums.sum(axis=0, dtype=np.float64)
        kept = self._pooling.counted(seq)
        mean = total / max(kept, 1)
        if self._pooling.head == "identity":
            return mean.astype(np.float32)
        alpha, beta, bias = self._head_parameters()
        embedding: npt.NDArray[np.float32] = (beta * np.tanh(alpha * mean + bias)).astype(
            np.float32
        )
        return embedding

    def _head_parameters(self) -> tuple[npt.NDArray[np.float64], ...]:
        """The DyT vectors, read once from the graph's constant outputs."""
        if self._head is None:
            outputs = self._run(
                list(fmt.DYT_OUTPUTS),
                np.zeros((1, 1), dtype=np.int64),
                np.zeros((1, 1), dtype=np.int64),
            )
            self._head = tuple(np.asarray(o, dtype=np.float64) for o in outputs)
        return self._head

    def _run_one(self, ids: TokenIds) -> npt.NDArray[np.float32]:
        """The embedding ``(dim,)`` of one text's ids, run as a ``[1, length]`` call."""
        if ids.size:
            outputs = self._run(self._embedding_output, ids[None], self._ones[:, : ids.size])
        else:  # one pad id, masked out
            outputs = self._run(self._embedding_output, self._pad[None], self._no_tokens)
        row: npt.NDArray[np.float32] = outputs[0][0]
        return row

    def _padded(
        self, flat: TokenIds, starts: TokenIds, ends: TokenIds
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
        """The rows ``flat[starts[i]:ends[i]]`` padded into ``[batch, length]`` ids, and which
        are tokens (a bool mask: an eighth of the graph's int64 one while a plan waits)."""
        width = max(1, int((ends - starts).max()))
        positions = starts[:, None] + np.arange(width)
        mask = positions < ends[:, None]
        # Positions past a row's end read its neighbour's ids (clipped at the end of flat),
        # then the pad id is written over them: two vectorised passes, no loop over rows.
        source = flat if flat.size else self._pad
        input_ids = np.where(mask, source.take(positions, mode="clip"), self._pad)
        return input_ids, mask

    def _run(
        self, outputs: list[str], input_ids: npt.NDArray[np.int64], mask: npt.NDArray[np.int64]
    ) -> list[npt.NDArray[np.float32]]:
        try:
            return self._graph_run(outputs, {fmt.INPUT_IDS: input_ids, fmt.ATTENTION_MASK: mask})
        except Exception as exc:  # onnxruntime raises its own unrelated exception classes
            raise self._run_error(exc) from exc

    def _run_error(self, exc: Exception) -> SSEError:
        return SSEError(
            f"onnxruntime failed on {self.folder} ({self.variant}): {exc}. The model file "
            "may be damaged; re-export it, and report the problem if it persists."
        )


def _checked_file(folder: Path, entry: fmt.FileEntry) -> Path:
    """The path of a manifest entry, checked to lie in the folder and to exist with the recorded
    size and sha256."""
    path = fmt.entry_path(folder, entry)
    if not path.is_file():
        raise ModelFormatError(f"{path} is missing; the model folder is incomplete, re-export it.")
    size = path.stat().st_size
    if size != entry.bytes:
        raise ModelFormatError(
            f"{path} has {size} bytes but the manifest records {entry.bytes}: the file is "
            "truncated or was replaced; re-export the model."
        )
    if fmt.sha256_file(path) != entry.sha256:
        raise ModelFormatError(
            f"{path} does not match the sha256 recorded in {fmt.MANIFEST_FILE}: the file is "
            "damaged or was replaced; re-export the model."
        )
    return path


def _open_session(path: Path, expected_outputs: tuple[str, ...]) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # Every graph call runs on the thread that makes it: a call is too small to share out
    # (a second intra-op thread made queries/s fall by a third), and the Encoder's own
    # threads run several calls at once instead.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Memory patterns, planned once per input shape, make a short query's graph call faster
    # for little memory (bench/results/constants.md).
    options.enable_mem_pattern = True
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own unrelated exception classes
        raise ModelFormatError(
            f"{path} is not a loadable ONNX model ({str(exc).splitlines()[0]}); the file is "
            "corrupt, re-export the model."
        ) from exc
    inputs = {node.name for node in session.get_inputs()}
    outputs = {node.name for node in session.get_outputs()}
    if inputs != {fmt.INPUT_IDS, fmt.ATTENTION_MASK} or not set(expected_outputs) <= outputs:
        raise ModelFormatError(
            f"{path} has inputs {sorted(inputs)} and outputs {sorted(outputs)}, not the sse-onnx "
            f"graph contract ({fmt.INPUT_IDS}, {fmt.ATTENTION_MASK} -> "
            f"{sorted(expected_outputs)}); export it with sse-export."
        )
    return session


def _runner(session: ort.InferenceSession) -> Runner:
    """``session.run``, through onnxruntime's binding itself when it has the usual one.

    ``InferenceSession.run`` checks the feed names in Python before each call, about 1 us: a
    tenth of a short query. The binding under it takes the same names and feeds plus run
    options; an onnxruntime without it (or with another signature, found on the first call)
    gets the public method.
    """
    binding = getattr(getattr(session, "_sess", None), "run", None)
    if not callable(binding):
        return session.run  # type: ignore[no-any-return]
    public: Runner = session.run

    def run(outputs: list[str], feeds: dict[str, npt.NDArray[np.int64]]) -> list[Any]:
        try:
            return binding(outputs, feeds, None)  # type: ignore[no-any-return]
        except TypeError:  # another binding signature: the public method is always right
            return public(outputs, feeds)

    return run


def _check_runs(session: ort.InferenceSession, path: Path, manifest: fmt.Manifest) -> None:
    """Run the graph once on a padded ``[2, 2]`` batch and check the shape of every output.

    A damaged or foreign graph may load and still fail at its first run, or give outputs of
    other shapes (another width: a model file from another export than the manifest); this
    makes such a file fail when it is loaded, naming it.
    """
    ids = np.full((2, 2), manifest.pad_token_id, dtype=np.int64)
    mask = np.array([[1, 0], [0, 0]], dtype=np.int64)
    names = manifest.pooling.graph_outputs
    try:
        results = session.run(list(names), {fmt.INPUT_IDS: ids, fmt.ATTENTION_MASK: mask})
    except Exception as exc:  # onnxruntime raises its own unrelated exception classes
        first_line = str(exc).partition("\n")[0]
        raise ModelFormatError(
            f"{path} loads but does not run ({first_line}); the file is corrupt, re-export the "
            "model."
        ) from exc
    for name, result in zip(names, results, strict=True):
        expected = (manifest.dim,) if name in fmt.DYT_OUTPUTS else (2, manifest.dim)
        shape = getattr(result, "shape", None)
        if (
            shape is not None
            and len(shape) == len(expected)
            and shape[:-1] == expected[:-1]
            and shape[-1] != manifest.dim
        ):
            raise ModelFormatError(
                f"{path.parent / fmt.MANIFEST_FILE} records dim={manifest.dim} but "
                f"{path.name} gives {shape[-1]}-dimensional {name}; the folder mixes two "
                "exports, re-export it."
            )
        if shape != expected or result.dtype != np.float32:
            raise ModelFormatError(
                f"{path} gives {name} as {type(result).__name__} "
                f"{'' if shape is None else shape} {getattr(result, 'dtype', '')} for a batch of "
                f"2, not float32 {expected} (dim={manifest.dim} in {fmt.MANIFEST_FILE}); the "
                "folder mixes two exports or the file is corrupt, re-export the model."
            )


def _checked_texts(texts: object) -> list[str]:
    """``texts`` as a list of str: from a sequence, a 1-d numpy array or a pandas Series of str.

    Raises:
        TypeError: naming the type, or the index of the first item that is not a str.
    """
    items, fix = _listed_texts(texts)
    for index, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{index}] is {type(text).__name__} ({text!r:.40}), not str; {fix}"
            )
    return items


def _listed_texts(texts: object) -> tuple[list[Any], str]:
    """The items of ``texts`` as a list, and how to fix one that is not a str."""
    if isinstance(texts, (bytes, bytearray)):
        raise TypeError("texts is bytes; decode it first, e.g. texts.decode('utf-8').")
    if isinstance(texts, Sequence):
        return list(texts), "pass strings only (use '' for an empty text)."
    array_fix = (
        "make every value a str first, e.g. texts.astype(str).tolist() (after texts.fillna('') "
        "for a pandas Series with missing values)."
    )
    if isinstance(texts, np.ndarray):
        if texts.ndim != 1 or texts.dtype.kind not in "UO":
            raise TypeError(
                f"texts is a {texts.ndim}-d numpy array of {texts.dtype}; encode takes a 1-d "
                "array of str or a list of strings: make one with .tolist(), e.g. "
                "texts.ravel().tolist() or texts.astype(str).tolist()."
            )
        return texts.tolist(), array_fix
    tolist = getattr(texts, "tolist", None)  # a pandas Series or Index, without pandas
    listed = tolist() if callable(tolist) else None
    if not isinstance(listed, list):
        raise TypeError(
            f"texts must be a string or a sequence of strings, not {type(texts).__name__}; "
            "pass a list of strings (a numpy array or pandas Series of str converts with "
            ".tolist())."
        )
    return listed, array_fix


def _raise_if_not_unicode(texts: Sequence[str], start: int, exc: TypeError) -> None:
    """Name the text behind the tokenizer's TypeError when it holds a lone surrogate."""
    for index, text in enumerate(texts, start):
        try:
            check_unicode(text, f"texts[{index}]")
        except ValueError as error:
            raise error from exc


def _usable_cores() -> int:
    """Cores this process may run on (its affinity, where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}.")
    if value < 1:
        raise ValueError(f"{name}={value} must be at least 1.")


@contextmanager
def _progress(total: int, show: bool | None) -> Iterator[Any]:
    """Yield a callable that advances a tqdm bar, or does nothing without one."""
    if show is None:
        show = logger.getEffectiveLevel() <= logging.INFO
    bar = None
    if show:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            logger.warning("show_progress_bar=True needs tqdm: `pip install tqdm`.")
        else:
            bar = tqdm(total=total, unit="text", desc="Encoding")
    try:
        yield (bar.update if bar is not None else lambda _n: None)
    finally:
        if bar is not None:
            bar.close()

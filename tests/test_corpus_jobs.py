"""sse-embed as its own process: a driver killed mid-job and resumed, a Ray head started apart
and joined by its address, an address where nothing answers.

Each test runs the command in a subprocess with its own local Ray or cluster (about half a
minute each on 2 cores), apart from tests/test_corpus.py's in-process Ray. Every process a test
starts is ended by its id: ``ray stop`` would stop every Ray of the machine, other jobs' too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

pytest.importorskip("ray", reason="needs the scale extra: pip install -e '.[scale]'")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

from test_corpus import WORDS, ray_temp_dir, read_folder  # noqa: E402

from sse_onnx import Encoder  # noqa: E402
from sse_onnx.corpus import shards  # noqa: E402
from sse_onnx.corpus.records import InputFile, JobParameters, JobRecord  # noqa: E402
from sse_onnx.errors import CorpusError  # noqa: E402

#: Documents of the killed job: 47 shards of 256, so the driver is killed well before the end.
KILLED_JOB_DOCS = 12_000
#: The parameters of some job, for the tests of a folder's checks.
PARAMETERS = JobParameters(
    model="m", model_sha256="0" * 64, tokenizer_sha256="1" * 64, variant="int8", dim=256,
    precision="float32", text_fields=("text",), id_field="doc", shard_docs=256,
    calibration_docs=None, input_format=None, inputs=(InputFile("docs.jsonl", 10),),
)  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[str]]:
    """A JSONL file of documents of 0 to 300 words (seeded): its path, ids and texts."""
    rng = np.random.default_rng(11)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(0, 300))) for _ in range(KILLED_JOB_DOCS)]
    ids = [f"d{i:05d}" for i in range(len(texts))]
    path = tmp_path_factory.mktemp("jobs") / "docs.jsonl"
    lines = (json.dumps({"doc": i, "text": t}) + "\n" for i, t in zip(ids, texts, strict=True))
    path.write_text("".join(lines), encoding="utf-8")
    return path, ids, texts


@pytest.fixture(scope="module")
def reference(corpus: tuple[Path, list[str], list[str]]) -> npt.NDArray[np.float32]:
    embeddings: npt.NDArray[np.float32] = Encoder().encode(corpus[2])
    return embeddings


def sse_embed(*args: str) -> list[str]:
    return [sys.executable, "-m", "sse_onnx.corpus.cli", *args, "--no-progress"]


def descendants(pid: int) -> set[int]:
    """Every live process under ``pid`` (children, their children, ...)."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:  # the parent pid is the 4th field, after the parenthesised command name
                stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(proc.name)] = int(stat[1])
            except (OSError, IndexError, ValueError):  # the process ended meanwhile
                continue
    found, grew = {pid}, True
    while grew:
        more = {p for p, parent in parents.items() if parent in found} - found
        found |= more
        grew = bool(more)
    return found - {pid}


def end_processes(pids: set[int], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds, the processes of ``pids`` still alive."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.2)


def free_port() -> int:
    """A port nothing listens on (bound and released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


#: A driver whose shard writers write shards 0 to KEPT_SHARDS - 1, then wait for GATE, a file no
#: test writes: a test that kills the driver once those shards are there knows what it kills.
KEPT_SHARDS = 3
GATED_DRIVER = """\
import os, sys, time
from sse_onnx.corpus import shards
from sse_onnx.corpus.cli import main


class GatedWriter(shards.ShardWriter):
    def write(self, pieces, index, start):
        while index >= {kept} and not os.path.exists({gate!r}):
            time.sleep(0.05)
        return super().write(pieces, index, start)


shards.ShardWriter = GatedWriter  # defined here, so Ray sends the class itself to its workers
sys.exit(main(sys.argv[1:]))
"""


def gated_driver(gate: Path, *args: str) -> list[str]:
    """sse-embed's main() in a process whose writers stop before shard KEPT_SHARDS."""
    script = GATED_DRIVER.format(kept=KEPT_SHARDS, gate=str(gate))
    return [sys.executable, "-c", script, *args, "--no-progress"]


def wait_for_shards(driver: subprocess.Popen[bytes], out: Path, count: int) -> None:
    """Return once ``count`` shards of ``out`` are there (renamed, so complete)."""
    deadline = time.monotonic() + 300  # a safety net only: the shards come long before
    while len(list(out.glob("part-*.parquet"))) < count:
        assert driver.poll() is None, driver.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"fewer than {count} shards in 5 minutes"
        time.sleep(0.05)


def test_a_killed_driver_is_resumed_without_recomputing_its_shards(
    tmp_path: Path, corpus: tuple[Path, list[str], list[str]], reference: npt.NDArray[np.float32]
) -> None:
    source, ids, _ = corpus
    out = tmp_path / "out"
    args = (
        str(source), "--output", str(out), "--id-field", "doc", "--batch-size", "256",
        "--workers", "2",
    )  # fmt: skip
    command = sse_embed(*args)
    with ray_temp_dir() as temp:
        env = {**os.environ, "RAY_TMPDIR": temp}
        driver = subprocess.Popen(
            gated_driver(tmp_path / "gate", *args),
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        ray_processes: set[int] = set()
        try:
            wait_for_shards(driver, out, KEPT_SHARDS)
            ray_processes = descendants(driver.pid)
            driver.send_signal(signal.SIGKILL)
            driver.communicate()
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.communicate()
            # The local Ray dies with its driver but for two agents (DashboardAgent,
            # RuntimeEnvAgent), which outlive it.
            end_processes(ray_processes)
        assert not (out / "_SUCCESS").exists() and not (out / "_manifest.json").exists()
        kept = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.glob("part-*")}
        assert sorted(kept) == [f"part-{i:09d}.parquet" for i in range(KEPT_SHARDS)]

        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        resumed = subprocess.run(
            [*command, "--resume"], env=env, capture_output=True, text=True, timeout=600
        )
        whole = tmp_path / "uninterrupted"
        uninterrupted = [str(whole) if arg == str(out) else arg for arg in command]
        subprocess.run(uninterrupted, env=env, capture_output=True, timeout=600, check=True)

    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"sse-embed: error: output {out} is not empty (4 files: _job.json, "
        "part-000000000.parquet, part-000000001.parquet, ...); pass --resume to finish the job "
        "it holds, or choose an empty folder."
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"({256 * len(kept):,} of them kept from the stopped job's shards)" in resumed.stdout
    for name, stamp in kept.items():  # not written again
        assert (os.stat(out / name).st_mtime_ns, os.stat(out / name).st_ino) == stamp, name
    found_ids, vectors, metadata = read_folder(out)
    assert found_ids == ids
    np.testing.assert_array_equal(vectors, reference)  # as one encode call: as if never killed
    assert metadata["manifest"]["rows"] == len(ids)
    # Byte for byte the folder of the uninterrupted run: every shard, so the manifest too.
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
    for path in sorted(whole.iterdir()):
        assert (out / path.name).read_bytes() == path.read_bytes(), path.name


def test_a_resume_with_other_parameters_is_refused(
    tmp_path: Path, corpus: tuple[Path, list[str], list[str]]
) -> None:
    source = corpus[0]
    out = tmp_path / "out"
    out.mkdir()
    encoder = Encoder()
    job = {
        "format": "sse-onnx-corpus",
        "version": 1,
        "parameters": {
            "model": encoder.manifest.model_name,
            "model_sha256": encoder.manifest.variants[encoder.variant].sha256,
            "tokenizer_sha256": encoder.manifest.tokenizer.sha256,
            "variant": encoder.variant,
            "dim": 256,
            "precision": "float32",
            "text_fields": ["text"],
            "id_field": "doc",
            "shard_docs": 256,
            "calibration_docs": None,
            "input_format": None,
            "inputs": [{"path": str(source), "bytes": source.stat().st_size}],
        },
        "ranges": None,
    }
    (out / "_job.json").write_text(json.dumps(job), encoding="utf-8")
    (out / "part-000000000.parquet").write_bytes(b"a shard the stopped job wrote")
    base = sse_embed(str(source), "--output", str(out), "--id-field", "doc", "--batch-size", "256")

    dim = subprocess.run([*base, "--dim", "64", "--resume"], capture_output=True, text=True)
    grown = source.with_name("grown.jsonl")
    grown.write_bytes(source.read_bytes() + b'{"doc": "x", "text": "one more"}\n')
    job["parameters"]["inputs"] = [{"path": str(grown), "bytes": source.stat().st_size}]
    (out / "_job.json").write_text(json.dumps(job), encoding="utf-8")
    grown_command = [*base, "--resume"]
    grown_command[grown_command.index(str(source))] = str(grown)
    size = subprocess.run(grown_command, capture_output=True, text=True)

    assert dim.returncode == 1
    assert dim.stderr.strip() == (
        f"sse-embed: error: output {out} holds a job with other parameters (dim: 256 there, 64 "
        "now); resume with the command that started it, or choose an empty folder (or delete "
        "this one)."
    )
    assert size.returncode == 1
    assert re.fullmatch(
        rf"sse-embed: error: output {re.escape(str(out))} holds a job with other parameters "
        rf"\(inputs: .*'bytes': {source.stat().st_size}.* there, .*'bytes': "
        rf"{grown.stat().st_size}.* now\); .*",
        size.stderr.strip(),
    ), size.stderr


def test_a_folder_of_a_job_that_wrote_no_shard_is_started_anew(tmp_path: Path) -> None:
    """A job stopped by a bad input (no such column, say) leaves only its record: the corrected
    command runs, with or without --resume and whatever the recorded parameters."""
    (tmp_path / "_job.json").write_text('{"parameters": {"text_fields": ["body"]}}')
    for resume in (False, True):
        assert shards.prepare(tmp_path, PARAMETERS, resume=resume) is None


@pytest.mark.parametrize("resume", [False, True])
def test_a_finished_folder_is_neither_resumed_nor_overwritten(tmp_path: Path, resume: bool) -> None:
    for name in ("_job.json", "part-000000000.parquet", "_manifest.json", "_SUCCESS"):
        (tmp_path / name).write_text("")
    with pytest.raises(CorpusError, match=r"holds a finished job \(_SUCCESS is there\); there is "):
        shards.prepare(tmp_path, PARAMETERS, resume=resume)


def test_one_file_is_one_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(CorpusError, match=r"is not empty \(1 file: notes\.txt\); pass resume=T"):
        shards.prepare(tmp_path, PARAMETERS, resume=False)


def stopped_job(tmp_path: Path, job: dict[str, Any]) -> Path:
    """A folder of a stopped job: ``job`` as its _job.json, and one shard."""
    (tmp_path / "_job.json").write_text(json.dumps(job), encoding="utf-8")
    (tmp_path / "part-000000000.parquet").write_bytes(b"a shard the stopped job wrote")
    return tmp_path


def test_a_job_record_is_read_back_as_it_was_written(tmp_path: Path) -> None:
    written = shards.write_job(tmp_path, PARAMETERS, np.array([[-0.5, 0.25]], np.float32))
    on_disk = json.loads((tmp_path / "_job.json").read_text(encoding="utf-8"))
    assert list(on_disk) == ["format", "version", "parameters", "ranges"]
    assert on_disk["parameters"]["inputs"] == [{"path": "docs.jsonl", "bytes": 10}]
    assert on_disk["parameters"]["text_fields"] == ["text"]
    assert JobRecord.from_dict(on_disk, where="_job.json") == written
    (tmp_path / "part-000000000.parquet").write_bytes(b"")
    assert shards.prepare(tmp_path, PARAMETERS, resume=True) == written


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda job: job["parameters"].pop("dim"), r"_job\.json: parameters has no 'dim': it is "),
        (lambda job: job.update(extra=1), r"_job\.json has an unknown key 'extra': it is not a "),
        (
            lambda job: job["parameters"].update(dim="256"),
            r"_job\.json: parameters: dim is '256', not a count; the file was edited or damaged",
        ),
        (
            lambda job: job["parameters"]["inputs"][0].update(bytes=-1),
            r"_job\.json: parameters\.inputs\[0\]: bytes is -1, not a count or null",
        ),
        (lambda job: job.update(version=2), r"_job\.json is 'sse-onnx-corpus' version 2, where "),
        (lambda job: job.update(ranges=[["a"]]), r"_job\.json: ranges is \[\['a'\]\], not a "),
    ],
)
def test_a_damaged_job_record_names_its_file_and_key(
    tmp_path: Path, damage: Any, message: str
) -> None:
    job = parameters_job()
    damage(job)
    folder = stopped_job(tmp_path, job)
    with pytest.raises(CorpusError, match=message) as caught:
        shards.prepare(folder, PARAMETERS, resume=True)
    assert str(caught.value).startswith(str(folder / "_job.json"))
    assert str(caught.value).endswith("it cannot be resumed. Choose an empty folder.")


def parameters_job() -> dict[str, Any]:
    """The _job.json of PARAMETERS, as sse-embed writes it."""
    return {
        "format": "sse-onnx-corpus",
        "version": 1,
        "parameters": PARAMETERS.to_dict(),
        "ranges": None,
    }


@pytest.fixture
def ray_head() -> Iterator[int]:
    """A Ray head started as its own process on 127.0.0.1 (3 CPUs): its port.

    ``ray start`` turns token authentication on; a driver given an address asks for a token only
    with RAY_AUTH_MODE=token, as Ray documents, so the test sets it for both.
    """
    port = free_port()
    with ray_temp_dir() as temp:
        env = {**os.environ, "RAY_AUTH_MODE": "token"}
        ray_command = Path(sys.executable).with_name("ray")
        try:
            started = subprocess.run(
                [
                    str(ray_command), "start", "--head", "--node-ip-address=127.0.0.1",
                    f"--port={port}", "--num-cpus=3", f"--temp-dir={temp}",
                    "--include-dashboard=false", "--disable-usage-stats",
                ],
                env=env, capture_output=True, text=True, timeout=300,
            )  # fmt: skip
            assert started.returncode == 0, started.stderr[-3000:]
            yield port
        finally:
            # Stopped by process id: its processes name the temp folder, and their children
            # (workers, agents) hang under them.
            head = {pid for pid in _pids() if temp in _cmdline(pid)}
            end_processes(head | {d for pid in head for d in descendants(pid)})


def _pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_sse_embed_joins_a_ray_head_started_apart(
    tmp_path: Path,
    ray_head: int,
    corpus: tuple[Path, list[str], list[str]],
    reference: npt.NDArray[np.float32],
) -> None:
    source, ids, _ = corpus
    out = tmp_path / "out"
    address = f"127.0.0.1:{ray_head}"
    env = {**os.environ, "RAY_AUTH_MODE": "token"}
    done = subprocess.run(
        sse_embed(
            str(source), "--output", str(out), "--id-field", "doc", "--workers", "2",
            "--ray-address", address,
        ),
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 workers" in done.stdout
    found_ids, vectors, _ = read_folder(out)
    assert found_ids == ids
    np.testing.assert_array_equal(vectors, reference)
    # Ray's noise (issue 19, point 7): neither its token warning nor its core_worker line.
    assert done.stderr.strip() == f"joining the Ray cluster at {address}", done.stderr


def test_an_address_where_nothing_answers_is_one_line(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text('{"id": "a", "text": "a cat"}\n', encoding="utf-8")
    address = f"127.0.0.1:{free_port()}"

    done = subprocess.run(
        sse_embed(str(source), "--output", str(tmp_path / "out"), "--ray-address", address),
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"sse-embed: error: cannot join the Ray cluster at {address}: nothing answers there "
        f"(Connection refused); start its head (ray start --head --port={address[10:]}) or "
        "pass the address it printed."
    )


def test_ctrl_c_stops_the_job_in_one_line_that_says_resume_continues(
    tmp_path: Path, corpus: tuple[Path, list[str], list[str]]
) -> None:
    out = tmp_path / "out"
    args = (
        str(corpus[0]), "--output", str(out), "--id-field", "doc", "--batch-size", "256",
        "--workers", "2",
    )  # fmt: skip
    with ray_temp_dir() as temp:
        env = {**os.environ, "RAY_TMPDIR": temp}
        # Its own process group, which a terminal's Ctrl-C signals as a whole.
        driver = subprocess.Popen(
            gated_driver(tmp_path / "gate", *args), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        ray_processes: set[int] = set()
        try:
            wait_for_shards(driver, out, KEPT_SHARDS)
            ray_processes = descendants(driver.pid)
            os.killpg(driver.pid, signal.SIGINT)
            _, err = driver.communicate(timeout=120)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.communicate()
            end_processes(ray_processes)

    stderr = err.decode()
    assert driver.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        f"sse-embed: stopped; {out} keeps the shards already written: run the same command with "
        "--resume to continue."
    )
    assert not (out / "_SUCCESS").exists()


#: sse-embed's main() with a job that, once stopped by Ctrl-C, never finishes winding down
#: (as a Ray that does not shut down): it marks each stage with a file for the test to wait on.
HANGING_DRIVER = """\
import pathlib, sys, time
from sse_onnx.corpus import cli
cli.STOP_SECONDS = {stop}


def hang(args):
    pathlib.Path({started!r}).touch()
    try:
        while True:
            time.sleep(0.01)
    except KeyboardInterrupt:
        pathlib.Path({stopping!r}).touch()
        while True:
            time.sleep(0.01)


cli._embed = hang
sys.exit(cli.main(sys.argv[1:]))
"""


def wait_for_file(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120  # a safety net only
    while not path.exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("presses", [1, 2])
def test_a_job_that_does_not_wind_down_still_stops_in_one_line(
    tmp_path: Path, presses: int
) -> None:
    """After Ctrl-C the command exits with its line within STOP_SECONDS even if the job hangs
    (here 1 s), and at once on a second Ctrl-C (here STOP_SECONDS is 10 minutes)."""
    started, stopping = tmp_path / "started", tmp_path / "stopping"
    script = HANGING_DRIVER.format(
        stop=1.0 if presses == 1 else 600.0, started=str(started), stopping=str(stopping)
    )
    out = tmp_path / "out"
    driver = subprocess.Popen(
        [sys.executable, "-c", script, "in.jsonl", "--output", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_file(started, driver)
        driver.send_signal(signal.SIGINT)
        if presses == 2:
            wait_for_file(stopping, driver)
            driver.send_signal(signal.SIGINT)
        _, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    stderr = err.decode()
    assert driver.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines() == [
        f"sse-embed: stopped; {out} keeps the shards already written: run the same command with "
        "--resume to continue."
    ]


def test_an_unreachable_s3_input_is_one_line_before_ray_starts(tmp_path: Path) -> None:
    """An S3 endpoint where nothing answers (this machine, a port nothing listens on)."""
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    started = time.monotonic()
    done = subprocess.run(
        sse_embed("s3://bucket/corpus.jsonl", "--output", str(tmp_path / "out.parquet")),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 1
    assert re.fullmatch(
        r"sse-embed: error: cannot read input s3://bucket/corpus\.jsonl: [^\n]*127\.0\.0\.1[^\n]*"
        r"; check the address, the credentials and the network \(or copy the input to a local "
        r"file\)\.",
        done.stderr.strip(),
    ), done.stderr
    assert time.monotonic() - started < 30

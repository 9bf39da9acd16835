"""FailureReason keeps the exception that failed the job: through a launcher's line prefixes
(torch's ``[rankN]: ``, torchrun --tee's ``[defaultN]:``, mpirun's ``[1,0]<stderr>:``,
horovodrun's ``[0]<stderr>:``, srun --label's ``0: ``), past
torchrun's own ChildFailedError traceback, and through describe.json's 1024-character cut, which
keeps the end (where a traceback ends) as well as the head."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from smsupervise.local import describe
from smsupervise.sagemaker import outcome
from tests.local.conftest import described, needs_root, request, run

PREFIXES = st.sampled_from(
    ["[rank{}]: ", "[default{}]:", "[1,{}]<stderr>:", "[{}]<stderr>:", "[{}]: ", "{}: "]
)
EXCEPTIONS = st.sampled_from(
    ["ValueError: boom", "torch.cuda.OutOfMemoryError: CUDA out of memory", "KeyError: 'x'", "StopIteration"]
)
CHILD_FAILED = [
    "Traceback (most recent call last):",
    '  File "/usr/bin/torchrun", line 8, in <module>',
    "    sys.exit(main())",
    "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
    "============================================================",
    "train.py FAILED",
    "Root Cause (first observed failure):",
    "[0]:",
    "  rank      : 1 (local_rank: 1)",
]


def _traceback(prefix: str, exception: str) -> list[str]:
    body = ["Traceback (most recent call last):", '  File "/opt/ml/code/train.py", line 9, in <module>']
    body += ["    main()", exception]
    return [prefix + line for line in body]


@given(
    shape=PREFIXES,
    failing=st.integers(0, 7),
    other=st.integers(0, 7),
    exception=EXCEPTIONS,
    seed=st.randoms(),
)
def test_the_first_failing_workers_exception_is_found_through_launcher_prefixes(
    shape: str, failing: int, other: int, exception: str, seed: random.Random
) -> None:
    """Worker ``failing`` raises first; another worker's consequent error follows, the two
    tracebacks' lines interleaved (order kept within each), then torchrun's ChildFailedError: the
    exception line is the first worker's, with its prefix."""
    first = _traceback(shape.format(failing), exception)
    second = _traceback(shape.format(other + 8), "RuntimeError: NCCL communicator was aborted")
    merged = first[:1]  # the first worker's traceback begins first
    rest_a, rest_b = first[1:], list(second)
    while rest_a or rest_b:
        source = rest_a if rest_a and (not rest_b or seed.random() < 0.5) else rest_b
        merged.append(source.pop(0))
    tail = "\n".join(["warming up", *merged, *CHILD_FAILED])
    assert outcome.exception_line(tail) == f"{shape.format(failing)}{exception}".strip()


@given(exception=EXCEPTIONS)
def test_one_writer_without_prefixes_keeps_its_last_traceback(exception: str) -> None:
    """The negative twin: a plain process's chained tracebacks give the last one's exception, and
    torchrun's ChildFailedError alone (its workers' lines cut off) is still an exception line."""
    chained = [*_traceback("", "ValueError: first"), "", "During handling:", "", *_traceback("", exception)]
    assert outcome.exception_line("\n".join(chained)) == exception
    assert outcome.exception_line("\n".join(CHILD_FAILED)) == (
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:"
    )
    assert outcome.exception_line("[rank0]: ValueError: not in a traceback") is None


@given(
    head=st.text(min_size=1, max_size=300).filter(lambda s: "\n" not in s),
    middle=st.integers(0, 5000),
    last=EXCEPTIONS,
)
def test_describes_cut_keeps_the_head_and_the_end(head: str, middle: int, last: str) -> None:
    """Any reason over 1024 characters: cut to exactly 1024, keeping its first line and its end
    (the exception a traceback ends with); one that fits is kept whole."""
    text = f"AlgorithmError: {head}\n" + "x" * middle + f"\n{last}"
    cut = describe.clip(text)
    assert len(cut) == min(len(text), describe.FAILURE_LIMIT)
    assert cut.endswith(last)
    assert cut.startswith(f"AlgorithmError: {head}"[:300])
    if len(text) <= describe.FAILURE_LIMIT:
        assert cut == text


@needs_root
def test_a_ranks_prefixed_exception_reaches_failure_reason(tmp_path: Path) -> None:
    """End to end: a job whose stderr is a torchrun-like tail (a rank's prefixed traceback, then
    the ChildFailedError summary) fails with the rank's exception in describe's FailureReason."""
    code = tmp_path / "code"
    code.mkdir()
    lines = [*_traceback("[rank1]: ", "ValueError: the rank's own error"), *CHILD_FAILED]
    lines += [f"{i} padding " * 20 for i in range(10)]  # a long tail: the exception must survive the cut
    (code / "train.py").write_text(
        "import sys\n" + "".join(f"print({line!r}, file=sys.stderr)\n" for line in lines) + "sys.exit(1)\n"
    )
    body = request(tmp_path, "fail")
    body["HyperParameters"].update(
        {"sagemaker_program": '"train.py"', "sagemaker_submit_directory": f'"{code}"'}
    )
    result = run(tmp_path, body)
    assert result.returncode == 1, result.stderr
    reason = described(tmp_path)["FailureReason"]
    assert len(reason) <= describe.FAILURE_LIMIT
    assert "\n[rank1]: ValueError: the rank's own error\n" in reason
    assert reason.endswith(lines[-1].strip())  # the cut keeps the end

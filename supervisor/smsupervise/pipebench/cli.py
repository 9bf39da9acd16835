"""``smsupervise-pipe-bench [OPTIONS] -- CMD [ARGS...]``: run the sweep, print the report."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence

from smsupervise.pipebench import chart, job, report
from smsupervise.pipebench.options import BenchOptions, BenchUsageError, parse, parser_error
from smsupervise.pipebench.results import RunResult
from smsupervise.pipebench.verdict import judge, rate_label

# The ceiling reader: `cat` on every channel at once, each epoch in turn as its FIFO appears
# (the relay creates an epoch's FIFO when it starts that epoch).
CAT_READER = r"""
read_channel() {
  prefix=$(printenv "SM_CHANNEL_$1") || { echo "SM_CHANNEL_$1 is not set" >&2; exit 1; }
  epoch=0
  while [ "$epoch" -lt "$SM_HP_EPOCHS" ]; do
    until [ -p "${prefix}_$epoch" ]; do sleep 0.005; done
    cat "${prefix}_$epoch" >/dev/null || exit 1
    epoch=$((epoch + 1))
  done
}
pids=""
for channel in "$@"; do read_channel "$channel" & pids="$pids $!"; done
status=0
for pid in $pids; do wait "$pid" || status=1; done
exit "$status"
"""


def plan(options: BenchOptions) -> list[job.RunSpec]:
    """`cat` first (the ceiling, at unlimited rate), then the reader at each rate, in order."""
    specs = []
    if options.ceiling:
        names = [channel.name.upper() for channel in options.channels]
        specs.append(job.RunSpec("cat", ("/bin/sh", "-c", CAT_READER, "cat", *names), None))
    specs += [job.RunSpec("reader", options.command, rate) for rate in options.rates]
    return specs


def sweep(options: BenchOptions) -> list[RunResult]:
    """Every run of the plan; stops after the reader's first failed run (the rest would fail too)."""
    runs: list[RunResult] = []
    specs = plan(options)
    with tempfile.TemporaryDirectory(prefix="smsupervise-pipe-bench-") as tmp:
        for index, spec in enumerate(specs):
            say(f"run {index + 1}/{len(specs)}: {spec.reader} at {rate_label(spec.rate)}")
            result = job.run(spec, options, os.path.join(tmp, f"run-{index}"), os.environ)
            runs.append(result)
            if result.problem and spec.reader == "reader":
                break
    return runs


def say(text: str) -> None:
    sys.stderr.write(f"smsupervise-pipe-bench: {text}\n")
    sys.stderr.flush()


def main(argv: Sequence[str]) -> int:
    """Parse, run, report; the exit status (0 done, 1 a run failed, 2 bad options, 130 Ctrl-C)."""
    try:
        options = parse(argv)
    except BenchUsageError as error:
        sys.stderr.write(parser_error(str(error)))
        return 2
    draw = options.png is not None and chart.can_draw_png()
    if options.png is not None and not draw:
        say(
            f"--png {options.png}: matplotlib is not installed, so no PNG is drawn "
            "(pip install 'smsupervise[plot]'); the chart is in the terminal report"
        )
    try:
        runs = sweep(options)
    except KeyboardInterrupt:
        say("interrupted: the runs were stopped")
        return 130
    verdict = judge(runs)
    if options.output == "json":
        sys.stdout.write(report.to_json(options, runs, verdict))
    elif options.output == "csv":
        sys.stdout.write(report.to_csv(runs))
    else:
        sys.stdout.write(report.to_table(options, runs, verdict, chart.terminal(runs)))
    if draw and options.png is not None:
        chart.png(runs, options.png, f"{' '.join(options.command)}: {verdict.text.split(':')[0]}")
        say(f"chart written to {options.png}")
    return 1 if any(run.problem for run in runs) else 0


def entry() -> None:
    """Console-script entry point."""
    code = main(sys.argv[1:])
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    sys.exit(code)

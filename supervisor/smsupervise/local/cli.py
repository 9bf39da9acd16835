"""``smsupervise-local``: the command line of the local runner.

    smsupervise-local run JOB.json [--work-dir DIR] [--image IMAGE [--engine CMD]] [--kill-after S]
                               [--quiet] [--json]
    smsupervise-local describe DIR

Exit status of ``run``: 0 Completed, 1 Failed, 2 invalid request or a work dir in use by another
run (nothing ran), 3 Stopped (a stop request, i.e. Ctrl-C or SIGTERM to the runner, or
MaxRuntimeInSeconds). ``describe`` prints
``DIR/describe.json`` and exits the same way.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence

import orjson

from smsupervise.local import job as jobs
from smsupervise.local.console import Console
from smsupervise.local.run import EXIT_CODES, Options, Runner
from smsupervise.local.workdir import WorkDirBusy

INVALID = 2


def parser() -> argparse.ArgumentParser:
    """The argument parser."""
    top = argparse.ArgumentParser(
        prog="smsupervise-local",
        description="Run a SageMaker CreateTrainingJob request on this machine, without Docker.",
    )
    sub = top.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run JOB.json (a CreateTrainingJob request) to its end")
    run.add_argument("request", metavar="JOB.json")
    run.add_argument(
        "--work-dir",
        metavar="DIR",
        help="where trees, logs, metrics and describe.json go "
        "(default: ./smsupervise-local/<TrainingJobName>-<time>)",
    )
    run.add_argument(
        "--image", metavar="IMAGE", help="run each host as a container of IMAGE (podman or docker)"
    )
    run.add_argument(
        "--engine",
        metavar="CMD",
        default=os.environ.get("SMSUPERVISE_LOCAL_ENGINE"),
        help="with --image: the engine's command, split as a shell would, e.g. 'podman --root DIR' "
        "(default: $SMSUPERVISE_LOCAL_ENGINE, else podman, else docker)",
    )
    run.add_argument(
        "--kill-after",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="after a stop's SIGTERM, SIGKILL this much later (the service: 120)",
    )
    run.add_argument(
        "--checkpoint-interval",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="how often checkpoints are mirrored out while the job runs (default 1)",
    )
    run.add_argument(
        "--isolation",
        choices=("root", "userns", "basedir"),
        help="force a weaker isolation than the strongest available (tests, debugging)",
    )
    run.add_argument("--netns-prefix", default="lc-", help=argparse.SUPPRESS)  # tests: their own namespaces
    run.add_argument("--quiet", action="store_true", help="print only the final summary")
    run.add_argument("--json", action="store_true", help="records and events as JSON lines")
    describe = sub.add_parser("describe", help="print DIR/describe.json (DescribeTrainingJob)")
    describe.add_argument("work_dir", metavar="DIR")
    return top


def _describe(work_dir: str) -> int:
    path = os.path.join(work_dir, "describe.json")
    try:
        with open(path, "rb") as handle:
            body = orjson.loads(handle.read())
    except (OSError, orjson.JSONDecodeError) as error:
        sys.stderr.write(f"smsupervise-local: {path}: {error}; give the --work-dir of a run\n")
        return INVALID
    sys.stdout.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
    return EXIT_CODES.get(body.get("TrainingJobStatus"), 0)


def _run(args: argparse.Namespace) -> int:
    console = Console(args.quiet, args.json)
    try:
        job = jobs.load(args.request)
    except jobs.InvalidRequest as error:
        console.event(
            "invalid_request",
            f"invalid request, nothing was run:\n{error}",
            problems=[p.render(error.source) for p in error.problems],
        )
        return INVALID
    work = args.work_dir or os.path.join("smsupervise-local", f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    options = Options(work, args.kill_after, args.checkpoint_interval, args.isolation, args.netns_prefix)
    if args.image:
        from smsupervise.local.containers import ContainerRunner, engine  # noqa: PLC0415 (only with --image)

        try:
            command = engine(args.engine)
        except OSError as error:
            console.event("runner_error", f"error: {error}", error=str(error))
            return INVALID
        runner: Runner = ContainerRunner(job, options, console, args.image, command)
    else:
        runner = Runner(job, options, console)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda number, _frame: runner.request_stop(number))
    try:
        result = runner.run()
    except WorkDirBusy as error:  # nothing was touched
        console.event("work_dir_busy", f"refused: {error}", error=str(error), work_dir=options.work_dir)
        return INVALID
    except (OSError, ValueError) as error:  # describe.json could not even be written
        console.event("runner_error", f"error: {error}", error=str(error))
        return 1
    finally:
        console.close()
    reason = f": {result.failure}" if result.failure else ""
    console.event(
        "job_finished",
        f"{job.name} {result.status} ({result.secondary}){reason}; {result.describe_path}",
        status=result.status,
        secondary=result.secondary,
        describe=result.describe_path,
        exit_code=result.exit_code,
    )
    return result.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the subcommand; returns the exit status."""
    args = parser().parse_args(argv)
    if args.command == "describe":
        return _describe(args.work_dir)
    return _run(args)


def entry() -> None:
    """The console script."""
    sys.exit(main())

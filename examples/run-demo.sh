#!/usr/bin/env bash
# `make demo`: run a SageMaker CreateTrainingJob request on this machine with smsupervise-local, no Docker:
# examples/local/job.json (two File channels, a Pipe channel, MetricDefinitions, a CheckpointConfig) runs
# examples/local/src/train.py under `smsupervise train` as PID 1 of its own namespaces (when root; else
# smsupervise-local says which fallback it uses). 1: to completion. 2: stopped by MaxRuntimeInSeconds
# (SIGTERM; the job saves a checkpoint, mirrored out). 3: the same job again, resuming from that checkpoint.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$here/../.venv}
local_run=("$venv/bin/smsupervise-local")
work=$(mktemp -d /tmp/smsupervise-local-demo.XXXXXX)

# request NAME EPOCHS STEP_SECONDS MAX_RUNTIME: the bundled request with this run's values filled in
request() {
  sed -e "s#@EXAMPLES@#$here#g" -e "s#@WORK@#$work#g" -e "s#@RUN@#$1#g" -e "s#@EPOCHS@#$2#" \
      -e "s#@STEP_SECONDS@#$3#" -e "s#@MAX_RUNTIME@#$4#" "$here/local/job.json" >"$work/$1.json"
  echo "$work/$1.json"
}

# summary DIR: the DescribeTrainingJob fields people look at first
summary() {
  "$venv/bin/python" - "$1/describe.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"   | {d['TrainingJobStatus']} / {d['SecondaryStatus']}: "
      + " -> ".join(t["Status"] for t in d["SecondaryStatusTransitions"]))
for m in d.get("FinalMetricDataList", []):
    print(f"   | {m['MetricName']} = {m['Value']}")
print(f"   | model: {d.get('ModelArtifacts', {}).get('S3ModelArtifacts', '-')}")
PY
}

run() {  # run REQUEST WORK_DIR [OPTIONS...]: smsupervise-local run $work/REQUEST.json; returns its exit code
  local name=$1 dir=$2; shift 2
  set +e
  "${local_run[@]}" run "$work/$name.json" --work-dir "$work/$dir" "$@"
  local code=$?
  set -e
  return $code
}

echo "== 1. examples/local/job.json: 2 File channels + 1 Pipe channel, metrics, checkpoints, to completion"
request complete 8 0 600 >/dev/null
code=0; run complete complete || code=$?
echo "== smsupervise-local exited with $code (0 Completed); $work/complete/describe.json says:"
summary "$work/complete"
echo "== model.tar.gz: $(tar tzf "$work/s3/output/demo-local-complete/output/model.tar.gz" | tr '\n' ' ')"
echo "== output.tar.gz: $(tar tzf "$work/s3/output/demo-local-complete/output/output.tar.gz" | tr '\n' ' ')"
echo
echo "== 2. the same job, slower, with MaxRuntimeInSeconds=3: SIGTERM to PID 1, the job saves and exits"
request resume 12 0.004 3 >/dev/null
code=0; run resume resume --kill-after 20 --quiet || code=$?
echo "== smsupervise-local exited with $code (3 Stopped); checkpoints mirrored out:" \
  "$(ls "$work/s3/checkpoints/resume" | tr '\n' ' ')"
summary "$work/resume"
echo
echo "== 3. run it again with room to finish: it resumes from the checkpoint copied in at the start"
request resume 12 0 600 >/dev/null
code=0; run resume resumed --quiet || code=$?
echo "== smsupervise-local exited with $code; the job said:" \
  "$(grep -o 'resumed from checkpoint[^"]*' "$work/resumed/logs/algo-1.jsonl")"
summary "$work/resumed"
echo
echo "== everything is left in $work (trees, logs/algo-1.jsonl, metrics.jsonl, describe.json);" \
  "smsupervise-local describe DIR prints a run"

#!/usr/bin/env bash
# `make demo`: run the bundled example training job (examples/job) the way SageMaker would:
# `smsupervise train` in script mode, with an /opt/ml-style tree in a temporary directory
# (SAGEMAKER_BASE_DIR), as PID 1 of a fresh PID namespace when we are root (as in a container),
# else as a subreaper. First rendered for people (--log-format text); then the same job with a
# hyperparameter that makes it fail, in the default JSON format, to show the failure file.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$here/../.venv}
sup=("$venv/bin/smsupervise")

if [ "$(id -u)" = 0 ] && unshare --pid --fork --mount-proc true 2>/dev/null; then
  how="as PID 1 in a fresh PID namespace (unshare --pid --fork --mount-proc)"
  runner=(unshare --pid --fork --mount-proc)
else
  how="as a child subreaper (not root, or no unshare here)"
  runner=()
fi

# make_base DIR [EXTRA_HYPERPARAMETERS_JSON]: the tree SageMaker would mount at /opt/ml.
make_base() {
  local base=$1 extra=${2:-}
  mkdir -p "$base/input/config" "$base/input/data" "$base/code" "$base/model" "$base/output"
  cp -r "$here/job/data/." "$base/input/data/"
  for f in "$here"/job/config/*.json; do
    sed -e "s#@SOURCE_DIR@#$here/job/src#" -e "s#@BASE_DIR@#$base#" "$f" >"$base/input/config/$(basename "$f")"
  done
  if [ -n "$extra" ]; then
    python3 - "$base/input/config/hyperparameters.json" "$extra" <<'PY'
import json, sys
path, extra = sys.argv[1], json.loads(sys.argv[2])
hps = json.load(open(path)); hps.update(extra); json.dump(hps, open(path, "w"), indent=2)
PY
  fi
}

run() {  # run BASE FORMAT: smsupervise train against BASE; returns its exit code
  set +e
  SAGEMAKER_BASE_DIR=$1 "${runner[@]}" "${sup[@]}" --log-format "$2" train
  local code=$?
  set -e
  return $code
}

work=$(mktemp -d /tmp/smsupervise-demo.XXXXXX)
echo "== 1. a script-mode job: $here/job/src/train.py, 2 channels, hyperparameters as arguments"
echo "==    smsupervise train $how; SAGEMAKER_BASE_DIR=$work/ok"
make_base "$work/ok"
code=0; run "$work/ok" text || code=$?
echo "== smsupervise exited with $code (the job's own exit code)"
echo "== $work/ok/output: $(ls "$work/ok/output")   model: $(cat "$work/ok/model/model.json" 2>/dev/null | head -c 120)"
echo
echo "== 2. the same job with the hyperparameter fail-at-epoch=2, in the default --log-format json:"
echo "==    one JSON object per line, as CloudWatch Logs receives it"
make_base "$work/fail" '{"fail-at-epoch": "2"}'
code=0; run "$work/fail" json || code=$?
echo "== smsupervise exited with $code; $work/fail/output/failure says:"
sed 's/^/   | /' "$work/fail/output/failure"
echo
echo "== 3. a long run stopped with SIGTERM (as SageMaker stops a job), with a checkpoint hook:"
echo "==    the hook runs first, then the job gets SIGTERM, saves a last checkpoint and exits"
make_base "$work/stop" '{"epochs": "100000", "step-seconds": "0.005"}'
hook='sh -c "echo checkpoint hook: reason=$SMSUPERVISE_STOP_REASON deadline=$SMSUPERVISE_DEADLINE dir=$SMSUPERVISE_CHECKPOINT_DIR"'
SAGEMAKER_BASE_DIR=$work/stop "${runner[@]}" "${sup[@]}" --log-format text --checkpoint-hook "$hook" train &
pid=$!
target=$pid
for _ in $(seq 1 500); do  # poll (at most 10 s) until training has written 3 checkpoints
  if [ "${#runner[@]}" -gt 0 ] && [ "$target" = "$pid" ]; then
    target=$(cat "/proc/$pid/task/$pid/children" 2>/dev/null | awk '{print $1}'); target=${target:-$pid}
  fi
  [ "$(ls "$work/stop/checkpoints" 2>/dev/null | wc -l)" -ge 3 ] && break
  sleep 0.02
done
echo "== sending SIGTERM to smsupervise (pid $target as seen from here)"
kill -TERM "$target"
code=0; wait "$pid" || code=$?
echo "== smsupervise exited with $code (the job's own: it saved and exited 0); the failure file says:"
sed 's/^/   | /' "$work/stop/output/failure" | head -3
echo "== newest checkpoint: $(ls "$work/stop/checkpoints" | tail -1)"
echo
echo "== the trees are left in $work for a look around"

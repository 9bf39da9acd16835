#!/usr/bin/env bash
# `make demo`: run the bundled example job under smsupervise, as PID 1 of a fresh PID namespace when
# we are root (as in a container), else as a subreaper. Shows smsupervise's events for people.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VENV:-$here/../.venv}
sup=("$venv/bin/smsupervise" --log-format text --leftover-grace 2)
job=("$venv/bin/python" "$here/demo/job.py")
if [ "$(id -u)" = 0 ] && unshare --pid --fork --mount-proc true 2>/dev/null; then
  echo "== smsupervise as PID 1 in a fresh PID namespace (unshare --pid --fork --mount-proc)"
  runner=(unshare --pid --fork --mount-proc)
else
  echo "== smsupervise as a child subreaper (not root, or no unshare here)"
  runner=()
fi
set +e
"${runner[@]}" "${sup[@]}" "${job[@]}"
code=$?
set -e
echo "== smsupervise exited with $code (the job's own exit code)"

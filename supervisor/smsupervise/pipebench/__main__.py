"""``python -m smsupervise.pipebench``: the same as ``smsupervise-pipe-bench``."""

from smsupervise.pipebench.cli import entry

entry()

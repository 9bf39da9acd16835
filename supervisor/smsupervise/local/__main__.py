"""``python -m smsupervise.local``: the same as ``smsupervise-local``."""

from smsupervise.local.cli import entry

entry()

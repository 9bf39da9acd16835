"""``python -m smsupervise.debug``: the same as the ``smsupervise-debug`` console script."""

from smsupervise.debug.client import entry

entry()

"""``python -m smsupervise``: the same entry point as the console script."""

from smsupervise.cli import entry

if __name__ == "__main__":
    entry()

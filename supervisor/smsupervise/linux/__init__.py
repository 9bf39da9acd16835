"""Leaf helpers over Linux facts (/proc, prctl, pipe sizes); they import nothing from the package."""

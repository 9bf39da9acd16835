"""Pipe mode: the splice relay (``relay``) and SageMaker's side emulated (``emulate``)."""

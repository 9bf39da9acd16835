"""``smsupervise-pipe-bench``: the Pipe-mode throughput harness for the user's own input pipeline.

A separate console script, not part of the supervisor process: it starts the platform's side
(``smsupervise-pipe-emulate``) and ``smsupervise --pipe-relay train`` as subprocesses, with the user's
reader as the supervised job, and reports what the reader got at each platform rate. Modules:
``options`` (argv), ``job`` (one supervised run), ``results`` (typed results from the event
streams, pure), ``verdict`` (pure), ``report`` (table, JSON, CSV), ``chart`` (terminal, PNG), ``cli``.
"""

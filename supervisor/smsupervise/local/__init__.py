"""``smsupervise-local``: run a CreateTrainingJob request on one machine, without Docker.

Modules: ``job`` (request -> typed record, validated as the API does), ``hosts`` (algo-1..N in
namespaces: a small API the distributed tests reuse), ``tree`` (each host's ``/opt/ml``), ``channels``
(staging inputs), ``checkpoints`` (mirroring CheckpointConfig), ``metrics`` (MetricDefinitions),
``artifacts`` (model.tar.gz / output.tar.gz), ``uploader`` (the upload in a process of its own),
``describe`` (describe.json), ``workdir`` (the work dir's lock and reserved space), ``console``
(what people see), ``run`` (the job's life), ``enter`` (the first program inside a host's
namespaces), ``cli``.
Unlike the supervisor, this package may use ``subprocess``: it is a tool that runs next to jobs.
"""

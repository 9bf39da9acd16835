"""The serve front (``--serve-front on``): smsupervise owns the port SageMaker calls, answers
``/ping`` from the server's real health, passes every other request through, and drains on SIGTERM.

``config`` resolves ports and the health check before the loop; ``front`` is the Service on the
supervisor's loop; ``proxy`` the per-connection HTTP relay (httptools); ``health`` the readiness
prober; ``access`` the access records and the ``/ping`` summary.
"""

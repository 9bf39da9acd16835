"""smsupervise: PID 1 for SageMaker-style ML training and serving containers.

Importing the package does no work: every module reads the environment and the
file system only when a function is called.
"""

__version__ = "0.1.0"

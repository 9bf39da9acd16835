"""The SageMaker container contract: config files, SM_* environment, the plan, outcome files."""

"""Run sagemaker-training 5.1.4's own runner for the job in /opt/ml, as its framework toolkits do.

usage: toolkit_driver.py torchrun|xla|mpi|smddp. ``torchrun`` / ``xla``: the whole
``entry_point.run`` with the TorchDistributed / PyTorchXLA runner (source, install, env, DNS wait,
the launcher). ``mpi`` / ``smddp``: the master's mpirun command line (MPI / SMDataParallel) as the
runner builds it after ``entry_point.run``'s preparation (its ``run`` would also start sshd and SSH
into the workers), recorded like the torchrun stand-in does.
"""

import json
import os
import sys

from sagemaker_training import entry_point, environment, process, runner

env = environment.Environment()
if sys.argv[1] in ("torchrun", "xla"):
    kind = runner.RunnerType.TorchDistributed if sys.argv[1] == "torchrun" else runner.RunnerType.PyTorchXLA
    entry_point.run(
        env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars(), runner_type=kind
    )
else:
    env_vars = env.to_env_vars()
    environment.write_env_vars(env_vars)  # as entry_point.run does: PYTHONPATH joins env_vars
    kind = runner.RunnerType.MPI if sys.argv[1] == "mpi" else runner.RunnerType.SMDataParallel
    master = runner.get(kind, env.user_entry_point, env.to_cmd_args(), env_vars)
    command = master._create_command()
    if sys.argv[1] == "smddp":  # its run(): the mpirun part, then ProcessRunner's (python -m mpi4py ...)
        command += process.ProcessRunner._create_command(master)
    with open(os.environ["RECORD"], "w") as out:
        json.dump({"argv": command, "cwd": environment.code_dir, "env": dict(os.environ)}, out)

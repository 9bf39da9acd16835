#!/usr/bin/env python3
"""A stand-in for torchrun or mpirun: records its argv, cwd and environment as JSON in $RECORD."""

import json
import os
import sys

with open(os.environ["RECORD"], "w") as out:
    json.dump(
        {"argv": [os.path.basename(sys.argv[0]), *sys.argv[1:]], "cwd": os.getcwd(), "env": dict(os.environ)},
        out,
    )

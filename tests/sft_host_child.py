"""One host of the two-process step-count test (tests/test_sft_hosts.py).

argv: process id, coordinator port. Prints one JSON line: the agreed step count
for shared data, and the error each host raises when host 1 holds extra data.
"""

import json
import sys

import jax

from int_jax.data import host_sync, loaders
from test_sft_hosts import PACK_LENGTHS, PACK_SPEC, _examples

pid, port = int(sys.argv[1]), int(sys.argv[2])
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=2,
                           process_id=pid)
ex = _examples(PACK_LENGTHS)
steps = loaders.count_steps(ex, PACK_SPEC, jax.process_count(), jax.process_index())
local = sum(1 for _ in loaders.sft_dataset(ex, PACK_SPEC, process_index=pid, process_count=2))
try:
    loaders.count_steps(ex + _examples([4], seed=9) if pid == 1 else ex, PACK_SPEC, 2, pid)
    error = None
except host_sync.HostDisagreement as e:
    error = str(e)
print(json.dumps({"steps": steps, "local": local, "error": error}), flush=True)

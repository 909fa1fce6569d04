"""Loading a model repacks its weights into anonymous memory and drops the file pages it read
(see `Linear::pack`): the mapped source of a large matrix (Gemma 3's 262k x 640 Q8_0
embedding table, 178 MB) is released as the packing passes it, so the process never holds a
whole matrix twice. Peak RSS right after loading therefore stays close to the steady RSS, and
the tied embedding's row lookups read the packed copy, not the file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CODE = """
import json, sys, hologram
e = hologram.Engine(sys.argv[1], n_ctx=512, n_threads=1)
# A prompt of tokens spread over the whole vocabulary: their embedding rows are looked up.
ids = [(i * 7919 + 13) % e.n_vocab for i in range(256)]
s = e.stream(ids, max_tokens=1, temperature=0.0, ignore_eos=True)
s.next_step()
s.close()
st = {l.split(':')[0]: int(l.split()[1]) // 1024 for l in open('/proc/self/status')
      if l.startswith(('VmHWM', 'VmRSS', 'RssAnon', 'RssFile'))}
st['packed'] = bool(hologram._core.kernel_info()['packed'])
print(json.dumps(st))
"""


def test_loading_never_holds_a_matrix_twice(gemma3_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-c", CODE, str(gemma3_path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    st = json.loads(p.stdout.strip().splitlines()[-1])
    # Before the pages were dropped during packing, the peak was ~170 MiB above the steady
    # RSS (the whole embedding table mapped and packed at once).
    assert st["VmHWM"] <= st["VmRSS"] + 64, st
    if st["packed"]:
        # The file's pages are not kept mapped in, also after a prompt: Gemma's tied Q8_0
        # embedding serves its row lookups from the packed copy (looking rows up in the file
        # mapped ~150 MiB of it back in, the kernel mapping whole large folios per fault).
        assert st["RssFile"] < 64, st

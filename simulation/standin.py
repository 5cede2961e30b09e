"""Stand-ins for crypto miners: small C programs that carry what the signatures look for.

Nothing here mines. The "miner" only holds the names and strings the bundled signatures look
for (RandomX and CryptoNight function names, a stratum pool URL, stratum method names, an
xmrig C++ namespace symbol); the clean program holds none. With ``--wait`` as its first
argument, or STANDIN_WAIT in its environment (for any argv), each sleeps until killed, so it
can run as a process. ``procsmith demo`` and the tests compile them with gcc.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

MINER_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char pool_url[] = "stratum+tcp://pool.example.invalid:3333";
const char stratum_method[] = "{\"method\": \"mining.subscribe\"}";
const char algorithm[] = "randomx";
const char donate_host[] = "donate.v2.xmrig.com";

int randomx_init_dataset(int n) { return n + 1; }
int randomx_create_vm(int n) { return n * 3; }
int cryptonight_hash(int n) { return n * 7; }
/* the mangled name of xmrig::Miner::start(): C accepts it as a plain identifier */
int _ZN5xmrig5Miner5startEv(int n) { return n - 1; }

int main(int argc, char **argv) {
    if ((argc > 1 && strcmp(argv[1], "--wait") == 0) || getenv("STANDIN_WAIT")) {
        for (;;) pause();
    }
    printf("%s %s %s %s %d\n", pool_url, stratum_method, algorithm, donate_host,
           randomx_init_dataset(argc) + randomx_create_vm(argc) + cryptonight_hash(argc)
           + _ZN5xmrig5Miner5startEv(argc));
    return 0;
}
"""

CLEAN_C = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int compute_answer(int n) { return n * 6 + 36; }

int main(int argc, char **argv) {
    if ((argc > 1 && strcmp(argv[1], "--wait") == 0) || getenv("STANDIN_WAIT")) {
        for (;;) pause();
    }
    printf("hello %d\n", compute_answer(argc));
    return 0;
}
"""


class CompilerMissing(RuntimeError):
    pass


def compile_c(source: str, out: Path, *flags: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise CompilerMissing("gcc is needed to build the stand-in programs")
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([gcc, "-O0", *flags, "-o", str(out), str(src)], check=True, timeout=120)
    return out

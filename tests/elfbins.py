"""Small ELF binaries built with gcc that carry miner-like symbols and strings.

Nothing here mines: the "miner" only holds the names and strings the signatures look for
(RandomX and CryptoNight function names, a stratum pool URL, stratum method names, an xmrig
C++ namespace symbol). With ``--wait`` each program sleeps until killed, so tests can run it
as a process. ``build`` compiles them once per test session.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import NamedTuple

MINER_C = r"""
#include <stdio.h>
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
    if (argc > 1 && strcmp(argv[1], "--wait") == 0) {
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
#include <string.h>
#include <unistd.h>

int compute_answer(int n) { return n * 6 + 36; }

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--wait") == 0) {
        for (;;) pause();
    }
    printf("hello %d\n", compute_answer(argc));
    return 0;
}
"""


class ElfBins(NamedTuple):
    miner: Path  # with its symbol table
    miner_stripped: Path  # gcc -s: no .symtab; .rodata and .dynsym remain
    clean: Path


def _gcc(source: str, out: Path, *flags: str) -> Path:
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build the ELF test fixtures")
    src = out.with_suffix(".c")
    src.write_text(source)
    subprocess.run([gcc, "-O0", *flags, "-o", str(out), str(src)], check=True, timeout=120)
    return out


def build(directory: Path) -> ElfBins:
    return ElfBins(
        miner=_gcc(MINER_C, directory / "miner"),
        miner_stripped=_gcc(MINER_C, directory / "miner-stripped", "-s"),
        clean=_gcc(CLEAN_C, directory / "clean"),
    )

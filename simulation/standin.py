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


# Issue 11: stand-ins that hide what they run the ways a miner author would. One source, built
# twice: with -DMINER it carries the miner's symbols and strings (as MINER_C), without it none.
# STANDIN_MODE picks what it does before it sleeps:
#   zombie  - main starts a thread that sleeps and calls pthread_exit (a zombie leader)
#   rewrite - after STANDIN_DELAY seconds (default 3) overwrites its argv memory with an
#             xmrig command line carrying a stratum URL
#   dlopen  - on SIGUSR1 dlopen()s STANDIN_LIB
#   memfd   - decrypts STANDIN_PAYLOAD (XOR 0x5a) into a memfd and dlopen()s it from there
TRICKS_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef MINER
const char pool_url[] = "stratum+tcp://pool.example.invalid:3333";
const char stratum_method[] = "{\"method\": \"mining.subscribe\"}";
int randomx_init_dataset(int n) { return n + 1; }
int randomx_create_vm(int n) { return n * 3; }
int cryptonight_hash(int n) { return n * 7; }
#endif

static volatile sig_atomic_t usr1;
static void on_usr1(int s) { (void)s; usr1 = 1; }
static void *forever(void *arg) { for (;;) pause(); return arg; }

static void load_memfd(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return;
    int fd = memfd_create("payload", 0);
    int c;
    while ((c = fgetc(f)) != EOF) { unsigned char b = (unsigned char)c ^ 0x5a; write(fd, &b, 1); }
    fclose(f);
    char name[64];
    snprintf(name, sizeof name, "/proc/self/fd/%d", fd);
    dlopen(name, RTLD_NOW);
}

int main(int argc, char **argv) {
    const char *mode = getenv("STANDIN_MODE");
    mode = mode ? mode : "";
    signal(SIGUSR1, on_usr1);
    if (strcmp(mode, "zombie") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, forever, NULL);
        pthread_exit(NULL);
    }
    if (strcmp(mode, "rewrite") == 0) {
        const char *delay = getenv("STANDIN_DELAY");
        sleep(delay ? (unsigned)atoi(delay) : 3);
        char *start = argv[0], *end = argv[argc - 1] + strlen(argv[argc - 1]);
        /* put together here, so the clean build's file holds no pool URL */
        char url[64];
        snprintf(url, sizeof url, "%s+%s", "stratum", "tcp://pool.example.invalid:3333");
        size_t room = (size_t)(end - start), a = strlen("xmrig") + 1, b = strlen("-o") + 1;
        memset(start, 0, room);
        if (room > a + b + strlen(url)) {
            strcpy(start, "xmrig");
            strcpy(start + a, "-o");
            strcpy(start + a + b, url);
        }
    }
    const char *payload = getenv("STANDIN_PAYLOAD");
    if (strcmp(mode, "memfd") == 0 && payload) load_memfd(payload);
    if (strcmp(mode, "dlopen") == 0) {
        while (!usr1) pause();
        dlopen(getenv("STANDIN_LIB"), RTLD_NOW);
    }
#ifdef MINER
    if (argc < 0)
        printf("%s %s %d\n", pool_url, stratum_method,
               randomx_init_dataset(argc) + randomx_create_vm(argc) + cryptonight_hash(argc));
#endif
    for (;;) pause();
}
"""

# A shared library with the miner's symbols and strings: what LD_PRELOAD and dlopen load.
LIBMINER_C = r"""
const char pool_url[] = "stratum+tcp://pool.example.invalid:3333";
const char stratum_method[] = "{\"method\": \"mining.subscribe\"}";
int randomx_init_dataset(int n) { return n + 1; }
int randomx_create_vm(int n) { return n * 3; }
int cryptonight_hash(int n) { return n * 7; }
"""

# The miner's tell-tale strings, as a script or a file's tail carries them (never run).
MINER_STRINGS = 'POOL = "stratum+tcp://pool.example.invalid:3333"; METHOD = "mining.subscribe"'


class Tricks:
    """The issue 11 stand-ins, built with gcc in ``out``.

    ``tricks``/``tricks_miner``: TRICKS_C without and with the miner; ``libminer``: the
    shared library; ``payload``: libminer encrypted (XOR 0x5a) for the memfd mode;
    ``clean_twin``/``miner_twin``: the clean and the miner stand-in padded to one size (for a
    rewrite in place); ``big``: a clean program padded past ``big_pad`` bytes with the miner's
    strings at its very end.
    """

    def __init__(self, out: Path, big_pad: int = 3 << 20) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.tricks = compile_c(TRICKS_C, out / "tricks", "-pthread", "-ldl")
        self.tricks_miner = compile_c(TRICKS_C, out / "tricks-miner", "-DMINER", "-pthread", "-ldl")
        self.libminer = compile_c(LIBMINER_C, out / "libminer.so", "-shared", "-fPIC")
        self.payload = out / "payload.enc"
        self.payload.write_bytes(bytes(b ^ 0x5A for b in self.libminer.read_bytes()))
        clean = compile_c(CLEAN_C, out / "clean")
        miner = compile_c(MINER_C, out / "miner")
        size = max(clean.stat().st_size, miner.stat().st_size)
        self.clean_twin, self.miner_twin = out / "clean-twin", out / "miner-twin"
        for src, dst in ((clean, self.clean_twin), (miner, self.miner_twin)):
            data = src.read_bytes()
            dst.write_bytes(data + b"\0" * (size - len(data)))  # past the ELF's end: ignored
            dst.chmod(0o755)
        self.big = out / "big"
        self.big.write_bytes(clean.read_bytes() + b"\0" * big_pad + MINER_STRINGS.encode())
        self.big.chmod(0o755)

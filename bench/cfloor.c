/* The physical floor of a procfs scan: for every numeric entry of a procfs root, openat+read
 * its stat and its cmdline (the first 4 KiB of each), nothing else. Built and run by
 * bench/cfloor.py with the system gcc.
 *
 *     cfloor ROOT PASSES   ->  one line per pass: "<processes read> <CPU seconds>"
 *
 * CPU time is the process's own (CLOCK_PROCESS_CPUTIME_ID, user and system), as the Python
 * side measures with time.process_time(). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double cpu_seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int is_pid(const char *name) {
    if (!*name) return 0;
    for (; *name; name++)
        if (*name < '0' || *name > '9') return 0;
    return 1;
}

static int read_file(int dir, const char *pid, const char *file, char *buf, size_t size) {
    char path[64];
    snprintf(path, sizeof path, "%s/%s", pid, file);
    int fd = openat(dir, path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, size);
    close(fd);
    return n < 0 ? -1 : 0;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s ROOT PASSES\n", argv[0]);
        return 2;
    }
    static char buf[4096];
    int passes = atoi(argv[2]);
    for (int p = 0; p < passes; p++) {
        double start = cpu_seconds();
        DIR *d = opendir(argv[1]);
        if (!d) {
            perror(argv[1]);
            return 1;
        }
        long read_ok = 0;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!is_pid(e->d_name)) continue;
            if (read_file(dirfd(d), e->d_name, "stat", buf, sizeof buf) == 0 &&
                read_file(dirfd(d), e->d_name, "cmdline", buf, sizeof buf) == 0)
                read_ok++;
        }
        closedir(d);
        printf("%ld %.9f\n", read_ok, cpu_seconds() - start);
    }
    return 0;
}

/* A fork storm for bench/procevents_storm.py: spawn /bin/true RATE times a second for at most
 * SECONDS seconds (and at most RATE*SECONDS times), reaping children as they end; at most 64
 * run at once, so the storm cannot grow without bound if the machine falls behind.
 *
 *     execstorm RATE SECONDS  ->  one line: "<spawned> <elapsed seconds>"
 */
#define _GNU_SOURCE
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
    if (argc != 3) return 2;
    double rate = atof(argv[1]), seconds = atof(argv[2]);
    long limit = (long)(rate * seconds), spawned = 0, running = 0;
    char *child[] = {"/bin/true", NULL};
    double start = now();
    while (spawned < limit && now() - start < seconds) {
        while (running > 0 && waitpid(-1, NULL, WNOHANG) > 0) running--;
        if (running >= 64) { if (wait(NULL) > 0) running--; continue; }
        double due = start + (double)spawned / rate;
        if (now() < due) {
            struct timespec pause = {0, (long)((due - now()) * 1e9)};
            nanosleep(&pause, NULL);
        }
        pid_t pid;
        if (posix_spawn(&pid, child[0], NULL, NULL, child, environ) == 0) { spawned++; running++; }
    }
    while (running > 0 && wait(NULL) > 0) running--;
    printf("%ld %.3f\n", spawned, now() - start);
    return 0;
}

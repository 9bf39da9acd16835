/* Reaping benchmark child: make N grandchildren, orphan them (their parent exits, so they are
 * re-parented to PID 1), release them all at once, then poll until every one is gone from /proc
 * (reaped). Prints "reaped N in X ms" and exits 0, or "left K" and exits 1 after 20 s. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    int gate[2], report[2];
    if (pipe(gate) || pipe(report)) return 2;
    pid_t middle = fork();
    if (middle == 0) {
        close(gate[1]);
        close(report[0]);
        for (int i = 0; i < n; i++) {
            pid_t pid = fork();
            if (pid == 0) {
                char c;
                close(report[1]);
                (void)!read(gate[0], &c, 1); /* blocks until the gate closes */
                _exit(0);
            }
            (void)!write(report[1], &pid, sizeof pid);
        }
        _exit(0);
    }
    close(gate[0]);
    close(report[1]);
    waitpid(middle, NULL, 0);
    pid_t *pids = malloc(sizeof(pid_t) * (size_t)n);
    int got = 0;
    while (got < n && read(report[0], &pids[got], sizeof(pid_t)) == sizeof(pid_t)) got++;
    double start = now_ms();
    close(gate[1]); /* release them all */
    char path[64];
    struct stat st;
    for (;;) {
        int left = 0;
        for (int i = 0; i < got; i++) {
            snprintf(path, sizeof path, "/proc/%d", pids[i]);
            if (stat(path, &st) == 0) left++;
        }
        double elapsed = now_ms() - start;
        if (left == 0) { printf("reaped %d in %.2f ms\n", got, elapsed); return 0; }
        if (elapsed > 20000) { printf("left %d\n", left); return 1; }
        usleep(100);
    }
}

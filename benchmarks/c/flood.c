/* Status benchmark child: write lines of LEN bytes (LEN-1 + '\n') to stdout as fast as it can, through a
 * 64 KiB stdio buffer, for SECONDS; then say on stderr how many it wrote and in how long. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10.0;
    int len = argc > 2 ? atoi(argv[2]) : 100;
    if (len < 2 || len > 4096) len = 100;
    static char buf[65536];
    setvbuf(stdout, buf, _IOFBF, sizeof buf);
    char line[4097];
    memset(line, 'x', len - 1);
    line[len - 1] = '\n';
    double begun = now(), ended = begun;
    long n = 0;
    while (ended - begun < seconds) {
        for (int i = 0; i < 4096; i++, n++) {
            fwrite(line, 1, len, stdout);
        }
        ended = now();
    }
    fflush(stdout);
    ended = now();
    fprintf(stderr, "flood lines=%ld seconds=%.3f\n", n, ended - begun);
    return 0;
}

/* Child for the TERM-latency benchmark: on SIGTERM, write CLOCK_MONOTONIC (ns) to the file named
 * by argv[1] from the handler itself, then _exit(0). Writes "ready" to argv[2] once installed. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int out_fd = -1;

static void on_term(int sig) {
    struct timespec ts;
    char buf[32];
    (void)sig;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(buf, sizeof buf, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    (void)!write(out_fd, buf, (size_t)n);
    _exit(0);
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    out_fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    int ready = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    (void)!write(ready, "ready\n", 6);
    close(ready);
    for (;;) pause();
}

/* Exit-latency benchmark child: write CLOCK_MONOTONIC (ns) to argv[1], then _exit(0) at once. */
#include <fcntl.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    struct timespec ts;
    char buf[32];
    int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int n = snprintf(buf, sizeof buf, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    (void)!write(fd, buf, (size_t)n);
    _exit(0);
}

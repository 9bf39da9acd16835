/* Pipe-mode consumer: read() 1 MiB at a time from a FIFO to EOF, discard.
 * usage: pipecons PATH STAMPFILE   (writes "<bytes> <CLOCK_MONOTONIC ns at EOF>" to STAMPFILE) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: pipecons PATH STAMPFILE\n"); return 2; }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) { perror("open"); return 1; }
    fcntl(fd, F_SETPIPE_SZ, 1 << 20);
    size_t size = 1 << 20; char *buf = malloc(size);
    long long got = 0; ssize_t n;
    while ((n = read(fd, buf, size)) > 0) got += n;
    if (n < 0) { perror("read"); return 1; }
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    FILE *stamp = fopen(argv[2], "w");
    fprintf(stamp, "%lld %lld\n", got, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec); fclose(stamp);
    return 0;
}

/* Pipe-mode producer, like the SageMaker agent: write() 1 MiB chunks into a FIFO.
 * usage: pipeprod FIFO BYTES STAMPFILE
 * Opens FIFO for writing (blocks until a reader), raises it to 1 MiB, writes the CLOCK_MONOTONIC
 * time (ns) right after open() returned into STAMPFILE, then writes BYTES bytes of a pattern. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 4) { fprintf(stderr, "usage: pipeprod FIFO BYTES STAMPFILE\n"); return 2; }
    long long total = atoll(argv[2]);
    size_t chunk = 1 << 20, bufsize = 4 << 20;
    char *buf = malloc(bufsize);
    for (size_t i = 0; i < bufsize; i++) buf[i] = (char)(i * 2654435761u >> 13);
    int fd = open(argv[1], O_WRONLY);
    if (fd < 0) { perror("open"); return 1; }
    struct timespec ts; clock_gettime(CLOCK_MONOTONIC, &ts);
    fcntl(fd, F_SETPIPE_SZ, 1 << 20);
    FILE *stamp = fopen(argv[3], "w");
    fprintf(stamp, "%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec); fclose(stamp);
    long long sent = 0; size_t off = 0;
    while (sent < total) {
        size_t want = chunk; if ((long long)want > total - sent) want = (size_t)(total - sent);
        ssize_t n = write(fd, buf + off, want);
        if (n < 0) { perror("write"); return 1; }
        sent += n; off = (off + (size_t)n) % (bufsize - chunk);
    }
    close(fd);
    return 0;
}

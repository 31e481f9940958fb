/* The C reference implementation of argon2id, timed the way the benchmark times ours:
 *   argon2_ref first ENCODED PASSWORD      one verification, in a process that has not hashed before
 *   argon2_ref steady ENCODED PASSWORD N   N verifications in a row
 * Prints one line per verification: milliseconds; with ARGON2_REF_CPU set in the
 * environment, also the thread's CPU milliseconds after them (on a shared machine, less
 * disturbed by other processes; apppass-argon2's example `steady` prints the same two).
 * Built by the benchmark against Debian's libargon2 and against the reference sources
 * with AVX2. */
#include <argon2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double ms(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: argon2_ref first|steady ENCODED PASSWORD [N]\n");
        return 2;
    }
    int n = strcmp(argv[1], "steady") == 0 && argc > 4 ? atoi(argv[4]) : 1;
    int cpu = getenv("ARGON2_REF_CPU") != NULL;
    for (int i = 0; i < n; i++) {
        double t = ms(CLOCK_MONOTONIC), c = ms(CLOCK_THREAD_CPUTIME_ID);
        int rc = argon2id_verify(argv[2], argv[3], strlen(argv[3]));
        double dt = ms(CLOCK_MONOTONIC) - t, dc = ms(CLOCK_THREAD_CPUTIME_ID) - c;
        if (rc != ARGON2_OK) {
            fprintf(stderr, "argon2_ref: verification failed: %s\n", argon2_error_message(rc));
            return 1;
        }
        if (cpu)
            printf("%.4f %.4f\n", dt, dc);
        else
            printf("%.4f\n", dt);
    }
    return 0;
}

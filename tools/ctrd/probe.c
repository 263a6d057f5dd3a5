/* Test workload: reports where it may run, then idles.
 *
 * Prints the "Cpus_allowed_list" and "Mems_allowed_list" lines of its own
 * /proc/self/status to stdout (the container log), so a test can compare the
 * placement the process really got with what the OCI spec asked for. */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static const char *const wanted[] = {"Cpus_allowed_list:", "Mems_allowed_list:"};

static void on_term(int signo) { (void)signo; _exit(0); }

static void report_placement(void) {
    char line[4096];
    FILE *status = fopen("/proc/self/status", "r");
    if (!status) {
        perror("probe: /proc/self/status");
        return;
    }
    while (fgets(line, sizeof line, status)) {
        for (size_t i = 0; i < sizeof wanted / sizeof wanted[0]; i++) {
            if (strncmp(line, wanted[i], strlen(wanted[i])) == 0)
                fputs(line, stdout);
        }
    }
    fclose(status);
    fflush(stdout);
}

int main(void) {
    struct sigaction term = {.sa_handler = on_term};
    sigaction(SIGTERM, &term, 0);
    sigaction(SIGINT, &term, 0);
    report_placement();
    for (;;)
        pause();
}

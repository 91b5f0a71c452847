/* whoami: a job that got past the stub reports who it is. It prints its ids, the
 * /proc/self/status lines that say what it may do, its personality and its namespaces,
 * then reads a path from stdin and execs it as "suid": the test passes a setuid-root copy
 * of this program, which, run as "suid", prints the euid it got. */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc > 0 && strcmp(argv[0], "suid") == 0) {
		printf("suid-euid: %d\n", (int)geteuid());
		return 0;
	}
	printf("uid: %d\neuid: %d\ngid: %d\negid: %d\ngroups: %d\n", (int)getuid(), (int)geteuid(),
	       (int)getgid(), (int)getegid(), getgroups(0, NULL));
	FILE *f = fopen("/proc/self/status", "r");
	char line[512];
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, "Cap", 3) || !strncmp(line, "NoNewPrivs:", 11))
			fputs(line, stdout);
	f = fopen("/proc/self/personality", "r");
	if (f && fgets(line, sizeof line, f))
		printf("personality: %s", line);
	const char *ns[] = {"net", "pid", "user"};
	for (int i = 0; i < 3; i++) {
		char path[64], target[128] = "";
		snprintf(path, sizeof path, "/proc/self/ns/%s", ns[i]);
		ssize_t n = readlink(path, target, sizeof target - 1);
		printf("ns-%s: %s\n", ns[i], n > 0 ? target : "?");
	}
	char exe[4096];
	if (fgets(exe, sizeof exe, stdin)) {
		exe[strcspn(exe, "\n")] = 0;
		fflush(stdout);
		char *args[] = {"suid", NULL};
		execv(exe, args);
		perror("execv");
	}
	return 0;
}

/* whoami: a job that got past the stub reports who it is, from system calls (it may be
 * able to open no file): its ids, capability sets, no_new_privs, personality and
 * namespaces. Then it reads a path from stdin and execs it as "suid": the test passes a
 * setuid-root copy of this program, which, run as "suid", prints the euid it got. */
#include <linux/capability.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	if (argc > 0 && strcmp(argv[0], "suid") == 0) {
		printf("suid-euid: %d\n", (int)geteuid());
		return 0;
	}
	printf("uid: %d\neuid: %d\ngid: %d\negid: %d\ngroups: %d\n", (int)getuid(), (int)geteuid(),
	       (int)getgid(), (int)getegid(), getgroups(0, NULL));
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct d[2] = {0};
	syscall(SYS_capget, &h, d);
	uint64_t bnd = 0, amb = 0;
	for (int c = 0; c < 64; c++) {
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
			bnd |= 1ull << c;
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) == 1)
			amb |= 1ull << c;
	}
	printf("CapInh: %016llx\nCapPrm: %016llx\nCapEff: %016llx\nCapBnd: %016llx\nCapAmb: %016llx\n",
	       (unsigned long long)d[1].inheritable << 32 | d[0].inheritable,
	       (unsigned long long)d[1].permitted << 32 | d[0].permitted,
	       (unsigned long long)d[1].effective << 32 | d[0].effective,
	       (unsigned long long)bnd, (unsigned long long)amb);
	printf("NoNewPrivs: %d\npersonality: %08x\n", prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0),
	       personality(0xffffffff));
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

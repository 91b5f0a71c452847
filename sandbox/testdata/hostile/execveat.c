/* execveat: execveat(2) (syscall 322) of an inherited fd. Reads: a decimal fd, executed
 * with AT_EMPTY_PATH, or "cwd" for AT_FDCWD and /bin/sh. Prints "started" first; in the
 * sandbox it must never print "ESCAPED". Want: violation for every fd. */
#include "gridjob.h"

int main(void)
{
	char in[32];
	long n = gj_read_full(0, in, sizeof in);
	if (n < 0)
		gj_fail("read");
	long fd = -100; /* AT_FDCWD */
	const char *path = "/bin/sh";
	long flags = 0;
	uint64_t v;
	if (gj_parse_u64(in, (size_t)n, &v)) {
		fd = (long)v;
		path = "";
		flags = 0x1000; /* AT_EMPTY_PATH */
	}
	const char *argv[] = {"sh", "-c", "echo ESCAPED", 0};
	const char *envp[] = {0};
	gj_puts("started\n");
	long r = gj_syscall(322, fd, (long)path, (long)argv, (long)envp, flags, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}

/* behave: a job that does what its input says, for the CLI's exit-code tests.
 *   exit N    prints "out" and exits N
 *   stderr    prints "out", writes "explained on stderr\n" to stderr and exits 3
 *   segv      writes through a null pointer (crashed, SIGSEGV)
 *   syscall   makes a forbidden system call, getpid (violation, SIGKILL)
 *   spin      loops until the wall-clock limit */
#include "gridjob.h"

int main(void)
{
	char in[64];
	long n = gj_read_full(0, in, sizeof in - 1);
	if (n < 0)
		gj_fail("read");
	in[n] = 0;
	if (in[0] == 'e' && in[1] == 'x') {
		int code = 0;
		for (char *p = in + 5; *p >= '0' && *p <= '9'; p++)
			code = code * 10 + (*p - '0');
		gj_puts("out");
		gj_exit(code);
	}
	if (in[0] == 's' && in[1] == 't') {
		gj_puts("out");
		gj_write_all(2, "explained on stderr\n", 20);
		gj_exit(3);
	}
	if (in[0] == 's' && in[1] == 'e')
		*(volatile int *)0 = 1;
	if (in[0] == 's' && in[1] == 'y')
		gj_syscall(39, 0, 0, 0, 0, 0, 0);
	if (in[0] == 's' && in[1] == 'p')
		for (volatile unsigned long i = 0;; i++)
			;
	gj_fail("unknown command");
}

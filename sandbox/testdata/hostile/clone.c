/* clone: clone(2) (syscall 56) with SIGCHLD, the way fork is implemented.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long r = gj_syscall(56, 17 /* SIGCHLD */, 0, 0, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}

/* clock_gettime: the raw clock_gettime(2) system call (syscall 228), bypassing the vDSO.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long ts[2];
	long r = gj_syscall(228, 1 /* CLOCK_MONOTONIC */, (long)ts, 0, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}

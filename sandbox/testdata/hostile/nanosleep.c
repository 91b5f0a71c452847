/* nanosleep: nanosleep(2) (syscall 35) for 1 ns.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long ts[2] = {0, 1};
	long r = gj_syscall(35, (long)ts, 0, 0, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}

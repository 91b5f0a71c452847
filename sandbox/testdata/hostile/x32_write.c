/* x32_write: write through the x32 ABI: syscall 1 | __X32_SYSCALL_BIT; strict mode checks x32 calls against the 32-bit allowlist, where 0x40000001 is not write.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long r = gj_syscall(0x40000000 | 1, 1, (long)"x32 write\\n", 10, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}

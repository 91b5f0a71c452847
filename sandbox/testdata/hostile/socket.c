/* socket: socket(2) (syscall 41), an AF_INET stream socket.
 * Prints "started", then makes the forbidden call; in the sandbox it must never print
 * "ESCAPED". Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long r = gj_syscall(41, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0, 0, 0, 0);
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}

/* recursion: unbounded recursion with a 4 KiB frame until the stack (RLIMIT_STACK) runs
 * out. Want: crashed, SIGSEGV. */
#include "gridjob.h"

static __attribute__((noinline)) uint64_t deep(uint64_t n)
{
	if (n == ~(uint64_t)0)
		return 0; /* never; keeps -Winfinite-recursion quiet */
	volatile char frame[4096];
	frame[0] = (char)n;
	return deep(n + 1) + frame[0]; /* not a tail call */
}

int main(void)
{
	gj_puts("started\n");
	gj_print_u64(deep(0));
	gj_puts("ESCAPED\n");
	return 0;
}

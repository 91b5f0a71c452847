/* reenter: finds AT_ENTRY in the auxiliary vector and jumps to it. In the sandbox that
 * is the entry stub, whose first system call (prlimit64) is now forbidden, so the job
 * must die there rather than re-arm anything. Run natively, AT_ENTRY is _start; then it
 * prints "native" and exits 3 instead of looping. Want: violation. */
#include "gridjob.h"

#define AT_NULL 0
#define AT_ENTRY 9

void _start(void);

int main(void)
{
	const unsigned long *sp = gj_initial_stack;
	const unsigned long *p = sp + 1 + sp[0] + 1; /* envp */
	while (*p)
		p++;
	p++; /* auxv: (type, value) pairs up to AT_NULL */
	unsigned long entry = 0;
	for (; p[0] != AT_NULL; p += 2)
		if (p[0] == AT_ENTRY)
			entry = p[1];
	if (entry == 0)
		gj_fail("no AT_ENTRY");
	if (entry == (unsigned long)&_start) {
		gj_puts("native\n");
		return 3;
	}
	gj_puts("started\n");
	__asm__ volatile("and $-16, %%rsp\n\tjmp *%0" : : "r"(entry) : "memory");
	gj_puts("ESCAPED\n");
	return 0;
}

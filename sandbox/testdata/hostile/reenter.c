/* reenter: reads e_entry from its own ELF header, mapped at __ehdr_start, and jumps to it.
 * In the sandbox that is the entry stub (AT_ENTRY is the original entry there), whose
 * first system call (prlimit64) is now forbidden, so the job must die there rather than
 * re-arm anything. Run natively, e_entry is _start; then it prints "native" and exits 3
 * instead of looping. Want: violation. */
#include "gridjob.h"

extern const unsigned char __ehdr_start[];
void _start(void);

int main(void)
{
	unsigned long entry;
	memcpy(&entry, __ehdr_start + 24, sizeof entry); /* e_entry */
	if (entry == (unsigned long)&_start) {
		gj_puts("native\n");
		return 3;
	}
	gj_puts("started\n");
	__asm__ volatile("and $-16, %%rsp\n\tjmp *%0" : : "r"(entry) : "memory");
	gj_puts("ESCAPED\n");
	return 0;
}

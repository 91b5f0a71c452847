/* int80: getpid through the 32-bit int 0x80 gate (ia32 getpid = 20). Strict mode allows
 * only the ia32 read, write, exit and sigreturn, so this must be killed.
 * Want: violation. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	long r = 20;
	__asm__ volatile("int $0x80" : "+a"(r) : : "r8", "r9", "r10", "r11", "memory");
	gj_puts("ESCAPED ");
	gj_print_u64((uint64_t)r);
	return 0;
}

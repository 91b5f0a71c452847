/* sigreturn: rt_sigreturn (syscall 15, allowed by strict mode) with no signal frame,
 * just 4 KiB of 0x41 bytes on the stack. The kernel loads the registers from the forged
 * frame: rip, rsp and the rest become 0x4141414141414141, so returning to user space
 * faults and the kernel forces SIGSEGV. At best a forged frame gives control of the
 * registers, which the job had anyway; the seccomp mode stays. Want: crashed, SIGSEGV. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	__asm__ volatile("sub $4096, %%rsp\n\t"
			 "mov %%rsp, %%rdi\n\t"
			 "mov $0x41, %%eax\n\t"
			 "mov $4096, %%ecx\n\t"
			 "rep stosb\n\t"
			 "mov $15, %%eax\n\t"
			 "syscall\n\t"
			 "add $4096, %%rsp"
			 :
			 :
			 : "rax", "rcx", "rdi", "r11", "memory");
	gj_puts("ESCAPED\n");
	return 0;
}

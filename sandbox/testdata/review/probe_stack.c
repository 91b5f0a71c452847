/* probe_stack: runs under the stub and strict seccomp, and reads the whole initial stack
 * from its top (0x7ffffffff000) down SCAN bytes, which covers every byte of the kernel's
 * [stack] mapping that the stub keeps (its top 1 MiB) and reaches below its start (the
 * mapping grows down on demand). It never touches that stack itself: _start moves rsp to
 * .bss first. It prints the entry rsp, the number of non-zero bytes below the entry rsp
 * with the first 16 of them, an FNV-1a hash of the whole range and the bytes from the entry
 * rsp to the top in hex. */
#include <stddef.h>
#include <stdint.h>

#define TOP 0x7ffffffff000ul
#define SCAN (2ul << 20)

uint64_t entry_rsp;
static unsigned char stack[65536] __attribute__((aligned(16)));
unsigned char *stack_top = stack + sizeof stack;

__asm__(".text\n.globl _start\n_start:\n"
	"\tmov %rsp, entry_rsp(%rip)\n"
	"\tmov stack_top(%rip), %rsp\n"
	"\tcall probe\n"
	"\thlt\n");

static long sys(long n, long a, long b, long c)
{
	long r;
	__asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
	return r;
}

static char out[65536];
static size_t olen;

static void puts_(const char *s) { while (*s) out[olen++] = *s++; }
static void hex(uint64_t v, int digits)
{
	for (int i = digits - 1; i >= 0; i--)
		out[olen++] = "0123456789abcdef"[(v >> (4 * i)) & 15];
}

void probe(void)
{
	volatile unsigned char *p = (volatile unsigned char *)(TOP - SCAN);
	uint64_t h = 0xcbf29ce484222325ull, nonzero = 0;
	puts_("rsp: "); hex(entry_rsp, 16); puts_("\n");
	for (uint64_t a = TOP - 1; a >= TOP - SCAN; a--) {
		unsigned char b = *(volatile unsigned char *)a;
		h = (h ^ b) * 0x100000001b3ull;
		if (b && a < entry_rsp) {
			if (nonzero < 16) {
				puts_("nonzero-at: "); hex(a, 16); puts_(" "); hex(b, 2); puts_("\n");
			}
			nonzero++;
		}
	}
	(void)p;
	puts_("nonzero-below-rsp: "); hex(nonzero, 16); puts_("\n");
	puts_("hash: "); hex(h, 16); puts_("\n");
	puts_("image: ");
	for (uint64_t a = entry_rsp; a < TOP; a++)
		hex(*(volatile unsigned char *)a, 2);
	puts_("\n");
	sys(1, 1, (long)out, (long)olen);
	sys(60, 0, 0, 0);
}

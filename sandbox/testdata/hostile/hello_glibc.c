/* hello_glibc: an ordinary static glibc program, built with sdk.CompileHosted. Its
 * start-up code makes system calls (arch_prctl, brk, ...) before main runs.
 * Want: violation. */
#include <stdio.h>

int main(void)
{
	printf("ESCAPED hello from glibc\n");
	return 0;
}

// outcomes ends the way the first word of its stdin says, for the tests of gridnode's exit
// statuses: exit0, exit3, segv, getpid (a forbidden system call), loop, flood, big. Its
// 32 MiB array (for big) makes --mem 16MiB refuse it before it starts.
#include "gridjob.h"

static volatile char big[32 << 20];

static int is(const char *buf, const char *word) {
	size_t n = gj_strlen(word);
	return memcmp(buf, word, n) == 0 && (buf[n] == '\n' || buf[n] == ' ' || buf[n] == 0);
}

int main(void) {
	char buf[17] = {0};
	gj_read_full(0, buf, 16);
	if (is(buf, "exit0"))
		return 0;
	if (is(buf, "exit3"))
		return 3;
	if (is(buf, "segv"))
		*(volatile int *)0 = 1;
	if (is(buf, "getpid"))
		gj_syscall(39, 0, 0, 0, 0, 0, 0);
	if (is(buf, "loop"))
		for (volatile int i = 0;; i++)
			;
	if (is(buf, "flood"))
		for (;;)
			gj_write_all(1, "flood\n", 6);
	if (is(buf, "big"))
		return big[sizeof big - 1];
	gj_fail("want exit0, exit3, segv, getpid, loop, flood or big");
}

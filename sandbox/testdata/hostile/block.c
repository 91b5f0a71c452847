/* block: reads stdin until EOF, then prints "done". Held on an open stdin it blocks in
 * read forever, using no CPU. Want: wall_timeout. */
#include "gridjob.h"

int main(void)
{
	gj_puts("started\n");
	char buf[256];
	while (gj_read(0, buf, sizeof buf) > 0)
		;
	gj_puts("done\n");
	return 0;
}

/* readfile: a job that got past the stub reads a path from stdin (the test's "data dir"
 * secret) and prints what it could read, or why not. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	char path[4096], buf[256];
	if (!fgets(path, sizeof path, stdin))
		return 2;
	path[strcspn(path, "\n")] = 0;
	FILE *f = fopen(path, "r");
	if (!f) {
		printf("open: %s\n", strerror(errno));
		return 0;
	}
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = 0;
	printf("read: %s\n", buf);
	return 0;
}

/* unixconnect: a job that got past the stub reads a path from stdin and connects to the
 * unix socket there (the test's stand-in for the data dir's api.sock). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

int main(void)
{
	char path[108];
	if (!fgets(path, sizeof path, stdin))
		return 2;
	path[strcspn(path, "\n")] = 0;
	int s = socket(AF_UNIX, SOCK_STREAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	strncpy(a.sun_path, path, sizeof a.sun_path - 1);
	if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
		printf("connect: %s\n", strerror(errno));
		return 0;
	}
	printf("connect: ok\n");
	return 0;
}

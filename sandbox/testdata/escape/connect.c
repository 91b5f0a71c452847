/* connect: a job that got past the stub reads a TCP port from stdin and connects to
 * 127.0.0.1 on it, where the test listens. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void)
{
	int port;
	if (scanf("%d", &port) != 1)
		return 2;
	int s = socket(AF_INET, SOCK_STREAM, 0);
	if (s < 0) {
		printf("socket: %s\n", strerror(errno));
		return 0;
	}
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(s, (struct sockaddr *)&a, sizeof a) != 0) {
		printf("connect: %s\n", strerror(errno));
		return 0;
	}
	write(s, "ESCAPED", 7);
	printf("connect: ok\n");
	return 0;
}
